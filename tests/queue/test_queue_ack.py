"""Contract: ack, ack_many, retries with backoff, and run state updated with acks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from actors.errors import InvalidArgument, JobNotFound, LeaseLost, PayloadTooLarge
from actors.queue import Ack, Backoff, Job, NewJob, SQLiteQueue
from supervisors.clock import FakeClock

# The queue verbs' semantics, the same on both runtimes: asyncio only (see tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


async def leased(queue: SQLiteQueue, n: int = 1, run_id: str = "r", **kwargs: object) -> list[Job]:
    await queue.enqueue_many(
        [NewJob(run_id=run_id, tenant_id="t", r2_key=f"{run_id}/{i}", **kwargs) for i in range(n)]  # type: ignore[arg-type]
    )
    return await queue.pull(max=n)


async def test_ack_done_stores_the_result_and_finishes_the_job(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    (job,) = await leased(queue)
    done = await queue.ack(job.id, job.lease_token or "", result={"pages": 3})
    assert done.status == "done"
    assert done.result == {"pages": 3}
    assert done.finished_at == clock.time()
    assert await queue.get(job.id) == done


async def test_a_done_job_is_never_leased_again(queue: SQLiteQueue, clock: FakeClock) -> None:
    (job,) = await leased(queue)
    await queue.ack(job.id, job.lease_token or "")
    clock.advance(10_000)
    assert await queue.pull() == []


async def test_a_failed_job_is_retried_with_exponential_backoff(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    (job,) = await leased(queue)
    delays = []
    for attempt in range(1, 4):
        failed = await queue.ack(job.id, job.lease_token or "", status="failed", error="boom")
        assert failed.status == "pending"
        assert failed.last_error == "boom"
        assert failed.attempts == attempt
        delays.append(failed.available_at - clock.time())
        clock.advance(delays[-1])
        (job,) = await queue.pull()
    assert delays == [1.0, 2.0, 4.0]  # Backoff(base_seconds=1, jitter=0) in the fixture


async def test_retry_delays_are_jittered_and_capped(
    open_queue: Callable[..., Any], clock: FakeClock
) -> None:
    backoff = Backoff(base_seconds=10, cap_seconds=15, jitter=0.5)
    async with open_queue(backoff=backoff, seed=1) as queue:
        jobs = await leased(queue, 20, max_attempts=3)
        acks = [Ack(job_id=j.id, lease_token=j.lease_token or "", status="failed") for j in jobs]
        first = [r.job.available_at - clock.time() for r in await queue.ack_many(acks) if r.job]
        assert all(5 <= d <= 10 for d in first)
        assert len(set(first)) > 1  # jitter spreads jobs that failed together
        clock.advance(10)
        jobs = await queue.pull(max=20)
        acks = [Ack(job_id=j.id, lease_token=j.lease_token or "", status="failed") for j in jobs]
        second = [r.job.available_at - clock.time() for r in await queue.ack_many(acks) if r.job]
        assert all(7.5 <= d <= 15 for d in second)  # 20 s capped at 15, times [0.5, 1]


async def test_a_job_that_fails_its_last_attempt_is_terminally_failed_with_its_last_error(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    (job,) = await leased(queue, max_attempts=2)
    await queue.ack(job.id, job.lease_token or "", status="failed", error="first")
    clock.advance(60)
    (job,) = await queue.pull()
    failed = await queue.ack(job.id, job.lease_token or "", status="failed", error="second")
    assert (failed.status, failed.attempts, failed.last_error) == ("failed", 2, "second")
    clock.advance(3600)
    assert await queue.pull() == []


async def test_a_permanent_failure_is_terminal_at_once_without_burning_retries(
    queue: SQLiteQueue,
) -> None:
    (job,) = await leased(queue)
    failed = await queue.ack(
        job.id, job.lease_token or "", status="failed", error="missing", permanent=True
    )
    assert (failed.status, failed.attempts, failed.last_error) == ("failed", 1, "missing")


async def test_ack_with_a_stale_token_is_refused_and_changes_nothing(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    (old,) = await leased(queue)
    clock.advance(61)
    (new,) = await queue.pull()
    with pytest.raises(LeaseLost, match=f"job {old.id} was not acked") as caught:
        await queue.ack(old.id, old.lease_token or "")
    assert caught.value.reason == "superseded"
    assert await queue.get(new.id) == new


async def test_ack_after_the_lease_expired_names_how_late_it_was(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    (job,) = await leased(queue)
    clock.advance(63.1)
    with pytest.raises(LeaseLost, match=r"acked 3.1s after its lease expired.*visibility_seconds"):
        await queue.ack(job.id, job.lease_token or "")


async def test_an_ack_repeated_under_the_same_lease_returns_the_job_unchanged(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    (job,) = await leased(queue)
    done = await queue.ack(job.id, job.lease_token or "", result=1)
    clock.advance(1)
    (again,) = await queue.ack_many([Ack(job_id=job.id, lease_token=job.lease_token or "")])
    assert (again.ok, again.reason, again.job) == (True, "duplicate", done)


async def test_a_done_job_refuses_an_ack_from_another_lease(queue: SQLiteQueue) -> None:
    (job,) = await leased(queue)
    await queue.ack(job.id, job.lease_token or "")
    with pytest.raises(LeaseLost, match="already done") as caught:
        await queue.ack(job.id, "another-token")
    assert caught.value.reason == "finished"


async def test_ack_of_an_unknown_job_raises_job_not_found(queue: SQLiteQueue) -> None:
    with pytest.raises(JobNotFound, match="job 7 does not exist"):
        await queue.ack(7, "x")


async def test_ack_many_commits_good_acks_and_refuses_stale_ones_per_item(
    queue: SQLiteQueue,
) -> None:
    a, b, c = await leased(queue, 3)
    results = await queue.ack_many(
        [
            Ack(job_id=a.id, lease_token=a.lease_token or "", result="ok"),
            Ack(job_id=b.id, lease_token="stale"),
            Ack(job_id=c.id, lease_token=c.lease_token or "", status="failed", error="e"),
        ]
    )
    assert [(r.ok, r.reason) for r in results] == [
        (True, "ok"),
        (False, "superseded"),
        (True, "ok"),
    ]
    assert results[1].message and "Discard this work" in results[1].message
    stats = await queue.stats()
    assert (stats.done, stats.leased, stats.pending) == (1, 1, 1)


async def test_ack_refuses_bad_arguments(queue: SQLiteQueue) -> None:
    (job,) = await leased(queue)
    token = job.lease_token or ""
    with pytest.raises(InvalidArgument, match="status must be 'done' or 'failed'"):
        await queue.ack(job.id, token, status="finished")  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLarge, match="result is"):
        await queue.ack(job.id, token, result="x" * 300_000)
    with pytest.raises(InvalidArgument, match="run_metrics must map names to finite numbers"):
        await queue.ack(job.id, token, run_metrics={"bytes": float("inf")})
    assert (await queue.get(job.id)).status == "leased"


async def test_acks_add_their_metrics_to_the_run_in_the_same_transaction(
    queue: SQLiteQueue,
) -> None:
    a, b, c = await leased(queue, 3)
    await queue.ack_many(
        [
            Ack(
                job_id=a.id, lease_token=a.lease_token or "", run_metrics={"bytes": 10, "tokens": 1}
            ),
            Ack(job_id=b.id, lease_token=b.lease_token or "", run_metrics={"bytes": 5}),
            Ack(job_id=c.id, lease_token="stale", run_metrics={"bytes": 1000}),
        ]
    )
    await queue.ack(c.id, c.lease_token or "", status="failed", run_metrics={"errors": 1})
    summary = await queue.run_summary("r")
    assert summary.metrics == {"bytes": 15.0, "tokens": 1.0, "errors": 1.0}


async def test_a_run_moves_from_queued_to_processing_to_done(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(2)])
    summary = await queue.run_summary("r")
    assert (summary.status, summary.total, summary.pending) == ("queued", 2, 2)
    a, b = await queue.pull(max=2)
    await queue.ack(a.id, a.lease_token or "")
    summary = await queue.run_summary("r")
    assert (summary.status, summary.done, summary.leased, summary.finished_at) == (
        "processing",
        1,
        1,
        None,
    )
    clock.advance(1)
    await queue.ack(b.id, b.lease_token or "")
    summary = await queue.run_summary("r")
    assert (summary.status, summary.done, summary.finished_at) == ("done", 2, clock.time())


async def test_a_run_whose_jobs_all_finished_with_a_failure_is_failed(queue: SQLiteQueue) -> None:
    a, b = await leased(queue, 2)
    await queue.ack(a.id, a.lease_token or "")
    await queue.ack(b.id, b.lease_token or "", status="failed", permanent=True)
    summary = await queue.run_summary("r")
    assert (summary.status, summary.done, summary.failed) == ("failed", 1, 1)
    assert summary.finished_at is not None


async def test_a_new_job_reopens_a_finished_run(queue: SQLiteQueue) -> None:
    (a,) = await leased(queue)
    await queue.ack(a.id, a.lease_token or "")
    await queue.enqueue("r", "t", "more")
    summary = await queue.run_summary("r")
    assert (summary.status, summary.finished_at) == ("processing", None)
