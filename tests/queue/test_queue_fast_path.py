"""The writer's fast path: a lone small request commits on the caller's thread, never waiting
there for another connection's write lock, and rolls back whole when it fails."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from actors.errors import InvalidArgument
from actors.queue import SQLiteQueue
from actors.queue.sqlite import schema
from actors.queue.sqlite._writer import GroupCommitWriter

pytestmark = pytest.mark.anyio


async def test_a_lone_enqueue_never_holds_the_loop_while_another_connection_writes(
    db: Path,
) -> None:
    async with SQLiteQueue.open(db, busy_timeout_seconds=60) as queue:
        await queue.enqueue("r", "t", "first")  # creates the file's tables before the blocker
        loop_ran = threading.Event()
        saw: list[bool] = []
        holding = threading.Event()

        def blocker() -> None:
            conn = sqlite3.connect(db, isolation_level=None, timeout=60)
            conn.execute("BEGIN IMMEDIATE")
            holding.set()
            # A guard against a deadlock, not a timing: a fast path that waited for this lock
            # on the loop's thread would keep the loop from setting the event until this gives up.
            saw.append(loop_ran.wait(30))
            conn.execute("COMMIT")
            conn.close()

        thread = threading.Thread(target=blocker)
        thread.start()
        await anyio.to_thread.run_sync(holding.wait)
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.enqueue, "r", "t", "second")  # a lone, small request
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            loop_ran.set()  # the loop runs while the enqueue waits for the lock
        await anyio.to_thread.run_sync(thread.join)
        assert saw == [True]
        assert (await queue.stats()).pending == 2


@pytest.mark.parametrize("inline", [True, False])
async def test_a_lone_failing_request_rolls_back_whole_and_the_next_one_commits(
    db: Path, inline: bool
) -> None:
    conn = schema.connect(db)  # WAL, as the queue's own connection
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    writer = GroupCommitWriter(conn, inline=inline)

    def refused(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        raise InvalidArgument("refused after writing")

    with pytest.raises(InvalidArgument, match="refused after writing"):
        await writer.run(refused, small=True)
    assert await writer.run(lambda c: c.execute("INSERT INTO t VALUES (2)").rowcount, small=True)
    await writer.aclose()
    check = sqlite3.connect(db)
    assert [r[0] for r in check.execute("SELECT x FROM t")] == [2]
    check.close()
