"""Real actors that fail on purpose, and ways to wait for what a supervisor does."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from supervisors import Actor, ChildSpec, Context, LifecycleEvent, Restart


class Boom(Exception):
    """The exception our test actors raise on purpose."""


class Probe:
    """What the test actors write down: starts per id, stops in order, messages handled."""

    def __init__(self) -> None:
        self.starts: Counter[str] = Counter()
        self.stops: list[str] = []
        self.handled: list[tuple[str, Any]] = []


class Worker(Actor[Any]):
    """Does what its messages say: "crash" raises Boom, "exit" stops normally,
    ("block", event) waits for the event; anything else is recorded and echoed."""

    def __init__(self, ctx: Context, probe: Probe) -> None:
        self.ctx = ctx
        self.probe = probe
        self.count = 0  # per incarnation: a restart starts from zero

    async def on_start(self) -> None:
        self.probe.starts[self.ctx.id] += 1

    async def on_stop(self) -> None:
        self.probe.stops.append(self.ctx.id)

    async def handle(self, message: Any) -> Any:
        match message:
            case "crash":
                raise Boom(f"{self.ctx.id} crashed on purpose")
            case "exit":
                self.ctx.stop()
                return "bye"
            case ("block", anyio.Event() as event):
                await event.wait()
                return "unblocked"
            case _:
                self.count += 1
                self.probe.handled.append((self.ctx.id, message))
                return (self.ctx.id, message, self.count)


def worker(
    probe: Probe,
    child_id: str,
    *,
    restart: Restart = "permanent",
    shutdown: float | None = None,
    inbox_size: int = 8,
) -> ChildSpec:
    return ChildSpec(
        child_id,
        lambda ctx: Worker(ctx, probe),
        restart=restart,
        shutdown=shutdown,
        inbox_size=inbox_size,
    )


async def next_event(
    events: MemoryObjectReceiveStream[LifecycleEvent], kind: str, child: str | None = None
) -> LifecycleEvent:
    """The next event of ``kind`` (for ``child``), skipping others; wrap in fail_after."""
    async for event in events:
        if event.kind == kind and (child is None or event.child == child):
            return event
    raise AssertionError("event stream closed")
