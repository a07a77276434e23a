"""Run an asyncio-only library (asyncpg, aioboto3) from asyncio or trio: one bridge for both.

A `Bridge` runs coroutines on the *driver loop*: on asyncio that is the caller's own loop (each
call a task of its own); on trio, where those libraries cannot run, it is an asyncio loop on a
helper thread that the bridge starts on first use and stops in `aclose`. A trio caller waits
without holding a thread: the helper loop wakes it through the trio token.

Cancellation: a call belongs to the bridge, not to its caller. A caller cancelled while it
waits stops waiting at once; the coroutine runs on to its end on the driver loop (a transaction
commits or rolls back as a whole, an upload completes or fails), its result is dropped and its
exception retrieved (never logged as "never retrieved"), and its ``on_done`` callback still
runs. This is the same on both backends. `drain` waits until every call has finished;
`aclose` cancels the calls still running, waits for them to unwind, and stops the helper loop.
An owner that must finish what it accepted (the PostgreSQL queue) drains before closing; one
whose calls are only reads and idempotent writes (the S3 store) closes at once.

On the helper loop, sniffio (and so anyio and stamina) says "asyncio": a coroutine handed over
from trio would otherwise carry the trio caller's context, where ``anyio.run`` set sniffio's
context variable to "trio", and sleep with trio's functions on an asyncio loop. `call` and
`call_soon` run what they hand over in a context that says asyncio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import sniffio

if TYPE_CHECKING:
    import trio  # a test dependency and the [trio] extra; imported at run time only under trio

__all__ = ["Bridge", "call_soon"]

T = TypeVar("T")

# A call in flight: a task on the caller's asyncio loop, or a future of the helper loop's.
_Call = asyncio.Future[Any] | concurrent.futures.Future[Any]
# Runs a function on the caller's event loop, from the driver loop.
_Wake = Callable[[Callable[[], object]], None]


class Bridge:
    """The driver loop for coroutines of an asyncio-only library; see the module docstring."""

    def __init__(self, name: str) -> None:
        self._name = name  # the helper thread's name, for an operator reading a thread dump
        self._helper: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()  # two trio callers starting the helper at once
        self._wake_trio: _TrioWake | None = None  # the latest trio caller's waker
        self._running: set[_Call] = set()

    def loop(self) -> asyncio.AbstractEventLoop:
        """Return the driver loop for the calling task (starting the helper loop on trio)."""
        return self._bind()[0]

    def _bind(self) -> tuple[asyncio.AbstractEventLoop, _Wake]:
        """The driver loop for the calling task, and how to run a function on its loop."""
        wake = self._waker()
        if isinstance(wake, _TrioWake):
            helper, latest = self._helper, self._wake_trio
            if helper is not None and latest is not None and latest.token is wake.token:
                return helper, latest  # the usual case: started, and for this trio run
            with self._guard:
                if self._helper is None:
                    helper = asyncio.new_event_loop()
                    thread = threading.Thread(
                        target=helper.run_forever, name=self._name, daemon=True
                    )
                    thread.start()
                    self._helper, self._thread = helper, thread
                self._wake_trio = wake
                return self._helper, wake
        return asyncio.get_running_loop(), wake

    def _waker(self) -> _Wake:
        """How to run a function on the calling task's loop from the driver loop."""
        if sniffio.current_async_library() == "asyncio":
            # Done callbacks of a task on the caller's loop already run on that loop.
            return _call_now
        import trio  # only under trio

        token = trio.lowlevel.current_trio_token()
        latest = self._wake_trio
        if latest is not None and latest.token is token:
            return latest  # the usual case: the same trio run as the last call
        return _TrioWake(token, trio.RunFinishedError)

    def to_caller(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the caller's event loop; call it from the driver loop."""
        if threading.current_thread() is not self._thread:
            fn()  # the driver loop is the caller's (asyncio)
        elif self._wake_trio is not None:
            self._wake_trio(fn)

    async def call(
        self, coro: Coroutine[Any, Any, T], on_done: Callable[[T], object] | None = None
    ) -> T:
        """Run ``coro`` on the driver loop and return its outcome; ``on_done(result)`` runs on
        the caller's loop after it succeeds, even when the caller was cancelled meanwhile."""
        loop, wake = self._bind()
        future: asyncio.Future[T] | concurrent.futures.Future[T]
        if isinstance(wake, _TrioWake):  # the helper loop, on its thread
            future = asyncio.run_coroutine_threadsafe(_on_asyncio(coro), loop)
        else:
            future = loop.create_task(coro)
        self._running.add(future)
        future.add_done_callback(self._forget)
        done = anyio.Event()

        def finished() -> None:
            done.set()
            if on_done is not None and not future.cancelled() and future.exception() is None:
                on_done(future.result())

        future.add_done_callback(_calling(wake, finished))
        await done.wait()
        return future.result()

    def _forget(self, future: _Call) -> None:
        self._running.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved: a cancelled caller's error is not "never retrieved"

    async def drain(self) -> None:
        """Wait until every call has finished."""
        wake = self._waker()
        while self._running:
            done = anyio.Event()
            for future in list(self._running):
                future.add_done_callback(_calling(wake, done.set))
            await done.wait()

    async def aclose(self) -> None:
        """Cancel the calls still running, wait for them to unwind, stop the helper loop.

        The bridge can be used again afterwards (it starts a new helper loop when needed).
        """
        with anyio.CancelScope(shield=True):
            with self._guard:
                helper, thread = self._helper, self._thread
                self._helper = self._thread = self._wake_trio = None
            if helper is not None and thread is not None:
                cancelling = asyncio.run_coroutine_threadsafe(_cancel_the_others(), helper)
                await anyio.to_thread.run_sync(cancelling.result)
                helper.call_soon_threadsafe(helper.stop)
                await anyio.to_thread.run_sync(thread.join)
                helper.close()
            for future in list(self._running):
                future.cancel()  # a task on the caller's loop: done once it has unwound
            await self.drain()


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """Run ``fn`` on the driver ``loop`` soon, from any thread, in a context of its own in which
    sniffio says asyncio (a task it starts inherits that context)."""
    context = contextvars.Context()
    context.run(sniffio.current_async_library_cvar.set, "asyncio")
    loop.call_soon_threadsafe(fn, context=context)


async def _on_asyncio(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the helper loop, telling sniffio that this task runs on asyncio."""
    # The task's context is a copy of the trio caller's: setting the variable changes only it.
    sniffio.current_async_library_cvar.set("asyncio")
    return await coro


def _call_now(fn: Callable[[], object]) -> None:
    fn()


class _TrioWake:
    """Runs a function on one trio run's loop, from any thread."""

    def __init__(self, token: trio.lowlevel.TrioToken, finished: type[Exception]) -> None:
        self.token = token
        self._finished = finished  # trio.RunFinishedError

    def __call__(self, fn: Callable[[], object]) -> None:
        with contextlib.suppress(self._finished):  # the run is over: nobody waits any more
            self.token.run_sync_soon(fn)


def _calling(wake: _Wake, fn: Callable[[], object]) -> Callable[[object], None]:
    """A done callback that runs ``fn`` on the caller's loop."""
    return lambda _: wake(fn)


async def _cancel_the_others() -> None:
    """Cancel every other task of the running loop and wait until they have unwound."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
