"""Benchmark of the supervision runtime, each figure beside a bare anyio memory stream (the floor).

Run: .venv/bin/python bench/bench_supervisors.py [--messages N] [--backend asyncio|trio|both]

Prints a Markdown table per backend: tell throughput through a chain of actors and through
one actor, ask round trips, the cost of starting a child and of a restart.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import anyio
import structlog

from supervisors import Actor, ActorRef, ChildSpec, Context, DynamicSupervisor, Supervisor

CHAIN = 4  # actors in the chain
INBOX = 64  # every inbox, bare or actor: the same explicit size


class Forward(Actor[Any]):
    """Tells each message to the next actor of the chain."""

    def __init__(self, ctx: Context, next_id: str) -> None:
        self.next = ctx.sibling(next_id)

    async def handle(self, message: Any) -> None:
        await self.next.tell(message)


class Sink(Actor[Any]):
    """Counts messages and sets an event when it has seen the expected number."""

    def __init__(self, expected: int, done: anyio.Event) -> None:
        self.expected = expected
        self.done = done
        self.seen = 0

    async def handle(self, message: Any) -> None:
        self.seen += 1
        if self.seen == self.expected:
            self.done.set()


class Echo(Actor[Any]):
    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash on purpose (benchmarking restarts)")
        return message


async def bare_chain(length: int, messages: int) -> float:
    """Messages/s through ``length`` tasks joined by bare memory streams."""
    streams = [anyio.create_memory_object_stream[int](INBOX) for _ in range(length)]
    done = anyio.Event()

    async def forward(i: int) -> None:
        receive = streams[i][1]
        if i + 1 < length:
            send = streams[i + 1][0]
            async for item in receive:
                await send.send(item)
        else:
            seen = 0
            async for _ in receive:
                seen += 1
                if seen == messages:
                    done.set()
                    return

    async with anyio.create_task_group() as tg:
        for i in range(length):
            tg.start_soon(forward, i)
        start = time.perf_counter()
        head = streams[0][0]
        for n in range(messages):
            await head.send(n)
        await done.wait()
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return messages / elapsed


async def actor_chain(length: int, messages: int) -> float:
    """Messages/s through ``length`` actors, each telling the next."""
    done = anyio.Event()
    ids = [f"a{i}" for i in range(length)]

    def forward_to(next_id: str) -> Callable[[Context], Forward]:
        return lambda ctx: Forward(ctx, next_id)

    specs = [ChildSpec(ids[i], forward_to(ids[i + 1]), inbox_size=INBOX) for i in range(length - 1)]
    specs.append(ChildSpec(ids[-1], lambda ctx: Sink(messages, done), inbox_size=INBOX))
    async with Supervisor(specs) as sup:
        head = sup.ref(ids[0])
        start = time.perf_counter()
        for n in range(messages):
            await head.tell(n)
        await done.wait()
        return messages / (time.perf_counter() - start)


async def bare_request_reply(rounds: int) -> float:
    """Round trips/s: a request on a bare stream, the reply through an Event (the floor of ask).

    Like ``ask``, each round trip has a timeout (a cancel scope).
    """
    send, receive = anyio.create_memory_object_stream[tuple[int, list[Any], anyio.Event]](INBOX)

    async def server() -> None:
        async for value, box, event in receive:
            box.append(value)
            event.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        start = time.perf_counter()
        for n in range(rounds):
            box: list[Any] = []
            event = anyio.Event()
            await send.send((n, box, event))
            with anyio.fail_after(5):
                await event.wait()
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return rounds / elapsed


async def ask_round_trips(rounds: int) -> float:
    async with Supervisor([ChildSpec("echo", lambda ctx: Echo(), inbox_size=INBOX)]) as sup:
        ref: ActorRef[Any] = sup.ref("echo")
        start = time.perf_counter()
        for n in range(rounds):
            await ref.ask(n, timeout=5)
        return rounds / (time.perf_counter() - start)


async def child_start_cost(children: int) -> float:
    """Seconds per child: start_child on a DynamicSupervisor, waiting until each is ready."""
    async with DynamicSupervisor(max_children=children) as sup:
        start = time.perf_counter()
        for n in range(children):
            await sup.start_child(ChildSpec(f"c{n}", lambda ctx: Echo(), inbox_size=INBOX))
        return (time.perf_counter() - start) / children


async def restart_cost(restarts: int) -> float:
    """Seconds per crash -> restart -> first reply of the fresh instance."""
    sup = Supervisor(
        [ChildSpec("echo", lambda ctx: Echo(), inbox_size=INBOX)],
        max_restarts=restarts + 1,
        max_seconds=3600,
    )
    async with sup:
        ref: ActorRef[Any] = sup.ref("echo")
        start = time.perf_counter()
        for _ in range(restarts):
            with contextlib.suppress(RuntimeError):  # the handler's exception, re-raised here
                await ref.ask("crash", timeout=5)
            await ref.ask("ok", timeout=5)  # handled by the restarted instance
        return (time.perf_counter() - start) / restarts


async def best_of(
    repeats: int, measure: Callable[[], Awaitable[float]], *, lower: bool = False
) -> float:
    results = [await measure() for _ in range(repeats)]
    return min(results) if lower else max(results)


async def run_all(messages: int, repeats: int) -> list[tuple[str, str, str]]:
    rows = []
    bare_c = await best_of(repeats, lambda: bare_chain(CHAIN, messages))
    actor_c = await best_of(repeats, lambda: actor_chain(CHAIN, messages))
    rows.append(
        (
            f"tell through a chain of {CHAIN} (msg/s)",
            f"{actor_c:,.0f}",
            f"{bare_c:,.0f} ({bare_c / actor_c:.2f}x)",
        )
    )
    bare_1 = await best_of(repeats, lambda: bare_chain(1, messages))
    actor_1 = await best_of(repeats, lambda: actor_chain(1, messages))
    rows.append(
        (
            "tell into one actor (msg/s)",
            f"{actor_1:,.0f}",
            f"{bare_1:,.0f} ({bare_1 / actor_1:.2f}x)",
        )
    )
    bare_a = await best_of(repeats, lambda: bare_request_reply(messages // 4))
    ask = await best_of(repeats, lambda: ask_round_trips(messages // 4))
    rows.append(("ask round trips (/s)", f"{ask:,.0f}", f"{bare_a:,.0f} ({bare_a / ask:.2f}x)"))
    start = await best_of(repeats, lambda: child_start_cost(1000), lower=True)
    rows.append(("start a child (µs, dynamic, until ready)", f"{start * 1e6:,.1f}", "-"))
    restart = await best_of(repeats, lambda: restart_cost(500), lower=True)
    rows.append(("crash + restart + first reply (µs)", f"{restart * 1e6:,.1f}", "-"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per figure")
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both")
    args = parser.parse_args()
    # A benchmark is its own program: drop the lifecycle log lines (a restart logs a traceback).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("anyio", "trio"))
    print(
        f"Python {platform.python_version()}, {versions}, {args.messages:,} messages, "
        f"best of {args.repeats}\n"
    )
    for backend in backends:
        rows = anyio.run(run_all, args.messages, args.repeats, backend=backend)
        print(f"### {backend}\n")
        print("| measure | supervisors | bare anyio stream (ratio) |")
        print("|---|---:|---:|")
        for name, ours, bare in rows:
            print(f"| {name} | {ours} | {bare} |")
        print()


if __name__ == "__main__":
    main()
