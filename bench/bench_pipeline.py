"""Pipeline benchmark: end-to-end jobs/s on embedded defaults, beside the queue's raw cycle; memory.

Usage: ``python bench/bench_pipeline.py [--jobs 20000] [--memory-jobs 1000000]
[--against DIR [DIR...] --rounds 5] [--documents] [--write]``.
Each job is a tiny text object (so the measured cost is the system's own: queue, actors,
acks), processed by the offline processor on the embedded defaults (config/actors.toml with
its paths moved to a temporary folder). In the same run it measures the raw ``sqlite3``
enqueue+pull+ack cycle of the queue's own SQL, one job per transaction and 100 per
transaction, so the ratio is honest on a noisy machine. ``--memory-jobs`` runs one long
pipeline and samples its resident memory (RSS) as jobs complete. ``--against DIR [DIR...]``
runs the end-to-end measurement in turn on this tree and on other checkouts (e.g. the main
branch, or the commits of a series of changes), ``--rounds`` times per backend, each in a fresh
process, and reports the medians (jobs/s, CPU per job of the process and its worker processes,
CPU per job of the event loop's thread) and their ratios to the last checkout: on a shared
machine only a same-run ratio means anything. ``--documents``
measures what one document costs processed on the loop's thread and in a worker process, by
size. ``--write`` replaces the "## Pipeline" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from actors.config import Config, LogConfig, QueueConfig, StorageConfig
from actors.log import configure_logging
from actors.queue import NewJob
from actors.queue.factory import open_queue
from actors.storage import LocalObjectStore
from actors.system import ActorSystem

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_queue import raw_phases  # noqa: E402  (a sibling script, not a package)

DOC = b"Tiny report. The harbour opened at dawn. Two ferries ran. Nothing else happened.\n"
RUN_SIZE = 10_000  # jobs per run, as a producer would submit them


def rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def workers_rss_mib() -> float:
    """The resident memory of this process's children (the worker processes), together."""
    total = 0.0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            for pid in f.read().split():
                with contextlib.suppress(OSError):  # it just exited
                    total += rss_mib(pid)
    return total


def config_in(folder: Path) -> Config:
    return Config(
        queue=QueueConfig(path=str(folder / "q.db")),
        storage=StorageConfig(root=str(folder / "objects")),
        log=LogConfig(level="error"),
    )


async def enqueue_all(config: Config, jobs: int) -> list[str]:
    """Store the object and enqueue every job before the pipeline starts."""
    await LocalObjectStore(config.storage.root).put("bench/doc.txt", DOC)
    runs = []
    async with open_queue(config) as queue:
        for start in range(0, jobs, RUN_SIZE):
            run_id = f"run-{start // RUN_SIZE}"
            runs.append(run_id)
            for batch in range(start, min(jobs, start + RUN_SIZE), 1000):
                count = min(1000, jobs - batch, start + RUN_SIZE - batch)
                await queue.enqueue_many(
                    [NewJob(run_id=run_id, tenant_id="bench", r2_key="bench/doc.txt")] * count
                )
    return runs


async def end_to_end(jobs: int) -> float:
    """Jobs/s from the system's start to the last run's end, all jobs enqueued beforehand."""
    with tempfile.TemporaryDirectory() as folder:
        config = config_in(Path(folder))
        runs = await enqueue_all(config, jobs)
        t0 = time.perf_counter()
        async with ActorSystem(config) as system:
            for run_id in runs:
                await system.wait_run(run_id)
            elapsed = time.perf_counter() - t0
            stats = await system.stats()
            assert stats.done == jobs, stats
        return jobs / elapsed


async def memory(jobs: int, samples: int = 10) -> list[tuple[int, float, float, float]]:
    """(jobs done, RSS MiB, the workers' RSS MiB, jobs/s since the previous sample) at evenly
    spaced points."""
    points: list[tuple[int, float, float, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        config = config_in(Path(folder))
        await enqueue_all(config, jobs)
        async with ActorSystem(config) as system:
            step = jobs // samples
            last_done, last_t = 0, time.perf_counter()
            while last_done < jobs:
                await anyio.sleep(0.5)
                done = system.ack_stats.done
                if done - last_done >= step or done == jobs:
                    now = time.perf_counter()
                    rate = (done - last_done) / (now - last_t)
                    points.append((done, rss_mib(), workers_rss_mib(), rate))
                    print(
                        f"  {done:>9,} done  RSS {points[-1][1]:7.1f} MiB  workers "
                        f"{points[-1][2]:7.1f} MiB  {rate:7,.0f} jobs/s",
                        flush=True,
                    )
                    last_done, last_t = done, now
    return points


# Run in a fresh process with a tree's own `bench_pipeline` and `actors`: jobs/s, the CPU time
# per job of the process and its worker processes (user + system, all threads; the workers'
# counted once the system has stopped and reaped them), which a busy machine disturbs less
# than the rate, and the event loop's thread's alone.
_ONE_RUN = """
import resource, sys, tempfile, time, anyio
from pathlib import Path
sys.path.insert(0, "bench")
import bench_pipeline as b
from actors.log import configure_logging
from actors.system import ActorSystem
configure_logging("error")
def children():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
async def main(jobs):
    with tempfile.TemporaryDirectory() as folder:
        config = b.config_in(Path(folder))
        runs = await b.enqueue_all(config, jobs)
        c0, w0, t0, l0 = time.process_time(), children(), time.perf_counter(), time.thread_time()
        async with ActorSystem(config) as system:
            for run_id in runs:
                await system.wait_run(run_id)
            t1, l1 = time.perf_counter(), time.thread_time()
        c1, w1 = time.process_time(), children()
    print(jobs / (t1 - t0), (c1 - c0 + w1 - w0) / jobs * 1e6, (l1 - l0) / jobs * 1e6)
anyio.run(main, int(sys.argv[1]), backend=sys.argv[2])
"""

Run = tuple[float, float, float]  # jobs/s, CPU us per job (all processes), loop thread's


def one_end_to_end(tree: Path, backend: str, jobs: int) -> Run:
    """(jobs/s, CPU us per job, the loop thread's CPU us per job) of ``end_to_end`` in a fresh
    process importing ``tree``."""
    out = subprocess.run(
        [sys.executable, "-c", _ONE_RUN, str(jobs), backend],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    rate, cpu, loop = out.stdout.split()[-3:]
    return float(rate), float(cpu), float(loop)


def against(trees: list[Path], jobs: int, rounds: int) -> dict[str, list[list[Run]]]:
    """Per backend, per tree (this one first): its runs, the trees measured in turn."""
    runs: dict[str, list[list[Run]]] = {}
    for backend in ("asyncio", "trio"):
        each: list[list[Run]] = [[] for _ in trees]
        for _ in range(rounds):
            for i in reversed(range(len(trees))):  # the others first, this tree last
                each[i].append(one_end_to_end(trees[i], backend, jobs))
            print(
                f"  {backend}: "
                + "; ".join(
                    f"{tree.name} {e[-1][0]:,.0f} jobs/s {e[-1][1]:,.0f} us CPU/job "
                    f"{e[-1][2]:,.0f} us loop/job"
                    for tree, e in zip(trees, each, strict=True)
                ),
                flush=True,
            )
        runs[backend] = each
    return runs


async def document_costs(sizes: list[int], calls: int = 40) -> list[tuple[int, float, float]]:
    """(bytes, us per document on this thread, us per document in a worker process)."""
    from actors.config import ProcessorConfig
    from actors.processors import WorkerPool, process_locally

    settings = ProcessorConfig()
    pool = WorkerPool(1)
    costs = []
    try:
        for size in sizes:
            data = (DOC * (size // len(DOC) + 1))[:size]
            process_locally(settings, data, "doc.txt", None)  # imports, caches: warm both
            await pool.run(process_locally, settings, data, "doc.txt", None)
            t0 = time.perf_counter()
            for _ in range(calls):
                process_locally(settings, data, "doc.txt", None)
            inline = (time.perf_counter() - t0) / calls
            t0 = time.perf_counter()
            for _ in range(calls):
                await pool.run(process_locally, settings, data, "doc.txt", None)
            worker = (time.perf_counter() - t0) / calls
            costs.append((size, inline * 1e6, worker * 1e6))
    finally:
        await pool.aclose()
    return costs


async def batch_costs(counts: list[int], documents: int = 800) -> list[tuple[int, float, float]]:
    """(documents per call, us of wall time per document, us of this thread's CPU per document)
    for tiny documents sent to one worker process in batches (`process_all`), and for 0: the
    same documents processed on this thread."""
    from actors.config import ProcessorConfig
    from actors.processors import WorkerPool, process_locally
    from actors.processors._local import process_all

    settings = ProcessorConfig()
    pool = WorkerPool(1)
    costs = []
    try:
        await pool.run(process_all, settings, [(DOC, "bench/doc.txt", None)])  # warm
        for count in counts:
            batch = [(DOC, "bench/doc.txt", None)] * count
            calls = max(20, documents // count)
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                await pool.run(process_all, settings, batch)
            t1, c1 = time.perf_counter(), time.thread_time()
            costs.append((count, (t1 - t0) / calls / count * 1e6, (c1 - c0) / calls / count * 1e6))
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(documents):
            process_locally(settings, DOC, "bench/doc.txt", None)
        t1, c1 = time.perf_counter(), time.thread_time()
        costs.append((0, (t1 - t0) / documents * 1e6, (c1 - c0) / documents * 1e6))
    finally:
        await pool.aclose()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument(
        "--memory-jobs",
        type=int,
        default=0,
        help="also run one long pipeline of this many jobs and sample its RSS",
    )
    parser.add_argument(
        "--against",
        type=Path,
        nargs="+",
        default=[],
        help="other checkouts to compare with, in turn (ratios are to the last one)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--documents", action="store_true", help="cost of one document, inline and in a worker"
    )
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args()
    configure_logging("error")
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as folder:
        raw1 = raw_phases(Path(folder) / "raw1.db", "normal", 5000, 1)["cycle"]
        raw100 = raw_phases(Path(folder) / "raw100.db", "normal", 50_000, 100)["cycle"]
    rates = {
        backend: anyio.run(end_to_end, args.jobs, backend=backend)
        for backend in ("asyncio", "trio")
    }
    say(
        f"End to end on embedded defaults ({args.jobs:,} tiny text jobs in runs of "
        f"{RUN_SIZE:,}; concurrency {Config().pipeline.concurrency}, pull batches of "
        f"{Config().queue.batch_size}), beside the raw `sqlite3` cycle of the queue's SQL "
        "(enqueue+pull+ack, synchronous=NORMAL) from the same run:"
    )
    say()
    say("| | jobs/s | / raw, 1 job per transaction | / raw, 100 per transaction |")
    say("|---|---:|---:|---:|")
    say(f"| raw `sqlite3` cycle, 1 job per transaction | {raw1:,.0f} | 1.00x | |")
    say(f"| raw `sqlite3` cycle, 100 jobs per transaction | {raw100:,.0f} | | 1.00x |")
    for backend, rate in rates.items():
        say(f"| pipeline, {backend} | {rate:,.0f} | {rate / raw1:.2f}x | {rate / raw100:.2f}x |")
    if args.against:
        trees = [ROOT, *(tree.resolve() for tree in args.against)]
        say()
        say(
            f"Alternately this tree and {', '.join(str(t) for t in args.against)} "
            f"({args.rounds} rounds per backend, each {args.jobs:,} jobs in a fresh process; "
            f"medians; load average {os.getloadavg()[0]:.1f} at the start):"
        )
        say()
        compared = against(trees, args.jobs, args.rounds)
        say(
            "| backend | tree | jobs/s | / last | CPU us per job | / last "
            "| loop thread us per job | / last | jobs/s each round |"
        )
        say("|---|---|---:|---:|---:|---:|---:|---:|---|")
        for backend, each in compared.items():
            medians = [
                [statistics.median(run[k] for run in runs) for k in range(3)] for runs in each
            ]
            last = medians[-1]
            for tree, runs, m in zip(trees, each, medians, strict=True):
                say(
                    f"| {backend} | {'this' if tree == ROOT else tree.name} | {m[0]:,.0f} "
                    f"| {m[0] / last[0]:.2f}x | {m[1]:,.0f} | {m[1] / last[1]:.2f}x "
                    f"| {m[2]:,.0f} | {m[2] / last[2]:.2f}x "
                    f"| {', '.join(f'{r[0]:,.0f}' for r in runs)} |"
                )
        say()
        say(f"Load average at the end: {os.getloadavg()[0]:.1f}.")
    if args.documents:
        say()
        say("One document of text (the offline processor), on the loop's thread and in a worker:")
        say()
        costs = anyio.run(document_costs, [80, 1024, 4096, 16384, 65536])
        say("| bytes | us on this thread | us in a worker process | worker / thread |")
        say("|---:|---:|---:|---:|")
        for size, inline, worker in costs:
            say(f"| {size:,} | {inline:,.0f} | {worker:,.0f} | {worker / inline:.2f}x |")
        say()
        say(
            f"Tiny documents ({len(DOC)} bytes) to a worker process in batches (one call per "
            "batch), against this thread, per document:"
        )
        say()
        say("| backend | documents per call | us of wall time | us of this thread's CPU |")
        say("|---|---:|---:|---:|")
        for backend in ("asyncio", "trio"):
            for count, wall, cpu in anyio.run(batch_costs, [1, 4, 8, 16, 32], backend=backend):
                say(f"| {backend} | {count or 'this thread'} | {wall:,.0f} | {cpu:,.0f} |")
    if args.memory_jobs:
        say()
        say(f"Resident memory over one long run of {args.memory_jobs:,} jobs (asyncio):")
        say()
        points = anyio.run(memory, args.memory_jobs)
        say("| jobs done | RSS MiB | worker processes' RSS MiB | jobs/s in the interval |")
        say("|---:|---:|---:|---:|")
        for done, rss, workers, rate in points:
            say(f"| {done:,} | {rss:.1f} | {workers:.1f} | {rate:,.0f} |")
        first = next((p for p in points if p[0] >= args.memory_jobs // 10), points[0])
        say()
        say(
            f"RSS from {first[0]:,} to {points[-1][0]:,} jobs: {first[1]:.1f} -> "
            f"{points[-1][1]:.1f} MiB ({(points[-1][1] / first[1] - 1) * 100:+.1f}%)."
        )
    say()
    say(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {time.strftime('%Y-%m-%d')}."
    )
    if args.write:
        command = (
            f"python bench/bench_pipeline.py --jobs {args.jobs}"
            + (f" --memory-jobs {args.memory_jobs}" if args.memory_jobs else "")
            + (
                f" --against {' '.join(map(str, args.against))} --rounds {args.rounds}"
                if args.against
                else ""
            )
            + (" --documents" if args.documents else "")
            + " --write"
        )
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text()
        body = f"Command: `{command}`\n\n" + "\n".join(lines) + "\n\n"
        if "## Pipeline\n" in text:
            text = re.sub(
                r"(## Pipeline\n\n).*?(?=\n##+ |\Z)", lambda m: m[1] + body, text, flags=re.S
            )
        else:
            text = text.rstrip() + "\n\n## Pipeline\n\n" + body
        doc.write_text(text.rstrip() + "\n")


if __name__ == "__main__":
    main()
