"""The only reader of time: a real clock for production and a fake one that tests move."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import anyio

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """What the runtime and the queue need to know about time.

    ``monotonic()`` measures intervals (restart windows, backoff, idle timeouts);
    ``time()`` is wall-clock seconds since the epoch (timestamps stored in the queue);
    ``move_on_after()`` is a cancel scope whose deadline is read on this clock (ask
    timeouts, shutdown timeouts, idle timeouts).
    """

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def move_on_after(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and anyio's sleep and timeouts."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def move_on_after(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
        return anyio.move_on_after(seconds)


class FakeClock:
    """A clock that only moves when a test calls :meth:`advance`.

    Sleepers wake, and ``move_on_after`` scopes are cancelled, when the clock passes their
    deadline. ``wall_offset`` is added to the monotonic reading to produce ``time()``, so
    both readings move together.
    """

    def __init__(self, start: float = 0.0, *, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset
        # (deadline, event or scope); an unsorted list is fine: tests have few timers.
        self._timers: list[tuple[float, anyio.Event | anyio.CancelScope]] = []
        # Created lazily: anyio.Event needs a running event loop, the clock may not.
        self._timers_changed: anyio.Event | None = None

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    @property
    def sleepers(self) -> int:
        """How many tasks wait on this clock right now (in ``sleep`` or ``move_on_after``)."""
        return len(self._timers)

    @property
    def next_deadline(self) -> float:
        """The earliest deadline of a sleeper (``inf`` when nobody sleeps)."""
        return min((d for d, _ in self._timers), default=math.inf)

    @property
    def deadlines(self) -> list[float]:
        """The deadlines of the tasks that wait on this clock now, earliest first."""
        return sorted(d for d, _ in self._timers)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        entry: tuple[float, anyio.Event | anyio.CancelScope] = (self._now + seconds, anyio.Event())
        self._add(entry)
        try:
            await entry[1].wait()  # type: ignore[union-attr]
        finally:
            self._remove(entry)

    @contextmanager
    def move_on_after(self, seconds: float) -> Iterator[anyio.CancelScope]:
        with anyio.CancelScope() as scope:
            if seconds <= 0:
                scope.cancel()
                yield scope
                return
            if math.isinf(seconds):
                yield scope
                return
            entry: tuple[float, anyio.Event | anyio.CancelScope] = (self._now + seconds, scope)
            self._add(entry)
            try:
                yield scope
            finally:
                self._remove(entry)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError(f"a clock never goes backwards; got advance({seconds!r})")
        self._now += seconds
        due = [entry for entry in self._timers if entry[0] <= self._now]
        for entry in due:
            self._timers.remove(entry)
            if isinstance(entry[1], anyio.Event):
                entry[1].set()
            else:
                entry[1].cancel()
        if due:
            self._notify()

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Wait until at least ``count`` tasks wait on this clock (wrap in ``fail_after``)."""
        while len(self._timers) < count:
            if self._timers_changed is None:
                self._timers_changed = anyio.Event()
            await self._timers_changed.wait()

    def _add(self, entry: tuple[float, anyio.Event | anyio.CancelScope]) -> None:
        self._timers.append(entry)
        self._notify()

    def _remove(self, entry: tuple[float, anyio.Event | anyio.CancelScope]) -> None:
        if entry in self._timers:
            self._timers.remove(entry)
            self._notify()

    def _notify(self) -> None:
        if self._timers_changed is not None:
            self._timers_changed.set()
            self._timers_changed = None
