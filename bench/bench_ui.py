"""The dashboard's pages over a large queue: how long each takes to render, server and client.

Usage: ``python bench/bench_ui.py [--jobs 100000] [--requests 40]``. Seeds a SQLite queue with
``--jobs`` jobs in runs of 500, all finished over the last hour (a tenth failed) through the
queue's own verbs, then opens an `ActorSystem` over it ([http] enabled, queue_only) and times
sequential GETs of each page with a signed-in session (one client, keep-alive, loopback), and
the queue's ``throughput`` read alone. Prints Markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from actors.config import Config, HttpConfig, QueueConfig, Secret, Secrets, StorageConfig
from actors.queue import Ack, NewJob, SQLiteQueue
from actors.system import ActorSystem
from supervisors.clock import FakeClock

TOKEN = "bench-admin-token-0123456789"
RUN_SIZE = 500


async def seed(path: Path, jobs: int) -> None:
    """``jobs`` jobs finished over the last hour, in runs of `RUN_SIZE`."""
    now = time.time()
    clock = FakeClock(wall_offset=now - 3600)
    step = 3600 / (jobs / 1000)
    async with SQLiteQueue.open(path, clock=clock, max_attempts=1) as queue:
        for start in range(0, jobs, 1000):
            batch = [
                NewJob(run_id=f"run-{i // RUN_SIZE:05d}", tenant_id="t", r2_key=f"t/doc-{i}.txt")
                for i in range(start, min(jobs, start + 1000))
            ]
            await queue.enqueue_many(batch)
            leased = await queue.pull(max=1000, visibility_seconds=600)
            await queue.ack_many(
                [
                    Ack(
                        job_id=j.id,
                        lease_token=j.lease_token or "",
                        status="failed" if j.id % 10 == 0 else "done",
                        error="bench failure" if j.id % 10 == 0 else None,
                        permanent=True,
                    )
                    for j in leased
                ]
            )
            clock.advance(step)


async def measure(path: Path, requests: int) -> list[tuple[str, float, float]]:
    config = Config(
        queue=QueueConfig(path=str(path)),
        storage=StorageConfig(root=str(path.parent / "objects")),
        http=HttpConfig(enabled=True, port=0, queue_only=True),
        secrets=Secrets(http_tokens=Secret(f"{TOKEN}:admin")),
    )
    rows = []
    async with ActorSystem(config) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            r = await client.post("/ui/sign-in", data={"token": TOKEN}, headers={"origin": base})
            assert r.status_code == 303, r.text
            pages = {
                "overview `/ui/`": "/ui/",
                "runs `/ui/runs`": "/ui/runs",
                "runs, status failed": "/ui/runs?status=failed",
                "jobs `/ui/jobs?status=failed`": "/ui/jobs?status=failed",
                "jobs, key filter (5 queue pages)": "/ui/jobs?key=no-such-text",
                "a run `/ui/runs/run-00007`": "/ui/runs/run-00007",
                "a job `/ui/jobs/4242`": "/ui/jobs/4242",
            }
            for name, page in pages.items():
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    r = await client.get(page)
                    times.append(time.perf_counter() - started)
                    assert r.status_code == 200, (page, r.status_code)
                times.sort()
                rows.append((name, statistics.median(times), times[int(0.95 * len(times)) - 1]))
        queue = system.queue
        assert isinstance(queue, SQLiteQueue)
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            await queue.throughput(time.time() - 3600)
            times.append(time.perf_counter() - started)
        times.sort()
        rows.append(
            ("`throughput` alone", statistics.median(times), times[int(0.95 * len(times)) - 1])
        )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.db"
        started = time.perf_counter()
        await seed(path, args.jobs)
        seeded = time.perf_counter() - started
        rows = await measure(path, args.requests)
    load = os.getloadavg()[0]
    print(
        f"{args.jobs:,} finished jobs in {args.jobs // RUN_SIZE} runs (seeded in {seeded:.0f} s); "
        f"{args.requests} sequential requests per page; {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load:.1f}, Python {platform.python_version()}\n"
    )
    print("| page | p50 | p95 |\n|---|---:|---:|")
    for name, p50, p95 in rows:
        print(f"| {name} | {p50 * 1000:.1f} ms | {p95 * 1000:.1f} ms |")


if __name__ == "__main__":
    anyio.run(main)
