"""The KV task API's worker cycle against the D1 API's, over HTTP to `python -m actors run`.

Usage: ``python bench/bench_kv.py [--seconds 5] [--workers 8]``. One fresh server process per
phase (SQLite, queue_only), seeded with jobs; ``--workers`` asyncio clients (httpx) each repeat
one cycle for ``--seconds``:

- kv: ``POST /api/queue/claim`` then ``POST /api/result/{id}`` (X-API-Key), one task a cycle;
- d1: ``POST /jobs/pull {max: 1}`` then ``POST /jobs/ack {ids: ["id"], status}`` (bearer).

Prints tasks completed per second and the claim (or pull) latency's p50 and p99.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from bench_http import TOKEN, start_server, stop_server

QUEUE_KEY = "bench-queue-key-0123456789"
SEED = 60_000


async def seed(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for start in range(0, SEED, 5000):
            jobs = [
                {"runId": "bench", "tenantId": "t", "r2Key": f"t/bench/{i}.txt"}
                for i in range(start, start + 5000)
            ]
            response = await client.post(
                "/jobs/enqueue-many",
                json={"jobs": jobs},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            response.raise_for_status()


async def run_phase(url: str, kind: str, seconds: float, workers: int) -> tuple[int, list[float]]:
    done = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        kv = {"X-API-Key": QUEUE_KEY}
        headers = kv if kind == "kv" else {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                if kind == "kv":
                    claimed = (
                        await client.post("/api/queue/claim", json={"workerId": f"w{n}"})
                    ).json()
                    latencies.append(time.perf_counter() - started)
                    if not claimed["success"]:
                        return
                    result = {"success": True, "output": {"n": n}}
                    response = await client.post(f"/api/result/{claimed['taskId']}", json=result)
                else:
                    jobs = (await client.post("/jobs/pull", json={"max": 1})).json()["jobs"]
                    latencies.append(time.perf_counter() - started)
                    if not jobs:
                        return
                    ack = {"ids": [str(jobs[0]["id"])], "status": "done"}
                    response = await client.post("/jobs/ack", json=ack)
                response.raise_for_status()
                done += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for n in range(workers):
            tg.start_soon(worker, n)
    elapsed = time.perf_counter() - started
    return round(done / elapsed), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    os.environ["QUEUE_API_KEY"] = QUEUE_KEY
    for kind in ("kv", "d1"):
        with tempfile.TemporaryDirectory() as tmp:
            process, url = start_server(Path(tmp))
            try:
                anyio.run(seed, url)
                rate, latencies = anyio.run(run_phase, url, kind, args.seconds, args.workers)
            finally:
                stop_server(process)
        cuts = statistics.quantiles(latencies, n=100)
        print(
            f"{kind}: {rate} tasks/s with {args.workers} workers; claim p50 "
            f"{cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
