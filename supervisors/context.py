"""What a child is handed at each start: its identity, its siblings, the clock, the stop signal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from supervisors.actor import ActorRef, Mailbox, _Ask
from supervisors.clock import Clock
from supervisors.errors import ActorStopped, NotAnActor
from supervisors.log import get_logger

if TYPE_CHECKING:
    from supervisors.events import EventBus

__all__ = ["Context"]

_log = get_logger("supervisors")


class _Siblings(Protocol):
    path: str

    def ref(self, child_id: str) -> ActorRef[Any]: ...


class Context:
    """Handed to a ChildSpec's ``start(ctx)`` at every (re)start of the child.

    - ``id``, ``path``: the child's id and its path in the tree (``root/rooms/run-42``).
    - ``clock``: the tree's clock; read time only through it.
    - ``self_ref``: this child's own :class:`ActorRef` (stable across restarts).
    - ``sibling(id)``: the ref of another child of the same supervisor; it may be asked
      before that sibling has started (messages wait in its inbox).
    - ``parent``: the context of the supervisor this child belongs to (``None`` under the
      root), to reach further up the tree: ``ctx.parent.sibling("store")``.
    - ``stop_requested`` / ``wait_stop_requested()`` / ``stop_scope()``: the polite stop
      signal for a task child; it has its ChildSpec's ``shutdown`` seconds to return.
    - ``stop()``: an actor's way to exit normally after its current message.
    - ``receive()``: for a task child with an inbox, the next message.
    - ``log``: a logger (:mod:`supervisors.log`) bound with ``actor=<path>``.
    """

    __slots__ = (
        "_mailbox",
        "_siblings",
        "_stop_event",
        "_stop_requested",
        "_stop_scopes",
        "_stop_self",
        "clock",
        "events",
        "id",
        "log",
        "parent",
        "path",
    )

    def __init__(
        self,
        *,
        child_id: str,
        clock: Clock,
        events: EventBus,
        parent: Context | None,
        siblings: _Siblings,
        mailbox: Mailbox | None,
    ) -> None:
        self.id = child_id
        self.path = f"{siblings.path}/{child_id}"
        self.clock = clock
        self.events = events
        self.parent = parent
        self._siblings = siblings
        self._mailbox = mailbox
        self._stop_requested = False
        self._stop_event: anyio.Event | None = None
        self._stop_scopes: list[anyio.CancelScope] = []
        self._stop_self = False
        self.log = _log.bind(actor=self.path)

    def __repr__(self) -> str:
        return f"<Context {self.path}>"

    @property
    def self_ref(self) -> ActorRef[Any]:
        """This child's own ref; raises :class:`NotAnActor` if it has no inbox."""
        if self._mailbox is None:
            raise NotAnActor(self.path)
        return ActorRef(self._mailbox)

    def sibling(self, child_id: str) -> ActorRef[Any]:
        """The ref of the child ``child_id`` of the same supervisor."""
        return self._siblings.ref(child_id)

    @property
    def stop_requested(self) -> bool:
        """True once the supervisor has asked this child to stop."""
        return self._stop_requested

    async def wait_stop_requested(self) -> None:
        """Return when the supervisor asks this child to stop."""
        if self._stop_requested:
            return
        if self._stop_event is None:
            self._stop_event = anyio.Event()
        await self._stop_event.wait()

    @contextmanager
    def stop_scope(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that is cancelled when the supervisor asks this child to stop.

        Put the loop inside it and the drain after it: the drain then runs within the
        child's shutdown timeout.
        """
        with anyio.CancelScope() as scope:
            if self._stop_requested:
                scope.cancel()
            self._stop_scopes.append(scope)
            try:
                yield scope
            finally:
                self._stop_scopes.remove(scope)

    def stop(self) -> None:
        """Make this actor exit normally once its current message is handled.

        It is then restarted only if it is ``permanent``; a ``transient`` or ``temporary``
        child stops for good (and leaves a dynamic supervisor's registry). A task child
        exits normally by returning from ``run``.
        """
        self._stop_self = True

    async def receive(self) -> Any:
        """The next message in this task child's inbox (an ``ask`` to a task child fails)."""
        if self._mailbox is None:
            raise NotAnActor(self.path)
        while True:
            try:
                item = await self._mailbox.receive_stream.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise ActorStopped(self.path, self._mailbox.stopped_reason) from None
            if type(item) is _Ask:
                item.fail(
                    TypeError(
                        f"{self.path!r} is a task child reading its inbox with ctx.receive(); "
                        "it cannot reply to ask(). Use tell(), or make it an Actor."
                    )
                )
                continue
            return item

    def _request_stop(self) -> None:
        self._stop_requested = True
        if self._stop_event is not None:
            self._stop_event.set()
        for scope in self._stop_scopes:
            scope.cancel()
