"""Contract: pull, renew, release, reap, and fencing by lease token."""

from __future__ import annotations

import anyio
import pytest

from actors.errors import JobNotFound, LeaseLost, OutOfRange
from actors.queue import MAX_VISIBILITY_SECONDS, NewJob, SQLiteQueue
from supervisors.clock import FakeClock

# The queue verbs' semantics, the same on both runtimes: asyncio only (see tests/conftest.py);
# concurrent callers keep their trio leg.
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


async def test_pull_leases_jobs_with_a_fresh_token_and_counts_the_attempt(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    await queue.enqueue("r", "t", "k")
    (job,) = await queue.pull(visibility_seconds=30, worker_id="w1")
    assert job.status == "leased"
    assert job.attempts == 1
    assert job.lease_token
    assert job.lease_expires_at == clock.time() + 30
    assert job.worker_id == "w1"
    assert await queue.pull() == []


async def test_pull_takes_the_highest_priority_first_then_the_oldest(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    await queue.enqueue("r", "t", "old-low")
    clock.advance(1)
    await queue.enqueue("r", "t", "new-high", priority=5)
    clock.advance(1)
    await queue.enqueue("r", "t", "newer-low")
    jobs = await queue.pull(max=10)
    assert [j.r2_key for j in jobs] == ["new-high", "old-low", "newer-low"]


async def test_pull_leases_at_most_max_jobs(queue: SQLiteQueue) -> None:
    await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(7)])
    assert len(await queue.pull(max=3)) == 3
    assert len(await queue.pull(max=10)) == 4


async def test_job_is_redelivered_after_its_lease_expires(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    await queue.enqueue("r", "t", "k")
    (first,) = await queue.pull(visibility_seconds=10, started=True)
    clock.advance(9.9)
    assert await queue.pull() == []
    clock.advance(0.1)
    (second,) = await queue.pull(visibility_seconds=10)
    assert second.id == first.id
    assert second.attempts == 2  # the first lease's job had started: its attempt is spent
    assert second.lease_token != first.lease_token


async def test_renew_extends_a_live_lease(queue: SQLiteQueue, clock: FakeClock) -> None:
    await queue.enqueue("r", "t", "k")
    (job,) = await queue.pull(visibility_seconds=10)
    clock.advance(8)
    renewed = await queue.renew(job.id, job.lease_token or "", 10)
    assert renewed.lease_expires_at == clock.time() + 10
    clock.advance(8)
    assert await queue.pull() == []  # still leased thanks to the renewal


async def test_renew_with_a_stale_token_is_refused_and_changes_nothing(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    await queue.enqueue("r", "t", "k")
    (old,) = await queue.pull(visibility_seconds=10)
    clock.advance(10)
    (new,) = await queue.pull(visibility_seconds=10, worker_id="w2")
    with pytest.raises(LeaseLost, match="leased under another token") as caught:
        await queue.renew(old.id, old.lease_token or "", 60)
    assert caught.value.reason == "superseded"
    assert caught.value.job_id == old.id
    assert await queue.get(new.id) == new


async def test_renew_after_the_lease_expired_is_refused_even_before_anyone_else_pulls(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    await queue.enqueue("r", "t", "k")
    (job,) = await queue.pull(visibility_seconds=10)
    clock.advance(13.1)
    with pytest.raises(LeaseLost, match=r"renewed 3.1s after its lease expired") as caught:
        await queue.renew(job.id, job.lease_token or "", 10)
    assert caught.value.reason == "expired"


async def test_renew_many_reports_each_stale_lease_without_failing_the_others(
    queue: SQLiteQueue,
) -> None:
    await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(2)])
    a, b = await queue.pull(max=2)
    results = await queue.renew_many([(a.id, a.lease_token or ""), (b.id, "stale"), (999, "x")], 30)
    assert [(r.job_id, r.ok, r.reason) for r in results] == [
        (a.id, True, "ok"),
        (b.id, False, "superseded"),
        (999, False, "not_found"),
    ]


async def test_release_returns_the_job_without_spending_an_attempt(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    await queue.enqueue("r", "t", "k")
    (job,) = await queue.pull()
    released = await queue.release(job.id, job.lease_token or "", delay_seconds=5)
    assert released.status == "pending"
    assert released.attempts == 0
    assert released.lease_token is None
    assert await queue.pull() == []
    clock.advance(5)
    (again,) = await queue.pull()
    assert again.attempts == 1


async def test_release_with_a_stale_token_is_refused(queue: SQLiteQueue) -> None:
    await queue.enqueue("r", "t", "k")
    (job,) = await queue.pull()
    await queue.release(job.id, job.lease_token or "")
    with pytest.raises(LeaseLost, match="pending again") as caught:
        await queue.release(job.id, job.lease_token or "")
    assert caught.value.reason == "not_leased"


async def test_release_many_releases_live_leases_and_reports_stale_ones(
    queue: SQLiteQueue,
) -> None:
    await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(2)])
    a, b = await queue.pull(max=2)
    results = await queue.release_many([(a.id, a.lease_token or ""), (b.id, "stale")])
    assert [r.ok for r in results] == [True, False]
    assert (await queue.stats()).pending == 1


async def test_renew_and_release_of_an_unknown_job_raise_job_not_found(
    queue: SQLiteQueue,
) -> None:
    with pytest.raises(JobNotFound, match="job 42 does not exist"):
        await queue.renew(42, "x", 10)
    with pytest.raises(JobNotFound):
        await queue.release(42, "x")


async def test_reap_returns_expired_leases_to_pending(queue: SQLiteQueue, clock: FakeClock) -> None:
    await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(3)])
    await queue.pull(max=2, visibility_seconds=10)
    assert await queue.reap() == 0
    clock.advance(10)
    assert await queue.reap() == 2
    stats = await queue.stats()
    assert (stats.pending, stats.leased) == (3, 0)


async def test_a_lease_that_expires_on_the_last_attempt_fails_the_job(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    job = await queue.enqueue("r", "t", "k", max_attempts=1)
    (leased,) = await queue.pull(visibility_seconds=10, worker_id="w9")
    await queue.start_many([(leased.id, leased.lease_token or "")])
    clock.advance(10)
    assert await queue.reap() == 1
    failed = await queue.get(job.id)
    assert failed.status == "failed"
    assert failed.attempts == 1
    assert "lease expired on the last attempt (1 of 1) held by worker w9" in (
        failed.last_error or ""
    )
    assert await queue.pull() == []


@pytest.mark.parametrize("seconds", [0, -1, MAX_VISIBILITY_SECONDS + 1, float("nan")])
async def test_visibility_outside_its_bounds_is_refused(queue: SQLiteQueue, seconds: float) -> None:
    with pytest.raises(OutOfRange, match="visibility_seconds"):
        await queue.pull(visibility_seconds=seconds)
    with pytest.raises(OutOfRange, match="visibility_seconds"):
        await queue.renew(1, "x", seconds)


@pytest.mark.parametrize("max", [0, 1001])
async def test_pull_max_outside_its_bounds_is_refused(queue: SQLiteQueue, max: int) -> None:
    with pytest.raises(OutOfRange, match="max must be between 1 and 1000"):
        await queue.pull(max=max)


@pytest.mark.runtimes("asyncio", "trio")
async def test_concurrent_pulls_never_lease_one_job_twice(queue: SQLiteQueue) -> None:
    await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(200)])
    leased: list[int] = []

    async def worker() -> None:
        while jobs := await queue.pull(max=3):
            leased.extend(j.id for j in jobs)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(worker)
    assert sorted(leased) == sorted(set(leased))
    assert len(leased) == 200
