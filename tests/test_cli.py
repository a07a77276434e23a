"""The command line: enqueue, stats, jobs, runs and migrate, against a file given by --db."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors.cli import duration, main


def run(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--db", str(db), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_enqueue_prints_the_job_as_json_and_stats_count_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    code, out, _ = run(
        capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "a.pdf",
        "--payload", '{"lang": "en"}', "--idempotency-key", "k",
    )  # fmt: skip
    job = json.loads(out)
    assert (code, job["status"], job["payload"]) == (0, "pending", {"lang": "en"})
    run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "a.pdf",
        "--idempotency-key", "k")  # fmt: skip
    code, out, _ = run(capsys, db, "stats", "--json")
    assert json.loads(out)["pending"] == 1
    code, out, _ = run(capsys, db, "stats")
    assert "pending           1" in out


def test_jobs_list_show_requeue_and_purge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    for key in ("a", "b", "c"):
        run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", key)
    code, out, _ = run(capsys, db, "jobs", "list", "--limit", "2")
    assert code == 0 and "more: --cursor 2" in out
    code, out, _ = run(capsys, db, "jobs", "list", "--json", "--cursor", "2")
    assert [j["r2_key"] for j in json.loads(out)["items"]] == ["c"]
    code, out, _ = run(capsys, db, "jobs", "show", "2")
    assert json.loads(out)["r2_key"] == "b"
    assert run(capsys, db, "jobs", "requeue", "--all")[1] == "requeued 0 failed job(s)\n"
    assert run(capsys, db, "jobs", "purge", "--older-than", "7d")[1] == "purged 0 finished job(s)\n"
    code, out, _ = run(capsys, db, "runs", "show", "r")
    assert code == 0 and "3" in out  # a human format, free to change
    assert "queued" in run(capsys, db, "runs", "list")[1]


def test_errors_go_to_stderr_with_a_nonzero_exit_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    code, out, err = run(capsys, db, "jobs", "show", "99")
    assert (code, out) == (1, "")
    assert err.startswith("error: job 99 does not exist") and "Traceback" not in err
    code, _, err = run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key",
                       "k", "--payload", "{oops")  # fmt: skip
    assert code == 1 and "--payload is not valid JSON" in err
    code, _, err = run(capsys, db, "jobs", "requeue")
    assert code == 1 and "name the jobs to requeue" in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from actors.errors import JobNotFound

    with pytest.raises(JobNotFound):
        main(["--db", str(tmp_path / "q.db"), "--debug", "jobs", "show", "1"])


def test_migrate_status_down_and_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "q.db"
    code, out, _ = run(capsys, db, "migrate", "status")
    assert "schema version 0" in out
    assert run(capsys, db, "migrate", "up")[1] == "applied [1, 2, 3, 4]\n"
    run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "k")
    assert run(capsys, db, "migrate", "down")[1] == "undid [4]\n"  # the jobs stay
    assert run(capsys, db, "migrate", "down")[1] == "undid [3]\n"  # only derived counts go
    code, _, err = run(capsys, db, "migrate", "down")
    assert code == 1 and "would delete 1 rows in runs" in err and "--force" in err
    assert run(capsys, db, "migrate", "down", "--force")[1] == "undid [2]\n"
    assert "schema version 1" in run(capsys, db, "migrate", "status")[1]
    assert run(capsys, db, "migrate", "up")[1] == "applied [2, 3, 4]\n"


def test_durations_accept_units() -> None:
    assert [duration(t) for t in ("90", "90s", "2m", "1.5h", "7d")] == [90, 90, 120, 5400, 604800]


def test_python_dash_m_actors_runs_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actors", "--db", str(tmp_path / "q.db"), "jobs", "show", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: job 5 does not exist")
