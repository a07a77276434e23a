"""The run room: one actor per run that holds its live state and tells subscribers what happens."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator

import anyio
import msgspec

from actors.errors import QueueError, RunNotFound
from actors.log import get_logger
from actors.pipeline.messages import Refresh, RunEvent, RunRoomInbox, Subscribe
from actors.queue.base import Queue
from actors.queue.model import RunSummary
from supervisors import Actor, Context, SupervisionError

__all__ = ["TERMINAL_RUN_STATUSES", "RunRoom", "RunUpdate", "room_id", "run_of_room"]

TERMINAL_RUN_STATUSES = frozenset({"done", "failed", "cancelled"})

log = get_logger("actors.run_room")


def room_id(run_id: str) -> str:
    """The id of a run's room in the ``run_rooms`` supervisor: the run id with ``%`` and ``/``
    percent-encoded, since a child id cannot hold ``/`` and any client may name a run ``a/b``
    (one-to-one, so two runs never share a room)."""
    return run_id.replace("%", "%25").replace("/", "%2F")


def run_of_room(room: str) -> str:
    """The run id whose room is ``room`` (the inverse of `room_id`)."""
    return room.replace("%2F", "/").replace("%25", "%")


def _terminal(summary: RunSummary | None) -> bool:
    return summary is not None and summary.status in TERMINAL_RUN_STATUSES


class RunUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """What a subscriber sees: the run's state now and the events since its last update."""

    summary: RunSummary | None
    events: list[RunEvent]
    missed: int = 0  # events that fell out of the room's memory before this subscriber saw them


class RunRoom(Actor[RunRoomInbox]):
    """One run's state, like the RunRoom Durable Object: summary, recent events, subscribers.

    The durable state lives in the queue's database, updated in the same transaction as the
    acks (`RunSummary`: counts, aggregates, timestamps), so a room is a cache that can sleep
    when idle and is rebuilt from the database when it wakes; after any crash it agrees with
    the queue. Events reach it after their commit (the ack reporter sends them), so a
    subscriber never sees an outcome that could still be rolled back.

    Error handling: a room has no job in its hands; if it crashes, its successor reloads the
    summary and the subscribers of the old one move to the new one (`ActorSystem.watch_run`).
    """

    def __init__(
        self,
        run_id: str,
        *,
        queue: Queue,
        ctx: Context | None = None,
        recent_events: int = 100,
        poll_seconds: float = 1.0,
    ) -> None:
        self.run_id = run_id
        self._ctx = ctx
        self._poll_seconds = poll_seconds
        self._queue = queue
        self._events: deque[tuple[int, RunEvent]] = deque(maxlen=recent_events)
        self._seq = 0
        self._changed = anyio.Event()
        self._subscribers = 0
        self.closed = False
        self.summary: RunSummary | None = None

    @property
    def subscribers(self) -> int:
        return self._subscribers

    async def on_start(self) -> None:
        """Load the run's state from the database (a missing run is one not enqueued yet)."""
        await self._refresh()

    async def on_stop(self) -> None:
        self.closed = True
        self._notify()

    async def handle(self, message: RunRoomInbox) -> RunRoom | None:
        """Record an event and reload the run's state; answer a `Subscribe` with this room."""
        match message:
            case RunEvent():
                self._seq += 1
                self._events.append((self._seq, message))
                await self._reload(changed=True)
            case Refresh():
                await self._reload(changed=False)
            case Subscribe():
                if self.finished and self._ctx is not None:
                    self._ctx.stop()  # a watcher of a finished run needs no live room
                return self
        return None

    async def _reload(self, *, changed: bool) -> None:
        before = self.summary
        await self._refresh()
        if changed or self.summary != before:
            self._notify()
        if self.finished and self._ctx is not None:
            # A finished run leaves the registry for good once this message is handled
            # (subscribers still read its final state from this object); a later event or
            # watcher starts a fresh room from the database.
            self._ctx.stop()

    async def _refresh(self) -> None:
        try:
            self.summary = await self._queue.run_summary(self.run_id)
        except RunNotFound:
            self.summary = None
        except QueueError as exc:
            # A room is a cache: a queue that cannot answer for a moment (a disk or network
            # error) must not crash it, let alone, crash after crash, the whole system.
            # Keep the last state; the next event or poll reloads it.
            log.warning("run_room.refresh_failed", run_id=self.run_id, error=str(exc))

    def _request_refresh(self) -> None:
        if self._ctx is None:
            return
        # A full inbox reloads anyway; a stopped room ends the subscription.
        with contextlib.suppress(SupervisionError):
            self._ctx.self_ref.tell_nowait(Refresh())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def finished(self) -> bool:
        return _terminal(self.summary)

    async def updates(self) -> AsyncIterator[RunUpdate]:
        """Yield the state now, then after every change, until the run ends or the room stops.

        A slow subscriber never slows the room: it skips intermediate states and gets the
        events it missed from the room's memory (``missed`` counts those already forgotten).
        """
        self._subscribers += 1
        try:
            seen, last = self._seq, self.summary
            yield RunUpdate(summary=last, events=[e for _, e in self._events])
            while not _terminal(last):
                if self._seq == seen and self.summary == last:
                    if self.closed:
                        return  # the room stopped; the watcher finds its successor
                    changed = self._changed
                    # Workers in other processes change the run too, and they tell no room
                    # here: while someone watches, reload from the database every interval.
                    with anyio.move_on_after(self._poll_seconds):
                        await changed.wait()
                    if not changed.is_set():
                        self._request_refresh()
                    continue
                new = [(seq, e) for seq, e in self._events if seq > seen]
                missed = max(0, new[0][0] - seen - 1) if new else 0
                seen, last = self._seq, self.summary
                yield RunUpdate(summary=last, events=[e for _, e in new], missed=missed)
        finally:
            self._subscribers -= 1
