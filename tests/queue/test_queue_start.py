"""Contract: fair attempt accounting. An expired lease costs an attempt only if the job started.

A worker marks a job started (`start_many`) when it hands the job to its first stage. A lease
that expires before that (the worker died with the job still waiting in its streams) gives the
attempt back; one that expires after it spends the attempt, so a job that kills its worker
still runs out of attempts.
"""

from __future__ import annotations

import pytest

from actors.queue import SQLiteQueue
from supervisors.clock import FakeClock

# The queue verbs' semantics, the same on both runtimes: asyncio only (see tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


async def test_reaping_a_never_started_lease_refunds_its_attempt_every_time(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    job = await queue.enqueue("r", "t", "k", max_attempts=2)
    for _ in range(5):  # more crashes than attempts: none of them was the job's doing
        (leased,) = await queue.pull(max=1, visibility_seconds=10)
        assert (leased.id, leased.attempts, leased.started_at) == (job.id, 1, None)
        clock.advance(11)
        assert await queue.reap() == 1
        back = await queue.get(job.id)
        assert (back.status, back.attempts, back.last_error) == ("pending", 0, None)
    assert (await queue.run_summary("r")).pending == 1


async def test_a_started_job_whose_lease_expires_spends_its_attempts_and_fails(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    job = await queue.enqueue("r", "t", "k", max_attempts=2)
    for attempt in (1, 2):
        (leased,) = await queue.pull(max=1, visibility_seconds=10, worker_id="w1")
        (started,) = await queue.start_many([(leased.id, leased.lease_token or "")])
        assert started.ok and started.job is not None
        assert started.job.started_at == clock.time()
        clock.advance(11)
        assert await queue.reap() == 1
        assert (await queue.get(job.id)).attempts == attempt
    failed = await queue.get(job.id)
    assert failed.status == "failed"
    assert "which started the job" in (failed.last_error or "")
    summary = await queue.run_summary("r")
    assert (summary.failed, summary.pending, summary.status) == (1, 0, "failed")
    assert (await queue.stats()).failed == 1


async def test_a_pull_reaps_unstarted_and_started_leases_fairly_in_one_go(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    waiting, running = [await queue.enqueue("r", "t", k, max_attempts=1) for k in "ab"]
    jobs = await queue.pull(max=2, visibility_seconds=10)
    run = next(j for j in jobs if j.id == running.id)
    await queue.start_many([(run.id, run.lease_token or "")])
    clock.advance(11)
    (again,) = await queue.pull(max=5)  # reaps both: only the unstarted one comes back
    assert (again.id, again.attempts) == (waiting.id, 1)
    assert (await queue.get(running.id)).status == "failed"


async def test_start_is_refused_for_a_stale_lease_and_pull_can_mark_jobs_started(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    job = await queue.enqueue("r", "t", "k")
    (leased,) = await queue.pull(max=1, visibility_seconds=10)
    clock.advance(11)
    (late,) = await queue.start_many([(job.id, leased.lease_token or "")])
    assert (late.ok, late.reason) == (False, "expired")
    (stale, missing) = await queue.start_many([(job.id, "not-the-token"), (10**9, "x")])
    assert [(r.ok, r.reason) for r in (stale, missing)] == [
        (False, "superseded"),
        (False, "not_found"),
    ]
    (marked,) = await queue.pull(max=1, visibility_seconds=10, started=True)
    assert marked.started_at == clock.time()
    (repeat,) = await queue.start_many([(marked.id, marked.lease_token or "")])
    assert repeat.ok and repeat.job is not None and repeat.job.started_at == marked.started_at
    await queue.release(marked.id, marked.lease_token or "")
    assert (await queue.get(job.id)).started_at is None  # cleared with the lease
