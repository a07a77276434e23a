"""PostgreSQL queue benchmark: full cycles/s with 1, 4 and 8 worker processes, batched and single.

Usage: ``python bench/bench_postgres.py [--dsn postgresql://postgres@127.0.0.1/test] [--write]``;
``--drivers`` instead compares the drivers that chose asyncpg (psycopg must be installed).
Each worker process loops enqueue -> pull -> ack over its own jobs (one job per call, or 100),
and the figure is every worker's jobs over the wall time from a common start to the last
finish. Beside ``PostgresQueue`` the same run measures a raw asyncpg SKIP LOCKED loop (a
minimal table, the same three transactions per cycle, no triggers: the ceiling) and
``SQLiteQueue`` (one file shared by the processes). ``--write`` replaces the "## PostgreSQL"
section of docs/benchmarks.md with the figures of this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

from actors.queue import Ack, NewJob, SQLiteQueue
from actors.queue.postgres._queue import PostgresQueue

ROOT = Path(__file__).resolve().parent.parent
DSN = "postgresql://postgres@127.0.0.1:5432/test"
TOTAL = {1: 2400, 100: 24000}  # jobs per measurement, shared among the workers

RAW_SETUP = """
CREATE TABLE IF NOT EXISTS raw_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, status text NOT NULL DEFAULT 'pending',
    priority int NOT NULL DEFAULT 0, available_at float8 NOT NULL DEFAULT 0, token text,
    payload text
);
CREATE INDEX IF NOT EXISTS raw_claim ON raw_jobs (priority DESC, available_at, id)
WHERE status = 'pending';
"""
RAW_CLAIM = """
WITH c AS (SELECT id FROM raw_jobs WHERE status = 'pending' AND available_at <= $2
           ORDER BY priority DESC, available_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
UPDATE raw_jobs j SET status = 'leased', token = md5(random()::text) FROM c WHERE j.id = c.id
RETURNING j.id, j.token
"""
# The same claim committed as `PostgresQueue`'s is, without waiting for its WAL flush: the
# ceiling for the queue's own durability choice (its enqueues and acks still wait).
RAW_CLAIM_ASYNC = RAW_CLAIM.replace(
    "FROM c WHERE j.id = c.id",
    "FROM c WHERE j.id = c.id AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'",
)


# --- one worker process ----------------------------------------------------------------------


async def raw_worker(dsn: str, n: int, batch: int, claim: str = RAW_CLAIM) -> None:
    conn = await asyncpg.connect(dsn)
    ready_then_wait()
    for _ in range(n // batch):
        await conn.execute(
            "INSERT INTO raw_jobs (payload) SELECT 'x' FROM generate_series(1, $1)", batch
        )
        rows = await conn.fetch(claim, batch, time.time())
        await conn.execute(
            "UPDATE raw_jobs SET status = 'done' WHERE id = ANY($1::bigint[]) AND token = ANY($2)",
            [r[0] for r in rows],
            [r[1] for r in rows],
        )
    await conn.close()


async def api_worker(kind: str, where: str, n: int, batch: int) -> None:
    opened = (
        PostgresQueue.open(DSN_FOR_WORKERS[0], schema=where, pool_size=2)
        if kind == "postgres"
        else SQLiteQueue.open(where)
    )
    async with opened as queue:
        ready_then_wait()
        tag = uuid.uuid4().hex[:8]
        for i in range(n // batch):
            # Other workers may take this worker's jobs and it theirs: it acks what it gets.
            if batch == 1:
                await queue.enqueue("bench", "t", f"{tag}-{i}")
                for job in await queue.pull(max=1, visibility_seconds=60):
                    await queue.ack(job.id, job.lease_token or "")
            else:
                await queue.enqueue_many(
                    [
                        NewJob(run_id="bench", tenant_id="t", r2_key=f"{tag}-{i}-{k}")
                        for k in range(batch)
                    ]
                )
                await ack_all(queue, await queue.pull(max=batch, visibility_seconds=60))
        while jobs := await queue.pull(max=batch, visibility_seconds=60):  # the leftovers
            await ack_all(queue, jobs)


async def ack_all(queue: Any, jobs: list[Any]) -> None:
    if jobs:
        await queue.ack_many([Ack(job_id=j.id, lease_token=j.lease_token or "") for j in jobs])


DSN_FOR_WORKERS = [DSN]


def ready_then_wait() -> None:
    print("ready", flush=True)
    sys.stdin.readline()  # "go"


def worker_main(argv: list[str]) -> None:
    kind, dsn, where, n, batch = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    DSN_FOR_WORKERS[0] = dsn
    if kind in ("raw", "raw_async"):
        claim = RAW_CLAIM if kind == "raw" else RAW_CLAIM_ASYNC
        asyncio.run(raw_worker(f"{dsn}?search_path={where}", n, batch, claim))
    else:
        anyio.run(api_worker, kind, where, n, batch)


# --- the parent: start workers together, time them -------------------------------------------


def measure(kind: str, dsn: str, where: str, workers: int, batch: int) -> float:
    per_worker = TOTAL[batch] // workers // batch * batch
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, dsn, where, str(per_worker), str(batch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        if p.wait(timeout=600) != 0:
            sys.exit(f"a {kind} worker failed")
    return per_worker * workers / (time.perf_counter() - start)


async def admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def run(dsn: str) -> list[str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin(dsn, f"CREATE SCHEMA {schema}; SET search_path = {schema}; {RAW_SETUP}"))
    lines: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results: dict[tuple[str, int, int], float] = {}
            for batch in (1, 100):
                for workers in (1, 4, 8):
                    for kind in ("raw", "postgres", "sqlite"):
                        where = (
                            str(Path(tmp) / f"q-{batch}-{workers}.db")
                            if kind == "sqlite"
                            else schema
                        )
                        rate = measure(kind, dsn, where, workers, batch)
                        results[(kind, batch, workers)] = rate
                        print(
                            f"{kind:8} batch {batch:3} workers {workers}: {rate:9,.0f} jobs/s",
                            flush=True,
                        )
        lines.append(
            "| jobs per call | worker processes | raw asyncpg SKIP LOCKED | "
            "`PostgresQueue` | / raw | `SQLiteQueue` (one file) |"
        )
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for batch in (1, 100):
            for workers in (1, 4, 8):
                raw, pg, lite = (
                    results[(k, batch, workers)] for k in ("raw", "postgres", "sqlite")
                )
                lines.append(
                    f"| {batch} | {workers} | {raw:,.0f} | {pg:,.0f} | {pg / raw:.2f}x "
                    f"| {lite:,.0f} |"
                )
    finally:
        asyncio.run(admin(dsn, f"DROP SCHEMA {schema} CASCADE"))
    return lines


def write_section(lines: list[str], command: str) -> None:
    """Replace (or add) the "## PostgreSQL" section of docs/benchmarks.md."""
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = (
        f"## PostgreSQL\n\nCommand: `{command}` ({time.strftime('%Y-%m-%d')}, Python "
        f"{platform.python_version()}, PostgreSQL on loopback, load average before the run "
        f"{load} on {os.cpu_count()} cores). Full cycles/s (enqueue, pull, ack of each job), "
        "every worker process looping over its own jobs, all started together:\n\n"
        + "\n".join(lines)
        + "\n\n"
        + POSTSCRIPT
    )
    pattern = re.compile(r"## PostgreSQL\n.*?(?=\n## |\Z)", re.S)
    text = (
        pattern.sub(lambda _: body.rstrip("\n") + "\n", text)
        if pattern.search(text)
        else (text.rstrip("\n") + "\n\n" + body)
    )
    doc.write_text(text)


POSTSCRIPT = """How to read these figures:

- The raw loop is the ceiling for this SQL on this server: one connection per process, a table
  with one partial index and no run rows, three autocommitted statements per cycle (insert, SKIP
  LOCKED claim, update), no validation, only `(id, token)` returned.
- `PostgresQueue` makes the same three round trips per cycle (each verb one autocommitted
  statement) and adds what the queue contract asks for: argument checks; whole rows returned by
  the claim and the ack and decoded into `Job`s; wider rows with two more index entries per job
  (`jobs_leased` at the claim, `jobs_finished` at the ack); the runs' counts (a count-shard upsert
  in the enqueue and the ack statements, so processes do not queue behind one run row); the
  NOTIFY of every enqueue; and the batch as one JSON parameter. Measured on one process at 100
  jobs per call (auto_explain, executor time, medians): enqueue 0.53 ms, claim 0.66 ms, ack
  0.80 ms, against the raw loop's 0.26, 0.55 and 0.44 ms; client CPU about 1.2 ms a cycle
  against 0.3 ms (`/proc` CPU times of the client and of its server backend).
- The machine is shared and noisy: over five runs of the same code the ratios were
  0.62x-0.72x, 0.61x-0.76x and 0.55x-0.67x single-job, 0.56x-0.64x, 0.58x-0.71x and
  0.50x-0.68x batched (1, 4 and 8 processes).
- Targets (issue 7, benchmark only): batched at least 0.7x raw; 8 single-job processes at least
  0.9x the raw 8-process rate. Not met; the reasons for the design are in docs/decisions.md
  ("The PostgreSQL queue's statements").
- `SQLiteQueue` is shown for scale: its processes share one file and one writer lock. On these
  2 cores, shared with the PostgreSQL server, more processes do not add throughput to either.
"""


# --- the driver comparison (docs/decisions.md, "The PostgreSQL driver: asyncpg") --------------


def drivers(dsn: str, n: int = 2000) -> None:
    """Cycles/s (insert, SKIP LOCKED claim, update; autocommit) per driver, on one connection,
    and asyncpg on a helper-thread loop driven from trio, as PostgresQueue does there."""
    import threading

    import psycopg  # not a dependency: only this comparison needs it
    import trio

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    setup = f"CREATE SCHEMA {schema}; SET search_path = {schema}; {RAW_SETUP}"
    claim_pg = RAW_CLAIM.replace("$1", "%s").replace("$2", "%s")
    done_pg = "UPDATE raw_jobs SET status = 'done' WHERE id = ANY(%s)"
    done_apg = "UPDATE raw_jobs SET status = 'done' WHERE id = ANY($1::bigint[])"
    insert = "INSERT INTO raw_jobs (payload) SELECT 'x' FROM generate_series(1, {})"

    async def apg_cycles(conn: Any, batch: int) -> None:
        for _ in range(n // batch):
            await conn.execute(insert.format(batch))
            rows = await conn.fetch(RAW_CLAIM, batch, time.time())
            await conn.execute(done_apg, [r[0] for r in rows])

    async def on_asyncio(batch: int) -> float:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        start = time.perf_counter()
        await apg_cycles(conn, batch)
        await conn.close()
        return n / (time.perf_counter() - start)

    async def psycopg_async(batch: int) -> float:
        opts = f"-c search_path={schema}"
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, options=opts) as c:
            start = time.perf_counter()
            for _ in range(n // batch):
                await c.execute(insert.format(batch))
                cur = await c.execute(claim_pg, (batch, time.time()), prepare=True)
                await c.execute(done_pg, ([r[0] for r in await cur.fetchall()],), prepare=True)
            return n / (time.perf_counter() - start)

    def psycopg_sync(batch: int) -> float:
        opts = f"-c search_path={schema}"
        with psycopg.connect(dsn, autocommit=True, options=opts) as c:
            start = time.perf_counter()
            for _ in range(n // batch):
                c.execute(insert.format(batch))
                rows = c.execute(claim_pg, (batch, time.time()), prepare=True).fetchall()
                c.execute(done_pg, ([r[0] for r in rows],), prepare=True)
            return n / (time.perf_counter() - start)

    async def bridged_from_trio(batch: int) -> float:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        token = trio.lowlevel.current_trio_token()

        async def call(coro: Any) -> Any:
            done = trio.Event()
            fut = asyncio.run_coroutine_threadsafe(coro, loop)
            fut.add_done_callback(lambda _: token.run_sync_soon(done.set))
            await done.wait()
            return fut.result()

        conn = await call(asyncpg.connect(dsn, server_settings={"search_path": schema}))
        start = time.perf_counter()
        for _ in range(n // batch):
            await call(conn.execute(insert.format(batch)))
            rows = await call(conn.fetch(RAW_CLAIM, batch, time.time()))
            await call(conn.execute(done_apg, [r[0] for r in rows]))
        rate = n / (time.perf_counter() - start)
        await call(conn.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        return rate

    def under_trio(fn: Any, batch: int) -> str:
        try:
            return f"{anyio.run(fn, batch, backend='trio'):,.0f}"
        except RuntimeError as exc:  # the driver's async API needs an asyncio loop
            return f"fails ({exc})"

    asyncio.run(admin(dsn, setup))
    try:
        print("| driver | 1 job per transaction | 100 jobs per transaction |")
        print("|---|---:|---:|")
        rows = [
            ("asyncpg on asyncio", lambda b: f"{asyncio.run(on_asyncio(b)):,.0f}"),
            ("asyncpg called from trio", lambda b: under_trio(on_asyncio, b)),
            (
                "asyncpg on a helper-thread loop, from trio",
                lambda b: f"{anyio.run(bridged_from_trio, b, backend='trio'):,.0f}",
            ),
            ("psycopg 3 async on asyncio", lambda b: f"{asyncio.run(psycopg_async(b)):,.0f}"),
            ("psycopg 3 async called from trio", lambda b: under_trio(psycopg_async, b)),
            ("psycopg 3 sync", lambda b: f"{psycopg_sync(b):,.0f}"),
        ]
        for name, measure_one in rows:
            print(f"| {name} | {measure_one(1)} | {measure_one(100)} |", flush=True)
    finally:
        asyncio.run(admin(dsn, f"DROP SCHEMA {schema} CASCADE"))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--drivers", action="store_true", help="compare the drivers instead")
    args = parser.parse_args()
    if args.drivers:
        drivers(args.dsn)
        return
    lines = run(args.dsn)
    print("\n".join(lines))
    if args.write:
        write_section(lines, "python bench/bench_postgres.py --write")


if __name__ == "__main__":
    main()
