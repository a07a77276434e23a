"""Fair shares between tenants: a small tenant is served within a pull or two whatever another
tenant's backlog, weights and priorities combine as documented, and fairness can be turned off.
On SQLite and PostgreSQL (the `queue` fixture)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import OpenQueue

from actors.errors import MigrationRefused
from actors.queue import NewJob

pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


async def enqueue_for(queue: Any, tenant: str, count: int, **options: Any) -> None:
    for start in range(0, count, 1000):
        await queue.enqueue_many(
            [
                NewJob(run_id=f"run-{tenant}", tenant_id=tenant, r2_key=f"{tenant}/{i}", **options)
                for i in range(start, min(count, start + 1000))
            ]
        )


async def test_every_job_of_a_small_tenant_is_leased_within_the_first_pulls(queue: Any) -> None:
    await enqueue_for(queue, "a", 10_000)
    await enqueue_for(queue, "b", 10)
    pulls = [await queue.pull(max=10) for _ in range(3)]
    served_b = [sum(j.tenant_id == "b" for j in jobs) for jobs in pulls]
    # Turns: a, b, a, b, ...: half of each pull is b's while b has jobs.
    assert served_b == [5, 5, 0]
    assert [len(jobs) for jobs in pulls] == [10, 10, 10]


async def test_many_tenants_are_served_in_turns_across_pulls(queue: Any) -> None:
    for t in range(30):
        await enqueue_for(queue, f"t{t:02}", 3)
    seen: list[str] = []
    for _ in range(3):
        jobs = await queue.pull(max=10)
        assert len({j.tenant_id for j in jobs}) == 10  # one each: ten tenants per pull
        seen += [j.tenant_id for j in jobs]
    # Three pulls of ten served all thirty tenants once: the turn goes on where it stopped.
    assert sorted(seen) == [f"t{t:02}" for t in range(30)]


async def test_a_delayed_backlog_does_not_take_a_turn(queue: Any, clock: Any) -> None:
    await enqueue_for(queue, "later", 50, delay_seconds=60)
    await enqueue_for(queue, "now", 5)
    now = await queue.pull(max=10, visibility_seconds=600)
    assert sorted(j.tenant_id for j in now) == ["now"] * 5
    clock.advance(61)
    assert len(await queue.pull(max=100)) == 50


async def test_without_fairness_the_highest_priority_goes_first_across_tenants(
    open_queue: OpenQueue,
) -> None:
    async with open_queue(fair=False) as queue:
        await enqueue_for(queue, "a", 20)
        await enqueue_for(queue, "b", 5, priority=1)
        first = await queue.pull(max=10)
        assert [j.tenant_id for j in first] == ["b"] * 5 + ["a"] * 5
        await queue.pause("a")
        assert await queue.pull(max=10) == []
        await queue.resume("a")
        await queue.set_tenant_limits("a", max_leased=8)
        assert len(await queue.pull(max=10)) == 3  # a's limit holds without fairness too


async def test_controls_survive_reopening_the_queue(open_queue: OpenQueue) -> None:
    async with open_queue() as queue:
        await queue.pause()
        await queue.pause("t")
        await queue.set_tenant_limits("u", weight=2, max_leased=4, max_per_second=1.5)
        await enqueue_for(queue, "t", 3)
    async with open_queue() as queue:
        controls = await queue.controls()
        assert controls.paused
        assert [
            (c.tenant_id, c.paused, c.weight, c.max_leased, c.max_per_second)
            for c in controls.tenants
        ] == [("t", True, 1, None, None), ("u", False, 2, 4, 1.5)]
        assert await queue.pull(max=10) == []


def test_undoing_the_controls_migration_refuses_to_forget_a_pause(tmp_path: Any) -> None:
    import anyio

    from actors.queue import SQLiteQueue
    from actors.queue.sqlite import schema

    db = tmp_path / "q.db"

    async def pause() -> None:
        async with SQLiteQueue.open(db) as queue:
            await queue.pause("t")

    anyio.run(pause)
    conn = schema.connect(db)
    with pytest.raises(MigrationRefused, match="queue_controls"):
        schema.migrate_down(conn, db, 6)
    above_6 = [m.version for m in schema.MIGRATIONS if m.version > 6]
    assert schema.migrate_down(conn, db, 6, force=True) == above_6[::-1]
    assert schema.migrate_up(conn, db) == above_6
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"queue_controls", "jobs_tenant_claim"} <= names


def test_an_idle_or_one_tenant_fair_pull_is_one_statement_after_the_reap(tmp_path: Any) -> None:
    """What fairness costs the common cases: nothing. An idle queue's pull and one tenant's pull
    each run the reap and one statement, as the claim before fairness did; a change of case
    (jobs arriving, running out, a second tenant) costs one statement more, once."""
    from actors.queue.sqlite import _verbs as store
    from actors.queue.sqlite import schema

    db = tmp_path / "q.db"
    conn = schema.connect(db)
    schema.migrate_up(conn, db)
    rotation = store.Rotation()
    statements: list[str] = []

    def name_of(sql: str) -> str:  # the trace shows each statement with its parameters bound
        if "jobs_lease_expiry" in sql:
            return "reap"
        if "t.first" in sql:
            return "probe"
        if sql.split()[0] == "UPDATE" and "SET status = 'leased'" in sql:
            return "claim if alone" if "min(tenant_id)" in sql else "claim"
        return sql

    def record(sql: str) -> None:
        name = name_of(sql)
        # A trigger's program is traced under its statement's text: one statement, not two.
        if not statements or statements[-1] != name:
            statements.append(name)

    def pull(max: int = 1) -> tuple[list[str], list[str]]:
        statements.clear()
        conn.set_trace_callback(record)
        try:
            jobs = store.pull(conn, 1000.0, max, 60, None, rotation=rotation)
        finally:
            conn.set_trace_callback(None)
        return [job.tenant_id for job in jobs], list(statements)

    def enqueue(tenant: str, count: int) -> None:
        news = [NewJob(run_id=f"r-{tenant}", tenant_id=tenant, r2_key=f"{i}") for i in range(count)]
        store.enqueue(conn, 1000.0, news, 5)

    assert pull() == ([], ["reap", "probe"])
    assert pull() == ([], ["reap", "probe"])
    enqueue("a", 3)
    assert pull() == (["a"], ["reap", "probe", "claim"])  # jobs arrived: once more
    assert pull() == (["a"], ["reap", "claim if alone"])
    assert pull() == (["a"], ["reap", "claim if alone"])
    assert pull() == ([], ["reap", "claim if alone", "probe"])  # ran out: once more
    assert pull() == ([], ["reap", "probe"])
    enqueue("a", 10)
    assert pull() == (["a"], ["reap", "probe", "claim"])
    assert pull() == (["a"], ["reap", "claim if alone"])
    enqueue("b", 2)
    # A second tenant: the gated claim leases nothing and the turns decide, b at once.
    first, ran = pull(max=2)
    assert sorted(first) == ["a", "b"] and ran[:3] == ["reap", "claim if alone", "probe"]
    second, ran = pull(max=2)
    assert sorted(second) == ["a", "b"] and ran[:2] == ["reap", "probe"]
