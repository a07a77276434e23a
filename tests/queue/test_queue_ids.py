"""Job ids are never reused, and the columns of SQLite's migration 4 (PostgreSQL's 5) round-trip.

A purged job's id handed to a new job would make a stale reference (a client's saved job id, a
log line, a result URL) point at another job, possibly another tenant's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.errors import InvalidArgument, OutOfRange
from actors.queue import NewJob, SQLiteQueue
from actors.queue.sqlite import schema as schema
from supervisors.clock import FakeClock

# The queue verbs' semantics, the same on both runtimes: asyncio only (see tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


async def finish_and_purge(queue: SQLiteQueue, clock: FakeClock, job_id: int) -> None:
    (job,) = await queue.pull(max=1)
    assert job.id == job_id
    await queue.ack(job.id, job.lease_token or "")
    clock.advance(10)
    assert await queue.purge(older_than_seconds=0) == 1


async def test_a_purged_jobs_id_is_never_handed_out_again(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    first = await queue.enqueue("r", "t", "a")
    second = await queue.enqueue("r", "t", "b")
    await finish_and_purge(queue, clock, first.id)
    await finish_and_purge(queue, clock, second.id)  # the highest id goes
    third = await queue.enqueue("r2", "t2", "c")
    assert third.id > second.id
    await finish_and_purge(queue, clock, third.id)
    fourth = await queue.enqueue_many([NewJob(run_id="r3", tenant_id="t3", r2_key="d")])
    assert fourth[0].id > third.id


def v3_file(db: Path, jobs: int) -> None:
    """A queue file as the code before migration 4 wrote it: `jobs` without AUTOINCREMENT."""
    conn = schema.connect(db)
    schema.migrate_up(conn, db, target=3)
    conn.execute(
        "INSERT INTO runs (run_id, tenant_id, created_at, updated_at, pending) "
        "VALUES ('r', 't', 0, 0, ?)",
        (jobs,),
    )
    for n in range(jobs):
        conn.execute(
            "INSERT INTO jobs (run_id, tenant_id, r2_key, max_attempts, available_at, "
            "created_at, updated_at) VALUES ('r', 't', ?, 5, 0, 0, 0)",
            (f"k{n}",),
        )
    conn.close()


async def test_an_old_file_migrated_never_reuses_ids_after_a_purge(
    db: Path, clock: FakeClock
) -> None:
    v3_file(db, 3)
    async with SQLiteQueue.open(db, clock=clock) as queue:
        summary = await queue.run_summary("r")
        assert (summary.total, summary.pending) == (3, 3)
        jobs = await queue.pull(max=3)
        assert [j.id for j in jobs] == [1, 2, 3]
        assert all(j.lease_owner is None and not j.cross_tenant_key for j in jobs)
        for job in jobs:
            await queue.ack(job.id, job.lease_token or "")
        clock.advance(10)
        assert await queue.purge(older_than_seconds=0) == 3  # every id, the highest too
        new = await queue.enqueue("r", "t", "after")
        assert new.id == 4
        assert (await queue.run_summary("r")).total == 1  # the counting triggers came along
    conn = schema.connect(db)
    assert schema.current_version(conn) == schema.LATEST_VERSION
    above_3 = [m.version for m in schema.MIGRATIONS if m.version > 3]
    assert schema.migrate_down(conn, db, 3) == above_3[::-1]
    assert conn.execute("SELECT id, r2_key FROM jobs").fetchall() == [(4, "after")]
    conn.close()
    async with SQLiteQueue.open(db, clock=clock) as queue:  # up again: the sequence follows
        assert (await queue.enqueue("r", "t", "again")).id == 5


async def test_new_job_fields_round_trip_and_lease_owner_follows_the_lease(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    job = await queue.enqueue("r", "t", "other/k", cross_tenant_key=True, timeout_seconds=30)
    assert (job.cross_tenant_key, job.timeout_seconds) == (True, 30)
    (plain,) = await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key="t/k")])
    assert (plain.cross_tenant_key, plain.timeout_seconds) == (False, None)
    leased = await queue.pull(max=2, visibility_seconds=10, owner="token:abc")
    assert [j.lease_owner for j in leased] == ["token:abc"] * 2
    got = await queue.get(job.id)
    assert (got.cross_tenant_key, got.timeout_seconds, got.lease_owner) == (True, 30, "token:abc")
    await queue.release(job.id, got.lease_token or "")
    assert (await queue.get(job.id)).lease_owner is None  # cleared with the lease
    clock.advance(11)
    assert await queue.reap() == 1
    assert (await queue.get(plain.id)).lease_owner is None


@pytest.mark.parametrize("bad", [0.5, 86_401, float("nan"), -1])
async def test_a_timeout_out_of_bounds_is_refused(queue: SQLiteQueue, bad: float) -> None:
    with pytest.raises(OutOfRange, match="timeout_seconds must be between 1 and 86400"):
        await queue.enqueue("r", "t", "k", timeout_seconds=bad)


async def test_a_cross_tenant_key_flag_must_be_a_bool(queue: SQLiteQueue) -> None:
    with pytest.raises(InvalidArgument, match="cross_tenant_key must be true or false"):
        await queue.enqueue("r", "t", "k", cross_tenant_key=1)  # type: ignore[arg-type]
