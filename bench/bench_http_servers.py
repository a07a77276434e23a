"""ASGI servers side by side: hypercorn, uvicorn (httptools and h11) and granian serving the
same app (`bench/http_servers_app.py`: the API over an `ActorSystem`, SQLite, queue_only), on
asyncio, one process each.

Usage::

    apt-get install wrk
    pip install --target /tmp/peers httptools granian   # a throwaway directory, not the project
    PYTHONPATH=/tmp/peers python bench/bench_http_servers.py [--rounds 3] [--seconds 5]

Phases, as in bench_http.py (its wrk scripts): ``POST /jobs/enqueue`` one job per request with
32 connections (throughput), and ``POST /jobs/pull`` max=1 with 4 connections from a seeded
queue (latency at that load). Each phase runs on a fresh server process and queue; servers are
interleaved within each round, and each figure is the median over the rounds. The in-process
figure is `SQLiteQueue.enqueue` with 32 tasks in this process (bench_http.py's), for the ratio
the issue asks about.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
from bench_http import ENQUEUE_LUA, PULL_LUA, TOKEN, in_process, seed, wrk

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SERVERS: dict[str, list[str]] = {
    "hypercorn (h11)": [
        "-m", "hypercorn", "--bind", "127.0.0.1:{port}", "--keep-alive", "30",
        "--graceful-timeout", "2", "http_servers_app:app",
    ],
    "uvicorn + httptools": [
        "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--http", "httptools",
        "--loop", "asyncio", "--ws", "wsproto", "--no-access-log", "--log-level", "warning",
        "--lifespan", "on", "http_servers_app:app",
    ],
    "uvicorn (h11)": [
        "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--http", "h11",
        "--loop", "asyncio", "--ws", "wsproto", "--no-access-log", "--log-level", "warning",
        "--lifespan", "on", "http_servers_app:app",
    ],
    "granian": [
        "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}",
        "--workers", "1", "--loop", "asyncio", "--no-access-log", "--log-level", "warning",
        "http_servers_app:app",
    ],
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str, where: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [arg.format(port=port) for arg in SERVERS[name]]
    path = [str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        "BENCH_DIR": str(where),
        "BENCH_TOKEN": TOKEN,
    }
    log = open(where / "server.log", "wb")  # noqa: SIM115 (the process writes it)
    process = subprocess.Popen([sys.executable, *args], stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{name} exited: {(where / 'server.log').read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    sys.exit(f"{name} never answered")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def phase(name: str, kind: str, tmp: Path, seconds: int) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(dir=tmp))
    process, url = start(name, where)
    try:
        if kind == "enqueue":
            return wrk(url, "/jobs/enqueue", ENQUEUE_LUA % {"token": TOKEN}, seconds, 32, where)
        seed(url, 60_000)
        return wrk(url, "/jobs/pull", PULL_LUA % {"token": TOKEN}, seconds, 4, where)
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--servers", nargs="*", default=list(SERVERS))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for round_ in range(args.rounds):
            for server in args.servers:
                for kind in ("enqueue", "pull"):
                    result = phase(server, kind, tmp, args.seconds)
                    results.setdefault((server, kind), []).append(result)
                    print(
                        f"round {round_ + 1} {server} {kind}: {result['rps']:,.0f} req/s, "
                        f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                        f"non-2xx {result['non2xx']}",
                        file=sys.stderr,
                        flush=True,
                    )
        local = anyio.run(in_process, tmp, args.seconds, 32, 2, 32)["enqueue"]

    def median(server: str, kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(server, kind)])

    base = args.servers[0]
    print(
        f"Measured by `PYTHONPATH=/tmp/peers python bench/bench_http_servers.py --rounds "
        f"{args.rounds} --seconds {args.seconds}` on {platform.machine()} ({os.cpu_count()} "
        f"cores, load average {load:.1f} at the start), Python {platform.python_version()}, "
        "wrk 4.1 (one thread) on loopback; medians of the rounds, servers interleaved. "
        f"In-process enqueue (32 tasks on `SQLiteQueue`): {local:,.0f} jobs/s.\n"
    )
    print(
        "| server (asyncio) | enqueue req/s | enqueue p99 | pull req/s | pull p50 | pull p99 "
        f"| enqueue / {base} | pull / {base} | enqueue / in-process |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for server in args.servers:
        enq, pull = median(server, "enqueue", "rps"), median(server, "pull", "rps")
        print(
            f"| {server} | {enq:,.0f} | {median(server, 'enqueue', 'p99_ms'):.2f} ms "
            f"| {pull:,.0f} | {median(server, 'pull', 'p50_ms'):.2f} ms "
            f"| {median(server, 'pull', 'p99_ms'):.2f} ms "
            f"| {enq / median(base, 'enqueue', 'rps'):.2f}x "
            f"| {pull / median(base, 'pull', 'rps'):.2f}x | {enq / local:.2f}x |"
        )
    errors = sum(r["non2xx"] for rs in results.values() for r in rs)
    print(f"\nNon-2xx answers over every phase: {errors}.")


if __name__ == "__main__":
    main()
