"""`store migrate` and `store export` carry schedules: SQLite -> SQLite, SQLite -> PostgreSQL and
a JSON-lines backup; copied once, verified, re-run safely, conflicts reported like jobs'."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import PG_DSN

from actors.queue import NewJob, SQLiteQueue
from actors.queue import migrate as mig
from actors.queue.model import NewSchedule, Schedule
from actors.queue.postgres._queue import PostgresQueue
from supervisors.clock import FakeClock

# asyncpg, under the migration, runs on asyncio only (the CLI runs it there too).
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
pytestmark = pytest.mark.anyio

LATER = 1e12
SCHEDULES = (
    NewSchedule(
        name="nightly",
        tenant_id="acme",
        r2_key="acme/r.md",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        payload={"kind": "report", "é": [1, 2.5]},
        priority=3,
        missed="skip",
        grace_seconds=120.0,
    ),
    NewSchedule(name="refresh", tenant_id="acme", r2_key="acme/feed.json", interval_seconds=600),
    # The same name in another tenant: a schedule's key is its tenant and its name.
    NewSchedule(name="refresh", tenant_id="globex", r2_key="globex/f.json", interval_seconds=60),
)


async def populate(path: Path, clock: FakeClock) -> list[Schedule]:
    """Schedules, one of which has fired (its next tick moved, its job enqueued), and a job."""
    async with SQLiteQueue.open(path, clock=clock) as queue:
        await queue.enqueue_many([NewJob(run_id="r", tenant_id="acme", r2_key="acme/x")])
        for schedule in SCHEDULES:
            await queue.create_schedule(schedule)
        clock.advance(61)  # globex's 60 s interval is due once
        fired = await queue.fire_schedules()
        assert [j.tenant_id for j in fired.jobs] == ["globex"]
        return await queue.list_schedules()


@contextlib.asynccontextmanager
async def opened(spec: str, clock: FakeClock) -> AsyncIterator[Any]:
    """The queue of ``spec`` as its workers open it."""
    if spec.startswith("postgresql://"):
        schema = spec.split("search_path=")[1]
        async with PostgresQueue.open(PG_DSN, schema=schema, clock=clock) as queue:
            yield queue
    else:
        async with SQLiteQueue.open(Path(spec), clock=clock) as queue:
            yield queue


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "target.db")
    return f"{PG_DSN}?search_path={request.getfixturevalue('pg_schema')}"


@asyncio_only
async def test_schedules_are_copied_verified_and_skipped_when_copied_again(
    tmp_path: Path, target: str
) -> None:
    clock = FakeClock()
    source_db = tmp_path / "source.db"
    expected = await populate(source_db, clock)
    async with mig.open_store(str(source_db)) as source, mig.open_store(target) as into:
        report = await mig.run(source, into, now=LATER)
        assert report.errors == report.conflicts == []
        assert report.written == {"run": 2, "job": 2, "schedule": 3}
        found = await mig.status(source, into, now=LATER)
        assert found.complete and found.source == found.target
        assert found.target["schedules"] == 3 and found.copied["schedule"] == 3
        again = await mig.run(source, into, now=LATER)
        assert (again.written["schedule"], again.identical["schedule"]) == (0, 3)
    async with opened(target, clock) as queue:
        assert await queue.list_schedules() == expected
        # The next tick came over: what fired in the source does not fire again here.
        assert (await queue.fire_schedules()).jobs == []
        clock.advance(60)
        assert [j.tenant_id for j in (await queue.fire_schedules()).jobs] == ["globex"]


@asyncio_only
async def test_a_schedule_that_fired_in_the_target_is_a_conflict_left_alone(
    tmp_path: Path, target: str
) -> None:
    clock = FakeClock()
    source_db = tmp_path / "source.db"
    await populate(source_db, clock)
    async with mig.open_store(str(source_db)) as source, mig.open_store(target) as into:
        assert (await mig.run(source, into, now=LATER)).errors == []
    # After the cut-over the target's scheduler fires globex's tick (its row moves on), and
    # someone changes every schedule in the old source.
    async with opened(target, clock) as queue:
        clock.advance(60)
        assert len((await queue.fire_schedules()).jobs) == 1
        moved = {(s.tenant_id, s.name): s for s in await queue.list_schedules()}
    async with SQLiteQueue.open(source_db, clock=clock) as old:
        for schedule in SCHEDULES:
            await old.create_schedule(
                NewSchedule(**{**_fields(schedule), "r2_key": f"{schedule.tenant_id}/new"})
            )
    async with mig.open_store(str(source_db)) as source, mig.open_store(target) as into:
        report = await mig.run(source, into, now=LATER)
        assert [(c.kind, c.key) for c in report.conflicts] == [("schedule", "globex/refresh")]
        assert "fired there" in report.conflicts[0].message
        assert report.written["schedule"] == 2  # changed in the source alone: copied again
        found = await mig.status(source, into, now=LATER)
        assert not found.complete and found.conflicts["schedule"] == 1
        # Rollback keeps the one that moved on in the target, deletes the other two.
        undone = await mig.rollback(source.name, into)
        assert [(c.kind, c.key) for c in undone.conflicts] == [("schedule", "globex/refresh")]
    async with opened(target, clock) as queue:
        (kept,) = await queue.list_schedules()
        assert kept == moved["globex", "refresh"]


@asyncio_only
async def test_an_export_carries_the_schedules_and_a_copy_from_it_restores_them(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    source_db, out, back = tmp_path / "source.db", tmp_path / "backup.jsonl", tmp_path / "b.db"
    expected = await populate(source_db, clock)
    async with mig.open_store(str(source_db)) as source:
        assert await mig.export_jsonl(source, out) == {"run": 2, "job": 2, "schedule": 3}
    async with mig.open_store(str(out)) as source, mig.open_store(str(back)) as into:
        report = await mig.run(source, into, now=LATER)
        assert report.errors == [] and report.written["schedule"] == 3
    async with SQLiteQueue.open(back, clock=clock) as queue:
        assert await queue.list_schedules() == expected


@pytest.mark.slow  # three `python -m actors` processes
def test_the_cli_reports_the_schedules_it_copies_exports_and_rolls_back(tmp_path: Path) -> None:
    import anyio

    source_db, target_db, out = tmp_path / "s.db", tmp_path / "t.db", tmp_path / "b.jsonl"
    anyio.run(populate, source_db, FakeClock())

    def actors(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "actors", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    between = ("--from", str(source_db), "--to", str(target_db))
    copied = actors("store", "migrate", "run", *between)
    assert "schedules: 3 written, 0 already there" in copied
    status = actors("store", "migrate", "status", *between)
    assert "schedules: 3 identical, 0 missing" in status
    exported = actors("store", "export", "--from", str(source_db), "--out", str(out))
    assert "3 schedule(s)" in exported
    rolled = actors(
        "store", "migrate", "rollback", "--from", str(source_db), "--to", str(target_db)
    )
    assert "3 schedule(s)" in rolled


def _fields(schedule: NewSchedule) -> dict[str, Any]:
    return {f: getattr(schedule, f) for f in schedule.__struct_fields__}
