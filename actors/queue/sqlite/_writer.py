"""The async bridge: one writer thread that group-commits requests, and a pool of readers.

SQLite allows one writer at a time, so one thread owns the write connection. Async callers
(on asyncio or trio) put a request on its queue and await a per-request completion. The thread
takes everything that has accumulated, runs it in one ``BEGIN IMMEDIATE`` transaction with each
request in its own SAVEPOINT (one failing request rolls back alone; a request alone needs none,
its failure rolls the transaction back), commits once, and then
completes every waiter with one thread-safe callback per event loop: group commit. Reads run on
worker threads with their own connections (WAL lets them read while the writer writes).

The fast path: a small request (the verb says so) from a caller alone in the writer (no other
request queued, running or awaited) runs on the caller's own thread, under the same lock, in the
same transaction shape, instead of two thread hand-offs; only with ``synchronous=NORMAL`` (no
fsync at commit, so the event loop is held for the statements alone), and only if the write lock
is free at once (``busy_timeout`` 0 for that ``BEGIN``; a busy file goes to the writer thread,
whose wait does not hold the loop). After every few such calls in a row the caller yields once,
so a caller in a loop lets the others run; a second caller arriving meanwhile finds the first
still inside and queues for the writer thread, which keeps group commit for concurrent callers.

Coalescing: requests that say they may be merged (a `Batch`: a key, their items, and the one
function of a list of items that both run) are merged within a group: requests of the same key
run as one call over all their items (enqueues, acks, single-job pulls: one statement each),
each caller getting its own items' results, in one SAVEPOINT; if the merged call raises, it
rolls back and each request runs alone, so a failing request still fails alone. Requests in
one group were all submitted before any of them completed, so any order among them is an
order they could have run in.

Cancellation: a request handed to the writer is always carried out, committed or rolled back
as a whole, whether or not its caller is still waiting; a caller cancelled while waiting just
does not learn the outcome (``on_commit`` hooks still run). Retrying is safe for the verbs that
matter: an enqueue with an idempotency key and an ack repeated under the same lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio.to_thread
import sniffio

from actors.errors import QueueClosed, QueueError
from actors.queue.sqlite.schema import sqlite_failure

if TYPE_CHECKING:
    import trio

__all__ = ["Batch", "Checkpointer", "GroupCommitWriter", "ReaderPool"]

T = TypeVar("T")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
Work = Callable[[sqlite3.Connection], T]

# Bounds one transaction: enough to amortise the commit, small enough to keep latency flat.
MAX_GROUP = 512
# Fast-path calls in a row before the caller yields to the event loop once (a yield is a turn of
# the loop, a poll of its selector: as much as the rest of a call): other tasks wait at most
# this many small commits, and a caller arriving meanwhile goes to the writer thread.
INLINE_STREAK = 8


class Batch(Generic[ItemT, ResultT]):
    """A request's work as items and a function of any list of them, one result per item:
    requests with equal ``key`` (and the same ``work``) may be run as one call (see the
    module's docstring)."""

    __slots__ = ("items", "key", "work")

    def __init__(
        self,
        key: Hashable,
        items: Sequence[ItemT],
        work: Callable[[sqlite3.Connection, Sequence[ItemT]], list[ResultT]],
    ) -> None:
        self.key = key
        self.items = items
        self.work = work


class _Request(Generic[T]):
    """One unit of work for the writer thread and the means to wake its caller."""

    __slots__ = ("batch", "error", "event", "future", "loop", "on_commit", "result", "work")

    def __init__(
        self,
        work: Work[T],
        on_commit: Callable[[T], None] | None,
        batch: Batch[Any, Any] | None = None,
    ) -> None:
        self.work = work
        self.on_commit = on_commit
        self.batch = batch
        # A 1-tuple once the work returned (its value may be None); an error wins over it.
        self.result: tuple[T] | None = None
        self.error: BaseException | None = None
        # Exactly one of (loop, future) or event is set, by the backend the caller runs on.
        self.loop: asyncio.AbstractEventLoop | trio.lowlevel.TrioToken | None = None
        self.future: asyncio.Future[None] | None = None
        self.event: trio.Event | None = None

    def complete(self) -> None:
        """Wake the caller; runs in the caller's event-loop thread."""
        try:
            if self.on_commit is not None and self.error is None and self.result is not None:
                self.on_commit(self.result[0])
        finally:
            if self.future is not None:
                if not self.future.done():  # done: the caller was cancelled
                    self.future.set_result(None)
            elif self.event is not None:
                self.event.set()


def _complete_all(requests: list[_Request[Any]]) -> None:
    for request in requests:
        request.complete()


_STOP: Any = object()


class GroupCommitWriter:
    """Owns the write connection on one thread; ``await run(work)`` commits ``work(conn)``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        after_commit: Callable[[], None] | None = None,
        name: str = "queue-writer",
        inline: bool = False,
    ) -> None:
        self._conn = conn
        self._path = _file_of(conn)  # named in error messages
        self._after_commit = after_commit
        self._requests: queue.SimpleQueue[_Request[Any]] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # orders put() against close(): nothing after _STOP
        # Held while a transaction runs on the connection, by the writer thread or a fast path.
        self._conn_lock = threading.Lock()
        # The fast path needs WAL (a commit that takes no further lock) and waits for no lock:
        # the connection's busy timeout is 0 but around the writer thread's second `BEGIN`.
        self._inline = inline and conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        self._busy_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
        if self._inline:
            conn.execute("PRAGMA busy_timeout = 0")
        self._callers = 0  # callers inside `run` (any thread); a hint for the fast path
        self._streak = 0  # fast-path calls since the last yield
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    async def run(
        self,
        work: Work[T],
        *,
        on_commit: Callable[[T], None] | None = None,
        small: bool = False,
        batch: Batch[Any, Any] | None = None,
    ) -> T:
        """Run ``work(conn)`` in the next group transaction and return its result once committed.

        ``on_commit(result)`` runs in this event loop's thread after the commit, even if the
        caller was cancelled meanwhile. ``small``: the work is a statement or two over one row,
        which the fast path may run on this thread (see the module's docstring). ``batch``:
        ``work`` is ``batch.work(conn, batch.items)``, which the writer may merge with other
        requests' of the same key (``T`` is then the list of their results).
        """
        request: _Request[T] = _Request(work, on_commit, batch)
        with self._lock:
            self._callers += 1
            alone = self._callers == 1
        try:
            trio_token = sniffio.current_async_library() == "trio"
            if small and alone and self._inline and self._run_inline(request):
                self._streak += 1
                if self._streak >= INLINE_STREAK:
                    self._streak = 0
                    if trio_token:
                        import trio

                        await trio.lowlevel.checkpoint()
                    else:
                        await asyncio.sleep(0)
            elif trio_token:
                import trio  # only imported when running on trio

                request.loop = trio.lowlevel.current_trio_token()
                request.event = event = trio.Event()
                self._put(request)
                await event.wait()
            else:
                loop = asyncio.get_running_loop()
                request.loop = loop
                request.future = loop.create_future()
                self._put(request)
                await request.future
        finally:
            with self._lock:
                self._callers -= 1
        if request.error is not None:
            raise request.error
        if request.result is None:  # the writer sets one of the two before it wakes a caller
            raise QueueError("the queue's writer woke a caller without a result or an error")
        return request.result[0]

    def _run_inline(self, request: _Request[Any]) -> bool:
        """Commit ``request`` on this thread if the writer is idle and the file's write lock
        free at once; False (nothing done) to hand it to the writer thread instead."""
        if not self._requests.empty() or not self._conn_lock.acquire(blocking=False):
            return False
        try:
            if self._closed:
                raise QueueClosed(
                    "the queue is closed; use it inside `async with SQLiteQueue.open(...)`"
                )
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # another process writes: wait on the writer thread
                return False
            self._in_transaction([request])
        finally:
            self._conn_lock.release()
        if self._after_commit is not None:
            self._after_commit()
        request.complete()
        return True

    def _put(self, request: _Request[Any]) -> None:
        with self._lock:
            if self._closed:
                raise QueueClosed(
                    "the queue is closed; use it inside `async with SQLiteQueue.open(...)`"
                )
            self._requests.put(request)

    async def aclose(self) -> None:
        """Finish every request already submitted, then stop the thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._requests.put(_STOP)
        await anyio.to_thread.run_sync(self._thread.join)

    def _main(self) -> None:
        stopping = False
        try:
            while not stopping:
                group = [self._requests.get()]
                if group[0] is _STOP:
                    break
                while len(group) < MAX_GROUP:
                    try:
                        request = self._requests.get_nowait()
                    except queue.Empty:
                        break
                    if request is _STOP:
                        stopping = True
                        break
                    group.append(request)
                with self._conn_lock:
                    self._commit(group)
                self._wake(group)
                if self._after_commit is not None:
                    self._after_commit()
        finally:
            # Normally empty; after an unexpected death, callers must not wait forever.
            with self._lock:
                self._closed = True
            left: list[_Request[Any]] = []
            while not self._requests.empty():
                request = self._requests.get_nowait()
                if request is not _STOP:
                    request.error = QueueClosed("the queue's writer thread stopped")
                    left.append(request)
            self._wake(left)
            with self._conn_lock:
                self._conn.close()

    def _commit(self, group: list[_Request[Any]]) -> None:
        conn = self._conn
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                if not self._inline:
                    raise
                # Busy without waiting (see __init__): now wait, as long as the timeout says.
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                finally:
                    conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            for request in group:
                request.error = _storage_error(exc, self._path)
            return
        self._in_transaction(group)

    def _in_transaction(self, group: list[_Request[Any]]) -> None:
        """Run ``group`` in the transaction just begun, each request in its SAVEPOINT; commit.

        A request alone needs no SAVEPOINT: if it fails, the whole transaction rolls back.
        """
        conn = self._conn
        if len(group) == 1:
            request = group[0]
            try:
                try:
                    request.result = (request.work(conn),)
                except Exception as exc:  # reported to its caller; nothing of it committed
                    request.error = (
                        _storage_error(exc, self._path) if isinstance(exc, sqlite3.Error) else exc
                    )
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    return
                conn.execute("COMMIT")
            except sqlite3.Error as exc:  # the transaction itself failed: nothing committed
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                request.result = None
                request.error = request.error or _storage_error(exc, self._path)
            return
        try:
            for part in _merged(group):
                if len(part) > 1 and self._run_merged(part):
                    continue
                for request in part:
                    conn.execute("SAVEPOINT request")
                    try:
                        request.result = (request.work(conn),)
                    except Exception as exc:  # reported to its caller; the group goes on
                        conn.execute("ROLLBACK TO request")
                        if isinstance(exc, sqlite3.Error):
                            request.error = _storage_error(exc, self._path)
                        else:
                            request.error = exc
                    conn.execute("RELEASE request")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # the transaction itself failed: nothing of it committed
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for request in group:
                request.error = request.error or _storage_error(exc, self._path)

    def _run_merged(self, part: list[_Request[Any]]) -> bool:
        """Run ``part`` (requests of one batch key) as one call in a SAVEPOINT and give each
        its items' results; False (nothing of it kept) if the call raised."""
        conn = self._conn
        batches = [request.batch for request in part if request.batch is not None]
        conn.execute("SAVEPOINT merged")
        try:
            results = batches[0].work(conn, [item for b in batches for item in b.items])
        except Exception:  # one of them fails: each runs alone, so it fails alone
            conn.execute("ROLLBACK TO merged")
            conn.execute("RELEASE merged")
            return False
        conn.execute("RELEASE merged")
        start = 0
        for request, batch in zip(part, batches, strict=True):
            end = start + len(batch.items)
            request.result = (results[start:end],)
            start = end
        return True

    @staticmethod
    def _wake(group: list[_Request[Any]]) -> None:
        # One thread-safe callback per event loop, not one per request.
        by_loop: dict[int, list[_Request[Any]]] = {}
        for request in group:
            by_loop.setdefault(id(request.loop), []).append(request)
        for requests in by_loop.values():
            loop = requests[0].loop
            try:
                if isinstance(loop, asyncio.AbstractEventLoop):
                    loop.call_soon_threadsafe(_complete_all, requests)
                elif loop is not None:  # always set by `run` before the request is queued
                    loop.run_sync_soon(_complete_all, requests)
            except RuntimeError:  # the loop has finished (trio's RunFinishedError is one)
                pass


def _merged(group: list[_Request[Any]]) -> list[list[_Request[Any]]]:
    """The group in parts, in the order of each part's first request: every request with a
    batch key together with the others of its key, every other request alone."""
    parts: list[list[_Request[Any]]] = []
    by_key: dict[Hashable, list[_Request[Any]]] = {}
    for request in group:
        if request.batch is None:
            parts.append([request])
        elif (part := by_key.get(request.batch.key)) is not None:
            part.append(request)
        else:
            by_key[request.batch.key] = part = [request]
            parts.append(part)
    return parts


class Checkpointer:
    """Copies the WAL back into the database file on a thread of its own.

    The writer's connection has auto-checkpointing off, so no commit waits for a checkpoint
    (and its fsyncs); after a commit the writer calls ``poke()`` and this thread runs a PASSIVE
    checkpoint, which never blocks writers or readers, at most once per ``interval`` seconds.
    """

    def __init__(self, conn: sqlite3.Connection, *, interval: float = 0.1) -> None:
        self._conn = conn
        self._interval = interval
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="queue-checkpointer", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Say that a commit happened (cheap; called after each commit)."""
        if not self._dirty.is_set():  # set() takes the event's lock even when already set
            self._dirty.set()

    async def aclose(self) -> None:
        """Run a last checkpoint and stop the thread."""
        self._stopping.set()
        self._dirty.set()
        await anyio.to_thread.run_sync(self._thread.join)

    def _main(self) -> None:
        try:
            while not self._stopping.is_set():
                self._dirty.wait()
                self._dirty.clear()
                self._checkpoint()
                self._stopping.wait(self._interval)  # batches the commits of one interval
            self._checkpoint()
        finally:
            self._conn.close()

    def _checkpoint(self) -> None:
        # A busy or failed checkpoint is harmless: the WAL keeps every commit; the next one retries.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _storage_error(exc: sqlite3.Error, path: str | None) -> QueueError:
    return sqlite_failure(exc, path)


def _file_of(conn: sqlite3.Connection) -> str | None:
    """The file ``conn`` has open as its main database (None for one in memory)."""
    try:
        row = conn.execute("PRAGMA database_list").fetchone()
    except sqlite3.Error:
        return None
    return str(row[2]) if row and row[2] else None


class ReaderPool:
    """Read-only work on worker threads, each call with a pooled connection of its own."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, work: Work[T]) -> T:
        """Run ``work(conn)`` in one read transaction (a consistent snapshot) on a worker thread."""
        if self._closed:
            raise QueueClosed(
                "the queue is closed; use it inside `async with SQLiteQueue.open(...)`"
            )
        return await anyio.to_thread.run_sync(self._read, work)

    def _read(self, work: Work[T]) -> T:
        with self._lock:
            conn = self._idle.pop() if self._idle else self._connect()
        try:
            try:
                conn.execute("BEGIN")
                try:
                    return work(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:  # in the work or in ending its read (a damaged file)
                raise _storage_error(exc, _file_of(conn)) from exc
        finally:
            with self._lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)

    def close(self) -> None:
        """Close the idle connections; busy ones close when their call returns."""
        with self._lock:
            self._closed = True
            for conn in self._idle:
                conn.close()
            self._idle.clear()
