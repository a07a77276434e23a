"""Long-poll latency: from an enqueue to the answer of a pull that was waiting for it.

Usage: ``python bench/bench_long_poll.py [--rounds 50] [--pg-dsn DSN]``. Starts
``python -m actors run`` (``[http]`` enabled, queue_only) on SQLite, then on PostgreSQL (a fresh
schema, dropped after; skipped when the server cannot be reached), and prints Markdown rows for
docs/benchmarks.md.

Each round: a worker's ``POST /jobs/pull`` with ``waitSeconds = 20`` waits on an empty queue (the
server's ``actors_http_pulls_waiting`` gauge says so); then this process, another process than
the server, enqueues one job, through the server (``POST /jobs/enqueue``: the server's own
``on_enqueue`` wakes the pull) or, on PostgreSQL, straight into the database (its NOTIFY reaches
the server's LISTEN). The latency is from the start of the enqueue call to the pull's answer, so
it includes the enqueue's own commit. The "poll every 1 s" row is the same measure for a worker
that pulls without waiting and sleeps ``poll_interval_seconds`` (1 s) when it finds nothing, as
remote workers did before.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import asyncpg
import httpx

TOKEN = "bench-admin-token-0123456789"
HEADERS = {"authorization": f"Bearer {TOKEN}"}
JOB = {"runId": "bench", "tenantId": "t", "r2Key": "t/bench/doc.txt"}


def start_server(tmp: Path, queue: str) -> tuple[subprocess.Popen[bytes], str]:
    config = tmp / "server.toml"
    config.write_text(
        f"""
[queue]
{queue}
visibility_seconds = 600
[storage]
root = "{tmp / "objects"}"
[http]
enabled = true
port = 0
queue_only = true
[log]
level = "info"
format = "json"
"""
    )
    log = tmp / "server.log"
    with open(log, "ab") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "actors", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "ACTORS_TOKENS": f"{TOKEN}:admin"},
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()}")
        for line in log.read_text(errors="replace").splitlines():
            if '"http.listening"' in line:
                return process, f"http://127.0.0.1:{json.loads(line)['port']}"
        time.sleep(0.05)
    raise SystemExit(f"the server never listened: {log.read_text()}")


async def waiting(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics", headers=HEADERS)).text
    match = re.search(r"^actors_http_pulls_waiting (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


async def long_poll_round(
    client: httpx.AsyncClient, enqueue: Callable[[], Awaitable[object]]
) -> tuple[float, float]:
    answered = 0.0
    jobs: list[object] = []
    async with anyio.create_task_group() as tg:

        async def pull() -> None:
            nonlocal answered
            response = await client.post(
                "/jobs/pull", json={"max": 1, "waitSeconds": 20}, headers=HEADERS, timeout=60
            )
            answered = time.monotonic()
            jobs.extend(response.json()["jobs"])

        tg.start_soon(pull)
        while await waiting(client) < 1:  # noqa: ASYNC110 (another process's state)
            await anyio.sleep(0.002)
        await anyio.sleep(0.02)  # past the pull's first claim
        began = time.monotonic()
        await enqueue()
        enqueued = time.monotonic()
    assert len(jobs) == 1, jobs
    return answered - began, enqueued - began


async def poll_round(
    client: httpx.AsyncClient, enqueue: Callable[[], Awaitable[object]]
) -> tuple[float, float]:
    answered = 0.0
    async with anyio.create_task_group() as tg:

        async def poll() -> None:
            nonlocal answered
            while True:
                response = await client.post("/jobs/pull", json={"max": 1}, headers=HEADERS)
                if response.json()["jobs"]:
                    answered = time.monotonic()
                    return
                await anyio.sleep(1.0)

        tg.start_soon(poll)
        # Enqueue at a random moment of the poller's sleep, as jobs arrive.
        await anyio.sleep(0.1 + 0.9 * (uuid.uuid4().int % 1000) / 1000)
        began = time.monotonic()
        await enqueue()
        enqueued = time.monotonic()
    return answered - began, enqueued - began


def row(name: str, rounds: list[tuple[float, float]]) -> str:
    ms = sorted(answered * 1000 for answered, _ in rounds)
    enqueue = statistics.median(enqueued * 1000 for _, enqueued in rounds)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {p90:.1f} | {max(ms):.1f} "
        f"| {enqueue:.1f} |"
    )


async def measure(url: str, rounds: int, pg: tuple[str, str] | None) -> list[str]:
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def via_http() -> None:
            (await client.post("/jobs/enqueue", json=JOB, headers=HEADERS)).raise_for_status()

        await via_http()  # warm up: connections, first claim
        await client.post("/jobs/pull", json={"max": 10}, headers=HEADERS)
        kind = "PostgreSQL" if pg else "SQLite"
        found = [await long_poll_round(client, via_http) for _ in range(rounds)]
        rows.append(row(f"{kind}, enqueued through the server, long poll", found))
        if pg is not None:
            from actors.queue.postgres import PostgresQueue

            dsn, schema = pg
            async with PostgresQueue.open(dsn, schema=schema) as queue:

                async def direct() -> None:
                    await queue.enqueue(JOB["runId"], JOB["tenantId"], JOB["r2Key"])

                found = [await long_poll_round(client, direct) for _ in range(rounds)]
            rows.append(row(f"{kind}, enqueued by another process (NOTIFY), long poll", found))
        else:
            polled = [await poll_round(client, via_http) for _ in range(min(rounds, 20))]
            rows.append(row(f"{kind}, enqueued through the server, poll every 1 s", polled))
    return rows


def pg_admin(dsn: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    anyio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("ACTORS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    print("| Enqueue to pulled | rounds | median ms | p90 ms | max ms | enqueue call, median ms |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server(Path(tmp), f'path = "{Path(tmp) / "q.db"}"')
        try:
            for line in anyio.run(measure, url, args.rounds, None):
                print(line, flush=True)
        finally:
            process.terminate()
            process.wait(30)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        pg_admin(args.pg_dsn, f"CREATE SCHEMA {schema}")
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"(PostgreSQL skipped: {exc})")
        return
    try:
        with tempfile.TemporaryDirectory() as tmp:
            queue = f'backend = "postgres"\ndsn = "{args.pg_dsn}?search_path={schema}"'
            process, url = start_server(Path(tmp), queue)
            try:
                for line in anyio.run(measure, url, args.rounds, (args.pg_dsn, schema)):
                    print(line, flush=True)
            finally:
                process.terminate()
                process.wait(30)
    finally:
        pg_admin(args.pg_dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
