"""`PullWaits`: pulls that wait for a job (long polls), woken by the queue's enqueues."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from actors.bounds import MAX_PULL_WAITERS
from actors.errors import QueueClosed
from actors.queue.model import Job

__all__ = ["PullWaits"]

Subscribe = Callable[[Callable[[], object]], Callable[[], None]]


class PullWaits:
    """The waiting pulls of one queue object (SQLite, PostgreSQL).

    A waiting pull claims; if it leased nothing, it waits until the queue announces an enqueue
    (its ``on_enqueue``: a commit through this object, or on PostgreSQL another process's
    NOTIFY), ``recheck_seconds`` pass (for what no enqueue announces: a delayed job coming due,
    a lease given back or expired, another process's write to a SQLite file), or its time is
    up; then it claims again. Between claims it holds nothing: no connection, no lease.

    Every waiting pull is woken by every enqueue and claims again (those that lease nothing
    wait again), so at most `MAX_PULL_WAITERS` wait at once; a pull beyond them claims once and
    answers. It subscribes to ``on_enqueue`` on the first waiting pull and stays subscribed
    until `close` (on PostgreSQL a subscription LISTENs on a connection of its own).

    Cancellation: a pull cancelled while it waits leases nothing. Each claim is shielded (a
    claim cut off half-way could commit leases that nobody records) and its jobs are returned
    with no checkpoint after it, so a pull cancelled during its claim still returns them.
    """

    def __init__(
        self, subscribe: Subscribe, recheck_seconds: float, limit: int = MAX_PULL_WAITERS
    ) -> None:
        self._subscribe = subscribe
        self._unsubscribe: Callable[[], None] | None = None
        self._recheck = recheck_seconds
        self._limit = limit
        # Set (and replaced) by the next enqueue; created by the first pull that waits on it.
        self._bell: anyio.Event | None = None
        self._closed = False
        #: How many pulls wait now.
        self.waiting = 0

    async def pull(
        self, claim: Callable[[], Awaitable[list[Job]]], wait_seconds: float
    ) -> list[Job]:
        """``claim()`` until it leases something or ``wait_seconds`` have passed."""
        if wait_seconds <= 0 or self._closed or self.waiting >= self._limit:
            return await claim()
        deadline = anyio.current_time() + wait_seconds
        if self._unsubscribe is None:
            self._unsubscribe = self._subscribe(self._ring)
        self.waiting += 1
        try:
            while True:
                # Taken before the claim: an enqueue that commits during it still rings it.
                if self._bell is None:
                    self._bell = anyio.Event()
                bell = self._bell
                with anyio.CancelScope(shield=True):
                    try:
                        jobs = await claim()
                    except QueueClosed:
                        if not self._closed:
                            raise
                        # Closed during the claim (a claim may take several steps, the first
                        # before the close): a waiting pull ends empty, as promised.
                        return []
                left = deadline - anyio.current_time()
                if jobs or left <= 0 or self._closed:
                    return jobs
                with anyio.move_on_after(min(left, self._recheck)):
                    await bell.wait()
                if self._closed:
                    return []
        finally:
            self.waiting -= 1

    def _ring(self) -> None:
        """An enqueue committed: wake every waiting pull (called in the event loop's thread)."""
        bell, self._bell = self._bell, None
        if bell is not None:
            bell.set()

    def close(self) -> None:
        """Wake every waiting pull, which returns empty; later pulls do not wait."""
        self._closed = True
        self._ring()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
