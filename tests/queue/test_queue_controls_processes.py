"""Pause, resume and per-tenant limits with several real processes sharing one queue (a SQLite
file or a PostgreSQL schema): what the queue stores holds for every process, across restarts,
and the limits are checked from the database while the processes work."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pg_helpers import PG_DSN, pg_admin

from actors.queue import NewJob, SQLiteQueue
from actors.queue.postgres import PostgresQueue

CHILD = Path(__file__).with_name("control_child.py")
pytestmark = pytest.mark.slow


class Shared:
    """The queue the children share, opened here for the test's own calls and peeked at raw."""

    def __init__(self, backend: str, target: str, tmp_path: Path) -> None:
        self.backend = backend
        self.target = target
        self.logs = tmp_path
        self.children: list[tuple[subprocess.Popen[bytes], Path]] = []

    def call(self, work: Callable[[Any], Any]) -> Any:
        async def run() -> Any:
            if self.backend == "sqlite":
                async with SQLiteQueue.open(self.target) as queue:
                    return await work(queue)
            async with PostgresQueue.open(PG_DSN, schema=self.target) as pg:
                return await work(pg)

        return anyio.run(run)

    def count(self, where: str, *args: object) -> int:
        """``count(*)`` of the jobs ``where`` (``?`` placeholders), read from the database."""
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.target)
            try:
                return int(
                    conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", args).fetchone()[0]
                )
            finally:
                conn.close()
        for i in range(len(args)):
            where = where.replace("?", f"${i + 1}", 1)
        return int(pg_admin(f"SELECT count(*) FROM {self.target}.jobs WHERE {where}", *args)[0][0])

    def spawn(self, n: int, hold: float) -> None:
        env = {**os.environ, "ACTORS_TEST_PG_DSN": PG_DSN}
        for _ in range(n):
            log = self.logs / f"child-{len(self.children)}.log"
            log.touch()
            argv = [sys.executable, str(CHILD), self.backend, self.target, str(log), str(hold)]
            self.children.append((subprocess.Popen(argv, env=env), log))
        for _, log in self.children[-n:]:
            wait_for(lambda log=log: "ready" in log.read_text(), f"{log.name} to open the queue")

    def kill_all(self) -> None:
        for child, _ in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGKILL)
            child.wait()

    def leases(
        self, children: list[tuple[subprocess.Popen[bytes], Path]] | None = None
    ) -> list[tuple[int, str, float]]:
        """Every ``L job tenant leased_at`` line the children logged."""
        found = []
        for _, log in children if children is not None else self.children:
            for line in log.read_text().splitlines():
                if line.startswith("L "):
                    _, job, tenant, at = line.split()
                    found.append((int(job), tenant, float(at)))
        return found


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s for {what}")
        time.sleep(0.02)


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shared]:
    if request.param == "sqlite":
        target = str(tmp_path / "queue.db")
    else:
        target = request.getfixturevalue("pg_schema")
    queue = Shared(str(request.param), target, tmp_path)
    try:
        yield queue
    finally:
        queue.kill_all()


def jobs(tenant: str, count: int) -> list[NewJob]:
    return [
        NewJob(run_id=f"run-{tenant}", tenant_id=tenant, r2_key=f"{tenant}/{i}")
        for i in range(count)
    ]


def test_a_pause_holds_for_every_process_until_resumed_and_survives_their_restart(
    shared: Shared,
) -> None:
    total = 300
    shared.call(lambda q: q.enqueue_many(jobs("t", total)))
    shared.spawn(3, hold=0.02)
    wait_for(lambda: shared.count("status = 'done'") >= 30, "some jobs to be done")
    shared.call(lambda q: q.pause())
    paused_at = time.time()
    # Running jobs finish: their acks go through while paused.
    wait_for(lambda: shared.count("status = 'leased'") == 0, "the leased jobs to finish")
    done = shared.count("status = 'done'")
    assert done < total
    for _ in range(20):  # a second of watching: nothing new is leased
        time.sleep(0.05)
        assert shared.count("status != 'pending'") == done
    assert all(at <= paused_at for _, _, at in shared.leases())
    # Every process dies; new ones start: the pause is in the queue, so it still holds.
    shared.kill_all()
    before = len(shared.children)
    shared.spawn(3, hold=0.02)
    stats = shared.call(lambda q: q.stats())
    assert stats.paused and stats.pending == total - done
    for _ in range(20):
        time.sleep(0.05)
        assert shared.count("status != 'pending'") == done
    assert shared.leases(shared.children[before:]) == []
    shared.call(lambda q: q.resume())
    wait_for(lambda: shared.count("status = 'done'") == total, "every job to be done")
    leased = [job for job, _, _ in shared.leases()]
    assert sorted(leased) == sorted(set(leased))  # none leased twice
    assert len(leased) == total


def test_a_tenants_limits_hold_across_three_processes(shared: Shared) -> None:
    limit, rate = 3, 20.0

    async def prepare(q: Any) -> None:
        await q.set_tenant_limits("capped", max_leased=limit)
        await q.set_tenant_limits("rated", max_per_second=rate)
        await q.enqueue_many(jobs("capped", 60) + jobs("rated", 60) + jobs("free", 150))

    shared.call(prepare)
    shared.spawn(3, hold=0.03)
    most = 0
    # Checked from the database throughout: never more than `limit` of capped's jobs leased.
    deadline = time.monotonic() + 120
    while shared.count("tenant_id = ? AND status != 'done'", "capped") > 0:
        assert time.monotonic() < deadline, "capped's jobs are not all done after 120 s"
        leased = shared.count("tenant_id = ? AND status = 'leased'", "capped")
        assert leased <= limit
        most = max(most, leased)
    assert most >= 1
    wait_for(lambda: shared.count("status = 'done'") == 270, "every job to be done")
    # Rated's leases, in the order of their times: a bucket of `rate`, refilled at `rate` a
    # second, so any k consecutive leases span at least (k - rate) / rate seconds.
    times = sorted(at for _, tenant, at in shared.leases() if tenant == "rated")
    assert len(times) == 60
    for i in range(len(times)):
        for j in range(i + int(rate), len(times)):
            assert times[j] - times[i] >= (j - i + 1 - rate) / rate - 1e-3, (i, j)
