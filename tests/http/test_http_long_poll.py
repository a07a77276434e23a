"""Long-poll pulls over real HTTP: a `POST /jobs/pull` with ``waitSeconds`` waits at the server
(SQLite and PostgreSQL) until another process enqueues, answers empty when its time is up or the
server stops, is bounded, and is what an idle remote worker does instead of polling."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from http_helpers import ACME_WORKER, ADMIN, PRODUCER, WORKER, auth, env, serving

from actors.bounds import MAX_PULL_WAIT_SECONDS

pytestmark = pytest.mark.slow

PG_DSN = os.environ.get("ACTORS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PRODUCER_SCRIPT = Path(__file__).with_name("long_poll_producer.py")
DOC = b"Harbour traffic rose in spring. Ferries ran late twice.\n"


def pg_admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A new PostgreSQL schema for one test, dropped after it."""
    try:
        pg_admin("SELECT 1")
    except Exception as exc:  # any failure to reach the server
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN}: {exc}")
    name = f"t_{uuid.uuid4().hex[:16]}"
    pg_admin(f"CREATE SCHEMA {name}")
    yield name
    pg_admin(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def config(tmp_path: Path, queue: str) -> Path:
    """A queue-only server whose waiting pulls look again only once a minute: within a test, a
    waiting pull answers with a job only if the enqueue woke it."""
    path = tmp_path / "server.toml"
    path.write_text(
        f"""
[queue]
{queue}
visibility_seconds = 5
poll_interval_seconds = 60
reap_interval_seconds = 0.2
[storage]
root = "{tmp_path / "objects"}"
[http]
enabled = true
port = 0
queue_only = true
[log]
level = "info"
format = "json"
"""
    )
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The server's queue backend, and its [queue] lines."""
    if request.param == "sqlite":
        return "sqlite", f'path = "{tmp_path / "q.db"}"'
    schema = request.getfixturevalue("pg_schema")
    return schema, f'backend = "postgres"\ndsn = "{PG_DSN}?search_path={schema}"'


def pulls_waiting(client: httpx.Client) -> float:
    text = client.get("/metrics", headers=auth(ADMIN)).text
    match = re.search(r"^actors_http_pulls_waiting (\S+)$", text, re.MULTILINE)
    assert match is not None, text
    return float(match[1])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


class WaitingPull(threading.Thread):
    """A worker's ``POST /jobs/pull`` with ``waitSeconds``, in a thread; notes when it was
    answered (`time.monotonic`)."""

    def __init__(self, url: str, token: str, wait: float, **body: Any) -> None:
        super().__init__(daemon=True)
        self.request = {"waitSeconds": wait, "max": 1, **body}
        self.url, self.token, self.wait = url, token, wait
        self.response: httpx.Response | None = None
        self.answered_at = 0.0

    def run(self) -> None:
        self.response = httpx.post(
            f"{self.url}/jobs/pull",
            json=self.request,
            headers=auth(self.token),
            timeout=self.wait + 30,
        )
        self.answered_at = time.monotonic()

    def answer(self) -> httpx.Response:
        self.join(timeout=self.wait + 40)
        assert self.response is not None, "the waiting pull was never answered"
        return self.response


def test_a_waiting_pull_answers_with_a_job_another_process_enqueued(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    schema, queue = backend
    with serving(config(tmp_path, queue), tmp_path / "server.log") as (url, _):
        client = httpx.Client(base_url=url, timeout=30)
        pull = WaitingPull(url, WORKER, wait=MAX_PULL_WAIT_SECONDS)
        pull.start()
        wait_until(lambda: pulls_waiting(client) == 1, "the pull to wait")
        time.sleep(0.1)  # past its first claim, which found nothing
        # Another process enqueues: through the server (SQLite), or straight into PostgreSQL,
        # whose NOTIFY reaches the server's LISTEN.
        args = ["http", url, PRODUCER] if schema == "sqlite" else ["postgres", PG_DSN, schema]
        produced = subprocess.run(
            [sys.executable, str(PRODUCER_SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env(),
        )
        _, after, job_id = produced.stdout.split()
        response = pull.answer()
        assert response.status_code == 200, response.text
        assert [(j["id"], j["status"]) for j in response.json()["jobs"]] == [
            (int(job_id), "leased")
        ]
        # Woken by the enqueue, not by a look a minute later nor by its wait running out (a
        # functional bound; the latency, milliseconds, is in docs/benchmarks.md).
        assert pull.answered_at - float(after) < MAX_PULL_WAIT_SECONDS / 2
        assert pulls_waiting(client) == 0


def test_a_waiting_pull_answers_empty_when_its_time_is_up_and_its_wait_is_bounded(
    tmp_path: Path,
) -> None:
    queue = f'path = "{tmp_path / "q.db"}"'
    with serving(config(tmp_path, queue), tmp_path / "server.log") as (url, _):
        client = httpx.Client(base_url=url, timeout=30)
        delayed = {"runId": "r", "tenantId": "t1", "r2Key": "t1/r/a.txt", "delaySeconds": 600}
        assert client.post("/jobs/enqueue", json=delayed, headers=auth(PRODUCER)).is_success
        pull = WaitingPull(url, WORKER, wait=0.5)
        pull.start()
        response = pull.answer()
        assert response.status_code == 200 and response.json() == {"jobs": []}
        for wait in (MAX_PULL_WAIT_SECONDS + 0.5, 3600, -1):
            refused = client.post("/jobs/pull", json={"waitSeconds": wait}, headers=auth(WORKER))
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["field"] == "waitSeconds" and error["code"] == "invalid_field"
        over = client.post("/jobs/pull", json={"waitSeconds": 21}, headers=auth(WORKER))
        assert f"{MAX_PULL_WAIT_SECONDS:g}" in over.json()["error"]["message"]
        # A tenant-scoped worker may take no job (the queue leases across tenants): its waiting
        # pull is refused before it waits; so is a producer's. Nothing is leased.
        for token, code in ((ACME_WORKER, "tenant_scoped"), (PRODUCER, "forbidden")):
            refused = client.post("/jobs/pull", json={"waitSeconds": 5}, headers=auth(token))
            assert refused.status_code == 403 and refused.json()["error"]["code"] == code
        stats = client.get("/jobs/stats", headers=auth(ADMIN)).json()["stats"]
        assert (stats["pending"], stats["leased"]) == (1, 0)
        schema = client.get("/openapi.json").json()["components"]["schemas"]["PullIn"]
        wait_field = schema["properties"]["waitSeconds"]
        assert wait_field["maximum"] == MAX_PULL_WAIT_SECONDS and wait_field["minimum"] == 0


def test_a_server_that_stops_answers_its_waiting_pulls_at_once_with_no_jobs(
    tmp_path: Path,
) -> None:
    queue = f'path = "{tmp_path / "q.db"}"'
    with serving(config(tmp_path, queue), tmp_path / "server.log") as (url, server):
        client = httpx.Client(base_url=url, timeout=30)
        pull = WaitingPull(url, WORKER, wait=MAX_PULL_WAIT_SECONDS)
        pull.start()
        wait_until(lambda: pulls_waiting(client) == 1, "the pull to wait")
        stopped_at = time.monotonic()
        server.send_signal(signal.SIGTERM)
        # An answer, not a connection cut at the end of the server's grace period.
        response = pull.answer()
        assert response.status_code == 200 and response.json() == {"jobs": []}
        assert pull.answered_at - stopped_at < MAX_PULL_WAIT_SECONDS / 2
        assert server.wait(timeout=30) == 0


def test_an_idle_remote_worker_waits_at_the_server_and_takes_a_new_job_at_once(
    tmp_path: Path,
) -> None:
    queue = f'path = "{tmp_path / "q.db"}"'
    with serving(config(tmp_path, queue), tmp_path / "server.log") as (url, _):
        client = httpx.Client(base_url=url, timeout=30)
        worker_config = tmp_path / "worker.toml"
        # It would look for work once a minute if it polled: within the test, only its waiting
        # pull can bring it the job.
        worker_config.write_text(
            f"""
[queue]
backend = "http"
url = "{url}"
visibility_seconds = 5
poll_interval_seconds = 60
[storage]
root = "{tmp_path / "objects"}"
[pipeline]
shutdown_grace_seconds = 5
[log]
level = "info"
format = "json"
"""
        )
        with open(tmp_path / "worker.log", "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "actors", "--config", str(worker_config), "run"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env(EDGE_API_TOKEN=WORKER),
            )
        try:
            wait_until(lambda: pulls_waiting(client) == 1, "the idle worker's pull to wait")
            (tmp_path / "objects" / "t1" / "r").mkdir(parents=True)
            (tmp_path / "objects" / "t1" / "r" / "a.txt").write_bytes(DOC)
            body = {"runId": "r", "tenantId": "t1", "r2Key": "t1/r/a.txt"}
            sent = client.post("/jobs/enqueue", json=body, headers=auth(PRODUCER))
            job_id = sent.json()["jobId"]

            def status() -> str:
                job = client.get(f"/jobs/{job_id}", headers=auth(ADMIN)).json()
                return str(job["status"])

            wait_until(lambda: status() == "done", "the worker to finish the job", timeout=40)
            # Idle again, it waits at the server again; stopped, it stops waiting at once.
            wait_until(lambda: pulls_waiting(client) == 1, "the worker's next pull to wait")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()
            wait_until(lambda: pulls_waiting(client) == 0, "the server to see the pull go")
            stats = client.get("/jobs/stats", headers=auth(ADMIN)).json()["stats"]
            assert (stats["leased"], stats["done"]) == (0, 1)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
