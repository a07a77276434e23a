"""The fetcher marks the jobs it takes started before it fetches them, and gives back a job
whose lease was lost before it started (a real queue, store, streams and in-flight table)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from actors.pipeline import AckInbox, Fetched, Fetcher, InFlight, JobLeased, Release, leased_job
from actors.queue import SQLiteQueue
from actors.storage import LocalObjectStore
from supervisors.clock import FakeClock

pytestmark = pytest.mark.anyio


async def test_jobs_are_marked_started_before_the_fetch_and_a_lost_lease_is_given_back(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = LocalObjectStore(str(tmp_path / "objects"))
    async with SQLiteQueue.open(tmp_path / "q.db", clock=clock) as queue:
        for key in ("t/a", "t/b", "t/c"):
            await store.put(key, key.encode())
            await queue.enqueue("r", "t", key)
            clock.advance(1)  # leased in this order
        (lost,) = await queue.pull(max=1, visibility_seconds=5)
        kept = await queue.pull(max=2, visibility_seconds=100)
        clock.advance(6)  # the first lease runs out before its job is started
        jobs = [leased_job(j) for j in (lost, *kept)]
        inflight = InFlight(10)
        inflight.add(jobs)
        inbox_send, inbox = anyio.create_memory_object_stream[JobLeased](10)
        outbox, fetched = anyio.create_memory_object_stream[Fetched](10)
        acks, outcomes = anyio.create_memory_object_stream[AckInbox](10)
        for job in jobs:
            inbox_send.send_nowait(JobLeased(job=job))
        inbox_send.close()
        fetcher = Fetcher(
            "fetcher-0",
            inbox=inbox,
            outbox=outbox,
            acks=acks,
            store=store,
            inflight=inflight,
            queue=queue,
            max_bytes=1000,
        )
        with anyio.fail_after(10):
            await fetcher.run()

        release = outcomes.receive_nowait()
        assert isinstance(release, Release) and release.job.id == lost.id
        with pytest.raises(anyio.WouldBlock):
            outcomes.receive_nowait()  # nothing else failed or was given back
        assert "lease was lost before it started (expired)" in release.reason
        assert [fetched.receive_nowait().job.id for _ in kept] == [j.id for j in kept]
        assert [j.id for j in inflight.live_jobs()] == [j.id for j in kept]
        assert inflight.take_held("fetcher-0") == []  # every job handed on or given back
        for job in kept:
            assert (await queue.get(job.id)).started_at == clock.time()
        assert (await queue.get(lost.id)).started_at is None
