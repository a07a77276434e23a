"""Leases over real HTTP: the owner of a lease, the ids-only ack's fence, marking jobs started.

The server runs in process on a real socket with a fake clock, so a lease can expire exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import ADMIN, PRODUCER, TOKENS, WORKER, auth

from actors.config import (
    Config,
    HttpConfig,
    PipelineConfig,
    QueueConfig,
    Secret,
    Secrets,
    StorageConfig,
)
from actors.http import token_id
from actors.queue.http import HttpQueue
from actors.system import ActorSystem
from supervisors.clock import FakeClock

pytestmark = pytest.mark.anyio

OTHER_WORKER = "second-worker-token-0123456789"


def make_config(tmp_path: Path, tokens: str) -> Config:
    return Config(
        # Maintenance reaps once an hour here: the tests reap (through a pull) when they mean it.
        queue=QueueConfig(
            path=str(tmp_path / "q.db"), poll_interval_seconds=0.05, reap_interval_seconds=3600
        ),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        http=HttpConfig(enabled=True, port=0, queue_only=True),
        secrets=Secrets(http_tokens=Secret(tokens)),
    )


@pytest.fixture
async def served(
    tmp_path: Path,
) -> AsyncIterator[tuple[ActorSystem, httpx.AsyncClient, FakeClock]]:
    clock = FakeClock()
    config = make_config(tmp_path, f"{TOKENS},{OTHER_WORKER}:worker")
    async with ActorSystem(config, clock=clock) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield system, client, clock


async def enqueue(client: httpx.AsyncClient, key: str = "t1/r1/a.txt") -> int:
    body = {"runId": "r1", "tenantId": "t1", "r2Key": key}
    response = await client.post("/jobs/enqueue", json=body, headers=auth(PRODUCER))
    assert response.status_code == 200, response.text
    return int(response.json()["jobId"])


async def pull(client: httpx.AsyncClient, token: str, **body: Any) -> list[dict[str, Any]]:
    response = await client.post("/jobs/pull", json=body, headers=auth(token))
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    return jobs


def owner(token: str) -> str:
    return token_id(token.encode())


async def test_an_expired_lease_re_leased_to_another_token_refuses_the_first_ids_only_ack(
    served: Any,
) -> None:
    _, client, clock = served
    job_id = await enqueue(client)
    (first,) = await pull(client, WORKER, visibilitySeconds=10)
    assert first["leaseOwner"] == owner(WORKER)
    clock.advance(11)
    (second,) = await pull(client, OTHER_WORKER, visibilitySeconds=10)
    assert (second["id"], second["leaseOwner"]) == (job_id, owner(OTHER_WORKER))

    # Worker A's ack by id (as the seed's client sends it: a string) is refused, per item.
    stale = await client.post(
        "/jobs/ack", json={"ids": [str(job_id)], "status": "done"}, headers=auth(WORKER)
    )
    assert stale.status_code == 200
    body = stale.json()
    assert body["success"] is False
    (item,) = body["results"]
    assert (item["id"], item["ok"], item["reason"]) == (str(job_id), False, "foreign_lease")
    assert "another token leased it" in item["message"]

    # Worker B, the live holder, settles it by id.
    live = await client.post(
        "/jobs/ack", json={"ids": [job_id], "status": "done"}, headers=auth(OTHER_WORKER)
    )
    assert live.json()["results"] == [
        {"id": job_id, "ok": True, "reason": "ok", "status": "done", "message": None}
    ]
    stored = (await client.get(f"/jobs/{job_id}", headers=auth(ADMIN))).json()
    assert (stored["status"], stored["leaseOwner"]) == ("done", owner(OTHER_WORKER))


async def test_an_ids_only_ack_after_the_lease_expired_is_refused_as_expired(
    served: Any,
) -> None:
    _, client, clock = served
    job_id = await enqueue(client)
    await pull(client, WORKER, visibilitySeconds=10)
    clock.advance(11)
    late = await client.post(
        "/jobs/ack", json={"ids": [job_id], "status": "failed"}, headers=auth(WORKER)
    )
    (item,) = late.json()["results"]
    assert (item["ok"], item["reason"], item["status"]) == (False, "expired", "leased")


async def test_an_ids_only_ack_without_status_is_a_400_and_changes_nothing(served: Any) -> None:
    _, client, _ = served
    job_id = await enqueue(client)
    await pull(client, WORKER)
    response = await client.post("/jobs/ack", json={"ids": [job_id]}, headers=auth(WORKER))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_field", "status")
    assert "'done' or 'failed'" in error["message"]
    stored = (await client.get(f"/jobs/{job_id}", headers=auth(ADMIN))).json()
    assert stored["status"] == "leased"
    # A string that names no job (no job id, no imported job's old id) is not found, item by
    # item, with the id as sent.
    for bad in ("0", "x1", "99999999999999999999"):
        refused = await client.post(
            "/jobs/ack", json={"ids": [bad], "status": "done"}, headers=auth(WORKER)
        )
        assert refused.status_code == 200, bad
        (item,) = refused.json()["results"]
        assert (item["id"], item["ok"], item["reason"]) == (bad, False, "not_found")
        assert "nor was one imported" in item["message"]
    assert (await client.get(f"/jobs/{job_id}", headers=auth(ADMIN))).json()["status"] == "leased"


async def test_the_http_queue_client_acks_by_id_under_its_own_token(served: Any) -> None:
    system, _, _ = served
    url = f"http://127.0.0.1:{system.http.port}"
    job = await system.enqueue("r1", "t1", "t1/r1/a.txt")
    async with HttpQueue.open(url, WORKER) as a, HttpQueue.open(url, OTHER_WORKER) as b:
        (leased,) = await a.pull(max=1, visibility_seconds=10)
        assert leased.lease_owner == owner(WORKER)
        (refused,) = await b.ack_ids([job.id], "done")
        assert (refused.ok, refused.reason) == (False, "foreign_lease")
        (ok,) = await a.ack_ids([job.id], "done")
        assert (ok.ok, ok.reason, ok.job_id) == (True, "ok", job.id)


async def test_a_seed_pull_counts_as_started_and_jobs_start_marks_the_others(
    served: Any,
) -> None:
    _, client, clock = served
    seed_job, own_job = await enqueue(client, "t1/r1/a.txt"), await enqueue(client, "t1/r1/b.txt")
    (seed,) = await pull(client, WORKER, max=1, visibilitySeconds=10)
    assert (seed["id"], seed["startedAt"]) == (seed_job, clock.time())  # the seed's client
    (own,) = await pull(client, OTHER_WORKER, max=1, visibilitySeconds=10, started=False)
    assert (own["id"], own["startedAt"]) == (own_job, None)
    clock.advance(11)
    (stale,) = (
        await client.post(
            "/jobs/start",
            json={"leases": [{"id": own_job, "leaseToken": own["leaseToken"]}]},
            headers=auth(OTHER_WORKER),
        )
    ).json()["results"]
    assert (stale["ok"], stale["reason"]) == (False, "expired")
    # Both leases expired: the started job spent its attempt, the other got it back.
    jobs = await pull(client, OTHER_WORKER, visibilitySeconds=10, started=False)
    assert {j["id"]: j["attempts"] for j in jobs} == {seed_job: 2, own_job: 1}
    again = next(j for j in jobs if j["id"] == own_job)
    started = await client.post(
        "/jobs/start",
        json={"leases": [{"id": own_job, "leaseToken": again["leaseToken"]}]},
        headers=auth(OTHER_WORKER),
    )
    assert started.json()["results"][0]["ok"] is True
    stored = (await client.get(f"/jobs/{own_job}", headers=auth(ADMIN))).json()
    assert stored["startedAt"] == clock.time()
    refused = await client.post(
        "/jobs/start", json={"leases": []}, headers=auth(PRODUCER)
    )  # a producer may not
    assert refused.status_code == 403
