"""The PostgreSQL backend's SQL files: each one is read, well formed, and shipped by a build."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

from actors.queue._rows import COLUMNS
from actors.queue.postgres import _sql, schema

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = resources.files("actors.queue.postgres")
STATEMENTS = sorted(f.name for f in (PACKAGE / "sql").iterdir() if f.name.endswith(".sql"))
MIGRATIONS = sorted(f.name for f in (PACKAGE / "migrations").iterdir() if f.name.endswith(".sql"))

# The job's columns in `job_from_row`'s order, as every statement that returns jobs lists them.
JOB_COLUMNS = ", ".join(f"j.{column.strip()}" for column in COLUMNS.split(","))


def words(sql: str) -> str:
    return " ".join(re.sub(r"--[^\n]*", "", sql).split())


def test_every_statement_file_is_read_at_import_under_its_own_name() -> None:
    read = {name: value for name, value in vars(_sql).items() if name.isupper()}
    for file in STATEMENTS:
        name = file.removesuffix(".sql").upper()
        assert read.get(name) == (PACKAGE / "sql" / file).read_text(encoding="utf-8"), file
    assert len(STATEMENTS) > 30


def test_every_migration_file_is_a_numbered_step_both_ways() -> None:
    assert [f"{m.version:04d}_{m.name}.sql" for m in schema.MIGRATIONS] == MIGRATIONS
    assert int(MIGRATIONS[-1][:4]) == schema.LATEST_VERSION
    for migration in schema.MIGRATIONS:
        assert migration.up and migration.down, migration.name
        for statement in (*migration.up, *migration.down):
            assert words(statement) and not words(statement).endswith(";"), statement
    assert {m.version: m.drops for m in schema.MIGRATIONS if m.drops} == {
        1: ("jobs",),
        2: ("runs",),
        9: ("schedules",),
        8: ("queue_controls",),
    }


def test_statements_that_return_jobs_list_the_columns_in_decoding_order() -> None:
    returning = 0
    for file in STATEMENTS:
        text = words((PACKAGE / "sql" / file).read_text(encoding="utf-8"))
        if "j.id, j.run_id, j.tenant_id, j.r2_key" in text:
            assert JOB_COLUMNS in text, file
            returning += 1
    assert returning >= 10


def test_the_shard_count_and_the_empty_runs_bound_match_the_code() -> None:
    slots: set[str] = set()
    for file in STATEMENTS:
        slots |= set(
            re.findall(r"pg_backend_pid\(\) % (\d+)", (PACKAGE / "sql" / file).read_text())
        )
    assert slots == {str(_sql.SHARDS)}
    assert str(_sql.NO_ID) in _sql.LIST_JOBS
    assert schema.NO_ID == _sql.NO_ID


def test_a_build_ships_every_sql_file(tmp_path: Path) -> None:
    # setuptools' build_py copies what a wheel holds (modules and package data) into build_lib.
    # Only the declared package data: files a manifest happens to pick up do not count.
    build = """
import sys
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

dist = apply_configuration(Distribution({"script_name": "setup.py"}), "pyproject.toml")
dist.include_package_data = False
dist.get_command_obj("egg_info").egg_base = sys.argv[2]
dist.get_command_obj("build_py").build_lib = sys.argv[1]
dist.run_command("build_py")
"""
    subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "lib"), str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    shipped = tmp_path / "lib" / "actors" / "queue" / "postgres"
    assert sorted(p.name for p in (shipped / "sql").glob("*.sql")) == STATEMENTS
    assert sorted(p.name for p in (shipped / "migrations").glob("*.sql")) == MIGRATIONS


def test_the_enqueue_guard_fails_with_the_message_the_queue_recognises() -> None:
    from actors.queue.postgres._queue import _TENANT_GUARD

    assert f"'{_TENANT_GUARD}'" in _sql.ENQUEUE
    assert f"'{_TENANT_GUARD}'" in _sql.ENQUEUE_KEYED


def test_the_filtered_run_states_are_the_run_state_query_with_a_filter() -> None:
    # runs.sql writes run_state.sql's query out (a statement is never assembled from pieces).
    assert words(_sql.RUN_STATE) in words(_sql.RUNS)
