"""Cancelling a whole run while several `python -m actors run` processes work on it, on SQLite
(one file) and on PostgreSQL: every job ends done or cancelled, nothing cancelled is ever marked
done, and the processors working on its jobs observe the cancellation."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import PG_DSN, pg_admin, pg_runs

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
WORKERS = 3
QUICK = 8  # done at once
SLOW = 40  # 30 s each: still processing when the run is cancelled


def write_config(tmp_path: Path, queue: str, isolate: bool) -> Path:
    path = tmp_path / "actors.toml"
    path.write_text(
        f"""
[queue]
{queue}
visibility_seconds = 2
poll_interval_seconds = 0.1
reap_interval_seconds = 0.2
[storage]
root = "{tmp_path / "objects"}"
[pipeline]
concurrency = 4
fetchers = 1
processors = 2
[processor]
kind = "python"
factory = "patient:make"
isolate = {"true" if isolate else "false"}
[log]
level = "warning"
format = "json"
"""
    )
    return path


def actors(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def statuses(backend: str, tmp_path: Path, schema: str) -> list[tuple[Any, ...]]:
    """(status, started, cancel requested) of every job."""
    sql = "SELECT status, started_at IS NOT NULL, cancel_requested_at IS NOT NULL FROM {}jobs"
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "q.db") as conn:
            return [tuple(r) for r in conn.execute(sql.format("")).fetchall()]
    return [tuple(r) for r in pg_admin(sql.format(f"{schema}."))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("backend", "isolate"),
    [("sqlite", False), ("postgres", False), ("sqlite", True)],
    ids=["sqlite", "postgres", "sqlite-worker-processes"],
)
def test_cancelling_a_run_mid_way_across_processes_ends_every_job_done_or_cancelled(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, isolate: bool
) -> None:
    schema = request.getfixturevalue("pg_schema") if backend == "postgres" else ""
    queue = (
        f'path = "{tmp_path / "q.db"}"'
        if backend == "sqlite"
        else f'backend = "postgres"\ndsn = "{PG_DSN}?search_path={schema}"'
    )
    config = write_config(tmp_path, queue, isolate)
    if backend == "postgres":
        pg_admin(f"CREATE SCHEMA {schema}")
    log = tmp_path / "cancelled.log"
    log.touch()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p),
        "ACTORS_TEST_CANCEL_LOG": str(log),
        "ACTORS_TEST_PIDS": str(tmp_path / "pids.log"),
    }
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(QUICK + SLOW):
        kind = b"QUICK" if i < QUICK else b"slow"
        (folder / f"doc-{i:03}.txt").write_bytes(kind + b" harbour traffic rose in spring.\n")
    submitted = actors(config, "submit", "--run-id", "big", str(folder), env=env)
    assert submitted.returncode == 0, submitted.stderr
    # With worker processes the processes keep running (no --until-idle): the test checks that
    # the worker processes of the cancelled jobs were killed while their parents live on.
    until_idle = [] if isolate else ["--until-idle"]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "actors", "--config", str(config), "run", *until_idle],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"worker-{n}.log", "wb"),  # noqa: SIM115 (closed at exit)
            env=env,
        )
        for n in range(WORKERS)
    ]
    try:
        # Mid-way: the quick jobs are done, and slow ones are being processed.
        deadline = time.monotonic() + 60
        while True:
            rows = statuses(backend, tmp_path, schema)
            done = sum(1 for s, _, _ in rows if s == "done")
            processing = sum(1 for s, started, _ in rows if s == "leased" and started)
            if done >= QUICK and processing >= WORKERS:
                break
            assert time.monotonic() < deadline, f"no progress: {rows}"
            assert all(w.poll() is None for w in workers)
            time.sleep(0.05)
        cancelled = actors(config, "jobs", "cancel", "--run", "big", env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "run big: cancelled" in cancelled.stdout
        if isolate:
            deadline = time.monotonic() + 60
            while any(
                s in ("pending", "leased") for s, _, _ in statuses(backend, tmp_path, schema)
            ):
                assert time.monotonic() < deadline
                assert all(w.poll() is None for w in workers)
                time.sleep(0.05)
            # Each slow job's worker process was killed (SIGKILL), its parent lives on.
            pids = {int(p) for p in (tmp_path / "pids.log").read_text().split()}
            assert len(pids) >= WORKERS
            deadline = time.monotonic() + 30
            while any(alive(pid) for pid in pids):
                assert time.monotonic() < deadline, [pid for pid in pids if alive(pid)]
                time.sleep(0.05)
            assert all(w.poll() is None for w in workers)
            for worker in workers:
                worker.terminate()
        # Every worker learns of it at its next renewal, stops, and goes idle: it exits.
        for worker in workers:
            assert worker.wait(timeout=60) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    rows = statuses(backend, tmp_path, schema)
    counts = {s: sum(1 for r in rows if r[0] == s) for s in {r[0] for r in rows}}
    assert set(counts) == {"done", "cancelled"}, counts
    assert counts["done"] >= QUICK and counts["cancelled"] >= WORKERS
    # Invariant: nothing cancelled is ever marked done.
    assert not [r for r in rows if r[0] == "done" and r[2]]
    assert all(r[2] for r in rows if r[0] == "cancelled")
    # The processors that were working on cancelled jobs observed it (their calls cancelled).
    # (A worker process is killed instead: it observes nothing.)
    observed = log.read_text().split()
    assert len(observed) >= (0 if isolate else 1)
    # The run says so, with counts that agree with the jobs.
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "q.db") as conn:
            run = conn.execute(
                "SELECT pending, leased, done, failed, cancelled, finished_at FROM runs"
            ).fetchone()
        assert run[:5] == (0, 0, counts["done"], 0, counts["cancelled"]) and run[5]
    else:
        (run,) = pg_runs(schema)
        assert (run["pending"], run["leased"], run["done"], run["cancelled"]) == (
            0,
            0,
            counts["done"],
            counts["cancelled"],
        )
        assert run["finished_at"] is not None
    shown = actors(config, "runs", "show", "big", env=env)
    assert "cancelled" in shown.stdout, shown.stdout + shown.stderr
