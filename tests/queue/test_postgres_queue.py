"""PostgreSQL only: SKIP LOCKED claims, killed connections, NOTIFY between processes, migrations."""

from __future__ import annotations

import json
from typing import Any

import anyio
import asyncpg
import pytest
import structlog
from pg_helpers import PG_DSN, pg_admin, pg_runs

from actors.errors import InvalidArgument, MigrationRefused, SchemaTooNew
from actors.queue import Ack, Backoff, NewJob
from actors.queue.postgres import schema as pg_schema_module
from actors.queue.postgres._queue import PostgresQueue
from actors.queue.postgres._sql import CLAIM
from supervisors.clock import FakeClock

pytestmark = pytest.mark.anyio


def jobs(n: int, run_id: str = "r") -> list[NewJob]:
    return [NewJob(run_id=run_id, tenant_id="t", r2_key=str(i)) for i in range(n)]


# The raw connections below are asyncpg's, which runs on asyncio only.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


async def admin(sql: str, *args: object) -> list[asyncpg.Record]:
    return await anyio.to_thread.run_sync(lambda: pg_admin(sql, *args))


@asyncio_only
async def test_a_claim_skips_rows_another_open_transaction_holds(pg_schema: str) -> None:
    async with PostgresQueue.open(PG_DSN, schema=pg_schema) as queue:
        await queue.enqueue_many(jobs(5))
        # An open READ COMMITTED transaction holds the first two jobs' row locks.
        other = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema})
        try:
            tx = other.transaction(isolation="read_committed")
            await tx.start()
            held = await other.fetch(CLAIM, 1e12, 2, 2e12, "other", "t", None, False)
            with anyio.fail_after(5):  # it skips them instead of waiting for them
                mine = await queue.pull(max=5)
            assert {j.id for j in mine}.isdisjoint(r["id"] for r in held)
            assert len(mine) == 3
            await tx.rollback()
        finally:
            await other.close()
        assert len(await queue.pull(max=5)) == 2  # rolled back: pending again


async def test_two_queues_claiming_at_once_never_lease_one_job_twice(pg_schema: str) -> None:
    async with (
        PostgresQueue.open(PG_DSN, schema=pg_schema, pool_size=4) as a,
        PostgresQueue.open(PG_DSN, schema=pg_schema, pool_size=4) as b,
    ):
        await a.enqueue_many(jobs(600))
        leased: list[int] = []

        async def claimer(queue: PostgresQueue) -> None:
            while batch := await queue.pull(max=7):
                leased.extend(j.id for j in batch)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(8):
                    tg.start_soon(claimer, (a, b)[n % 2])
        assert len(leased) == len(set(leased)) == 600


async def test_killed_connections_are_retried_and_lose_nothing(pg_schema: str) -> None:
    clock = FakeClock()
    async with PostgresQueue.open(
        PG_DSN, schema=pg_schema, clock=clock, backoff=Backoff(jitter=0.0), pool_size=3
    ) as queue:
        await queue.enqueue_many(jobs(300))
        acked: list[int] = []

        async def kill_backends() -> None:
            for _ in range(15):
                await anyio.sleep(0.03)
                await admin(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    f"actors {pg_schema}",
                )

        async def work() -> None:
            while (await queue.stats()).done < 300:
                batch = await queue.pull(max=10, visibility_seconds=30)
                if not batch:  # leases taken by a pull whose reply was lost: let them expire
                    clock.advance(31)
                    continue
                results = await queue.ack_many(
                    [
                        Ack(job_id=j.id, lease_token=j.lease_token or "", run_metrics={"n": 1})
                        for j in batch
                    ]
                )
                acked.extend(r.job_id for r in results if r.ok)

        with structlog.testing.capture_logs() as logs, anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_backends)
                await work()
        assert any(e["event"] == "queue.pg_retry" for e in logs)
        stats = await queue.stats()
        assert (stats.done, stats.total) == (300, 300)
        summary = await queue.run_summary("r")
        # Each job's ack was applied once: a retried ack is a duplicate, its metrics not re-added.
        assert summary.metrics == {"n": 300.0}
        assert (summary.done, summary.status) == (300, "done")


async def test_queues_opened_at_once_on_a_new_schema_all_start(pg_schema: str) -> None:
    # Workers started together race to create their schema: CREATE SCHEMA IF NOT EXISTS lets
    # two of them insert it into the catalog, and the loser's insert fails.
    started: list[int] = []

    async def open_one(n: int) -> None:
        async with PostgresQueue.open(PG_DSN, schema=pg_schema):
            started.append(n)

    for round_ in range(3):
        await admin(f"DROP SCHEMA IF EXISTS {pg_schema} CASCADE")
        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(open_one, round_ * 6 + n)
    assert sorted(started) == list(range(18))


async def test_an_enqueue_in_another_process_wakes_this_ones_subscribers(pg_schema: str) -> None:
    async with (
        PostgresQueue.open(PG_DSN, schema=pg_schema) as mine,
        PostgresQueue.open(PG_DSN, schema=pg_schema) as theirs,
    ):
        woken = anyio.Event()
        mine.on_enqueue(woken.set)
        await anyio.sleep(0.2)  # the listening connection comes up in the background
        await theirs.enqueue("r", "t", "k")
        with anyio.fail_after(5):
            await woken.wait()


async def test_a_queue_listens_only_while_someone_subscribes(pg_schema: str) -> None:
    async def listeners() -> int:
        rows = await admin(
            # The listener's last statement: it listens for enqueues, then for cancels.
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
            f'LISTEN "actors_cancelled_{pg_schema}"',
        )
        return int(rows[0][0])

    async def until(n: int) -> None:
        with anyio.fail_after(5):
            while await listeners() != n:
                await anyio.sleep(0.02)

    async with (
        PostgresQueue.open(PG_DSN, schema=pg_schema) as mine,
        PostgresQueue.open(PG_DSN, schema=pg_schema) as theirs,
    ):
        await mine.enqueue("r", "t", "before")
        assert await listeners() == 0  # nobody subscribed: no listening connection
        woken: list[int] = []
        unsubscribe = mine.on_enqueue(lambda: woken.append(1))
        await until(1)
        with anyio.fail_after(5):  # listening, it wakes its subscribers once
            while not woken:
                await anyio.sleep(0.01)
        woken.clear()
        await theirs.enqueue("r", "t", "k")
        with anyio.fail_after(5):
            while not woken:
                await anyio.sleep(0.01)
        unsubscribe()
        await until(0)  # the last subscriber gone, the listener closes


async def test_a_cancel_in_another_process_wakes_the_holders_cancel_subscribers(
    pg_schema: str,
) -> None:
    # A NOTIFY in the cancel's statement: a worker renews at once instead of at its next round.
    async with (
        PostgresQueue.open(PG_DSN, schema=pg_schema) as mine,
        PostgresQueue.open(PG_DSN, schema=pg_schema) as theirs,
    ):
        await mine.enqueue("r", "t", "k")
        (job,) = await mine.pull(max=1)
        heard: list[int] = []
        unsubscribe = mine.on_cancel(lambda: heard.append(1))
        try:
            with anyio.fail_after(5):
                while not await listening(pg_schema):
                    await anyio.sleep(0.02)
            await theirs.cancel_many([job.id])
            with anyio.fail_after(5):
                while not heard:
                    await anyio.sleep(0.01)
        finally:
            unsubscribe()


async def listening(schema: str) -> bool:
    rows = await admin(
        "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
        f'LISTEN "actors_cancelled_{schema}"',
    )
    return bool(rows[0][0])


async def test_a_subscriber_is_woken_for_an_enqueue_right_after_it_subscribes(
    pg_schema: str,
) -> None:
    # As the lease manager does: subscribe, look (nothing), wait for a wake-up, look again. An
    # enqueue by another process in the moment before the listener's LISTEN must still wake it.
    async with (
        PostgresQueue.open(PG_DSN, schema=pg_schema) as mine,
        PostgresQueue.open(PG_DSN, schema=pg_schema) as theirs,
    ):
        for attempt in range(10):
            woken = [anyio.Event()]
            unsubscribe = mine.on_enqueue(lambda woken=woken: woken[-1].set())
            assert await mine.pull(max=1) == []
            await theirs.enqueue("r", "t", str(attempt))
            with anyio.fail_after(3):  # it waits for a wake-up before it looks again
                while True:
                    await woken[-1].wait()
                    woken.append(anyio.Event())
                    if jobs := await mine.pull(max=1):
                        break
            await mine.ack(jobs[0].id, jobs[0].lease_token or "")
            unsubscribe()
            await anyio.sleep(0.05)  # the listener stops: the next subscription starts one


async def test_connections_that_died_while_idle_are_replaced_without_a_retry(
    pg_schema: str,
) -> None:
    async with PostgresQueue.open(PG_DSN, schema=pg_schema, pool_size=6) as queue:
        async with anyio.create_task_group() as tg:  # six connections, then idle
            for i in range(6):
                tg.start_soon(queue.enqueue, "r", "t", str(i))
        killed = await admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            f"actors {pg_schema}",
        )
        assert len(killed) >= 2
        await anyio.sleep(0.2)  # the client sees the sockets close
        with structlog.testing.capture_logs() as logs:
            assert (await queue.stats()).pending == 6
        assert [e for e in logs if e["event"] == "queue.pg_retry"] == []


async def test_more_concurrent_calls_than_pooled_connections_wait_their_turn(
    pg_schema: str,
) -> None:
    async with PostgresQueue.open(PG_DSN, schema=pg_schema, pool_size=2) as queue:
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(queue.enqueue, "r", "t", str(i))
        connections = await admin(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            f"actors {pg_schema}",
        )
        assert connections[0][0] <= 2
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(queue.pull, 2)
        assert (await queue.stats()).leased == 40


async def test_acks_from_many_connections_close_the_run_exactly_once_every_job_ends(
    pg_schema: str,
) -> None:
    # Each connection adds to its own count shard (`run_counts`); the run's state is their sum,
    # and it is finished, at the time its last job finished, exactly while no job is not.
    clock = FakeClock()
    opened = [
        PostgresQueue.open(PG_DSN, schema=pg_schema, clock=clock, pool_size=4) for _ in range(3)
    ]
    async with opened[0] as a, opened[1] as b, opened[2] as c:
        queues = [a, b, c]
        await a.enqueue_many(jobs(60))
        leased = await a.pull(max=60, visibility_seconds=100)
        clock.advance(10)
        last, rest = leased[0], leased[1:]

        async def ack(queue: PostgresQueue, batch: list[Any]) -> None:
            for job in batch:
                await queue.ack(job.id, job.lease_token or "", run_metrics={"n": 1})

        async with anyio.create_task_group() as tg:
            for n, queue in enumerate(queues):
                for part in range(3):
                    tg.start_soon(ack, queue, rest[n * 3 + part :: 9])
        summary = await b.run_summary("r")
        assert (summary.done, summary.pending, summary.status) == (59, 0, "processing")
        assert summary.finished_at is None
        shards = await admin(f"SELECT count(*) FROM {pg_schema}.run_counts")
        assert 1 <= shards[0][0] <= pg_schema_module.SHARDS
        clock.advance(10)
        await c.ack(last.id, last.lease_token or "", run_metrics={"n": 1})
        summary = await a.run_summary("r")
        assert (summary.done, summary.total, summary.status) == (60, 60, "done")
        assert (summary.finished_at, summary.metrics) == (clock.time(), {"n": 60.0})
        # A new job reopens the run; its failure closes it again; a requeue reopens it.
        clock.advance(10)
        await b.enqueue("r", "t", "late")
        assert (await c.run_summary("r")).finished_at is None
        (job,) = await c.pull(max=1, visibility_seconds=100)
        await c.ack(job.id, job.lease_token or "", status="failed", error="bad", permanent=True)
        summary = await a.run_summary("r")
        assert (summary.failed, summary.status, summary.finished_at) == (1, "failed", clock.time())
        assert await a.requeue(run_id="r") == 1
        assert (await b.run_summary("r")).finished_at is None
        clock.advance(10)
        (job,) = await b.pull(max=1, visibility_seconds=100)
        await a.ack(job.id, job.lease_token or "")
        summary = await c.run_summary("r")
        assert (summary.done, summary.failed, summary.total) == (61, 0, 61)
        assert summary.finished_at == clock.time()
        stats = await a.stats()
        assert (stats.done, stats.failed, stats.pending, stats.leased) == (61, 0, 0, 0)


@asyncio_only
async def test_undoing_migration_4_folds_the_count_shards_into_the_runs_rows(
    pg_schema: str,
) -> None:
    clock = FakeClock()
    async with PostgresQueue.open(PG_DSN, schema=pg_schema, clock=clock) as queue:
        await queue.enqueue_many(jobs(5, "a") + jobs(3, "b"))
        for job in await queue.pull(max=8, visibility_seconds=100):
            clock.advance(1)
            status = "failed" if job.r2_key == "0" else "done"
            await queue.ack_many(
                [
                    Ack(
                        job_id=job.id,
                        lease_token=job.lease_token or "",
                        status=status,
                        permanent=True,
                        run_metrics={"tokens": 2.5},
                    )
                ]
            )
        await queue.enqueue("b", "t", "open")
        before = {r: await queue.run_summary(r) for r in ("a", "b")}
    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema})
    try:
        above_3 = [m.version for m in pg_schema_module.MIGRATIONS if m.version > 3]
        assert await pg_schema_module.migrate_down(conn, "t", 3) == above_3[::-1]
        rows = {r["run_id"]: r for r in await conn.fetch("SELECT * FROM runs")}
        for run_id, summary in before.items():
            row = rows[run_id]
            assert (row["done"], row["failed"], row["total"]) == (
                summary.done,
                summary.failed,
                summary.total,
            )
            assert json.loads(row["metrics"]) == summary.metrics
            assert row["finished_at"] == summary.finished_at
        assert rows["a"]["finished_at"] is not None and rows["b"]["finished_at"] is None
        assert await pg_schema_module.migrate_up(conn, "t") == above_3
    finally:
        await conn.close()
    async with PostgresQueue.open(PG_DSN, schema=pg_schema, clock=clock) as queue:
        assert {r: await queue.run_summary(r) for r in ("a", "b")} == before


async def test_run_counts_kept_by_the_verbs_agree_with_the_jobs_table(pg_schema: str) -> None:
    clock = FakeClock()
    async with PostgresQueue.open(PG_DSN, schema=pg_schema, clock=clock) as queue:
        await queue.enqueue_many(jobs(20, "a") + jobs(10, "b"))
        batch = await queue.pull(max=25, visibility_seconds=10)
        await queue.ack_many(
            [Ack(job_id=j.id, lease_token=j.lease_token or "") for j in batch[:12]]
        )
        clock.advance(11)
        await queue.reap()
        clock.advance(100)
        await queue.purge(50)
    counted = await admin(
        f"SELECT run_id, status, count(*) FROM {pg_schema}.jobs GROUP BY 1, 2 ORDER BY 1, 2"
    )
    stored = await anyio.to_thread.run_sync(pg_runs, pg_schema)
    assert len(stored) == 2
    expected = {}
    for run_id, status, n in counted:
        expected.setdefault(run_id, dict.fromkeys(("pending", "leased", "done", "failed"), 0))
        expected[run_id][status] = n
    for row in stored:
        counts = expected[row["run_id"]]
        assert (row["done"], row["failed"]) == (counts["done"], counts["failed"])
        assert row["total"] == sum(counts.values())


async def test_an_enqueue_mixing_tenants_in_a_new_run_writes_nothing(pg_schema: str) -> None:
    # The batch runs without BEGIN/COMMIT; the statement itself must fail, not half-commit.
    async with PostgresQueue.open(PG_DSN, schema=pg_schema) as queue:
        mixed = [
            NewJob(run_id="new", tenant_id="t1", r2_key="a"),
            NewJob(run_id="new", tenant_id="t2", r2_key="b"),
        ]
        with pytest.raises(InvalidArgument, match="run 'new' belongs to tenant"):
            await queue.enqueue_many(mixed)
        assert (await queue.stats()).total == 0
        assert await admin(f"SELECT * FROM {pg_schema}.runs") == []
        assert len(await queue.enqueue_many(mixed[:1])) == 1
        assert (await queue.run_summary("new")).pending == 1


@asyncio_only
async def test_an_enqueue_racing_the_transaction_that_creates_its_run_still_lists_its_jobs(
    pg_schema: str,
) -> None:
    # A run's jobs are listed by id from runs.first_id. Here another transaction creates the
    # run (with a first_id above this enqueue's ids) while the enqueue runs: the enqueue waits
    # for it, cannot vouch for the run from its snapshot, and lowers first_id in its retry.
    async with PostgresQueue.open(PG_DSN, schema=pg_schema) as queue:
        await queue.enqueue("other", "t", "warm")
        rival = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema})
        try:
            tx = rival.transaction()
            await tx.start()
            await rival.execute(
                "INSERT INTO runs (run_id, tenant_id, created_at, updated_at, first_id) "
                "VALUES ('r', 't', 0, 0, 9000000)"
            )
            added: list[Any] = []

            async def enqueue() -> None:
                added.extend(await queue.enqueue_many(jobs(3)))

            async with anyio.create_task_group() as tg:
                tg.start_soon(enqueue)
                await anyio.sleep(0.3)  # the enqueue waits on the rival's run row
                assert not added
                await tx.commit()
        finally:
            await rival.close()
        page = await queue.list(run_id="r")
        assert [j.id for j in page.items] == [j.id for j in added]
        assert (await queue.run_summary("r")).total == 3
        assert (await queue.list(run_id="nobody")).items == []


async def test_a_pull_takes_an_expired_lease_before_a_lower_priority_pending_job(
    pg_schema: str,
) -> None:
    # A pull reaps before it claims, so an expired lease competes for the batch as before.
    clock = FakeClock()
    async with PostgresQueue.open(PG_DSN, schema=pg_schema, clock=clock) as queue:
        urgent = await queue.enqueue("r", "t", "urgent", priority=5)
        (first,) = await queue.pull(max=1, visibility_seconds=10, started=True)
        assert first.id == urgent.id
        await queue.enqueue("r", "t", "later", priority=0)
        clock.advance(11)
        (again,) = await queue.pull(max=1, visibility_seconds=10)
        assert (again.id, again.attempts) == (urgent.id, 2)
        (other,) = await queue.pull(max=1, visibility_seconds=10)
        assert other.r2_key == "later"


@asyncio_only
async def test_migrations_go_up_and_down_and_refuse_what_they_must(pg_schema: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"CREATE SCHEMA {pg_schema}; SET search_path = {pg_schema}")
        latest = pg_schema_module.LATEST_VERSION
        assert await pg_schema_module.migrate_up(conn, "t", target=1) == [1]
        await conn.execute(
            "INSERT INTO jobs (run_id, tenant_id, r2_key, status, max_attempts, available_at, "
            "created_at, updated_at, finished_at) VALUES ('r', 't', 'k', 'done', 5, 1, 1, 2, 2)"
        )
        versions = [m.version for m in pg_schema_module.MIGRATIONS]
        assert await pg_schema_module.migrate_up(conn, "t") == versions[1:]
        row = await conn.fetchrow("SELECT done, total, finished_at FROM runs")
        assert tuple(row) == (1, 1, 2)  # a version-1 schema gets its runs and counts
        with pytest.raises(MigrationRefused, match="would delete 1 rows in runs"):
            await pg_schema_module.migrate_down(conn, "t", 1)
        assert await pg_schema_module.current_version(conn) == latest  # nothing was undone
        assert await pg_schema_module.migrate_down(conn, "t", 0, force=True) == versions[::-1]
        assert await pg_schema_module.current_version(conn) == 0
        await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        await conn.execute("INSERT INTO schema_version VALUES ($1)", latest + 1)
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew, match="written by a newer actors"):
        async with PostgresQueue.open(PG_DSN, schema=pg_schema):
            pass
