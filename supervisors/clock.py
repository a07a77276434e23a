"""The only reader of time: a real clock for production and a fake one that tests move."""

from __future__ import annotations

import math
import time
from typing import Protocol

import anyio

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """What the runtime and the queue need to know about time.

    ``monotonic()`` measures intervals (restart windows, backoff, idle timeouts);
    ``time()`` is wall-clock seconds since the epoch (timestamps stored in the queue).
    """

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``anyio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when a test calls :meth:`advance`.

    Sleepers wake when the clock passes their deadline. ``wall_offset`` is added to the
    monotonic reading to produce ``time()``, so both readings move together.
    """

    def __init__(self, start: float = 0.0, *, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset
        # (deadline, event); an unsorted list is fine: tests have few sleepers.
        self._sleepers: list[tuple[float, anyio.Event]] = []
        # Created lazily: anyio.Event needs a running event loop, the clock may not.
        self._sleepers_changed: anyio.Event | None = None

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock right now."""
        return len(self._sleepers)

    @property
    def next_deadline(self) -> float:
        """The earliest deadline of a sleeper (``inf`` when nobody sleeps)."""
        return min((d for d, _ in self._sleepers), default=math.inf)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        entry = (self._now + seconds, anyio.Event())
        self._sleepers.append(entry)
        self._notify()
        try:
            await entry[1].wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)
                self._notify()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError("a clock never goes backwards; got advance(%r)" % seconds)
        self._now += seconds
        due = [entry for entry in self._sleepers if entry[0] <= self._now]
        for entry in due:
            self._sleepers.remove(entry)
            entry[1].set()
        if due:
            self._notify()

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Wait until at least ``count`` tasks sleep on this clock (wrap in ``fail_after``)."""
        while len(self._sleepers) < count:
            if self._sleepers_changed is None:
                self._sleepers_changed = anyio.Event()
            await self._sleepers_changed.wait()

    def _notify(self) -> None:
        if self._sleepers_changed is not None:
            self._sleepers_changed.set()
            self._sleepers_changed = None
