"""``SQLiteQueue``: the durable job queue's async API over one SQLite file."""

from __future__ import annotations

import contextlib
import functools
import math
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import anyio.to_thread

from actors.bounds import DEFAULT_MAX_PAYLOAD_BYTES, MAX_PAGE
from actors.log import get_logger
from actors.queue._rows import ByOwner
from actors.queue._waiting import PullWaits
from actors.queue.base import (
    OwnedQueue,
    SingleItemVerbs,
    check_ack,
    check_batch,
    check_cancel,
    check_delay,
    check_imported,
    check_limits,
    check_listing,
    check_maintenance,
    check_new_job,
    check_open,
    check_optional_text,
    check_origins,
    check_page,
    check_pull,
    check_range,
    check_schedule,
    check_schedule_key,
    check_text,
    check_visibility,
    imported_max_attempts,
    jitter_factors,
)
from actors.queue.model import (
    Ack,
    AckResult,
    Backoff,
    ImportedJob,
    ImportResult,
    ItemResult,
    Job,
    JobStatus,
    LeaseResult,
    MaintenanceClaim,
    NewJob,
    NewSchedule,
    Page,
    QueueControls,
    RunCancel,
    RunSummary,
    Schedule,
    ScheduleFiring,
    Stats,
    Throughput,
)
from actors.queue.sqlite import _verbs as store
from actors.queue.sqlite import schema
from actors.queue.sqlite._writer import Batch, Checkpointer, GroupCommitWriter, ReaderPool
from actors.queue.sqlite.schema import Durability
from supervisors.clock import Clock, SystemClock

__all__ = ["SQLiteQueue"]


log = get_logger("actors.queue")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class SQLiteQueue(SingleItemVerbs):
    """The durable job queue in one SQLite file (WAL), safe across tasks and processes.

    Open it with ``async with SQLiteQueue.open(path) as q``. Every write goes through one writer
    thread that group-commits concurrent requests; when a write verb returns, it is committed.
    Reads use their own connections. Runs on asyncio and trio.
    """

    def __init__(
        self,
        path: Path,
        writer: GroupCommitWriter,
        readers: ReaderPool,
        checkpointer: Checkpointer,
        *,
        clock: Clock,
        max_payload_bytes: int,
        max_attempts: int,
        backoff: Backoff,
        seed: int | None,
        fair: bool = True,
        poll_interval_seconds: float = 1.0,
    ) -> None:
        self.path = path
        self._writer = writer
        self._readers = readers
        self._checkpointer = checkpointer
        self._clock = clock
        self._max_payload_bytes = max_payload_bytes
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._rng = random.Random(seed)  # jitter; used only inside a write transaction
        self._on_enqueue: list[Callable[[], object]] = []
        self._on_cancel: list[Callable[[], object]] = []
        # Fair claims' place in the round of tenants (used only inside a write transaction).
        self._rotation = store.Rotation() if fair else None
        self._waits = PullWaits(self.on_enqueue, poll_interval_seconds)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        path: str | Path,
        *,
        durability: Durability = "normal",
        clock: Clock | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        seed: int | None = None,
        busy_timeout_seconds: float = 10.0,
        fair: bool = True,
        poll_interval_seconds: float = 1.0,
    ) -> AsyncIterator[SQLiteQueue]:
        """Open (creating and migrating as needed) the queue in ``path``; close it on exit.

        ``fair``: pulls serve tenants in turns (`pull`); else the highest priority first.
        ``poll_interval_seconds``: how often a waiting pull (``wait_seconds``) claims again
        for jobs no enqueue through this object announced (another process's, a delayed job
        coming due, a lease given back).
        """
        check_open(max_attempts, max_payload_bytes)
        check_range("poll_interval_seconds", poll_interval_seconds, 0.001, 3600)
        path = Path(path)
        connect = functools.partial(
            schema.connect, path, durability=durability, busy_timeout_seconds=busy_timeout_seconds
        )
        # One thread call, then no await until `try`: a cancellation cannot leak a connection.
        conn, checkpoint_conn = await anyio.to_thread.run_sync(_open_migrated, connect, path)
        checkpointer = Checkpointer(checkpoint_conn)
        queue = cls(
            path,
            # The fast path holds the event loop for a commit, so only where a commit has no fsync.
            GroupCommitWriter(conn, after_commit=checkpointer.poke, inline=durability == "normal"),
            ReaderPool(connect),
            checkpointer,
            clock=clock or SystemClock(),
            max_payload_bytes=max_payload_bytes,
            max_attempts=max_attempts,
            backoff=backoff or Backoff(),
            seed=seed,
            fair=fair,
            poll_interval_seconds=poll_interval_seconds,
        )
        try:
            yield queue
        finally:
            with anyio.CancelScope(shield=True):
                await queue.aclose()

    async def aclose(self) -> None:
        """Commit what was submitted, stop the writer thread and close every connection."""
        self._waits.close()
        await self._writer.aclose()
        await self._checkpointer.aclose()
        self._readers.close()

    # --- producers -----------------------------------------------------------------------

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Add every job in one transaction: all of them are committed, or none."""
        check_batch("jobs", jobs)
        for new in jobs:
            check_new_job(new, self._max_payload_bytes)
        if not jobs:
            return []
        return await self._batched("enqueue", jobs, self._enqueue, on_commit=self._notify_enqueued)

    def _enqueue(self, conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Job]:
        return store.enqueue(conn, self._clock.time(), jobs, self._max_attempts)

    async def _batched(
        self,
        key: Hashable,
        items: Sequence[ItemT],
        work: Callable[[sqlite3.Connection, Sequence[ItemT]], list[ResultT]],
        *,
        on_commit: Callable[[list[ResultT]], None] | None = None,
    ) -> list[ResultT]:
        """``work(conn, items)`` through the writer, which may merge it with other callers'
        items of the same ``key`` into one call (`Batch`)."""
        return await self._writer.run(
            lambda conn: work(conn, items),
            on_commit=on_commit,
            small=len(items) == 1,
            batch=Batch(key, items, work),
        )

    def on_enqueue(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` in the event loop after each enqueue through this object commits.

        Returns a function that unsubscribes. The callback must not block; its exceptions are
        logged, not raised.
        """
        self._on_enqueue.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._on_enqueue.remove(callback)

        return unsubscribe

    def _notify_enqueued(self, jobs: list[Job]) -> None:
        for callback in list(self._on_enqueue):
            try:
                callback()
            except Exception:  # a subscriber's bug must not break the caller's enqueue
                log.exception("queue.on_enqueue_failed", callback=repr(callback))

    # --- consumers -----------------------------------------------------------------------

    async def pull(
        self,
        max: int = 10,
        visibility_seconds: float = 60,
        worker_id: str | None = None,
        *,
        owner: str | None = None,
        started: bool = False,
        wait_seconds: float = 0,
    ) -> list[Job]:
        """Lease up to ``max`` visible jobs for ``visibility_seconds``: tenants in turns (fair),
        each tenant's highest priority first; nothing paused, nothing past a tenant's limits.

        ``owner`` names the principal taking the leases (recorded as ``lease_owner``): only it
        may settle them by id alone (`ack_ids`). ``started`` marks them started at once, for a
        caller that never calls `start_many` (else a job that kills it never runs out of
        attempts). With nothing to lease, ``wait_seconds`` (at most `MAX_PULL_WAIT_SECONDS`)
        waits for a job to arrive and leases it at once (`PullWaits`).
        """
        check_pull(max, visibility_seconds, worker_id, owner, wait_seconds)

        def claim() -> Awaitable[list[Job]]:
            if max == 1:
                return self._pull_one((visibility_seconds, worker_id, owner, started))
            return self._writer.run(
                lambda conn: store.pull(
                    conn,
                    self._clock.time(),
                    max,
                    visibility_seconds,
                    worker_id,
                    owner,
                    started,
                    self._rotation,
                ),
                small=max == 1,
            )

        if wait_seconds == 0:
            return await claim()
        return await self._waits.pull(claim, wait_seconds)

    async def _pull_one(self, terms: tuple[float, str | None, str | None, bool]) -> list[Job]:
        """`pull(max=1)`: concurrent ones on the same terms merge into one claim of as many
        jobs (one reap, one statement), a job each in the order they came."""
        claim = functools.partial(self._claim, terms)
        taken = await self._batched(("pull", *terms), (None,), claim)
        return [job for job in taken if job is not None]

    def _claim(
        self,
        terms: tuple[float, str | None, str | None, bool],
        conn: sqlite3.Connection,
        slots: Sequence[None],
    ) -> list[Job | None]:
        visibility_seconds, worker_id, owner, started = terms
        jobs: list[Job | None] = []
        jobs += store.pull(
            conn,
            self._clock.time(),
            len(slots),
            visibility_seconds,
            worker_id,
            owner,
            started,
            self._rotation,
        )
        return jobs + [None] * (len(slots) - len(jobs))

    async def renew_many(
        self, leases: Sequence[tuple[int, str]], visibility_seconds: float
    ) -> list[LeaseResult]:
        """Extend every live lease in one transaction; stale ones are refused item by item."""
        check_batch("leases", leases)
        check_visibility(visibility_seconds)
        return await self._writer.run(
            lambda conn: store.renew_many(conn, self._clock.time(), leases, visibility_seconds),
            small=len(leases) == 1,
        )

    async def start_many(self, leases: Sequence[tuple[int, str]]) -> list[LeaseResult]:
        """Mark each live lease's job started (handed to the pipeline's first stage); stale
        ones are refused item by item.

        Fair attempt accounting: a lease that expires before its job started costs the job no
        attempt (`reap` gives it back); once started, an expiry spends it.
        """
        check_batch("leases", leases)
        return await self._writer.run(
            lambda conn: store.start_many(conn, self._clock.time(), leases),
            small=len(leases) == 1,
        )

    async def release_many(
        self, leases: Sequence[tuple[int, str]], delay_seconds: float = 0
    ) -> list[LeaseResult]:
        """Give back every live lease in one transaction; stale ones are refused item by item."""
        check_batch("leases", leases)
        check_delay(delay_seconds)
        return await self._writer.run(
            lambda conn: store.release_many(conn, self._clock.time(), leases, delay_seconds),
            small=len(leases) == 1,
        )

    async def ack_many(self, acks: Sequence[Ack]) -> list[AckResult]:
        """Record every outcome in one transaction; a stale lease refuses only its own item."""
        check_batch("acks", acks)
        for a in acks:
            check_ack(a, self._max_payload_bytes)
        return await self._batched(("ack", None), acks, self._ack)

    def _ack(
        self, conn: sqlite3.Connection, acks: Sequence[Ack], owned: ByOwner | None = None
    ) -> list[AckResult]:
        return store.ack(conn, self._clock.time(), acks, self._backoff, self._jitter(), owned=owned)

    async def ack_ids(
        self,
        ids: Sequence[int],
        status: Literal["done", "failed"],
        *,
        owner: str | None,
        error: str | None = None,
    ) -> list[AckResult]:
        """Record an outcome by job id alone (the seed's form), for live leases ``owner`` took.

        An ack without a token cannot tell this lease from a later one, so it settles a job only
        while its live lease is ``owner``'s (the principal that pulled it); any other job is
        refused item by item (``expired``, ``foreign_lease``, ``finished``, ``not_leased``,
        ``not_found``).
        """
        check_batch("ids", ids)
        check_optional_text("owner", owner)
        acks = [Ack(job_id=i, lease_token="", status=status, error=error) for i in ids]
        for a in acks:
            check_ack(a, self._max_payload_bytes)
        owned = ByOwner(owner)
        return await self._batched(("ack", owned), acks, functools.partial(self._ack, owned=owned))

    def _jitter(self) -> Iterator[float]:
        return jitter_factors(self._rng, self._backoff.jitter)

    # --- operators -----------------------------------------------------------------------

    async def cancel_many(
        self, job_ids: Sequence[int], *, tenant_id: str | None = None
    ) -> list[ItemResult]:
        """Cancel each job (only ``tenant_id``'s, when given) in one transaction.

        A pending job ends ``cancelled`` at once; a leased one is marked, and ends
        ``cancelled`` when its holder next renews, starts, releases or acks it (refused as
        ``cancelled``), or when its lease expires. Per item: ``ok`` (see the job's status),
        ``duplicate`` (already cancelled or marked), ``finished`` or ``not_found``.
        """
        check_cancel(job_ids, tenant_id)
        if not job_ids:
            return []
        results, marked = await self._writer.run(
            lambda conn: store.cancel(conn, self._clock.time(), job_ids, tenant_id)
        )
        self._notify_cancelled(marked)
        return results

    async def cancel_run(self, run_id: str, *, tenant_id: str | None = None) -> RunCancel:
        """Cancel every unfinished job of the run (as `cancel_many` does each), or raise
        RunNotFound (also for a run of another tenant than ``tenant_id``)."""
        check_optional_text("run_id", run_id)
        check_optional_text("tenant_id", tenant_id)
        outcome, marked = await self._writer.run(
            lambda conn: store.cancel_run(conn, self._clock.time(), run_id, tenant_id)
        )
        self._notify_cancelled(marked)
        return outcome

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` in the event loop after a cancel through this object marks leased
        jobs for cancellation: holders here renew at once to learn which of their leases end
        (other processes learn at their next renewal). Returns a function that unsubscribes."""
        self._on_cancel.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._on_cancel.remove(callback)

        return unsubscribe

    def _notify_cancelled(self, job_ids: Sequence[int]) -> None:
        if not job_ids:
            return
        for callback in list(self._on_cancel):
            try:
                callback()
            except Exception:  # a subscriber's bug must not break the caller's cancel
                log.exception("queue.on_cancel_failed", callback=repr(callback))

    async def reap(self) -> int:
        """Return every expired lease's job to pending (or fail it); return how many.

        A job never started under its lease gets its attempt back; a started one spends it.
        """
        return await self._writer.run(lambda conn: store.reap(conn, self._clock.time()))

    async def requeue(
        self,
        job_ids: Sequence[int] | None = None,
        *,
        run_id: str | None = None,
        tenant_id: str | None = None,
    ) -> int:
        """Return terminally failed jobs to pending with attempts reset; return how many."""
        if job_ids is not None:
            check_batch("job_ids", job_ids)
        return await self._writer.run(
            lambda conn: store.requeue(conn, self._clock.time(), job_ids, run_id, tenant_id)
        )

    async def purge(self, older_than_seconds: float) -> int:
        """Delete jobs that finished more than ``older_than_seconds`` ago; return how many."""
        check_range("older_than_seconds", older_than_seconds, 0, math.inf)
        return await self._writer.run(
            lambda conn: store.purge(conn, self._clock.time(), older_than_seconds)
        )

    async def claim_maintenance(
        self, task: str, interval_seconds: float, owner: str | None = None
    ) -> MaintenanceClaim:
        """Claim ``task``'s round if it is due; the winner does the round, the others skip it."""
        check_maintenance(task, interval_seconds, owner)
        return await self._writer.run(
            lambda conn: store.claim_maintenance(
                conn, self._clock.time(), task, interval_seconds, owner
            )
        )

    # --- schedules -----------------------------------------------------------------------

    async def create_schedule(self, schedule: NewSchedule) -> Schedule:
        """Add a recurring job, or replace the tenant's schedule of that name (a replacement
        with the same timing keeps its next tick)."""
        timing, _ = check_schedule(schedule, self._max_payload_bytes)
        return await self._writer.run(
            lambda conn: store.create_schedule(conn, self._clock.time(), schedule, timing)
        )

    async def delete_schedule(self, tenant_id: str, name: str) -> Schedule:
        """Delete the tenant's schedule of this name and return it, or raise ScheduleNotFound."""
        check_schedule_key(tenant_id, name)
        return await self._writer.run(lambda conn: store.delete_schedule(conn, tenant_id, name))

    async def list_schedules(self, tenant_id: str | None = None) -> list[Schedule]:
        """Return every schedule (of one tenant), by tenant and name."""
        check_optional_text("tenant_id", tenant_id)
        return await self._readers.run(lambda conn: store.list_schedules(conn, tenant_id))

    async def fire_schedules(self, limit: int = 100) -> ScheduleFiring:
        """Enqueue one job per due tick of up to ``limit`` schedules; say when the next is due.

        Each tick is claimed in the transaction that enqueues its job, so of all the processes
        sharing the queue exactly one enqueues it (`ScheduleFiring.jobs`: those this call did).
        """
        check_range("limit", limit, 1, MAX_PAGE)
        return await self._writer.run(
            lambda conn: store.fire_schedules(conn, self._clock.time(), limit, self._max_attempts),
            on_commit=self._notify_fired,
        )

    def _notify_fired(self, firing: ScheduleFiring) -> None:
        if firing.jobs:
            self._notify_enqueued(firing.jobs)

    # --- importers -----------------------------------------------------------------------

    async def import_jobs(self, jobs: Sequence[ImportedJob]) -> list[ImportResult]:
        """Add jobs brought over from another system, in one transaction: each with its state
        and times as they were there, unless a job with its origin is here already."""
        check_batch("jobs", jobs)
        rows = [
            (
                job,
                *check_imported(job, self._max_payload_bytes),
                imported_max_attempts(job, self._max_attempts),
            )
            for job in jobs
        ]
        if not jobs:
            return []
        return await self._writer.run(
            lambda conn: store.import_jobs(conn, self._clock.time(), rows),
            on_commit=lambda _: self._notify_enqueued([]),
        )

    async def find_by_origin(self, origins: Sequence[str]) -> list[Job]:
        """Return the jobs imported with these origins (those there are), in the order asked."""
        check_origins(origins)
        return await self._readers.run(lambda conn: store.find_by_origin(conn, origins))

    async def delete_imported(
        self, imported: Sequence[tuple[str, float]], *, force: bool = False
    ) -> list[ImportResult]:
        """Delete imported jobs by origin, each only while its ``updated_at`` is still the one
        given (as imported: nothing changed it since) unless ``force``; refuse the rest."""
        check_batch("imported", imported)
        check_origins([origin for origin, _ in imported])
        return await self._writer.run(
            lambda conn: store.delete_imported(conn, self._clock.time(), imported, force)
        )

    async def pause(self, tenant_id: str | None = None) -> QueueControls:
        """Pause the whole queue, or one tenant: nothing new is leased from it until `resume`.

        Leases already taken stay live (renew and ack go on). Stored: it holds across restarts
        and for every process sharing the queue.
        """
        return await self._set_paused(tenant_id, True)

    async def resume(self, tenant_id: str | None = None) -> QueueControls:
        """Undo `pause` of the whole queue, or of one tenant."""
        return await self._set_paused(tenant_id, False)

    async def _set_paused(self, tenant_id: str | None, paused: bool) -> QueueControls:
        if tenant_id is not None:
            check_text("tenant_id", tenant_id)
        return await self._writer.run(
            lambda conn: store.set_paused(conn, self._clock.time(), tenant_id, paused)
        )

    async def set_tenant_limits(
        self,
        tenant_id: str,
        *,
        weight: int = 1,
        max_leased: int | None = None,
        max_per_second: float | None = None,
    ) -> QueueControls:
        """Set a tenant's share of fair claims and its limits (None: none), replacing its old
        ones: at most ``max_leased`` live leases, at most ``max_per_second`` jobs leased a
        second, enforced by every claim of every process."""
        check_limits(tenant_id, weight, max_leased, max_per_second)
        return await self._writer.run(
            lambda conn: store.set_tenant_limits(
                conn, self._clock.time(), tenant_id, weight, max_leased, max_per_second
            )
        )

    async def controls(self) -> QueueControls:
        """Return what is paused and every tenant's stored weight and limits."""
        return await self._readers.run(store.controls)

    # --- readers -------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job:
        """Return the job with this id, or raise JobNotFound."""
        return await self._readers.run(lambda conn: store.get(conn, job_id))

    async def stats(self) -> Stats:
        """Count jobs by status and measure the age of the oldest pending job."""
        return await self._readers.run(lambda conn: store.stats(conn, self._clock.time()))

    async def run_summary(self, run_id: str) -> RunSummary:
        """Return the run's counts, metrics and status, or raise RunNotFound."""
        return await self._readers.run(lambda conn: store.run_summary(conn, run_id))

    async def list_runs(
        self,
        tenant_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        *,
        newest_first: bool = False,
    ) -> Page[RunSummary]:
        """Return one page of run summaries, oldest first (or newest first)."""
        check_page(limit)
        return await self._readers.run(
            lambda conn: store.list_runs(conn, tenant_id, limit, cursor, newest_first)
        )

    async def throughput(self, since: float) -> list[Throughput]:
        """Count the jobs done and failed per minute since ``since``, oldest minute first."""
        check_range("since", since, 0, math.inf)
        return await self._readers.run(lambda conn: store.throughput(conn, since))

    # Defined last: inside the class body, later annotations would see this `list`.
    async def list(
        self,
        status: JobStatus | None = None,
        run_id: str | None = None,
        tenant_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Job]:
        """Return one page of jobs in id order, filtered by status, run and tenant."""
        check_listing(status, limit)
        return await self._readers.run(
            lambda conn: store.list_jobs(conn, status, run_id, tenant_id, limit, cursor)
        )


def _open_migrated(
    connect: Callable[[], sqlite3.Connection], path: Path
) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """Open the writer's connection (migrated) and the checkpointer's, or neither."""
    conn = connect()
    try:
        schema.check_version(schema.current_version(conn), path)
        schema.migrate_up(conn, path)
        # The Checkpointer's thread checkpoints instead, so no commit waits for one.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn, connect()
    except BaseException:
        conn.close()
        raise


# mypy checks the class against the contract here, verb by verb.
_contract: type[OwnedQueue] = SQLiteQueue
