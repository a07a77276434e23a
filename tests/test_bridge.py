"""The asyncio bridge: calls run on the driver loop, outlive a cancelled caller, end at close."""

from __future__ import annotations

import asyncio
import threading

import anyio
import pytest
import sniffio

from actors._bridge import Bridge

pytestmark = pytest.mark.anyio


async def test_a_call_runs_on_an_asyncio_loop_on_a_helper_thread_only_under_trio() -> None:
    bridge = Bridge("test-bridge")

    async def where() -> tuple[str, bool]:
        asyncio.get_running_loop()  # raises unless on an asyncio loop
        return (
            threading.current_thread().name,
            threading.current_thread() is threading.main_thread(),
        )

    try:
        with anyio.fail_after(10):
            name, on_main = await bridge.call(where())
    finally:
        await bridge.aclose()
    if sniffio.current_async_library() == "trio":
        assert (name, on_main) == ("test-bridge", False)
    else:
        assert on_main


async def test_a_cancelled_caller_stops_waiting_and_the_call_runs_to_its_end() -> None:
    bridge = Bridge("test-bridge")
    release = threading.Event()
    finished = threading.Event()
    results: list[int] = []

    async def work() -> int:
        while not release.is_set():
            await asyncio.sleep(0.01)
        finished.set()
        return 42

    try:
        with anyio.fail_after(10):
            with anyio.CancelScope() as scope:
                scope.cancel()
                await bridge.call(work(), on_done=results.append)
            assert scope.cancelled_caught
            assert not finished.is_set()  # still running, on the driver loop
            release.set()
            await bridge.drain()
            assert finished.is_set()
            await anyio.sleep(0.05)  # on_done is handed to the caller's loop
            assert results == [42]
    finally:
        await bridge.aclose()


async def test_errors_reach_the_caller_and_closing_cancels_what_still_runs() -> None:
    bridge = Bridge("test-bridge")
    cancelled = threading.Event()

    async def fail() -> None:
        raise ValueError("from the driver loop")

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with anyio.fail_after(10):
        with pytest.raises(ValueError, match="from the driver loop"):
            await bridge.call(fail())
        with anyio.move_on_after(0.05):
            await bridge.call(forever())
        await bridge.aclose()
    assert cancelled.is_set()


def test_on_the_driver_loop_sniffio_says_asyncio_under_a_trio_caller() -> None:
    # anyio.run (as the command line calls it) sets sniffio's context variable to "trio"; a
    # coroutine handed to the helper loop must not carry that over, or stamina and anyio would
    # use trio's functions on an asyncio loop.
    pytest.importorskip("trio")
    from actors._bridge import call_soon

    async def main() -> tuple[str, str]:
        bridge = Bridge("test-bridge")
        started: list[str] = []
        done = threading.Event()

        async def library() -> str:
            return sniffio.current_async_library()

        def start_a_task() -> None:  # as the PostgreSQL queue starts its listener
            async def task() -> None:
                started.append(sniffio.current_async_library())
                done.set()

            asyncio.get_running_loop().create_task(task())

        try:
            with anyio.fail_after(10):
                in_call = await bridge.call(library())
                call_soon(bridge.loop(), start_a_task)
                await anyio.to_thread.run_sync(done.wait)
        finally:
            await bridge.aclose()
        return in_call, started[0]

    assert anyio.run(main, backend="trio") == ("asyncio", "asyncio")
