"""``python -m actors store import``: the real command, killed mid-import and run again to the end,
then compared and rolled back, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from cloudflare_dumps import d1_rows, d1_sql, kv_bulk
from pg_helpers import PG_DSN, pg_admin, pg_runs

# Each test runs the real command several times and kills it once: 3 to 10 s.
pytestmark = pytest.mark.slow

ROWS = 2000


class Store:
    """The queue the command imports into, and how to read it from outside."""

    def __init__(self, backend: str, tmp_path: Path, schema: str | None) -> None:
        self.backend = backend
        self.db = tmp_path / "queue.db"
        self.schema = schema
        self.config = tmp_path / "actors.toml"
        if backend == "postgres":
            self.config.write_text(
                f'[queue]\nbackend = "postgres"\ndsn = "{PG_DSN}?search_path={schema}"\n'
                '[log]\nlevel = "warning"\n'
            )
        else:
            self.config.write_text(f'[queue]\npath = "{self.db}"\n[log]\nlevel = "warning"\n')

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "actors", "--config", str(self.config), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=300, check=False
        )

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        if self.backend == "postgres":
            try:
                return [tuple(r) for r in pg_admin(sql.replace(" jobs", f" {self.schema}.jobs"))]
            except asyncpg.UndefinedTableError:  # no queue yet
                return []
        if not self.db.exists():
            return []
        conn = sqlite3.connect(self.db.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # no table yet
            return []
        finally:
            conn.close()

    def runs(self) -> dict[str, tuple[int, int, int, int]]:
        """Each run's stored counts (pending, leased, done, failed), as the queue reads them."""
        if self.backend == "postgres":
            assert self.schema is not None
            return {
                r["run_id"]: (r["pending"], r["leased"], r["done"], r["failed"])
                for r in pg_runs(self.schema)
            }
        found = self.rows("SELECT run_id, pending, leased, done, failed FROM runs")
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in found}  # type: ignore[call-overload]

    def count(self) -> int:
        found = self.rows("SELECT count(*) FROM jobs")
        return int(found[0][0]) if found else 0  # type: ignore[call-overload]


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    schema = request.getfixturevalue("pg_schema") if backend == "postgres" else None
    if schema is not None:
        pg_admin(f"CREATE SCHEMA {schema}")
    return Store(backend, tmp_path, schema)


def test_an_import_killed_midway_resumes_to_completion_with_nothing_lost_or_twice(
    store: Store, tmp_path: Path
) -> None:
    rows = d1_rows(ROWS, seed=5)
    dump = tmp_path / "jobs.sql"
    dump.write_text(d1_sql(rows), encoding="utf-8")
    # One row per transaction: slow enough to be killed in the middle.
    child = subprocess.Popen(
        store.command("store", "import", "--from-d1", str(dump), "--batch", "1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while store.count() < 100:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the import wrote nothing in two minutes"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        if child.stderr:
            child.stderr.close()
    before = store.count()
    assert 100 <= before < ROWS, "the import was not stopped midway"

    status = store.run("store", "import", "--from-d1", str(dump), "status", "--json")
    assert status.returncode == 1, status.stderr  # incomplete
    found = json.loads(status.stdout)
    assert (found["imported"], found["missing"], found["complete"]) == (
        before,
        ROWS - before,
        False,
    )

    again = store.run("store", "import", "--from-d1", str(dump), "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["migrated"], report["imported"], report["failed"]) == (ROWS - before, before, 0)
    assert report["complete"] and report["droppedLeases"] == sum(
        r["status"] == "leased" for r in rows
    )

    # Nothing lost, nothing twice; the runs' counts are exact.
    origins = [r[0] for r in store.rows("SELECT origin FROM jobs")]
    assert len(origins) == len(set(origins)) == ROWS
    assert set(origins) == {f"d1:{r['id']}" for r in rows}
    want: Counter[tuple[str, str]] = Counter(
        (r["run_id"], "pending" if r["status"] == "leased" else r["status"]) for r in rows
    )
    have = Counter(
        {
            (run, status): n
            for run, status, n in store.rows(
                "SELECT run_id, status, count(*) FROM jobs GROUP BY run_id, status"
            )
        }
    )
    assert have == want
    runs = store.runs()
    assert set(runs) == {r["run_id"] for r in rows}
    for run_id, counts in runs.items():
        assert counts == (
            want[(run_id, "pending")],
            0,
            want[(run_id, "done")],
            want[(run_id, "failed")],
        )
    shown = store.run("runs", "show", rows[0]["run_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["total"] == sum(runs[rows[0]["run_id"]])
    done = store.run("store", "import", "--from-d1", str(dump), "status")
    assert done.returncode == 0, done.stderr
    assert f"{ROWS} imported as the dump has them, 0 not imported yet" in done.stdout


def test_the_cli_reports_malformed_items_and_rolls_back_all_but_what_changed(
    store: Store, tmp_path: Path
) -> None:
    dump = kv_bulk(60)
    dump.put("queue:task:req_broken", "{not json")
    path = tmp_path / "kv.json"
    path.write_text(dump.text(), encoding="utf-8")
    ran = store.run("store", "import", "--from-kv", str(path), "--tenant-id", "ops")
    assert ran.returncode == 1  # one item failed: reported, the rest imported
    assert "error: kv:req_broken: queue:task:req_broken: its value is not JSON" in ran.stderr
    assert f"{len(dump.expected)} job(s) imported and verified" in ran.stdout
    listed = store.run("jobs", "list", "--json", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)["items"]
    assert {j["origin"] for j in jobs} == set(dump.expected)
    # A worker's progress since the import is kept by a rollback; the rest goes.
    changed = jobs[0]
    assert store.run("jobs", "requeue", "--all").returncode == 0  # failed ones: changed now
    requeued = {j["origin"] for j in jobs if j["status"] == "failed"}
    rolled = store.run("store", "import", "--from-kv", str(path), "rollback", "--tenant-id", "ops")
    assert rolled.returncode == 1
    assert f"{len(dump.expected) - len(requeued)} imported job(s) removed" in rolled.stdout
    assert f"{len(requeued)} kept because they changed since the import" in rolled.stdout
    assert store.count() == len(requeued) > 0
    forced = store.run(
        "store", "import", "--from-kv", str(path), "rollback", "--force", "--tenant-id", "ops"
    )
    assert forced.returncode == 0, forced.stderr
    assert store.count() == 0
    assert changed["origin"] in dump.expected
