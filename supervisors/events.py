"""Lifecycle events of supervised children: logged, and published to subscribers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from supervisors.log import get_logger

__all__ = ["EventBus", "EventKind", "LifecycleEvent"]

EventKind = Literal[
    "started", "stopped", "crashed", "restarted", "killed", "slept", "gave_up", "escalated"
]

_log = get_logger("supervisors")

# Stable event names, spelled out so they can be grepped.
_EVENT_NAMES: dict[str, str] = {
    "started": "supervisor.child_started",
    "stopped": "supervisor.child_stopped",
    "crashed": "supervisor.child_crashed",
    "restarted": "supervisor.child_restarted",
    "killed": "supervisor.child_killed",
    "slept": "supervisor.child_slept",
    "gave_up": "supervisor.gave_up",
    "escalated": "supervisor.child_escalated",
}


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One thing that happened to one child of one supervisor.

    ``kind`` is one of: ``started`` (ready), ``stopped`` (exited without an exception, or
    stopped by its supervisor), ``crashed`` (``exc`` is the exception), ``restarted``
    (``attempt`` counts consecutive restarts, ``delay`` is the backoff slept before it,
    ``exc`` the failure that caused it),
    ``killed`` (cancelled after its shutdown timeout), ``slept`` (stopped after its idle
    timeout; the next message wakes it), ``gave_up`` (the supervisor exceeded its restart
    intensity; ``child`` is the child whose failure tipped it over) and ``escalated`` (the child
    failed with ``exc``, which the supervisor's ``escalate`` says no restart can fix: the
    supervisor stopped its children and fails with ``exc`` itself).
    """

    kind: EventKind
    supervisor: str
    child: str
    at: float
    attempt: int | None = None
    delay: float | None = None
    exc: BaseException | None = None


class EventBus:
    """Fans lifecycle events out to the log and to any number of subscribers.

    One bus is shared by a whole tree (nested supervisors inherit their parent's). A
    subscriber that falls behind loses events rather than slowing the supervisor down:
    ``dropped`` counts them.
    """

    def __init__(self) -> None:
        self._subscribers: list[MemoryObjectSendStream[LifecycleEvent]] = []
        self.dropped = 0

    @contextmanager
    def subscribe(
        self, max_buffer: int = 100
    ) -> Iterator[MemoryObjectReceiveStream[LifecycleEvent]]:
        """Receive the events published while the block is open (at most ``max_buffer`` behind)."""
        send, receive = anyio.create_memory_object_stream[LifecycleEvent](max_buffer)
        self._subscribers.append(send)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.remove(send)
            send.close()

    def publish(self, event: LifecycleEvent) -> None:
        """Log ``event`` and hand it to each subscriber without waiting."""
        fields: dict[str, object] = {"supervisor": event.supervisor, "child": event.child}
        if event.attempt is not None:
            fields["attempt"] = event.attempt
        if event.delay is not None:
            fields["delay"] = None if math.isinf(event.delay) else round(event.delay, 6)
        if event.kind in ("restarted", "escalated") and event.exc is not None:
            # A restart: the traceback was logged with child_crashed; an escalated failure is
            # reported by whoever receives it at the top, once.
            fields["error"] = repr(event.exc)
        name = _EVENT_NAMES[event.kind]
        # What an operator must see is a failure or a restart; a child starting, stopping or
        # sleeping is the tree working as designed.
        if event.kind in ("crashed", "gave_up"):
            _log.error(name, exc_info=event.exc, **fields)
        elif event.kind in ("killed", "restarted"):
            _log.warning(name, **fields)
        else:
            _log.debug(name, **fields)
        for send in self._subscribers:
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the subscriber left; subscribe() removes it on exit
