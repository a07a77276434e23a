"""Schedules: what a tick's arithmetic costs, and what a firing round costs on each backend.

Usage: ``python bench/bench_schedules.py [--dsn postgresql://postgres@127.0.0.1:5432/test]
[--reps 5]``; figures in docs/benchmarks.md ("Schedules"). Prints the medians of ``--reps``:

1. `Cadence.next_after`: a five-field cron expression in Europe/Berlin, a six-field one (every
   second), and an interval, microseconds per call.
2. `fire_schedules` on SQLite (a file in a temporary directory) and PostgreSQL (a throwaway
   schema): an idle round (nothing due: what every process pays every poll), and a round that
   fires 100 due schedules (100 jobs enqueued and 100 rows moved in one transaction).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import anyio

from actors.cron import Cadence
from actors.queue import NewSchedule, SQLiteQueue
from supervisors.clock import FakeClock

DSN = "postgresql://postgres@127.0.0.1:5432/test"
DUE = 100


def per_call_us(cadence: Cadence, calls: int = 2000) -> float:
    t, start = 1_700_000_000.0, time.perf_counter()
    for _ in range(calls):
        t = cadence.next_after(t)
    return (time.perf_counter() - start) / calls * 1e6


async def rounds(queue: object, clock: FakeClock, reps: int) -> tuple[float, float]:
    """Median ms of an idle round and of a round firing `DUE` schedules."""
    for n in range(DUE):
        await queue.create_schedule(  # type: ignore[attr-defined]
            NewSchedule(name=f"s{n}", tenant_id="t", r2_key="t/a", interval_seconds=60)
        )
    idle, busy = [], []
    for _ in range(reps):
        start = time.perf_counter()
        assert not (await queue.fire_schedules()).jobs  # type: ignore[attr-defined]
        idle.append(time.perf_counter() - start)
        clock.advance(60)
        start = time.perf_counter()
        fired = await queue.fire_schedules(limit=DUE)  # type: ignore[attr-defined]
        busy.append(time.perf_counter() - start)
        assert len(fired.jobs) == DUE
    return statistics.median(idle) * 1e3, statistics.median(busy) * 1e3


async def main(dsn: str, reps: int) -> None:
    for label, cadence in (
        ("cron '30 2 * * *' Europe/Berlin", Cadence("30 2 * * *", None, "Europe/Berlin")),
        ("cron '* * * * * *' UTC", Cadence("* * * * * *", None, "UTC")),
        ("interval 60 s", Cadence(None, 60, "UTC")),
    ):
        figures = [per_call_us(cadence) for _ in range(reps)]
        print(f"next_after, {label}: {statistics.median(figures):.1f} us")
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock()
        async with SQLiteQueue.open(Path(tmp) / "q.db", clock=clock) as queue:
            idle, busy = await rounds(queue, clock, reps)
        print(f"sqlite: idle round {idle:.2f} ms, {DUE} due schedules {busy:.1f} ms")
    try:
        import asyncpg

        from actors.queue.postgres._queue import PostgresQueue
    except ImportError:
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        clock = FakeClock()
        async with PostgresQueue.open(dsn, schema=schema, clock=clock) as pg:
            idle, busy = await rounds(pg, clock, reps)
        print(f"postgres: idle round {idle:.2f} ms, {DUE} due schedules {busy:.1f} ms")
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.dsn, args.reps)
