"""Real processes over real HTTP: the edge worker's verification flow, and a remote worker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from http_helpers import ADMIN, PRODUCER, WORKER, auth, env, server_config, serving, worker_config

pytestmark = pytest.mark.slow

DOC = b"Harbour traffic rose in spring. Ferries ran late twice. The pier needs repair soon.\n"


def read_sse(url: str, token: str, into: list[dict[str, object]], done: threading.Event) -> None:
    """Collect every `update` event of a run's stream until the server ends it."""
    try:
        with httpx.stream("GET", url, headers=auth(token), timeout=60) as response:
            into.append({"status": response.status_code})
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "update":
                    into.append(json.loads(line.removeprefix("data: ")))
                elif line.startswith("data: ") and event == "end":
                    into.append({"end": True})
    finally:
        done.set()


def test_the_edge_workers_verification_flow_with_a_remote_worker(tmp_path: Path) -> None:
    with serving(server_config(tmp_path), tmp_path / "server.log") as (url, _):
        client = httpx.Client(base_url=url, timeout=30)
        created = client.post(
            "/uploads/create",
            headers=auth(PRODUCER),
            json={"contentType": "text/plain", "filename": "harbour.txt", "tenantId": "t1"},
        )
        assert created.status_code == 201, created.text
        upload = created.json()
        # While the upload is in flight there is no job to lease, so no attempt can be spent.
        assert client.get("/jobs/stats", headers=auth(ADMIN)).json()["stats"]["pending"] == 0

        put = httpx.put(upload["uploadUrl"], content=DOC, headers={"content-type": "text/plain"})
        assert put.status_code == 201, put.text
        assert put.json()["runId"] == upload["runId"]
        stats = client.get("/jobs/stats", headers=auth(ADMIN)).json()
        counts = {k: stats["stats"][k] for k in ("pending", "leased", "done", "failed")}
        assert counts == {"pending": 1, "leased": 0, "done": 0, "failed": 0}
        assert isinstance(stats["timestamp"], float)

        events: list[dict[str, object]] = []
        ended = threading.Event()
        reader = threading.Thread(
            target=read_sse,
            args=(f"{url}/runs/{upload['runId']}/events", PRODUCER, events, ended),
            daemon=True,
        )
        reader.start()

        # The worker: another process that pulls, renews and acks over HTTP.
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
            timeout=60,
            env=env(EDGE_API_TOKEN=WORKER),
            check=False,
        )
        assert worker.returncode == 0, worker.stderr
        assert f"run {upload['runId']} (tenant t1): done" in worker.stdout

        stats = client.get("/jobs/stats", headers=auth(ADMIN)).json()["stats"]
        assert (stats["pending"], stats["leased"], stats["done"], stats["failed"]) == (0, 0, 1, 0)
        assert ended.wait(15), events
        assert events[0] == {"status": 200}
        runs = [e["run"] for e in events[1:] if "run" in e]
        assert runs[-1]["status"] == "done" and runs[-1]["done"] == 1  # type: ignore[index]
        assert events[-1] == {"end": True}
        job = client.get(f"/jobs/{put.json()['jobId']}", headers=auth(ADMIN)).json()
        assert job["status"] == "done" and job["result"] is not None and job["attempts"] == 1
        metrics = client.get("/metrics", headers=auth(ADMIN)).text
        assert 'actors_jobs{status="done"} 1.0' in metrics
        assert 'actors_http_acks_total{outcome="done"} 1.0' in metrics


def test_two_remote_workers_drain_a_queue_served_over_http_and_ack_each_job_once(
    tmp_path: Path,
) -> None:
    with serving(server_config(tmp_path), tmp_path / "server.log") as (url, _):
        client = httpx.Client(base_url=url, timeout=30, headers=auth(ADMIN))
        objects = tmp_path / "objects"
        jobs = []
        for i in range(60):
            key = f"t1/r1/doc-{i}.txt"
            (objects / "t1" / "r1").mkdir(parents=True, exist_ok=True)
            (objects / key).write_bytes(DOC)
            jobs.append({"runId": "r1", "tenantId": "t1", "r2Key": key})
        assert client.post("/jobs/enqueue-many", json={"jobs": jobs}).status_code == 200
        config = worker_config(tmp_path, url)
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "actors", "--config", str(config), "run", "--until-idle"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env(EDGE_API_TOKEN=WORKER),
            )
            for _ in range(2)
        ]
        for worker in workers:
            _, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err
        run = client.get("/runs/r1").json()
        assert (run["done"], run["failed"], run["total"]) == (60, 0, 60)
        listed = client.get("/jobs", params={"status": "done", "limit": 1000}).json()["jobs"]
        assert len(listed) == 60 and all(job["attempts"] == 1 for job in listed)


def test_a_worker_with_a_wrong_token_fails_loudly_and_leases_nothing(tmp_path: Path) -> None:
    with serving(server_config(tmp_path), tmp_path / "server.log") as (url, _):
        client = httpx.Client(base_url=url, timeout=30, headers=auth(ADMIN))
        client.post("/jobs/enqueue", json={"runId": "r", "tenantId": "t", "r2Key": "t/x.txt"})
        started = time.monotonic()
        worker = subprocess.run(
            [sys.executable, "-m", "actors", "--config", str(worker_config(tmp_path, url)), "run"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env(EDGE_API_TOKEN="not-a-valid-token-at-all"),
            check=False,
        )
        assert worker.returncode != 0
        assert "check the token" in worker.stderr
        assert time.monotonic() - started < 60
        assert client.get("/jobs/stats").json()["stats"]["pending"] == 1


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll for a state that no response announces (the server's own schedule moves it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def test_a_queue_only_server_reaps_expired_leases_and_purges_old_jobs_with_no_worker_pulling(
    tmp_path: Path,
) -> None:
    config = server_config(tmp_path)  # [http] queue_only: this process leases nothing itself
    config.write_text(
        config.read_text().replace(
            "[storage]", "retention_seconds = 1\npurge_interval_seconds = 0.2\n[storage]"
        )
    )
    with serving(config, tmp_path / "server.log") as (url, _):
        client = httpx.Client(base_url=url, timeout=30)
        ids = []
        for name in ("stuck", "finished"):
            body = {"runId": "r", "tenantId": "t1", "r2Key": f"t1/r/{name}.txt"}
            sent = client.post("/jobs/enqueue", json=body, headers=auth(PRODUCER))
            ids.append(sent.json()["jobId"])
        pulled = client.post(
            "/jobs/pull", json={"max": 2, "visibilitySeconds": 1}, headers=auth(WORKER)
        ).json()["jobs"]
        assert sorted(j["id"] for j in pulled) == sorted(ids)
        stuck, finished = ids
        token = next(j["leaseToken"] for j in pulled if j["id"] == finished)
        acked = client.post(
            "/jobs/ack",
            json={"acks": [{"id": finished, "leaseToken": token}]},
            headers=auth(WORKER),
        )
        assert acked.json()["results"][0]["ok"], acked.text

        # Nobody pulls from here on: only the server's own maintenance can move these jobs.
        def status(job_id: int) -> str:
            response = client.get(f"/jobs/{job_id}", headers=auth(ADMIN))
            return "purged" if response.status_code == 404 else str(response.json()["status"])

        wait_until(lambda: status(stuck) == "pending", "the expired lease to be reaped")
        wait_until(lambda: status(finished) == "purged", "the finished job to be purged")
        stats = client.get("/jobs/stats", headers=auth(ADMIN)).json()["stats"]
        assert (stats["pending"], stats["leased"], stats["done"]) == (1, 0, 0)
    rounds = [
        json.loads(line)
        for line in (tmp_path / "server.log").read_text().splitlines()
        if '"maintenance.round"' in line
    ]
    assert {(r["task"], r["changed"]) for r in rounds} >= {("reap", 1), ("purge", 1)}
