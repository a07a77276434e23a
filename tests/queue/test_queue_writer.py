"""The async bridge: group commit, per-request isolation, cancellation, callbacks, closing."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from actors.errors import InvalidArgument, QueueClosed, StorageError
from actors.queue import NewJob, SQLiteQueue
from actors.queue.postgres._queue import PostgresQueue
from actors.queue.sqlite._writer import GroupCommitWriter

pytestmark = pytest.mark.anyio


async def test_many_concurrent_enqueues_all_commit(queue: SQLiteQueue) -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(queue.enqueue, "r", "t", str(i))
    assert (await queue.stats()).pending == 100


async def test_a_failing_request_does_not_fail_the_others_in_its_group(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    writer = GroupCommitWriter(conn)
    results: dict[int, object] = {}

    async def insert(x: int) -> None:
        def work(c: sqlite3.Connection) -> int:
            c.execute("INSERT INTO t VALUES (?)", (x,))
            if x == 3:
                raise InvalidArgument("three is refused")
            return x

        try:
            results[x] = await writer.run(work)
        except InvalidArgument as exc:
            results[x] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for x in range(6):
                tg.start_soon(insert, x)
    await writer.aclose()
    assert isinstance(results.pop(3), InvalidArgument)
    assert results == {x: x for x in (0, 1, 2, 4, 5)}
    check = sqlite3.connect(db)
    assert [r[0] for r in check.execute("SELECT x FROM t ORDER BY x")] == [0, 1, 2, 4, 5]


@pytest.mark.parametrize("inline", [True, False])
async def test_a_lone_request_runs_without_a_savepoint_and_a_groups_each_in_its_own(
    db: Path, inline: bool
) -> None:
    """What `_verbs`' docstring promises its callers, on the fast path and the writer thread."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")  # the fast path runs only in WAL mode
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    writer = GroupCommitWriter(conn, inline=inline)
    held, release = threading.Event(), threading.Event()

    def first(c: sqlite3.Connection) -> int:
        c.execute("INSERT INTO t VALUES (1)")
        held.set()
        # A guard against a hang, not a timing: the test sets it once two more are queued.
        assert release.wait(30)
        return 1

    def insert(x: int) -> Callable[[sqlite3.Connection], int]:
        return lambda c: c.execute("INSERT INTO t VALUES (?)", (x,)).rowcount

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            # Not small: the writer thread runs it (a group of one), holding the others back.
            tg.start_soon(writer.run, first)
            await anyio.to_thread.run_sync(held.wait)
            tg.start_soon(functools.partial(writer.run, insert(2), small=True))
            tg.start_soon(functools.partial(writer.run, insert(3), small=True))
            while writer._requests.qsize() < 2:  # both queued behind the first: one group
                await anyio.sleep(0.01)
            release.set()
        # Alone now: on the fast path if `inline`, else a group of one on the writer thread.
        assert await writer.run(insert(4), small=True) == 1
    await writer.aclose()
    transactions: list[list[str]] = []
    current: list[str] | None = None
    for statement in statements:
        if statement.startswith("BEGIN"):
            current = []
            transactions.append(current)
        elif statement == "COMMIT":
            current = None
        elif current is not None:
            current.append(statement.split(" VALUES")[0])
    assert transactions == [
        ["INSERT INTO t"],
        ["SAVEPOINT request", "INSERT INTO t", "RELEASE request"] * 2,
        ["INSERT INTO t"],
    ]


async def test_an_sqlite_error_in_a_request_becomes_a_storage_error(db: Path) -> None:
    writer = GroupCommitWriter(sqlite3.connect(db, isolation_level=None, check_same_thread=False))
    with pytest.raises(StorageError, match="SQLite failed: no such table"):
        await writer.run(lambda c: c.execute("SELECT * FROM missing"))
    await writer.aclose()


async def listening(queue: Any) -> None:
    """Let a PostgreSQL queue's listener come up first: once it listens it wakes subscribers
    once (for what was enqueued before its LISTEN), which is not a commit the tests count."""
    if isinstance(queue, PostgresQueue):
        woken = anyio.Event()
        queue.on_enqueue(woken.set)  # subscribed for good: the listener stays up
        with anyio.fail_after(5):
            await woken.wait()


async def test_a_cancelled_enqueue_still_commits_whole_and_still_notifies(
    queue: SQLiteQueue,
) -> None:
    # Invariant: a request handed to the writer is carried out whether or not its caller waits.
    await listening(queue)
    committed = anyio.Event()
    queue.on_enqueue(committed.set)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await queue.enqueue_many(
            [NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(50)]
        )
    assert scope.cancelled_caught
    with anyio.fail_after(10):
        await committed.wait()
    assert (await queue.stats()).pending == 50


async def test_on_enqueue_callbacks_run_after_the_commit_until_unsubscribed(
    queue: SQLiteQueue,
) -> None:
    seen: list[int] = []

    def callback() -> None:
        seen.append(len(seen))

    def broken() -> None:
        raise RuntimeError("subscriber bug")

    await listening(queue)
    unsubscribe = queue.on_enqueue(callback)
    queue.on_enqueue(broken)
    with structlog.testing.capture_logs() as logs:
        await queue.enqueue("r", "t", "a")
    assert [(e["event"], e["log_level"]) for e in logs] == [("queue.on_enqueue_failed", "error")]
    await queue.enqueue_many([NewJob(run_id="r", tenant_id="t", r2_key="b")])
    unsubscribe()
    unsubscribe()  # twice is harmless
    await queue.enqueue("r", "t", "c")
    assert seen == [0, 1]


async def test_the_queue_refuses_work_after_it_is_closed(open_queue: Callable[..., Any]) -> None:
    async with open_queue() as queue:
        pass
    with pytest.raises(QueueClosed, match="use it inside"):
        await queue.enqueue("r", "t", "k")
    with pytest.raises(QueueClosed):
        await queue.stats()


async def test_closing_commits_what_was_already_submitted(open_queue: Callable[..., Any]) -> None:
    async with open_queue() as queue, anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(queue.enqueue, "r", "t", str(i))
    async with open_queue() as queue:
        assert (await queue.stats()).pending == 20
