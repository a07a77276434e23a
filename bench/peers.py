"""The peer table of issue 18 in one command: the queue against other Python queues, same run.

Setup (once; the peers never become project dependencies): a throwaway environment beside the
project's, made with the ordinary pip client::

    python bench/peers.py --setup            # = python -m venv /tmp/peers-venv &&
                                             #   /tmp/peers-venv/bin/pip install litequeue huey
                                             #   pgqueuer procrastinate asyncpg

Run (from the project root, with the project's environment)::

    PYTHONPATH=$PWD python bench/peers.py [--scale 1.0] [--rounds 3] [--only sqlite|postgres]
        [--peers-python /tmp/peers-venv/bin/python] [--dsn postgresql://postgres@127.0.0.1/test]

Every measurement runs in a fresh process: ours with this interpreter, a peer's with the peers'
interpreter (a peer that is not installed there is skipped with a line saying so). Rounds are
interleaved (each round measures every row, the implementations' order rotated per round), and
the table prints the median of the rounds and ratios to the peers measured in the same run.
``raw`` is the queue's own SQL in a tight loop, ``lean`` the same loop over a minimal table
(``bench_queue.lean_phases``).

SQLite rows (synchronous=NORMAL unless the row says full; every peer set to the same):

- ``single``: one caller, one job at a time: enqueue N, then pull and ack each (huey has no ack:
  its dequeue deletes). Ours on asyncio, the peers synchronous.
- ``64 callers``: 64 callers each looping enqueue -> pull one -> ack (ours 64 tasks on one
  event loop sharing group commits; a peer 64 threads, litequeue a connection each, huey one
  shared storage object, as its lock expects).
- ``batch 100``: enqueue 100 in one call/transaction, pull 100, ack 100 (litequeue pops one at a
  time: it has no batched pop; huey has no batched verbs and is left out).

PostgreSQL rows: batches of 10 (enqueue 10, take up to 10, ack them), 1 and 4 worker processes
started together, each on its own jobs, the rate every worker's jobs over the wall time: ours
(``PostgresQueue``), a raw asyncpg SKIP LOCKED loop (``bench/bench_postgres.py``'s ceiling:
three autocommitted statements, each waiting for its WAL flush), the same loop with its claim
committed as ours is (``raw_async``: not waiting for the claim's flush), pgqueuer (``Queries``
enqueue / dequeue / log_jobs) and procrastinate (``batch_defer_async``, then its job manager's
``fetch_job`` and ``finish_job``: it fetches one job per call). Beside the rates, the worker
processes' CPU per job (the server's backends are not counted). ``--against TREE`` measures
ours from that tree too, as ``before``, in both tables (``--only postgres``: these rows alone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = os.environ.get("PEERS_PYTHON", "/tmp/peers-venv/bin/python")
PEER_PACKAGES = ["litequeue", "huey", "pgqueuer", "procrastinate", "asyncpg"]
DSN = "postgresql://postgres@127.0.0.1:5432/test"
# Run with this interpreter; the rest with the peers'.
OURS = {"ours", "raw", "lean", "raw_async", "before"}
AGAINST: list[str] = []  # --against TREE: "before" runs ours from that tree
REALTIME: list[str] = []  # --realtime: the single-threaded rows under `chrt -f 1`
SKIP: list[str] = []  # --skip KIND: PostgreSQL implementations left out (procrastinate is slow)
CALLERS = 64

# --- SQLite: one measurement, in its own process ----------------------------------------------

CPU_AT_START = [0.0]  # the process's CPU seconds (every thread) when the timed part began


def cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timer() -> float:
    """Start the timed part: wall clock returned, CPU kept in CPU_AT_START."""
    CPU_AT_START[0] = cpu_seconds()
    return time.perf_counter()


def sqlite_raw(mode: str, durability: str, n: int, path: Path, *, lean: bool = False) -> float:
    """The queue's own SQL in a tight synchronous loop (``bench_queue.raw_phases``): its floor;
    ``lean``: the same loop over a minimal table and the shortest SQL (``lean_phases``)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_queue import lean_phases, raw_phases

    timer()  # raw_phases opens and migrates its file inside the timed part: a few ms
    phases = lean_phases if lean else raw_phases
    rates = phases(path, durability, n, 1 if mode == "single" else 100)  # type: ignore[arg-type]
    return rates["cycle"]


def sqlite_ours(mode: str, durability: str, n: int, path: Path) -> float:
    import anyio

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_queue import concurrent_cycle, new_jobs

    from actors.queue import Ack, SQLiteQueue

    async def main() -> float:
        async with SQLiteQueue.open(path, durability=durability) as q:  # type: ignore[arg-type]
            t0 = timer()
            if mode == "single":
                for i in range(n):
                    await q.enqueue("bench", "t", f"k{i}")
                for _ in range(n):
                    for job in await q.pull(max=1):
                        await q.ack(job.id, job.lease_token or "")
            elif mode == "batch":
                for _ in range(n // 100):
                    await q.enqueue_many(new_jobs(100))
                for _ in range(n // 100):
                    jobs = await q.pull(max=100)
                    await q.ack_many(
                        [Ack(job_id=j.id, lease_token=j.lease_token or "") for j in jobs]
                    )
            else:
                counter = iter(range(10**9))
                return await concurrent_cycle(
                    CALLERS,
                    n,
                    lambda: q.enqueue("bench", "t", f"k{next(counter)}"),
                    lambda: q.pull(max=1),
                    lambda job: q.ack(job.id, job.lease_token or ""),
                )
            return n / (time.perf_counter() - t0)

    return anyio.run(main, backend="asyncio")


def _litequeue(path: Path, durability: str) -> Any:
    from litequeue import LiteQueue

    q = LiteQueue(str(path), timeout=30)
    if durability == "full":
        q.conn.execute("PRAGMA synchronous = FULL")
    return q


def _huey(path: Path, durability: str) -> Any:
    from huey.storage import SqliteStorage

    storage = SqliteStorage(name="bench", filename=str(path), timeout=30)
    storage.conn.execute(f"PRAGMA synchronous = {durability.upper()}")
    return storage


def sqlite_peer(kind: str, mode: str, durability: str, n: int, path: Path) -> float:
    make = _litequeue if kind == "litequeue" else _huey
    if kind == "litequeue":

        def put(q: Any, i: int) -> None:
            q.put(f"k{i}")

        def take(q: Any) -> bool:
            message = q.pop()
            if message is None:
                return False
            q.done(message.message_id)
            return True

    else:

        def put(q: Any, i: int) -> None:
            q.enqueue(f"k{i}".encode())

        def take(q: Any) -> bool:
            return q.dequeue() is not None

    if mode == "single":
        q = make(path, durability)
        t0 = timer()
        for i in range(n):
            put(q, i)
        for _ in range(n):
            take(q)
        return n / (time.perf_counter() - t0)
    if mode == "batch":
        q = make(path, durability)
        t0 = timer()
        for b in range(n // 100):
            with q.transaction("IMMEDIATE"):
                for i in range(100):
                    q.put(f"k{b}-{i}")
        for _ in range(n // 100):
            messages = [q.pop() for _ in range(100)]
            with q.transaction("IMMEDIATE"):
                for m in messages:
                    if m is not None:
                        q.done(m.message_id)
        return n / (time.perf_counter() - t0)
    # 64 callers: threads, each looping enqueue -> take one
    make(path, durability)  # creates the tables before the threads race to
    shared = make(path, durability) if kind == "huey" else None
    done = 0
    lock = threading.Lock()

    def caller(k: int) -> None:
        nonlocal done
        q = shared if shared is not None else make(path, durability)
        i = 0
        while done < n:
            put(q, k * 10**7 + i)
            i += 1
            if take(q):
                with lock:
                    done += 1

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(CALLERS)]
    t0 = timer()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done / (time.perf_counter() - t0)


# --- PostgreSQL: one worker process of a measurement ------------------------------------------


def ready_then_wait() -> None:
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    timer()  # the worker's CPU from here on: its own process, not the server's backends


async def pgqueuer_worker(dsn: str, n: int, batch: int) -> None:
    from datetime import timedelta

    import asyncpg  # type: ignore[import-untyped]
    from pgqueuer.queries import EntrypointExecutionParameter, Queries

    conn = await asyncpg.connect(dsn)
    queries = Queries.from_asyncpg_connection(conn)
    entrypoints = {"bench": EntrypointExecutionParameter(concurrency_limit=0)}
    manager = uuid.uuid4()

    async def take() -> int:
        jobs = await queries.dequeue(
            batch_size=batch,
            entrypoints=entrypoints,  # type: ignore[arg-type]
            queue_manager_id=manager,  # type: ignore[arg-type]
            global_concurrency_limit=None,
            heartbeat_timeout=timedelta(seconds=60),
        )
        if jobs:
            await queries.log_jobs([(job, "successful", None) for job in jobs])
        return len(jobs)

    ready_then_wait()
    for _ in range(n // batch):
        await queries.enqueue(["bench"] * batch, [None] * batch, [0] * batch)
        await take()
    while await take():  # the leftovers
        pass
    await conn.close()


async def procrastinate_worker(dsn: str, n: int, batch: int) -> None:
    import logging

    import procrastinate

    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # "App is instantiated in main"
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="bench", queue="bench")  # type: ignore[untyped-decorator,misc]
    def bench() -> None: ...

    async with app.open_async():
        manager = app.job_manager
        worker_id = await manager.register_worker()
        status = procrastinate.jobs.Status.SUCCEEDED

        async def take() -> int:
            taken = 0
            for _ in range(batch):
                job = await manager.fetch_job(["bench"], worker_id)
                if job is None:
                    break
                await manager.finish_job(job, status, delete_job=False)
                taken += 1
            return taken

        ready_then_wait()
        for _ in range(n // batch):
            await bench.batch_defer_async(*[{} for _ in range(batch)])
            await take()
        while await take():
            pass
        await manager.unregister_worker(worker_id)


async def pg_setup(kind: str, dsn: str) -> None:
    if kind == "pgqueuer":
        import asyncpg
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(dsn)
        try:
            await Queries.from_asyncpg_connection(conn).install()
        finally:
            await conn.close()
    else:
        import procrastinate

        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
        async with app.open_async():
            await app.schema_manager.apply_schema_async()


def pg_worker_main(kind: str, dsn: str, where: str, n: int, batch: int) -> None:
    import asyncio

    if kind in OURS:  # "before": this tree's bench_postgres over the --against tree's queue
        sys.path.insert(0, str(ROOT / "bench"))
        import bench_postgres

        bench_postgres.ready_then_wait = ready_then_wait  # type: ignore[attr-defined]
        bench_postgres.worker_main(
            [kind if kind.startswith("raw") else "postgres", dsn, where, str(n), str(batch)]
        )
    elif kind == "pgqueuer":
        asyncio.run(pgqueuer_worker(dsn, n, batch))
    else:
        asyncio.run(procrastinate_worker(dsn, n, batch))
    print(json.dumps({"cpu": cpu_seconds() - CPU_AT_START[0]}), flush=True)


# --- the parent -------------------------------------------------------------------------------


def python_for(kind: str, peers_python: str) -> str:
    return sys.executable if kind in OURS else peers_python


def child_env(kind: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = AGAINST[0] if kind == "before" else str(ROOT)
    return env


def installed(peers_python: str) -> set[str]:
    if not Path(peers_python).exists():
        return set()
    out = subprocess.run(
        [
            peers_python,
            "-c",
            "import importlib.util as u, sys; "
            f"print(' '.join(m for m in {PEER_PACKAGES!r} if u.find_spec(m)))",
        ],
        capture_output=True,
        text=True,
    )
    return set(out.stdout.split())


def measure_sqlite(
    kind: str, mode: str, durability: str, n: int, peers_python: str
) -> tuple[float, float]:
    """jobs/s and CPU microseconds per job (every thread of the measuring process)."""
    # Single and batch rows keep at most two threads busy, so a real-time class for them holds
    # one core at a time: what an otherwise idle machine would give them.
    prefix = REALTIME if mode != "concurrent" else []
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                *prefix,
                python_for(kind, peers_python),
                __file__,
                "--one",
                kind,
                mode,
                durability,
                str(n),
                str(Path(tmp) / "q.db"),
            ],
            capture_output=True,
            text=True,
            env=child_env(kind),
            timeout=900,
        )
    if out.returncode != 0:
        sys.exit(f"{kind} {mode} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["rate"]), float(result["cpu_us"])


def measure_pg(
    kind: str, dsn: str, where: str, workers: int, batch: int, total: int, peers_python: str
) -> tuple[float, float]:
    """jobs/s over every worker's jobs, and the workers' CPU µs per job (their processes from
    the start signal on; the server's backends are not counted)."""
    per_worker = total // workers // batch * batch
    procs = [
        subprocess.Popen(
            [
                python_for(kind, peers_python),
                __file__,
                "--pg-worker",
                kind,
                dsn,
                where,
                str(per_worker),
                str(batch),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(kind),
        )
        for _ in range(workers)
    ]
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        if line != "ready":
            sys.exit(f"a {kind} worker did not start (said {line!r})")
    start = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    cpu = 0.0
    for p in procs:
        assert p.stdout is not None
        said = p.stdout.read().strip().splitlines()
        if p.wait(timeout=900) != 0 or not said:
            sys.exit(f"a {kind} worker failed")
        cpu += float(json.loads(said[-1])["cpu"])
    elapsed = time.perf_counter() - start
    return per_worker * workers / elapsed, cpu / (per_worker * workers) * 1e6


def table(
    title: str, rows: dict[str, dict[str, list[float]]], peers: list[str], *, cost: bool = False
) -> list[str]:
    """Medians of each row's rounds, then ours over each peer and over the best peer (for a
    ``cost``, the peer's over ours: above 1x, ours is ahead either way)."""
    lines = [f"{title}", ""]
    head = "| row | ours | " + " | ".join(peers) + " | " + " | ".join(f"ours / {p}" for p in peers)
    lines.append(head + " | ours / best peer |")
    lines.append("|---|" + "---:|" * (2 * len(peers) + 2))
    for row, by_kind in rows.items():
        med = {k: statistics.median(v) for k, v in by_kind.items() if v}
        ours = med.get("ours")
        cells = [f"{med[p]:,.0f}" if p in med else "-" for p in peers]
        speed = {p: (med[p] / ours if cost else ours / med[p]) for p in med if ours and p in med}
        ratios = [f"{speed[p]:.2f}x" if p in speed else "-" for p in peers]
        present = [speed[p] for p in peers if p in speed and p not in OURS]  # peers only
        best = f"{min(present):.2f}x" if present else "-"
        lines.append(
            f"| {row} | {ours:,.0f} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(ratios)
            + f" | {best} |"
        )
    return lines


def run_sqlite(scale: float, rounds: int, have: set[str], peers_python: str) -> list[str]:
    configs = [
        ("single", "normal", int(3000 * scale), ["raw", "lean", "litequeue", "huey"]),
        ("concurrent", "normal", int(6000 * scale), ["litequeue", "huey"]),
        ("concurrent", "full", int(3000 * scale), ["litequeue", "huey"]),
        ("batch", "normal", int(10000 * scale) // 100 * 100, ["raw", "lean", "litequeue"]),
    ]
    names = {
        "single": "single caller, one job at a time",
        "concurrent": f"{CALLERS} callers",
        "batch": "batches of 100",
    }
    for peer in ("litequeue", "huey"):
        if peer not in have:
            print(f"skipping {peer}: not installed in {peers_python} (see --setup)", flush=True)
    rows: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        for mode, durability, n, peers in configs:
            row = f"{names[mode]}, {durability}"
            kinds = ["ours"] + (["before"] if AGAINST else [])
            kinds += [p for p in peers if p in have or p in OURS]
            kinds = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            for kind in kinds:
                rate, us = measure_sqlite(kind, mode, durability, n, peers_python)
                rows.setdefault(row, {}).setdefault(kind, []).append(rate)
                cpu.setdefault(row, {}).setdefault(kind, []).append(us)
                print(
                    f"round {r + 1} {row:40} {kind:10} {rate:10,.0f} jobs/s {us:7,.0f} CPU us/job",
                    flush=True,
                )
    columns = (["before"] if AGAINST else []) + ["raw", "lean", "litequeue", "huey"]
    return [
        *table("SQLite, jobs/s (median of the rounds)", rows, columns),
        "",
        *table(
            "SQLite, CPU us per job, every thread of the measuring process (median of the "
            "rounds; ratio: the other's over ours)",
            cpu,
            columns,
            cost=True,
        ),
    ]


def run_postgres(
    dsn: str, scale: float, rounds: int, have: set[str], peers_python: str
) -> list[str]:
    import asyncio

    import asyncpg

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_postgres import RAW_SETUP

    peers = [p for p in ("pgqueuer", "procrastinate") if p in have]
    for peer in ("pgqueuer", "procrastinate"):
        if peer not in have:
            print(f"skipping {peer}: not installed in {peers_python} (see --setup)", flush=True)
    db = f"peers_{uuid.uuid4().hex[:10]}"
    base, _, _ = dsn.rpartition("/")
    peer_dsn = f"{base}/{db}"

    async def admin(target: str, sql: str) -> None:
        conn = await asyncpg.connect(target)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(dsn, f"CREATE DATABASE {db}"))
    rows: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}
    try:
        asyncio.run(admin(peer_dsn, f"CREATE SCHEMA raw; SET search_path = raw; {RAW_SETUP}"))
        for peer in peers:
            subprocess.run(
                [peers_python, __file__, "--pg-setup", peer, peer_dsn], check=True, env=child_env()
            )
        total = int(2000 * scale) // 40 * 40
        for r in range(rounds):
            for workers in (1, 4):
                row = f"batches of 10, {workers} process{'es' if workers > 1 else ''}"
                kinds = ["ours", *(["before"] if AGAINST else []), "raw", "raw_async", *peers]
                kinds = [k for k in kinds if k not in SKIP]
                kinds = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
                for kind in kinds:
                    # A fresh schema per measurement of ours: an empty table each time.
                    where = "raw" if kind.startswith("raw") else f"ours_{uuid.uuid4().hex[:8]}"
                    rate, us = measure_pg(kind, peer_dsn, where, workers, 10, total, peers_python)
                    rows.setdefault(row, {}).setdefault(kind, []).append(rate)
                    cpu.setdefault(row, {}).setdefault(kind, []).append(us)
                    print(
                        f"round {r + 1} {row:40} {kind:14} {rate:10,.0f} jobs/s "
                        f"{us:7,.0f} CPU us/job",
                        flush=True,
                    )
    finally:
        asyncio.run(admin(dsn, f"DROP DATABASE {db} WITH (FORCE)"))
    columns = (["before"] if AGAINST else []) + ["raw", "raw_async", *peers]
    columns = [c for c in columns if c not in SKIP]
    return [
        *table("PostgreSQL, jobs/s (median of the rounds)", rows, columns),
        "",
        *table(
            "PostgreSQL, CPU us per job of the worker processes (not the server's; median of "
            "the rounds; ratio: the other's over ours)",
            cpu,
            columns,
            cost=True,
        ),
    ]


def setup(peers_python: str) -> None:
    venv = Path(peers_python).parent.parent
    if not Path(peers_python).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([peers_python, "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    print(f"peers installed in {venv}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        kind, mode, durability, n, path = sys.argv[2:7]
        if kind in ("ours", "before"):
            rate = sqlite_ours(mode, durability, int(n), Path(path))
        elif kind in ("raw", "lean"):
            rate = sqlite_raw(mode, durability, int(n), Path(path), lean=kind == "lean")
        else:
            rate = sqlite_peer(kind, mode, durability, int(n), Path(path))
        cpu = cpu_seconds() - CPU_AT_START[0]
        print(json.dumps({"rate": rate, "cpu_us": cpu / int(n) * 1e6}))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--pg-worker":
        kind, dsn, where, n, batch = sys.argv[2:7]
        pg_worker_main(kind, dsn, where, int(n), int(batch))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--pg-setup":
        import asyncio

        asyncio.run(pg_setup(sys.argv[2], sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", action="store_true", help="install the peers, then stop")
    parser.add_argument("--peers-python", default=PEERS_PYTHON)
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--against", help="also measure ours from this tree, as 'before'")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run the single-caller and batch rows under `chrt -f 1` (root): on a shared, "
        "loaded machine the scheduler favours a design whose threads sleep and wake often",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="KIND",
        help="leave this implementation out of the PostgreSQL rows (repeatable)",
    )
    args = parser.parse_args()
    SKIP.extend(args.skip)
    if args.realtime:
        REALTIME.extend(["chrt", "-f", "1"])
    if args.against:
        AGAINST.append(str(Path(args.against).resolve()))
    if args.setup:
        setup(args.peers_python)
        return
    have = installed(args.peers_python)
    out: list[str] = []
    if args.only in (None, "sqlite"):
        out += [*run_sqlite(args.scale, args.rounds, have, args.peers_python), ""]
    if args.only in (None, "postgres"):
        out += run_postgres(args.dsn, args.scale, args.rounds, have, args.peers_python)
    print()
    print("\n".join(out))


if __name__ == "__main__":
    main()
