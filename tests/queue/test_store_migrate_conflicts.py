"""`store migrate` after the cut-over: rows that changed in the target are never overwritten or
deleted without --force, and `status` reads only. SQLite -> PostgreSQL and PostgreSQL -> SQLite,
through `python -m actors`."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pg_helpers import PG_DSN, pg_admin

from actors.queue import NewJob, SQLiteQueue
from actors.queue.postgres._queue import PostgresQueue

# Each test runs `python -m actors store migrate` several times: 2 to 7 s.
pytestmark = pytest.mark.slow


def actors(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pg(schema: str) -> str:
    return f"{PG_DSN}?search_path={schema}"


class Stores:
    """The two sides of one direction: a SQLite file and a PostgreSQL schema."""

    def __init__(self, direction: str, tmp_path: Path, pg_schema: str) -> None:
        self.db, self.schema = tmp_path / "queue.db", pg_schema
        sqlite, postgres = str(self.db), pg(pg_schema)
        self.source, self.target = (
            (sqlite, postgres) if direction == "sqlite_to_postgres" else (postgres, sqlite)
        )
        self.target_is_pg = direction == "sqlite_to_postgres"

    @contextlib.asynccontextmanager
    async def open(self, *, target: bool) -> AsyncIterator[Any]:
        """The queue on one side, as its workers open it."""
        if target == self.target_is_pg:
            async with PostgresQueue.open(PG_DSN, schema=self.schema) as queue:
                yield queue
        else:
            async with SQLiteQueue.open(self.db) as queue:
                yield queue

    def store(self, step: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return actors("store", "migrate", step, "--from", self.source, "--to", self.target, *extra)


@pytest.fixture(params=["sqlite_to_postgres", "postgres_to_sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path, pg_schema: str) -> Stores:
    if request.param == "postgres_to_sqlite":
        pg_admin(f"CREATE SCHEMA {pg_schema}")
    return Stores(request.param, tmp_path, pg_schema)


def test_running_the_migration_again_after_the_cut_over_keeps_the_targets_progress(
    stores: Stores,
) -> None:
    async def enqueue() -> None:
        async with stores.open(target=False) as source:
            for i in range(4):
                await source.enqueue("r", "t", f"t/r/{i}")

    anyio.run(enqueue)
    copied = stores.store("run")
    assert copied.returncode == 0, copied.stderr
    assert stores.store("status").returncode == 0

    async def work_on_the_source() -> None:
        async with stores.open(target=False) as source:
            (job,) = await source.pull(max=1, visibility_seconds=60)
            await source.ack(job.id, job.lease_token or "", result={"pages": 1})

    # Before the cut-over: what changed in the source alone is copied again.
    anyio.run(work_on_the_source)
    assert stores.store("status").returncode == 1
    recopied = stores.store("run")
    assert recopied.returncode == 0, recopied.stderr
    assert "jobs: 1 written, 3 already there" in recopied.stdout
    assert stores.store("status").returncode == 0

    async def work_on_the_target() -> tuple[Any, Any]:
        # The cut-over: the target's workers finish one job and hold a live lease on another.
        async with stores.open(target=True) as target:
            done, leased = await target.pull(max=2, visibility_seconds=3600)
            await target.ack(done.id, done.lease_token or "", result={"pages": 7})
            return await target.get(done.id), await target.get(leased.id)

    done, leased = anyio.run(work_on_the_target)

    again = stores.store("run")
    assert again.returncode == 1
    assert f"conflict: job {done.id}: changed in the target after it was copied" in again.stderr
    assert f"conflict: job {leased.id}: " in again.stderr
    assert "store migrate run --force" in again.stderr
    status = stores.store("status")
    assert status.returncode == 1 and "(conflicts)" in status.stdout

    async def read_target() -> list[Any]:
        async with stores.open(target=True) as target:
            return [await target.get(job.id) for job in (done, leased)]

    assert anyio.run(read_target) == [done, leased]  # nothing reset: result and lease kept

    # Rollback deletes what did not change in the target, and keeps what did.
    rolled = stores.store("rollback")
    assert rolled.returncode == 1
    assert "store migrate rollback --force" in rolled.stderr
    assert "deleted 2 job(s)" in rolled.stdout

    async def target_jobs() -> list[Any]:
        async with stores.open(target=True) as target:
            return list((await target.list(run_id="r")).items)

    assert anyio.run(target_jobs) == [done, leased]

    forced = stores.store("run", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "replaced (--force)" in forced.stdout
    assert [job.status for job in anyio.run(target_jobs)] == ["done"] + ["pending"] * 3
    assert stores.store("status").returncode == 0


def test_status_reads_only_and_fails_until_the_target_is_complete(
    stores: Stores, tmp_path: Path
) -> None:
    async def enqueue() -> None:
        async with stores.open(target=False) as source:
            await source.enqueue("r", "t", "t/r/a")

    anyio.run(enqueue)
    # A target that does not exist yet: reported as empty, and still not there afterwards.
    missing = str(tmp_path / "new.db") if not stores.target_is_pg else pg(stores.schema + "_new")
    found = actors("store", "migrate", "status", "--from", stores.source, "--to", missing)
    assert found.returncode == 1, found.stderr
    assert "does not exist yet" in found.stdout and "incomplete" in found.stdout
    assert not (tmp_path / "new.db").exists()
    assert not pg_admin("SELECT 1 FROM pg_namespace WHERE nspname = $1", stores.schema + "_new")
    # A source that does not exist is an error, and is not created either.
    typo = tmp_path / "typo.db"
    wrong = actors("store", "migrate", "status", "--from", str(typo), "--to", stores.target)
    assert (wrong.returncode, wrong.stderr) == (1, f"error: {typo} does not exist (no such file)\n")
    assert not typo.exists()
    # An existing, empty target: incomplete, and status writes nothing into it.
    if stores.target_is_pg:
        pg_admin(f"CREATE SCHEMA {stores.schema}")
    empty = stores.store("status")
    assert empty.returncode == 1 and "1 missing" in empty.stdout
    if stores.target_is_pg:
        tables = pg_admin("SELECT count(*) FROM pg_tables WHERE schemaname = $1", stores.schema)
        assert tables[0][0] == 0
    else:
        assert not stores.db.exists()
    assert stores.store("run").returncode == 0
    assert stores.store("status").returncode == 0


def test_rows_copied_by_an_older_actors_are_conflicts_when_they_differ(tmp_path: Path) -> None:
    import sqlite3

    src, dst = tmp_path / "src.db", tmp_path / "dst.db"

    async def enqueue() -> None:
        async with SQLiteQueue.open(src) as queue:
            await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=k) for k in "ab"])

    anyio.run(enqueue)
    assert actors("store", "migrate", "run", "--from", str(src), "--to", str(dst)).returncode == 0
    with contextlib.closing(sqlite3.connect(dst)) as conn, conn:
        # The manifest as an older actors wrote it: which rows it copied, not what they were.
        conn.executescript(
            """
            CREATE TABLE old AS SELECT kind, key, source FROM migrated_rows;
            DROP TABLE migrated_rows;
            ALTER TABLE old RENAME TO migrated_rows;
            """
        )

    async def change_the_source() -> None:
        async with SQLiteQueue.open(src) as queue:
            (job,) = await queue.pull(max=1, visibility_seconds=60)
            await queue.ack(job.id, job.lease_token or "")

    anyio.run(change_the_source)
    again = actors("store", "migrate", "run", "--from", str(src), "--to", str(dst))
    assert again.returncode == 1
    assert "conflict: job 1: copied by an older actors" in again.stderr
    assert "jobs: 0 written, 1 already there" in again.stdout
    forced = actors("store", "migrate", "run", "--from", str(src), "--to", str(dst), "--force")
    assert forced.returncode == 0, forced.stderr
    status = actors("store", "migrate", "status", "--from", str(src), "--to", str(dst))
    assert status.returncode == 0, status.stdout
