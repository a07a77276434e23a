"""The `Scheduler` child on a fake clock: configured schedules written into the queue, each
tick fired once by whichever of several schedulers sharing the queue gets to it first."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import asyncpg
import msgspec
import pytest
from conftest import OpenQueue
from pg_helpers import PG_DSN

from actors.config import Config, PipelineConfig, QueueConfig, ScheduleConfig, StorageConfig
from actors.cron import tick_text
from actors.errors import ForeignObjectKey, MigrationRefused
from actors.pipeline import Scheduler
from actors.queue import NewSchedule, SQLiteQueue
from actors.queue.postgres import schema as postgres_schema
from actors.queue.postgres._queue import PostgresQueue
from actors.queue.sqlite import schema as sqlite_schema
from actors.system import ActorSystem
from supervisors.clock import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio", "trio")]

EVERY_10 = NewSchedule(name="ten", tenant_id="t", r2_key="t/a", interval_seconds=10)


async def test_schedulers_sharing_a_queue_fire_each_tick_once_and_skip_a_refused_schedule(
    open_queue: OpenQueue, clock: FakeClock
) -> None:
    # One configured schedule the queue refuses (no such time zone here): it is logged and
    # left out, and the good one fires all the same.
    bad = NewSchedule(name="bad", tenant_id="t", r2_key="t/b", cron="* * * * *", timezone="X/Y")
    async with open_queue() as a, open_queue() as b, open_queue() as c:
        schedulers = [
            Scheduler(queue=q, schedules=[EVERY_10, bad], clock=clock, poll_seconds=3)
            for q in (a, b, c)
        ]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for scheduler in schedulers:
                    await tg.start(scheduler.run)
                for _ in range(20):  # 60 s, in steps shorter than the poll and the interval
                    await clock.wait_for_sleepers(3)
                    clock.advance(3)
                await clock.wait_for_sleepers(3)
                tg.cancel_scope.cancel()
        fired = [key for scheduler in schedulers for key in scheduler.fired]
        assert len(fired) == len(set(fired)) == 6  # ticks at +10 .. +60 (the start is +0)
        assert [s.name for s in await a.list_schedules()] == ["ten"]
        assert len((await a.list(tenant_id="t")).items) == 6


@pytest.mark.runtimes("asyncio")
async def test_an_actor_system_writes_its_configured_schedules_and_fires_their_ticks(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    config = Config(
        queue=QueueConfig(path=str(tmp_path / "q.db")),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        schedules=(ScheduleConfig(name="ten", tenant_id="t", r2_key="t/a", interval_seconds=10),),
    )
    async with ActorSystem(config, clock=clock) as system:
        with anyio.fail_after(20):
            while not await system.list_schedules():
                await anyio.sleep(0.01)
            (written,) = await system.list_schedules()
            # Step the clock until the tick fires (however the scheduler's sleeps fall).
            while not (await system.queue.list(tenant_id="t")).items:
                if clock.time() < written.next_tick_at:
                    clock.advance(1)
                await anyio.sleep(0.01)
        (job,) = (await system.queue.list(tenant_id="t")).items
        assert job.run_id == f"schedule:t:ten:{tick_text(written.next_tick_at)}"
        # The Python API keeps the tenancy rule: a schedule's key lies under its tenant.
        with pytest.raises(ForeignObjectKey):
            await system.create_schedule(
                NewSchedule(name="x", tenant_id="t", r2_key="u/a", interval_seconds=5)
            )
        added = await system.create_schedule(msgspec.structs.replace(EVERY_10, name="more"))
        assert added.next_tick_at == (clock.time() // 10 + 1) * 10
        assert (await system.delete_schedule("t", "more")).name == "more"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite, else a PostgreSQL schema (prepared here, outside the event loop)."""
    return str(request.getfixturevalue("pg_schema")) if request.param == "postgres" else None


@pytest.mark.runtimes("asyncio")
async def test_migrating_down_past_schedules_refuses_to_drop_them_unless_forced(
    store: str | None, tmp_path: Path
) -> None:
    clock = FakeClock()
    if store is None:
        db = tmp_path / "q.db"
        async with SQLiteQueue.open(db, clock=clock) as queue:
            await queue.create_schedule(EVERY_10)
        conn = sqlite3.connect(db, isolation_level=None)
        with pytest.raises(MigrationRefused, match="would delete 1 rows in schedules"):
            sqlite_schema.migrate_down(conn, db, 7)
        above = [m.version for m in reversed(sqlite_schema.MIGRATIONS) if m.version > 7]
        assert 8 in above and sqlite_schema.migrate_down(conn, db, 7, force=True) == above
        assert sqlite_schema.current_version(conn) == 7
        conn.close()
        async with SQLiteQueue.open(db, clock=clock) as queue:  # up again: none left
            assert await queue.list_schedules() == []
        return
    schema = store
    async with PostgresQueue.open(PG_DSN, schema=schema, clock=clock) as pg:
        await pg.create_schedule(EVERY_10)
    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
    try:
        with pytest.raises(MigrationRefused, match="would delete 1 rows in schedules"):
            await postgres_schema.migrate_down(conn, "t", 8)
        above = [m.version for m in reversed(postgres_schema.MIGRATIONS) if m.version > 8]
        assert 9 in above
        assert await postgres_schema.migrate_down(conn, "t", 8, force=True) == above
        assert await postgres_schema.current_version(conn) == 8
    finally:
        await conn.close()
    async with PostgresQueue.open(PG_DSN, schema=schema, clock=clock) as pg:
        assert await pg.list_schedules() == []
