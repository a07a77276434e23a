"""Clients written to the two Cloudflare designs, unmodified, against `python -m actors run`.

``cloudflare_clients/d1_client.py`` speaks the D1 jobs worker's requests (the seed's
verification flow: an upload through Turnstile, the PUT, the stats; and the Python agent's
enqueue, pull and ack by string ids); ``cloudflare_clients/kv_client.py`` is a worker of the KV
task API (X-API-Key, claim, status, renew, release, result). Each runs as its own process
against a real server process, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_siteverify import SECRET, fake_siteverify
from http_helpers import ADMIN, auth, env, serving, worker_config

pytestmark = pytest.mark.slow

CLIENTS = Path(__file__).parent / "cloudflare_clients"
JWT_SECRET = "seed-jwt-secret-0123456789"
QUEUE_KEY = "kv-queue-key-0123456789"
ADMIN_KEY = "kv-admin-key-0123456789"
PG_DSN = os.environ.get("ACTORS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def pg(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgres"])
def queue_table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The server's [queue] table on each backend (a new PostgreSQL schema, dropped after)."""
    # One attempt: the agent's failed ack is final, so no retry of it reaches the KV workers.
    common = (
        "visibility_seconds = 30\npoll_interval_seconds = 0.1\nreap_interval_seconds = 0.5\n"
        "max_attempts = 1\n"
    )
    if request.param == "sqlite":
        yield f'[queue]\npath = "{tmp_path / "q.db"}"\n{common}'
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        pg(f"CREATE SCHEMA {schema}")
    except Exception as exc:  # any failure to reach the server
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN}: {exc}")
    yield f'[queue]\nbackend = "postgres"\ndsn = "{PG_DSN}?search_path={schema}"\n{common}'
    pg(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def server_config(tmp_path: Path, queue: str, http: str = "") -> Path:
    path = tmp_path / "server.toml"
    path.write_text(
        f"""{queue}
[storage]
root = "{tmp_path / "objects"}"
[http]
enabled = true
port = 0
queue_only = true
{http}
[log]
level = "info"
format = "json"
"""
    )
    return path


def client(script: str, *args: str, **extra_env: str) -> dict[str, Any]:
    """Run one of the clients to the end; its one JSON line."""
    done = subprocess.run(
        [sys.executable, str(CLIENTS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(**extra_env),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_the_seeds_verification_flow_with_turnstile_and_a_worker(
    tmp_path: Path, queue_table: str
) -> None:
    document = tmp_path / "harbour.txt"
    document.write_text("Harbour traffic rose in spring. Ferries ran late twice.\n")
    http = 'turnstile_tenants = ["t1"]'
    with (
        fake_siteverify() as siteverify,
        serving(
            server_config(tmp_path, queue_table, http),
            tmp_path / "server.log",
            JWT_SECRET=JWT_SECRET,
            TURNSTILE_SECRET=SECRET,
            TURNSTILE_VERIFY_URL=siteverify.url,
        ) as (url, _),
    ):
        seed = {"EDGE_API_TOKEN": JWT_SECRET}
        uploaded = client("d1_client.py", url, "upload", str(document), "t1", "good", **seed)
        assert uploaded["put"] == 201 and uploaded["r2Key"].startswith("t1/")
        assert [r["response"] for r in siteverify.requests] == ["good"]
        stats = client("d1_client.py", url, "stats", **seed)["stats"]
        assert (stats["pending"], stats["leased"], stats["done"]) == (1, 0, 0)

        worker = subprocess.run(
            [
                sys.executable,
                "-m",
                "actors",
                "--config",
                str(worker_config(tmp_path, url)),
                "run",
                "--until-idle",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env(EDGE_API_TOKEN=JWT_SECRET),
            check=False,
        )
        assert worker.returncode == 0, worker.stderr
        stats = client("d1_client.py", url, "stats", **seed)["stats"]
        assert (stats["pending"], stats["leased"], stats["done"], stats["failed"]) == (0, 0, 1, 0)

        # A used token is refused, and nothing more is created.
        refused = subprocess.run(
            [
                sys.executable,
                str(CLIENTS / "d1_client.py"),
                url,
                "upload",
                str(document),
                "t1",
                "used",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env(),
            check=False,
        )
        assert (
            refused.returncode == 1
            and "403" in refused.stderr
            and "turnstile_failed" in refused.stderr
        )


def test_a_d1_agent_and_two_kv_workers_run_their_whole_flows(
    tmp_path: Path, queue_table: str
) -> None:
    with serving(
        server_config(tmp_path, queue_table),
        tmp_path / "server.log",
        JWT_SECRET=JWT_SECRET,
        QUEUE_API_KEY=QUEUE_KEY,
        ADMIN_API_KEY=ADMIN_KEY,
    ) as (url, _):
        agent = client("d1_client.py", url, "agent", "t1", "5", EDGE_API_TOKEN=JWT_SECRET)
        assert len(agent["done"]) == 4

        # KV tasks, as the orchestrator wrote them, enqueued as jobs (payload: the task).
        admin = httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=30)
        tasks = [
            {
                "runId": "kv",
                "tenantId": "t2",
                "r2Key": f"t2/kv/{i}.json",
                "payload": {"type": "task", "source": "cli", "content": f"task number {i}"},
            }
            for i in range(20)
        ]
        assert admin.post("/jobs/enqueue-many", json={"jobs": tasks}).status_code == 200
        workers = [
            subprocess.Popen(
                [sys.executable, str(CLIENTS / "kv_client.py"), url, f"kv-worker-{n}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env(QUEUE_API_KEY=QUEUE_KEY),
            )
            for n in range(2)
        ]
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, out + err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        completed = [task for report in reports for task in report["completed"]]
        assert len(completed) == len(set(completed)) == 20  # each task completed exactly once

        jobs = admin.get("/jobs", params={"runId": "kv", "limit": 100}).json()["jobs"]
        assert sorted(str(j["id"]) for j in jobs) == sorted(completed)
        by_id = {str(j["id"]): j for j in jobs}
        for report in reports:
            for task in report["completed"]:
                job = by_id[task]
                assert job["status"] == "done" and job["workerId"] == report["worker"]
                assert job["result"]["success"] is True
        # A released task was claimed again (by someone) and completed; it spent no attempt.
        for report in reports:
            assert by_id[report["released"]]["attempts"] == 1
        stats = httpx.get(f"{url}/jobs/stats", headers=auth(ADMIN), timeout=30).json()["stats"]
        assert (stats["done"], stats["failed"], stats["leased"], stats["pending"]) == (24, 1, 0, 0)
