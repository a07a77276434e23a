"""``PostgresQueue``: the durable job queue's async API over PostgreSQL, for many machines.

The same contract as ``SQLiteQueue`` (operations, statuses, fencing, per-item results, retries,
idempotency, run state, errors). The driver is asyncpg, which runs on asyncio only: on asyncio
the queue uses the caller's loop; on trio it runs its own asyncio loop on a helper thread and
hands each call over (ARCHITECTURE.md has the measurements that chose this).

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
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import sniffio
import structlog

from actors.errors import (
    InvalidArgument,
    JobNotFound,
    QueueClosed,
    QueueError,
    RunNotFound,
    StorageError,
)
from actors.queue import postgres_schema as pg_schema
from actors.queue import store
from actors.queue.model import (
    MAX_PULL,
    Ack,
    AckResult,
    ItemResult,
    Job,
    JobStatus,
    LeaseResult,
    NewJob,
    Page,
    RunSummary,
    Stats,
)
from actors.queue.sqlite import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_ATTEMPTS,
    SQLiteQueue,
    _check_batch,
    _check_delay,
    _check_listing,
    _check_optional_text,
    _check_range,
    _check_visibility,
)
from actors.queue.store import Backoff, encode_json
from supervisors.clock import Clock, SystemClock

__all__ = ["PostgresQueue"]

T = TypeVar("T")
log = structlog.get_logger("actors.queue.postgres")

# The job's columns in `store.COLUMNS` order, qualified: claims join the jobs table to a CTE.
COLUMNS = ", ".join(f"j.{c.strip()}" for c in store.COLUMNS.split(","))
# A lease is live while the job is leased under this token and has not run out (LIVE_LEASE).
LIVE = "j.status = 'leased' AND j.lease_token = a.token AND j.lease_expires_at > $1"

_N_COLUMNS = len(store.COLUMNS.split(","))

# A claim is one statement: lock up to $2 visible jobs in `jobs_claim`'s order, skipping every
# row another transaction holds, and lease them. Under READ COMMITTED a row locked by another
# claimer is skipped, never handed out twice. (A subquery that does not lock its rows lets two
# claimers pick the same pending row, and the outer UPDATE, re-checking only `id` after the
# first commits, leases it again: goqite's Postgres flavour.) $1 now, $3 expiry, $4 worker.
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
        lease_token = replace(gen_random_uuid()::text, '-', ''),
        lease_expires_at = $3, worker_id = $4, updated_at = $1
    FROM claim WHERE j.id = claim.id
    RETURNING {COLUMNS}
"""

# Added to the enqueue statement when it runs without a transaction: a batch that would break
# "a run has one tenant" (a run of the batch with two tenants, or a run another tenant holds,
# which `counted` then lacks) fails the statement with this message, so nothing is written.
_TENANT_GUARD = "actors: run tenant mismatch"
_GUARD = f"""
    , CASE WHEN EXISTS (SELECT 1 FROM new GROUP BY run_id HAVING count(DISTINCT tenant_id) > 1)
             OR EXISTS (SELECT run_id FROM new EXCEPT SELECT run_id FROM counted)
           THEN (new.run_id || '{_TENANT_GUARD}')::int END
"""

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


async def _keep_session(_conn: Any) -> None:
    """The pool's reset on release: nothing to undo (see ``PostgresQueue._start``)."""


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


class PostgresQueue:
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
        self._listener: asyncio.Task[None] | None = None
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
        _check_range("max_attempts", max_attempts, 1, MAX_ATTEMPTS)
        _check_range("max_payload_bytes", max_payload_bytes, 1, 64 * 1024 * 1024)
        _check_range("pool_size", pool_size, 1, 1000)
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
        # No reset query on release (asyncpg's default sends one: a round trip per call): the
        # queue leaves no session state on a pooled connection (no LISTEN, SET, advisory lock
        # or cursor), and asyncpg still rolls back a transaction left open.
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self._pool_size, reset=_keep_session, **kwargs
        )
        self._listener = asyncio.get_running_loop().create_task(self._listen_forever())

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
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 10)

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
                async with self._pool.acquire() as conn:
                    try:
                        if not atomic:
                            return await work(conn)
                        async with conn.transaction():
                            return await work(conn)
                    except _TRANSIENT:
                        conn.terminate()  # never back into the pool half-broken
                        raise
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

    async def _listen_forever(self) -> None:
        # Enqueues by other processes wake our subscribers; polling covers any gap while the
        # listening connection is down.
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
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
            # Jobs may have arrived while nobody listened: let subscribers look now.
            self._bridge.to_caller(self._notify_enqueued)

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

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._on_enqueue.remove(callback)

        return unsubscribe

    def _notify_enqueued(self, *_: object) -> None:
        for callback in list(self._on_enqueue):
            try:
                callback()
            except Exception:  # a subscriber's bug must not break the caller's enqueue
                log.exception("queue.on_enqueue_failed", callback=repr(callback))

    # --- producers -----------------------------------------------------------------------

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Add every job in one transaction: all of them are committed, or none."""
        _check_batch("jobs", jobs)
        for new in jobs:
            self._check_new_job(new)
        if not jobs:
            return []
        now = self._clock.time()

        async def enqueue(conn: Any) -> list[Job]:
            # One autocommitted statement (no BEGIN, no COMMIT: two round trips fewer, and the
            # run row is locked for one statement only). A run claimed by another tenant makes
            # the statement fail, so it changes nothing; the transaction below then says why.
            try:
                return await self._enqueue(conn, now, jobs, guarded=True)
            except asyncpg.DataError as exc:
                if _TENANT_GUARD not in str(exc):
                    raise
            async with conn.transaction():
                return await self._enqueue(conn, now, jobs, guarded=False)

        return await self._run(enqueue, atomic=False, on_done=self._notify_enqueued)

    async def _enqueue(
        self, conn: Any, now: float, jobs: Sequence[NewJob], *, guarded: bool
    ) -> list[Job]:
        # One statement for the batch: insert the jobs, create or touch their runs and count
        # the new jobs (a new job reopens a finished run; run rows locked in run_id order), and
        # NOTIFY other processes. Identity values are drawn in input order, so the inserted rows
        # sorted by id line up with the inputs that were not idempotent repeats.
        rows = await conn.fetch(
            f"""
            WITH new AS (
                INSERT INTO jobs AS j (run_id, tenant_id, r2_key, payload, max_attempts,
                                       priority, available_at, idempotency_key, created_at,
                                       updated_at)
                SELECT run_id, tenant_id, r2_key, payload, max_attempts, priority, $1 + delay,
                       idempotency_key, $1, $1
                FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                            $7::int[], $8::float8[], $9::text[])
                     WITH ORDINALITY AS a(run_id, tenant_id, r2_key, payload, max_attempts,
                                          priority, delay, idempotency_key, n)
                ORDER BY n
                ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL
                DO NOTHING
                RETURNING {COLUMNS}
            ),
            counted AS (
                INSERT INTO runs AS r (run_id, tenant_id, created_at, updated_at, total)
                SELECT run_id, min(tenant_id), $1, $1, count(*) FROM new
                GROUP BY run_id ORDER BY run_id
                ON CONFLICT (run_id) DO UPDATE
                SET total = r.total + excluded.total, updated_at = excluded.updated_at,
                    finished_at = NULL
                WHERE r.tenant_id = excluded.tenant_id
                RETURNING run_id
            ),
            notified AS (SELECT pg_notify($10, $11))
            SELECT new.*, (SELECT array_agg(run_id) FROM counted),
                   (SELECT count(*) FROM notified){_GUARD if guarded else ""}
            FROM new
            """,
            now,
            [j.run_id for j in jobs],
            [j.tenant_id for j in jobs],
            [j.r2_key for j in jobs],
            [encode_json(j.payload) for j in jobs],
            [j.max_attempts or self._max_attempts for j in jobs],
            [j.priority for j in jobs],
            [float(j.delay_seconds) for j in jobs],
            [j.idempotency_key for j in jobs],
            self._channel,
            self._origin,
        )
        inserted = sorted((store._job(r) for r in rows), key=lambda job: job.id)
        taken = {(job.tenant_id, job.idempotency_key) for job in inserted if job.idempotency_key}
        fresh = iter(inserted)
        out: list[Job | None] = []
        seen: set[tuple[str, str]] = set()
        for new in jobs:
            key = (new.tenant_id, new.idempotency_key or "")
            if new.idempotency_key is None or (key in taken and key not in seen):
                out.append(next(fresh))
                seen.add(key)
            else:
                out.append(None)  # the key is taken: return the job that holds it
        missing = [
            (n.tenant_id, n.idempotency_key) for n, j in zip(jobs, out, strict=True) if j is None
        ]
        if missing:
            existing = {
                (job.tenant_id, job.idempotency_key): job
                for job in map(
                    store._job,
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
        if inserted:
            # Invariant: a run belongs to exactly one tenant. Raising rolls the batch back.
            tenants = {job.run_id: job.tenant_id for job in inserted}
            counted = set(rows[0][_N_COLUMNS] or ())  # the runs the statement could count
            mixed = [job for job in inserted if job.tenant_id != tenants[job.run_id]]
            refused = sorted(set(tenants) - counted)
            if mixed or refused:
                run_id = mixed[0].run_id if mixed else refused[0]
                owner = await conn.fetchval("SELECT tenant_id FROM runs WHERE run_id = $1", run_id)
                other = next(
                    j.tenant_id for j in inserted if j.run_id == run_id and j.tenant_id != owner
                )
                raise InvalidArgument(
                    f"run {run_id!r} belongs to tenant {owner!r}, not {other!r}; a run has one "
                    "tenant. Use a new run id for this tenant"
                )
        return [job for job in out if job is not None]

    # --- consumers -----------------------------------------------------------------------

    async def pull(
        self, max: int = 10, visibility_seconds: float = 60, worker_id: str | None = None
    ) -> list[Job]:
        """Lease up to ``max`` visible jobs for ``visibility_seconds``, highest priority first."""
        _check_range("max", max, 1, MAX_PULL)
        _check_visibility(visibility_seconds)
        _check_optional_text("worker_id", worker_id)
        now = self._clock.time()

        async def claim(conn: Any) -> list[Job]:
            # First the claim alone, which leases nothing while any lease has expired: when it
            # leases something, a reap first would have found nothing, so this is the same
            # pull in one round trip. Otherwise reap (it commits on its own) and claim again.
            rows = await conn.fetch(FIRST_CLAIM, now, max, now + visibility_seconds, worker_id)
            if not rows:
                await self._reap(conn, now)
                rows = await conn.fetch(CLAIM, now, max, now + visibility_seconds, worker_id)
            jobs = [store._job(row) for row in rows]
            jobs.sort(key=lambda j: (-j.priority, j.available_at, j.id))
            return jobs

        # Not atomic: the reap commits on its own (it is complete by itself), then the claim.
        return await self._run(claim, atomic=False)

    async def _reap(self, conn: Any, now: float) -> int:
        # SKIP LOCKED: two workers reaping at once split the expired leases between them.
        rows = await conn.fetch(
            """
            WITH expired AS (
                SELECT id FROM jobs WHERE status = 'leased' AND lease_expires_at <= $1
                FOR UPDATE SKIP LOCKED
            )
            UPDATE jobs AS j
            SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END,
                last_error = CASE WHEN attempts >= max_attempts
                    THEN 'lease expired on the last attempt (' || attempts || ' of '
                         || max_attempts || ') held by worker ' || coalesce(worker_id, '?')
                    ELSE last_error END,
                finished_at = CASE WHEN attempts >= max_attempts THEN $1 END,
                lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, updated_at = $1
            FROM expired WHERE j.id = expired.id
            RETURNING j.run_id, j.status
            """,
            now,
        )
        failed = Counter(r[0] for r in rows if r[1] == "failed")
        await _count(conn, now, {run_id: (0, n, 0) for run_id, n in failed.items()})
        return len(rows)

    async def renew_many(
        self, leases: Sequence[tuple[int, str]], visibility_seconds: float
    ) -> list[LeaseResult]:
        """Extend every live lease in one transaction; stale ones are refused item by item."""
        _check_batch("leases", leases)
        _check_visibility(visibility_seconds)
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

    async def release_many(
        self, leases: Sequence[tuple[int, str]], delay_seconds: float = 0
    ) -> list[LeaseResult]:
        """Give back every live lease in one transaction; stale ones are refused item by item."""
        _check_batch("leases", leases)
        _check_delay(delay_seconds)
        now = self._clock.time()
        sql = f"""
            UPDATE jobs AS j
            SET status = 'pending', attempts = j.attempts - 1, available_at = $1 + $2,
                lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, updated_at = $1
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
        _check_batch("acks", acks)
        for a in acks:
            self._check_ack(a)
        return await self._acks(acks, fenced=True)

    async def ack_ids(
        self, ids: Sequence[int], status: Literal["done", "failed"], *, error: str | None = None
    ) -> list[AckResult]:
        """Record an outcome for leased jobs by id alone (the seed's unfenced form)."""
        _check_batch("ids", ids)
        acks = [Ack(job_id=i, lease_token="", status=status, error=error) for i in ids]
        for a in acks:
            self._check_ack(a)
        return await self._acks(acks, fenced=False)

    async def _acks(self, acks: Sequence[Ack], *, fenced: bool) -> list[AckResult]:
        if not acks:
            return []
        now = self._clock.time()
        factors = list(itertools.islice(self._jitter(), len(acks)))  # type: ignore[misc]  # shared with SQLiteQueue
        backoff = self._backoff
        # Terminal when permanent or out of attempts; else pending again after a backoff.
        terminal = "(a.permanent OR j.attempts >= j.max_attempts)"
        # One statement, so one round trip without BEGIN/COMMIT: record the outcomes, then add
        # each run's finished jobs and metrics to it (its row locked in run_id order first).
        sql = f"""
            WITH a AS (
                SELECT * FROM unnest($5::bigint[], $6::text[], $7::text[], $8::text[],
                                     $9::text[], $10::bool[], $11::float8[], $12::jsonb[])
                     AS a(id, token, status, result, error, permanent, factor, metrics)
            ),
            acked AS (
            UPDATE jobs AS j
            SET status = CASE WHEN a.status = 'done' THEN 'done'
                              WHEN {terminal} THEN 'failed' ELSE 'pending' END,
                result = CASE WHEN a.status = 'done' THEN a.result ELSE j.result END,
                available_at = CASE WHEN a.status = 'done' OR {terminal} THEN j.available_at
                    ELSE $1 + least($2, $3 * power(2, least(j.attempts - 1, 40)))
                              * a.factor END,
                finished_at = CASE WHEN a.status = 'done' OR {terminal} THEN $1 END,
                lease_token = CASE WHEN a.status = 'done' OR {terminal} THEN j.lease_token END,
                worker_id = CASE WHEN a.status = 'done' OR {terminal} THEN j.worker_id END,
                last_error = CASE WHEN a.status = 'done' THEN j.last_error ELSE a.error END,
                lease_expires_at = NULL, updated_at = $1
            FROM a
            WHERE j.id = a.id AND (({LIVE}) OR (NOT $4 AND j.status = 'leased'))
            RETURNING {COLUMNS}, a.metrics AS added
            ),
            d AS (
                SELECT g.run_id,
                       count(*) FILTER (WHERE g.status = 'done') AS done,
                       count(*) FILTER (WHERE g.status = 'failed') AS failed,
                       0::bigint AS total,
                       (SELECT jsonb_object_agg(s.k, s.v) FROM (
                            SELECT e.key AS k, sum(e.value::float8) AS v
                            FROM acked x CROSS JOIN LATERAL jsonb_each_text(x.added) AS e
                            WHERE x.run_id = g.run_id GROUP BY e.key) s) AS metrics
                FROM acked g GROUP BY g.run_id
            ),
            locked AS (
                SELECT run_id FROM runs WHERE run_id IN (SELECT run_id FROM d)
                ORDER BY run_id FOR UPDATE
            ),
            counted AS (
                UPDATE runs AS r SET {_COUNT_SET.format(now="$1", touch="true")}
                FROM d WHERE r.run_id = d.run_id AND (SELECT count(*) FROM locked) > 0
                RETURNING r.run_id
            )
            SELECT acked.*, (SELECT count(*) FROM counted) FROM acked
        """

        async def apply(conn: Any) -> list[AckResult]:
            def statement(
                c: Any, ids: list[int], tokens: list[str], at: list[int]
            ) -> Awaitable[Any]:
                items = [acks[n] for n in at]
                return c.fetch(  # type: ignore[no-any-return]
                    sql,
                    now,
                    backoff.cap_seconds,
                    backoff.base_seconds,
                    fenced,
                    ids,
                    tokens,
                    [a.status for a in items],
                    [encode_json(a.result) if a.status == "done" else None for a in items],
                    [a.error for a in items],
                    [a.permanent for a in items],
                    [factors[n] for n in at],
                    [
                        None if not a.run_metrics else store._encode(a.run_metrics).decode()
                        for a in items
                    ],
                )

            results = await _per_item(
                conn,
                now,
                [(a.job_id, a.lease_token) for a in acks],
                "acked",
                statement,
                statuses=[a.status for a in acks],
            )
            return results

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
            _check_batch("job_ids", job_ids)
        now = self._clock.time()

        async def requeue(conn: Any) -> int:
            rows = await conn.fetch(
                """
                UPDATE jobs
                SET status = 'pending', attempts = 0, available_at = $1, finished_at = NULL,
                    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                    updated_at = $1
                WHERE status = 'failed'
                  AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
                  AND ($3::text IS NULL OR run_id = $3)
                  AND ($4::text IS NULL OR tenant_id = $4)
                RETURNING run_id
                """,
                now,
                None if job_ids is None else list(job_ids),
                run_id,
                tenant_id,
            )
            requeued = Counter(r[0] for r in rows)
            await _count(conn, now, {run_id: (0, -n, 0) for run_id, n in requeued.items()})
            if rows:
                await conn.execute("SELECT pg_notify($1, $2)", self._channel, self._origin)
            return len(rows)

        return await self._run(requeue)

    async def purge(self, older_than_seconds: float) -> int:
        """Delete jobs that finished more than ``older_than_seconds`` ago; return how many."""
        _check_range("older_than_seconds", older_than_seconds, 0, math.inf)
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
            await _count(conn, self._clock.time(), gone, touch=False)
            await conn.execute("DELETE FROM runs WHERE finished_at <= $1 AND total = 0", cutoff)
            return len(rows)

        return await self._run(purge)

    # --- readers -------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job:
        """Return the job with this id, or raise JobNotFound."""

        async def get(conn: Any) -> Job:
            row = await conn.fetchrow(f"SELECT {COLUMNS} FROM jobs j WHERE id = $1", job_id)
            if row is None:
                raise JobNotFound(job_id)
            return store._job(row)

        return await self._run(get, atomic=False)

    async def stats(self) -> Stats:
        """Count jobs by status and measure the age of the oldest pending job."""
        now = self._clock.time()

        async def stats(conn: Any) -> Stats:
            # The stored run counts, one row per run, and the leased jobs (those in flight)
            # counted through their partial index: no scan of every job.
            row = await conn.fetchrow(
                """
                SELECT coalesce(sum(total), 0), coalesce(sum(done), 0), coalesce(sum(failed), 0),
                       (SELECT count(*) FROM jobs WHERE status = 'leased'),
                       (SELECT min(created_at) FROM jobs WHERE status = 'pending')
                FROM runs
                """
            )
            total, done, failed, leased, oldest = row
            return Stats(
                pending=int(total - done - failed - leased),
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
                f"SELECT {_RUN_COLUMNS} FROM {_RUNS} WHERE r.run_id = $1", run_id
            )
            if row is None:
                raise RunNotFound(run_id)
            return store._summary(row)

        return await self._run(summary, atomic=False)

    async def list_runs(
        self, tenant_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[RunSummary]:
        """Return one page of run summaries, oldest first."""
        _check_range("limit", limit, 1, MAX_PULL)
        after = store._cursor(cursor)

        async def runs(conn: Any) -> Page[RunSummary]:
            rows = await conn.fetch(
                f"""
                SELECT {_RUN_COLUMNS}, r.seq FROM {_RUNS}
                WHERE r.seq > $1 AND ($2::text IS NULL OR r.tenant_id = $2)
                ORDER BY r.seq LIMIT $3
                """,
                after,
                tenant_id,
                limit + 1,
            )
            more = len(rows) > limit
            return Page(
                items=[store._summary(row) for row in rows[:limit]],
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
        _check_listing(status, limit)
        after = store._cursor(cursor)

        async def jobs(conn: Any) -> Page[Job]:
            rows = await conn.fetch(
                f"""
                SELECT {COLUMNS} FROM jobs j
                WHERE id > $1 AND ($2::text IS NULL OR status = $2)
                  AND ($3::text IS NULL OR run_id = $3) AND ($4::text IS NULL OR tenant_id = $4)
                ORDER BY id LIMIT $5
                """,
                after,
                status,
                run_id,
                tenant_id,
                limit + 1,
            )
            items = [store._job(row) for row in rows[:limit]]
            more = len(rows) > limit
            return Page(items=items, next_cursor=str(items[-1].id) if more else None)

        return await self._run(jobs, atomic=False)

    # --- shared with SQLiteQueue -----------------------------------------------------------
    # The one-item verbs call this class's batch verbs; the checks read only
    # _max_payload_bytes; the jitter reads _rng and _backoff. One definition for both backends.

    enqueue = SQLiteQueue.enqueue
    renew = SQLiteQueue.renew
    release = SQLiteQueue.release
    ack = SQLiteQueue.ack
    _jitter = SQLiteQueue._jitter

    def _check_new_job(self, new: NewJob) -> None:
        SQLiteQueue._check_new_job(self, new)  # type: ignore[arg-type]

    def _check_ack(self, a: Ack) -> None:
        SQLiteQueue._check_ack(self, a)  # type: ignore[arg-type]

    def _check_json(self, name: str, value: Any) -> None:
        SQLiteQueue._check_json(self, name, value)  # type: ignore[arg-type]


# A run's stored counts (kept by the verbs) with its leased jobs counted when read, in
# `store.RUN_COLUMNS`' order, so `store._summary` builds the summary for both backends.
_RUN_COLUMNS = """
    r.run_id, r.tenant_id, r.created_at, r.updated_at, r.finished_at, r.metrics,
    r.total - r.done - r.failed - l.leased, l.leased, r.done, r.failed
"""
_RUNS = """
    runs r CROSS JOIN LATERAL (
        SELECT count(*) AS leased FROM jobs WHERE run_id = r.run_id AND status = 'leased'
    ) l
"""


# (connection, job ids, tokens, their positions in the batch) -> the rows it changed.
Statement = Callable[[Any, list[int], list[str], list[int]], Awaitable[Any]]


async def _per_item(
    conn: Any,
    now: float,
    leases: Sequence[tuple[int, str]],
    verb: str,
    statement: Statement,
    statuses: Sequence[str] | None = None,
) -> list[ItemResult]:
    """Apply ``statement`` to every (id, token) at once, then explain each item it did not change.

    A batch that names one job twice goes item by item, so the first item wins as in SQLite.
    """
    ids = [job_id for job_id, _ in leases]
    tokens = [token for _, token in leases]
    if len(set(ids)) == len(ids):
        rows = await statement(conn, ids, tokens, list(range(len(ids))))
        applied = {job.id: job for job in map(store._job, rows)}
        outcome = [applied.get(i) for i in ids]
    else:
        outcome = []
        for n, (i, token) in enumerate(leases):
            rows = await statement(conn, [i], [token], [n])
            outcome.append(store._job(rows[0]) if rows else None)
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
            results.append(_refusal(current.get(job_id), job_id, token, now, verb, status))
    return results


def _refusal(
    row: Sequence[Any] | None, job_id: int, token: str, now: float, verb: str, ack_status: Any
) -> ItemResult:
    """Say why a fenced call changed nothing, in `store._refused`'s words (one source of them)."""
    return store._refused(_OneRow(row), now, job_id, token, verb, ack_status)  # type: ignore[arg-type]


class _OneRow:
    """Stands in for the SQLite connection `store._refused` reads the job from."""

    def __init__(self, row: Sequence[Any] | None) -> None:
        self._row = row

    def execute(self, *_: object) -> _OneRow:
        return self

    def fetchone(self) -> Sequence[Any] | None:
        return self._row


# Adds a batch's counts (d.done, d.failed, d.total) and metrics (d.metrics, jsonb or NULL) to
# each run `r`, and closes the run when its last job finishes (reopens it when one comes back).
_COUNT_SET = """
    done = r.done + d.done, failed = r.failed + d.failed, total = r.total + d.total,
    metrics = CASE WHEN d.metrics IS NULL THEN r.metrics ELSE (
        SELECT jsonb_object_agg(k, coalesce((r.metrics::jsonb ->> k)::float8, 0)
                                   + coalesce((d.metrics ->> k)::float8, 0))::text
        FROM jsonb_object_keys(r.metrics::jsonb || d.metrics) AS k) END,
    finished_at = CASE
        WHEN r.done + d.done + r.failed + d.failed < r.total + d.total THEN NULL
        WHEN r.finished_at IS NULL AND {touch} THEN {now} ELSE r.finished_at END,
    updated_at = CASE WHEN {touch} AND (d.metrics IS NOT NULL OR (r.finished_at IS NULL
        AND r.done + d.done + r.failed + d.failed = r.total + d.total)
        OR d.failed < 0) THEN {now} ELSE r.updated_at END
"""


async def _count(
    conn: Any,
    now: float,
    counts: dict[str, tuple[int, int, int]],
    metrics: dict[str, dict[str, float]] | None = None,
    *,
    touch: bool = True,
) -> None:
    """Add (done, failed, total) to each run's stored counts and ``metrics`` to its metrics, and
    close (or reopen) it: one statement for every run of the batch."""
    metrics = metrics or {}
    runs = sorted(set(counts) | set(metrics))
    if not runs:
        return
    if len(runs) > 1:
        # Run rows are locked in run_id order everywhere: two batches cannot deadlock.
        await conn.execute(
            "SELECT 1 FROM runs WHERE run_id = ANY($1) ORDER BY run_id FOR UPDATE", runs
        )
    none = (0, 0, 0)
    # Invariant: runs.finished_at is set exactly while none of the run's jobs is unfinished.
    # The row is locked by this statement until the commit, so of two transactions finishing a
    # run's last two jobs the second waits for the first, sees its counts, and closes the run.
    await conn.execute(
        f"""
        UPDATE runs AS r SET {_COUNT_SET.format(now="$1", touch="$2")}
        FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::jsonb[])
             AS d(run_id, done, failed, total, metrics)
        WHERE r.run_id = d.run_id
        """,
        now,
        touch,
        runs,
        [counts.get(r, none)[0] for r in runs],
        [counts.get(r, none)[1] for r in runs],
        [counts.get(r, none)[2] for r in runs],
        [store._encode(metrics[r]).decode() if r in metrics else None for r in runs],
    )
