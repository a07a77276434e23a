"""Contract: maintenance rounds are claimed in the queue, so sharers do each round once."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from conftest import OpenQueue
from pg_helpers import PG_DSN

from actors.config import QueueConfig
from actors.errors import InvalidArgument, OutOfRange
from actors.pipeline._maintenance import Maintenance, queue_tasks
from actors.queue import NewJob, SQLiteQueue
from actors.queue.postgres import schema as postgres_schema
from actors.queue.postgres._queue import PostgresQueue
from actors.queue.sqlite import schema as schema
from supervisors.clock import FakeClock

# The claim's semantics, the same on both runtimes: asyncio only (see tests/conftest.py);
# concurrent claims keep their trio leg.
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


async def test_a_due_round_is_claimed_once_and_the_next_is_due_an_interval_later(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    first = await queue.claim_maintenance("reap", 5, owner="a")
    assert (first.task, first.claimed, first.round) == ("reap", True, 1)
    assert first.due_at == clock.time() + 5
    again = await queue.claim_maintenance("reap", 5, owner="b")
    assert (again.claimed, again.round, again.due_at) == (False, 1, first.due_at)
    assert (await queue.claim_maintenance("purge", 60, owner="b")).claimed  # tasks are separate
    clock.advance(4)
    assert not (await queue.claim_maintenance("reap", 5, owner="b")).claimed
    clock.advance(1)
    second = await queue.claim_maintenance("reap", 5, owner="b")
    assert (second.claimed, second.round, second.due_at) == (True, 2, clock.time() + 5)


@pytest.mark.runtimes("asyncio", "trio")
async def test_of_many_claims_of_one_due_round_at_once_exactly_one_wins(
    open_queue: OpenQueue,
) -> None:
    async with open_queue() as a, open_queue() as b, open_queue() as c:
        claims: list[Any] = []

        async def claim(queue: Any, owner: str) -> None:
            claims.append(await queue.claim_maintenance("reap", 60, owner=owner))

        async with anyio.create_task_group() as tg:
            for i in range(10):
                for name, queue in (("a", a), ("b", b), ("c", c)):
                    tg.start_soon(claim, queue, f"{name}{i}")
    assert len(claims) == 30
    assert sum(c.claimed for c in claims) == 1
    assert {c.round for c in claims} == {1}


async def test_a_claim_refuses_a_missing_task_name_and_an_empty_interval(
    queue: SQLiteQueue,
) -> None:
    with pytest.raises(InvalidArgument, match="task must be a non-empty string"):
        await queue.claim_maintenance("", 5)
    with pytest.raises(OutOfRange, match="interval_seconds must be more than 0"):
        await queue.claim_maintenance("reap", 0)


@pytest.mark.runtimes("asyncio", "trio")
async def test_queue_objects_sharing_a_queue_do_each_maintenance_round_once(
    open_queue: OpenQueue, clock: FakeClock
) -> None:
    settings = QueueConfig(reap_interval_seconds=5, retention_seconds=10, purge_interval_seconds=20)
    async with open_queue() as a, open_queue() as b, open_queue() as c:
        await a.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(3)])
        leased = await a.pull(max=3, visibility_seconds=7)
        await a.ack(leased[0].id, leased[0].lease_token or "")  # finished at 0, purged at 20
        workers = [
            Maintenance(queue=q, tasks=queue_tasks(q, settings), clock=clock, owner=name)
            for name, q in (("a", a), ("b", b), ("c", c))
        ]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for worker in workers:
                    await tg.start(worker.run)
                for _ in range(12):  # 60 s: reap due at 0, 5, ..., 60; purge at 0, 20, 40, 60
                    await clock.wait_for_sleepers(3)
                    clock.advance(5)
                await clock.wait_for_sleepers(3)
                tg.cancel_scope.cancel()
        rounds = [r for worker in workers for r in worker.rounds]
        # Each round done once, by one of the three, and none skipped.
        assert sorted(rounds) == [("purge", n) for n in range(1, 5)] + [
            ("reap", n) for n in range(1, 14)
        ]
        # The work itself was done: the expired leases were reaped, the old job purged.
        stats = await a.stats()
        assert (stats.pending, stats.leased, stats.done) == (2, 0, 0)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_migrating_down_drops_the_schedule_and_up_brings_it_back(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    clock = FakeClock()
    if store == "sqlite":
        db = tmp_path / "q.db"

        def open_store() -> Any:
            return SQLiteQueue.open(db, clock=clock)
    else:
        pg = request.getfixturevalue("pg_schema")

        def open_store() -> Any:
            return PostgresQueue.open(PG_DSN, schema=pg, clock=clock)

    async with open_store() as queue:
        assert (await queue.claim_maintenance("reap", 60)).round == 1
    if store == "sqlite":
        conn = sqlite3.connect(db, isolation_level=None)
        # Below `maintenance` (5); what came after holds no user data either: no --force.
        above = [m.version for m in schema.MIGRATIONS if m.version >= 5]
        assert schema.migrate_down(conn, db, 4) == above[::-1]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
    else:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg})
        above = [m.version for m in postgres_schema.MIGRATIONS if m.version >= 6]
        assert await postgres_schema.migrate_down(conn, "t", 5) == above[::-1]
        tables = {
            r[0]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", pg)
        }
        await conn.close()
    assert "maintenance" not in tables and "jobs" in tables
    async with open_store() as queue:  # opening migrates up again: every task is due at once
        claim = await queue.claim_maintenance("reap", 60)
        assert (claim.claimed, claim.round) == (True, 1)
