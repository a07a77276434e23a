"""The database file: connection pragmas (set here only) and versioned schema migrations."""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path
from typing import Literal

from actors.errors import (
    DiskFull,
    InvalidArgument,
    MigrationRefused,
    SchemaTooNew,
    StorageError,
)
from actors.queue._migrations import Migration

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Durability",
    "Migration",
    "connect",
    "current_version",
    "migrate_down",
    "migrate_up",
    "open_existing",
    "require_file",
    "require_queue_file",
]

Durability = Literal["normal", "full"]


# The jobs table's indexes (migration 1; rebuilt by migration 4 with the table).
_JOBS_INDEXES = (
    # Matches pull's ORDER BY, so a claim reads the first `max` entries of one range.
    "CREATE INDEX jobs_claim ON jobs (status, priority DESC, available_at)",
    # Only live leases are indexed: reaping reads the expired ones and nothing else.
    """
    CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at)
    WHERE status = 'leased'
    """,
    # Invariant: one idempotency key names at most one job within a tenant.
    """
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL
    """,
    "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL",
)

# The triggers that keep each run's stored counts (migration 3; rebuilt by migration 4).
_COUNT_TRIGGERS = (
    """
    CREATE TRIGGER jobs_status_counts AFTER UPDATE OF status ON jobs
    WHEN OLD.status != NEW.status
    BEGIN
        UPDATE runs SET
            pending = pending + (NEW.status = 'pending') - (OLD.status = 'pending'),
            leased = leased + (NEW.status = 'leased') - (OLD.status = 'leased'),
            done = done + (NEW.status = 'done') - (OLD.status = 'done'),
            failed = failed + (NEW.status = 'failed') - (OLD.status = 'failed')
        WHERE run_id = NEW.run_id;
    END
    """,
    """
    CREATE TRIGGER jobs_delete_counts AFTER DELETE ON jobs
    BEGIN
        UPDATE runs SET
            pending = pending - (OLD.status = 'pending'),
            leased = leased - (OLD.status = 'leased'),
            done = done - (OLD.status = 'done'),
            failed = failed - (OLD.status = 'failed')
        WHERE run_id = OLD.run_id;
    END
    """,
)

# The columns of jobs up to version 3, in table order (what migration 4 copies either way).
_V3_COLUMNS = (
    "id, run_id, tenant_id, r2_key, payload, status, attempts, max_attempts, priority, "
    "available_at, lease_token, lease_expires_at, worker_id, last_error, result, "
    "idempotency_key, created_at, updated_at, finished_at"
)


def _jobs_table(name: str, *, autoincrement: bool) -> str:
    """The jobs table as of version 4 (``autoincrement``), else as of versions 1 to 3."""
    v4 = """,
        lease_owner      TEXT,
        started_at       REAL,
        cross_tenant_key INTEGER NOT NULL DEFAULT 0,
        timeout_seconds  REAL"""
    return f"""
    CREATE TABLE {name} (
        id               INTEGER PRIMARY KEY{" AUTOINCREMENT" if autoincrement else ""},
        run_id           TEXT    NOT NULL,
        tenant_id        TEXT    NOT NULL,
        r2_key           TEXT    NOT NULL,
        payload          TEXT,
        status           TEXT    NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'leased', 'done', 'failed')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL,
        priority         INTEGER NOT NULL DEFAULT 0,
        available_at     REAL    NOT NULL,
        lease_token      TEXT,
        lease_expires_at REAL,
        worker_id        TEXT,
        last_error       TEXT,
        result           TEXT,
        idempotency_key  TEXT,
        created_at       REAL    NOT NULL,
        updated_at       REAL    NOT NULL,
        finished_at      REAL{v4 if autoincrement else ""}
    )
    """


# The columns of jobs as of version 4 (what migration 6 copies either way).
_V4_COLUMNS = _V3_COLUMNS + ", lease_owner, started_at, cross_tenant_key, timeout_seconds"


def _jobs_table_v6(name: str) -> str:
    """The jobs table as of version 6: the status `cancelled` and `cancel_requested_at`."""
    table = _jobs_table(name, autoincrement=True)
    widened = table.replace(
        "CHECK (status IN ('pending', 'leased', 'done', 'failed'))",
        "CHECK (status IN ('pending', 'leased', 'done', 'failed', 'cancelled'))",
    ).replace(
        "timeout_seconds  REAL\n",
        "timeout_seconds  REAL,\n        cancel_requested_at REAL\n",
    )
    assert "'cancelled'" in widened and "cancel_requested_at" in widened, widened
    return widened


# migration 3's count triggers with the `cancelled` count (migration 6).
_COUNT_TRIGGERS_V6 = tuple(
    trigger.replace(
        "failed = failed + (NEW.status = 'failed') - (OLD.status = 'failed')",
        "failed = failed + (NEW.status = 'failed') - (OLD.status = 'failed'),\n            "
        "cancelled = cancelled + (NEW.status = 'cancelled') - (OLD.status = 'cancelled')",
    ).replace(
        "failed = failed - (OLD.status = 'failed')",
        "failed = failed - (OLD.status = 'failed'),\n"
        "            cancelled = cancelled - (OLD.status = 'cancelled')",
    )
    for trigger in _COUNT_TRIGGERS
)
assert all("cancelled" in trigger for trigger in _COUNT_TRIGGERS_V6)

# The status trigger of migration 11: it also closes the run (`finished_at`, `updated_at` as
# the job's `updated_at`, which every verb sets to its `now`) when its last unfinished job
# finishes, the verbs' own statement per run once. SET expressions read the row as it was.
_STATUS_TRIGGER_V11 = """
    CREATE TRIGGER jobs_status_counts AFTER UPDATE OF status ON jobs
    WHEN OLD.status != NEW.status
    BEGIN
        UPDATE runs SET
            pending = pending + (NEW.status = 'pending') - (OLD.status = 'pending'),
            leased = leased + (NEW.status = 'leased') - (OLD.status = 'leased'),
            done = done + (NEW.status = 'done') - (OLD.status = 'done'),
            failed = failed + (NEW.status = 'failed') - (OLD.status = 'failed'),
            cancelled = cancelled + (NEW.status = 'cancelled') - (OLD.status = 'cancelled'),
            finished_at = CASE WHEN finished_at IS NULL
                AND pending + (NEW.status = 'pending') - (OLD.status = 'pending')
                    + leased + (NEW.status = 'leased') - (OLD.status = 'leased') = 0
                THEN NEW.updated_at ELSE finished_at END,
            updated_at = CASE WHEN finished_at IS NULL
                AND pending + (NEW.status = 'pending') - (OLD.status = 'pending')
                    + leased + (NEW.status = 'leased') - (OLD.status = 'leased') = 0
                THEN NEW.updated_at ELSE updated_at END
        WHERE run_id = NEW.run_id;
    END
"""
# Every run's counts from its jobs (migrations 3 and 11).
_RECOUNT = """
    UPDATE runs SET
        pending = (SELECT count(*) FROM jobs j WHERE j.run_id = runs.run_id
                   AND j.status = 'pending'),
        leased = (SELECT count(*) FROM jobs j WHERE j.run_id = runs.run_id
                  AND j.status = 'leased'),
        done = (SELECT count(*) FROM jobs j WHERE j.run_id = runs.run_id AND j.status = 'done'),
        failed = (SELECT count(*) FROM jobs j WHERE j.run_id = runs.run_id
                  AND j.status = 'failed'),
        cancelled = (SELECT count(*) FROM jobs j WHERE j.run_id = runs.run_id
                     AND j.status = 'cancelled')
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="jobs",
        up=(
            _jobs_table("jobs", autoincrement=False),
            *_JOBS_INDEXES,
        ),
        down=("DROP TABLE jobs",),
        drops=("jobs",),
    ),
    Migration(
        version=2,
        name="runs",
        up=(
            """
            CREATE TABLE runs (
                run_id      TEXT PRIMARY KEY,
                tenant_id   TEXT NOT NULL,
                created_at  REAL NOT NULL,
                updated_at  REAL NOT NULL,
                finished_at REAL,
                metrics     TEXT NOT NULL DEFAULT '{}'
            )
            """,
            # Per-run counts by status come from this index alone (a covering index scan).
            "CREATE INDEX jobs_run ON jobs (run_id, status)",
            # A file from version 1 gets one run per run_id already in its jobs table.
            """
            INSERT INTO runs (run_id, tenant_id, created_at, updated_at, finished_at)
            SELECT run_id, min(tenant_id), min(created_at), max(updated_at),
                   CASE WHEN sum(status IN ('pending', 'leased')) = 0 THEN max(finished_at) END
            FROM jobs GROUP BY run_id
            """,
        ),
        down=("DROP INDEX jobs_run", "DROP TABLE runs"),
        drops=("runs",),
    ),
    Migration(
        version=3,
        name="run_counts",
        up=(
            # Counting a run's jobs by status costs O(jobs in the run), too much for a run room
            # that reloads after every ack batch (docs/benchmarks.md, Queue). The counts are stored:
            # `enqueue` adds the new pending jobs, and these triggers follow every status
            # change and deletion inside the same transaction, so they always agree with the
            # jobs table.
            "ALTER TABLE runs ADD COLUMN pending INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE runs ADD COLUMN leased INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE runs ADD COLUMN done INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE runs ADD COLUMN failed INTEGER NOT NULL DEFAULT 0",
            """
            UPDATE runs SET
                pending = (SELECT count(*) FROM jobs j WHERE j.run_id = runs.run_id
                           AND j.status = 'pending'),
                leased = (SELECT count(*) FROM jobs j WHERE j.run_id = runs.run_id
                          AND j.status = 'leased'),
                done = (SELECT count(*) FROM jobs j WHERE j.run_id = runs.run_id
                        AND j.status = 'done'),
                failed = (SELECT count(*) FROM jobs j WHERE j.run_id = runs.run_id
                          AND j.status = 'failed')
            """,
            *_COUNT_TRIGGERS,
        ),
        down=(
            "DROP TRIGGER jobs_delete_counts",
            "DROP TRIGGER jobs_status_counts",
            "ALTER TABLE runs DROP COLUMN failed",
            "ALTER TABLE runs DROP COLUMN done",
            "ALTER TABLE runs DROP COLUMN leased",
            "ALTER TABLE runs DROP COLUMN pending",
        ),
        # Only derived numbers go: the next up-migration counts them again.
        drops=(),
    ),
    Migration(
        version=4,
        name="jobs_v4",
        up=(
            # Rebuilt (SQLite cannot add AUTOINCREMENT to a table): a purged job's id is never
            # handed out again, so a stale reference cannot point at another tenant's job.
            # Copying the rows sets `sqlite_sequence` to the largest id still in the file (the
            # rename carries it over); an id above it that was purged before this migration
            # left no trace and cannot be known.
            "DROP TRIGGER jobs_delete_counts",
            "DROP TRIGGER jobs_status_counts",
            _jobs_table("jobs_v4", autoincrement=True),
            f"INSERT INTO jobs_v4 ({_V3_COLUMNS}) SELECT {_V3_COLUMNS} FROM jobs",
            "DROP TABLE jobs",
            "ALTER TABLE jobs_v4 RENAME TO jobs",
            *_JOBS_INDEXES,
            "CREATE INDEX jobs_run ON jobs (run_id, status)",
            *_COUNT_TRIGGERS,
        ),
        down=(
            "DROP TRIGGER jobs_delete_counts",
            "DROP TRIGGER jobs_status_counts",
            _jobs_table("jobs_v3", autoincrement=False),
            f"INSERT INTO jobs_v3 ({_V3_COLUMNS}) SELECT {_V3_COLUMNS} FROM jobs",
            "DROP TABLE jobs",
            "ALTER TABLE jobs_v3 RENAME TO jobs",
            *_JOBS_INDEXES,
            "CREATE INDEX jobs_run ON jobs (run_id, status)",
            *_COUNT_TRIGGERS,
        ),
        # The new columns' values go (lease owners, start times, per-job limits, key grants);
        # no job does.
        drops=(),
    ),
    Migration(
        version=5,
        name="maintenance",
        up=(
            # One row per maintenance task (reap, purge, ...): when its next round is due and
            # how many rounds were claimed. Every process that opens the queue tries to claim a
            # due round with one conditional UPDATE (`store.claim_maintenance`); the one that
            # moves `due_at` does the round, so processes sharing a queue do it once.
            """
            CREATE TABLE maintenance (
                task       TEXT    PRIMARY KEY,
                due_at     REAL    NOT NULL,
                rounds     INTEGER NOT NULL DEFAULT 0,
                claimed_by TEXT,
                claimed_at REAL
            )
            """,
        ),
        down=("DROP TABLE maintenance",),
        # Only a schedule goes: without it every task is simply due at once.
        drops=(),
    ),
    Migration(
        version=8,
        name="schedules",
        up=(
            # One row per recurring job of a tenant. `next_tick_at` is the claim: a firing round
            # moves it past the ticks it enqueues with one conditional UPDATE, in the
            # transaction that enqueues their jobs, so a tick enqueues one job however many
            # processes share the queue (`_verbs.fire_schedules`).
            """
            CREATE TABLE schedules (
                tenant_id        TEXT    NOT NULL,
                name             TEXT    NOT NULL,
                cron             TEXT,
                interval_seconds INTEGER,
                timezone         TEXT    NOT NULL DEFAULT 'UTC',
                r2_key           TEXT    NOT NULL,
                payload          TEXT,
                priority         INTEGER NOT NULL DEFAULT 0,
                missed           TEXT    NOT NULL DEFAULT 'catch_up'
                                 CHECK (missed IN ('catch_up', 'skip')),
                grace_seconds    REAL    NOT NULL,
                next_tick_at     REAL    NOT NULL,
                last_tick_at     REAL,
                created_at       REAL    NOT NULL,
                updated_at       REAL    NOT NULL,
                PRIMARY KEY (tenant_id, name),
                CHECK ((cron IS NULL) != (interval_seconds IS NULL))
            )
            """,
            # A firing round reads the due schedules, earliest first, and nothing else.
            "CREATE INDEX schedules_due ON schedules (next_tick_at)",
        ),
        down=("DROP TABLE schedules",),
        drops=("schedules",),
    ),
    Migration(
        version=6,
        name="cancel",
        up=(
            # Rebuilt (SQLite cannot change a CHECK constraint): the terminal status
            # `cancelled`, and `cancel_requested_at` (a leased job asked to stop). Runs count
            # their cancelled jobs like the others, in the triggers.
            "DROP TRIGGER jobs_delete_counts",
            "DROP TRIGGER jobs_status_counts",
            _jobs_table_v6("jobs_v6"),
            f"INSERT INTO jobs_v6 ({_V4_COLUMNS}) SELECT {_V4_COLUMNS} FROM jobs",
            "DROP TABLE jobs",
            "ALTER TABLE jobs_v6 RENAME TO jobs",
            *_JOBS_INDEXES,
            "CREATE INDEX jobs_run ON jobs (run_id, status)",
            "ALTER TABLE runs ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0",
            *_COUNT_TRIGGERS_V6,
        ),
        down=(
            # Version 5 knows no `cancelled`: a cancelled job becomes a failed one whose error
            # says so (it stays finished, and nothing is lost); a cancel request is forgotten.
            "DROP TRIGGER jobs_delete_counts",
            "DROP TRIGGER jobs_status_counts",
            """
            UPDATE jobs SET status = 'failed',
                last_error = 'cancelled' || coalesce(': ' || last_error, '')
            WHERE status = 'cancelled'
            """,
            "UPDATE runs SET failed = failed + cancelled",
            "ALTER TABLE runs DROP COLUMN cancelled",
            _jobs_table("jobs_v4", autoincrement=True),
            f"INSERT INTO jobs_v4 ({_V4_COLUMNS}) SELECT {_V4_COLUMNS} FROM jobs",
            "DROP TABLE jobs",
            "ALTER TABLE jobs_v4 RENAME TO jobs",
            *_JOBS_INDEXES,
            "CREATE INDEX jobs_run ON jobs (run_id, status)",
            *_COUNT_TRIGGERS,
        ),
        # Cancelled jobs become failed ones and cancel requests go; no row is deleted.
        drops=(),
    ),
    Migration(
        version=9,
        name="job_origins",
        up=(
            # Where an imported job came from (`d1:<id>`, `kv:<task id>`; NULL for a job
            # enqueued here), so the old system's references still name it. Added, not
            # rebuilt: a constant default, no copy of the table.
            "ALTER TABLE jobs ADD COLUMN origin TEXT",
            # Invariant: one origin names at most one job (an import is never applied twice).
            "CREATE UNIQUE INDEX jobs_origin ON jobs (origin) WHERE origin IS NOT NULL",
        ),
        down=("DROP INDEX jobs_origin", "ALTER TABLE jobs DROP COLUMN origin"),
        # The imported jobs stay (as jobs enqueued here); only their origins go.
        drops=(),
    ),
    Migration(
        version=11,
        name="runs_closed_by_trigger",
        up=(
            # A run closes in the statement that finishes its last job (issue 18: the verbs
            # run one statement per batch, and closing each touched run was one more). The
            # counts are counted again, so the upgraded file starts exact whatever it held.
            "DROP TRIGGER jobs_status_counts",
            _STATUS_TRIGGER_V11,
            _RECOUNT,
        ),
        down=("DROP TRIGGER jobs_status_counts", _COUNT_TRIGGERS_V6[0]),
        # Only a trigger changes; no row goes.
        drops=(),
    ),
    Migration(
        version=7,
        name="queue_controls",
        up=(
            # What operators set, read by every claim: one row per tenant with a control, and
            # the row of tenant '' (never a tenant's id: ids are not empty) for the whole queue.
            # `rate_tokens` at `rate_at` is the tenant's bucket for `max_per_second`.
            """
            CREATE TABLE queue_controls (
                tenant_id      TEXT    PRIMARY KEY,
                paused         INTEGER NOT NULL DEFAULT 0,
                weight         INTEGER NOT NULL DEFAULT 1,
                max_leased     INTEGER,
                max_per_second REAL,
                rate_tokens    REAL,
                rate_at        REAL,
                updated_at     REAL    NOT NULL
            )
            """,
            # A fair claim walks the tenants with pending jobs (a loose scan of this index) and
            # reads each one's first jobs in the claim's order: pending jobs only.
            """
            CREATE INDEX jobs_tenant_claim ON jobs (tenant_id, priority DESC, available_at)
            WHERE status = 'pending'
            """,
            # `jobs_claim` holds the pending jobs only, as PostgreSQL's always has: every
            # reader of it asks for pending jobs, and a job leaving `pending` (leased, then
            # done) no longer moves its entry at each step. That pays for the index above.
            "DROP INDEX jobs_claim",
            """
            CREATE INDEX jobs_claim ON jobs (priority DESC, available_at)
            WHERE status = 'pending'
            """,
        ),
        down=(
            "DROP INDEX jobs_claim",
            _JOBS_INDEXES[0],
            "DROP INDEX jobs_tenant_claim",
            "DROP TABLE queue_controls",
        ),
        # Undoing it forgets what is paused and every tenant's limits.
        drops=("queue_controls",),
    ),
)
# Invariant: applied in the order of their versions, each version once (steps written on
# different branches may sit in the tuple in any order; numbers may skip).
MIGRATIONS = tuple(sorted(MIGRATIONS, key=lambda m: m.version))
assert len({m.version for m in MIGRATIONS}) == len(MIGRATIONS), "two migrations share a version"
LATEST_VERSION = MIGRATIONS[-1].version


def connect(
    path: str | Path, *, durability: Durability = "normal", busy_timeout_seconds: float = 10.0
) -> sqlite3.Connection:
    """Open a connection to ``path`` with the queue's pragmas: WAL, synchronous, busy timeout."""
    if durability not in ("normal", "full"):
        raise InvalidArgument(
            f"durability must be 'normal' (survives a process crash) or 'full' (survives power "
            f"loss), not {durability!r}; fix [queue].durability"
        )
    if str(path) == ":memory:" or str(path).startswith("file:"):
        raise InvalidArgument(
            f"the queue needs a file path, not {str(path)!r}: its writer and readers use separate "
            "connections; use a file in a temporary directory for throwaway queues"
        )
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; the writer thread owns it.
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_seconds
        )
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(
            f"cannot open the queue database {str(path)!r}: {exc}. Check that the directory "
            "exists and is writable, or point --db / [queue].path elsewhere"
        ) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_seconds * 1000)}")
        _set_wal(conn, busy_timeout_seconds)
        # NORMAL in WAL mode: a commit survives a process crash, maybe not a power loss.
        # FULL: every commit is fsynced, so it survives power loss too.
        conn.execute(f"PRAGMA synchronous = {durability.upper()}")
        # The writer wraps each request of a group in a SAVEPOINT, whose statement journal would
        # otherwise be a temporary file; in memory, a group commits sooner (docs/benchmarks.md).
        conn.execute("PRAGMA temp_store = MEMORY")
    except sqlite3.Error as exc:
        conn.close()
        raise sqlite_failure(exc, path) from exc
    return conn


def sqlite_failure(exc: sqlite3.Error, path: str | Path | None) -> StorageError:
    """The `StorageError` for a failure of SQLite on the queue's file, by its result code.

    A full disk and a damaged file call for opposite actions (free space and run again; move
    the file away), so they are told apart by SQLite's code, never by the failing statement.
    """
    where = f"{str(path)!r}" if path is not None else "the queue database"
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == sqlite3.SQLITE_FULL:
        return DiskFull(
            f"disk full at {where}: free space on its disk (or raise its quota) and run again; "
            "the write that failed was rolled back, nothing committed before it is lost"
        )
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StorageError(
            f"{where} is not a usable SQLite database: {exc}. Point --db / [queue].path "
            "at the queue's file, or move this file away to start a new queue"
        )
    if primary == sqlite3.SQLITE_IOERR:
        return StorageError(
            f"disk I/O error on {where} ({getattr(exc, 'sqlite_errorname', exc)}): check its "
            "disk's free space, its quota, the file size limit (ulimit -f) and the disk's health"
        )
    if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
        return StorageError(
            f"cannot write {where}: {exc}. Check that the file and its directory are writable "
            "by this user, or point --db / [queue].path elsewhere"
        )
    return StorageError(
        f"SQLite failed: {exc} (on {where}). If the database is locked, another process holds "
        "a write transaction for longer than the busy timeout"
    )


def require_file(path: str | Path) -> None:
    """Raise StorageError if no queue file exists at ``path`` (commands that only read or
    change an existing queue never create one)."""
    if not Path(path).is_file():
        raise StorageError(
            f"the queue database {str(path)!r} does not exist; check --db or [queue].path "
            "(`submit`, `enqueue`, `run` and `migrate up` create it)"
        )


def require_queue_file(path: str | Path) -> None:
    """Raise StorageError unless ``path`` is a file that holds a queue (schema version above 0).

    Read without changing anything (read-only, no WAL switch): a mistyped path that names
    another application's SQLite database, or an empty file, is refused, not migrated into a
    queue. A file that is no SQLite database at all is left to `connect`'s clearer message.
    """
    require_file(path)
    try:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True)
        try:
            version = current_version(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return
    if version == 0:
        raise StorageError(
            f"{str(path)!r} holds no queue (a SQLite file without the queue's schema): check "
            "--db or [queue].path (`submit`, `enqueue`, `run` and `migrate up` create a queue)"
        )


def open_existing(
    path: str | Path, *, durability: Durability = "normal", busy_timeout_seconds: float = 10.0
) -> sqlite3.Connection:
    """Open the queue file at ``path`` as `connect` does, if it exists; never create one."""
    require_file(path)
    return connect(path, durability=durability, busy_timeout_seconds=busy_timeout_seconds)


def _set_wal(conn: sqlite3.Connection, busy_timeout_seconds: float) -> None:
    # Switching a new file to WAL takes an exclusive lock that the busy handler does not wait
    # for; another process opening the same new file at once makes it fail, so retry briefly
    # (counted in 10 ms pauses: this module reads no clock).
    for attempt in itertools.count():
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt * 0.01 > busy_timeout_seconds:
                raise
            time.sleep(0.01)
            continue
        if mode != "wal":
            raise sqlite3.DatabaseError(f"journal_mode is {mode!r}, WAL could not be enabled")
        return


def current_version(conn: sqlite3.Connection) -> int:
    """Return the schema version recorded in the file (0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(version: int, path: str | Path) -> None:
    """Raise SchemaTooNew if ``version`` is newer than this code knows."""
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"{str(path)!r} has schema version {version}, but this version of actors knows "
            f"versions up to {LATEST_VERSION}: it was written by a newer actors. Upgrade actors, "
            "or run the newer one's `python -m actors migrate down` to this version first"
        )


def migrate_up(conn: sqlite3.Connection, path: str | Path, target: int | None = None) -> list[int]:
    """Apply every migration above the file's version up to ``target``; return those applied."""
    target = LATEST_VERSION if target is None else target
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version > target:
            break
        # BEGIN IMMEDIATE, then re-read the version: another process may have migrated first.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = current_version(conn)
            check_version(version, path)
            if version < migration.version:
                for statement in migration.up:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version}")
                applied.append(migration.version)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise sqlite_failure(exc, path) from exc
        except BaseException:
            _rollback(conn)
            raise
    return applied


def _below(version: int) -> int:
    """The version of the migration before ``version`` (0 below the first)."""
    return max((m.version for m in MIGRATIONS if m.version < version), default=0)


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself after some errors (a full disk, an I/O error): then there is
    # no transaction left, and a ROLLBACK would fail and hide the first error.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def migrate_down(
    conn: sqlite3.Connection, path: str | Path, target: int, *, force: bool = False
) -> list[int]:
    """Undo migrations above ``target``, newest first; refuse to drop rows unless ``force``."""
    if not 0 <= target <= LATEST_VERSION:
        raise InvalidArgument(
            f"target version must be between 0 and {LATEST_VERSION}, not {target}"
        )
    undone: list[int] = []
    # One transaction for the whole walk down: a refusal part-way leaves the file untouched.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(conn)
        check_version(version, path)
        for migration in reversed(MIGRATIONS):
            if migration.version <= target:
                break
            if version < migration.version:
                continue
            rows = {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in migration.drops
            }
            if any(rows.values()) and not force:
                held = ", ".join(f"{n} rows in {t}" for t, n in rows.items() if n)
                raise MigrationRefused(
                    f"undoing migration {migration.version} ({migration.name}) of "
                    f"{str(path)!r} would delete {held}; copy the file first, then run "
                    "`python -m actors migrate down --force` if you mean it"
                )
            for statement in migration.down:
                conn.execute(statement)
            # The version below this one (numbers may skip: each names its own step).
            conn.execute(f"PRAGMA user_version = {_below(migration.version)}")
            undone.append(migration.version)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        raise sqlite_failure(exc, path) from exc
    except BaseException:
        _rollback(conn)
        raise
    return undone
