"""Moving a queue between stores: SQLite -> PostgreSQL -> SQLite, resumed runs, leases, errors."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import msgspec
import pytest
from pg_helpers import PG_DSN, pg_admin

from actors.errors import MigrationRefused
from actors.queue import Ack, NewJob, SQLiteQueue
from actors.queue import migrate as mig
from actors.queue.postgres._queue import PostgresQueue
from supervisors.clock import FakeClock

# asyncpg, under the migration, runs on asyncio only (the CLI runs it there too).
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
pytestmark = pytest.mark.anyio


async def populate(path: Path, n: int = 60, *, clock: FakeClock | None = None) -> None:
    """Jobs in every status, with payloads, results, errors, metrics, keys and priorities."""
    clock = clock or FakeClock()
    async with SQLiteQueue.open(path, clock=clock) as queue:
        await queue.enqueue_many(
            [
                NewJob(
                    run_id=f"run-{i % 3}",
                    tenant_id=f"t{i % 3}",
                    r2_key=f"k/{i}",
                    payload={"i": i, "x": 0.1 * i, "s": "é" * (i % 4)},
                    idempotency_key=f"key-{i}" if i % 2 else None,
                    priority=i % 5,
                    delay_seconds=float(i % 7),
                    cross_tenant_key=i % 6 == 1,
                    timeout_seconds=30.0 + i if i % 4 == 0 else None,
                )
                for i in range(n)
            ]
        )
        clock.advance(10)
        jobs = await queue.pull(
            max=min(n // 2, 1000), visibility_seconds=60, worker_id="w1", owner="token:abc"
        )
        await queue.start_many([(j.id, j.lease_token or "") for j in jobs[::2]])
        third = len(jobs) // 3
        await queue.ack_many(
            [
                Ack(
                    job_id=j.id,
                    lease_token=j.lease_token or "",
                    result={"pages": j.id},
                    run_metrics={"bytes": 10.5},
                )
                for j in jobs[:third]
            ]
        )
        await queue.ack_many(
            [
                Ack(
                    job_id=j.id,
                    lease_token=j.lease_token or "",
                    status="failed",
                    error="boom",
                    permanent=j.id % 2 == 0,
                )
                for j in jobs[third : 2 * third]
            ]
        )


def dump(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        jobs = conn.execute(f"SELECT {', '.join(mig.JOB_FIELDS)} FROM jobs ORDER BY id").fetchall()
        runs = conn.execute(
            "SELECT run_id, tenant_id, created_at, updated_at, finished_at, metrics, pending, "
            "leased, done, failed FROM runs ORDER BY rowid"
        ).fetchall()
        return jobs, runs
    finally:
        conn.close()


# Long after populate(): its leases have run out (the workers are gone).
LATER = 1e12


def pg(schema: str) -> str:
    return f"{PG_DSN}?search_path={schema}"


@asyncio_only
async def test_sqlite_to_postgres_and_back_is_identical(tmp_path: Path, pg_schema: str) -> None:
    src, back = tmp_path / "src.db", tmp_path / "back.db"
    await populate(src)
    async with mig.open_store(str(src)) as source, mig.open_store(pg(pg_schema)) as target:
        report = await mig.run(source, target, now=LATER)
        assert report.errors == []
        assert report.written == {"run": 3, "job": 60, "schedule": 0}
        found = await mig.status(source, target, now=LATER)
        assert found.complete and found.source == found.target
        again = await mig.run(source, target, now=LATER)  # safe to run again: nothing to do
        assert (again.written, again.identical) == (
            {"run": 0, "job": 0, "schedule": 0},
            {"run": 3, "job": 60, "schedule": 0},
        )
    # The counts PostgreSQL derived agree with SQLite's.
    counted = await anyio.to_thread.run_sync(
        pg_admin, f"SELECT run_id, done, failed, total FROM {pg_schema}.runs ORDER BY seq"
    )
    assert [tuple(r) for r in counted] == [(r[0], r[8], r[9], sum(r[6:10])) for r in dump(src)[1]]
    async with mig.open_store(pg(pg_schema)) as source, mig.open_store(str(back)) as target:
        assert (await mig.run(source, target, now=LATER)).errors == []
    assert dump(back) == dump(src)


@asyncio_only
async def test_a_migrated_run_lists_its_jobs_and_is_recopied_into_a_used_target_only_by_force(
    tmp_path: Path, pg_schema: str
) -> None:
    # The target is live meanwhile: a worker enqueues into a migrated run and acks its jobs
    # (count shards), then the run changes in the source too. Copying again leaves the rows
    # that changed in the target alone; --force replaces them with the source's.
    src = tmp_path / "src.db"
    clock = FakeClock()
    async with SQLiteQueue.open(src, clock=clock) as queue:
        await queue.enqueue_many(
            [NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(3)]
        )
    async with mig.open_store(str(src)) as source, mig.open_store(pg(pg_schema)) as target:
        assert (await mig.run(source, target, now=LATER)).errors == []
    async with PostgresQueue.open(PG_DSN, schema=pg_schema, clock=clock) as live:
        late = await live.enqueue("r", "t", "late")
        clock.advance(5)
        for job in await live.pull(max=10, visibility_seconds=60):
            await live.ack(job.id, job.lease_token or "", run_metrics={"n": 5})
        page = await live.list(run_id="r")
        assert sorted(j.r2_key for j in page.items) == ["0", "1", "2", "late"]
        assert late.id in {j.id for j in page.items}
    async with SQLiteQueue.open(src, clock=clock) as queue:  # the source's run changes
        clock.advance(5)
        job = (await queue.pull(max=1, visibility_seconds=60))[0]
        await queue.ack(job.id, job.lease_token or "", run_metrics={"n": 2})
    async with mig.open_store(str(src)) as source, mig.open_store(pg(pg_schema)) as target:
        kept = await mig.run(source, target, now=LATER)
        assert kept.errors == [] and kept.written == {"run": 0, "job": 0, "schedule": 0}
        assert sorted((c.kind, c.key) for c in kept.conflicts) == [
            ("job", "1"), ("job", "2"), ("job", "3"), ("run", "r"),
        ]  # fmt: skip
        assert "done there, pending in the source" in kept.conflicts[-1].message
        assert "--force" in kept.conflicts[0].message
    async with PostgresQueue.open(PG_DSN, schema=pg_schema, clock=clock) as live:
        summary = await live.run_summary("r")
        assert (summary.done, summary.metrics) == (4, {"n": 20.0})  # the target's progress
    async with mig.open_store(str(src)) as source, mig.open_store(pg(pg_schema)) as target:
        report = await mig.run(source, target, now=LATER, force=True)
        assert report.errors == [] and report.conflicts == [], report.errors
        assert (report.written, report.forced) == ({"run": 1, "job": 3, "schedule": 0}, 4)
        again = await mig.run(source, target, now=LATER)
        assert again.errors == again.conflicts == []
        assert again.written == {"run": 0, "job": 0, "schedule": 0}
    async with PostgresQueue.open(PG_DSN, schema=pg_schema, clock=clock) as live:
        summary = await live.run_summary("r")
        assert (summary.total, summary.metrics) == (4, {"n": 2.0})  # the source's metrics
        assert len((await live.list(run_id="r")).items) == 4


@asyncio_only
async def test_jobs_enqueued_into_a_run_while_it_is_copied_stay_listed(
    tmp_path: Path, pg_schema: str
) -> None:
    # runs.first_id must stay a lower bound of the run's job ids: the migration writes the run,
    # a worker enqueues into it (a low id), then the migration writes the run's jobs (higher).
    src = tmp_path / "src.db"
    async with SQLiteQueue.open(src) as queue:
        await queue.enqueue("r", "t", "copied")
    async with mig.open_store(str(src)) as source, mig.open_store(pg(pg_schema)) as target:
        await target.write(source.name, "run", await source.runs())
        async with PostgresQueue.open(PG_DSN, schema=pg_schema) as live:
            enqueued = await live.enqueue("r", "t", "live")
        (row,) = await source.jobs(0, 10)
        assert await target.write(source.name, "job", [{**row, "id": enqueued.id + 50}]) == []
    async with PostgresQueue.open(PG_DSN, schema=pg_schema) as live:
        listed = [j.r2_key for j in (await live.list(run_id="r")).items]
        assert listed == ["live", "copied"]
        assert (await live.run_summary("r")).total == 2


@asyncio_only
async def test_export_then_import_restores_every_row(tmp_path: Path) -> None:
    src, out, back = tmp_path / "src.db", tmp_path / "backup.jsonl", tmp_path / "back.db"
    await populate(src)
    async with mig.open_store(str(src)) as source:
        assert await mig.export_jsonl(source, out) == {"run": 3, "job": 60, "schedule": 0}
    async with mig.open_store(str(out)) as source, mig.open_store(str(back)) as target:
        assert (await mig.run(source, target, now=LATER)).errors == []
    assert dump(back) == dump(src)


@asyncio_only
async def test_live_leases_refuse_the_run_unless_converted(tmp_path: Path, pg_schema: str) -> None:
    src = tmp_path / "src.db"
    clock = FakeClock()
    await populate(src, clock=clock)
    now = clock.time()  # the leases taken by populate() are live at this time
    async with mig.open_store(str(src)) as source, mig.open_store(pg(pg_schema)) as target:
        with pytest.raises(MigrationRefused, match=r"10 job\(s\) under a live lease.*--convert"):
            await mig.run(source, target, now=now)
        assert (await target.counts())["runs"] == 0  # refused before writing anything
        report = await mig.run(source, target, now=now, convert_leases=True)
        assert (report.errors, report.converted_leases) == ([], 10)
        counts = await target.counts()
        assert (
            "leased" not in counts and counts["pending"] == (await source.counts())["pending"] + 10
        )


@asyncio_only
async def test_a_bad_row_is_reported_and_the_others_are_copied(
    tmp_path: Path, pg_schema: str
) -> None:
    src = tmp_path / "src.db"
    await populate(src)
    async with mig.open_store(pg(pg_schema)) as target:
        # The target already holds a job of its own under id 5: it must be left alone.
        await target.conn.execute(
            "INSERT INTO jobs (id, run_id, tenant_id, r2_key, max_attempts, available_at, "
            "created_at, updated_at) VALUES (5, 'other', 't9', 'x', 5, 0, 0, 0)"
        )
        await target.conn.execute(
            "INSERT INTO runs (run_id, tenant_id, created_at, updated_at, total) "
            "VALUES ('other', 't9', 0, 0, 1)"
        )
    async with mig.open_store(str(src)) as source, mig.open_store(pg(pg_schema)) as target:
        report = await mig.run(source, target, now=LATER)
        assert [(e.kind, e.key) for e in report.errors] == [("job", "5")]
        assert "did not write; left alone" in report.errors[0].message
        assert report.written == {"run": 3, "job": 59, "schedule": 0}
        # Rollback deletes what this source copied, and only that.
        undone = await mig.rollback(source.name, target)
        assert (undone.errors, undone.written) == ([], {"job": 59, "run": 3, "schedule": 0})
        assert await target.counts() == {"pending": 1, "runs": 1, "schedules": 0}


@pytest.mark.slow
def test_an_interrupted_run_resumed_loses_and_duplicates_nothing(
    tmp_path: Path, pg_schema: str
) -> None:
    src = tmp_path / "src.db"
    anyio.run(populate, src, 3000)
    command = [
        sys.executable,
        "-m",
        "actors",
        "store",
        "migrate",
        "run",
        "--from",
        str(src),
        "--to",
        pg(pg_schema),
        "--batch",
        "50",
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    copied = 0
    while copied < 200:  # kill it part-way through the jobs
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
        rows = pg_admin(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'migrated_rows'",
            pg_schema,
        )
        if rows[0][0]:
            copied = pg_admin(f"SELECT count(*) FROM {pg_schema}.migrated_rows")[0][0]
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    partial = pg_admin(f"SELECT count(*) FROM {pg_schema}.jobs")[0][0]
    assert 0 < partial < 3000
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "every row verified" in resumed.stdout
    status = subprocess.run(
        [*command[:5], "status", *command[6:10]], capture_output=True, text=True, timeout=60
    )
    assert "complete: the target holds every row" in status.stdout, status.stdout
    ids = pg_admin(f"SELECT id FROM {pg_schema}.jobs ORDER BY id")
    assert [r[0] for r in ids] == list(range(1, 3001))  # nothing lost, nothing twice
    totals = pg_admin(f"SELECT sum(total), sum(done), sum(failed) FROM {pg_schema}.runs")
    src_counts = dict(sqlite3.connect(src).execute("SELECT status, count(*) FROM jobs GROUP BY 1"))
    assert tuple(totals[0]) == (3000, src_counts["done"], src_counts["failed"])


async def test_an_export_from_before_the_new_columns_imports_with_their_defaults(
    tmp_path: Path,
) -> None:
    src, out, back = tmp_path / "src.db", tmp_path / "old.jsonl", tmp_path / "back.db"
    await populate(src, 6)
    async with mig.open_store(str(src)) as source:
        await mig.export_jsonl(source, out)
    new = ("lease_owner", "started_at", "cross_tenant_key", "timeout_seconds")
    lines = []
    for line in out.read_bytes().splitlines():  # as an export written before them
        row = msgspec.json.decode(line)
        lines.append(msgspec.json.encode({k: v for k, v in row.items() if k not in new}))
    out.write_bytes(b"\n".join(lines) + b"\n")
    async with mig.open_store(str(out)) as source, mig.open_store(str(back)) as target:
        assert (await mig.run(source, target, now=LATER)).errors == []
    async with SQLiteQueue.open(back) as queue:
        jobs = (await queue.list()).items
    assert len(jobs) == 6
    assert all(
        (j.cross_tenant_key, j.timeout_seconds, j.lease_owner) == (False, None, None) for j in jobs
    )
