"""Fair claims' cost: pull+ack throughput with 1 and 100 tenants, fairness on and off.

Usage: ``python bench/bench_fairness.py [--rounds 5] [--jobs 10000] [--postgres DSN]
[--only sqlite|postgres]`` or ``--postgres DSN --claim-sql 200`` (the claim statements alone).
Each round runs every configuration once, in an order that rotates from round to round, on a
fresh queue (a SQLite file; with ``--postgres``, also a fresh PostgreSQL schema): ``--jobs``
jobs enqueued (spread evenly over the tenants), then pulled and acked by one caller, ``batch``
jobs per call (1 and 100). It reports the medians of jobs/s for the pull+ack phase and of the
process's CPU time per job, and how many pulls of 10 a tenant that enqueues 10 jobs after
another's 10,000 waits for its last job (``--jobs`` is the other tenant's backlog).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from actors.queue import Ack, NewJob, SQLiteQueue


@contextlib.asynccontextmanager
async def opened(backend: str, fair: bool, dsn: str | None) -> AsyncIterator[Any]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            async with SQLiteQueue.open(Path(folder) / "q.db", fair=fair) as queue:
                yield queue
        return
    import asyncpg

    from actors.queue.postgres import PostgresQueue

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    assert dsn is not None
    try:
        async with PostgresQueue.open(dsn, schema=schema, fair=fair) as queue:
            yield queue
    finally:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def cycle(
    backend: str, fair: bool, tenants: int, batch: int, n: int, dsn: str | None
) -> tuple[float, float]:
    """Enqueue n jobs over ``tenants``, then pull and ack them ``batch`` at a time; return the
    pull+ack phase's jobs/s and CPU µs per job."""
    async with opened(backend, fair, dsn) as queue:
        jobs = [
            NewJob(
                run_id=f"r{i % tenants}",
                tenant_id=f"t{i % tenants:03}",
                r2_key=f"t{i % tenants:03}/{i}",
            )
            for i in range(n)
        ]
        for i in range(0, n, 1000):
            await queue.enqueue_many(jobs[i : i + 1000])
        c0, t0 = time.process_time(), time.perf_counter()
        done = 0
        while done < n:
            leased = await queue.pull(max=batch)
            if batch == 1:
                for job in leased:
                    await queue.ack(job.id, job.lease_token or "")
            else:
                await queue.ack_many(
                    [Ack(job_id=j.id, lease_token=j.lease_token or "") for j in leased]
                )
            done += len(leased)
        return n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1e6


async def small_tenant_wait(backend: str, fair: bool, backlog: int, dsn: str | None) -> int:
    """Pulls of 10 until the last of tenant b's 10 jobs is leased, after a's ``backlog``."""
    async with opened(backend, fair, dsn) as queue:
        for i in range(0, backlog, 1000):
            await queue.enqueue_many(
                [
                    NewJob(run_id="a", tenant_id="a", r2_key=f"a/{j}")
                    for j in range(i, min(backlog, i + 1000))
                ]
            )
        await queue.enqueue_many(
            [NewJob(run_id="b", tenant_id="b", r2_key=f"b/{j}") for j in range(10)]
        )
        served, pulls = 0, 0
        while served < 10:
            pulls += 1
            served += sum(
                j.tenant_id == "b" for j in await queue.pull(max=10, visibility_seconds=3600)
            )
        return pulls


async def claim_sql(dsn: str, reps: int) -> None:
    """Time PostgreSQL's claim statements alone (each in a transaction rolled back, so every
    call sees the same queue): the fair claim and the plain one, over 1 and 100 tenants with
    5,000 pending jobs, from a cursor that moves each call as a claimer's does."""
    import asyncpg

    from actors.queue.postgres import PostgresQueue, _sql

    print("| tenants | jobs per pull | statement | ms per call (median) | ms (lowest) |")
    print("|---:|---:|---|---:|---:|")
    for tenants in (1, 100):
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        async with PostgresQueue.open(dsn, schema=schema) as queue:
            for i in range(0, 5000, 1000):
                await queue.enqueue_many(
                    [
                        NewJob(
                            run_id=f"r{k % tenants}", tenant_id=f"t{k % tenants:03}", r2_key=str(k)
                        )
                        for k in range(i, i + 1000)
                    ]
                )
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            for batch in (1, 10, 100):
                for name in ("CLAIM_FIRST", "CLAIM_FAIR"):
                    times = []
                    for rep in range(reps):
                        now = time.time()
                        args: tuple[Any, ...] = (now, batch, now + 60, None, "p", None, False)
                        if name == "CLAIM_FAIR":
                            args += (f"t{rep % tenants:03}", True, [], True)
                        undone = conn.transaction()  # the claim rolled back
                        await undone.start()
                        t0 = time.perf_counter()
                        await conn.fetch(getattr(_sql, name), *args)
                        times.append(time.perf_counter() - t0)
                        await undone.rollback()
                    kept = times[reps // 5 :]  # the first calls plan and warm up
                    print(
                        f"| {tenants} | {batch} | {name.lower()} | "
                        f"{statistics.median(kept) * 1e3:.2f} | {min(kept) * 1e3:.2f} |",
                        flush=True,
                    )
        finally:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--postgres", metavar="DSN", help="also measure PostgresQueue")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="one backend's rows")
    parser.add_argument(
        "--claim-sql",
        type=int,
        metavar="N",
        help="instead, time PostgreSQL's claim statements alone, N calls each (needs --postgres)",
    )
    args = parser.parse_args()
    if args.claim_sql:
        anyio.run(claim_sql, args.postgres, args.claim_sql)
        return
    backends = ["sqlite"] + (["postgres"] if args.postgres else [])
    if args.only:
        backends = [b for b in backends if b == args.only]
    configs = [
        (backend, fair, tenants, batch)
        for backend in backends
        for batch in (100, 1)
        for tenants in (1, 100)
        for fair in (False, True)
    ]
    results: dict[tuple[Any, ...], list[tuple[float, float]]] = {c: [] for c in configs}
    for r in range(args.rounds):
        shift = r % len(configs)
        for config in configs[shift:] + configs[:shift]:
            backend, fair, tenants, batch = config
            n = args.jobs if batch == 100 else args.jobs // 10
            results[config].append(
                anyio.run(cycle, backend, fair, tenants, batch, n, args.postgres)
            )
    print("| backend | jobs per call | tenants | fair | pull+ack jobs/s | CPU µs/job | fair/off |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for config in configs:
        backend, fair, tenants, batch = config
        rate = statistics.median(x for x, _ in results[config])
        cpu = statistics.median(y for _, y in results[config])
        off = (backend, False, tenants, batch)
        ratio = rate / statistics.median(x for x, _ in results[off])
        on = "on" if fair else "off"
        print(
            f"| {backend} | {batch} | {tenants} | {on} | {rate:,.0f} | {cpu:.0f} | {ratio:.2f}x |"
        )
    print()
    print("| backend | fair | pulls of 10 until b's 10 jobs are all leased, after a's backlog |")
    print("|---|---|---:|")
    for backend in backends:
        for fair in (False, True):
            pulls = anyio.run(small_tenant_wait, backend, fair, args.jobs, args.postgres)
            print(f"| {backend} | {'on' if fair else 'off'} | {pulls} |")


if __name__ == "__main__":
    main()
