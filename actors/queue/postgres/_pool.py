"""The PostgreSQL connection pool, on the driver's loop, and the driver's connection as typed."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

__all__ = ["Connection", "Pool", "Row"]

# A result row: the columns in the statement's order (asyncpg's Record).
Row = Sequence[Any]


class Connection(Protocol):
    """What the queue uses of an asyncpg connection (asyncpg ships no type hints)."""

    async def execute(self, query: str, *args: object) -> str: ...
    async def fetch(self, query: str, *args: object) -> list[Row]: ...
    async def fetchrow(self, query: str, *args: object) -> Row | None: ...
    async def fetchval(self, query: str, *args: object) -> Any: ...  # one column, any type
    def transaction(self) -> AbstractAsyncContextManager[object]: ...
    def is_in_transaction(self) -> bool: ...
    def is_closed(self) -> bool: ...
    def terminate(self) -> None: ...
    async def close(self) -> None: ...
    async def add_listener(
        self, channel: str, callback: Callable[[Connection, int, str, str], object]
    ) -> None: ...
    def add_termination_listener(self, callback: Callable[[Connection], object]) -> None: ...


class Pool:
    """Up to ``size`` connections on the driver's loop, opened when first needed.

    Leaner than asyncpg's pool, whose release runs in a task of its own behind
    ``asyncio.shield`` (two event-loop turns per call; docs/benchmarks.md has its cost), for
    queue calls of one or two statements each. The queue leaves no session state on a
    connection (no LISTEN, SET, advisory lock, cursor or open transaction), so a released
    connection needs no reset; a broken one is terminated and its slot handed to the next
    waiter, which opens a fresh connection.
    """

    def __init__(self, connect: Callable[[], Awaitable[Connection]], size: int) -> None:
        self._connect = connect
        self._size = size
        self._opened = 0  # idle + in use + being opened
        self._idle: list[Connection] = []
        # Each waiter is handed a connection, or None: a free slot to open one in.
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False

    async def acquire(self) -> Connection:
        """Return an idle connection, a new one while under ``size``, or wait for one."""
        if self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            # It died while idle (a server restart, a killed backend): open one in its place,
            # rather than spend the caller's retries on connections known to be dead.
            conn.terminate()
            return await self._open()
        if self._opened < self._size:
            self._opened += 1
            return await self._open()
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give(waiter.result())  # handed to us as we were cancelled: pass it on
            raise
        return handed if handed is not None else await self._open()

    async def _open(self) -> Connection:
        try:
            return await self._connect()
        except BaseException:
            self._give(None)
            raise

    def release(self, conn: Connection, *, broken: bool = False) -> None:
        """Give ``conn`` back; a ``broken`` one (or any, once closed) is terminated."""
        if broken or self._closed or conn.is_closed():
            conn.terminate()
            self._give(None)
        else:
            self._give(conn)

    def _give(self, conn: Connection | None) -> None:
        """Hand an idle connection (or, as None, a free slot) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._opened -= 1
        else:
            self._idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections; those in use are terminated when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._opened -= 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 10)
