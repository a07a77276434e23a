"""`Bridge.call` round trips under trio: a no-op coroutine on the helper thread's asyncio loop.

Usage: ``python bench/bench_bridge.py [--calls 20000]``; prints calls per second. Run it against
another tree with ``PYTHONPATH=/that/tree`` to compare (alternate the two: the machine's load
moves the figure more than small changes do).
"""

from __future__ import annotations

import argparse
import time

import anyio

from actors._bridge import Bridge


async def calls_per_second(calls: int) -> float:
    bridge = Bridge("bench-bridge")

    async def nothing() -> int:
        return 1

    await bridge.call(nothing())  # starts the helper loop
    started = time.perf_counter()
    for _ in range(calls):
        await bridge.call(nothing())
    elapsed = time.perf_counter() - started
    await bridge.aclose()
    return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    print(f"{anyio.run(calls_per_second, args.calls, backend='trio'):.0f} calls/s")


if __name__ == "__main__":
    main()
