"""A schedule ticking every second, fired by three `python -m actors run` processes sharing one
queue (SQLite and PostgreSQL), two of them SIGKILLed and restarted along the way: every tick
of the window enqueues exactly one job (the tick keys in the database are unique and have no
gap). Then every process is killed for longer than the grace, and the first one back catches
the missed ticks up with one job."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pg_helpers import PG_DSN, pg_admin

pytestmark = pytest.mark.slow

CONFIG = """
[runtime]
backend = "{runtime}"

[queue]
{queue}
poll_interval_seconds = 0.2

[pipeline]
shutdown_grace_seconds = 1

[storage]
kind = "local"
root = "{root}"

[log]
level = "warning"
format = "json"

[[schedules]]
name = "tick"
tenant_id = "t"
r2_key = "t/tick.txt"
interval_seconds = 1
grace_seconds = 3
missed = "catch_up"
payload = {{ kind = "tick" }}
"""


def tick_of(key: str) -> int:
    """The tick (whole seconds since the epoch) in a job's key ``schedule:tick:<tick>``."""
    text = key.rsplit(":", 1)[1]
    return int(datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_each_tick_enqueues_one_job_while_processes_are_killed_and_restarted(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        db = tmp_path / "queue.db"
        queue = f'backend = "sqlite"\npath = "{db}"'

        def jobs() -> list[tuple[str, float]]:
            if not db.exists():
                return []
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            try:
                found = conn.execute("SELECT idempotency_key, created_at FROM jobs ORDER BY id")
                rows = found.fetchall()
            except sqlite3.OperationalError:  # not migrated yet
                return []
            finally:
                conn.close()
            return [(r[0], r[1]) for r in rows]
    else:
        schema = request.getfixturevalue("pg_schema")
        pg_admin(f"CREATE SCHEMA {schema}")  # the processes migrate it
        queue = f'backend = "postgres"\ndsn = "{PG_DSN}?search_path={schema}"'

        def jobs() -> list[tuple[str, float]]:
            try:
                rows = pg_admin(
                    f"SELECT idempotency_key, created_at FROM {schema}.jobs ORDER BY id"
                )
            except Exception:  # the schema is not migrated yet
                return []
            return [(r["idempotency_key"], r["created_at"]) for r in rows]

    def keys() -> list[str]:
        return [key for key, _ in jobs()]

    (tmp_path / "objects" / "t").mkdir(parents=True)
    (tmp_path / "objects" / "t" / "tick.txt").write_text("tick\n")
    configs = []
    for n in range(3):
        configs.append(tmp_path / f"worker-{n}.toml")
        configs[-1].write_text(
            CONFIG.format(
                runtime=("asyncio", "trio")[n % 2], queue=queue, root=tmp_path / "objects"
            )
        )
    logs = [tmp_path / f"worker-{n}.log" for n in range(3)]

    def start(n: int) -> subprocess.Popen[bytes]:
        with logs[n].open("a") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "actors", "--config", str(configs[n]), "run"],
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_for(more: int, what: str) -> None:
        """Wait until ``more`` ticks beyond the present ones have their jobs."""
        target = len(keys()) + more
        deadline = time.monotonic() + 30 + more  # a guard against a hang, not a measure
        while len(keys()) < target:
            assert time.monotonic() < deadline, (what, len(keys()), target, read_logs())
            # None died but those killed here.
            assert all(w.poll() in (None, -signal.SIGKILL) for w in workers), read_logs()
            time.sleep(0.1)

    def read_logs() -> list[str]:
        return [p.read_text()[-2000:] for p in logs]

    workers = [start(n) for n in range(3)]
    try:
        wait_for(2, "the first ticks")
        # Kill and restart two of the three, one after the other, while ticks keep falling.
        for n in (0, 1):
            os.kill(workers[n].pid, signal.SIGKILL)
            workers[n].wait()
            wait_for(2, f"ticks with worker {n} dead")
            workers[n] = start(n)
            wait_for(2, f"ticks after worker {n} restarted")
        ticks = [tick_of(k) for k in keys()]
        assert len(ticks) == len(set(ticks)), sorted(ticks)  # no tick enqueued twice
        assert sorted(ticks) == list(range(min(ticks), max(ticks) + 1))  # and none skipped

        # Everything down for longer than the grace (3 s): the missed ticks are caught up
        # with one job, for the latest of them, by the first process back.
        for worker in workers:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        before = keys()
        time.sleep(6)
        assert keys() == before
        workers = [start(2)]
        wait_for(3, "ticks after the restart")
        after = [(tick_of(k), at) for k, at in jobs()[len(before) :]]
        last = tick_of(before[-1])
        (caught_up, fired), *on_time = after
        # The first job back is the catch-up: a tick more than the grace old when enqueued,
        # the latest such (the next one is on time); the outage's other ticks have no job.
        assert fired - caught_up > 3 and caught_up - last >= 2  # a tick between: no job
        assert all(at - tick <= 3 for tick, at in on_time)
        ticks = [tick for tick, _ in after]
        assert ticks == list(range(caught_up, caught_up + len(after)))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=30) for worker in workers]
    assert all(code == 0 for code in codes), read_logs()
