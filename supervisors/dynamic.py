"""A supervisor of children started on demand and keyed by id, with a registry and idle sleep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from supervisors.actor import ActorRef
from supervisors.clock import Clock
from supervisors.errors import ChildStartFailed, DuplicateChild, MaxChildrenReached, NotAnActor
from supervisors.events import EventBus
from supervisors.spec import Backoff, ChildSpec
from supervisors.supervisor import (
    GiveUpCallback,
    _Slot,
    _StartRequest,
    _SupervisorBase,
    _TerminateRequest,
    _Wake,
)

__all__ = ["DynamicSupervisor"]


class DynamicSupervisor(_SupervisorBase):
    """Children started on demand, one per key (OTP's ``DynamicSupervisor`` plus a registry).

    Each child is restarted on its own (``one_for_one``) per its restart type, and the
    restart intensity counts the restarts of all children together. The registry
    (``lookup``, ``get_or_start``) holds a child from the moment it is started until it stops
    for good (exits and is not restarted, is terminated, or the supervisor stops): it never
    returns a ref to a child that has stopped for good.

    With ``idle_timeout`` (seconds on the clock), an actor child that received no message
    for that long is stopped (``on_stop`` runs) and sleeps: it stays in the registry, its ref
    stays valid, and the next message starts a fresh instance, which then handles it. Sleep
    is not a restart and does not count toward the intensity.

    ``max_children`` caps the number of children in the registry (sleeping ones included);
    past it ``start_child`` raises :class:`MaxChildrenReached`.
    """

    def __init__(
        self,
        *,
        spec_for: Callable[[str], ChildSpec] | None = None,
        name: str = "dynamic",
        max_children: int | None = None,
        idle_timeout: float | None = None,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        events: EventBus | None = None,
        on_give_up: GiveUpCallback | None = None,
        escalate: Callable[[BaseException], bool] | None = None,
    ) -> None:
        super().__init__(
            name=name,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            backoff=backoff,
            clock=clock,
            events=events,
            on_give_up=on_give_up,
            escalate=escalate,
        )
        if max_children is not None and max_children < 0:
            raise ValueError(
                f"supervisor {name!r}: max_children must be >= 0; got {max_children!r}"
            )
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"supervisor {name!r}: idle_timeout must be > 0; got {idle_timeout!r}")
        self.spec_for = spec_for
        self.max_children = max_children
        self._idle_timeout = idle_timeout

    async def __aenter__(self) -> DynamicSupervisor:
        await super().__aenter__()
        return self

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def keys(self) -> list[str]:
        """The ids of the children in the registry, in the order they were started."""
        return list(self._slots)

    def lookup(self, key: str) -> ActorRef[Any] | None:
        """The ref of child ``key``, or ``None`` if there is none (or it has stopped for good)."""
        slot = self._slots.get(key)
        if slot is None or slot.mailbox is None or slot.state == "stopped":
            return None
        return ActorRef(slot.mailbox)

    async def start_child(self, spec: ChildSpec) -> ActorRef[Any] | None:
        """Start a child and wait until it is ready; return its ref (``None`` without inbox).

        Raises :class:`DuplicateChild`, :class:`MaxChildrenReached`, or
        :class:`ChildStartFailed` if it fails before it is ready (it is then not registered).
        """
        slot = self._register(spec)
        request = _StartRequest(slot, anyio.Event())
        self._post(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return ActorRef(slot.mailbox) if slot.mailbox is not None else None

    async def get_or_start(self, key: str) -> ActorRef[Any]:
        """The ref of child ``key``, starting it from ``spec_for(key)`` if there is none.

        An existing child's ref is returned at once (even while it is starting or asleep:
        messages wait in its inbox); a new child is waited for until it is ready.
        """
        existing = self.lookup(key)
        if existing is not None:
            return existing
        if self.spec_for is None:
            raise TypeError(
                f"supervisor {self.path!r} has no spec_for, so get_or_start({key!r}) cannot "
                "start a child; pass DynamicSupervisor(spec_for=lambda key: ChildSpec(key, ...))"
            )
        spec = self.spec_for(key)
        if spec.id != key:
            raise ValueError(f"spec_for({key!r}) returned a ChildSpec with id {spec.id!r}")
        ref = await self.start_child(spec)
        if ref is None:
            raise NotAnActor(f"{self.path}/{key}")
        return ref

    async def terminate_child(self, key: str) -> None:
        """Stop child ``key`` (within its shutdown timeout) and remove it from the registry."""
        slot = self._slots.get(key)
        if slot is None:
            return
        request = _TerminateRequest(slot, anyio.Event())
        self._post(request)
        await request.done.wait()

    # -- internals -------------------------------------------------------------------------

    def _register(self, spec: ChildSpec) -> _Slot:
        # Synchronous, so two concurrent starts of one key cannot both pass the checks.
        if self._tg is None or self._stop_requested:
            raise RuntimeError(
                f"supervisor {self.path!r} is not running; start children after it is ready "
                "(await tg.start(sup.run), or inside `async with sup:`)"
            )
        if spec.id in self._slots:
            raise DuplicateChild(self.path, spec.id)
        if self.max_children is not None and len(self._slots) >= self.max_children:
            raise MaxChildrenReached(self.path, spec.id, self.max_children)
        slot = self._new_slot(spec)
        if slot.mailbox is not None:
            slot.mailbox.wake = lambda: self._post(_Wake(slot))
        self._slots[spec.id] = slot
        return slot

    async def _on_start_request(self, command: _StartRequest) -> None:
        slot = command.slot
        if slot.state != "starting" or self._slots.get(slot.spec.id) is not slot:
            cause = RuntimeError("it was terminated before it started")
            command.error = ChildStartFailed(self.path, slot.spec.id, cause)
            command.done.set()
            return
        error = await self._start_slot(slot)
        if error is not None:
            self._publish("crashed", slot, exc=error)
            self._terminate(slot, "it failed to start")
            failure = ChildStartFailed(self.path, slot.spec.id, error)
            failure.__cause__ = error
            command.error = failure
        command.done.set()

    async def _on_terminate_request(self, command: _TerminateRequest) -> None:
        slot = command.slot
        if slot.inc is not None:
            await self._stop_slot(slot)
        self._terminate(slot, "it was terminated by its supervisor")
        command.done.set()

    def _terminate(self, slot: _Slot, reason: str) -> None:
        super()._terminate(slot, reason)
        # The registry never holds a child that stopped for good.
        if self._slots.get(slot.spec.id) is slot:
            del self._slots[slot.spec.id]
