"""Migrations and pragmas: versioned upgrades on open, refused downgrades, durability modes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actors.errors import InvalidArgument, MigrationRefused, SchemaTooNew, StorageError
from actors.queue import LATEST_VERSION, SQLiteQueue
from actors.queue.sqlite import schema as schema

# Migrations, the same on both runtimes: asyncio only (see tests/conftest.py).
pytestmark = pytest.mark.runtimes("asyncio")


def open_raw(db: Path) -> sqlite3.Connection:
    return schema.connect(db)


def test_connect_sets_wal_and_the_chosen_durability(db: Path) -> None:
    normal = schema.connect(db)
    full = schema.connect(db, durability="full")
    assert normal.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert normal.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert full.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_connect_refuses_an_unknown_durability_and_an_in_memory_path(db: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"'normal' .* or 'full'"):
        schema.connect(db, durability="paranoid")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="needs a file path"):
        schema.connect(":memory:")


def test_a_file_that_is_not_a_database_is_refused_with_a_storage_error(db: Path) -> None:
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a usable SQLite database"):
        schema.connect(db)


def test_migrations_go_up_and_down_one_version_at_a_time(db: Path) -> None:
    conn = open_raw(db)
    assert schema.current_version(conn) == 0
    versions = [m.version for m in schema.MIGRATIONS]
    assert versions[-1] == LATEST_VERSION
    assert schema.migrate_up(conn, db) == versions
    assert schema.migrate_up(conn, db) == []
    assert schema.migrate_down(conn, db, 0) == versions[::-1]
    assert schema.current_version(conn) == 0
    # sqlite_sequence (made by AUTOINCREMENT) is SQLite's own and cannot be dropped.
    left = conn.execute("SELECT name FROM sqlite_master WHERE name != 'sqlite_sequence'")
    assert left.fetchall() == []


def test_down_refuses_to_drop_rows_unless_forced(db: Path) -> None:
    conn = open_raw(db)
    schema.migrate_up(conn, db)
    conn.execute(
        "INSERT INTO runs (run_id, tenant_id, created_at, updated_at) VALUES ('r','t',0,0)"
    )
    with pytest.raises(MigrationRefused, match=r"would delete 1 rows in runs.*--force"):
        schema.migrate_down(conn, db, 1)
    assert schema.current_version(conn) == LATEST_VERSION
    above_1 = [m.version for m in schema.MIGRATIONS if m.version > 1]
    assert schema.migrate_down(conn, db, 1, force=True) == above_1[::-1]


@pytest.mark.anyio
async def test_an_old_file_is_upgraded_when_opened_and_keeps_its_jobs(db: Path) -> None:
    conn = open_raw(db)
    schema.migrate_up(conn, db, target=1)
    conn.execute(
        "INSERT INTO jobs (run_id, tenant_id, r2_key, status, max_attempts, available_at, "
        "created_at, updated_at, finished_at) VALUES ('r', 't', 'k', 'done', 5, 1, 1, 2, 2)"
    )
    conn.close()
    async with SQLiteQueue.open(db) as queue:
        summary = await queue.run_summary("r")
        assert (summary.status, summary.total, summary.finished_at) == ("done", 1, 2)
    assert schema.current_version(open_raw(db)) == LATEST_VERSION


@pytest.mark.anyio
async def test_a_file_from_a_newer_version_is_refused_with_a_clear_message(db: Path) -> None:
    conn = open_raw(db)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match=r"written by a newer actors\. Upgrade actors"):
        async with SQLiteQueue.open(db):
            pass


@pytest.mark.anyio
async def test_a_queue_opened_with_full_durability_works_and_a_bad_setting_is_refused(
    db: Path,
) -> None:
    async with SQLiteQueue.open(db, durability="full") as queue:
        job = await queue.enqueue("r", "t", "k")
        assert (await queue.get(job.id)).status == "pending"
    with pytest.raises(InvalidArgument, match="durability must be"):
        async with SQLiteQueue.open(db, durability="sometimes"):  # type: ignore[arg-type]
            pass


def test_a_version_2_file_gets_its_run_counts_counted_when_upgraded(db: Path) -> None:
    conn = open_raw(db)
    schema.migrate_up(conn, db, target=2)
    for status in ("pending", "pending", "leased", "done", "failed"):
        conn.execute(
            "INSERT INTO jobs (run_id, tenant_id, r2_key, status, max_attempts, available_at, "
            "created_at, updated_at) VALUES ('r', 't', 'k', ?, 5, 1, 1, 1)",
            (status,),
        )
    conn.execute(
        "INSERT INTO runs (run_id, tenant_id, created_at, updated_at) VALUES ('r', 't', 1, 1)"
    )
    schema.migrate_up(conn, db)
    assert conn.execute("SELECT pending, leased, done, failed FROM runs").fetchone() == (2, 1, 1, 1)
    # From here on the triggers keep them: a status change and a deletion.
    conn.execute("UPDATE jobs SET status = 'done' WHERE status = 'leased'")
    conn.execute("DELETE FROM jobs WHERE status = 'failed'")
    assert conn.execute("SELECT pending, leased, done, failed FROM runs").fetchone() == (2, 0, 2, 0)


@pytest.mark.anyio
async def test_a_version_9_file_upgraded_to_11_has_exact_counts_and_closes_runs_itself(
    db: Path,
) -> None:
    conn = open_raw(db)
    schema.migrate_up(conn, db, target=9)
    conn.execute(
        "INSERT INTO runs (run_id, tenant_id, created_at, updated_at) VALUES ('r', 't', 1, 1)"
    )
    for status in ("pending", "leased", "done", "failed", "cancelled", "done"):
        conn.execute(
            "INSERT INTO jobs (run_id, tenant_id, r2_key, status, max_attempts, available_at, "
            "created_at, updated_at) VALUES ('r', 't', 'k', ?, 5, 1, 1, 1)",
            (status,),
        )
    # Counts that drifted (inserted rows pass no trigger): the upgrade counts them again.
    conn.execute("UPDATE runs SET pending = 7, leased = 0, done = 3")
    assert schema.migrate_up(conn, db) == [m.version for m in schema.MIGRATIONS if m.version > 9]
    counts = "SELECT pending, leased, done, failed, cancelled, finished_at FROM runs"
    assert conn.execute(counts).fetchone() == (1, 1, 2, 1, 1, None)
    # A status change closes its run when it finishes the last unfinished job, at that job's
    # `updated_at` (every verb sets it to its `now`), in the same statement.
    conn.execute("UPDATE jobs SET status = 'done', updated_at = 5 WHERE status = 'leased'")
    assert conn.execute(counts).fetchone() == (1, 0, 3, 1, 1, None)
    conn.execute("UPDATE jobs SET status = 'failed', updated_at = 9 WHERE status = 'pending'")
    assert conn.execute(counts).fetchone() == (0, 0, 3, 2, 1, 9)
    conn.close()
    async with SQLiteQueue.open(db) as queue:
        summary = await queue.run_summary("r")
        assert (summary.status, summary.total, summary.finished_at) == ("cancelled", 6, 9)
    # Down to 9 and up again: the trigger of version 6 comes back, then this one.
    conn = open_raw(db)
    assert (
        schema.migrate_down(conn, db, 9)
        == [m.version for m in schema.MIGRATIONS if m.version > 9][::-1]
    )
    schema.migrate_up(conn, db)
    assert conn.execute(counts).fetchone() == (0, 0, 3, 2, 1, 9)
