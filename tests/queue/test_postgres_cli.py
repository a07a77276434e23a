"""The command line on PostgreSQL: submit, stats, run and runs show all use [queue].backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pg_helpers import PG_DSN, pg_admin

# Each test runs `python -m actors` several times: 1 to 4 s.
pytestmark = pytest.mark.slow


def actors(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_submits_counts_and_processes_on_postgres(tmp_path: Path, pg_schema: str) -> None:
    pg_admin(f"CREATE SCHEMA {pg_schema}")  # the operator's part: the schema must exist
    config = tmp_path / "actors.toml"
    config.write_text(
        f'[queue]\nbackend = "postgres"\ndsn = "{PG_DSN}?search_path={pg_schema}"\n'
        "poll_interval_seconds = 0.1\n"
        f'[storage]\nroot = "{tmp_path / "objects"}"\n[log]\nlevel = "warning"\n'
    )
    files = []
    for i in range(3):
        files.append(tmp_path / f"note-{i}.txt")
        files[-1].write_text(f"Note {i}. The lamp was lit at dusk. The keeper logged the tide.")
    submitted = actors(config, "submit", *map(str, files))
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    stats = actors(config, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["pending"] == 3
    ran = actors(config, "run", "--until-idle")
    assert ran.returncode == 0, ran.stderr
    assert "3 total, 3 done, 0 failed" in ran.stdout
    shown = actors(config, "runs", "show", run_id, "--json")
    assert json.loads(shown.stdout)["done"] == 3
    # Nothing went to a SQLite file: the jobs are in the test's PostgreSQL schema.
    assert (
        pg_admin(f"SELECT count(*) AS n FROM {pg_schema}.jobs WHERE status = 'done'")[0]["n"] == 3
    )
    assert not (tmp_path / "data").exists()


def test_migrate_status_up_and_down_act_on_postgres_when_it_is_the_backend(
    tmp_path: Path, pg_schema: str
) -> None:
    from actors.queue.postgres.schema import LATEST_VERSION, MIGRATIONS

    pg_admin(f"CREATE SCHEMA {pg_schema}")
    config = tmp_path / "actors.toml"
    config.write_text(f'[queue]\nbackend = "postgres"\ndsn = "{PG_DSN}?search_path={pg_schema}"\n')

    def migrate(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "actors", "--config", str(config), "migrate", *args],
            cwd=tmp_path,  # where a SQLite file (data/actors.db) would appear
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def version() -> int:
        rows = pg_admin(f"SELECT version FROM {pg_schema}.schema_version")
        return int(rows[0]["version"])

    status = migrate("status")
    assert (
        f"search_path={pg_schema}: schema version 0 (this actors knows up to {LATEST_VERSION})"
        in status
    )
    assert f"{MIGRATIONS[-1].name:<12} pending" in status
    every = [m.version for m in MIGRATIONS]  # numbers may skip: each names its own step
    assert migrate("up") == f"applied {every}\n"
    assert version() == LATEST_VERSION
    assert f"schema version {LATEST_VERSION} " in migrate("status")
    assert migrate("down") == f"undid [{LATEST_VERSION}]\n"
    assert version() == every[-2]
    assert migrate("up") == f"applied [{LATEST_VERSION}]\n"
    assert not (tmp_path / "data").exists()  # no SQLite file was made or migrated


def test_commands_that_only_read_create_no_queue_in_an_empty_schema(
    tmp_path: Path, pg_schema: str
) -> None:
    pg_admin(f"CREATE SCHEMA {pg_schema}")
    config = tmp_path / "actors.toml"
    config.write_text(f'[queue]\nbackend = "postgres"\ndsn = "{PG_DSN}?search_path={pg_schema}"\n')
    for argv in (["stats"], ["jobs", "list"], ["runs", "list"]):
        done = actors(config, *argv)
        assert done.returncode == 1
        assert done.stderr.startswith("error: no queue at postgresql://"), done.stderr
        assert f"search_path={pg_schema}: the schema holds none; check" in done.stderr
        assert done.stderr.count("\n") == 1
    tables = pg_admin("SELECT count(*) FROM pg_tables WHERE schemaname = $1", pg_schema)
    assert tables[0][0] == 0


def test_config_check_reaches_the_postgres_queue_and_reads_its_schema_changing_nothing(
    tmp_path: Path, pg_schema: str
) -> None:
    from actors.queue.postgres.schema import LATEST_VERSION

    pg_admin(f"CREATE SCHEMA {pg_schema}")
    config = tmp_path / "actors.toml"
    config.write_text(f'[queue]\nbackend = "postgres"\ndsn = "{PG_DSN}?search_path={pg_schema}"\n')
    done = actors(config, "config", "check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(f"search_path={pg_schema}: no queue yet (`run` creates it)\n")
    tables = pg_admin("SELECT count(*) FROM pg_tables WHERE schemaname = $1", pg_schema)
    assert tables[0][0] == 0  # checked, not created

    assert actors(config, "migrate", "up").returncode == 0
    done = actors(config, "config", "check")
    assert done.stdout.endswith(f": schema {LATEST_VERSION}\n"), done.stdout + done.stderr

    # A schema written by a newer actors: one line, exit 1.
    pg_admin(f"INSERT INTO {pg_schema}.schema_version (version) VALUES ({LATEST_VERSION + 1})")
    done = actors(config, "config", "check")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"has schema version {LATEST_VERSION + 1}, but this version of actors" in done.stderr


def test_config_check_reports_an_unreachable_postgres_and_each_other_problem_on_its_own_line(
    tmp_path: Path,
) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = tmp_path / "actors.toml"
    config.write_text(
        f'[queue]\nbackend = "postgres"\ndsn = "postgresql://postgres@127.0.0.1:{port}/x"\n'
        '[processor]\nkind = "gemini"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "actors", "--config", str(config), "config", "check"],
        capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if k != "GOOGLE_API_KEY"},
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("error: ") and "GOOGLE_API_KEY" in lines[0]
    assert lines[1].startswith(
        f"error: cannot connect to PostgreSQL at postgresql://127.0.0.1:{port}/"
    )
    assert "Check [queue].dsn, that the server runs" in lines[1]
    assert done.stdout == ""
