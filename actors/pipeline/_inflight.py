"""The in-flight table: every job this process has leased and not yet settled, and who holds it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import anyio

from actors.pipeline.messages import LeasedJob
from supervisors import Context

__all__ = ["InFlight", "ObjectBudget", "stop_scope"]


@contextlib.contextmanager
def stop_scope(ctx: Context | None) -> Iterator[None]:
    """Cancelled when the supervisor asks the child to stop; does nothing outside a tree."""
    if ctx is None:
        yield
        return
    with ctx.stop_scope():
        yield


class _Entry:
    __slots__ = ("cancelled", "crash", "deadline", "decided", "holder", "job", "lost", "scope")

    def __init__(self, job: LeasedJob) -> None:
        self.job = job
        self.holder: str | None = None  # the worker working on it; None while in a stream
        self.crash: str | None = None  # set when the holder crashed on it
        self.lost = False  # its lease was found expired or superseded: no more renewals
        # When its processing time limit runs out (`anyio.current_time()`); None: not started.
        self.deadline: float | None = None
        self.decided = False  # its outcome is on the way to the ack reporter
        self.cancelled = False  # the queue refused its lease as cancelled: stop working on it
        self.scope: anyio.CancelScope | None = None  # its processing, while a processor runs it


class InFlight:
    """Slots and custody of leased jobs; the credit behind the pipeline's flow control.

    The lease manager takes a slot per job it leases (`add`); the ack reporter gives it back
    once the job's outcome is committed or its lease given back (`settle`). Workers record which
    job they hold (`hold`), so that a restarted worker can recover what its predecessor held
    (`take_held`): nothing in this table is ever forgotten while its lease is live.

    Entries are keyed by job id *and* lease token: if this process loses a lease and later
    leases the same job again, the stale copy and the new one are two entries, each with its
    own slot, and settling one never forgets the other.

    Invariant: ``len(self) <= capacity``, and every job in the table is either in a stream
    between two stages (no holder) or held by exactly one named worker.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: dict[tuple[int, str], _Entry] = {}
        self._changed: anyio.Event | None = None
        self._decided = 0  # entries whose outcome is decided, waiting for the ack's commit
        self._room: tuple[int, anyio.Event] | None = None  # see wait_undecided

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job: object) -> bool:
        return isinstance(job, LeasedJob) and (job.id, job.lease_token) in self._entries

    @property
    def free(self) -> int:
        """How many more jobs may be leased now."""
        return self.capacity - len(self._entries)

    def jobs(self) -> list[LeasedJob]:
        """Every job in flight, oldest first."""
        return [entry.job for entry in self._entries.values()]

    @property
    def undecided(self) -> int:
        """Jobs in flight whose outcome is not decided yet: waiting for or in a stage."""
        return len(self._entries) - self._decided

    def live_jobs(self) -> list[LeasedJob]:
        """Every job in flight whose lease is not known to be lost (the ones to renew)."""
        return [entry.job for entry in self._entries.values() if not entry.lost]

    def renewable_jobs(self, now: float) -> list[LeasedJob]:
        """The live jobs still within their time limit at ``now`` (``anyio.current_time()``).

        A job past its limit is being failed with `timeout`; renewing its lease would only let
        a processor that ignores cancellation hold the job for ever.
        """
        return [
            entry.job
            for entry in self._entries.values()
            if not entry.lost and (entry.deadline is None or now < entry.deadline)
        ]

    def set_deadline(self, job: LeasedJob, deadline: float) -> None:
        """Record when ``job``'s processing time limit runs out (a processor took it)."""
        entry = self._entries.get((job.id, job.lease_token))
        if entry is not None:
            entry.deadline = deadline

    def decided(self, job: LeasedJob) -> None:
        """Record that ``job``'s outcome went to the ack reporter: its stage is free for another."""
        entry = self._entries.get((job.id, job.lease_token))
        if entry is not None and not entry.decided:
            entry.decided = True
            self._decided += 1
            self._notify_room()

    async def wait_undecided(self, at_most: int) -> None:
        """Wait until at most ``at_most`` jobs in flight are undecided (one wake-up, not one
        per outcome)."""
        if self.undecided <= at_most:
            return
        event = anyio.Event()
        self._room = (at_most, event)
        await event.wait()

    def _notify_room(self) -> None:
        if self._room is not None and self.undecided <= self._room[0]:
            self._room[1].set()
            self._room = None

    def set_scope(self, job: LeasedJob, scope: anyio.CancelScope | None) -> None:
        """Record the cancel scope of ``job``'s processing (None: its processing ended)."""
        entry = self._entries.get((job.id, job.lease_token))
        if entry is not None:
            entry.scope = scope

    def cancel(self, job: LeasedJob) -> None:
        """Stop working on ``job``: it was cancelled. Its processing (if running) is cancelled
        (a worker process running it is killed) and its lease is renewed no more; the stage that
        holds it gives it back, which ends it cancelled in the queue."""
        entry = self._entries.get((job.id, job.lease_token))
        if entry is not None:
            entry.cancelled = True
            entry.lost = True
            if entry.scope is not None:
                entry.scope.cancel()

    def is_cancelled(self, job: LeasedJob) -> bool:
        """Whether ``job`` was cancelled while in flight here (see `cancel`)."""
        entry = self._entries.get((job.id, job.lease_token))
        return entry is not None and entry.cancelled

    def mark_lost(self, job: LeasedJob) -> None:
        """Record that ``job``'s lease is gone: its outcome will be refused, stop renewing it."""
        entry = self._entries.get((job.id, job.lease_token))
        if entry is not None:
            entry.lost = True

    def add(self, jobs: Iterable[LeasedJob]) -> None:
        """Take a slot for each of ``jobs``, just leased."""
        for job in jobs:
            self._entries[job.id, job.lease_token] = _Entry(job)
        if len(self._entries) > self.capacity:
            raise AssertionError(f"in-flight table over capacity: {len(self)} > {self.capacity}")
        self._notify()

    def hold(self, job: LeasedJob, holder: str) -> None:
        """Record that ``holder`` works on ``job`` now."""
        entry = self._entries.get((job.id, job.lease_token))
        if entry is not None:
            entry.holder = holder

    def let_go(self, job: LeasedJob, holder: str) -> None:
        """``holder`` handed the job on: clear its custody unless the next stage took it already."""
        entry = self._entries.get((job.id, job.lease_token))
        if entry is not None and entry.holder == holder:
            entry.holder = None

    def crashed(self, job: LeasedJob, error: str) -> None:
        """Record that the job's holder crashed on it: its successor fails the job (a retry)."""
        entry = self._entries.get((job.id, job.lease_token))
        if entry is not None:
            entry.crash = error

    def take_held(self, holder: str) -> list[tuple[LeasedJob, str | None]]:
        """Return the jobs ``holder`` held (with its crash, if any) and clear their holder."""
        taken = []
        for entry in self._entries.values():
            if entry.holder == holder:
                taken.append((entry.job, entry.crash))
                entry.holder = None
                entry.crash = None
        return taken

    def settle(self, jobs: Iterable[LeasedJob]) -> None:
        """Give back the slots of ``jobs``: their outcome is committed or their lease is back."""
        for job in jobs:
            entry = self._entries.pop((job.id, job.lease_token), None)
            if entry is not None and entry.decided:
                self._decided -= 1
        self._notify()
        self._notify_room()

    async def wait_changed(self) -> None:
        """Wait until a job is added or settled."""
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    async def wait_empty(self) -> None:
        """Wait until no job is in flight."""
        while self._entries:
            await self.wait_changed()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class ObjectBudget:
    """Admission to the processors' stream, which holds whole objects: memory stays bounded.

    An object is admitted while fewer than ``objects`` wait there, whatever its size, or while
    the bytes waiting stay within ``max_bytes`` with it: so at most ``objects`` objects of any
    size and ``max_bytes`` of small ones wait together. Small documents then wait in numbers
    (a processor takes them as one batch); large ones two per processor, as they always did.

    The fetcher admits (`admit`) before its send and gives back (`cancel`) if the send fails;
    a processor gives back (`taken`) as it receives, with no checkpoint in between, so the
    accounting follows the messages in the stream across restarts of either end.
    """

    def __init__(self, objects: int, max_bytes: int) -> None:
        self.objects = objects
        self.max_bytes = max_bytes
        self.waiting = 0  # objects in the stream
        self.bytes = 0  # their bytes
        self._changed: anyio.Event | None = None
        self._turn: anyio.Lock | None = None

    @property
    def turn(self) -> anyio.Lock:
        """Held by the processor that waits for the stream's next item (one at a time)."""
        if self._turn is None:  # created on first use: it belongs to the running loop
            self._turn = anyio.Lock()
        return self._turn

    def _fits(self, size: int) -> bool:
        return self.waiting < self.objects or self.bytes + size <= self.max_bytes

    async def admit(self, size: int) -> None:
        """Wait until an object of ``size`` bytes may go into the stream; count it there."""
        while not self._fits(size):
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
        self.waiting += 1
        self.bytes += size

    def cancel(self, size: int) -> None:
        """An admitted object did not go into the stream after all."""
        self.taken(size)

    def taken(self, size: int) -> None:
        """An object of ``size`` bytes left the stream."""
        self.waiting -= 1
        self.bytes -= size
        if self._changed is not None:
            self._changed.set()
            self._changed = None
