"""The KV task API over real HTTP: X-API-Key principals, claims as leases, fencing by worker.

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
from actors.errors import ConfigError
from actors.http import Tokens, token_id
from actors.system import ActorSystem
from supervisors.clock import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]

ADMIN_KEY = "kv-admin-key-0123456789"
QUEUE_KEY = "kv-queue-key-0123456789"
Served = tuple[ActorSystem, httpx.AsyncClient, FakeClock]


def make_config(tmp_path: Path, *, api_key_tenant: str | None = None) -> Config:
    return Config(
        queue=QueueConfig(
            path=str(tmp_path / "q.db"), poll_interval_seconds=0.05, reap_interval_seconds=3600
        ),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        http=HttpConfig(enabled=True, port=0, queue_only=True, api_key_tenant=api_key_tenant),
        secrets=Secrets(
            http_tokens=Secret(TOKENS),
            admin_api_key=Secret(ADMIN_KEY),
            queue_api_key=Secret(QUEUE_KEY),
        ),
    )


async def serve(tmp_path: Path, **options: Any) -> AsyncIterator[Served]:
    clock = FakeClock()
    async with ActorSystem(make_config(tmp_path, **options), clock=clock) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield system, client, clock


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async for value in serve(tmp_path):
        yield value


def key(value: str) -> dict[str, str]:
    return {"x-api-key": value}


async def enqueue(client: httpx.AsyncClient, n: int = 1, tenant: str = "t1") -> list[int]:
    ids = []
    for i in range(n):
        body = {"runId": f"r-{tenant}", "tenantId": tenant, "r2Key": f"{tenant}/r/{i}.txt"}
        response = await client.post("/jobs/enqueue", json=body, headers=auth(PRODUCER))
        assert response.status_code == 200, response.text
        ids.append(int(response.json()["jobId"]))
    return ids


async def claim(client: httpx.AsyncClient, worker: str, **body: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/queue/claim", json={"workerId": worker, **body}, headers=key(QUEUE_KEY)
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# --- authentication --------------------------------------------------------------------------


async def test_a_call_without_a_key_or_with_a_wrong_one_is_a_401_in_the_originals_shape(
    served: Served,
) -> None:
    _, client, _ = served
    for headers in ({}, key("wrong-key-0123456789"), key(""), key(QUEUE_KEY + "x")):
        response = await client.get("/api/queue", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "Unauthorized"
    # A key is not a bearer token, and a bearer token is not a key.
    assert (await client.get("/api/queue", headers=auth(QUEUE_KEY))).status_code == 401
    assert (await client.get("/api/queue", headers=key(WORKER))).status_code == 401


async def test_the_keys_are_roles_on_every_route_of_the_api(served: Served) -> None:
    _, client, _ = served
    await enqueue(client)
    # The queue key is a worker's: it pulls and reads, but may not purge (admin).
    pulled = await client.post("/jobs/pull", json={"max": 1}, headers=key(QUEUE_KEY))
    assert pulled.status_code == 200 and len(pulled.json()["jobs"]) == 1
    assert pulled.json()["jobs"][0]["leaseOwner"] == token_id(QUEUE_KEY.encode())
    purge = {"olderThanSeconds": 60}
    refused = await client.post("/jobs/purge", json=purge, headers=key(QUEUE_KEY))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    # The admin key may do everything, on the job routes as on the task routes.
    assert (await client.post("/jobs/purge", json=purge, headers=key(ADMIN_KEY))).status_code == 200
    assert (await client.get("/jobs/stats", headers=key(ADMIN_KEY))).status_code == 200
    # A bearer token works on the task routes too.
    assert (await client.get("/api/queue", headers=auth(WORKER))).status_code == 200
    # A producer may read tasks but not claim them.
    denied = await client.post("/api/queue/claim", json={}, headers=auth(PRODUCER))
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"


async def test_without_keys_configured_an_api_key_opens_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config = Config(
        queue=config.queue,
        storage=config.storage,
        http=config.http,
        secrets=Secrets(http_tokens=Secret(TOKENS)),
    )
    async with ActorSystem(config, clock=FakeClock()) as system:
        url = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=url) as client:
            for value in ("", "x", QUEUE_KEY, ADMIN_KEY):
                response = await client.get("/api/queue", headers=key(value))
                assert response.status_code == 401, value


def test_a_short_api_key_is_refused_at_start_without_repeating_it() -> None:
    with pytest.raises(ConfigError, match="QUEUE_API_KEY is shorter than 8") as caught:
        Tokens.parse("", queue_key="short")
    assert "short'" not in str(caught.value)
    tokens = Tokens.parse("", admin_key=ADMIN_KEY, queue_key=QUEUE_KEY, api_key_tenant="acme")
    assert tokens.lookup(ADMIN_KEY) is None  # not a bearer token
    admin, worker = tokens.api_key(ADMIN_KEY), tokens.api_key(QUEUE_KEY)
    assert admin is not None and (admin.role, admin.tenant) == ("admin", "acme")
    assert worker is not None and (worker.role, worker.tenant) == ("worker", "acme")


# --- the task flow ---------------------------------------------------------------------------


@pytest.mark.runtimes("asyncio", "trio")
async def test_a_worker_claims_renews_and_completes_a_task(served: Served) -> None:
    _, client, clock = served
    first, second = await enqueue(client, 2)
    listed = (await client.get("/api/queue", headers=key(QUEUE_KEY))).json()
    assert listed == {"pending": [str(first), str(second)], "count": 2}

    claimed = await claim(client, "worker-a", leaseDurationSec=120)
    assert claimed["success"] is True and claimed["taskId"] == str(first)
    task, lease = claimed["task"], claimed["lease"]
    assert (task["id"], task["status"], task["workerId"]) == (str(first), "claimed", "worker-a")
    assert (task["content"], task["tenantId"], task["priority"]) == ("t1/r/0.txt", "t1", "medium")
    assert lease["workerId"] == "worker-a" and lease["claimNonce"]
    assert lease["expiresAt"].endswith("Z") and lease["claimedAt"].endswith("Z")
    job = (await client.get(f"/jobs/{first}", headers=auth(ADMIN))).json()
    assert job["leaseExpiresAt"] == pytest.approx(clock.time() + 120)
    assert (job["workerId"], job["leaseOwner"]) == ("worker-a", token_id(QUEUE_KEY.encode()))
    listing = (await client.get("/jobs?status=leased", headers=auth(ADMIN))).json()["jobs"]
    assert [(j["id"], j["workerId"]) for j in listing] == [(first, "worker-a")]
    # A claimed task stays listed until its result, as in the original.
    listed = (await client.get("/api/queue", headers=key(QUEUE_KEY))).json()
    assert listed == {"pending": [str(first), str(second)], "count": 2}

    clock.advance(100)
    renewed = await client.post(
        f"/api/queue/{first}/renew", json={"workerId": "worker-a"}, headers=key(QUEUE_KEY)
    )
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["success"] is True and renewed.json()["lease"]["renewedAt"]
    job = (await client.get(f"/jobs/{first}", headers=auth(ADMIN))).json()
    assert job["leaseExpiresAt"] == pytest.approx(clock.time() + 300)  # the default

    note = await client.post(
        f"/api/queue/{first}/status", json={"status": "processing"}, headers=key(QUEUE_KEY)
    )
    assert note.json() == {"success": True, "status": "processing"}

    result = {"success": True, "output": {"summary": "ok", "n": 3.0}}
    stored = await client.post(f"/api/result/{first}", json=result, headers=key(QUEUE_KEY))
    assert stored.status_code == 200 and stored.json() == {"success": True}
    got = await client.get(f"/api/result/{first}", headers=key(QUEUE_KEY))
    assert got.json() == result  # the client's data as sent (3.0 stays a float)
    done = (await client.get(f"/api/queue/{first}", headers=key(QUEUE_KEY))).json()
    assert done["status"] == "completed"
    again = await client.post(f"/api/result/{first}", json=result, headers=key(QUEUE_KEY))
    assert again.status_code == 409 and again.json()["code"] == "task_finished"
    stats = (await client.get("/jobs/stats", headers=auth(ADMIN))).json()["stats"]
    assert (stats["pending"], stats["leased"], stats["done"]) == (1, 0, 1)
    listed = (await client.get("/api/queue", headers=key(QUEUE_KEY))).json()
    assert listed == {"pending": [str(second)], "count": 1}


async def test_no_task_to_claim_answers_as_the_original(served: Served) -> None:
    _, client, _ = served
    nothing = {"success": False, "message": "No tasks available or all tasks are leased"}
    assert await claim(client, "w") == {**nothing, "pending": 0}
    await enqueue(client)
    await claim(client, "w")
    assert await claim(client, "w") == {**nothing, "pending": 1}  # the claimed one


async def test_the_lease_is_300_s_by_default_and_at_most_600(served: Served) -> None:
    _, client, clock = served
    first, second = await enqueue(client, 2)
    anonymous = await claim(client, "")  # no workerId: one is made up, as the original did
    assert anonymous["lease"]["workerId"].startswith("worker_")
    job = (await client.get(f"/jobs/{first}", headers=auth(ADMIN))).json()
    assert job["leaseExpiresAt"] == pytest.approx(clock.time() + 300)
    for bad in (601, 0, -1, 1.5, "60"):
        response = await client.post(
            "/api/queue/claim", json={"leaseDurationSec": bad}, headers=key(QUEUE_KEY)
        )
        assert response.status_code == 400, bad
        body = response.json()
        assert body["error"] == "Validation failed" and body["code"] == "invalid_field"
        assert body["details"][0]["path"] == "leaseDurationSec"
    await claim(client, "w", leaseDurationSec=600)
    job = (await client.get(f"/jobs/{second}", headers=auth(ADMIN))).json()
    assert job["leaseExpiresAt"] == pytest.approx(clock.time() + 600)


async def test_another_worker_cannot_renew_release_or_complete_a_lease(served: Served) -> None:
    _, client, _ = served
    (task,) = await enqueue(client)
    nonce = (await claim(client, "worker-a"))["lease"]["claimNonce"]
    base = f"/api/queue/{task}"
    not_holder = {"workerId": "worker-b"}
    renew = await client.post(f"{base}/renew", json=not_holder, headers=key(QUEUE_KEY))
    assert (renew.status_code, renew.json()["error"]) == (403, "Invalid lease or not holder")
    release = await client.post(f"{base}/release", json=not_holder, headers=key(QUEUE_KEY))
    assert (release.status_code, release.json()["error"]) == (403, "Not lease holder")
    result = {"success": True, "workerId": "worker-b"}
    stored = await client.post(f"/api/result/{task}", json=result, headers=key(QUEUE_KEY))
    assert (stored.status_code, stored.json()["error"]) == (403, "Not lease holder")
    # The right worker with a wrong nonce is refused too: the nonce is the lease's token.
    forged = {"workerId": "worker-a", "claimNonce": nonce[:-1] + ("x" if nonce[-1] != "x" else "y")}
    renew = await client.post(f"{base}/renew", json=forged, headers=key(QUEUE_KEY))
    assert renew.status_code == 403
    # Another principal (a worker's bearer token) cannot act on the queue key's lease at all.
    stolen = {"workerId": "worker-a"}
    renew = await client.post(f"{base}/renew", json=stolen, headers=auth(WORKER))
    assert renew.status_code == 403
    stored = await client.post(f"/api/result/{task}", json={"success": True}, headers=auth(WORKER))
    assert stored.status_code == 403
    job = (await client.get(f"/jobs/{task}", headers=auth(ADMIN))).json()
    assert (job["status"], job["workerId"]) == ("leased", "worker-a")
    # The holder, with its nonce, completes it.
    mine = {"success": True, "workerId": "worker-a", "claimNonce": nonce}
    stored = await client.post(f"/api/result/{task}", json=mine, headers=key(QUEUE_KEY))
    assert stored.status_code == 200, stored.text


async def test_an_expired_lease_claimed_again_refuses_its_first_holder(served: Served) -> None:
    _, client, clock = served
    (task,) = await enqueue(client)
    # Two workers misconfigured with one workerId: only the claim nonce tells them apart.
    first = (await claim(client, "worker-a", leaseDurationSec=10))["lease"]["claimNonce"]
    clock.advance(11)
    again = await claim(client, "worker-a", leaseDurationSec=10)
    assert again["taskId"] == str(task) and again["lease"]["claimNonce"] != first
    stale = {"workerId": "worker-a", "claimNonce": first}
    for path in ("queue/{}/renew", "queue/{}/release"):
        response = await client.post(
            "/api/" + path.format(task), json=stale, headers=key(QUEUE_KEY)
        )
        assert response.status_code == 403, path
    stored = await client.post(
        f"/api/result/{task}", json={"success": True, **stale}, headers=key(QUEUE_KEY)
    )
    assert stored.status_code == 403
    job = (await client.get(f"/jobs/{task}", headers=auth(ADMIN))).json()
    assert job["status"] == "leased" and job["attempts"] == 2


async def test_a_released_task_is_pending_again_and_claimed_anew(served: Served) -> None:
    _, client, clock = served
    (task,) = await enqueue(client)
    await claim(client, "worker-a")
    released = await client.post(
        f"/api/queue/{task}/release",
        json={"workerId": "worker-a", "reason": "shutting down"},
        headers=key(QUEUE_KEY),
    )
    assert released.json() == {"success": True}
    job = (await client.get(f"/jobs/{task}", headers=auth(ADMIN))).json()
    assert (job["status"], job["attempts"]) == ("pending", 0)  # a release spends no attempt
    again = await client.post(f"/api/queue/{task}/release", json={}, headers=key(QUEUE_KEY))
    assert again.json() == {"success": True, "message": "No active lease"}
    assert (await claim(client, "worker-b"))["taskId"] == str(task)
    # An expired lease is no lease: releasing it is a no-op, completing it is refused.
    clock.advance(301)
    late = await client.post(f"/api/result/{task}", json={"success": True}, headers=key(QUEUE_KEY))
    assert late.status_code == 409 and late.json()["code"] == "not_claimed"


async def test_success_false_fails_the_task_for_good_with_its_error(served: Served) -> None:
    _, client, _ = served
    (task,) = await enqueue(client)
    await claim(client, "w")
    body = {"success": False, "error": "model refused"}
    assert (await client.post(f"/api/result/{task}", json=body, headers=key(QUEUE_KEY))).json() == {
        "success": True
    }
    job = (await client.get(f"/jobs/{task}", headers=auth(ADMIN))).json()
    assert (job["status"], job["lastError"]) == ("failed", "model refused")
    got = await client.get(f"/api/result/{task}", headers=key(QUEUE_KEY))
    assert got.json() == {"success": False, "error": "model refused"}
    task_view = (await client.get(f"/api/queue/{task}", headers=key(QUEUE_KEY))).json()
    assert task_view["status"] == "failed"


async def test_a_claimed_task_cancelled_meanwhile_refuses_its_renewal_and_its_result(
    served: Served,
) -> None:
    _, client, _ = served
    (task,) = await enqueue(client)
    await claim(client, "w")
    cancel = await client.post(f"/jobs/{task}/cancel", headers=auth(PRODUCER))
    assert cancel.json()["results"][0]["outcome"] == "cancel_requested"
    view = (await client.get(f"/api/queue/{task}", headers=key(QUEUE_KEY))).json()
    assert view["status"] == "claimed"  # until its worker hears of it
    renewed = await client.post(
        f"/api/queue/{task}/renew", json={"workerId": "w"}, headers=key(QUEUE_KEY)
    )
    assert (renewed.status_code, renewed.json()["code"]) == (409, "task_cancelled")
    stored = await client.post(
        f"/api/result/{task}", json={"success": True}, headers=key(QUEUE_KEY)
    )
    assert stored.status_code == 409 and "cancelled" in stored.json()["error"]
    view = (await client.get(f"/api/queue/{task}", headers=key(QUEUE_KEY))).json()
    assert view["status"] == "cancelled"
    got = await client.get(f"/api/result/{task}", headers=key(QUEUE_KEY))
    assert got.json() == {"success": False, "error": "cancelled"}
    again = await client.post(f"/api/result/{task}", json={"success": True}, headers=key(QUEUE_KEY))
    assert (again.status_code, again.json()["code"]) == (409, "task_finished")


async def test_unknown_tasks_and_routes_answer_as_the_original(served: Served) -> None:
    _, client, _ = served
    for task in ("999", "abc", "0", "99999999999999999999", "\uff11"):
        got = await client.get(f"/api/queue/{task}", headers=key(QUEUE_KEY))
        assert (got.status_code, got.json()["error"]) == (404, "Task not found"), task
        note = await client.post(
            f"/api/queue/{task}/status", json={"status": "x"}, headers=key(QUEUE_KEY)
        )
        assert note.status_code == 404, task
    pending = await enqueue(client)
    no_result = await client.get(f"/api/result/{pending[0]}", headers=key(QUEUE_KEY))
    assert (no_result.status_code, no_result.json()["error"]) == (404, "Result not found")
    unknown = await client.get("/api/nothing", headers=key(QUEUE_KEY))
    assert (unknown.status_code, unknown.json()["error"]) == (404, "Not found")
    bad = await client.post("/api/queue/claim", content=b"{", headers=key(QUEUE_KEY))
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_json"
    missing = await client.post(f"/api/queue/{pending[0]}/renew", json={}, headers=key(QUEUE_KEY))
    assert missing.status_code == 400 and missing.json()["details"][0]["path"] == "workerId"


async def test_a_task_shows_the_fields_of_its_payload(served: Served) -> None:
    _, client, _ = served
    task = {
        "id": "task_123",
        "type": "query",
        "source": "slack",
        "content": "What changed?",
        "priority": "high",
        "metadata": {"channel": "ops"},
        "queuedAt": "2026-01-02T03:04:05.000Z",
        "status": "pending",
    }
    body = {"runId": "r", "tenantId": "t1", "r2Key": "t1/r/q.json", "payload": task, "priority": 1}
    job_id = (await client.post("/jobs/enqueue", json=body, headers=auth(PRODUCER))).json()["jobId"]
    shown = (await client.get(f"/api/queue/{job_id}", headers=key(QUEUE_KEY))).json()
    assert shown["id"] == str(job_id) and shown["originalId"] == "task_123"
    for name in ("type", "source", "content", "priority", "metadata", "queuedAt"):
        assert shown[name] == task[name], name


async def test_keys_limited_to_a_tenant_see_only_its_tasks_and_claim_nothing(
    tmp_path: Path,
) -> None:
    async for _, client, _ in serve(tmp_path, api_key_tenant="acme"):
        (own,) = await enqueue(client, tenant="acme")
        (other,) = await enqueue(client, tenant="t1")
        listed = (await client.get("/api/queue", headers=key(QUEUE_KEY))).json()
        assert listed == {"pending": [str(own)], "count": 1}
        hidden = await client.get(f"/api/queue/{other}", headers=key(QUEUE_KEY))
        assert hidden.status_code == 404
        refused = await client.post("/api/queue/claim", json={}, headers=key(QUEUE_KEY))
        assert refused.status_code == 403 and refused.json()["code"] == "tenant_scoped"
