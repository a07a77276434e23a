"""Benchmark of a library log call: the cost of a filtered-out debug line, and of an emitted one.

Run: .venv/bin/python bench/bench_logging.py [--calls N] [--structlog-proxy]

Prints ns per call, min of 5 repeats. ``--structlog-proxy`` measures a module-level
``structlog.get_logger(...)`` instead of ``actors.log.get_logger(...)`` (run it on a tree before
the proxy to get the figure it replaced).
"""

from __future__ import annotations

import argparse
import io
import timeit
from collections.abc import Callable
from typing import Any

import structlog

from actors.log import configure_logging


def per_call(call: Callable[[], Any], calls: int) -> float:
    return min(timeit.repeat(call, number=calls, repeat=5)) / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--structlog-proxy", action="store_true")
    args = parser.parse_args()
    make: Callable[[str], Any] = structlog.get_logger
    if not args.structlog_proxy:
        # Imported here: a tree from before actors.log.get_logger runs the other mode.
        from actors.log import get_logger

        make = get_logger
        # structlog imported, not configured: the proxy hands the call to stdlib logging.
        log = make("actors.bench")
        cost = per_call(lambda: log.debug("job.leased", job_id=1), args.calls)
        print(f"unconfigured, debug filtered out: {cost:,.0f} ns")
    configure_logging("info", "json", stream=io.StringIO())
    log = make("actors.bench")
    cost = per_call(lambda: log.debug("job.leased", job_id=1), args.calls)
    print(f"configured at info, debug filtered out: {cost:,.0f} ns")
    bound = log.bind(job_id=1)
    cost = per_call(lambda: bound.debug("job.leased", attempt=1), args.calls)
    print(f"configured at info, bound logger, debug filtered out: {cost:,.0f} ns")
    cost = per_call(lambda: log.info("job.done", job_id=1, run_id="r"), args.calls // 10)
    print(f"configured at info, info emitted as JSON: {cost:,.0f} ns")


if __name__ == "__main__":
    main()
