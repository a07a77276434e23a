"""HTTP API benchmark: wrk on loopback against `python -m actors run`, beside the in-process queue.

Usage: ``python bench/bench_http.py [--seconds 8] [--write]``. Needs ``wrk``
(Debian's package: ``apt-get install wrk``). ``--write`` replaces the "## HTTP API" section of
docs/benchmarks.md with this run's figures.

Phases, each against one fresh server process ([http] enabled, queue_only, durability normal):

- enqueue: ``POST /jobs/enqueue``, one job per request;
- pull: ``POST /jobs/pull`` with max=1 from a queue seeded with enough jobs, no acks;
- pull+ack: each connection pulls ``--batch`` jobs, acks them (lease-aware form), repeats.

wrk runs one thread (the machine has 2 cores: one for wrk, one for the server). Connections
per phase: enough to saturate the server for enqueue (throughput), few for pull and pull+ack
(latency at a given rate: more connections only queue behind one event loop, and Little's law
turns that into latency). The in-process figures run the same verbs on ``SQLiteQueue`` with as
many tasks as wrk has connections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from actors.queue import Ack, NewJob, SQLiteQueue

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-admin-token-0123456789"

ENQUEUE_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.body = '{"runId": "bench", "tenantId": "t", "r2Key": "t/bench/doc.txt"}'
"""

PULL_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.body = '{"max": 1, "visibilitySeconds": 600}'
"""

# Responses arrive in any order across connections: a pull's answer queues an ack body, and
# the next request of any connection sends a queued ack before pulling again.
CYCLE_LUA = """
local pending = {}
acked = 0  -- global: done() reads it from each thread with thread:get
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
local pull_body = '{"max": %(batch)d, "visibilitySeconds": 600}'
request = function()
  local body = table.remove(pending)
  if body then
    return wrk.format("POST", "/jobs/ack", {["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer %(token)s"}, body)
  end
  return wrk.format("POST", "/jobs/pull", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer %(token)s"}, pull_body)
end
response = function(status, headers, body)
  if body:sub(1, 7) == '{"jobs"' then
    local items = {}
    for id, token in body:gmatch('"id":(%%d+),.-"leaseToken":"(%%w+)"') do
      items[#items + 1] = '{"id":' .. id .. ',"leaseToken":"' .. token .. '"}'
    end
    if #items > 0 then
      pending[#pending + 1] = '{"acks":[' .. table.concat(items, ",") .. ']}'
    end
  elseif body:sub(1, 15) == '{"success":true' then
    local _, n = body:gsub('"ok":true', "")
    acked = acked + n
  end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("acked")
  end
  io.write(string.format("ACKED %%d\\n", total))
end
"""


def start_server(tmp: Path, backend: str = "asyncio") -> tuple[subprocess.Popen[bytes], str]:
    config = tmp / "server.toml"
    config.write_text(f"""
[runtime]
backend = "{backend}"
[queue]
path = "{tmp / "q.db"}"
[storage]
root = "{tmp / "objects"}"
[http]
enabled = true
port = 0
queue_only = true
[log]
level = "info"
format = "json"
""")
    log = tmp / "server.log"
    env = {**os.environ, "ACTORS_TOKENS": f"{TOKEN}:admin"}
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "actors", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if '"http.listening"' in line:
                return process, f"http://127.0.0.1:{json.loads(line)['port']}"
        if process.poll() is not None:
            sys.exit(f"server exited: {log.read_text()}")
        time.sleep(0.05)
    process.kill()
    sys.exit("server never listened")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def seed(url: str, count: int) -> None:
    with httpx.Client(
        base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as client:
        for start in range(0, count, 1000):
            jobs = [
                {"runId": "bench", "tenantId": "t", "r2Key": f"t/bench/{i}"}
                for i in range(start, min(count, start + 1000))
            ]
            client.post("/jobs/enqueue-many", json={"jobs": jobs}).raise_for_status()


def wrk(
    url: str, path: str, script: str, seconds: int, connections: int, tmp: Path
) -> dict[str, Any]:
    lua = tmp / "script.lua"
    lua.write_text(script)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(lua),
            url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    result: dict[str, Any] = {"raw": out}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{pct}_ms"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(errors[1]) if errors else 0
    acked = re.search(r"ACKED (\d+)", out)
    result["acked"] = int(acked[1]) if acked else None
    return result


def server_pull_p99(url: str) -> str:
    """The server's own p99 for the pull route, from its histogram's buckets (an upper bound)."""
    text = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    buckets = [
        (m[1], int(float(m[2])))
        for m in re.finditer(
            r'actors_http_request_seconds_bucket\{le="([^"]+)",route="pull"\} ([0-9.]+)', text
        )
    ]
    if not buckets:
        return "n/a"
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= 0.99 * total:
            return f"<= {float(bound) * 1000:g} ms" if bound != "+Inf" else "> 2.5 s"
    return "n/a"


async def in_process(
    tmp: Path, seconds: float, enqueue_tasks: int, cycle_tasks: int, batch: int
) -> dict[str, float]:
    """The same verbs on SQLiteQueue in this process: enqueue/s and pull+ack jobs/s."""
    rates: dict[str, float] = {}
    async with SQLiteQueue.open(tmp / "inproc.db") as queue:
        count = 0

        async def enqueuer() -> None:
            nonlocal count
            while anyio.current_time() < stop:
                await queue.enqueue("bench", "t", "t/bench/doc.txt")
                count += 1

        stop = anyio.current_time() + seconds
        async with anyio.create_task_group() as tg:
            for _ in range(enqueue_tasks):
                tg.start_soon(enqueuer)
        rates["enqueue"] = count / seconds
        for _ in range(30):  # 300,000 jobs: more than the cycle can drain in the run
            await queue.enqueue_many([NewJob(run_id="b", tenant_id="t", r2_key="k")] * 10_000)
        acked = 0

        async def cycler() -> None:
            nonlocal acked
            while anyio.current_time() < stop:
                jobs = await queue.pull(max=batch, visibility_seconds=600)
                results = await queue.ack_many(
                    [Ack(job_id=j.id, lease_token=j.lease_token or "") for j in jobs]
                )
                acked += sum(1 for r in results if r.ok)

        stop = anyio.current_time() + seconds
        async with anyio.create_task_group() as tg:
            for _ in range(cycle_tasks):
                tg.start_soon(cycler)
        rates["cycle"] = acked / seconds
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--enqueue-connections", type=int, default=32)
    parser.add_argument("--pull-connections", type=int, default=4)
    parser.add_argument("--cycle-connections", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="jobs per pull in pull+ack")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    s = args.seconds
    load = os.getloadavg()[0]  # other work on the machine moves every figure; say how much
    ce, cp, cc = args.enqueue_connections, args.pull_connections, args.cycle_connections
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for phase in ("enqueue", "pull", "cycle", "pull-trio", "cycle-trio"):
            phase_dir = tmp / phase
            phase_dir.mkdir()
            process, url = start_server(phase_dir, "trio" if "trio" in phase else "asyncio")
            try:
                if phase == "enqueue":
                    results[phase] = wrk(
                        url, "/jobs/enqueue", ENQUEUE_LUA % {"token": TOKEN}, s, ce, phase_dir
                    )
                elif phase.startswith("pull"):
                    seed(url, 120_000)
                    results[phase] = wrk(
                        url, "/jobs/pull", PULL_LUA % {"token": TOKEN}, s, cp, phase_dir
                    )
                    results[phase]["server_p99"] = server_pull_p99(url)
                else:
                    seed(url, 250_000)
                    script = CYCLE_LUA % {"token": TOKEN, "batch": args.batch}
                    results[phase] = wrk(url, "/jobs/pull", script, s, cc, phase_dir)
                    results[phase]["server_p99"] = server_pull_p99(url)
            finally:
                stop_server(process)
            print(f"{phase}: {results[phase]['raw']}", file=sys.stderr)
        local = anyio.run(in_process, tmp, s, ce, cc, args.batch)
    enq = results["enqueue"]
    local_rate = {"cycle": local["cycle"], "cycle-trio": local["cycle"]}
    lines = [
        f"Measured by `python bench/bench_http.py --seconds {s}` (wrk connections: enqueue "
        f"{ce}, pull {cp}, pull+ack {cc}; {args.batch} jobs per pull+ack) on "
        f"{platform.machine()} ({os.cpu_count()} cores, load average {load:.1f} at the "
        f"start), Python {platform.python_version()}, "
        "wrk 4.1 (Debian) on loopback with one thread, against one `python -m actors run` "
        "process ([http] enabled, queue_only, SQLite durability normal; uvicorn with httptools "
        "on asyncio, hypercorn on trio, the rows that say so). "
        "In-process: the same verbs on `SQLiteQueue` with as many tasks as connections, in "
        "the same run. Latencies are wrk's, per request, client-side; the server-side pull p99 "
        "is the bucket of the server's own histogram (`/metrics`) that holds it.",
        "",
        "| phase | connections | HTTP requests/s | HTTP jobs/s | p50 | p99 | "
        "server-side pull p99 | in-process jobs/s | HTTP / in-process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| enqueue (one job per request) | {ce} | {enq['rps']:,.0f} | {enq['rps']:,.0f} | "
        f"{enq['p50_ms']:.2f} ms | {enq['p99_ms']:.2f} ms | | {local['enqueue']:,.0f} | "
        f"{enq['rps'] / local['enqueue']:.2f}x |",
        *(
            row(name, results[name], args.batch, s, cp, cc, local_rate.get(name))
            for name in ("pull", "cycle", "pull-trio", "cycle-trio")
        ),
        "",
        "Errors (non-2xx answers): "
        + ", ".join(f"{name} {r['non2xx']}" for name, r in results.items())
        + ". The seed's worker promised 10-50 ms pull latency and "
        "100+ jobs/s; the target here is 20x that (2,000 jobs/s) at a pull p99 under 10 ms: "
        + "; ".join(f"{name}: {verdict(results[name], s)}" for name in ("cycle", "cycle-trio"))
        + ".",
        "",
        "How to read it: the server is one Python process with one event loop, so more "
        "connections than it serves at once only wait in line (Little's law turns them into "
        "latency); the latency rows use few connections, the enqueue row many. Each request "
        "costs the server its parsing (httptools' on asyncio, h11's under hypercorn on trio), "
        "its JSON and a hand-off to the queue's writer thread (fixed-path routes skip "
        'Starlette\'s layers: docs/decisions.md, "The HTTP hot path"), which is why one job '
        "per request reaches a fraction of the "
        "in-process rate, where 32 tasks share group commits; `/jobs/enqueue-many` and pulls "
        "of many jobs spread that cost. The client-side "
        "p99 of pull+ack mixes pulls and acks; the server-side column is the pull route alone.",
    ]
    print("\n".join(lines))
    if args.write:
        write_section(lines)


def row(
    name: str, r: dict[str, Any], batch: int, seconds: int, cp: int, cc: int, local: float | None
) -> str:
    """One table row of a pull or pull+ack phase."""
    backend = " on trio" if name.endswith("trio") else ""
    if name.startswith("pull"):
        return (
            f"| pull (max=1, no ack){backend} | {cp} | {r['rps']:,.0f} | {r['rps']:,.0f} | "
            f"{r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['server_p99']} | | |"
        )
    jobs = (r["acked"] or 0) / seconds
    ratio = f"{jobs / local:.2f}x" if local else ""
    return (
        f"| pull (max={batch}) + ack{backend} | {cc} | {r['rps']:,.0f} | {jobs:,.0f} | "
        f"{r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['server_p99']} | "
        f"{local or 0:,.0f} | {ratio} |"
    )


def verdict(r: dict[str, Any], seconds: int) -> str:
    jobs = (r["acked"] or 0) / seconds
    bound = re.search(r"<= ([\d.]+) ms", r["server_p99"])
    met = jobs >= 2000 and bound is not None and float(bound[1]) <= 10
    return f"{'met' if met else 'NOT met'} ({jobs:,.0f} jobs/s, server pull p99 {r['server_p99']})"


def write_section(lines: list[str]) -> None:
    """Replace (or add) the "## HTTP API" section of docs/benchmarks.md."""
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    wrapped = [line if line.startswith("|") else textwrap.fill(line, 100) for line in lines]
    body = "## HTTP API\n\n" + "\n".join(wrapped) + "\n"
    match = re.search(r"^## HTTP API\n.*?(?=^## |\Z)", text, flags=re.M | re.S)
    if match:
        text = (
            text[: match.start()]
            + body
            + ("\n" if match.end() < len(text) else "")
            + text[match.end() :]
        )
    else:
        text = text.rstrip("\n") + "\n\n" + body
    doc.write_text(text)


if __name__ == "__main__":
    main()
