"""Fair attempt accounting in the real process: a crash costs an attempt only to the jobs that
were started (handed to a fetcher) when it happened, never to the prefetched ones waiting in the
pipeline's streams; and a job that kills the process still runs out of attempts."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from test_process import DOC, HERE, actors, make_files, rows, start, status_counts, submit

from actors.pipeline import START_BATCH

pytestmark = pytest.mark.slow

FETCHERS = 2
PROCESSORS = 2


def config(tmp_path: Path, max_attempts: int) -> Path:
    path = tmp_path / "actors.toml"
    path.write_text(
        f"""
[queue]
path = "{tmp_path / "q.db"}"
visibility_seconds = 2
poll_interval_seconds = 0.1
reap_interval_seconds = 0.2
retry_base_seconds = 0.05
max_attempts = {max_attempts}
[storage]
root = "{tmp_path / "objects"}"
[pipeline]
concurrency = 128
fetchers = {FETCHERS}
processors = {PROCESSORS}
[processor]
kind = "python"
factory = "faulty:leisurely"
[log]
level = "warning"
format = "json"
"""
    )
    return path


def env() -> dict[str, str]:
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def done_count(db: Path) -> int:
    return status_counts(db).get("done", 0)


def test_killing_a_prefetching_worker_costs_no_attempt_to_jobs_it_never_started(
    tmp_path: Path,
) -> None:
    # Five kills with up to 128 jobs leased each time (prefetched); only the few started at a
    # kill may lose an attempt to it. Enough attempts that none of those fails: a job started
    # at every kill spends five.
    kills = 5
    cfg = config(tmp_path, max_attempts=kills + 2)
    count = 400
    run_id = submit(cfg, make_files(tmp_path, count))
    db = tmp_path / "q.db"
    rng = random.Random(os.environ.get("PYTEST_SEED", "fair"))
    for _ in range(kills):
        before = done_count(db)
        process = start(cfg, stderr=tmp_path / "err.log", env=env())
        deadline = time.monotonic() + 60
        while done_count(db) < before + 5:  # mid-run: it leased, started and finished some
            assert process.poll() is None, (tmp_path / "err.log").read_text()
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        leased = rows(db, "SELECT count(*) FROM jobs WHERE status = 'leased'")[0][0]
        assert isinstance(leased, int) and leased > FETCHERS * START_BATCH + 3 * PROCESSORS
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
        assert status_counts(db).get("failed", 0) == 0
    finished = actors(cfg, "run", "--until-idle", env=env())
    assert finished.returncode == 0, finished.stderr

    # Every job is done exactly once: each ack adds the document's bytes to the run, in the
    # ack's transaction, so a second ack of any job would have counted them twice.
    assert status_counts(db) == {"done": count}
    assert rows(db, "SELECT count(*) FROM jobs WHERE result IS NULL") == [(0,)]
    (metrics,) = rows(db, "SELECT metrics FROM runs WHERE run_id = ?", run_id)[0]
    assert f'"bytes":{float(count * len(DOC))}' in str(metrics)

    # Only jobs started when a kill came lost an attempt to it: at most what the stages hold
    # at once (the batch each fetcher marked started, two per processor waiting and one in
    # each processor), plus outcomes on their way to the ack reporter, per kill.
    # (Spending every leased job's attempt at each kill, as a reap did before fair accounting,
    # leaves well over a hundred jobs with extra attempts.)
    per_kill = FETCHERS * START_BATCH + 3 * PROCESSORS + 8
    ((lost, spent),) = rows(db, "SELECT count(*), sum(attempts - 1) FROM jobs WHERE attempts > 1")
    assert isinstance(lost, int) and lost <= kills * per_kill, (lost, spent)
    assert isinstance(spent, int | None) and (spent or 0) <= kills * per_kill, (lost, spent)


def test_a_job_that_kills_the_process_each_time_still_runs_out_of_attempts(
    tmp_path: Path,
) -> None:
    # Alone in the queue: jobs started beside it when it kills the process lose an attempt
    # too (the queue cannot tell who caused the crash), which is not what this test counts.
    cfg = config(tmp_path, max_attempts=2)
    (tmp_path / "in").mkdir()
    poison = tmp_path / "in" / "poison.txt"
    poison.write_bytes(b"POISON\n" + DOC)
    submit(cfg, [poison])
    db = tmp_path / "q.db"
    codes = []
    for _ in range(4):  # two deaths spend its two attempts; the next run finishes
        done = actors(cfg, "run", "--until-idle", env=env())
        codes.append(done.returncode)
        if done.returncode == 0:
            break
    assert codes == [-signal.SIGKILL, -signal.SIGKILL, 0], codes
    ((status, attempts, error),) = rows(db, "SELECT status, attempts, last_error FROM jobs")
    assert (status, attempts) == ("failed", 2)
    assert "lease expired on the last attempt (2 of 2)" in str(error)
    assert "which started the job" in str(error)
    # The queue goes on: good jobs after it are done.
    submit(cfg, make_files(tmp_path, 10))
    assert actors(cfg, "run", "--until-idle", env=env()).returncode == 0
    assert status_counts(db) == {"done": 10, "failed": 1}
