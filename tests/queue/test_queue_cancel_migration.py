"""The `cancel` schema step (SQLite 6, PostgreSQL 7) undone and done again: cancelled jobs
become failed ones that say so, no job is lost, and the counts agree both ways."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pg_helpers import PG_DSN

from actors.queue import SQLiteQueue
from actors.queue.postgres import schema as postgres_schema
from actors.queue.postgres._queue import PostgresQueue
from actors.queue.sqlite import schema
from supervisors.clock import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The backend, and its PostgreSQL schema (resolved here, outside the event loop)."""
    if request.param == "postgres":
        return "postgres", str(request.getfixturevalue("pg_schema"))
    return "sqlite", ""


async def test_undoing_the_cancel_step_turns_cancelled_jobs_into_failed_ones(
    store: tuple[str, str], tmp_path: Path
) -> None:
    clock = FakeClock()
    db = tmp_path / "q.db"
    store_kind, pg = store

    def open_store() -> Any:
        if store_kind == "sqlite":
            return SQLiteQueue.open(db, clock=clock)
        return PostgresQueue.open(PG_DSN, schema=pg, clock=clock)

    async with open_store() as queue:
        kept = await queue.enqueue("r", "t", "t/r/kept")
        await queue.enqueue("r", "t", "t/r/marked")
        gone = await queue.enqueue("r", "t", "t/r/gone")
        leased, marked = await queue.pull(max=2)  # the two oldest
        assert leased.id == kept.id
        await queue.cancel_many([gone.id, marked.id])
    if store_kind == "sqlite":
        conn = sqlite3.connect(db, isolation_level=None)
        above = [m.version for m in schema.MIGRATIONS if m.version > 5]  # numbers may skip
        assert schema.migrate_down(conn, db, 5) == above[::-1]
        rows = conn.execute("SELECT id, status, last_error FROM jobs ORDER BY id").fetchall()
        run = conn.execute("SELECT pending, leased, done, failed FROM runs").fetchone()
        assert schema.migrate_up(conn, db) == above
        conn.close()
    else:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg})
        above = [m.version for m in postgres_schema.MIGRATIONS if m.version > 6]
        assert await postgres_schema.migrate_down(conn, "t", 6) == above[::-1]
        rows = await conn.fetch("SELECT id, status, last_error FROM jobs ORDER BY id")
        # The counts as version 6 keeps them: the run's base row plus its count shards.
        state = await conn.fetchrow(
            """
            SELECT r.total + coalesce(sum(c.total), 0), r.done + coalesce(sum(c.done), 0),
                   r.failed + coalesce(sum(c.failed), 0),
                   (SELECT count(*) FROM jobs WHERE status = 'leased')
            FROM runs r LEFT JOIN run_counts c USING (run_id)
            GROUP BY r.run_id, r.total, r.done, r.failed
            """
        )
        assert state is not None
        total, done, failed, leased = state
        run = (total - done - failed - leased, leased, done, failed)
        assert await postgres_schema.migrate_up(conn, "t") == above
        await conn.close()
    # The cancelled job is a failed one that says why; the marked lease is an ordinary lease.
    assert [tuple(r) for r in rows] == [
        (kept.id, "leased", None),
        (marked.id, "leased", None),
        (gone.id, "failed", "cancelled"),
    ]
    assert run == (0, 2, 0, 1)
    async with open_store() as queue:
        stats = await queue.stats()
        assert (stats.leased, stats.failed, stats.cancelled, stats.total) == (2, 1, 0, 3)
        assert (await queue.get(marked.id)).cancel_requested_at is None
        summary = await queue.run_summary("r")
        assert (summary.leased, summary.failed, summary.cancelled) == (2, 1, 0)


def test_a_row_copied_by_store_migrate_before_the_cancel_step_keeps_its_digest() -> None:
    # `store migrate` compares a target row with the digest recorded when it copied it: a row
    # copied before `cancel_requested_at` existed, unchanged since, must not be a conflict.
    from actors.queue import migrate

    before = [f for f in migrate.JOB_FIELDS if f != "cancel_requested_at"]
    row = {f: None for f in migrate.JOB_FIELDS} | {"id": 7, "status": "done", "attempts": 1}
    assert migrate._digest(row, migrate.JOB_FIELDS) == migrate._digest(row, before)
    marked = {**row, "status": "leased", "cancel_requested_at": 5.0}
    assert migrate._digest(marked, migrate.JOB_FIELDS) != migrate._digest(marked, before)
