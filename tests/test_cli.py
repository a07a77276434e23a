"""The command line: enqueue, stats, jobs, runs and migrate, against a file given by --db."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from actors.cli import main
from actors.cli._jobs import duration


def run(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--db", str(db), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_enqueue_prints_the_job_as_json_and_stats_count_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    code, out, _ = run(
        capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "t/r/a.pdf",
        "--payload", '{"lang": "en"}', "--idempotency-key", "k",
    )  # fmt: skip
    job = json.loads(out)
    assert (code, job["status"], job["payload"]) == (0, "pending", {"lang": "en"})
    run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "t/r/a.pdf",
        "--idempotency-key", "k")  # fmt: skip
    code, out, _ = run(capsys, db, "stats", "--json")
    assert json.loads(out)["pending"] == 1
    code, out, _ = run(capsys, db, "stats")
    assert "pending           1" in out


def test_stats_count_a_delayed_job_as_scheduled_and_not_as_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "t/r/a",
        "--delay", "3600")  # fmt: skip
    code, out, _ = run(capsys, db, "stats", "--json")
    stats = json.loads(out)
    assert (code, stats["pending"], stats["scheduled"], stats["total"]) == (0, 1, 1, 1)
    assert stats["oldest_pending_age_seconds"] is None
    code, out, _ = run(capsys, db, "stats")
    assert "pending           1" in out
    assert "1 of the pending jobs are scheduled for later" in out
    assert "no job is available to lease now" in out


def test_jobs_list_show_requeue_and_purge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    for key in ("t/r/a", "t/r/b", "t/r/c"):
        run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", key)
    code, out, _ = run(capsys, db, "jobs", "list", "--limit", "2")
    assert code == 0 and "more: --cursor 2" in out
    code, out, _ = run(capsys, db, "jobs", "list", "--json", "--cursor", "2")
    assert [j["r2_key"] for j in json.loads(out)["items"]] == ["t/r/c"]
    code, out, _ = run(capsys, db, "jobs", "show", "2")
    assert json.loads(out)["r2_key"] == "t/r/b"
    assert run(capsys, db, "jobs", "requeue", "--all")[1] == "requeued 0 failed job(s)\n"
    assert run(capsys, db, "jobs", "purge", "--older-than", "7d")[1] == "purged 0 finished job(s)\n"
    code, out, _ = run(capsys, db, "runs", "show", "r")
    assert code == 0 and "3" in out  # a human format, free to change
    assert "queued" in run(capsys, db, "runs", "list")[1]


def test_errors_go_to_stderr_with_a_nonzero_exit_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    run(capsys, db, "migrate", "up")
    code, out, err = run(capsys, db, "jobs", "show", "99")
    assert (code, out) == (1, "")
    assert err.startswith("error: job 99 does not exist") and "Traceback" not in err
    code, _, err = run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key",
                       "t/r/k", "--payload", "{oops")  # fmt: skip
    assert code == 1 and "--payload is not valid JSON" in err
    code, _, err = run(capsys, db, "jobs", "requeue")
    assert code == 1 and "name the jobs to requeue" in err


def test_enqueue_refuses_a_key_outside_the_tenant_unless_the_operator_allows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    code, out, err = run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "acme",
                         "--r2-key", "t1/r/secret.pdf")  # fmt: skip
    assert (code, out) == (1, "")
    assert "outside the job's tenant prefix 'acme/'" in err and "--cross-tenant-key" in err
    code, _, err = run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "a/b",
                       "--r2-key", "a/b/r/x.pdf")  # fmt: skip
    assert code == 1 and "cannot contain '/'" in err
    code, out, _ = run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "acme",
                       "--r2-key", "t1/r/secret.pdf", "--cross-tenant-key")  # fmt: skip
    assert code == 0 and json.loads(out)["cross_tenant_key"] is True
    assert json.loads(run(capsys, db, "stats", "--json")[1])["pending"] == 1


def test_submit_refuses_a_tenant_id_with_a_slash_before_storing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "actors.toml"
    config.write_text(f'[storage]\nroot = "{tmp_path / "objects"}"\n')
    (tmp_path / "a.txt").write_text("hello")
    code = main(["--config", str(config), "--db", str(tmp_path / "q.db"), "submit",
                 str(tmp_path / "a.txt"), "--tenant-id", "acme/../t1"])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 1 and "cannot contain '/'" in err
    assert not (tmp_path / "objects").exists() and not (tmp_path / "q.db").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from actors.errors import JobNotFound

    main(["--db", str(tmp_path / "q.db"), "migrate", "up"])
    with pytest.raises(JobNotFound):
        main(["--db", str(tmp_path / "q.db"), "--debug", "jobs", "show", "1"])


def test_jobs_cancel_cancels_by_id_or_run_and_says_what_it_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    for key in ("a", "b", "c"):
        run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", f"t/r/{key}")
    code, out, _ = run(capsys, db, "jobs", "cancel", "1")
    assert code == 0 and out.splitlines()[1].split() == ["1", "cancelled"]
    code, out, _ = run(capsys, db, "jobs", "cancel", "1", "--json")
    assert code == 0 and json.loads(out)[0]["reason"] == "duplicate"
    code, out, err = run(capsys, db, "jobs", "cancel", "2", "99")
    assert code == 1 and "job 99 does not exist" in err  # the other one was cancelled
    code, out, _ = run(capsys, db, "jobs", "cancel", "--run", "r")
    assert code == 0 and out.startswith("run r: cancelled 1 pending job(s); 0 leased")
    code, _, err = run(capsys, db, "jobs", "cancel")
    assert code == 1 and "IDs, or --run RUN" in err
    code, out, _ = run(capsys, db, "stats")
    assert "cancelled         3" in out
    code, out, _ = run(capsys, db, "jobs", "list", "--status", "cancelled")
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["cancelled"] * 3
    assert json.loads(run(capsys, db, "runs", "show", "r", "--json")[1])["status"] == "cancelled"


def test_migrate_status_down_and_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from actors.queue.sqlite.schema import MIGRATIONS

    db = tmp_path / "q.db"
    assert run(capsys, db, "migrate", "up", "--to", "0")[1] == "nothing to apply\n"
    code, out, _ = run(capsys, db, "migrate", "status")
    assert "schema version 0" in out
    versions = [m.version for m in MIGRATIONS]  # numbers may skip: each names its own step
    assert run(capsys, db, "migrate", "up")[1] == f"applied {versions}\n"
    run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "t/r/k")
    run(capsys, db, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "t/r/gone")
    code, out, _ = run(capsys, db, "jobs", "cancel", "2")
    assert code == 0 and "cancelled" in out
    # One step down at a time: down to 3 each drops no row (a schedule, origins, the jobs stay
    # through 4's rebuild, 3's derived counts), then 2 would drop the run.
    for version in reversed(versions[2:]):
        assert run(capsys, db, "migrate", "down")[1] == f"undid [{version}]\n"
        if version == 6:
            # Version 5 knows no `cancelled`: the cancelled job becomes a failed one saying so.
            with sqlite3.connect(db) as conn:
                row = conn.execute("SELECT status, last_error FROM jobs WHERE id = 2").fetchone()
                assert row == ("failed", "cancelled")
                assert conn.execute("SELECT pending, failed FROM runs").fetchone() == (1, 1)
    code, _, err = run(capsys, db, "migrate", "down")
    assert code == 1 and "would delete 1 rows in runs" in err and "--force" in err
    assert run(capsys, db, "migrate", "down", "--force")[1] == "undid [2]\n"
    assert "schema version 1" in run(capsys, db, "migrate", "status")[1]
    assert run(capsys, db, "migrate", "up")[1] == f"applied {versions[1:]}\n"


def test_durations_accept_units() -> None:
    assert [duration(t) for t in ("90", "90s", "2m", "1.5h", "7d")] == [90, 90, 120, 5400, 604800]


def test_the_parser_loads_no_module_that_only_some_commands_need() -> None:
    # `--help` and the light commands start fast: each command imports its heavy modules itself.
    lazy = [
        "asyncpg",
        "actors.cli._results",
        "actors.http",
        "actors.processors._gemini",
        "actors.queue.migrate",
        "actors.queue.postgres",
        "actors.service",
    ]
    code = (
        "import sys\n"
        "from actors.cli._parser import build_parser\n"
        "build_parser()\n"
        f"print([m for m in {lazy!r} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_python_dash_m_actors_runs_the_cli(tmp_path: Path) -> None:
    main(["--db", str(tmp_path / "q.db"), "migrate", "up"])
    done = subprocess.run(
        [sys.executable, "-m", "actors", "--db", str(tmp_path / "q.db"), "jobs", "show", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: job 5 does not exist")


# --- through `python -m actors` in a process of its own -----------------------------------------


def actors(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in ``cwd`` with a config that keeps the queue and the objects there."""
    config = cwd / "actors.toml"
    if not config.exists():
        config.write_text(
            f'[queue]\npath = "{cwd / "q.db"}"\n[storage]\nroot = "{cwd / "objects"}"\n'
            '[log]\nlevel = "warning"\n'
        )
    return subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(config), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def listed_keys(cwd: Path) -> list[str]:
    listing = actors(cwd, "jobs", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    return [job["r2_key"] for job in json.loads(listing.stdout)["items"]]


def test_submit_stores_files_that_share_a_base_name_as_objects_of_their_own(
    tmp_path: Path,
) -> None:
    for folder, text in (("a", "alpha"), ("b", "beta"), ("b/c", "gamma")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "report.txt").write_text(text)
    (tmp_path / "notes.txt").write_text("notes")
    done = actors(
        tmp_path, "submit", "--run-id", "r1", "a/report.txt", "b/report.txt",
        "b/c/report.txt", "notes.txt",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "submitted 4 file(s)" in done.stderr
    keys = listed_keys(tmp_path)
    # A unique base name stays the name; clashing ones keep as much of the path as differs.
    assert sorted(keys) == [
        "default/r1/a/report.txt", "default/r1/b/report.txt", "default/r1/c/report.txt",
        "default/r1/notes.txt",
    ]  # fmt: skip
    objects = tmp_path / "objects"
    assert [(objects / k).read_text() for k in sorted(keys)] == ["alpha", "beta", "gamma", "notes"]


def test_submit_stores_a_file_given_twice_once_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "report.txt").write_text("alpha")
    done = actors(tmp_path, "submit", "--run-id", "r1", "a/report.txt", "./a/../a/report.txt")
    assert done.returncode == 0, done.stderr
    assert "submitted 1 file(s)" in done.stderr
    assert "note: a/../a/report.txt repeats a file given before; submitted once" in done.stderr
    assert listed_keys(tmp_path) == ["default/r1/report.txt"]


@pytest.mark.parametrize(
    "argv",
    [
        ["stats"],
        ["jobs", "list"],
        ["jobs", "show", "1"],
        ["jobs", "purge", "--older-than", "7d"],
        ["runs", "list"],
        ["runs", "show", "r"],
        ["runs", "watch", "r"],
        ["migrate", "status"],
        ["migrate", "down"],
    ],
    ids=" ".join,
)
def test_commands_that_only_read_say_a_mistyped_database_does_not_exist(
    tmp_path: Path, argv: list[str]
) -> None:
    typo = tmp_path / "sub" / "qeue.db"
    done = subprocess.run(
        [sys.executable, "-m", "actors", "--db", str(typo), *argv],
        cwd=tmp_path,  # no config file here: the embedded defaults
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: the queue database '{typo}' does not exist; check --db")
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no file, no directory


def test_store_migrate_status_creates_neither_store(tmp_path: Path) -> None:
    typo, target = tmp_path / "qeue.db", tmp_path / "new.db"
    done = actors(tmp_path, "store", "migrate", "status", "--from", str(typo), "--to", str(target))
    assert (done.returncode, done.stderr) == (1, f"error: {typo} does not exist (no such file)\n")
    assert not typo.exists() and not target.exists()


@pytest.mark.parametrize(
    "argv",
    [["stats"], ["jobs", "list"], ["jobs", "show", "1"], ["runs", "list"], ["runs", "show", "r"]],
    ids=" ".join,
)
def test_commands_that_only_read_leave_a_sqlite_file_that_holds_no_queue_untouched(
    tmp_path: Path, argv: list[str]
) -> None:
    # A mistyped --db that names another application's database (or an empty file) is not a
    # queue: reading it must not add the queue's tables to it and report zero jobs.
    other = tmp_path / "app.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "actors", "--db", str(other), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith(f"error: '{other}' holds no queue"), done.stderr
    assert done.stdout == ""
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sqlite"]  # no -wal, no -shm


@pytest.mark.slow  # a whole submit and run in real processes
def test_a_run_id_with_a_slash_is_processed_without_crashing_an_actor(tmp_path: Path) -> None:
    # Any client may name its run "a/b" (the HTTP API and `enqueue` accept it); the run's room
    # is a supervised child whose id cannot hold '/', and naming it so crashed the lease
    # manager and the ack reporter on every batch that touched such a run.
    (tmp_path / "objects" / "t" / "r").mkdir(parents=True)
    for n in range(3):
        (tmp_path / "objects" / "t" / "r" / f"{n}.txt").write_text(f"document {n}")
        done = actors(
            tmp_path, "enqueue", "--run-id", f"team/{n}%2F", "--tenant-id", "t",
            "--r2-key", f"t/r/{n}.txt",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    done = actors(tmp_path, "run", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert "child_crashed" not in done.stderr + done.stdout
    listing = actors(tmp_path, "jobs", "list", "--json")
    assert [job["status"] for job in json.loads(listing.stdout)["items"]] == ["done"] * 3


def test_schedules_add_list_and_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "q.db"
    code, out, _ = run(
        capsys, db, "schedules", "add", "nightly", "--tenant-id", "acme", "--r2-key",
        "acme/daily.md", "--cron", "30 2 * * *", "--timezone", "Europe/Berlin",
        "--payload", '{"kind": "report"}', "--missed", "skip",
    )  # fmt: skip
    assert code == 0
    added = json.loads(out)
    assert (added["name"], added["cron"], added["missed"]) == ("nightly", "30 2 * * *", "skip")
    assert added["payload"] == {"kind": "report"}
    run(capsys, db, "schedules", "add", "tick", "--tenant-id", "acme", "--r2-key", "acme/t",
        "--every", "60")  # fmt: skip
    code, out, _ = run(capsys, db, "schedules", "list")
    header, *rows = out.splitlines()
    assert header.split() == ["tenant", "name", "when", "zone", "missed", "next", "last"]
    assert [row.split()[1] for row in rows] == ["nightly", "tick"] and "every 60s" in rows[1]
    # One clear line for each mistake, and nothing added.
    for argv, says in [
        (("--cron", "61 * * * *"), "cron '61 * * * *' is not a cron expression: Bad minute"),
        (("--cron", "* * * * *", "--timezone", "Nowhere/Land"), "is not a time zone"),
        (("--every", "60", "--r2-key", "t1/secret"), "outside the job's tenant prefix 'acme/'"),
    ]:
        code, _, err = run(capsys, db, "schedules", "add", "bad", "--tenant-id", "acme",
                           "--r2-key", "acme/x", *argv)  # fmt: skip
        assert code == 1 and says in err and len(err.splitlines()) == 1, err
    code, out, _ = run(capsys, db, "schedules", "delete", "tick", "--tenant-id", "acme")
    assert code == 0 and json.loads(out)["interval_seconds"] == 60
    code, _, err = run(capsys, db, "schedules", "delete", "tick", "--tenant-id", "acme")
    assert code == 1 and "schedule 'tick' of tenant 'acme' does not exist" in err
    code, out, _ = run(capsys, db, "schedules", "list", "--json")
    assert [s["name"] for s in json.loads(out)] == ["nightly"]
