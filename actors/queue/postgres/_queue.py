"""``PostgresQueue``: the durable job queue's async API over PostgreSQL, for many machines.

The contract `actors.queue.base.OwnedQueue`, kept as ``SQLiteQueue`` keeps it (operations,
statuses, fencing, per-item results, retries, idempotency, run state, errors). The driver is
asyncpg, which runs on asyncio only: the queue runs it through `actors._bridge.Bridge` (the
caller's loop on asyncio, a helper thread's loop on trio). The SQL is in ``sql/*.sql``
(`_sql`), the schema in ``migrations/`` (`schema`), the connections in `_pool`.

Cancellation: as with SQLite's writer thread, a call handed to the driver's loop is carried out
(committed or rolled back as a whole) whether or not its caller still waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import random
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import msgspec

from actors._bridge import Bridge, call_soon
from actors._retries import retrying
from actors.bounds import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_ATTEMPTS,
    MAX_PAGE,
    MAX_PULL,
    MAX_SCHEDULES_PER_TENANT,
)
from actors.cron import cadence
from actors.errors import (
    InvalidArgument,
    JobNotFound,
    OutOfRange,
    QueueClosed,
    QueueError,
    RunNotFound,
    ScheduleNotFound,
    StorageError,
)
from actors.log import get_logger
from actors.queue._rows import (
    ByOwner,
    cancel_refusal,
    cancelled,
    changed_since,
    foreign_run,
    job_from_row,
    origin_not_found,
    parse_cursor,
    refusal,
    schedule_from_row,
    summary_from_row,
)
from actors.queue._rows import decode as _decode
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
    check_optional_text,
    check_origins,
    check_pull,
    check_range,
    check_schedule,
    check_schedule_key,
    check_text,
    check_visibility,
    imported_max_attempts,
    jitter_factors,
    plan_ticks,
    tick_job,
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
    TenantControl,
    Throughput,
)
from actors.queue.postgres import _sql, schema
from actors.queue.postgres._pool import Connection, Pool, Row
from supervisors.clock import Clock, SystemClock

__all__ = ["PostgresQueue"]

T = TypeVar("T")
log = get_logger("actors.queue.postgres")

# The message of the enqueue statement's tenant guard (sql/enqueue.sql): a run of the batch
# that the statement cannot vouch for fails it with this text, so nothing is written; the
# enqueue then goes again in a transaction, which says why or succeeds.
_TENANT_GUARD = "actors: run tenant mismatch"


class _NewRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One job of an enqueue, as the statement's JSON parameter carries it (a field left at its
    default is left out, and read back as NULL: less JSON for the server to decode)."""

    run_id: str
    tenant_id: str
    r2_key: str
    max_attempts: int
    payload: msgspec.Raw | None = None
    priority: int = 0
    delay: float = 0.0
    idempotency_key: str | None = None
    cross_tenant_key: bool = False
    timeout_seconds: float | None = None


class _AckRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One ack, as the ack statement's JSON parameter carries it (defaults left out)."""

    id: int
    token: str
    status: str
    factor: float
    result: msgspec.Raw | None = None
    error: str | None = None
    permanent: bool = False
    metrics: msgspec.Raw | None = None


class _ImportRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One imported job, as sql/import_jobs.sql's JSON parameter carries it."""

    origin: str
    run_id: str
    tenant_id: str
    r2_key: str
    status: str
    attempts: int
    max_attempts: int
    created_at: float
    updated_at: float
    priority: int = 0
    payload: msgspec.Raw | None = None
    result: msgspec.Raw | None = None
    last_error: str | None = None
    finished_at: float | None = None
    cross_tenant_key: bool = False


_encode_rows = msgspec.json.Encoder().encode
_encode_imports = _encode_rows

# How long a claimer trusts what it read of the stored controls (`PostgresQueue.pull`), in
# seconds of the queue's clock.
_CONTROLS_TTL = 1.0

# A due schedule, the ticks a firing round enqueues for it, and its next tick after them.
_Plan = tuple[Schedule, list[float], float]

# Connection loss (a killed backend, a restarting server, a reset socket) is tried this many
# times, waiting 0.05, 0.1, 0.2, ... 3.2 s between tries (plus up to 0.05 s of jitter each, so
# that the workers a restart cut off do not come back in step): about 6.5 s in all, longer
# than a restart. `actors._retries` (stamina) waits.
RETRIES = 8
_RETRY_INITIAL_SECONDS = 0.05
_RETRY_MAX_SECONDS = 3.2
# The listening connection is retried for ever, at most this far apart.
_LISTEN_RETRY_MAX_SECONDS = 2.0
_TRANSIENT = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    # What asyncpg raises for a connection killed in the middle of a call, at times.
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
)
_LISTEN_FAILURES = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, QueueError)


def _is_listen_failure(exc: Exception) -> bool:
    return isinstance(exc, _LISTEN_FAILURES)


class PostgresQueue(SingleItemVerbs):
    """The durable job queue in a PostgreSQL schema, shared by many processes on many machines.

    Open it with ``async with PostgresQueue.open(dsn) as q``. Every verb is one transaction on a
    pooled connection; a claim is one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)``
    statement. Enqueues NOTIFY other processes, whose ``on_enqueue`` subscribers wake at once.
    Runs on asyncio and trio.
    """

    def __init__(
        self,
        dsn: str,
        bridge: Bridge,
        *,
        schema: str | None,
        clock: Clock,
        max_payload_bytes: int,
        max_attempts: int,
        backoff: Backoff,
        seed: int | None,
        pool_size: int,
        fair: bool = True,
        poll_interval_seconds: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self._bridge = bridge
        self._clock = clock
        self._max_payload_bytes = max_payload_bytes
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._rng = random.Random(seed)
        self._pool_size = pool_size
        self._pool: Pool | None = None
        # The driver's loop (`Bridge.loop`), where subscriptions start and stop the listener.
        self._loop = bridge.loop()
        self._connect_kwargs: dict[str, object] = {}
        # The task that listens for other processes' enqueues while anyone subscribes (run on
        # the driver's loop), and every such task not yet finished (a stopped one closes its
        # connection on its way out).
        self._listener: asyncio.Task[None] | None = None
        self._listeners: set[asyncio.Task[None]] = set()
        self._closed = False
        self._on_enqueue: list[Callable[[], object]] = []
        self._on_cancel: list[Callable[[], object]] = []
        # Our own NOTIFYs carry this id, so subscribers are not woken twice for one enqueue.
        self._origin = uuid.uuid4().hex
        self._channel = "actors_enqueued"  # then "actors_enqueued_<schema>", once connected
        self._cancel_channel = "actors_cancelled"  # then "actors_cancelled_<schema>"
        # Fair claims: whether they are on, and this claimer's place in the round of tenants
        # (the last tenant its previous claim served). Whether any control is stored, and the
        # tenants with limits, as last read (at most `_CONTROLS_TTL` ago): a claim locks the
        # limited tenants' rows to serve them. A read before a change elsewhere is safe: the
        # plain claim leases nothing while a control exists, and the others serve a tenant
        # with limits only under its lock (a newly limited one waits here for the next read).
        self._fair = fair
        self._cursor = ""
        self._controlled = False
        self._limited: list[str] = []
        self._controls_read_at = -math.inf
        self._waits = PullWaits(self.on_enqueue, poll_interval_seconds)

    @property
    def where(self) -> str:
        """The database and schema, without the password (for messages)."""
        parts = urlsplit(self.dsn)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        shown = urlunsplit((parts.scheme, f"{host}{port}", parts.path, "", ""))
        return f"{shown} (schema {self.schema or 'from search_path'})"

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        dsn: str,
        *,
        schema: str | None = None,
        password: str | None = None,
        clock: Clock | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        seed: int | None = None,
        pool_size: int = 10,
        fair: bool = True,
        poll_interval_seconds: float = 1.0,
    ) -> AsyncIterator[PostgresQueue]:
        """Connect (creating ``schema`` and migrating it as needed); close everything on exit.

        ``schema`` selects the PostgreSQL schema that holds the tables (default: the DSN's
        ``search_path``, else ``public``); ``password`` defaults to libpq's PGPASSWORD.
        ``fair``: pulls serve tenants in turns (`pull`); else the highest priority first.
        ``poll_interval_seconds``: how often a waiting pull claims again for jobs no NOTIFY
        announced (a delayed job coming due, a lease given back, a gap in the listening).
        """
        check_range("max_attempts", max_attempts, 1, MAX_ATTEMPTS)
        check_range("poll_interval_seconds", poll_interval_seconds, 0.001, 3600)
        check_range("max_payload_bytes", max_payload_bytes, 1, 64 * 1024 * 1024)
        check_range("pool_size", pool_size, 1, 1000)
        if schema is not None and not schema.replace("_", "").isalnum():
            raise InvalidArgument(f"schema must be letters, digits and underscores, not {schema!r}")
        queue = cls(
            dsn,
            Bridge("actors-postgres"),
            schema=schema,
            clock=clock or SystemClock(),
            max_payload_bytes=max_payload_bytes,
            max_attempts=max_attempts,
            backoff=backoff or Backoff(),
            seed=seed,
            pool_size=pool_size,
            fair=fair,
            poll_interval_seconds=poll_interval_seconds,
        )
        try:
            await queue._bridge.call(queue._start(password))
            yield queue
        finally:
            with anyio.CancelScope(shield=True):
                await queue.aclose()

    async def _start(self, password: str | None) -> None:
        # The application name lets an operator (or a test) find this queue's connections.
        settings = {"application_name": f"actors {self.schema or ''}".strip()[:63]}
        if self.schema:
            settings["search_path"] = self.schema
        # 10 s to connect: a pull that cannot reach the server gives up (StorageError) in about
        # a minute over its retries instead of hanging the shielded pull for several.
        kwargs: dict[str, object] = {"server_settings": settings, "timeout": 10}
        if password is not None:
            kwargs["password"] = password
        self._connect_kwargs = kwargs
        try:
            conn: Connection = await asyncpg.connect(self.dsn, **kwargs)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StorageError(
                f"cannot connect to PostgreSQL at {self.where}: {exc}. Check [queue].dsn, that "
                "the server runs, and PGPASSWORD"
            ) from exc
        try:
            if self.schema:
                # Processes starting together on a new schema race to create it: IF NOT EXISTS
                # does not stop the loser's insert into the catalog, which then fails.
                with contextlib.suppress(asyncpg.UniqueViolationError):
                    await conn.execute(await conn.fetchval(_sql.CREATE_SCHEMA, self.schema))
            current = await conn.fetchval(_sql.CURRENT_SCHEMA)
            if current is None:
                raise StorageError(
                    f"no schema to use at {self.where}: the search_path names none that exists. "
                    "Create it, or name an existing one in the DSN (?search_path=...)"
                )
            # Enqueues in other schemas of the database do not wake this queue's workers.
            self._channel = f"actors_enqueued_{current}"
            self._cancel_channel = f"actors_cancelled_{current}"
            await schema.migrate_up(conn, self.where)
        except asyncpg.PostgresError as exc:
            raise StorageError(f"cannot migrate the queue at {self.where}: {exc}") from exc
        finally:
            await conn.close()
        self._pool = Pool(functools.partial(asyncpg.connect, self.dsn, **kwargs), self._pool_size)

    async def aclose(self) -> None:
        """Finish what was submitted, then close the listener and every pooled connection."""
        if self._closed:
            return
        self._closed = True
        self._waits.close()
        await self._bridge.drain()
        with contextlib.suppress(Exception):
            await self._bridge.call(self._stop())
        await self._bridge.aclose()

    async def _stop(self) -> None:
        self._sync_listener()  # closed: stops it
        for task in list(self._listeners):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pool is not None:
            await self._pool.close()

    # --- plumbing ------------------------------------------------------------------------

    async def _run(
        self,
        work: Callable[[Connection], Awaitable[T]],
        *,
        atomic: bool = True,
        on_done: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``work(conn)`` on a pooled connection, on the driver's loop: in one transaction
        when ``atomic``, else each statement in its own (two round trips fewer: BEGIN, COMMIT)."""
        if self._closed or self._pool is None:
            raise QueueClosed(
                "the queue is closed; use it inside `async with PostgresQueue.open(...)`"
            )
        return await self._bridge.call(self._transaction(self._pool, work, atomic), on_done)

    async def _transaction(
        self, pool: Pool, work: Callable[[Connection], Awaitable[T]], atomic: bool
    ) -> T:
        async def once() -> T:
            conn = await pool.acquire()
            try:
                if not atomic:
                    result = await work(conn)
                else:
                    async with conn.transaction():
                        result = await work(conn)
            except BaseException as exc:
                # Never back into the pool half-broken, or inside a transaction.
                broken = isinstance(exc, _TRANSIENT) or conn.is_in_transaction()
                pool.release(conn, broken=broken)
                raise
            pool.release(conn)
            return result

        try:
            # The transaction rolled back, or (lost during COMMIT) may have committed:
            # retrying is safe for what matters (idempotency keys, acks under one lease).
            # A real wait for a real server (on the driver's loop), not queue time.
            return await retrying(
                once,
                on=_is_transient,
                attempts=RETRIES,
                wait_initial=_RETRY_INITIAL_SECONDS,
                wait_max=_RETRY_MAX_SECONDS,
                wait_jitter=_RETRY_INITIAL_SECONDS,
                log=log,
                event="queue.pg_retry",
                level="warning",
                describe=lambda exc: str(exc) or repr(exc),
            )
        except QueueError:
            raise
        except _TRANSIENT as exc:
            raise StorageError(
                f"PostgreSQL at {self.where} is unreachable after {RETRIES} tries: "
                f"{exc}. Check that the server runs; the call changed nothing or was "
                "committed once"
            ) from exc
        except asyncpg.PostgresError as exc:
            raise StorageError(f"PostgreSQL failed: {exc}") from exc

    def _sync_listener(self) -> None:
        """Listen while anyone subscribes to ``on_enqueue`` (on the driver's loop).

        A process with no subscriber (a producer, a benchmark loop) then costs no listening
        connection, and no wake-up of its own for every other process's enqueue.
        """
        wanted = bool(self._on_enqueue or self._on_cancel) and not self._closed
        if wanted and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen_forever())
            self._listeners.add(self._listener)
            self._listener.add_done_callback(self._listeners.discard)
        elif not wanted and self._listener is not None:
            self._listener.cancel()
            self._listener = None

    async def _listen_forever(self) -> None:
        # Enqueues by other processes wake our subscribers; polling covers any gap while the
        # listening connection is down (so a failed reconnect is only a debug line). Once it
        # listens (the first time, and again after a loss) it wakes subscribers once: jobs may
        # have arrived while nobody listened, as in the moment between a subscription and its
        # LISTEN.
        while True:
            conn: Connection = await retrying(
                functools.partial(asyncpg.connect, self.dsn, **self._connect_kwargs),
                on=_is_listen_failure,
                attempts=None,  # for as long as anyone subscribes
                wait_initial=_RETRY_INITIAL_SECONDS,
                wait_max=_LISTEN_RETRY_MAX_SECONDS,
                wait_jitter=_RETRY_INITIAL_SECONDS,
                log=log,
                event="queue.pg_listen_retry",
                level="debug",
            )
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(functools.partial(_set_event, lost))
                await conn.add_listener(self._channel, self._notified)
                await conn.add_listener(self._cancel_channel, self._cancel_notified)
                self._bridge.to_caller(self._notify_enqueued)
                await lost.wait()
            except _LISTEN_FAILURES:
                pass
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)

    def _notified(self, _conn: Connection, _pid: int, _channel: str, payload: str) -> None:
        if payload.split(" ", 1)[0] != self._origin:
            self._bridge.to_caller(self._notify_enqueued)

    def _cancel_notified(self, _conn: Connection, _pid: int, _channel: str, payload: str) -> None:
        if payload.split(" ", 1)[0] != self._origin:
            self._bridge.to_caller(self._notify_cancelled)

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` in the event loop after a cancel marks leased jobs for
        cancellation, through this object or (by NOTIFY) any other process using this schema:
        holders renew at once to learn which of their leases end. Returns a function that
        unsubscribes."""
        self._on_cancel.append(callback)
        self._listen_as_wanted()

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._on_cancel.remove(callback)
            self._listen_as_wanted()

        return unsubscribe

    def _notify_cancelled(self, *_: object) -> None:
        for callback in list(self._on_cancel):
            try:
                callback()
            except Exception:  # a subscriber's bug must not break the caller's cancel
                log.exception("queue.on_cancel_failed", callback=repr(callback))

    def on_enqueue(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` in the event loop after an enqueue commits, through this object
        or (by NOTIFY) any other process using this schema.

        Returns a function that unsubscribes. The callback must not block; its exceptions are
        logged, not raised.
        """
        self._on_enqueue.append(callback)
        self._listen_as_wanted()

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._on_enqueue.remove(callback)
            self._listen_as_wanted()

        return unsubscribe

    def _listen_as_wanted(self) -> None:
        if self._pool is not None and not self._closed:
            with contextlib.suppress(RuntimeError):  # the driver's loop is closed
                call_soon(self._loop, self._sync_listener)

    def _notify_enqueued(self, *_: object) -> None:
        for callback in list(self._on_enqueue):
            try:
                callback()
            except Exception:  # a subscriber's bug must not break the caller's enqueue
                log.exception("queue.on_enqueue_failed", callback=repr(callback))

    # --- producers -----------------------------------------------------------------------

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Add every job in one transaction: all of them are committed, or none."""
        check_batch("jobs", jobs)
        payloads = [check_new_job(new, self._max_payload_bytes) for new in jobs]
        if not jobs:
            return []
        now = self._clock.time()
        rows = [
            _NewRow(
                run_id=j.run_id,
                tenant_id=j.tenant_id,
                r2_key=j.r2_key,
                payload=None if payload is None else msgspec.Raw(payload),
                max_attempts=j.max_attempts or self._max_attempts,
                priority=j.priority,
                delay=float(j.delay_seconds),
                idempotency_key=j.idempotency_key,
                cross_tenant_key=j.cross_tenant_key,
                timeout_seconds=None if j.timeout_seconds is None else float(j.timeout_seconds),
            )
            for j, payload in zip(jobs, payloads, strict=True)
        ]
        keyed = any(j.idempotency_key is not None for j in jobs)
        tenants = {j.run_id: j.tenant_id for j in jobs}
        mixed = any(tenants[j.run_id] != j.tenant_id for j in jobs)

        async def enqueue(conn: Connection) -> list[Job]:
            # One autocommitted statement (no BEGIN, no COMMIT: two round trips fewer). A run
            # the statement cannot vouch for makes it fail, so it changes nothing; the
            # transaction below then says why, or (another process created the run meanwhile,
            # for the same tenant) succeeds. A batch giving a run two tenants goes there first.
            if not mixed:
                try:
                    return await self._enqueue(conn, now, jobs, rows, keyed, tenants)
                except asyncpg.DataError as exc:
                    if _TENANT_GUARD not in str(exc):
                        raise
            async with conn.transaction():
                return await self._enqueue(conn, now, jobs, rows, keyed, None)

        return await self._run(enqueue, atomic=False, on_done=self._notify_enqueued)

    async def _enqueue(
        self,
        conn: Connection,
        now: float,
        jobs: Sequence[NewJob],
        rows: list[_NewRow],
        keyed: bool,
        tenants: dict[str, str] | None,
    ) -> list[Job]:
        guarded = tenants is not None  # else in a transaction, which checks the tenants after
        # One statement for the batch (sql/enqueue.sql). Every column of a new job but its id
        # is known here, so only the id comes back.
        inserted = await conn.fetch(
            _sql.ENQUEUE_KEYED if keyed else _sql.ENQUEUE,
            now,
            _encode_rows(rows).decode(),
            self._channel,
            self._origin,
            list(tenants or ()),
            list((tenants or {}).values()),
        )
        ids = iter(sorted(r[0] for r in inserted))
        taken = {(r[2], r[3]) for r in inserted if r[3] is not None}
        seen: set[tuple[str, str]] = set()
        out: list[Job | None] = []
        for new, row in zip(jobs, rows, strict=True):
            key = (new.tenant_id, new.idempotency_key or "")
            if new.idempotency_key is not None and (key not in taken or key in seen):
                out.append(None)  # the key is taken: return the job that holds it
                continue
            seen.add(key)
            out.append(
                Job(
                    id=next(ids),
                    run_id=new.run_id,
                    tenant_id=new.tenant_id,
                    r2_key=new.r2_key,
                    payload=None if row.payload is None else _decode(row.payload),
                    max_attempts=row.max_attempts,
                    priority=new.priority,
                    available_at=now + row.delay,
                    idempotency_key=new.idempotency_key,
                    created_at=now,
                    updated_at=now,
                    cross_tenant_key=row.cross_tenant_key,
                    timeout_seconds=row.timeout_seconds,
                )
            )
        if None in out:
            missing = [
                (n.tenant_id, n.idempotency_key)
                for n, j in zip(jobs, out, strict=True)
                if j is None
            ]
            existing = {
                (job.tenant_id, job.idempotency_key): job
                for job in map(
                    job_from_row,
                    await conn.fetch(
                        _sql.JOBS_BY_KEY,
                        [t for t, _ in missing],
                        [k for _, k in missing],
                    ),
                )
            }
            out = [
                job if job is not None else existing[(new.tenant_id, new.idempotency_key)]
                for new, job in zip(jobs, out, strict=True)
            ]
        if not guarded and inserted:
            # Invariant: a run belongs to exactly one tenant. Raising rolls the batch back.
            await _check_tenants(conn, {(r[1], r[2]) for r in inserted})
            # Invariant: `runs.first_id` is at most the id of each of the run's jobs. A run
            # this statement did not create (another transaction did, meanwhile) may have been
            # given a first_id above some of this batch's ids.
            firsts: dict[str, int] = {}
            for r in inserted:
                firsts[r[1]] = min(r[0], firsts.get(r[1], r[0]))
            await conn.execute(
                _sql.LOWER_FIRST_IDS,
                list(firsts),
                list(firsts.values()),
            )
        return [job for job in out if job is not None]

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
        caller that never calls `start_many`. With nothing to lease, ``wait_seconds`` (at most
        `MAX_PULL_WAIT_SECONDS`) waits for a job to arrive, enqueued here or by any process
        (NOTIFY), and leases it at once (`PullWaits`); it holds no connection while it waits.
        """
        check_pull(max, visibility_seconds, worker_id, owner, wait_seconds)

        async def claim_now() -> list[Job]:
            jobs = await self._claim(max, visibility_seconds, worker_id, owner, started)
            if self._fair and 0 < len(jobs) < max and len({j.tenant_id for j in jobs}) > 1:
                # Some tenant may have had fewer jobs than its share of this claim: the rest of
                # it goes to those that have more, still in turns (one more claim, no more).
                jobs += await self._claim(
                    max - len(jobs), visibility_seconds, worker_id, owner, started
                )
            if self._fair and jobs:
                self._cursor = _last_served(self._cursor, {j.tenant_id for j in jobs})
            jobs.sort(key=lambda j: (-j.priority, j.available_at, j.id))
            return jobs

        if wait_seconds == 0:
            return await claim_now()
        return await self._waits.pull(claim_now, wait_seconds)

    async def _claim(
        self,
        max: int,
        visibility_seconds: float,
        worker_id: str | None,
        owner: str | None,
        started: bool,
    ) -> list[Job]:
        now = self._clock.time()
        if now - self._controls_read_at >= _CONTROLS_TTL:
            stored = await self._run(_read_controls, atomic=False)
            self._controlled = bool(stored)
            self._limited = [tenant for tenant, limited in stored if limited]
            self._controls_read_at = now
        prefix = secrets.token_hex(8)  # 64 random bits for this claim's leases
        args = (now, max, now + visibility_seconds, worker_id, prefix, owner, started)
        fair_order = self._fair

        async def plain(conn: Connection) -> list[Row]:
            # First the claim alone, which leases nothing while any lease has expired: when it
            # leases something, a reap first would have found nothing, so this is the same
            # pull in one round trip. Otherwise reap (it commits on its own) and claim again.
            # Both lease nothing while any control is stored (a pause, say, set elsewhere
            # since `_controls_read_at`): then the fair claim, which reads them, serves.
            rows = await conn.fetch(_sql.CLAIM_FIRST, *args)
            if not rows:
                await self._reap(conn, now)
                rows = await conn.fetch(_sql.CLAIM, *args)
                if not rows:
                    rows = await conn.fetch(_sql.CLAIM_FAIR, *args, "", False, [], False)
            return rows

        async def fair(conn: Connection) -> list[Row]:
            cursor = self._cursor
            rows = await conn.fetch(_sql.CLAIM_FAIR, *args, cursor, fair_order, [], True)
            if not rows:
                await self._reap(conn, now)
                rows = await conn.fetch(_sql.CLAIM_FAIR, *args, cursor, fair_order, [], False)
            return rows

        async def locked(conn: Connection) -> list[Row]:
            # One transaction: the limited tenants' rows locked, the claim, their buckets spent.
            await self._reap(conn, now)
            held = [row[0] for row in await conn.fetch(_sql.CONTROLS_LOCK)]
            rows = await conn.fetch(_sql.CLAIM_FAIR, *args, self._cursor, fair_order, held, False)
            taken = Counter(row[2] for row in rows if row[2] in held)
            if taken:
                await conn.execute(_sql.CONTROLS_SPEND, list(taken), list(taken.values()), now)
            return rows

        if self._limited:
            rows = await self._run(locked)
        elif self._fair or self._controlled:
            rows = await self._run(fair, atomic=False)
        else:
            rows = await self._run(plain, atomic=False)
        return [job_from_row(row) for row in rows]

    async def _reap(self, conn: Connection, now: float) -> int:
        # One statement: the jobs and their runs' counts commit together (sql/reap.sql).
        return int(await conn.fetchval(_sql.REAP, now))

    async def renew_many(
        self, leases: Sequence[tuple[int, str]], visibility_seconds: float
    ) -> list[LeaseResult]:
        """Extend every live lease in one transaction; stale ones are refused item by item."""
        check_batch("leases", leases)
        check_visibility(visibility_seconds)
        now = self._clock.time()
        return await self._run(
            lambda conn: _per_item(
                conn,
                now,
                leases,
                "renewed",
                lambda c, ids, tokens, _: c.fetch(_sql.RENEW, now, visibility_seconds, ids, tokens),
            ),
            # One statement (all or nothing by itself) unless the batch names a job twice.
            atomic=len({job_id for job_id, _ in leases}) < len(leases),
        )

    async def start_many(self, leases: Sequence[tuple[int, str]]) -> list[LeaseResult]:
        """Mark each live lease's job started (handed to the pipeline's first stage); stale
        ones are refused item by item. Once started, the lease expiring spends its attempt."""
        check_batch("leases", leases)
        now = self._clock.time()
        return await self._run(
            lambda conn: _per_item(
                conn,
                now,
                leases,
                "started",
                lambda c, ids, tokens, _: c.fetch(_sql.START, now, ids, tokens),
            ),
            # One statement (all or nothing by itself) unless the batch names a job twice.
            atomic=len({job_id for job_id, _ in leases}) < len(leases),
        )

    async def release_many(
        self, leases: Sequence[tuple[int, str]], delay_seconds: float = 0
    ) -> list[LeaseResult]:
        """Give back every live lease in one transaction; stale ones are refused item by item."""
        check_batch("leases", leases)
        check_delay(delay_seconds)
        now = self._clock.time()
        return await self._run(
            lambda conn: _per_item(
                conn,
                now,
                leases,
                "released",
                lambda c, ids, tokens, _: c.fetch(
                    _sql.RELEASE, now, float(delay_seconds), ids, tokens
                ),
            ),
            # One statement (all or nothing by itself) unless the batch names a job twice.
            atomic=len({job_id for job_id, _ in leases}) < len(leases),
        )

    async def ack_many(self, acks: Sequence[Ack]) -> list[AckResult]:
        """Record every outcome in one transaction; a stale lease refuses only its own item."""
        check_batch("acks", acks)
        results = [check_ack(a, self._max_payload_bytes) for a in acks]
        return await self._acks(acks, results)

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
        results = [check_ack(a, self._max_payload_bytes) for a in acks]
        return await self._acks(acks, results, owned=ByOwner(owner))

    async def _acks(
        self,
        acks: Sequence[Ack],
        results: Sequence[bytes | None],
        *,
        owned: ByOwner | None = None,
    ) -> list[AckResult]:
        """Apply ``acks`` (checked; ``results`` their results as JSON), under their lease tokens
        or (``owned``) under the live leases of one principal."""
        if not acks:
            return []
        now = self._clock.time()
        factors = list(itertools.islice(self._jitter(), len(acks)))
        rows = [
            _AckRow(
                id=a.job_id,
                token=a.lease_token,
                status=a.status,
                result=msgspec.Raw(result) if result is not None and a.status == "done" else None,
                error=a.error,
                permanent=a.permanent,
                factor=factor,
                metrics=msgspec.Raw(msgspec.json.encode(a.run_metrics)) if a.run_metrics else None,
            )
            for a, result, factor in zip(acks, results, factors, strict=True)
        ]
        sql = _sql.ACK_METRICS if any(row.metrics is not None for row in rows) else _sql.ACK
        owner: tuple[str | None, ...] = ()
        if owned is not None:
            sql, owner = _sql.ACK_OWNED, (owned.owner,)
        backoff = self._backoff

        def statement(
            c: Connection, _ids: list[int], _tokens: list[str], at: list[int]
        ) -> Awaitable[list[Row]]:
            return c.fetch(
                sql,
                now,
                backoff.cap_seconds,
                backoff.base_seconds,
                _encode_rows([rows[n] for n in at]).decode(),
                *owner,
            )

        async def apply(conn: Connection) -> list[AckResult]:
            return await _per_item(
                conn,
                now,
                [(a.job_id, a.lease_token) for a in acks],
                "acked",
                statement,
                statuses=[a.status for a in acks],
                owned=owned,
            )

        # One statement unless the batch names a job twice (then item by item, all in one).
        return await self._run(apply, atomic=len({a.job_id for a in acks}) < len(acks))

    # --- operators -----------------------------------------------------------------------

    async def cancel_many(
        self, job_ids: Sequence[int], *, tenant_id: str | None = None
    ) -> list[ItemResult]:
        """Cancel each job (only ``tenant_id``'s, when given) in one statement.

        A pending job ends ``cancelled`` at once; a leased one is marked, and ends
        ``cancelled`` when its holder next renews, starts, releases or acks it (refused as
        ``cancelled``), or when its lease expires. Per item: ``ok`` (see the job's status),
        ``duplicate`` (already cancelled or marked), ``finished`` or ``not_found``.
        """
        check_cancel(job_ids, tenant_id)
        if not job_ids:
            return []
        now = self._clock.time()
        ids = list(dict.fromkeys(job_ids))

        async def cancel(conn: Connection) -> tuple[list[ItemResult], bool]:
            rows = await conn.fetch(
                _sql.CANCEL, now, ids, tenant_id, self._cancel_channel, self._origin
            )
            changed = {job.id: job for job in map(job_from_row, rows)}
            missing = [i for i in ids if i not in changed]
            current = {}
            if missing:
                current = {
                    job.id: job
                    for job in map(job_from_row, await conn.fetch(_sql.JOBS_BY_ID, missing))
                }
            results: list[ItemResult] = []
            seen: set[int] = set()
            for job_id in job_ids:
                job = changed.get(job_id)
                if job is not None and job_id not in seen:
                    results.append(ItemResult(job_id=job_id, ok=True, reason="ok", job=job))
                else:
                    results.append(cancel_refusal(current.get(job_id) or job, job_id, tenant_id))
                seen.add(job_id)
            return results, any(job.status == "leased" for job in changed.values())

        results, marked = await self._run(cancel, atomic=False)
        if marked:
            self._notify_cancelled()
        return results

    async def cancel_run(self, run_id: str, *, tenant_id: str | None = None) -> RunCancel:
        """Cancel every unfinished job of the run (as `cancel_many` does each), or raise
        RunNotFound (also for a run of another tenant than ``tenant_id``)."""
        check_optional_text("run_id", run_id)
        check_optional_text("tenant_id", tenant_id)
        now = self._clock.time()

        async def cancel(conn: Connection) -> RunCancel:
            owners: dict[str, str] = {
                row[0]: row[1] for row in await conn.fetch(_sql.RUN_TENANTS, [run_id])
            }
            if run_id not in owners or (tenant_id is not None and owners[run_id] != tenant_id):
                raise RunNotFound(run_id)
            rows = await conn.fetch(
                _sql.CANCEL_RUN, now, run_id, tenant_id, self._cancel_channel, self._origin
            )
            marked = sum(1 for row in rows if row[1] == "leased")
            return RunCancel(run_id=run_id, cancelled=len(rows) - marked, cancel_requested=marked)

        outcome = await self._run(cancel, atomic=False)
        if outcome.cancel_requested:
            self._notify_cancelled()
        return outcome

    async def reap(self) -> int:
        """Return every expired lease's job to pending (or fail it); return how many."""
        now = self._clock.time()
        return await self._run(lambda conn: self._reap(conn, now))

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
        now = self._clock.time()

        async def requeue(conn: Connection) -> int:
            rows = await conn.fetch(
                _sql.REQUEUE,
                now,
                None if job_ids is None else list(job_ids),
                run_id,
                tenant_id,
            )
            requeued = Counter(r[0] for r in rows)
            await _count(
                conn, now, {run_id: (0, -n, 0, 0) for run_id, n in requeued.items()}, touch=True
            )
            if rows:
                await conn.execute(_sql.NOTIFY, self._channel, self._origin)
            return len(rows)

        return await self._run(requeue)

    async def purge(self, older_than_seconds: float) -> int:
        """Delete jobs that finished more than ``older_than_seconds`` ago; return how many."""
        check_range("older_than_seconds", older_than_seconds, 0, math.inf)
        cutoff = self._clock.time() - older_than_seconds

        async def purge(conn: Connection) -> int:
            rows = await conn.fetch(_sql.PURGE, cutoff)
            gone: dict[str, tuple[int, int, int, int]] = {}
            for run_id, status in rows:
                done, failed, total, cancelled_ = gone.get(run_id, (0, 0, 0, 0))
                gone[run_id] = (
                    done - (status == "done"),
                    failed - (status == "failed"),
                    total - 1,
                    cancelled_ - (status == "cancelled"),
                )
            await _count(conn, self._clock.time(), gone, touch=False, shard=_sql.PURGE_SHARD)
            # Runs left with no job after their retention go too. An enqueue naming such a run
            # would recreate it while it is deleted: the table lock makes enqueues (which all
            # insert into `runs`) wait for this commit, and is taken only when there is a run
            # to delete; the runs to delete are read again under it.
            if await conn.fetch(_sql.RUNS, None, 0, None, cutoff, 1):
                await conn.execute(_sql.LOCK_RUNS)
                empty = await conn.fetch(_sql.RUNS, None, 0, None, cutoff, None)
                await conn.execute(_sql.DELETE_RUNS, [row[0] for row in empty])
            return len(rows)

        return await self._run(purge)

    async def claim_maintenance(
        self, task: str, interval_seconds: float, owner: str | None = None
    ) -> MaintenanceClaim:
        """Claim ``task``'s round if it is due; the winner does the round, the others skip it."""
        check_maintenance(task, interval_seconds, owner)
        now = self._clock.time()

        async def claim(conn: Connection) -> MaintenanceClaim:
            # Invariant: one round of a task is claimed once (sql/maintenance_claim.sql).
            args = (task, now, interval_seconds, owner)
            row = await conn.fetchrow(_sql.MAINTENANCE_CLAIM, *args)
            if row is None:
                # A task's row is created by its first claim, which that claimer wins.
                row = await conn.fetchrow(_sql.MAINTENANCE_CREATE, *args)
            if row is not None:
                return MaintenanceClaim(task=task, claimed=True, round=row[0], due_at=row[1])
            current = await conn.fetchrow(_sql.MAINTENANCE_READ, task)
            assert current is not None  # rows of `maintenance` are never deleted
            return MaintenanceClaim(task=task, claimed=False, round=current[0], due_at=current[1])

        # Each statement autocommits: a claim holds its row's lock for one statement only. A
        # claim retried after its connection died during the commit finds the round taken:
        # that round is skipped, never done twice.
        return await self._run(claim, atomic=False)

    # --- schedules -----------------------------------------------------------------------

    async def create_schedule(self, schedule: NewSchedule) -> Schedule:
        """Add a recurring job, or replace the tenant's schedule of that name (a replacement
        with the same timing keeps its next tick)."""
        timing, payload = check_schedule(schedule, self._max_payload_bytes)
        now = self._clock.time()

        async def create(conn: Connection) -> Schedule:
            others = await conn.fetchval(_sql.SCHEDULE_COUNT, schedule.tenant_id, schedule.name)
            if others >= MAX_SCHEDULES_PER_TENANT:
                raise OutOfRange(
                    f"tenant {schedule.tenant_id!r} has {others} schedules, the most a tenant "
                    "may have; delete some first"
                )
            row = await conn.fetchrow(
                _sql.SCHEDULE_CREATE,
                schedule.tenant_id,
                schedule.name,
                schedule.cron,
                schedule.interval_seconds,
                schedule.timezone,
                schedule.r2_key,
                None if payload is None else payload.decode(),
                schedule.priority,
                schedule.missed,
                float(schedule.grace_seconds),
                timing.next_after(now),
                now,
            )
            assert row is not None
            return schedule_from_row(row)

        return await self._run(create)

    async def delete_schedule(self, tenant_id: str, name: str) -> Schedule:
        """Delete the tenant's schedule of this name and return it, or raise ScheduleNotFound."""
        check_schedule_key(tenant_id, name)

        async def delete(conn: Connection) -> Schedule:
            row = await conn.fetchrow(_sql.SCHEDULE_DELETE, tenant_id, name)
            if row is None:
                raise ScheduleNotFound(tenant_id, name)
            return schedule_from_row(row)

        return await self._run(delete)

    async def list_schedules(self, tenant_id: str | None = None) -> list[Schedule]:
        """Return every schedule (of one tenant), by tenant and name."""
        check_optional_text("tenant_id", tenant_id)

        async def schedules(conn: Connection) -> list[Schedule]:
            return [schedule_from_row(r) for r in await conn.fetch(_sql.SCHEDULES_LIST, tenant_id)]

        return await self._run(schedules, atomic=False)

    async def fire_schedules(self, limit: int = 100) -> ScheduleFiring:
        """Enqueue one job per due tick of up to ``limit`` schedules; say when the next is due.

        Invariant: a tick enqueues one job. The due rows are locked (SKIP LOCKED: a round in
        another process takes the others), moved past their ticks by a conditional UPDATE and
        their jobs enqueued, in one transaction; a retry after a lost connection finds the
        ticks claimed or not, never half.
        """
        check_range("limit", limit, 1, MAX_PAGE)
        now = self._clock.time()

        async def fire(conn: Connection) -> ScheduleFiring:
            plans: list[_Plan] = []
            for row in await conn.fetch(_sql.SCHEDULES_DUE, now, limit):
                schedule = schedule_from_row(row)
                try:
                    timing = cadence(schedule.cron, schedule.interval_seconds, schedule.timezone)
                except QueueError as exc:  # e.g. a time zone this host's database lacks
                    log.warning("schedule.unusable", name=schedule.name, error=str(exc))
                    continue
                plans.append((schedule, *plan_ticks(timing, schedule.next_tick_at, now, schedule)))
            jobs: list[Job] = []
            try:
                # Every schedule's ticks in one UPDATE and one enqueue, within a savepoint...
                async with conn.transaction():
                    jobs = await self._claim_ticks(conn, now, plans)
            except QueueError:
                # ... and if a job is refused (its run id taken by another tenant's run), one
                # schedule at a time, skipping the refused one's ticks, not every schedule's.
                for schedule, ticks, following in plans:
                    try:
                        async with conn.transaction():
                            jobs += await self._claim_ticks(
                                conn, now, [(schedule, ticks, following)]
                            )
                    except QueueError as exc:
                        log.warning("schedule.tick_refused", name=schedule.name, error=str(exc))
                        await self._claim_ticks(conn, now, [(schedule, [], following)])
            next_due = await conn.fetchval(_sql.SCHEDULES_NEXT_DUE)
            return ScheduleFiring(jobs=jobs, next_due_at=next_due)

        def fired(firing: ScheduleFiring) -> None:
            if firing.jobs:
                self._notify_enqueued()

        return await self._run(fire, on_done=fired)

    async def _claim_ticks(self, conn: Connection, now: float, plans: list[_Plan]) -> list[Job]:
        """Move each schedule's next tick past its ticks (if no round did first) and enqueue
        the claimed ticks' jobs, in the caller's transaction."""
        if not plans:
            return []
        claimed = {
            (r[0], r[1])
            for r in await conn.fetch(
                _sql.SCHEDULE_ADVANCE,
                now,
                [s.tenant_id for s, _, _ in plans],
                [s.name for s, _, _ in plans],
                [s.next_tick_at for s, _, _ in plans],
                [following for _, _, following in plans],
                [ticks[-1] if ticks else None for _, ticks, _ in plans],
            )
        }
        news = [
            tick_job(s, tick)
            for s, ticks, _ in plans
            if (s.tenant_id, s.name) in claimed
            for tick in ticks
        ]
        return await self._enqueue_ticks(conn, now, news) if news else []

    async def _enqueue_ticks(self, conn: Connection, now: float, jobs: list[NewJob]) -> list[Job]:
        """Enqueue ticks' jobs inside the caller's transaction (tenants checked after)."""
        rows = [
            _NewRow(
                run_id=j.run_id,
                tenant_id=j.tenant_id,
                r2_key=j.r2_key,
                payload=None if j.payload is None else msgspec.Raw(msgspec.json.encode(j.payload)),
                max_attempts=self._max_attempts,
                priority=j.priority,
                idempotency_key=j.idempotency_key,
            )
            for j in jobs
        ]
        return await self._enqueue(conn, now, jobs, rows, True, None)

    # --- importers -----------------------------------------------------------------------

    async def import_jobs(self, jobs: Sequence[ImportedJob]) -> list[ImportResult]:
        """Add jobs brought over from another system, in one transaction: each with its state
        and times as they were there, unless a job with its origin is here already."""
        check_batch("jobs", jobs)
        checked = [(job, *check_imported(job, self._max_payload_bytes)) for job in jobs]
        if not jobs:
            return []
        now = self._clock.time()

        async def work(conn: Connection) -> list[ImportResult]:
            first: dict[str, ImportedJob] = {}
            for job in jobs:
                if job.run_id not in first or job.created_at < first[job.run_id].created_at:
                    first[job.run_id] = job
            runs = sorted(first)
            await conn.execute(
                _sql.IMPORT_RUNS,
                runs,
                [first[r].tenant_id for r in runs],
                [float(first[r].created_at) for r in runs],
                now,
            )
            owners: dict[str, str] = {
                run_id: tenant for run_id, tenant in await conn.fetch(_sql.RUN_TENANTS, runs)
            }
            fits = [c for c in checked if owners[c[0].run_id] == c[0].tenant_id]
            rows = [
                _ImportRow(
                    origin=job.origin,
                    run_id=job.run_id,
                    tenant_id=job.tenant_id,
                    r2_key=job.r2_key,
                    payload=None if payload is None else msgspec.Raw(payload),
                    status=job.status,
                    attempts=job.attempts,
                    max_attempts=imported_max_attempts(job, self._max_attempts),
                    priority=job.priority,
                    last_error=job.last_error,
                    result=None if result is None else msgspec.Raw(result),
                    created_at=float(job.created_at),
                    updated_at=float(job.updated_at),
                    finished_at=(
                        None
                        if job.status == "pending"
                        else float(job.finished_at or job.updated_at)
                    ),
                    cross_tenant_key=job.cross_tenant_key,
                )
                for job, payload, result in fits
            ]
            inserted = {
                imported.origin: imported
                for imported in map(
                    job_from_row,
                    await conn.fetch(_sql.IMPORT_JOBS, now, _encode_imports(rows).decode())
                    if rows
                    else [],
                )
            }
            taken = [c[0].origin for c in fits if c[0].origin not in inserted]
            existing = (
                {
                    job.origin: job
                    for job in map(job_from_row, await conn.fetch(_sql.JOBS_BY_ORIGIN, taken))
                }
                if taken
                else {}
            )
            out: list[ImportResult] = []
            counts: dict[str, tuple[int, int, int, int]] = {}
            firsts: dict[str, int] = {}
            for job, _, _ in checked:
                if owners[job.run_id] != job.tenant_id:
                    out.append(foreign_run(job, owners[job.run_id]))
                    continue
                imported = inserted.get(job.origin)
                if imported is None:
                    there = existing[job.origin]
                    out.append(
                        ImportResult(origin=job.origin, ok=False, reason="exists", job=there)
                    )
                    continue
                out.append(ImportResult(origin=job.origin, ok=True, reason="ok", job=imported))
                done, failed, total, cancelled_ = counts.get(job.run_id, (0, 0, 0, 0))
                counts[job.run_id] = (
                    done + (job.status == "done"),
                    failed + (job.status == "failed"),
                    total + 1,
                    cancelled_,  # an import brings no cancelled job
                )
                firsts[job.run_id] = min(imported.id, firsts.get(job.run_id, imported.id))
            await _count(conn, now, counts, touch=True)
            if firsts:
                await conn.execute(_sql.LOWER_FIRST_IDS, list(firsts), list(firsts.values()))
                await conn.execute(_sql.NOTIFY, self._channel, self._origin)
            return out

        return await self._run(work, on_done=lambda _: self._notify_enqueued())

    async def find_by_origin(self, origins: Sequence[str]) -> list[Job]:
        """Return the jobs imported with these origins (those there are), in the order asked."""
        check_origins(origins)

        async def find(conn: Connection) -> list[Job]:
            rows = await conn.fetch(_sql.JOBS_BY_ORIGIN, list(origins))
            found = {job.origin: job for job in map(job_from_row, rows)}
            return [found[o] for o in dict.fromkeys(origins) if o in found]

        return await self._run(find, atomic=False)

    async def delete_imported(
        self, imported: Sequence[tuple[str, float]], *, force: bool = False
    ) -> list[ImportResult]:
        """Delete imported jobs by origin, each only while its ``updated_at`` is still the one
        given (as imported: nothing changed it since) unless ``force``; refuse the rest."""
        check_batch("imported", imported)
        check_origins([origin for origin, _ in imported])
        now = self._clock.time()

        async def work(conn: Connection) -> list[ImportResult]:
            deleted = {
                job.origin: job
                for job in map(
                    job_from_row,
                    await conn.fetch(
                        _sql.DELETE_IMPORTED,
                        [origin for origin, _ in imported],
                        [float(updated_at) for _, updated_at in imported],
                        force,
                    ),
                )
            }
            kept = [origin for origin, _ in imported if origin not in deleted]
            there = (
                {
                    job.origin: job
                    for job in map(job_from_row, await conn.fetch(_sql.JOBS_BY_ORIGIN, kept))
                }
                if kept
                else {}
            )
            out: list[ImportResult] = []
            gone: dict[str, tuple[int, int, int, int]] = {}
            for origin, _ in imported:
                job = deleted.pop(origin, None)  # an origin named twice is deleted once
                if job is None:
                    left = there.get(origin)
                    out.append(
                        origin_not_found(origin) if left is None else changed_since(origin, left)
                    )
                    continue
                done, failed, total, cancelled_ = gone.get(job.run_id, (0, 0, 0, 0))
                gone[job.run_id] = (
                    done - (job.status == "done"),
                    failed - (job.status == "failed"),
                    total - 1,
                    cancelled_ - (job.status == "cancelled"),
                )
                out.append(ImportResult(origin=origin, ok=True, reason="ok", job=job))
            await _count(conn, now, gone, touch=True)
            # A run this leaves without a job goes (under purge's lock: an enqueue naming it
            # waits, then creates it again).
            for run_id in sorted(gone):
                summary = await conn.fetchrow(_sql.RUNS, run_id, 0, None, None, 1)
                if summary is not None and summary[-2] == 0:
                    await conn.execute(_sql.LOCK_RUNS)
                    summary = await conn.fetchrow(_sql.RUNS, run_id, 0, None, None, 1)
                    if summary is not None and summary[-2] == 0:
                        await conn.execute(_sql.DELETE_RUNS, [run_id])
            return out

        return await self._run(work)

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
        now = self._clock.time()

        async def set_paused(conn: Connection) -> QueueControls:
            await conn.execute(_sql.CONTROLS_PAUSE, tenant_id or "", paused, now)
            await conn.execute(_sql.CONTROLS_PRUNE)
            return _controls(await conn.fetch(_sql.CONTROLS_READ))

        controls = await self._run(set_paused)
        self._controls_read_at = -math.inf  # this process's claims see the change at once
        return controls

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
        now = self._clock.time()

        async def set_limits(conn: Connection) -> QueueControls:
            await conn.execute(
                _sql.CONTROLS_LIMITS, tenant_id, weight, max_leased, max_per_second, now
            )
            await conn.execute(_sql.CONTROLS_PRUNE)
            return _controls(await conn.fetch(_sql.CONTROLS_READ))

        controls = await self._run(set_limits)
        self._controls_read_at = -math.inf  # this process's claims see the change at once
        return controls

    async def controls(self) -> QueueControls:
        """Return what is paused and every tenant's stored weight and limits."""

        async def read(conn: Connection) -> QueueControls:
            return _controls(await conn.fetch(_sql.CONTROLS_READ))

        return await self._run(read, atomic=False)

    # --- readers -------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job:
        """Return the job with this id, or raise JobNotFound."""

        async def get(conn: Connection) -> Job:
            row = await conn.fetchrow(_sql.GET, job_id)
            if row is None:
                raise JobNotFound(job_id)
            return job_from_row(row)

        return await self._run(get, atomic=False)

    async def stats(self) -> Stats:
        """Count jobs by status and measure the age of the oldest available job."""
        now = self._clock.time()

        async def stats(conn: Connection) -> Stats:
            # One statement, one snapshot, and no scan of the backlog (sql/stats.sql).
            row = await conn.fetchrow(_sql.STATS, now)
            assert row is not None  # an aggregate returns one row
            total, done, failed, leased, scheduled, oldest, cancelled_ = row
            controls = _controls(await conn.fetch(_sql.CONTROLS_READ))
            return Stats(
                pending=int(total - done - failed - cancelled_ - leased),
                cancelled=int(cancelled_),
                scheduled=int(scheduled),
                leased=int(leased),
                done=int(done),
                failed=int(failed),
                oldest_pending_age_seconds=None if oldest is None else max(0.0, now - oldest),
                paused=controls.paused,
                paused_tenants=[t.tenant_id for t in controls.tenants if t.paused],
            )

        return await self._run(stats, atomic=False)

    async def run_summary(self, run_id: str) -> RunSummary:
        """Return the run's counts, metrics and status, or raise RunNotFound."""

        async def summary(conn: Connection) -> RunSummary:
            row = await conn.fetchrow(_sql.RUNS, run_id, 0, None, None, 1)
            if row is None:
                raise RunNotFound(run_id)
            return summary_from_row(row)

        return await self._run(summary, atomic=False)

    async def list_runs(
        self,
        tenant_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        *,
        newest_first: bool = False,
    ) -> Page[RunSummary]:
        """Return one page of run summaries, oldest first (or newest first)."""
        check_range("limit", limit, 1, MAX_PULL)
        if newest_first:
            statement, bound = (
                _sql.RUNS_NEWEST,
                (parse_cursor(cursor) if cursor is not None else _sql.NO_ID),
            )
        else:
            statement, bound = _sql.RUNS, parse_cursor(cursor)

        async def runs(conn: Connection) -> Page[RunSummary]:
            rows = await conn.fetch(statement, None, bound, tenant_id, None, limit + 1)
            more = len(rows) > limit
            return Page(
                items=[summary_from_row(row) for row in rows[:limit]],
                next_cursor=str(rows[limit - 1][-1]) if more else None,  # seq: last column
            )

        return await self._run(runs, atomic=False)

    async def throughput(self, since: float) -> list[Throughput]:
        """Count the jobs done and failed per minute since ``since``, oldest minute first."""
        check_range("since", since, 0, math.inf)

        async def counts(conn: Connection) -> list[Throughput]:
            rows = await conn.fetch(_sql.THROUGHPUT, since)
            return [
                Throughput(minute=row[0] * 60.0, done=row[1], failed=row[2])
                for row in rows
                if row[1] or row[2]
            ]

        return await self._run(counts, atomic=False)

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
        after = parse_cursor(cursor)

        async def jobs(conn: Connection) -> Page[Job]:
            rows = await conn.fetch(_sql.LIST_JOBS, after, status, run_id, tenant_id, limit + 1)
            items = [job_from_row(row) for row in rows[:limit]]
            more = len(rows) > limit
            return Page(items=items, next_cursor=str(items[-1].id) if more else None)

        return await self._run(jobs, atomic=False)

    def _jitter(self) -> Iterator[float]:
        return jitter_factors(self._rng, self._backoff.jitter)


# (connection, job ids, tokens, their positions in the batch) -> the rows it changed.
Statement = Callable[[Connection, list[int], list[str], list[int]], Awaitable[list[Row]]]


async def _per_item(
    conn: Connection,
    now: float,
    leases: Sequence[tuple[int, str]],
    verb: str,
    statement: Statement,
    statuses: Sequence[JobStatus] | None = None,
    *,
    owned: ByOwner | None = None,
) -> list[ItemResult]:
    """Apply ``statement`` to every (id, token) at once, then explain each item it did not change.

    A batch that names one job twice goes item by item, so the first item wins as in SQLite.
    """
    ids = [job_id for job_id, _ in leases]
    tokens = [token for _, token in leases]
    if len(set(ids)) == len(ids):
        rows = await statement(conn, ids, tokens, list(range(len(ids))))
        applied = {job.id: job for job in map(job_from_row, rows)}
        outcome = [applied.get(i) for i in ids]
    else:
        outcome = []
        for n, (i, token) in enumerate(leases):
            rows = await statement(conn, [i], [token], [n])
            outcome.append(job_from_row(rows[0]) if rows else None)
    refused = [i for i, job in zip(ids, outcome, strict=True) if job is None]
    current: dict[int, Row] = {}
    if refused:
        current = {row[0]: row for row in await conn.fetch(_sql.JOBS_BY_ID, refused)}
    results: list[ItemResult] = []
    for n, (job_id, token) in enumerate(leases):
        job = outcome[n]
        if job is not None and job.status == "cancelled":
            # A marked lease given back or acked ends cancelled: refused, its outcome dropped.
            results.append(cancelled(job, verb))
        elif job is not None:
            results.append(ItemResult(job_id=job_id, ok=True, reason="ok", job=job))
        else:
            status = None if statuses is None else statuses[n]
            results.append(
                refusal(current.get(job_id), now, job_id, token, verb, status, owned=owned)
            )
    return results


async def _count(
    conn: Connection,
    now: float,
    counts: dict[str, tuple[int, int, int, int]],
    *,
    touch: bool,
    shard: int | None = None,
) -> None:
    """Add (done, failed, total, cancelled) to each run's counts (this connection's shard rows,
    or those of ``shard``): one statement for every run of the batch (sql/add_counts.sql)."""
    runs = sorted(run_id for run_id, n in counts.items() if any(n))
    if not runs:
        return
    await conn.execute(
        _sql.ADD_COUNTS,
        now,
        runs,
        [counts[r][0] for r in runs],
        [counts[r][1] for r in runs],
        [counts[r][2] for r in runs],
        touch,
        shard,
        [counts[r][3] for r in runs],
    )


async def _check_tenants(conn: Connection, pairs: set[tuple[str, str]]) -> None:
    """Raise InvalidArgument unless each (run, tenant) names the tenant that holds the run."""
    runs = sorted({run_id for run_id, _ in pairs})
    owners: dict[str, str] = {
        run_id: tenant for run_id, tenant in await conn.fetch(_sql.RUN_TENANTS, runs)
    }
    for run_id, tenant_id in sorted(pairs):
        if owners.get(run_id) != tenant_id:
            owner = owners.get(run_id) or next(t for r, t in sorted(pairs) if r == run_id)
            other = next(t for r, t in sorted(pairs) if r == run_id and t != owner)
            raise InvalidArgument(
                f"run {run_id!r} belongs to tenant {owner!r}, not {other!r}; a run has one "
                "tenant. Use a new run id for this tenant"
            )


async def _read_controls(conn: Connection) -> list[tuple[str, bool]]:
    return [(row[0], row[1]) for row in await conn.fetch(_sql.CONTROLS_LIST)]


def _last_served(cursor: str, served: set[str]) -> str:
    """The tenant a fair claim served last in its round: the first served after ``cursor``,
    wrapping around, is served first; the last of them in that order ends the round."""
    wrapped = [t for t in served if t <= cursor]
    return max(wrapped) if wrapped else max(served)


def _controls(rows: Sequence[Row]) -> QueueControls:
    paused = False
    tenants: list[TenantControl] = []
    for tenant, paused_, weight, max_leased, rate, _, _ in rows:
        if tenant == "":
            paused = bool(paused_)
            continue
        tenants.append(
            TenantControl(
                tenant_id=tenant,
                paused=bool(paused_),
                weight=weight,
                max_leased=max_leased,
                max_per_second=rate,
            )
        )
    return QueueControls(paused=paused, tenants=tenants)


def _set_event(event: asyncio.Event, _conn: Connection) -> None:
    event.set()


# mypy checks the class against the contract here, verb by verb.
_contract: type[OwnedQueue] = PostgresQueue
