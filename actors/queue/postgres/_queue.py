"""``PostgresQueue``: the durable job queue's async API over PostgreSQL, for many machines.

The contract `actors.queue.base.OwnedQueue`, kept as ``SQLiteQueue`` keeps it (operations,
statuses, fencing, per-item results, retries, idempotency, run state, errors). The driver is
asyncpg, which runs on asyncio only: on asyncio the queue uses the caller's loop; on trio it
runs its own asyncio loop on a helper thread and hands each call over (ARCHITECTURE.md has
the measurements that chose this).

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
import threading
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import msgspec
import sniffio
import structlog

from actors.bounds import DEFAULT_MAX_PAYLOAD_BYTES, MAX_ATTEMPTS, MAX_PULL
from actors.errors import (
    InvalidArgument,
    JobNotFound,
    QueueClosed,
    QueueError,
    RunNotFound,
    StorageError,
)
from actors.queue._rows import (
    COLUMNS as JOB_COLUMNS,
)
from actors.queue._rows import (
    ByOwner,
    job_from_row,
    parse_cursor,
    refusal,
    summary_from_row,
)
from actors.queue._rows import decode as _decode
from actors.queue._rows import encode as _encode
from actors.queue.base import (
    OwnedQueue,
    SingleItemVerbs,
    check_ack,
    check_batch,
    check_delay,
    check_listing,
    check_maintenance,
    check_new_job,
    check_optional_text,
    check_range,
    check_visibility,
    jitter_factors,
)
from actors.queue.model import (
    Ack,
    AckResult,
    Backoff,
    ItemResult,
    Job,
    JobStatus,
    LeaseResult,
    MaintenanceClaim,
    NewJob,
    Page,
    RunSummary,
    Stats,
)
from actors.queue.postgres import _schema as pg_schema
from supervisors.clock import Clock, SystemClock

__all__ = ["PostgresQueue"]

T = TypeVar("T")
log = structlog.get_logger("actors.queue.postgres")

# The job's columns in `_rows.COLUMNS` order, qualified: claims join the jobs table to a CTE.
COLUMNS = ", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(","))
# A lease is live while the job is leased under this token and has not run out (LIVE_LEASE).
LIVE = "j.status = 'leased' AND j.lease_token = a.token AND j.lease_expires_at > $1"


# A claim is one statement: lock up to $2 visible jobs in `jobs_claim`'s order, skipping every
# row another transaction holds, and lease them. Under READ COMMITTED a row locked by another
# claimer is skipped, never handed out twice. (A subquery that does not lock its rows lets two
# claimers pick the same pending row, and the outer UPDATE, re-checking only `id` after the
# first commits, leases it again: goqite's Postgres flavour.) $1 now, $3 expiry, $4 worker,
# $5 the claim's random prefix: a lease token is that prefix and the job's id, unique to the lease
# (a random number per row cost a tenth of the claim); $6 the lease's owner (`lease_owner`);
# $7 whether the jobs count as started at once (`started_at`).
CLAIM = f"""
    WITH claim AS (
        SELECT id FROM jobs
        WHERE status = 'pending' AND available_at <= $1
        ORDER BY priority DESC, available_at, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs AS j
    SET status = 'leased', attempts = j.attempts + 1,
        lease_token = $5 || j.id::text,
        lease_expires_at = $3, worker_id = $4, lease_owner = $6,
        started_at = CASE WHEN $7 THEN $1 END, updated_at = $1
    FROM claim WHERE j.id = claim.id
    RETURNING {COLUMNS}
"""

# Added to the enqueue statement when it runs without a transaction: a run of the batch
# ($5 its runs, $6 their tenants: the client has checked that each run of the batch names one
# tenant) that this statement did not create and that its snapshot does not show held by that
# tenant (another tenant's run, or one another transaction created meanwhile) fails the
# statement with this message, so nothing is written; the enqueue then goes again in a
# transaction, which says why or succeeds.
_TENANT_GUARD = "actors: run tenant mismatch"
_GUARD = f"""
    , CASE WHEN EXISTS (
          SELECT 1 FROM unnest($5::text[], $6::text[]) AS p(run_id, tenant_id)
          WHERE NOT EXISTS (SELECT 1 FROM created c WHERE c.run_id = p.run_id)
            AND NOT EXISTS (SELECT 1 FROM runs r
                            WHERE r.run_id = p.run_id AND r.tenant_id = p.tenant_id))
      THEN (new.run_id || '{_TENANT_GUARD}')::int END
"""

# Adds one batch's counts to the shard rows of its runs (`run_counts`, this connection's
# shard), from a relation `d` (run_id, done, failed, total, metrics jsonb or NULL) with one row
# per run, in run_id order (two batches lock shared rows in the same order: no deadlock). $1 is
# now; `{touch}` says whether the change updates the run (as in SQLite: an enqueue, a requeue,
# new metrics; closing the run counts too, through RUN_STATE's finished_at).
_SHARD = f"pg_backend_pid() % {pg_schema.SHARDS}"  # this connection's slot
# Purge's own slot, which no enqueue or ack uses: purge takes a lock on `runs` after counting,
# and an enqueue holding `runs` while it waited for a shard row purge held would deadlock.
_PURGE_SHARD = pg_schema.SHARDS
_ADD_COUNTS = """
    INSERT INTO run_counts AS s (run_id, shard, done, failed, total, metrics, finished_at,
                                 updated_at)
    SELECT d.run_id, {shard}, d.done, d.failed, d.total,
           d.metrics, CASE WHEN d.done > 0 OR d.failed > 0 THEN $1::float8 END,
           CASE WHEN {touch} THEN $1::float8 END
    FROM d ORDER BY d.run_id
    ON CONFLICT (run_id, shard) DO UPDATE
    SET done = s.done + excluded.done, failed = s.failed + excluded.failed,
        total = s.total + excluded.total,
        metrics = CASE WHEN excluded.metrics IS NULL THEN s.metrics
                       WHEN s.metrics IS NULL THEN excluded.metrics ELSE (
            SELECT jsonb_object_agg(k, coalesce((s.metrics ->> k)::float8, 0)
                                       + coalesce((excluded.metrics ->> k)::float8, 0))
            FROM jsonb_object_keys(s.metrics || excluded.metrics) AS k) END,
        finished_at = coalesce(excluded.finished_at, s.finished_at),
        updated_at = coalesce(excluded.updated_at, s.updated_at)
"""


# An expired lease spends the job's attempt (the last one fails it) only if the job started.
_SPENT = "(j.started_at IS NOT NULL AND j.attempts >= j.max_attempts)"

# Terminal when permanent or out of attempts; else pending again after a backoff.
_TERMINAL = "(a.permanent IS TRUE OR j.attempts >= j.max_attempts)"

# An ack batch is one statement (one round trip, no BEGIN/COMMIT): record each outcome under
# its live lease (in _ACK_OWNED, the ids-only form, a live lease that the principal $5 took),
# then add each run's finished jobs (and, in _ACK_METRICS, the acks' run metrics) to its count
# shard. The acks are one JSON parameter. $1 now, $2 backoff cap, $3 backoff base, $4 the acks.
_ACK = f"""
    WITH a AS (
        SELECT * FROM json_to_recordset($4::json)
             AS a(id bigint, token text, status text, result json, error text, permanent bool,
                  factor float8, metrics jsonb)
        -- Always true (the acks were checked), but it makes the planner expect a row or two
        -- instead of json_to_recordset's default hundred, so the plan is a primary-key probe
        -- per ack. Otherwise a generic plan made while the table was young (and then kept)
        -- hashed a scan of the whole table into every ack.
        WHERE a.status IN ('done', 'failed')
    ),
    acked AS (
        UPDATE jobs AS j
        SET status = CASE WHEN a.status = 'done' THEN 'done'
                          WHEN {_TERMINAL} THEN 'failed' ELSE 'pending' END,
            result = CASE WHEN a.status = 'done' THEN a.result::text ELSE j.result END,
            available_at = CASE WHEN a.status = 'done' OR {_TERMINAL} THEN j.available_at
                ELSE $1 + least($2, $3 * power(2, least(j.attempts - 1, 40))) * a.factor END,
            finished_at = CASE WHEN a.status = 'done' OR {_TERMINAL} THEN $1 END,
            lease_token = CASE WHEN a.status = 'done' OR {_TERMINAL} THEN j.lease_token END,
            worker_id = CASE WHEN a.status = 'done' OR {_TERMINAL} THEN j.worker_id END,
            lease_owner = CASE WHEN a.status = 'done' OR {_TERMINAL} THEN j.lease_owner END,
            started_at = CASE WHEN a.status = 'done' OR {_TERMINAL} THEN j.started_at END,
            last_error = CASE WHEN a.status = 'done' THEN j.last_error ELSE a.error END,
            lease_expires_at = NULL, updated_at = $1
        FROM a
        -- `|| ''`: no partial index matches, so no plan scans every lease (live or dead).
        WHERE j.id = a.id AND j.status || '' = 'leased'
          AND {{fence}} AND j.lease_expires_at > $1
        RETURNING {COLUMNS}{{added}}
    ),
    d AS (
        SELECT g.run_id, count(*) FILTER (WHERE g.status = 'done') AS done,
               count(*) FILTER (WHERE g.status = 'failed') AS failed, 0::bigint AS total,
               {{metrics}} AS metrics
        FROM acked g GROUP BY g.run_id
        HAVING count(*) FILTER (WHERE g.status IN ('done', 'failed')) > 0 {{or_metrics}}
    ),
    counted AS ({_ADD_COUNTS.format(touch="d.metrics IS NOT NULL", shard=_SHARD)} RETURNING 1)
    SELECT {COLUMNS} FROM acked j
"""
_ACK_METRICS = _ACK.format(
    metrics="""(SELECT jsonb_object_agg(s.k, s.v) FROM (
                    SELECT e.key AS k, sum(e.value::float8) AS v
                    FROM acked x CROSS JOIN LATERAL jsonb_each_text(x.added) AS e
                    WHERE x.run_id = g.run_id GROUP BY e.key) s)""",
    or_metrics="OR bool_or(g.added IS NOT NULL)",
    added=", a.metrics AS added",
    fence="j.lease_token = a.token",
)
_ACK_OWNED = _ACK.format(
    metrics="NULL::jsonb", or_metrics="", added="", fence="j.lease_owner IS NOT DISTINCT FROM $5"
)
_ACK = _ACK.format(metrics="NULL::jsonb", or_metrics="", added="", fence="j.lease_token = a.token")


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


_encode_rows = msgspec.json.Encoder().encode


def _raw(value: Any) -> msgspec.Raw | None:
    """A value as JSON for a statement's parameter (None stays NULL)."""
    return None if value is None else msgspec.Raw(_encode(value))


# The claim on its own, for a pull's first try: it leases nothing while a lease has expired
# (then the pull reaps and claims with CLAIM), so it never passes over a job the reap frees.
FIRST_CLAIM = CLAIM.replace(
    "WHERE status = 'pending' AND available_at <= $1",
    "WHERE status = 'pending' AND available_at <= $1 AND NOT EXISTS (\n"
    "            SELECT 1 FROM jobs WHERE status = 'leased' AND lease_expires_at <= $1)",
)
assert FIRST_CLAIM != CLAIM

# Connection loss (a killed backend, a restarting server, a reset socket) is tried this many
# times, waiting 0.05, 0.1, 0.2, ... 3.2 s between tries: 6.35 s in all, longer than a restart.
RETRIES = 8
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


class _Pool:
    """Up to ``size`` connections on the driver's loop, opened when first needed.

    Leaner than asyncpg's pool, whose acquire and release cost about 40 us and two event-loop
    turns per call (its release runs in a task of its own, behind ``asyncio.shield``): every
    queue call here is one or two statements, so that was a fifth of a single-job call's CPU.
    The queue leaves no session state on a connection (no LISTEN, SET, advisory lock, cursor
    or open transaction), so a released connection needs no reset; a broken one is terminated
    and its slot handed to the next waiter, which opens a fresh connection.
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]], size: int) -> None:
        self._connect = connect
        self._size = size
        self._opened = 0  # idle + in use + being opened
        self._idle: list[Any] = []
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._closed = False

    async def acquire(self) -> Any:
        if self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            # It died while idle (a server restart, a killed backend): open one in its place,
            # rather than spend the caller's retries on connections known to be dead.
            conn.terminate()
            return await self._open()
        if self._opened < self._size:
            self._opened += 1
            return await self._open()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give(waiter.result())  # handed to us as we were cancelled: pass it on
            raise
        # None: a slot, freed by a dropped connection, to open a connection in.
        return conn if conn is not None else await self._open()

    async def _open(self) -> Any:
        try:
            return await self._connect()
        except BaseException:
            self._give(None)
            raise

    def release(self, conn: Any, *, broken: bool = False) -> None:
        """Give ``conn`` back; a ``broken`` one (or any, once closed) is terminated."""
        if broken or self._closed or conn.is_closed():
            conn.terminate()
            self._give(None)
        else:
            self._give(conn)

    def _give(self, conn: Any) -> None:
        """Hand an idle connection (or, as None, a free slot) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._opened -= 1
        else:
            self._idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections; those in use are terminated when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._opened -= 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 10)


class _Bridge:
    """Runs coroutines on the driver's asyncio loop; the caller awaits them on its own backend.

    On asyncio that loop is the caller's, and each call is a task of its own (so a cancelled
    caller does not cut a transaction in half). On trio it is a loop on a helper thread, and
    completions come back through the trio token (``run_sync_soon``).
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._token: Any = None
        self.pending: set[Any] = set()
        if sniffio.current_async_library() == "asyncio":
            self.loop = asyncio.get_running_loop()
            return
        import trio  # only under trio, whose token wakes the caller

        self._token = trio.lowlevel.current_trio_token()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="actors-postgres", daemon=True
        )
        self._thread.start()

    def to_caller(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the caller's event loop (from the driver's loop)."""
        if self._token is None:
            fn()
            return
        with contextlib.suppress(Exception):  # the trio run is over: nobody waits any more
            self._token.run_sync_soon(fn)

    def submit(self, coro: Awaitable[T]) -> Any:
        """Start ``coro`` on the driver's loop; return its (asyncio or concurrent) future."""
        if self._thread is None:
            fut: Any = self.loop.create_task(coro)  # type: ignore[arg-type]
        else:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        self.pending.add(fut)
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: Any) -> None:
        self.pending.discard(fut)
        if not fut.cancelled():
            fut.exception()  # retrieved: a cancelled caller's error is not "never retrieved"

    async def call(self, coro: Awaitable[T], on_done: Callable[[T], None] | None = None) -> T:
        """Run ``coro`` on the driver's loop and return its result; ``on_done`` runs after it
        succeeds, on the caller's loop, even when the caller was cancelled meanwhile."""
        fut = self.submit(coro)
        done = anyio.Event()

        def finished(_: Any) -> None:
            def wake() -> None:
                done.set()
                if on_done is not None and not fut.cancelled() and fut.exception() is None:
                    on_done(fut.result())

            self.to_caller(wake)

        fut.add_done_callback(finished)
        await done.wait()
        return fut.result()  # type: ignore[no-any-return]

    async def drain(self) -> None:
        """Wait until every submitted coroutine has finished."""
        while self.pending:
            done = anyio.Event()
            wake = functools.partial(self.to_caller, done.set)
            for fut in list(self.pending):
                fut.add_done_callback(lambda _, wake=wake: wake())
            await done.wait()

    def stop(self) -> None:
        """Stop the helper thread's loop (trio only)."""
        if self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


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
        bridge: _Bridge,
        *,
        schema: str | None,
        clock: Clock,
        max_payload_bytes: int,
        max_attempts: int,
        backoff: Backoff,
        seed: int | None,
        pool_size: int,
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
        self._pool: Any = None
        # The task that listens for other processes' enqueues while anyone subscribes (run on
        # the driver's loop), and every such task not yet finished (a stopped one closes its
        # connection on its way out).
        self._listener: asyncio.Task[None] | None = None
        self._listeners: set[asyncio.Task[None]] = set()
        self._closed = False
        self._on_enqueue: list[Callable[[], object]] = []
        # Our own NOTIFYs carry this id, so subscribers are not woken twice for one enqueue.
        self._origin = uuid.uuid4().hex
        self._channel = "actors_enqueued"  # then "actors_enqueued_<schema>", once connected

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
    ) -> AsyncIterator[PostgresQueue]:
        """Connect (creating ``schema`` and migrating it as needed); close everything on exit.

        ``schema`` selects the PostgreSQL schema that holds the tables (default: the DSN's
        ``search_path``, else ``public``); ``password`` defaults to libpq's PGPASSWORD.
        """
        check_range("max_attempts", max_attempts, 1, MAX_ATTEMPTS)
        check_range("max_payload_bytes", max_payload_bytes, 1, 64 * 1024 * 1024)
        check_range("pool_size", pool_size, 1, 1000)
        if schema is not None and not schema.replace("_", "").isalnum():
            raise InvalidArgument(f"schema must be letters, digits and underscores, not {schema!r}")
        queue = cls(
            dsn,
            _Bridge(),
            schema=schema,
            clock=clock or SystemClock(),
            max_payload_bytes=max_payload_bytes,
            max_attempts=max_attempts,
            backoff=backoff or Backoff(),
            seed=seed,
            pool_size=pool_size,
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
        kwargs: dict[str, Any] = {"server_settings": settings, "timeout": 10}
        if password is not None:
            kwargs["password"] = password
        self._connect_kwargs = kwargs
        try:
            conn = await asyncpg.connect(self.dsn, **kwargs)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StorageError(
                f"cannot connect to PostgreSQL at {self.where}: {exc}. Check [queue].dsn, that "
                "the server runs, and PGPASSWORD"
            ) from exc
        try:
            if self.schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            current = await conn.fetchval("SELECT current_schema()")
            if current is None:
                raise StorageError(
                    f"no schema to use at {self.where}: the search_path names none that exists. "
                    "Create it, or name an existing one in the DSN (?search_path=...)"
                )
            # Enqueues in other schemas of the database do not wake this queue's workers.
            self._channel = f"actors_enqueued_{current}"
            await pg_schema.migrate_up(conn, self.where)
        except asyncpg.PostgresError as exc:
            raise StorageError(f"cannot migrate the queue at {self.where}: {exc}") from exc
        finally:
            await conn.close()
        self._pool = _Pool(functools.partial(asyncpg.connect, self.dsn, **kwargs), self._pool_size)

    async def aclose(self) -> None:
        """Finish what was submitted, then close the listener and every pooled connection."""
        if self._closed:
            return
        self._closed = True
        await self._bridge.drain()
        with contextlib.suppress(Exception):
            await self._bridge.call(self._stop())
        self._bridge.stop()

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
        work: Callable[[Any], Awaitable[T]],
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
        return await self._bridge.call(self._transaction(work, atomic), on_done)

    async def _transaction(self, work: Callable[[Any], Awaitable[T]], atomic: bool) -> T:
        delay = 0.05
        for attempt in itertools.count(1):
            try:
                conn = await self._pool.acquire()
                try:
                    if not atomic:
                        result = await work(conn)
                    else:
                        async with conn.transaction():
                            result = await work(conn)
                except BaseException as exc:
                    # Never back into the pool half-broken, or inside a transaction.
                    broken = isinstance(exc, _TRANSIENT) or conn.is_in_transaction()
                    self._pool.release(conn, broken=broken)
                    raise
                self._pool.release(conn)
                return result
            except QueueError:
                raise
            except _TRANSIENT as exc:
                # The transaction rolled back, or (lost during COMMIT) may have committed:
                # retrying is safe for what matters (idempotency keys, acks under one lease).
                if attempt >= RETRIES:
                    raise StorageError(
                        f"PostgreSQL at {self.where} is unreachable after {attempt} tries: "
                        f"{exc}. Check that the server runs; the call changed nothing or was "
                        "committed once"
                    ) from exc
                log.warning("queue.pg_retry", attempt=attempt, error=str(exc) or repr(exc))
                await asyncio.sleep(delay)  # a real wait for a real server, not queue time
                delay *= 2
            except asyncpg.PostgresError as exc:
                raise StorageError(f"PostgreSQL failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _sync_listener(self) -> None:
        """Listen while anyone subscribes to ``on_enqueue`` (on the driver's loop).

        A process with no subscriber (a producer, a benchmark loop) then costs no listening
        connection, and no wake-up of its own for every other process's enqueue.
        """
        wanted = bool(self._on_enqueue) and not self._closed
        if wanted and self._listener is None:
            self._listener = self._bridge.loop.create_task(self._listen_forever())
            self._listeners.add(self._listener)
            self._listener.add_done_callback(self._listeners.discard)
        elif not wanted and self._listener is not None:
            self._listener.cancel()
            self._listener = None

    async def _listen_forever(self) -> None:
        # Enqueues by other processes wake our subscribers; polling covers any gap while the
        # listening connection is down. Once it listens (the first time, and again after a
        # loss) it wakes subscribers once: jobs may have arrived while nobody listened, as in
        # the moment between a subscription and its LISTEN.
        delay = 0.05
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, **self._connect_kwargs)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self._channel, self._notified)
                delay = 0.05
                self._bridge.to_caller(self._notify_enqueued)
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload.split(" ", 1)[0] != self._origin:
            self._bridge.to_caller(self._notify_enqueued)

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
                self._bridge.loop.call_soon_threadsafe(self._sync_listener)

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

        async def enqueue(conn: Any) -> list[Job]:
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
        conn: Any,
        now: float,
        jobs: Sequence[NewJob],
        rows: list[_NewRow],
        keyed: bool,
        tenants: dict[str, str] | None,
    ) -> list[Job]:
        guarded = tenants is not None  # else in a transaction, which checks the tenants after
        # One statement for the batch: insert the jobs (the batch is one JSON parameter: one
        # decode on the server instead of nine arrays encoded item by item here), create the
        # runs it names for the first time, add the new jobs to the runs' counts (this
        # connection's shard rows), and NOTIFY other processes. Identity values are drawn in
        # input order, so the inserted ids sorted line up with the inputs that were not
        # idempotent repeats; every other column of a new job is known here, so only the id
        # comes back. Without idempotency keys it is a plain insert (ON CONFLICT's speculative
        # insertion costs every row).
        conflict = (
            "ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
            if keyed
            else ""
        )
        inserted = await conn.fetch(
            f"""
            WITH new AS (
                INSERT INTO jobs AS j (run_id, tenant_id, r2_key, payload, max_attempts,
                                       priority, available_at, idempotency_key, created_at,
                                       updated_at, cross_tenant_key, timeout_seconds)
                SELECT a.run_id, a.tenant_id, a.r2_key, a.payload::text, a.max_attempts,
                       coalesce(a.priority, 0), $1 + coalesce(a.delay, 0), a.idempotency_key,
                       $1, $1, coalesce(a.cross_tenant_key, false), a.timeout_seconds
                FROM ROWS FROM (json_to_recordset($2::json)
                         AS (run_id text, tenant_id text, r2_key text, payload json,
                             max_attempts int, priority int, delay float8,
                             idempotency_key text, cross_tenant_key bool,
                             timeout_seconds float8))
                     WITH ORDINALITY AS a(run_id, tenant_id, r2_key, payload, max_attempts,
                                          priority, delay, idempotency_key, cross_tenant_key,
                                          timeout_seconds, n)
                ORDER BY a.n
                {conflict}
                RETURNING j.id, j.run_id, j.tenant_id, j.idempotency_key
            ),
            created AS (
                INSERT INTO runs AS r (run_id, tenant_id, created_at, updated_at, first_id)
                SELECT run_id, min(tenant_id), $1, $1, min(id) FROM new
                GROUP BY run_id ORDER BY run_id
                ON CONFLICT (run_id) DO NOTHING
                RETURNING run_id
            ),
            d AS (
                SELECT run_id, 0::bigint AS done, 0::bigint AS failed, count(*) AS total,
                       NULL::jsonb AS metrics, min(id) AS first_id
                FROM new GROUP BY run_id
            ),
            -- A run whose first_id is above the batch's ids (one `store migrate` created with
            -- no job yet) is lowered; any other run is only read (its first_id is lower).
            lowered AS (
                UPDATE runs AS r SET first_id = d.first_id FROM d
                WHERE r.run_id = d.run_id AND r.first_id > d.first_id
                RETURNING 1
            ),
            counted AS ({_ADD_COUNTS.format(touch="true", shard=_SHARD)} RETURNING 1),
            notified AS (SELECT pg_notify($3, $4))
            SELECT new.id, new.run_id, new.tenant_id, new.idempotency_key,
                   (SELECT count(*) FROM notified){_GUARD if guarded else ""}
            FROM new
            """,
            now,
            _encode_rows(rows).decode(),
            self._channel,
            self._origin,
            *((list(tenants), list(tenants.values())) if tenants is not None else ()),
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
                        f"""
                        SELECT {COLUMNS} FROM jobs j
                        JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, idempotency_key)
                          ON j.tenant_id = k.tenant_id AND j.idempotency_key = k.idempotency_key
                        """,
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
                """
                UPDATE runs SET first_id = d.first_id
                FROM unnest($1::text[], $2::bigint[]) AS d(run_id, first_id)
                WHERE runs.run_id = d.run_id AND runs.first_id > d.first_id
                """,
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
    ) -> list[Job]:
        """Lease up to ``max`` visible jobs for ``visibility_seconds``, highest priority first.

        ``owner`` names the principal taking the leases (recorded as ``lease_owner``): only it
        may settle them by id alone (`ack_ids`). ``started`` marks them started at once, for a
        caller that never calls `start_many`.
        """
        check_range("max", max, 1, MAX_PULL)
        check_visibility(visibility_seconds)
        check_optional_text("worker_id", worker_id)
        check_optional_text("owner", owner)
        now = self._clock.time()

        async def claim(conn: Any) -> list[Job]:
            # First the claim alone, which leases nothing while any lease has expired: when it
            # leases something, a reap first would have found nothing, so this is the same
            # pull in one round trip. Otherwise reap (it commits on its own) and claim again.
            prefix = secrets.token_hex(8)  # 64 random bits for this claim's leases
            rows = await conn.fetch(
                FIRST_CLAIM, now, max, now + visibility_seconds, worker_id, prefix, owner, started
            )
            if not rows:
                await self._reap(conn, now)
                rows = await conn.fetch(
                    CLAIM, now, max, now + visibility_seconds, worker_id, prefix, owner, started
                )
            jobs = [job_from_row(row) for row in rows]
            jobs.sort(key=lambda j: (-j.priority, j.available_at, j.id))
            return jobs

        # Not atomic: the reap commits on its own (it is complete by itself), then the claim.
        return await self._run(claim, atomic=False)

    async def _reap(self, conn: Any, now: float) -> int:
        # One statement (the jobs and their runs' counts commit together). SKIP LOCKED: two
        # workers reaping at once split the expired leases between them. A job never started
        # under the lease gets its attempt back and goes back to pending (counted nowhere); a
        # started one on its last attempt fails (counted in the shard).
        return int(
            await conn.fetchval(
                f"""
                WITH expired AS (
                    SELECT id FROM jobs WHERE status = 'leased' AND lease_expires_at <= $1
                    FOR UPDATE SKIP LOCKED
                ),
                reaped AS (
                    UPDATE jobs AS j
                    SET status = CASE WHEN {_SPENT} THEN 'failed' ELSE 'pending' END,
                        attempts = CASE WHEN started_at IS NULL THEN attempts - 1
                                        ELSE attempts END,
                        last_error = CASE WHEN {_SPENT}
                            THEN 'lease expired on the last attempt (' || attempts || ' of '
                                 || max_attempts || ') held by worker '
                                 || coalesce(worker_id, '?')
                                 || ', which started the job and then stopped renewing it'
                            ELSE last_error END,
                        finished_at = CASE WHEN {_SPENT} THEN $1 END,
                        lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                        lease_owner = NULL, started_at = NULL, updated_at = $1
                    FROM expired WHERE j.id = expired.id
                    RETURNING j.run_id, j.status
                ),
                d AS (
                    SELECT run_id, 0::bigint AS done, count(*) AS failed, 0::bigint AS total,
                           NULL::jsonb AS metrics
                    FROM reaped WHERE status = 'failed' GROUP BY run_id
                ),
                counted AS ({_ADD_COUNTS.format(touch="false", shard=_SHARD)} RETURNING 1)
                SELECT count(*) FROM reaped
                """,
                now,
            )
        )

    async def renew_many(
        self, leases: Sequence[tuple[int, str]], visibility_seconds: float
    ) -> list[LeaseResult]:
        """Extend every live lease in one transaction; stale ones are refused item by item."""
        check_batch("leases", leases)
        check_visibility(visibility_seconds)
        now = self._clock.time()
        sql = f"""
            UPDATE jobs AS j SET lease_expires_at = $1 + $2, updated_at = $1
            FROM unnest($3::bigint[], $4::text[]) AS a(id, token)
            WHERE j.id = a.id AND {LIVE}
            RETURNING {COLUMNS}
        """
        return await self._run(
            lambda conn: _per_item(
                conn,
                now,
                leases,
                "renewed",
                lambda c, ids, tokens, _: c.fetch(sql, now, visibility_seconds, ids, tokens),
            ),
            # One statement (all or nothing by itself) unless the batch names a job twice.
            atomic=len({job_id for job_id, _ in leases}) < len(leases),
        )

    async def start_many(self, leases: Sequence[tuple[int, str]]) -> list[LeaseResult]:
        """Mark each live lease's job started (handed to the pipeline's first stage); stale
        ones are refused item by item. Once started, the lease expiring spends its attempt."""
        check_batch("leases", leases)
        now = self._clock.time()
        sql = f"""
            UPDATE jobs AS j SET started_at = coalesce(j.started_at, $1), updated_at = $1
            FROM unnest($2::bigint[], $3::text[]) AS a(id, token)
            WHERE j.id = a.id AND {LIVE}
            RETURNING {COLUMNS}
        """
        return await self._run(
            lambda conn: _per_item(
                conn,
                now,
                leases,
                "started",
                lambda c, ids, tokens, _: c.fetch(sql, now, ids, tokens),
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
        sql = f"""
            UPDATE jobs AS j
            SET status = 'pending', attempts = j.attempts - 1, available_at = $1 + $2,
                lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                lease_owner = NULL, started_at = NULL, updated_at = $1
            FROM unnest($3::bigint[], $4::text[]) AS a(id, token)
            WHERE j.id = a.id AND {LIVE}
            RETURNING {COLUMNS}
        """
        return await self._run(
            lambda conn: _per_item(
                conn,
                now,
                leases,
                "released",
                lambda c, ids, tokens, _: c.fetch(sql, now, float(delay_seconds), ids, tokens),
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
                metrics=_raw(a.run_metrics) if a.run_metrics else None,
            )
            for a, result, factor in zip(acks, results, factors, strict=True)
        ]
        sql = _ACK_METRICS if any(row.metrics is not None for row in rows) else _ACK
        owner: tuple[str | None, ...] = ()
        if owned is not None:
            sql, owner = _ACK_OWNED, (owned.owner,)
        backoff = self._backoff

        def statement(c: Any, _ids: list[int], _tokens: list[str], at: list[int]) -> Awaitable[Any]:
            return c.fetch(  # type: ignore[no-any-return]
                sql,
                now,
                backoff.cap_seconds,
                backoff.base_seconds,
                _encode_rows([rows[n] for n in at]).decode(),
                *owner,
            )

        async def apply(conn: Any) -> list[AckResult]:
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

        async def requeue(conn: Any) -> int:
            rows = await conn.fetch(
                """
                UPDATE jobs
                SET status = 'pending', attempts = 0, available_at = $1, finished_at = NULL,
                    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                    lease_owner = NULL, started_at = NULL, updated_at = $1
                WHERE status = 'failed'
                  AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
                  AND ($3::text IS NULL OR run_id = $3)
                  AND id >= coalesce((SELECT first_id FROM runs WHERE run_id = $3), 0)
                  AND ($4::text IS NULL OR tenant_id = $4)
                RETURNING run_id
                """,
                now,
                None if job_ids is None else list(job_ids),
                run_id,
                tenant_id,
            )
            requeued = Counter(r[0] for r in rows)
            await _count(
                conn, now, {run_id: (0, -n, 0) for run_id, n in requeued.items()}, touch=True
            )
            if rows:
                await conn.execute("SELECT pg_notify($1, $2)", self._channel, self._origin)
            return len(rows)

        return await self._run(requeue)

    async def purge(self, older_than_seconds: float) -> int:
        """Delete jobs that finished more than ``older_than_seconds`` ago; return how many."""
        check_range("older_than_seconds", older_than_seconds, 0, math.inf)
        cutoff = self._clock.time() - older_than_seconds

        async def purge(conn: Any) -> int:
            rows = await conn.fetch(
                """
                DELETE FROM jobs WHERE finished_at <= $1 AND status IN ('done', 'failed')
                RETURNING run_id, status
                """,
                cutoff,
            )
            gone: dict[str, tuple[int, int, int]] = {}
            for run_id, status in rows:
                done, failed, total = gone.get(run_id, (0, 0, 0))
                gone[run_id] = (done - (status == "done"), failed - (status == "failed"), total - 1)
            await _count(conn, self._clock.time(), gone, touch=False, shard=_PURGE_SHARD)
            # Runs left with no job after their retention go too. An enqueue naming such a run
            # would recreate it while it is deleted: the table lock makes enqueues (which all
            # insert into `runs`) wait for this commit, and is taken only when there is a run
            # to delete.
            empty = (
                f"SELECT run_id FROM ({pg_schema.RUN_STATE}) s "
                "WHERE s.total = 0 AND s.finished_at <= $1"
            )
            if await conn.fetchval(f"SELECT EXISTS ({empty})", cutoff):
                await conn.execute("LOCK TABLE runs IN SHARE ROW EXCLUSIVE MODE")
                await conn.execute(
                    f"""
                    WITH gone AS ({empty}),
                    counts AS (DELETE FROM run_counts WHERE run_id IN (SELECT run_id FROM gone))
                    DELETE FROM runs WHERE run_id IN (SELECT run_id FROM gone)
                    """,
                    cutoff,
                )
            return len(rows)

        return await self._run(purge)

    async def claim_maintenance(
        self, task: str, interval_seconds: float, owner: str | None = None
    ) -> MaintenanceClaim:
        """Claim ``task``'s round if it is due; the winner does the round, the others skip it."""
        check_maintenance(task, interval_seconds, owner)
        now = self._clock.time()

        async def claim(conn: Any) -> MaintenanceClaim:
            # Invariant: one round of a task is claimed once. Of two processes claiming it at
            # once, the second waits for the first's row lock, then re-checks `due_at` against
            # the row the first committed (READ COMMITTED) and updates nothing.
            row = await conn.fetchrow(
                """
                UPDATE maintenance
                SET due_at = $2::float8 + $3::float8, rounds = rounds + 1, claimed_by = $4,
                    claimed_at = $2
                WHERE task = $1 AND due_at <= $2
                RETURNING rounds, due_at
                """,
                task,
                now,
                interval_seconds,
                owner,
            )
            if row is None:
                # A task's row is created by its first claim, which that claimer wins.
                row = await conn.fetchrow(
                    """
                    INSERT INTO maintenance (task, due_at, rounds, claimed_by, claimed_at)
                    VALUES ($1, $2::float8 + $3::float8, 1, $4, $2)
                    ON CONFLICT (task) DO NOTHING
                    RETURNING rounds, due_at
                    """,
                    task,
                    now,
                    interval_seconds,
                    owner,
                )
            if row is not None:
                return MaintenanceClaim(task=task, claimed=True, round=row[0], due_at=row[1])
            rounds, due_at = await conn.fetchrow(
                "SELECT rounds, due_at FROM maintenance WHERE task = $1", task
            )
            return MaintenanceClaim(task=task, claimed=False, round=rounds, due_at=due_at)

        # Each statement autocommits: a claim holds its row's lock for one statement only. A
        # claim retried after its connection died during the commit finds the round taken:
        # that round is skipped, never done twice.
        return await self._run(claim, atomic=False)

    # --- readers -------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job:
        """Return the job with this id, or raise JobNotFound."""

        async def get(conn: Any) -> Job:
            row = await conn.fetchrow(f"SELECT {COLUMNS} FROM jobs j WHERE id = $1", job_id)
            if row is None:
                raise JobNotFound(job_id)
            return job_from_row(row)

        return await self._run(get, atomic=False)

    async def stats(self) -> Stats:
        """Count jobs by status and measure the age of the oldest available job."""
        now = self._clock.time()

        async def stats(conn: Any) -> Stats:
            # The stored run counts (each run's base and count shards) and the leased jobs
            # (those in flight) counted through their partial index: no scan of every job.
            # The scheduled jobs and the earliest available one come from a loose index scan
            # of `jobs_claim (priority DESC, available_at, id) WHERE status = 'pending'`: a
            # max() seek per distinct priority, then per priority the range after `now` (the
            # scheduled jobs only) counted and the first entry up to `now` read, so the
            # backlog itself is never scanned. One statement: one snapshot.
            row = await conn.fetchrow(
                """
                WITH RECURSIVE levels(priority) AS (
                    SELECT max(priority) FROM jobs WHERE status = 'pending'
                    UNION ALL
                    SELECT (SELECT max(priority) FROM jobs
                            WHERE status = 'pending' AND priority < l.priority)
                    FROM levels l WHERE l.priority IS NOT NULL
                ),
                backlog AS (
                    SELECT coalesce(sum((SELECT count(*) FROM jobs WHERE status = 'pending'
                                         AND priority = l.priority AND available_at > $1)), 0)
                               AS scheduled,
                           min((SELECT min(available_at) FROM jobs WHERE status = 'pending'
                                AND priority = l.priority AND available_at <= $1)) AS oldest
                    FROM levels l WHERE l.priority IS NOT NULL
                )
                SELECT coalesce(sum(total), 0), coalesce(sum(done), 0), coalesce(sum(failed), 0),
                       (SELECT count(*) FROM jobs WHERE status = 'leased'),
                       (SELECT scheduled FROM backlog), (SELECT oldest FROM backlog)
                FROM (SELECT total, done, failed FROM runs
                      UNION ALL SELECT total, done, failed FROM run_counts) c
                """,
                now,
            )
            total, done, failed, leased, scheduled, oldest = row
            return Stats(
                pending=int(total - done - failed - leased),
                scheduled=int(scheduled),
                leased=int(leased),
                done=int(done),
                failed=int(failed),
                oldest_pending_age_seconds=None if oldest is None else max(0.0, now - oldest),
            )

        return await self._run(stats, atomic=False)

    async def run_summary(self, run_id: str) -> RunSummary:
        """Return the run's counts, metrics and status, or raise RunNotFound."""

        async def summary(conn: Any) -> RunSummary:
            row = await conn.fetchrow(
                f"SELECT * FROM ({pg_schema.RUN_STATE} WHERE r.run_id = $1) s", run_id
            )
            if row is None:
                raise RunNotFound(run_id)
            return summary_from_row(row)

        return await self._run(summary, atomic=False)

    async def list_runs(
        self, tenant_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[RunSummary]:
        """Return one page of run summaries, oldest first."""
        check_range("limit", limit, 1, MAX_PULL)
        after = parse_cursor(cursor)

        async def runs(conn: Any) -> Page[RunSummary]:
            rows = await conn.fetch(
                f"""
                {pg_schema.RUN_STATE}
                WHERE r.seq > $1 AND ($2::text IS NULL OR r.tenant_id = $2)
                ORDER BY r.seq LIMIT $3
                """,
                after,
                tenant_id,
                limit + 1,
            )
            more = len(rows) > limit
            return Page(
                items=[summary_from_row(row) for row in rows[:limit]],
                next_cursor=str(rows[limit - 1]["seq"]) if more else None,
            )

        return await self._run(runs, atomic=False)

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

        async def jobs(conn: Any) -> Page[Job]:
            rows = await conn.fetch(
                f"""
                SELECT {COLUMNS} FROM jobs j
                -- A run's jobs: by id from the run's first_id (no index on the jobs' run);
                -- a run that does not exist has none.
                WHERE id > CASE WHEN $3::text IS NULL THEN $1 ELSE greatest($1, coalesce(
                    (SELECT first_id - 1 FROM runs WHERE run_id = $3), {pg_schema.NO_ID})) END
                  AND ($2::text IS NULL OR status = $2)
                  AND ($3::text IS NULL OR run_id = $3) AND ($4::text IS NULL OR tenant_id = $4)
                ORDER BY id LIMIT $5
                """,
                after,
                status,
                run_id,
                tenant_id,
                limit + 1,
            )
            items = [job_from_row(row) for row in rows[:limit]]
            more = len(rows) > limit
            return Page(items=items, next_cursor=str(items[-1].id) if more else None)

        return await self._run(jobs, atomic=False)

    def _jitter(self) -> Iterator[float]:
        return jitter_factors(self._rng, self._backoff.jitter)


# (connection, job ids, tokens, their positions in the batch) -> the rows it changed.
Statement = Callable[[Any, list[int], list[str], list[int]], Awaitable[Any]]


async def _per_item(
    conn: Any,
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
    current: dict[int, Any] = {}
    if refused:
        rows = await conn.fetch(f"SELECT {COLUMNS} FROM jobs j WHERE id = ANY($1)", refused)
        current = {row[0]: row for row in rows}
    results: list[ItemResult] = []
    for n, (job_id, token) in enumerate(leases):
        job = outcome[n]
        if job is not None:
            results.append(ItemResult(job_id=job_id, ok=True, reason="ok", job=job))
        else:
            status = None if statuses is None else statuses[n]
            results.append(
                refusal(current.get(job_id), now, job_id, token, verb, status, owned=owned)
            )
    return results


async def _count(
    conn: Any,
    now: float,
    counts: dict[str, tuple[int, int, int]],
    *,
    touch: bool,
    shard: int | None = None,
) -> None:
    """Add (done, failed, total) to each run's counts (this connection's shard rows, or those of
    ``shard``): one statement for every run of the batch."""
    runs = sorted(run_id for run_id, n in counts.items() if any(n))
    if not runs:
        return
    await conn.execute(
        f"""
        WITH d AS (
            SELECT run_id, done, failed, total, NULL::jsonb AS metrics
            FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
                 AS d(run_id, done, failed, total)
        )
        {_ADD_COUNTS.format(touch="$6", shard=f"coalesce($7::int, {_SHARD})")}
        """,
        now,
        runs,
        [counts[r][0] for r in runs],
        [counts[r][1] for r in runs],
        [counts[r][2] for r in runs],
        touch,
        shard,
    )


async def _check_tenants(conn: Any, pairs: set[tuple[str, str]]) -> None:
    """Raise InvalidArgument unless each (run, tenant) names the tenant that holds the run."""
    runs = sorted({run_id for run_id, _ in pairs})
    owners = dict(
        await conn.fetch("SELECT run_id, tenant_id FROM runs WHERE run_id = ANY($1)", runs)
    )
    for run_id, tenant_id in sorted(pairs):
        if owners.get(run_id) != tenant_id:
            owner = owners.get(run_id) or next(t for r, t in sorted(pairs) if r == run_id)
            other = next(t for r, t in sorted(pairs) if r == run_id and t != owner)
            raise InvalidArgument(
                f"run {run_id!r} belongs to tenant {owner!r}, not {other!r}; a run has one "
                "tenant. Use a new run id for this tenant"
            )


# mypy checks the class against the contract here, verb by verb.
_contract: type[OwnedQueue] = PostgresQueue
