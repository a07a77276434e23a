"""Queue CPU cost per job, this tree against another checkout, measured alternately.

Usage: ``python bench/bench_queue_cpu.py --against DIR [--rounds 5] [--scale 1.0]
[--postgres DSN]``.
Each round runs, in a fresh process per tree (old, new, old, new, ...), the phases of
``bench_queue.py`` taken from that tree's own ``bench/bench_queue.py``: the raw ``sqlite3``
cycle (one job and 100 jobs per transaction), the async API with one caller (asyncio and trio,
one job and 100 per call) and the 64-worker group-commit cycle (synchronous=NORMAL). For each
it records jobs/s and CPU time per job (``time.process_time``: every thread of the process, so
the writer thread counts). On a loaded machine wall-clock rates swing with the neighbours;
CPU time per job moves much less, and the medians of alternate runs compare like with like.
``--postgres DSN`` measures ``PostgresQueue`` instead, in one process per tree and round: 400
single-job cycles and 30 cycles of 100 jobs per backend, each in a fresh schema, client CPU only.
``--http`` measures the HTTP server's own CPU per request (enqueue and pull, driven by wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_ONE_ROUND = """
import itertools, json, sys, tempfile, time, anyio
from pathlib import Path
sys.path.insert(0, "bench")
import bench_queue as b
from actors.queue import SQLiteQueue
scale = float(sys.argv[1])
n1, n100, n64 = int(2000 * scale), int(20000 * scale) // 100 * 100, int(3000 * scale)
folder = Path(tempfile.mkdtemp(prefix="bench-queue-cpu-"))
files = (folder / f"q{i}.db" for i in itertools.count())
out = {}
def measure(name, jobs, work):
    c0 = time.process_time()
    rate = work()
    out[name] = {"rate": rate, "cpu_us": (time.process_time() - c0) / jobs * 1e6}
async def api(batch, n):
    async with SQLiteQueue.open(next(files)) as q:
        return (await b.api_phases(q, n, batch))["cycle"]
for batch, n in ((1, n1), (100, n100)):
    measure(f"raw {batch}", n, lambda: b.raw_phases(next(files), "normal", n, batch)["cycle"])
for backend in ("asyncio", "trio"):
    for batch, n in ((1, n1), (100, n100)):
        measure(f"api {backend} {batch}", n, lambda: anyio.run(api, batch, n, backend=backend))
    measure(f"64 workers {backend}", n64, lambda: anyio.run(
        b.group_commit_cycle, next(files), "normal", 64, n64, backend=backend))
print(json.dumps(out))
"""

# PostgresQueue, one process: single-job cycles (enqueue, pull, ack) and 100-job cycles, client
# CPU per job (this process only: the server's backend is another process).
_ONE_PG_ROUND = """
import asyncio, json, sys, time, uuid, anyio, asyncpg
from actors.queue import Ack, NewJob
from actors.queue.postgres import PostgresQueue
dsn, scale = sys.argv[1], float(sys.argv[2])
singles, batches = int(400 * scale), max(1, int(30 * scale))
out = {}
async def cycles(schema, tag):
    async with PostgresQueue.open(dsn, schema=schema, pool_size=2) as q:
        await q.enqueue("warm", "t", "warm")
        for job in await q.pull(max=1):
            await q.ack(job.id, job.lease_token or "")
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(singles):
            await q.enqueue("bench", "t", f"{tag}-{i}")
            for job in await q.pull(max=1, visibility_seconds=60):
                await q.ack(job.id, job.lease_token or "")
        c1, t1 = time.process_time(), time.perf_counter()
        for i in range(batches):
            news = [NewJob(run_id="b", tenant_id="t", r2_key=f"{tag}{i}-{k}") for k in range(100)]
            await q.enqueue_many(news)
            jobs = await q.pull(max=100, visibility_seconds=60)
            await q.ack_many([Ack(job_id=j.id, lease_token=j.lease_token or "") for j in jobs])
        c2, t2 = time.process_time(), time.perf_counter()
    return (singles / (t1 - t0), (c1 - c0) / singles * 1e6,
            batches * 100 / (t2 - t1), (c2 - c1) / (batches * 100) * 1e6)
async def drop(schema):
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()
for backend in ("asyncio", "trio"):
    schema = f"bench_cpu_{uuid.uuid4().hex[:10]}"
    try:
        r1, c1, r100, c100 = anyio.run(cycles, schema, backend, backend=backend)
    finally:
        asyncio.run(drop(schema))
    out[f"pg {backend} 1"] = {"rate": r1, "cpu_us": c1}
    out[f"pg {backend} 100"] = {"rate": r100, "cpu_us": c100}
print(json.dumps(out))
"""

# The HTTP server (``python -m actors run``, asyncio, queue_only) started by the tree's own
# bench/bench_http.py; wrk drives enqueue (32 connections) then pull (4 connections, a seeded
# queue), and the server's CPU comes from /proc/<pid>/stat: its CPU per request, wrk excluded.
_ONE_HTTP_ROUND = """
import json, os, re, sys, tempfile
from pathlib import Path
sys.path.insert(0, "bench")
import bench_http as b
seconds = int(float(sys.argv[1]) * 3)
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick
out = {}
for name, path, lua, conns, seeded in (
    ("http enqueue", "/jobs/enqueue", b.ENQUEUE_LUA, 32, 0),
    ("http pull", "/jobs/pull", b.PULL_LUA, 4, 30000),
):
    with tempfile.TemporaryDirectory() as tmp:
        process, url = b.start_server(Path(tmp))
        try:
            if seeded:
                b.seed(url, seeded)
            c0 = cpu(process.pid)
            r = b.wrk(url, path, lua % {"token": b.TOKEN}, seconds, conns, Path(tmp))
            used = cpu(process.pid) - c0
        finally:
            b.stop_server(process)
    requests = int(re.search(r"(\\d+) requests in", r["raw"])[1])
    out[name] = {"rate": r["rps"], "cpu_us": used / requests * 1e6}
print(json.dumps(out))
"""


def one_round(tree: Path, scale: float, dsn: str | None) -> dict[str, dict[str, float]]:
    if dsn == "http":
        args = [_ONE_HTTP_ROUND, str(scale)]
    else:
        args = [_ONE_PG_ROUND, dsn, str(scale)] if dsn else [_ONE_ROUND, str(scale)]
    result = subprocess.run(
        [sys.executable, "-c", *args],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, dict[str, float]] = json.loads(result.stdout.splitlines()[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every job count")
    parser.add_argument(
        "--postgres", metavar="DSN", help="measure PostgresQueue cycles on this server instead"
    )
    parser.add_argument("--http", action="store_true", help="measure the HTTP server instead")
    args = parser.parse_args()
    other = args.against.resolve()
    target = "http" if args.http else args.postgres
    old: list[dict[str, dict[str, float]]] = []
    new: list[dict[str, dict[str, float]]] = []
    for i in range(args.rounds):
        old.append(one_round(other, args.scale, target))
        new.append(one_round(ROOT, args.scale, target))
        print(f"round {i + 1}: load {os.getloadavg()[0]:.1f}", flush=True)
        for name in new[-1]:
            o, n = old[-1][name], new[-1][name]
            print(
                f"  {name}: other {o['rate']:,.0f} jobs/s {o['cpu_us']:.0f} us/job, "
                f"this {n['rate']:,.0f} jobs/s {n['cpu_us']:.0f} us/job",
                flush=True,
            )
    print()
    print("| phase | jobs/s other | jobs/s this | this/other | CPU us/job other | CPU us/job this "
          "| this/other | CPU us/job each round, other; this |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in new[0]:

        def med(runs: list[dict[str, dict[str, float]]], key: str, name: str = name) -> float:
            return statistics.median(r[name][key] for r in runs)

        ro, rn, co, cn = med(old, "rate"), med(new, "rate"), med(old, "cpu_us"), med(new, "cpu_us")
        each = " ".join(f"{r[name]['cpu_us']:.0f}" for r in old)
        each += "; " + " ".join(f"{r[name]['cpu_us']:.0f}" for r in new)
        print(
            f"| {name} | {ro:,.0f} | {rn:,.0f} | {rn / ro:.2f} | {co:.0f} | {cn:.0f} "
            f"| {cn / co:.2f} | {each} |"
        )


if __name__ == "__main__":
    main()
