"""The HTTP server of this tree against another checkout's, alternately: rates, latency
percentiles, server CPU per request, and each tree's in-process enqueue rate in the same round.

Usage::

    git archive main | tar -x -C /tmp/base        # the other tree
    python bench/bench_http_against.py --against /tmp/base [--rounds 3] [--seconds 5]

Each round runs, per tree (old first, then new; the order of the trees alternates by round),
``python -m actors run`` of that tree ([http] enabled, queue_only, asyncio, SQLite durability
normal) with bench_http.py's wrk scripts: ``POST /jobs/enqueue`` one job per request on 32
connections, then ``POST /jobs/pull`` max=1 on 4 connections from a seeded queue (a fresh server
and queue per phase). wrk reports p50/p95/p99 (its own histogram, client-side, per request); the
server's CPU is its utime+stime from /proc over the wrk run, divided by the requests. The
in-process rate is ``SQLiteQueue.enqueue`` with 32 tasks in a process of that tree (bench_http's
``in_process``), so "HTTP / in-process" compares like with like. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_http import ENQUEUE_LUA, PULL_LUA, TOKEN

ROOT = Path(__file__).resolve().parent.parent

# wrk's --latency prints 50/75/90/99; the percentiles asked for come from its histogram here.
PERCENTILES = """
done = function(summary, latency, requests)
  for _, p in ipairs({50, 95, 99}) do
    io.write(string.format("P%d %d\\n", p, latency:percentile(p)))
  end
end
"""

# One phase in a process of the tree under test (its bench_http's server and seed).
_PHASE = """
import json, os, re, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, "bench")
import bench_http as b
kind, seconds, lua = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick
with tempfile.TemporaryDirectory() as tmp:
    process, url = b.start_server(Path(tmp))
    try:
        if kind == "pull":
            b.seed(url, 60_000)
        script = Path(tmp) / "phase.lua"
        script.write_text(lua)
        c0 = cpu(process.pid)
        out = subprocess.run(
            ["wrk", "-t1", "-c" + ("32" if kind == "enqueue" else "4"), f"-d{seconds}s",
             "-s", str(script), url + "/jobs/" + kind],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout
        used = cpu(process.pid) - c0
    finally:
        b.stop_server(process)
requests = int(re.search(r"(\\d+) requests in", out)[1])
errors = re.search(r"Non-2xx or 3xx responses: (\\d+)", out)
result = {
    "rps": float(re.search(r"Requests/sec:\\s+([\\d.]+)", out)[1]),
    "cpu_us": used / requests * 1e6,
    "non2xx": int(errors[1]) if errors else 0,
}
for p in ("50", "95", "99"):
    result["p" + p] = int(re.search(rf"P{p} (\\d+)", out)[1]) / 1000
print(json.dumps(result))
"""

_IN_PROCESS = """
import json, sys, tempfile, anyio
from pathlib import Path
sys.path.insert(0, "bench")
import bench_http as b
with tempfile.TemporaryDirectory() as tmp:
    print(json.dumps(anyio.run(b.in_process, Path(tmp), int(sys.argv[1]), 32, 2, 32)))
"""


def run(tree: Path, *args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-c", *args],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def one_round(tree: Path, seconds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, lua in (("enqueue", ENQUEUE_LUA), ("pull", PULL_LUA)):
        out[kind] = run(tree, _PHASE, kind, str(seconds), lua % {"token": TOKEN} + PERCENTILES)
    out["in_process"] = run(tree, _IN_PROCESS, str(seconds))["enqueue"]
    out["ratio"] = out["enqueue"]["rps"] / out["in_process"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    trees = {"old": args.against.resolve(), "new": ROOT}
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    loads = [os.getloadavg()[0]]
    for i in range(args.rounds):
        for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
            runs[name].append(one_round(trees[name], args.seconds))
            r = runs[name][-1]
            print(
                f"round {i + 1} {name}: enqueue {r['enqueue']['rps']:,.0f}/s "
                f"{r['enqueue']['cpu_us']:.0f} us/req, in-process {r['in_process']:,.0f}/s "
                f"(ratio {r['ratio']:.2f}x); pull {r['pull']['rps']:,.0f}/s "
                f"{r['pull']['cpu_us']:.0f} us/req p50 {r['pull']['p50']:.2f} "
                f"p95 {r['pull']['p95']:.2f} p99 {r['pull']['p99']:.2f} ms; "
                f"load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
                flush=True,
            )
        loads.append(os.getloadavg()[0])

    def med(name: str, *keys: str) -> float:
        values = []
        for r in runs[name]:
            value: Any = r
            for key in keys:
                value = value[key]
            values.append(value)
        return float(statistics.median(values))

    print(
        f"{args.rounds} rounds of {args.seconds} s per phase; load average "
        f"{min(loads):.1f}-{max(loads):.1f}; medians.\n"
    )
    print("| figure | old | new | new / old |")
    print("|---|---:|---:|---:|")
    rows = [
        ("enqueue, 32 connections, requests/s", ("enqueue", "rps"), "{:,.0f}"),
        ("enqueue, server CPU µs/request", ("enqueue", "cpu_us"), "{:.0f}"),
        ("enqueue p50 ms", ("enqueue", "p50"), "{:.2f}"),
        ("enqueue p99 ms", ("enqueue", "p99"), "{:.2f}"),
        ("in-process enqueue, 32 tasks, jobs/s", ("in_process",), "{:,.0f}"),
        ("HTTP enqueue / in-process", ("ratio",), "{:.2f}x"),
        ("pull max=1, 4 connections, requests/s", ("pull", "rps"), "{:,.0f}"),
        ("pull, server CPU µs/request", ("pull", "cpu_us"), "{:.0f}"),
        ("pull p50 ms", ("pull", "p50"), "{:.2f}"),
        ("pull p95 ms", ("pull", "p95"), "{:.2f}"),
        ("pull p99 ms", ("pull", "p99"), "{:.2f}"),
    ]
    for label, keys, form in rows:
        old, new = med("old", *keys), med("new", *keys)
        print(f"| {label} | {form.format(old)} | {form.format(new)} | {new / old:.2f} |")
    errors = sum(r[k]["non2xx"] for rs in runs.values() for r in rs for k in ("enqueue", "pull"))
    print(f"\nNon-2xx answers: {errors}.")
    each = {
        name: {
            "enqueue": [round(r["enqueue"]["rps"]) for r in rs],
            "ratio": [round(r["ratio"], 2) for r in rs],
            "pull p99": [r["pull"]["p99"] for r in rs],
        }
        for name, rs in runs.items()
    }
    print(f"Per round: {json.dumps(each)}")


if __name__ == "__main__":
    main()
