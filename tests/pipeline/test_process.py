"""The real process: `python -m actors` end to end, killed with SIGKILL, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
DOC = b"Harbour traffic rose in spring. Ferries ran late twice. The pier needs repair soon.\n"


def write_config(tmp_path: Path, extra: str = "", *, level: str = "warning") -> Path:
    path = tmp_path / "actors.toml"
    path.write_text(
        f"""
[queue]
path = "{tmp_path / "q.db"}"
visibility_seconds = 2
poll_interval_seconds = 0.1
reap_interval_seconds = 0.2
retry_base_seconds = 0.05
[storage]
root = "{tmp_path / "objects"}"
[log]
level = "{level}"
format = "json"
{extra}
"""
    )
    return path


def actors(config: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def start(
    config: Path, *args: str, stderr: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(stderr, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "actors", "--config", str(config), "run", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )


def make_files(tmp_path: Path, count: int) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"doc-{i:05}.txt"
        path.write_bytes(DOC)
        paths.append(path)
    return paths


def submit(config: Path, files: list[Path]) -> str:
    done = actors(config, "submit", *map(str, files))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql, params).fetchall()


def status_counts(db: Path) -> dict[str, int]:
    return dict(rows(db, "SELECT status, count(*) FROM jobs GROUP BY status"))  # type: ignore[arg-type]


def run_row(db: Path, run_id: str) -> tuple[object, ...]:
    (row,) = rows(db, "SELECT metrics, finished_at FROM runs WHERE run_id = ?", run_id)
    return row


def wait_for_line(path: Path, needle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def test_two_hundred_jobs_go_through_the_real_process(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    run_id = submit(config, make_files(tmp_path, 200))
    done = actors(config, "run", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert f"run {run_id} (tenant default): done" in done.stdout
    assert "200 total, 200 done, 0 failed" in done.stdout
    db = tmp_path / "q.db"
    assert status_counts(db) == {"done": 200}
    assert rows(db, "SELECT count(*) FROM jobs WHERE result IS NULL") == [(0,)]
    shown = actors(config, "runs", "show", run_id, "--json")
    assert '"done": 200' in shown.stdout


def test_sigkill_at_random_moments_loses_nothing_and_acks_each_job_once(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    count = 1500
    run_id = submit(config, make_files(tmp_path, count))
    db = tmp_path / "q.db"
    rng = random.Random(os.environ.get("PYTEST_SEED", "kill"))
    for _ in range(5):
        process = start(config, stderr=tmp_path / "err.log")
        time.sleep(rng.uniform(0.4, 1.2))
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
        # The file opens cleanly after every kill and no job has vanished.
        counts = status_counts(db)
        assert sum(counts.values()) == count
        assert counts.get("failed", 0) == 0
    finished = actors(config, "run", "--until-idle")
    assert finished.returncode == 0, finished.stderr
    assert status_counts(db) == {"done": count}
    assert rows(db, "SELECT count(*) FROM jobs WHERE result IS NULL") == [(0,)]
    # The run's byte total is added in each ack's transaction: a second ack of any job
    # would have counted its bytes twice.
    metrics, finished_at = run_row(db, run_id)
    assert f'"bytes":{float(count * len(DOC))}' in str(metrics)
    assert finished_at is not None
    # The run's stored state agrees with its jobs.
    assert rows(db, "SELECT pending, leased, done, failed FROM runs WHERE run_id = ?", run_id) == [
        (0, 0, count, 0)
    ]


def test_sigterm_drains_exits_zero_and_leaves_unfinished_jobs_available(tmp_path: Path) -> None:
    # debug: job.done lines (at debug) show the run is under way.
    config = write_config(tmp_path, "[pipeline]\nshutdown_grace_seconds = 5\n", level="debug")
    count = 4000
    run_id = submit(config, make_files(tmp_path, count))
    db = tmp_path / "q.db"
    err = tmp_path / "err.log"
    process = start(config, stderr=err)
    wait_for_line(err, '"job.done"')
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    counts = status_counts(db)
    assert counts.get("leased", 0) == 0
    assert counts.get("failed", 0) == 0
    assert counts.get("done", 0) + counts.get("pending", 0) == count
    assert counts.get("pending", 0) > 0, "the run finished before SIGTERM: nothing was tested"
    # Given back, not abandoned: every unfinished job can be leased again right now.
    assert rows(
        db, "SELECT count(*) FROM jobs WHERE status = 'pending' AND available_at > ?", time.time()
    ) == [(0,)]
    metrics, _ = run_row(db, run_id)
    assert f'"bytes":{float(counts["done"] * len(DOC))}' in str(metrics)
    assert "system.stopping" in err.read_text()


def test_a_second_sigterm_ends_the_drain_at_once_and_gives_the_jobs_back(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[processor]\nkind = "python"\nfactory = "faulty:slow"\n'
        "[pipeline]\nshutdown_grace_seconds = 300\n",
        level="debug",  # a run room's start (a debug line) says a job was leased
    )
    submit(config, make_files(tmp_path, 5))
    err = tmp_path / "err.log"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    process = start(config, stderr=err, env=env)
    wait_for_line(err, '"supervisor":"actors/run_rooms"', timeout=30)  # a job was leased
    process.send_signal(signal.SIGTERM)
    wait_for_line(err, '"system.stopping"')
    process.send_signal(signal.SIGTERM)  # do not wait out the 300 s grace period
    assert process.wait(timeout=30) == 0
    assert "system.stopping_now" in err.read_text()
    counts = status_counts(tmp_path / "q.db")
    assert counts == {"pending": 5}  # given back at once, none failed, none left leased
    # A release gives the attempt back: being interrupted by a shutdown costs a job nothing.
    assert rows(tmp_path / "q.db", "SELECT max(attempts) FROM jobs") == [(0,)]


def test_processes_sharing_a_queue_do_each_maintenance_round_once(tmp_path: Path) -> None:
    # Three workers on one file, reaping every 0.2 s: each round is claimed in the file's
    # `maintenance` table, and the round numbers the three log never repeat.
    config = write_config(tmp_path, level="debug")
    db = tmp_path / "q.db"
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    workers = [start(config, stderr=log) for log in logs]

    def reap_rounds() -> int:
        try:
            found = rows(db, "SELECT rounds FROM maintenance WHERE task = 'reap'")
        except sqlite3.OperationalError:  # not created yet
            return 0
        return int(found[0][0]) if found else 0  # type: ignore[call-overload]

    try:
        deadline = time.monotonic() + 60
        while reap_rounds() < 20:
            assert time.monotonic() < deadline, f"{reap_rounds()} reap rounds in 60 s"
            assert all(w.poll() is None for w in workers), [log.read_text() for log in logs]
            time.sleep(0.1)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=30) for worker in workers]
    assert codes == [0, 0, 0]
    claimed = [
        (event["task"], event["round"])
        for log in logs
        for event in (
            json.loads(line)
            for line in log.read_text().splitlines()
            if '"maintenance.round"' in line
        )
    ]
    reaps = [n for task, n in claimed if task == "reap"]
    assert len(reaps) == len(set(reaps)), sorted(reaps)  # no round done twice
    # Every claimed round was done and logged, but for one cut short per worker by SIGTERM.
    assert reap_rounds() - 3 <= len(reaps) <= reap_rounds()
    assert claimed.count(("purge", 1)) == 1  # the first round of the hourly purge, once


def test_runs_watch_prints_json_lines_until_the_run_ends(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    run_id = submit(config, make_files(tmp_path, 50))
    watcher = subprocess.Popen(
        [sys.executable, "-m", "actors", "--config", str(config), "runs", "watch", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert actors(config, "run", "--until-idle").returncode == 0
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["status"] == "done"
    assert lines[-1]["done"] == 50
    assert all(line["run_id"] == run_id for line in lines)


def test_an_actor_that_keeps_crashing_makes_the_process_exit_non_zero(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[processor]\nkind = "python"\nfactory = "faulty:broken"\n'
        "[supervision]\nmax_restarts = 2\nbackoff_min_seconds = 0\nbackoff_max_seconds = 0\n",
    )
    submit(config, make_files(tmp_path, 3))
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    done = actors(config, "run", env=env)
    assert done.returncode == 70, done.stderr
    assert "error: actor 'actors/processors/processor-" in done.stderr
    assert "kept crashing" in done.stderr
    assert "TypeError: the processor returned NoneType, not a ProcessorOutput" in done.stderr
    counts = status_counts(tmp_path / "q.db")
    assert sum(counts.values()) == 3
    assert counts.get("done", 0) == 0
    assert counts.get("leased", 0) == 0


def test_a_processor_that_cannot_be_imported_stops_the_start_cleanly(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[processor]\nkind = "python"\nfactory = "no_such_mod:make"\n')
    done = actors(config, "run")
    assert done.returncode == 1
    assert "[processor].factory = 'no_such_mod:make' cannot be imported" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "q.db").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[queue]\nvisibilty_seconds = 5\n", "[queue] has no key `visibilty_seconds`"),
        ("[pipeline]\nconcurrency = 'lots'\n", "[pipeline].concurrency: Expected `int`"),
        ("[pipeline\nconcurrency = 3\n", "not valid TOML"),
        ("[queue]\nvisibility_seconds = -1\n", "[queue].visibility_seconds: Expected `float` > 0"),
        ("[gemini]\nkey = 'x'\n", "unknown table [gemini]"),
    ],
)
def test_a_bad_config_stops_the_process_before_it_starts(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1
    assert message in done.stderr
    assert str(config) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()
