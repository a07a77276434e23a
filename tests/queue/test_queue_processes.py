"""Several OS processes share one file; a child killed with SIGKILL loses nothing that returned."""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import anyio
import pytest

from actors.queue import NewJob, SQLiteQueue

CHILD = Path(__file__).with_name("queue_child.py")
pytestmark = pytest.mark.slow


def spawn(mode: str, db: Path, log: Path, backend: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(CHILD), mode, str(db), str(log), backend])


def read_log(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    # A line without its newline was being written when the process died: it did not return.
    return [
        line.split() for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")
    ]


def test_processes_sharing_one_file_finish_every_job_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"

    async def fill() -> None:
        async with SQLiteQueue.open(db) as queue:
            await queue.enqueue_many(
                [NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(400)]
            )

    anyio.run(fill)
    logs = [tmp_path / f"worker-{n}.log" for n in range(4)]
    children = [spawn("work", db, log, ("asyncio", "trio")[n % 2]) for n, log in enumerate(logs)]
    for child in children:
        assert child.wait(timeout=120) == 0

    leases: dict[int, list[tuple[float, float]]] = defaultdict(list)
    accepted: dict[int, int] = defaultdict(int)
    for log in logs:
        for fields in read_log(log):
            if fields[0] == "L":
                leases[int(fields[1])].append((float(fields[3]), float(fields[4])))
            elif fields[0] == "A" and fields[2] == "True":
                accepted[int(fields[1])] += 1
    assert sorted(accepted) == list(range(1, 401))
    assert set(accepted.values()) == {1}  # done exactly once
    assert any(len(v) > 1 for v in leases.values())  # forgotten leases expired and came back
    for intervals in leases.values():
        intervals.sort()
        for (_, expires), (next_start, _) in itertools.pairwise(intervals):
            assert next_start >= expires  # never two live leases at once
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall() == [
        ("done", 400)
    ]


def check_after_crash(db: Path, log: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    status = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    entries = read_log(log)
    enqueued = {int(f[1]) for f in entries if f[0] == "E"}
    acked = {int(f[1]) for f in entries if f[0] == "A"}
    assert enqueued <= status.keys()  # every enqueue that returned is there
    assert all(status[i] == "done" for i in acked)  # every ack that returned is there
    (bad,) = conn.execute(
        "SELECT count(*) FROM jobs WHERE attempts > max_attempts "
        "OR (status = 'leased') != (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)"
    ).fetchone()
    assert bad == 0
    runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert runs == (1 if status else 0)
    conn.close()
    return len(enqueued), len(acked)


def test_a_child_killed_at_random_moments_loses_nothing_that_returned(tmp_path: Path) -> None:
    db, log = tmp_path / "queue.db", tmp_path / "child.log"
    rng = random.Random(2)
    for kill in range(12):
        ready = sum(1 for f in read_log(log) if f[0] == "ready")
        child = spawn("crash", db, log, ("asyncio", "trio")[kill % 2])
        deadline = time.monotonic() + 60
        while sum(1 for f in read_log(log) if f[0] == "ready") == ready:
            assert child.poll() is None, "the child died before it was ready"
            assert time.monotonic() < deadline, "the child never got ready"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        check_after_crash(db, log)

    async def reopen() -> None:  # opens cleanly through the queue, migrations and all
        async with SQLiteQueue.open(db) as queue:
            stats = await queue.stats()
            assert stats.total > 0 and stats.done > 0

    anyio.run(reopen)
    enqueued, acked = check_after_crash(db, log)
    assert enqueued > 12 and acked > 12
