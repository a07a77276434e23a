"""The shared limiter holds its budgets: calls in flight, requests and tokens per sliding minute."""

from __future__ import annotations

import anyio
import pytest

from actors.processors._rate_limit import RateLimiter
from supervisors.clock import FakeClock

# Budgets on a fake clock, the same on both runtimes: asyncio only (see tests/conftest.py); a
# cancelled waiter keeps its trio leg.
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


async def run_calls(
    limiter: RateLimiter, clock: FakeClock, tokens: list[int], settle: int | None = None
) -> list[float]:
    """Start one call per entry at t=0 and drive the fake clock until all are granted."""
    granted: list[float] = []

    async def call(n: int) -> None:
        async with limiter.acquire(n) as permit:
            granted.append(clock.monotonic())
            if settle is not None:
                permit.settle(settle)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in tokens:  # one by one: the order of arrival is the test's
                tg.start_soon(call, n)
                await anyio.wait_all_tasks_blocked()
            while len(granted) < len(tokens):
                await anyio.wait_all_tasks_blocked()
                if len(granted) < len(tokens):
                    clock.advance(clock.next_deadline - clock.monotonic())
    return granted


def assert_window_holds(times: list[float], budget: int) -> None:
    for t in times:
        assert sum(1 for u in times if t <= u < t + 60) <= budget


async def test_requests_per_minute_hold_in_every_sliding_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        concurrency=100, requests_per_minute=3, tokens_per_minute=10**9, clock=clock
    )
    granted = await run_calls(limiter, clock, [1] * 8)
    assert granted == [0, 0, 0, 60, 60, 60, 120, 120]
    assert_window_holds(granted, 3)


async def test_tokens_per_minute_hold_and_settled_usage_frees_the_budget() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        concurrency=100, requests_per_minute=1000, tokens_per_minute=100, clock=clock
    )
    assert await run_calls(limiter, clock, [40] * 5) == [0, 0, 60, 60, 120]

    clock = FakeClock()
    limiter = RateLimiter(
        concurrency=100, requests_per_minute=1000, tokens_per_minute=100, clock=clock
    )
    # Each call estimated 40 tokens but used 10: five fit at once after settling.
    assert await run_calls(limiter, clock, [40] * 5, settle=10) == [0] * 5


async def test_a_call_larger_than_the_whole_token_budget_runs_alone() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        concurrency=100, requests_per_minute=1000, tokens_per_minute=100, clock=clock
    )
    assert await run_calls(limiter, clock, [10, 500, 10]) == [0, 60, 120]


@pytest.mark.runtimes("asyncio", "trio")
async def test_concurrency_bounds_the_calls_in_flight() -> None:
    limiter = RateLimiter(
        concurrency=2, requests_per_minute=1000, tokens_per_minute=10**9, clock=FakeClock()
    )
    order: list[str] = []
    peak = 0
    release = anyio.Event()

    async def call(name: str) -> None:
        nonlocal peak
        async with limiter.acquire(1):
            order.append(name)
            peak = max(peak, limiter.in_flight)
            await release.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for name in "abcde":
                tg.start_soon(call, name)
                await anyio.wait_all_tasks_blocked()
            assert order == ["a", "b"]
            release.set()
    # Slots are handed over first come, first served, but trio wakes the woken in any order.
    assert sorted(order) == list("abcde")
    assert peak == 2
    assert limiter.in_flight == 0


@pytest.mark.runtimes("asyncio", "trio")
async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    limiter = RateLimiter(
        concurrency=1, requests_per_minute=1000, tokens_per_minute=10**9, clock=FakeClock()
    )
    with anyio.fail_after(10):
        async with limiter.acquire(1):
            with anyio.move_on_after(0.01):
                async with limiter.acquire(1):
                    pytest.fail("granted while the only slot was taken")
        async with limiter.acquire(1):
            assert limiter.in_flight == 1
    assert limiter.in_flight == 0
