"""``SQLiteQueue``: the durable job queue's async API over one SQLite file."""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import msgspec
import structlog

from actors.errors import InvalidArgument, OutOfRange, PayloadTooLarge
from actors.queue import schema, store
from actors.queue.model import (
    MAX_BATCH,
    MAX_DELAY_SECONDS,
    MAX_PULL,
    MAX_TIMEOUT_SECONDS,
    MAX_VISIBILITY_SECONDS,
    MIN_TIMEOUT_SECONDS,
    Ack,
    AckResult,
    Job,
    JobStatus,
    LeaseResult,
    MaintenanceClaim,
    NewJob,
    Page,
    RunSummary,
    Stats,
)
from actors.queue.schema import Durability
from actors.queue.store import Backoff
from actors.queue.writer import Checkpointer, GroupCommitWriter, ReaderPool
from supervisors.clock import Clock, SystemClock

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "SQLiteQueue"]

# 256 KiB, like SQS: a payload describes a job; the document itself lives in the object store.
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ATTEMPTS = 1000
MAX_PRIORITY = 1_000_000
MAX_ID_CHARS = 1024  # R2 object keys are at most 1024 bytes; ids and keys share the bound
STATUSES = ("pending", "leased", "done", "failed")

log = structlog.get_logger("actors.queue")


class SQLiteQueue:
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
    ) -> None:
        self.path = path
        self._writer = writer
        self._readers = readers
        self._checkpointer = checkpointer
        self._clock = clock
        self._max_payload_bytes = max_payload_bytes
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._rng = random.Random(seed)  # jitter; used only on the writer thread
        self._on_enqueue: list[Callable[[], object]] = []

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
    ) -> AsyncIterator[SQLiteQueue]:
        """Open (creating and migrating as needed) the queue in ``path``; close it on exit."""
        _check_range("max_attempts", max_attempts, 1, MAX_ATTEMPTS)
        _check_range("max_payload_bytes", max_payload_bytes, 1, 64 * 1024 * 1024)
        path = Path(path)
        connect = functools.partial(
            schema.connect, path, durability=durability, busy_timeout_seconds=busy_timeout_seconds
        )
        # One thread call, then no await until `try`: a cancellation cannot leak a connection.
        conn, checkpoint_conn = await anyio.to_thread.run_sync(_open_migrated, connect, path)
        checkpointer = Checkpointer(checkpoint_conn)
        queue = cls(
            path,
            GroupCommitWriter(conn, after_commit=checkpointer.poke),
            ReaderPool(connect),
            checkpointer,
            clock=clock or SystemClock(),
            max_payload_bytes=max_payload_bytes,
            max_attempts=max_attempts,
            backoff=backoff or Backoff(),
            seed=seed,
        )
        try:
            yield queue
        finally:
            with anyio.CancelScope(shield=True):
                await queue.aclose()

    async def aclose(self) -> None:
        """Commit what was submitted, stop the writer thread and close every connection."""
        await self._writer.aclose()
        await self._checkpointer.aclose()
        self._readers.close()

    # --- producers -----------------------------------------------------------------------

    async def enqueue(
        self,
        run_id: str,
        tenant_id: str,
        r2_key: str,
        *,
        payload: Any = None,
        idempotency_key: str | None = None,
        delay_seconds: float = 0,
        priority: int = 0,
        max_attempts: int | None = None,
        cross_tenant_key: bool = False,
        timeout_seconds: float | None = None,
    ) -> Job:
        """Add one job (or return the tenant's job with this idempotency key) and commit it."""
        new = NewJob(
            run_id=run_id,
            tenant_id=tenant_id,
            r2_key=r2_key,
            payload=payload,
            idempotency_key=idempotency_key,
            delay_seconds=delay_seconds,
            priority=priority,
            max_attempts=max_attempts,
            cross_tenant_key=cross_tenant_key,
            timeout_seconds=timeout_seconds,
        )
        (job,) = await self.enqueue_many([new])
        return job

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Add every job in one transaction: all of them are committed, or none."""
        _check_batch("jobs", jobs)
        for new in jobs:
            self._check_new_job(new)
        if not jobs:
            return []
        return await self._writer.run(
            lambda conn: store.enqueue(conn, self._clock.time(), jobs, self._max_attempts),
            on_commit=self._notify_enqueued,
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
    ) -> list[Job]:
        """Lease up to ``max`` visible jobs for ``visibility_seconds``, highest priority first.

        ``owner`` names the principal taking the leases (recorded as ``lease_owner``): only it
        may settle them by id alone (`ack_ids`). ``started`` marks them started at once, for a
        caller that never calls `start_many` (else a job that kills it never runs out of
        attempts).
        """
        _check_range("max", max, 1, MAX_PULL)
        _check_visibility(visibility_seconds)
        _check_optional_text("worker_id", worker_id)
        _check_optional_text("owner", owner)
        return await self._writer.run(
            lambda conn: store.pull(
                conn, self._clock.time(), max, visibility_seconds, worker_id, owner, started
            )
        )

    async def renew(self, job_id: int, lease_token: str, visibility_seconds: float) -> Job:
        """Extend a live lease to ``visibility_seconds`` from now; raise LeaseLost if stale."""
        (result,) = await self.renew_many([(job_id, lease_token)], visibility_seconds)
        return store.raise_if_refused(result)

    async def renew_many(
        self, leases: Sequence[tuple[int, str]], visibility_seconds: float
    ) -> list[LeaseResult]:
        """Extend every live lease in one transaction; stale ones are refused item by item."""
        _check_batch("leases", leases)
        _check_visibility(visibility_seconds)
        return await self._writer.run(
            lambda conn: [
                store.renew(conn, self._clock.time(), job_id, token, visibility_seconds)
                for job_id, token in leases
            ]
        )

    async def start_many(self, leases: Sequence[tuple[int, str]]) -> list[LeaseResult]:
        """Mark each live lease's job started (handed to the pipeline's first stage); stale
        ones are refused item by item.

        Fair attempt accounting: a lease that expires before its job started costs the job no
        attempt (`reap` gives it back); once started, an expiry spends it.
        """
        _check_batch("leases", leases)
        return await self._writer.run(
            lambda conn: [
                store.start(conn, self._clock.time(), job_id, token) for job_id, token in leases
            ]
        )

    async def release(self, job_id: int, lease_token: str, delay_seconds: float = 0) -> Job:
        """Give a live lease back without spending an attempt; raise LeaseLost if stale."""
        (result,) = await self.release_many([(job_id, lease_token)], delay_seconds)
        return store.raise_if_refused(result)

    async def release_many(
        self, leases: Sequence[tuple[int, str]], delay_seconds: float = 0
    ) -> list[LeaseResult]:
        """Give back every live lease in one transaction; stale ones are refused item by item."""
        _check_batch("leases", leases)
        _check_delay(delay_seconds)
        return await self._writer.run(
            lambda conn: [
                store.release(conn, self._clock.time(), job_id, token, delay_seconds)
                for job_id, token in leases
            ]
        )

    async def ack(
        self,
        job_id: int,
        lease_token: str,
        *,
        status: Literal["done", "failed"] = "done",
        result: Any = None,
        error: str | None = None,
        permanent: bool = False,
        run_metrics: dict[str, float] | None = None,
    ) -> Job:
        """Record a leased job's outcome and commit it; raise LeaseLost if the lease is stale."""
        (outcome,) = await self.ack_many(
            [
                Ack(
                    job_id=job_id,
                    lease_token=lease_token,
                    status=status,
                    result=result,
                    error=error,
                    permanent=permanent,
                    run_metrics=run_metrics,
                )
            ]
        )
        return store.raise_if_refused(outcome)

    async def ack_many(self, acks: Sequence[Ack]) -> list[AckResult]:
        """Record every outcome in one transaction; a stale lease refuses only its own item."""
        _check_batch("acks", acks)
        for a in acks:
            self._check_ack(a)
        return await self._writer.run(
            lambda conn: store.ack(conn, self._clock.time(), acks, self._backoff, self._jitter())
        )

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
        _check_batch("ids", ids)
        _check_optional_text("owner", owner)
        acks = [Ack(job_id=i, lease_token="", status=status, error=error) for i in ids]
        for a in acks:
            self._check_ack(a)
        owned = store.ByOwner(owner)
        return await self._writer.run(
            lambda conn: store.ack(
                conn, self._clock.time(), acks, self._backoff, self._jitter(), owned=owned
            )
        )

    def _jitter(self) -> Iterator[float]:
        # Factors in [1 - jitter, 1]: spreads retries of jobs that failed together.
        return (1.0 - self._backoff.jitter * self._rng.random() for _ in itertools.count())

    # --- operators -----------------------------------------------------------------------

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
            _check_batch("job_ids", job_ids)
        return await self._writer.run(
            lambda conn: store.requeue(conn, self._clock.time(), job_ids, run_id, tenant_id)
        )

    async def purge(self, older_than_seconds: float) -> int:
        """Delete jobs that finished more than ``older_than_seconds`` ago; return how many."""
        _check_range("older_than_seconds", older_than_seconds, 0, math.inf)
        return await self._writer.run(
            lambda conn: store.purge(conn, self._clock.time(), older_than_seconds)
        )

    async def claim_maintenance(
        self, task: str, interval_seconds: float, owner: str | None = None
    ) -> MaintenanceClaim:
        """Claim ``task``'s round if it is due; the winner does the round, the others skip it."""
        _check_maintenance(task, interval_seconds, owner)
        return await self._writer.run(
            lambda conn: store.claim_maintenance(
                conn, self._clock.time(), task, interval_seconds, owner
            )
        )

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
        self, tenant_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[RunSummary]:
        """Return one page of run summaries, oldest first."""
        _check_range("limit", limit, 1, MAX_PULL)
        return await self._readers.run(lambda conn: store.list_runs(conn, tenant_id, limit, cursor))

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
        _check_listing(status, limit)
        return await self._readers.run(
            lambda conn: store.list_jobs(conn, status, run_id, tenant_id, limit, cursor)
        )

    # --- validation ----------------------------------------------------------------------

    def _check_new_job(self, new: NewJob) -> bytes | None:
        """Refuse a bad job; return its payload as JSON (None for none)."""
        run_id, tenant_id, r2_key = new.run_id, new.tenant_id, new.r2_key
        delay, priority = new.delay_seconds, new.priority
        if not (  # the common case at a glance; any doubt and the checks below say what
            type(run_id) is str
            and type(tenant_id) is str
            and type(r2_key) is str
            and 0 < len(run_id) <= MAX_ID_CHARS
            and 0 < len(tenant_id) <= MAX_ID_CHARS
            and 0 < len(r2_key) <= MAX_ID_CHARS
            and new.idempotency_key is None
            and new.max_attempts is None
            and type(priority) is int
            and -MAX_PRIORITY <= priority <= MAX_PRIORITY
            and type(delay) in (int, float)
            and 0 <= delay <= MAX_DELAY_SECONDS
            and new.cross_tenant_key is False
            and new.timeout_seconds is None
        ):
            for name in ("run_id", "tenant_id", "r2_key"):
                _check_text(name, getattr(new, name))
            _check_optional_text("idempotency_key", new.idempotency_key)
            _check_delay(new.delay_seconds)
            _check_range("priority", new.priority, -MAX_PRIORITY, MAX_PRIORITY)
            if new.max_attempts is not None:
                _check_range("max_attempts", new.max_attempts, 1, MAX_ATTEMPTS)
            if not isinstance(new.cross_tenant_key, bool):
                raise InvalidArgument(
                    f"cross_tenant_key must be true or false, not {new.cross_tenant_key!r}"
                )
            if new.timeout_seconds is not None:
                _check_range(
                    "timeout_seconds",
                    new.timeout_seconds,
                    MIN_TIMEOUT_SECONDS,
                    MAX_TIMEOUT_SECONDS,
                )
        return self._check_json("payload", new.payload)

    def _check_ack(self, a: Ack) -> bytes | None:
        """Refuse a bad ack; return its result as JSON (None for none)."""
        if a.status not in ("done", "failed"):
            raise InvalidArgument(f"an ack's status must be 'done' or 'failed', not {a.status!r}")
        if not isinstance(a.job_id, int) or isinstance(a.job_id, bool):
            raise InvalidArgument(f"job ids are integers, not {a.job_id!r}")
        result = self._check_json("result", a.result)
        if a.error is not None and not isinstance(a.error, str):
            raise InvalidArgument(f"an ack's error must be a string, not {type(a.error).__name__}")
        for key, value in (a.run_metrics or {}).items():
            if (
                not isinstance(key, str)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise InvalidArgument(
                    f"run_metrics must map names to finite numbers; {key!r}: {value!r} is not"
                )
        return result

    def _check_json(self, name: str, value: Any) -> bytes | None:
        """Refuse a value that is not JSON or is too large; return it as JSON."""
        if value is None:
            return None
        try:
            encoded = msgspec.json.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidArgument(f"{name} must be JSON-serialisable: {exc}") from exc
        size = len(encoded)
        if size > self._max_payload_bytes:
            raise PayloadTooLarge(
                f"{name} is {size} bytes as JSON, over the limit of {self._max_payload_bytes}; "
                "store large data in the object store and put its key in the payload"
            )
        return encoded


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


def _check_listing(status: str | None, limit: int) -> None:
    """Refuse a status filter that is not a status, and a page size out of bounds."""
    if status is not None and status not in STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    _check_range("limit", limit, 1, MAX_PULL)


def _check_maintenance(task: str, interval_seconds: float, owner: str | None) -> None:
    """Refuse a maintenance claim without a task name or with an interval out of bounds."""
    _check_text("task", task)
    _check_optional_text("owner", owner)
    # At most a year; 0 would let every process claim every round.
    _check_range("interval_seconds", interval_seconds, 0, 366 * 86_400)
    if interval_seconds == 0:
        raise OutOfRange("interval_seconds must be more than 0: a round is due once per interval")


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a number, not {value!r}")
    if not lo <= value <= hi:  # also refuses NaN
        raise OutOfRange(f"{name} must be between {lo:g} and {hi:g}, not {value!r}")


def _check_visibility(seconds: float) -> None:
    _check_range("visibility_seconds", seconds, 0, MAX_VISIBILITY_SECONDS)
    if seconds == 0:
        raise OutOfRange(
            "visibility_seconds must be more than 0 (a lease that is already over protects "
            "nothing), at most 3600; renew long jobs instead of leasing them for longer"
        )


def _check_delay(seconds: float) -> None:
    _check_range("delay_seconds", seconds, 0, MAX_DELAY_SECONDS)


def _check_batch(name: str, items: Sequence[Any]) -> None:
    if len(items) > MAX_BATCH:
        raise OutOfRange(
            f"{name} has {len(items)} items, over the limit of {MAX_BATCH} per call; split it"
        )


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} must be a non-empty string, not {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise OutOfRange(
            f"{name} is {len(value)} characters long, over the limit of {MAX_ID_CHARS}"
        )


def _check_optional_text(name: str, value: object) -> None:
    if value is not None:
        _check_text(name, value)
