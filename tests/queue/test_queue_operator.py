"""Contract: stats, get, list, requeue, purge and run listings."""

from __future__ import annotations

import pytest

from actors.errors import InvalidArgument, JobNotFound, OutOfRange, RunNotFound
from actors.queue import NewJob, SQLiteQueue
from supervisors.clock import FakeClock

# The queue verbs' semantics, the same on both runtimes: asyncio only (see tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


async def fail_terminally(queue: SQLiteQueue, n: int, run_id: str = "r") -> list[int]:
    jobs = await queue.enqueue_many(
        [NewJob(run_id=run_id, tenant_id="t", r2_key=str(i), max_attempts=1) for i in range(n)]
    )
    for job in await queue.pull(max=n):
        await queue.ack(job.id, job.lease_token or "", status="failed", error="bad")
    return [j.id for j in jobs]


async def test_stats_count_every_status_and_the_oldest_pending_age(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    empty = await queue.stats()
    assert (empty.total, empty.oldest_pending_age_seconds) == (0, None)
    await fail_terminally(queue, 1, run_id="r2")
    await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(4)])
    clock.advance(7)
    await queue.enqueue("r", "t", "late")
    a, _ = await queue.pull(max=2)
    await queue.ack(a.id, a.lease_token or "")
    stats = await queue.stats()
    assert (stats.pending, stats.leased, stats.done, stats.failed) == (3, 1, 1, 1)
    assert (stats.scheduled, stats.oldest_pending_age_seconds) == (0, 7)


async def test_stats_count_delayed_jobs_as_scheduled_and_age_jobs_from_when_they_became_available(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    # An hour's delay at three priorities (the count reads each priority's range of the index).
    for priority in (5, 0, -3):
        await queue.enqueue("r", "t", f"later-{priority}", delay_seconds=3600, priority=priority)
    clock.advance(1800)
    stats = await queue.stats()
    # `pending` still counts them (clients that wait for pending == 0 wait for them too).
    assert (stats.pending, stats.scheduled, stats.total) == (3, 3, 3)
    assert stats.oldest_pending_age_seconds is None  # nothing can be leased yet: nothing late
    await queue.enqueue("r", "t", "now", priority=1)
    clock.advance(1830)  # the delayed jobs became available 30 s ago, the other 1830 s ago
    stats = await queue.stats()
    assert (stats.pending, stats.scheduled, stats.oldest_pending_age_seconds) == (4, 0, 1830)
    for job in await queue.pull(max=10):
        if job.r2_key != "later-0":
            await queue.ack(job.id, job.lease_token or "")
        else:
            await queue.ack(job.id, job.lease_token or "", status="failed", error="flaky")
    # A failed attempt waits out its backoff (1 s here) as a scheduled job, then ages from then.
    stats = await queue.stats()
    assert (stats.pending, stats.scheduled, stats.leased, stats.done) == (1, 1, 0, 3)
    assert stats.oldest_pending_age_seconds is None
    clock.advance(11)
    stats = await queue.stats()
    assert (stats.pending, stats.scheduled, stats.oldest_pending_age_seconds) == (1, 0, 10)


async def test_get_of_an_unknown_job_raises_job_not_found(queue: SQLiteQueue) -> None:
    with pytest.raises(JobNotFound, match="never enqueued in this database or it was purged"):
        await queue.get(12345)


async def test_list_pages_through_jobs_with_filters(queue: SQLiteQueue) -> None:
    await queue.enqueue_many(
        [NewJob(run_id=f"r{i % 2}", tenant_id=f"t{i % 2}", r2_key=str(i)) for i in range(10)]
    )
    await queue.pull(max=1)
    first = await queue.list(limit=4)
    second = await queue.list(limit=4, cursor=first.next_cursor)
    third = await queue.list(limit=4, cursor=second.next_cursor)
    ids = [j.id for page in (first, second, third) for j in page.items]
    assert ids == sorted(ids) and len(ids) == 10
    assert third.next_cursor is None
    assert [j.r2_key for j in (await queue.list(run_id="r1")).items] == ["1", "3", "5", "7", "9"]
    assert len((await queue.list(tenant_id="t0", status="pending")).items) == 4
    assert len((await queue.list(status="leased")).items) == 1


async def test_list_refuses_an_unknown_status_and_a_bad_cursor(queue: SQLiteQueue) -> None:
    with pytest.raises(InvalidArgument, match="status must be one of pending, leased"):
        await queue.list(status="running")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="pass a page's next_cursor unchanged"):
        await queue.list(cursor="abc")
    with pytest.raises(OutOfRange, match="limit"):
        await queue.list(limit=0)


async def test_requeue_returns_terminally_failed_jobs_with_attempts_reset(
    queue: SQLiteQueue,
) -> None:
    ids = await fail_terminally(queue, 3)
    assert (await queue.run_summary("r")).status == "failed"
    assert await queue.requeue([ids[0]]) == 1
    job = await queue.get(ids[0])
    assert (job.status, job.attempts, job.finished_at) == ("pending", 0, None)
    assert (await queue.run_summary("r")).finished_at is None
    assert await queue.requeue() == 2
    assert await queue.requeue() == 0
    assert len(await queue.pull(max=10)) == 3


async def test_requeue_by_run_leaves_other_runs_alone(queue: SQLiteQueue) -> None:
    await fail_terminally(queue, 2, run_id="a")
    await fail_terminally(queue, 2, run_id="b")
    assert await queue.requeue(run_id="a") == 2
    assert (await queue.stats()).failed == 2


async def test_purge_deletes_only_jobs_finished_before_the_retention(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    await fail_terminally(queue, 2, run_id="old")
    clock.advance(100)
    await fail_terminally(queue, 1, run_id="new")
    await queue.enqueue("new", "t", "pending")
    assert await queue.purge(older_than_seconds=50) == 2
    stats = await queue.stats()
    assert (stats.failed, stats.pending) == (1, 1)
    with pytest.raises(RunNotFound, match="'old' does not exist"):
        await queue.run_summary("old")
    with pytest.raises(OutOfRange):
        await queue.purge(-1)


async def test_list_runs_pages_through_run_summaries(queue: SQLiteQueue) -> None:
    for i in range(5):
        await queue.enqueue(f"run-{i}", "t-even" if i % 2 == 0 else "t-odd", "k")
    first = await queue.list_runs(limit=3)
    second = await queue.list_runs(limit=3, cursor=first.next_cursor)
    assert [r.run_id for r in first.items + second.items] == [f"run-{i}" for i in range(5)]
    assert second.next_cursor is None
    evens = await queue.list_runs(tenant_id="t-even")
    assert [r.run_id for r in evens.items] == ["run-0", "run-2", "run-4"]
    assert all(r.total == 1 and r.status == "queued" for r in evens.items)


async def test_a_runs_updated_at_moves_on_enqueue_metrics_close_and_requeue_only(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    async def updated() -> float:
        return (await queue.run_summary("r")).updated_at

    await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(3)])
    assert await updated() == clock.time()  # enqueue
    first, second, third = await queue.pull(max=3, visibility_seconds=60)
    clock.advance(1)
    await queue.ack(first.id, first.lease_token or "")
    assert await updated() == clock.time() - 1  # a finished job, no metrics: not an update
    clock.advance(1)
    await queue.ack(second.id, second.lease_token or "", run_metrics={"n": 1})
    assert await updated() == clock.time()  # metrics
    clock.advance(1)
    await queue.ack(third.id, third.lease_token or "", status="failed", permanent=True)
    summary = await queue.run_summary("r")
    assert summary.updated_at == summary.finished_at == clock.time()  # the run closed
    clock.advance(1)
    assert await queue.requeue(run_id="r") == 1
    assert await updated() == clock.time()  # reopened
