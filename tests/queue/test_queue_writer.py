"""The async bridge: group commit, per-request isolation, cancellation, callbacks, closing."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import structlog

from actors.errors import InvalidArgument, QueueClosed, StorageError
from actors.queue import Ack, NewJob, SQLiteQueue
from actors.queue.postgres._queue import PostgresQueue
from actors.queue.sqlite._writer import Batch, GroupCommitWriter
from supervisors.clock import FakeClock

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


async def test_requests_of_one_batch_key_run_as_one_call_and_fail_alone(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    writer = GroupCommitWriter(conn)
    calls: list[list[int]] = []

    def insert(c: sqlite3.Connection, xs: Sequence[int]) -> list[int]:
        calls.append(list(xs))
        for x in xs:
            c.execute("INSERT INTO t VALUES (?)", (x,))  # a duplicate raises
        return [x * 10 for x in xs]

    async def one_group(*requests: tuple[str, list[int]]) -> dict[tuple[int, ...], object]:
        """Submit ``requests`` while the writer is held, so that they form one group."""
        entered, gate = threading.Event(), threading.Event()
        results: dict[tuple[int, ...], object] = {}

        async def submit(key: str, xs: list[int]) -> None:
            try:
                results[tuple(xs)] = await writer.run(
                    lambda c: insert(c, xs), batch=Batch(key, xs, insert)
                )
            except StorageError as exc:
                results[tuple(xs)] = exc

        def hold(_: sqlite3.Connection) -> None:
            entered.set()
            gate.wait(10)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer.run, hold)
                await anyio.to_thread.run_sync(entered.wait)
                for key, xs in requests:
                    tg.start_soon(submit, key, xs)
                    await anyio.wait_all_tasks_blocked()  # queued, in this order
                gate.set()
        return results

    # One call over the items of both requests of key "a", each caller its own results.
    assert await one_group(("a", [6]), ("a", [7, 8])) == {(6,): [60], (7, 8): [70, 80]}
    assert calls == [[6, 7, 8]]
    # A merged call that fails (5 then 1 again) rolls back, and each request runs alone: only
    # the one that fails alone fails. Key "b" runs apart, after the part of "a".
    calls.clear()
    results = await one_group(("a", [1, 2]), ("b", [4]), ("a", [3]), ("a", [5, 1]))
    assert calls == [[1, 2, 3, 5, 1], [1, 2], [3], [5, 1], [4]]
    assert isinstance(results.pop((5, 1)), StorageError)
    assert results == {(1, 2): [10, 20], (3,): [30], (4,): [40]}
    await writer.aclose()
    check = sqlite3.connect(db)
    assert [r[0] for r in check.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 3, 4, 6, 7, 8]


async def test_concurrent_batch_calls_each_get_their_own_results(queue: SQLiteQueue) -> None:
    await queue.enqueue("theirs", "b", "b/k")
    enqueued: dict[int, object] = {}

    async def enqueue(i: int) -> None:
        jobs = [NewJob(run_id=f"r{i}", tenant_id="a", r2_key=f"a/{i}-{j}") for j in range(3)]
        if i == 7:  # a run of another tenant: refused, alone
            jobs = [NewJob(run_id="theirs", tenant_id="a", r2_key="a/x")]
        try:
            enqueued[i] = [job.r2_key for job in await queue.enqueue_many(jobs)]
        except InvalidArgument as exc:
            enqueued[i] = exc

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(enqueue, i)
    assert isinstance(enqueued.pop(7), InvalidArgument)
    assert enqueued == {i: [f"a/{i}-{j}" for j in range(3)] for i in range(12) if i != 7}
    acked: dict[int, tuple[bool, str]] = {}

    async def work(i: int) -> None:
        (job,) = await queue.pull(max=1)
        token = job.lease_token or "" if i % 4 else "stale"  # every fourth with a bad token
        (result,) = await queue.ack_many([Ack(job_id=job.id, lease_token=token)])
        assert result.job_id == job.id
        acked[job.id] = (result.ok, result.reason)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(work, i)
    assert sorted(acked.values()) == [(False, "superseded")] * 3 + [(True, "ok")] * 9
    stats = await queue.stats()
    assert (stats.pending, stats.leased, stats.done) == (34 - 12, 3, 9)


async def test_a_run_stays_one_tenants_when_two_tenants_enqueue_into_it_at_once(
    queue: SQLiteQueue,
) -> None:
    # The writer merges concurrent enqueues into one call; a run id given to two tenants makes
    # that call fail, and each request then runs alone: the first tenant's jobs go in, the
    # other's are refused, and none of them lands in a run of another tenant.
    outcomes: dict[int, str] = {}

    async def enqueue(i: int) -> None:
        tenant = ("alice", "bob")[i % 2]
        jobs = [
            NewJob(run_id="shared", tenant_id=tenant, r2_key=f"{tenant}/{i}-{j}") for j in (0, 1)
        ]
        try:
            await queue.enqueue_many(
                [NewJob(run_id=f"own-{i}", tenant_id=tenant, r2_key=f"{tenant}/o{i}"), *jobs]
            )
            outcomes[i] = tenant
        except InvalidArgument:
            outcomes[i] = "refused"

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(enqueue, i)
    summary = await queue.run_summary("shared")
    owner = summary.tenant_id
    assert sorted(outcomes.values()) == sorted([owner] * 4 + ["refused"] * 4)
    listed = (await queue.list(run_id="shared", limit=100)).items
    assert {job.tenant_id for job in listed} == {owner}
    assert summary.total == len(listed) == 8
    with pytest.raises(InvalidArgument, match="one tenant"):  # the same within one call
        await queue.enqueue_many(
            [NewJob(run_id="mixed", tenant_id=t, r2_key=f"{t}/m") for t in ("alice", "bob")]
        )


async def test_two_acks_of_one_job_in_one_call_each_get_their_own_outcome(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    # A stale holder's ack and the live holder's, merged into one call by the writer (or sent
    # together): each item is judged in its turn, the stale one refused, the live one applied.
    await queue.enqueue("r", "t", "t/k")
    (first,) = await queue.pull(max=1, visibility_seconds=5)
    clock.advance(6)  # the first lease runs out; the job is leased again
    (second,) = await queue.pull(max=1)
    assert first.id == second.id and first.lease_token != second.lease_token
    stale = Ack(job_id=first.id, lease_token=first.lease_token or "", run_metrics={"n": 1})
    live = Ack(job_id=second.id, lease_token=second.lease_token or "", run_metrics={"n": 10})
    refused, applied = await queue.ack_many([stale, live])
    # SQLite judges the stale one in its turn (another lease holds the job); PostgreSQL's one
    # statement judges after the batch (the job has finished): refused either way.
    assert (refused.ok, refused.reason) in ((False, "superseded"), (False, "finished"))
    assert (applied.ok, applied.reason) == (True, "ok")
    assert (await queue.run_summary("r")).metrics == {"n": 10}


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
