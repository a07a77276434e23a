"""What a supervisor is told about its children: ChildSpec, Backoff, the introspection records."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import anyio

if TYPE_CHECKING:
    from supervisors.actor import Actor, ActorRef
    from supervisors.context import Context

__all__ = [
    "Backoff",
    "Child",
    "ChildCounts",
    "ChildInfo",
    "ChildKind",
    "ChildSpec",
    "ChildState",
    "Restart",
    "Runnable",
    "Strategy",
]

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
ChildKind = Literal["actor", "supervisor", "task"]
ChildState = Literal["starting", "running", "restarting", "sleeping", "stopped"]

# Default shutdown timeout of a worker (an actor or a task); supervisors get math.inf
# because their own children's timeouts already bound how long they take (OTP's choice).
WORKER_SHUTDOWN_SECONDS = 5.0


class Runnable(Protocol):
    """A long-running child, not message-driven: ready when it calls ``task_status.started()``."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None: ...


RunFunction: TypeAlias = Callable[..., Awaitable[None]]
"""A coroutine function called as ``await fn(task_status=...)``."""

Child: TypeAlias = "Actor[Any] | Runnable | RunFunction"
"""What a ChildSpec's ``start(ctx)`` returns: an :class:`Actor`, a :class:`Supervisor` or
:class:`DynamicSupervisor`, an object with ``async def run(*, task_status)``, or such a
coroutine function itself."""


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child, when to restart it and how long it may take to stop.

    - ``id``: unique among its supervisor's children; its ref and its log lines name it.
    - ``start(ctx)``: called for every (re)start with a fresh :class:`Context`; returns a
      :data:`Child`.
    - ``restart``: ``permanent`` (always restarted), ``transient`` (restarted only after an
      exception) or ``temporary`` (never restarted, not even when a sibling's failure
      stopped it).
    - ``shutdown``: seconds the child has to stop once asked (an actor finishes its current
      message and runs ``on_stop``; a task should return when ``ctx.stop_requested``); then it
      is cancelled. ``0`` cancels at once. ``None``: 5 s for workers, no limit for supervisors.
    - ``inbox_size``: the child's bounded inbox; required for an :class:`Actor`, optional for a
      task (read it with ``ctx.receive()``), absent for a supervisor. ``0`` is a rendezvous.
    """

    id: str
    start: Callable[[Context], Child]
    restart: Restart = "permanent"
    shutdown: float | None = None
    inbox_size: int | None = None

    def __post_init__(self) -> None:
        if not self.id or "/" in self.id:
            raise ValueError(f"a child id must be non-empty and contain no '/'; got {self.id!r}")
        if self.restart not in ("permanent", "transient", "temporary"):
            raise ValueError(
                f"child {self.id!r}: restart must be 'permanent', 'transient' or 'temporary'; "
                f"got {self.restart!r}"
            )
        if self.shutdown is not None and not self.shutdown >= 0:
            raise ValueError(
                f"child {self.id!r}: shutdown must be >= 0 seconds; got {self.shutdown!r}"
            )
        if self.inbox_size is not None and self.inbox_size < 0:
            raise ValueError(f"child {self.id!r}: inbox_size must be >= 0; got {self.inbox_size!r}")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter between restarts of a crashing child (Akka's shape).

    The n-th consecutive restart waits ``min(max_seconds, min_seconds * 2**(n-1))``, times a
    random factor in ``[1, 1 + jitter]`` so that many children do not retry in lockstep. A
    child that ran ``reset_after`` seconds (default ``max_seconds``) without crashing starts
    again from ``min_seconds``.
    """

    min_seconds: float = 0.1
    max_seconds: float = 10.0
    jitter: float = 0.2
    reset_after: float | None = None
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"Backoff needs 0 <= min_seconds <= max_seconds; got {self.min_seconds!r}, "
                f"{self.max_seconds!r}"
            )
        if self.jitter < 0:
            raise ValueError(f"Backoff jitter must be >= 0; got {self.jitter!r}")

    @property
    def quiet_period(self) -> float:
        return self.max_seconds if self.reset_after is None else self.reset_after

    def delay(self, attempt: int) -> float:
        """The delay before restart number ``attempt`` (1 for the first) of a child."""
        exponent = min(attempt - 1, 1023)  # 2.0**1024 overflows a float
        base = min(self.max_seconds, self.min_seconds * 2.0**exponent)
        return base * (1.0 + self.jitter * self.random())


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of ``which_children()``."""

    id: str
    state: ChildState
    kind: ChildKind | None  # None until the child has been started once
    restart: Restart
    restarts: int  # how many times this child has been restarted
    ref: ActorRef[Any] | None  # None for a child without inbox


@dataclass(frozen=True, slots=True)
class ChildCounts:
    """``count_children()``: OTP's specs / active / supervisors / workers."""

    specs: int
    active: int
    supervisors: int
    workers: int


def resolve_shutdown(spec: ChildSpec, kind: ChildKind | None) -> float:
    if spec.shutdown is not None:
        return spec.shutdown
    return math.inf if kind == "supervisor" else WORKER_SHUTDOWN_SECONDS
