"""A limiter for a metered API: calls in flight, and requests and tokens in any sliding minute."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from supervisors.clock import Clock, SystemClock

__all__ = ["Permit", "RateLimiter"]

WINDOW_SECONDS = 60.0


class Permit:
    """One granted call; ``settle`` replaces the estimated tokens with what the call used."""

    __slots__ = ("at", "tokens")

    def __init__(self, at: float, tokens: int) -> None:
        self.at = at
        self.tokens = tokens

    def settle(self, tokens: int) -> None:
        self.tokens = max(0, tokens)


class RateLimiter:
    """Bounds the calls in flight, and the requests and tokens granted in any 60 s window.

    Grants are logged with their time; a call waits until it fits under both budgets in the
    window that ends now (a sliding log, so a burst can never take twice the budget across a
    window boundary, as a token bucket allows). Waiters are served first come, first served,
    so a large call is not starved by small ones. Time comes from the injected clock.

    Invariant: for every t, the grants in [t, t + 60) number at most ``requests_per_minute``
    and their tokens (as settled) add up to at most ``tokens_per_minute``, except a single call
    estimated above the whole token budget, which is granted alone in an otherwise empty window.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        requests_per_minute: int,
        tokens_per_minute: int,
        clock: Clock | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock if clock is not None else SystemClock()
        self._in_flight = 0
        self._slot_waiters: deque[anyio.Event] = deque()
        self._grants: deque[Permit] = deque()
        self._budget_lock = anyio.Lock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @asynccontextmanager
    async def acquire(self, tokens: int) -> AsyncIterator[Permit]:
        """Wait for a slot and for room for one request of ``tokens`` in the window."""
        await self._take_slot()
        try:
            async with self._budget_lock:  # FIFO among waiters for the budget
                permit = await self._take_budget(tokens)
            yield permit
        finally:
            self._give_slot()

    async def _take_budget(self, tokens: int) -> Permit:
        while True:
            now = self._clock.monotonic()
            while self._grants and self._grants[0].at <= now - WINDOW_SECONDS:
                self._grants.popleft()
            used = sum(p.tokens for p in self._grants)
            fits_requests = len(self._grants) < self.requests_per_minute
            fits_tokens = used + tokens <= self.tokens_per_minute or not self._grants
            if fits_requests and fits_tokens:
                permit = Permit(now, tokens)
                self._grants.append(permit)
                return permit
            # Wait until enough grants leave the window: the oldest first, then re-check.
            if not fits_requests:
                wake = self._grants[len(self._grants) - self.requests_per_minute].at
            else:
                wake = self._grants[0].at
                freed = 0
                for p in self._grants:
                    freed += p.tokens
                    wake = p.at
                    if used - freed + tokens <= self.tokens_per_minute:
                        break
            await self._clock.sleep(max(0.0, wake + WINDOW_SECONDS - now))

    async def _take_slot(self) -> None:
        if self._in_flight < self.concurrency and not self._slot_waiters:
            self._in_flight += 1
            return
        event = anyio.Event()
        self._slot_waiters.append(event)
        try:
            await event.wait()  # the releaser counted the slot as ours before setting this
        except BaseException:
            if event.is_set():
                self._give_slot()  # handed over just as we were cancelled: pass it on
            else:
                self._slot_waiters.remove(event)
            raise

    def _give_slot(self) -> None:
        if self._slot_waiters:
            self._slot_waiters.popleft().set()  # the slot moves to the waiter: count unchanged
        else:
            self._in_flight -= 1
