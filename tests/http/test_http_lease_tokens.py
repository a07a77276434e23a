"""A lease token is the lease's credential: only the worker that took the lease ever reads it.

Hostile readers (a producer, another worker, an admin, the dashboard's sessions, a run's
watchers) list, read and stream the job while it is leased; none of them finds its token, and
the worker that pulled it still acts with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import wsproto.events as ws
from http_helpers import ACME, ACME_WORKER, ADMIN, PRODUCER, WORKER, auth
from test_http_api import WsClient, make_config
from test_ui import Browser

from actors.queue.model import Job
from actors.system import ActorSystem

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ActorSystem, httpx.AsyncClient]]:
    async with ActorSystem(make_config(tmp_path)) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield system, client


async def pulled(client: httpx.AsyncClient, token: str, run: str, tenant: str) -> dict[str, Any]:
    """Enqueue a job of ``run`` and pull it with ``token``: the puller's view, token included."""
    body = {"runId": run, "tenantId": tenant, "r2Key": f"{tenant}/{run}/a.txt"}
    enqueued = await client.post("/jobs/enqueue", json=body, headers=auth(ADMIN))
    assert enqueued.status_code == 200, enqueued.text
    r = await client.post("/jobs/pull", json={"max": 1}, headers=auth(token))
    (job,) = r.json()["jobs"]
    assert job["id"] == enqueued.json()["jobId"]
    assert isinstance(job["leaseToken"], str) and len(job["leaseToken"]) >= 16
    return dict(job)


async def first_sse_data(client: httpx.AsyncClient, path: str, **kwargs: Any) -> str:
    """The stream's first ``data:`` frame (every stream starts with the current state)."""
    with anyio.fail_after(10):
        async with client.stream("GET", path, **kwargs) as response:
            assert response.status_code == 200, path
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    return line
    raise AssertionError(f"{path} ended without data")


async def test_no_listing_detail_or_stream_of_the_api_shows_a_lease_token(served: Any) -> None:
    system, client = served
    job = await pulled(client, WORKER, "r1", "t1")
    token, job_id = job["leaseToken"], job["id"]
    acme = await pulled(client, WORKER, "ra", "acme")
    seen: list[tuple[str, str]] = []
    for reader in (PRODUCER, ADMIN, WORKER, ACME, ACME_WORKER):
        for path in (
            "/jobs",
            "/jobs?status=leased",
            "/jobs?runId=r1",
            "/jobs?tenantId=acme",
            f"/jobs/{job_id}",
            f"/jobs/{acme['id']}",
            "/runs/r1",
            "/runs/ra",
            "/jobs/stats",
            f"/api/queue/{job_id}",
            f"/api/queue/{acme['id']}",
        ):
            r = await client.get(path, headers=auth(reader))
            seen.append((path, r.text))
            # The detail is still there: the job is leased, by whom and until when.
            if r.status_code == 200 and path == f"/jobs/{job_id}":
                body = r.json()
                assert body["status"] == "leased" and body["leaseExpiresAt"] is not None
                assert "leaseToken" not in body or body["leaseToken"] is None
    for path, kwargs in (
        ("/runs/r1/events", {"headers": auth(PRODUCER)}),
        ("/runs/ra/events", {"headers": auth(ACME)}),
    ):
        seen.append((path, await first_sse_data(client, path, **kwargs)))
    granted = await client.post("/runs/r1/stream-token", headers=auth(PRODUCER))
    stream_token = granted.json()["token"]
    seen.append(
        ("?token=", await first_sse_data(client, "/runs/r1/events", params={"token": stream_token}))
    )
    async with await anyio.connect_tcp("127.0.0.1", system.http.port) as stream:
        ws_client = WsClient(stream)
        assert await ws_client.open("/runs/r1/ws", PRODUCER)
        with anyio.fail_after(10):
            async for event in ws_client.events():
                if isinstance(event, ws.BytesMessage | ws.TextMessage):
                    seen.append(("/runs/r1/ws", bytes(event.data).decode()))
                    break
    for path, text in seen:
        assert token not in text and acme["leaseToken"] not in text, path
        assert '"leaseToken":"' not in text.replace(" ", ""), path
    # A producer's cancel answers with the job it marked: without the lease's token.
    cancelled = await client.post(f"/jobs/{job_id}/cancel", headers=auth(PRODUCER))
    assert cancelled.json()["results"][0]["outcome"] == "cancel_requested"
    batch = await client.post("/jobs/cancel", json={"ids": [acme["id"]]}, headers=auth(ACME))
    assert batch.json()["results"][0]["outcome"] == "cancel_requested"
    for r in (cancelled, batch):
        assert token not in r.text and acme["leaseToken"] not in r.text
        assert r.json()["results"][0]["job"]["leaseToken"] is None
    # The worker that pulled the job still holds its lease's credential and acts with it.
    released = await client.post(
        "/jobs/release",
        json={"leases": [{"id": job_id, "leaseToken": token}]},
        headers=auth(WORKER),
    )
    assert released.json()["results"][0]["reason"] == "cancelled"
    stored: Job = await system.queue.get(job_id)
    assert stored.status == "cancelled"


async def test_without_a_token_from_a_listing_another_reader_cannot_act_on_the_lease(
    served: Any,
) -> None:
    _, client = served
    job = await pulled(client, WORKER, "r2", "t1")
    listed = (await client.get("/jobs?status=leased", headers=auth(ADMIN))).json()["jobs"]
    (row,) = [j for j in listed if j["id"] == job["id"]]
    # What a listing gives is no credential: acting with it is refused, the lease stays live.
    for forged in (row.get("leaseToken"), ""):
        r = await client.post(
            "/jobs/ack",
            json={"acks": [{"id": job["id"], "leaseToken": forged or "x", "status": "done"}]},
            headers=auth(WORKER),
        )
        assert r.status_code == 200 and r.json()["results"][0]["ok"] is False, r.text
    renewed = await client.post(
        "/jobs/renew",
        json={"leases": [{"id": job["id"], "leaseToken": job["leaseToken"]}]},
        headers=auth(WORKER),
    )
    assert renewed.json()["results"][0]["ok"] is True


async def test_the_kv_claim_gives_its_nonce_to_the_claimer_alone(served: Any) -> None:
    _, client = served
    body = {"runId": "kv", "tenantId": "t1", "r2Key": "t1/kv/a.txt", "payload": {"type": "x"}}
    await client.post("/jobs/enqueue", json=body, headers=auth(ADMIN))
    claim = await client.post("/api/queue/claim", json={"workerId": "w1"}, headers=auth(WORKER))
    nonce = claim.json()["lease"]["claimNonce"]
    task_id = claim.json()["taskId"]
    for reader in (PRODUCER, ADMIN, WORKER):
        for path in ("/api/queue", f"/api/queue/{task_id}", f"/jobs/{task_id}", "/jobs"):
            r = await client.get(path, headers=auth(reader))
            assert nonce not in r.text, (reader, path)
    renewed = await client.post(
        f"/api/queue/{task_id}/renew",
        json={"workerId": "w1", "claimNonce": nonce},
        headers=auth(WORKER),
    )
    assert renewed.json()["lease"]["claimNonce"] == nonce  # to the holder, who has it already


async def test_no_dashboard_page_or_live_fragment_shows_a_lease_token(served: Any) -> None:
    _, client = served
    job = await pulled(client, WORKER, "r3", "t1")
    token = job["leaseToken"]
    for reader in (ADMIN, PRODUCER, WORKER):
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10) as session:
            browser = Browser(session, str(client.base_url).rstrip("/"))
            await browser.sign_in(reader)
            pages = [
                "/ui/",
                "/ui/runs",
                "/ui/runs/r3",
                "/ui/jobs",
                "/ui/jobs?status=leased",
                f"/ui/jobs/{job['id']}",
            ]
            for page in pages:
                r = await session.get(page)
                assert r.status_code == 200, (reader, page)
                assert token not in r.text, (reader, page)
            # The job page still says who holds the lease.
            detail = (await session.get(f"/ui/jobs/{job['id']}")).text
            assert re.search(r"Lease holder</dt><dd[^>]*>[^<]*", detail)
            for stream in ("/ui/events", "/ui/runs/r3/events"):
                assert token not in await first_sse_data(session, stream), (reader, stream)


def test_the_cli_prints_no_lease_token(tmp_path: Path) -> None:
    """`jobs show`, `jobs list --json` and `jobs cancel --json` on the queue's own file."""
    import subprocess
    import sys

    from actors.queue import SQLiteQueue

    db = tmp_path / "q.db"

    async def lease() -> Job:
        async with SQLiteQueue.open(db) as queue:
            await queue.enqueue("r1", "t1", "t1/r1/a.txt")
            (job,) = await queue.pull(max=1, visibility_seconds=300)
            return job

    job = anyio.run(lease)
    assert job.lease_token is not None

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "actors", "--db", str(db), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    shown = json.loads(cli("jobs", "show", str(job.id)))
    assert shown["status"] == "leased" and shown["lease_token"] is None
    listed = cli("jobs", "list", "--json")
    cancelled = cli("jobs", "cancel", str(job.id), "--json")
    for text in (json.dumps(shown), listed, cancelled, cli("jobs", "list")):
        assert job.lease_token not in text
    assert json.loads(cancelled)[0]["job"]["status"] == "leased"
