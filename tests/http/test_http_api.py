"""The HTTP API in process, over real sockets: protocol, roles and tenants, bad input, streams."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import msgspec
import pytest
import sniffio
import wsproto
import wsproto.events as ws
from http_helpers import ACME, ACME_WORKER, ADMIN, PRODUCER, TOKENS, WORKER, auth
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount, Route, WebSocketRoute
from structlog.testing import capture_logs

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
from actors.http import Tokens, create_app
from actors.queue.http import HttpQueue
from actors.system import ActorSystem

pytestmark = pytest.mark.anyio

DOC = b"Harbour traffic rose in spring. Ferries ran late twice. The pier needs repair soon.\n"


def make_config(tmp_path: Path, *, queue_only: bool = True, **http: Any) -> Config:
    return Config(
        queue=QueueConfig(
            path=str(tmp_path / "q.db"), poll_interval_seconds=0.05, visibility_seconds=30
        ),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        http=HttpConfig(enabled=True, port=0, queue_only=queue_only, max_body_bytes=4096, **http),
        secrets=Secrets(http_tokens=Secret(TOKENS), api_token=Secret("seed-jwt-secret-value")),
    )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ActorSystem, httpx.AsyncClient]]:
    async with ActorSystem(make_config(tmp_path)) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield system, client


async def until(predicate: Any) -> None:
    """Wait for a condition no event announces (a subscriber leaving, a counter moving)."""
    while not predicate():
        await anyio.sleep(0.02)


async def enqueue(
    client: httpx.AsyncClient, token: str = PRODUCER, **fields: Any
) -> httpx.Response:
    body = {"runId": "r1", "tenantId": "t1", "r2Key": "t1/r1/a.txt", **fields}
    return await client.post("/jobs/enqueue", json=body, headers=auth(token))


# --- the protocol ------------------------------------------------------------------------------


async def test_enqueue_pull_ack_with_the_seeds_field_names(served: Any) -> None:
    _, client = served
    enqueued = await enqueue(client, payload={"n": 1}, idempotencyKey="k1", priority=3)
    assert enqueued.status_code == 200
    body = enqueued.json()
    assert body == {"success": True, "jobId": body["jobId"], "runId": "r1", "status": "pending"}
    again = await enqueue(client, idempotencyKey="k1")
    assert again.json()["jobId"] == body["jobId"]

    pulled = (
        await client.post(
            "/jobs/pull", json={"max": 5, "visibilitySeconds": 30}, headers=auth(WORKER)
        )
    ).json()["jobs"]
    assert len(pulled) == 1
    job = pulled[0]
    assert {k: job[k] for k in ("id", "runId", "tenantId", "r2Key", "attempts")} == {
        "id": body["jobId"],
        "runId": "r1",
        "tenantId": "t1",
        "r2Key": "t1/r1/a.txt",
        "attempts": 1,
    }
    assert isinstance(job["leaseToken"], str) and job["payload"] == {"n": 1}

    renewed = await client.post(
        "/jobs/renew",
        headers=auth(WORKER),
        json={
            "leases": [{"id": job["id"], "leaseToken": job["leaseToken"]}],
            "visibilitySeconds": 60,
        },
    )
    assert renewed.json()["results"][0]["ok"] is True
    stale = await client.post(
        "/jobs/ack",
        headers=auth(WORKER),
        json={"acks": [{"id": job["id"], "leaseToken": "stale", "status": "done"}]},
    )
    assert stale.json()["success"] is False
    assert stale.json()["results"][0]["reason"] in ("superseded", "expired", "not_leased")
    acked = await client.post(
        "/jobs/ack",
        headers=auth(WORKER),
        json={
            "acks": [
                {
                    "id": job["id"],
                    "leaseToken": job["leaseToken"],
                    "status": "done",
                    "result": {"ok": 1},
                    "runMetrics": {"tokens": 7},
                }
            ]
        },
    )
    assert acked.json() == {
        "success": True,
        "results": [
            {"id": job["id"], "ok": True, "reason": "ok", "status": "done", "message": None}
        ],
    }
    stored = (await client.get(f"/jobs/{job['id']}", headers=auth(PRODUCER))).json()
    assert stored["status"] == "done" and stored["result"] == {"ok": 1}
    run = (await client.get("/runs/r1", headers=auth(PRODUCER))).json()
    assert run["done"] == 1 and run["metrics"] == {"tokens": 7.0}
    stats = (await client.get("/jobs/stats", headers=auth(ADMIN))).json()
    assert stats["stats"]["done"] == 1 and stats["timestamp"] > 0


async def test_the_seeds_ack_by_ids_release_store_result_and_paged_listing(served: Any) -> None:
    _, client = served
    jobs = [{"runId": "r2", "tenantId": "t1", "r2Key": f"t1/r2/{i}.txt"} for i in range(5)]
    assert (
        await client.post("/jobs/enqueue-many", json={"jobs": jobs}, headers=auth(PRODUCER))
    ).status_code == 200
    pulled = (await client.post("/jobs/pull", json={"max": 5}, headers=auth(WORKER))).json()["jobs"]
    by_id = await client.post(
        "/jobs/ack", headers=auth(WORKER), json={"ids": [pulled[0]["id"]], "status": "done"}
    )
    assert by_id.json()["success"] is True
    released = await client.post(
        "/jobs/release",
        headers=auth(WORKER),
        json={"leases": [{"id": pulled[1]["id"], "leaseToken": pulled[1]["leaseToken"]}]},
    )
    assert released.json()["results"][0]["status"] == "pending"
    result = await client.post(
        f"/jobs/{pulled[2]['id']}/result",
        headers=auth(WORKER),
        json={"leaseToken": pulled[2]["leaseToken"], "result": [1, 2]},
    )
    assert result.status_code == 200
    lost = await client.post(
        f"/jobs/{pulled[2]['id']}/result",
        headers=auth(WORKER),
        json={"leaseToken": "nope", "result": 1},
    )
    assert lost.status_code == 409 and lost.json()["error"]["code"] == "lease_lost"

    page = (
        await client.get("/jobs", params={"status": "done", "limit": 1}, headers=auth(ADMIN))
    ).json()
    assert len(page["jobs"]) == 1 and page["nextCursor"] is not None
    rest = (
        await client.get(
            "/jobs", params={"status": "done", "cursor": page["nextCursor"]}, headers=auth(ADMIN)
        )
    ).json()
    assert len(rest["jobs"]) == 1 and rest["nextCursor"] is None
    assert (
        await client.post("/jobs/purge", json={"olderThanSeconds": 0}, headers=auth(ADMIN))
    ).json() == {"success": True, "count": 2}


# --- auth ----------------------------------------------------------------------------------


ROUTES = {
    "enqueue": ("POST", "/jobs/enqueue", {"runId": "r", "tenantId": "t1", "r2Key": "t1/r/k"}),
    "pull": ("POST", "/jobs/pull", {"max": 1}),
    "ack": ("POST", "/jobs/ack", {"ids": [], "status": "done"}),
    "renew": ("POST", "/jobs/renew", {"leases": []}),
    "start": ("POST", "/jobs/start", {"leases": []}),
    "release": ("POST", "/jobs/release", {"leases": []}),
    "stats": ("GET", "/jobs/stats", None),
    "requeue": ("POST", "/jobs/requeue", {"ids": [1]}),
    "purge": ("POST", "/jobs/purge", {"olderThanSeconds": 1e8}),
    "upload": (
        "POST",
        "/uploads/create",
        {"contentType": "text/plain", "filename": "a", "tenantId": "t1"},
    ),
}
# Which routes each role may call (admin: all).
ALLOWED = {
    ADMIN: set(ROUTES),
    "seed-jwt-secret-value": set(ROUTES),
    WORKER: {"pull", "ack", "renew", "start", "release", "stats"},
    PRODUCER: {"enqueue", "upload", "stats"},
}


@pytest.mark.parametrize("token", list(ALLOWED), ids=["admin", "seed_secret", "worker", "producer"])
async def test_each_role_may_call_its_routes_and_is_refused_the_others(
    served: Any, token: str
) -> None:
    _, client = served
    for name, (method, path, body) in ROUTES.items():
        response = await client.request(method, path, json=body, headers=auth(token))
        expected_ok = name in ALLOWED[token]
        assert (response.status_code < 400) == expected_ok, (name, response.text)
        if not expected_ok:
            assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


async def test_no_token_or_a_wrong_one_is_401_and_health_stays_open(served: Any) -> None:
    _, client = served
    for headers in (
        {},
        auth("wrong-token-wrong"),
        {"authorization": "Basic abc"},
        {"authorization": f"bearer{ADMIN}"},
    ):
        response = await client.get("/jobs/stats", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert ADMIN not in response.text
    assert (await client.get("/healthz")).json() == {"ok": True}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": "ok",
        "tree": "running",
    }
    assert (await client.get("/metrics")).status_code == 401


async def test_a_tenant_scoped_token_sees_and_touches_only_its_tenant(served: Any) -> None:
    _, client = served
    own = await enqueue(client, ACME, tenantId="acme", runId="ra", r2Key="acme/ra/a.txt")
    assert own.status_code == 200
    other = await enqueue(client, ACME, tenantId="t1")
    assert other.status_code == 403 and other.json()["error"]["code"] == "wrong_tenant"
    theirs = (await enqueue(client, PRODUCER, tenantId="t1", runId="rt")).json()["jobId"]

    assert (await client.get("/runs/ra", headers=auth(ACME))).status_code == 200
    # Another tenant's run and job answer as if they did not exist (test_http_tenancy.py).
    assert (await client.get("/runs/rt", headers=auth(ACME))).status_code == 404
    assert (await client.get("/runs/rt/events", headers=auth(ACME))).status_code == 404
    assert (await client.get(f"/jobs/{theirs}", headers=auth(ACME))).status_code == 404
    listed = (await client.get("/jobs", headers=auth(ACME))).json()["jobs"]
    assert {job["tenantId"] for job in listed} == {"acme"}
    assert (
        await client.get("/jobs", params={"tenantId": "t1"}, headers=auth(ACME))
    ).status_code == 403
    assert (await client.get("/jobs/stats", headers=auth(ACME))).status_code == 403
    upload = await client.post(
        "/uploads/create",
        headers=auth(ACME),
        json={"contentType": "text/plain", "filename": "a.txt", "tenantId": "t1"},
    )
    assert upload.status_code == 403
    # A scoped worker cannot pull: the queue leases across tenants.
    pulled = await client.post("/jobs/pull", json={}, headers=auth(ACME_WORKER))
    assert pulled.status_code == 403 and pulled.json()["error"]["code"] == "tenant_scoped"


def test_tokens_parse_roles_and_tenants_and_refuse_malformed_entries() -> None:
    tokens = Tokens.parse("aaaaaaaa:admin, bbbbbbbb:worker:acme ,", full_access="cccccccc")
    assert len(tokens) == 3 and "aaaa" not in repr(tokens)
    assert tokens.lookup("bbbbbbbb") is not None and tokens.lookup("bbbbbbbb").tenant == "acme"  # type: ignore[union-attr]
    assert tokens.authenticate("Bearer cccccccc").role == "admin"  # type: ignore[union-attr]
    assert tokens.lookup("bbbbbbb") is None
    for bad in ("x", "aaaaaaaa:root", "tiny:admin", "aaaaaaaa:admin:a:b"):
        with pytest.raises(ConfigError) as caught:
            Tokens.parse(bad)
        assert bad.split(":")[0] not in str(caught.value) or bad == "x"


# --- bad input -----------------------------------------------------------------------------


async def test_bad_input_is_a_400_naming_the_field_and_never_a_500(served: Any) -> None:
    _, client = served
    cases: list[tuple[str, str, Any, int, str | None]] = [
        ("POST", "/jobs/pull", {"max": "ten"}, 400, "max"),
        ("POST", "/jobs/pull", {"max": 0}, 400, "max"),
        ("POST", "/jobs/enqueue", {"runId": "r", "tenantId": "t"}, 400, None),
        ("POST", "/jobs/enqueue", {"runId": "", "tenantId": "t", "r2Key": "k"}, 400, "runId"),
        (
            "POST",
            "/jobs/enqueue",
            {"runId": "r", "tenantId": "t", "r2Key": "k", "priority": 10**30},
            400,
            "priority",
        ),
        ("POST", "/jobs/enqueue-many", {"jobs": [{"runId": 1}]}, 400, "jobs[0].runId"),
        ("POST", "/jobs/ack", {"ids": [2**70], "status": "done"}, 400, "ids[0]"),
        ("POST", "/jobs/ack", {"ids": [1], "status": "maybe"}, 400, "status"),
        ("POST", "/jobs/ack", {}, 400, "ids"),
        ("GET", "/jobs/abc", None, 404, None),
        ("GET", "/jobs/99999999999999999999", None, 400, "jobId"),
        ("GET", "/jobs", {"limit": "0"}, 400, "limit"),
        ("GET", "/jobs", {"cursor": "-1"}, 400, "cursor"),
        ("GET", "/jobs", {"status": "gone"}, 400, "status"),
    ]
    for method, path, body, status, field in cases:
        if method == "GET":
            response = await client.get(path, params=body, headers=auth(ADMIN))
        else:
            response = await client.request(method, path, json=body, headers=auth(ADMIN))
        assert response.status_code == status, (path, body, response.text)
        error = response.json()["error"]
        assert error["message"]
        if field is not None:
            assert error.get("field") == field, (path, body, error)
    infinite = await client.post(
        "/jobs/pull", content=b'{"visibilitySeconds": 1e999}', headers=auth(ADMIN)
    )
    assert infinite.status_code == 400
    raw = await client.post("/jobs/pull", content=b"{not json", headers=auth(ADMIN))
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    surrogate = await client.post(
        "/jobs/enqueue",
        headers=auth(ADMIN),
        content=b'{"runId": "\\ud800", "tenantId": "t", "r2Key": "k"}',
    )
    assert surrogate.status_code == 400
    big = await client.post(
        "/jobs/enqueue", headers=auth(ADMIN), content=b'{"payload": "' + b"x" * 5000 + b'"}'
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    missing = await client.get("/jobs/424242", headers=auth(ADMIN))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    assert (await client.get("/runs/nope", headers=auth(ADMIN))).status_code == 404
    assert (await client.get("/no/such/route")).status_code == 404
    wrong = await client.delete("/jobs/stats", headers=auth(ADMIN))
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert (await client.get("/healthz")).status_code == 200


# --- uploads -------------------------------------------------------------------------------


async def test_an_upload_enqueues_its_job_only_when_the_file_has_arrived(served: Any) -> None:
    system, client = served
    created = await client.post(
        "/uploads/create",
        headers=auth(PRODUCER),
        json={"contentType": "text/plain", "filename": "../../etc/passwd", "tenantId": "t1"},
    )
    assert created.status_code == 201
    upload = created.json()
    assert ".." not in upload["r2Key"] and upload["r2Key"].startswith("t1/")
    assert (await system.stats()).total == 0  # nothing to lease while the upload is in flight
    tampered = upload["uploadUrl"][:-3] + (
        "AAA" if not upload["uploadUrl"].endswith("AAA") else "BBB"
    )
    assert (await client.put(tampered, content=DOC)).status_code == 403
    put = await client.put(upload["uploadUrl"], content=DOC)
    assert put.status_code == 201 and put.json()["status"] == "pending"
    again = await client.put(upload["uploadUrl"], content=DOC)
    assert again.status_code == 409  # single use (test_http_tenancy.py)
    stored = await system.store.get(upload["r2Key"], max_bytes=10_000)
    assert stored.data == DOC
    job = await system.queue.get(put.json()["jobId"])
    assert job.payload == {
        "filename": "../../etc/passwd",
        "contentType": "text/plain",
        "bytes": len(DOC),
    }


class PresigningStore:
    """An object store that signs its own PUTs, as the R2/S3 store does."""

    def __init__(self) -> None:
        self.signed: list[tuple[str, str | None, int]] = []
        self.uploaded: dict[str, int] = {}  # what the client PUT to the presigned URLs

    async def get(self, key: str, *, max_bytes: int) -> Any:
        raise AssertionError("nothing is fetched in this test")

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        raise AssertionError("a presigned upload never passes through this server")

    async def head(self, key: str) -> int | None:
        return self.uploaded.get(key)

    async def presign_put(
        self,
        key: str,
        *,
        expires_seconds: int = 900,
        content_type: str | None = None,
        if_absent: bool = False,
    ) -> str:
        assert if_absent  # upload URLs are single use
        self.signed.append((key, content_type, expires_seconds))
        return f"https://bucket.example/{key}?X-Amz-Signature=abc"

    async def aclose(self) -> None:
        pass


async def test_a_presigned_upload_is_enqueued_when_the_client_completes_it(
    tmp_path: Path,
) -> None:
    store = PresigningStore()
    async with (
        ActorSystem(make_config(tmp_path), store=store) as system,  # type: ignore[arg-type]
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.http.port}") as client,
    ):
        created = (
            await client.post(
                "/uploads/create",
                headers=auth(ACME),
                json={"contentType": "application/pdf", "filename": "r.pdf", "tenantId": "acme"},
            )
        ).json()
        assert created["uploadUrl"].startswith("https://bucket.example/acme/")
        assert store.signed == [(created["r2Key"], "application/pdf", 3600)]
        assert (await system.stats()).total == 0
        complete = {"token": created["uploadToken"]}
        early = await client.post(created["completeUrl"], json=complete, headers=auth(ACME))
        assert early.status_code == 409 and early.json()["error"]["code"] == "upload_missing"
        assert (await system.stats()).total == 0
        store.uploaded[created["r2Key"]] = 10
        other = await client.post(created["completeUrl"], json=complete, headers=auth(PRODUCER))
        assert other.status_code == 201  # an unscoped producer may complete it too
        again = await client.post(created["completeUrl"], json=complete, headers=auth(ACME))
        assert again.json()["jobId"] == other.json()["jobId"]
        forged = await client.post(
            created["completeUrl"], headers=auth(ACME), json={"token": created["uploadToken"] + "x"}
        )
        assert forged.status_code == 403
        assert (await system.stats()).pending == 1


# --- streams and load ----------------------------------------------------------------------


class WsClient:
    """A minimal WebSocket client over an anyio TCP stream (wsproto does the framing)."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.closed_reason: str | None = None

    async def open(self, path: str, token: str | None) -> bool:
        """Whether the server accepts; ``token`` goes in a bearer header (None: no header)."""
        headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
        await self.stream.send(
            self.conn.send(ws.Request(host="127.0.0.1", target=path, extra_headers=headers))
        )
        async for event in self.events():
            if isinstance(event, ws.CloseConnection):
                self.closed_reason = event.reason
            elif isinstance(event, ws.RejectConnection):
                self.closed_reason = f"rejected {event.status_code}"
            return isinstance(event, ws.AcceptConnection)
        return False

    async def events(self) -> AsyncIterator[ws.Event]:
        while True:
            try:
                data = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            self.conn.receive_data(data)
            for event in self.conn.events():
                yield event
                if isinstance(event, ws.CloseConnection):
                    return


async def test_run_events_arrive_over_a_websocket_until_the_run_ends(tmp_path: Path) -> None:
    async with ActorSystem(make_config(tmp_path, queue_only=False)) as system:
        await system.store.put("t1/r9/a.txt", DOC)
        await system.enqueue("r9", "t1", "t1/r9/a.txt")
        async with await anyio.connect_tcp("127.0.0.1", system.http.port) as stream:
            client = WsClient(stream)
            assert await client.open("/runs/r9/ws", PRODUCER)
            updates = []
            with anyio.fail_after(10):
                async for event in client.events():
                    if isinstance(event, ws.BytesMessage | ws.TextMessage):
                        updates.append(json.loads(bytes(event.data)))
            assert updates[-1]["run"]["status"] == "done"
        async with await anyio.connect_tcp("127.0.0.1", system.http.port) as stream:
            assert not await WsClient(stream).open("/runs/r9/ws", "not-a-token-at-all")


async def test_clients_that_disconnect_mid_stream_or_read_slowly_leave_the_server_healthy(
    served: Any,
) -> None:
    system, client = served
    await enqueue(client, runId="rs", r2Key="t1/rs/a.txt")
    # Ten watchers hang up half-way through their streams.
    for _ in range(10):
        async with client.stream("GET", "/runs/rs/events", headers=auth(PRODUCER)) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break
    # A raw client that sends half a request and stalls, and one that never reads its stream.
    stalled = await anyio.connect_tcp("127.0.0.1", system.http.port)
    await stalled.send(b"POST /jobs/pull HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
    lazy = await anyio.connect_tcp("127.0.0.1", system.http.port)
    await lazy.send(
        f"GET /runs/rs/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        f"{PRODUCER}\r\n\r\n".encode()
    )
    with anyio.fail_after(10):
        assert (await client.get("/healthz")).status_code == 200
        room = await system._room("rs")
        await until(lambda: room.subscribers <= 1)  # only the lazy reader is still subscribed
    await stalled.aclose()
    await lazy.aclose()
    with anyio.fail_after(10):
        await until(lambda: room.subscribers == 0)
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.slow  # 2 to 3 s on each runtime
async def test_two_hundred_concurrent_requests_are_all_answered_and_lose_nothing(
    served: Any,
) -> None:
    system, client = served
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=str(client.base_url), limits=limits, timeout=30) as many:
        statuses: list[int] = []

        async def one(i: int) -> None:
            response = await many.post(
                "/jobs/enqueue",
                headers=auth(PRODUCER),
                json={"runId": "load", "tenantId": "t1", "r2Key": f"t1/load/{i}.txt"},
            )
            statuses.append(response.status_code)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(one, i)
    assert statuses == [200] * 200
    assert (await system.stats()).pending == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_metrics_show_jobs_latencies_outcomes_and_restarts(served: Any) -> None:
    system, client = served
    await enqueue(client, runId="rm", r2Key="t1/rm/a.txt")
    job = (await client.post("/jobs/pull", json={}, headers=auth(WORKER))).json()["jobs"][0]
    await client.post(
        "/jobs/ack",
        headers=auth(WORKER),
        json={
            "acks": [
                {"id": job["id"], "leaseToken": job["leaseToken"], "runMetrics": {"tokens": 42}}
            ]
        },
    )
    text = (await client.get("/metrics", headers=auth(ADMIN))).text
    for needle in (
        'actors_jobs{status="done"} 1.0',
        'actors_http_acks_total{outcome="done"} 1.0',
        "actors_job_lease_latency_seconds_count 1.0",
        "actors_job_processing_seconds_count 1.0",
        'actors_http_request_seconds_bucket{le="+Inf",route="pull"} 1.0',
        'actors_run_metric_total{name="tokens"} 42.0',
        'actors_pipeline_outcomes_total{outcome="done"} 0.0',
    ):
        assert needle in text, needle
    system.http.metrics.restarts.clear()
    system.tree.events.publish(
        __import__("supervisors").LifecycleEvent(
            kind="restarted", supervisor="actors", child="fetcher-0", at=0.0
        )
    )
    with anyio.fail_after(5):
        await until(lambda: "fetcher-0" in system.http.metrics.restarts)
    assert (
        'actors_actor_restarts_total{child="fetcher-0"} 1.0'
        in (await client.get("/metrics", headers=auth(ADMIN))).text
    )


async def test_metrics_show_what_is_paused_read_at_each_scrape(served: Any) -> None:
    """The pause state, queue-wide and per tenant, as gauges parsed by prometheus_client."""
    _, client = served

    async def paused() -> tuple[float, dict[str, float]]:
        text = (await client.get("/metrics", headers=auth(WORKER))).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["actors_queue_paused"].type == "gauge"
        assert families["actors_tenant_paused"].type == "gauge"
        (queue,) = [s.value for s in families["actors_queue_paused"].samples]
        tenants = {s.labels["tenant"]: s.value for s in families["actors_tenant_paused"].samples}
        return queue, tenants

    async def control(action: str, tenant: str | None = None) -> None:
        body = {} if tenant is None else {"tenantId": tenant}
        r = await client.post(f"/queue/{action}", json=body, headers=auth(ADMIN))
        assert r.status_code == 200, r.text

    assert await paused() == (0.0, {})
    await control("pause", "acme")
    await control("pause", 'we"ird\\tenant')  # label escaping is the library's
    assert await paused() == (0.0, {"acme": 1.0, 'we"ird\\tenant': 1.0})
    await control("pause")
    assert await paused() == (1.0, {"acme": 1.0, 'we"ird\\tenant': 1.0})
    await control("resume", "acme")
    await control("resume")
    assert await paused() == (0.0, {'we"ird\\tenant': 1.0})


async def test_metrics_parse_with_prometheus_clients_own_parser(served: Any) -> None:
    system, client = served
    for name in ("a", "b", "c"):
        await enqueue(client, runId="rp", r2Key=f"t1/rp/{name}.txt")
    pulled = await client.post("/jobs/pull", json={"max": 2}, headers=auth(WORKER))
    first, second = pulled.json()["jobs"]
    acks = [
        {"id": first["id"], "leaseToken": first["leaseToken"], "runMetrics": {"tokens": 5}},
        {
            "id": second["id"],
            "leaseToken": second["leaseToken"],
            "status": "failed",
            "error": "broken",
            "permanent": True,
        },
    ]
    assert (await client.post("/jobs/ack", json={"acks": acks}, headers=auth(WORKER))).is_success
    response = await client.get("/metrics", headers=auth(WORKER))
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    def value(family: str, sample: str, **labels: str) -> float:
        (found,) = [
            s.value for s in families[family].samples if s.name == sample and s.labels == labels
        ]
        return found

    # A counter's family drops the _total its sample keeps.
    for counter in (
        "actors_pipeline_outcomes",
        "actors_run_metric",
        "actors_http_requests",
        "actors_http_acks",
        "actors_actor_restarts",
    ):
        assert families[counter].type == "counter", counter
    for gauge in (
        "actors_jobs",
        "actors_jobs_scheduled",
        "actors_oldest_pending_age_seconds",
        "actors_event_loop_lag_seconds",
        "actors_tree_children",
        "actors_queue_paused",
        "actors_tenant_paused",
    ):
        assert families[gauge].type == "gauge", gauge
    assert families["actors_http_request_seconds"].type == "histogram"
    assert families["actors_job_processing_seconds"].type == "histogram"
    stats = await system.queue.stats()
    assert (stats.pending, stats.leased, stats.done, stats.failed) == (1, 0, 1, 1)
    for status in ("pending", "leased", "done", "failed"):
        assert value("actors_jobs", "actors_jobs", status=status) == getattr(stats, status)
    assert value("actors_run_metric", "actors_run_metric_total", name="tokens") == 5
    children = system.tree.count_children()
    assert value("actors_tree_children", "actors_tree_children", state="specs") == children.specs
    assert value("actors_tree_children", "actors_tree_children", state="active") == children.active
    assert children.specs > 0
    assert value("actors_http_acks", "actors_http_acks_total", outcome="done") == 1
    assert value("actors_http_acks", "actors_http_acks_total", outcome="failed") == 1
    assert value("actors_job_processing_seconds", "actors_job_processing_seconds_count") == 2
    assert (
        value("actors_http_requests", "actors_http_requests_total", route="enqueue", status="200")
        == 3
    )
    # The process metrics prometheus_client brings (process_* read /proc, so Linux only).
    assert "python_info" in families and "python_gc_collections" in families
    if sys.platform.startswith("linux"):
        assert families["process_cpu_seconds"].type == "counter"
        assert value("process_cpu_seconds", "process_cpu_seconds_total") > 0
        assert value("process_resident_memory_bytes", "process_resident_memory_bytes") > 0


async def test_a_cancel_reports_what_it_did_per_job_and_a_remote_workers_ack_is_refused(
    served: Any,
) -> None:
    _, client = served
    leased_id = (await enqueue(client, r2Key="t1/r1/a.txt")).json()["jobId"]
    (pulled,) = (await client.post("/jobs/pull", json={"max": 1}, headers=auth(WORKER))).json()[
        "jobs"
    ]
    assert pulled["id"] == leased_id
    pending_id = (await enqueue(client, r2Key="t1/r1/b.txt")).json()["jobId"]
    response = await client.post(
        "/jobs/cancel", json={"ids": [leased_id, pending_id, 987654]}, headers=auth(PRODUCER)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is False  # one id named no job
    assert [(r["id"], r["outcome"]) for r in body["results"]] == [
        (leased_id, "cancel_requested"),
        (pending_id, "cancelled"),
        (987654, "not_found"),
    ]
    assert body["results"][0]["job"]["status"] == "leased"
    assert body["results"][0]["job"]["cancelRequestedAt"] is not None
    assert body["results"][1]["job"]["status"] == "cancelled"
    # The worker learns it at its renewal; its ack is refused, and that ends the job cancelled.
    lease = {"id": leased_id, "leaseToken": pulled["leaseToken"]}
    renewed = await client.post("/jobs/renew", json={"leases": [lease]}, headers=auth(WORKER))
    assert [(r["ok"], r["reason"]) for r in renewed.json()["results"]] == [(False, "cancelled")]
    acked = await client.post(
        "/jobs/ack", json={"acks": [{**lease, "status": "done"}]}, headers=auth(WORKER)
    )
    (item,) = acked.json()["results"]
    assert (item["ok"], item["reason"], item["status"]) == (False, "cancelled", "cancelled")
    job = (await client.get(f"/jobs/{leased_id}", headers=auth(ADMIN))).json()
    assert (job["status"], job["result"]) == ("cancelled", None)
    again = await client.post(f"/jobs/{pending_id}/cancel", headers=auth(PRODUCER))
    assert again.json()["results"][0]["outcome"] == "already_cancelled"
    run = (await client.get("/runs/r1", headers=auth(ADMIN))).json()
    assert (run["status"], run["cancelled"], run["total"]) == ("cancelled", 2, 2)
    stats = (await client.get("/jobs/stats", headers=auth(ADMIN))).json()["stats"]
    assert (stats["cancelled"], stats["pending"], stats["leased"]) == (2, 0, 0)
    listed = await client.get("/jobs", params={"status": "cancelled"}, headers=auth(ADMIN))
    assert [j["id"] for j in listed.json()["jobs"]] == [leased_id, pending_id]
    text = (await client.get("/metrics", headers=auth(ADMIN))).text
    assert 'actors_jobs{status="cancelled"} 2.0' in text
    assert 'actors_http_acks_total{outcome="cancelled"} 1.0' in text


async def test_stats_and_metrics_report_a_delayed_job_as_scheduled_not_as_late(
    served: Any,
) -> None:
    _, client = served
    assert (await enqueue(client, r2Key="t1/r1/later.txt", delaySeconds=3600)).status_code == 200
    body = (await client.get("/jobs/stats", headers=auth(ADMIN))).json()["stats"]
    # The seed's fields keep their meaning (`pending` counts the delayed job); `scheduled` is new.
    assert body == {
        "pending": 1,
        "leased": 0,
        "done": 0,
        "failed": 0,
        "scheduled": 1,
        "oldestPendingAgeSeconds": None,
        "cancelled": 0,
        "paused": False,
        "pausedTenants": [],
    }
    text = (await client.get("/metrics", headers=auth(ADMIN))).text
    for needle in (
        'actors_jobs{status="pending"} 1.0',
        "actors_jobs_scheduled 1.0",
        "actors_oldest_pending_age_seconds 0.0",
    ):
        assert needle in text, needle
    # A client of the HTTP backend reads the same figures.
    async with HttpQueue.open(str(client.base_url), ADMIN) as remote:
        stats = await remote.stats()
    assert (stats.pending, stats.scheduled, stats.oldest_pending_age_seconds) == (1, 1, None)


async def test_maintenance_runs_where_the_queue_is_opened_not_in_its_http_clients(
    served: Any, tmp_path: Path
) -> None:
    server, client = served
    assert "maintenance" in {c.id for c in server.tree.which_children()}  # queue_only included
    remote = Config(
        queue=QueueConfig(backend="http", url=str(client.base_url)),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        secrets=Secrets(api_token=Secret(WORKER)),
    )
    async with ActorSystem(remote) as worker:
        children = {c.id for c in worker.tree.which_children()}
    assert "source" in children and "maintenance" not in children


async def test_the_app_serves_exactly_the_routes_its_openapi_document_lists(
    served: tuple[ActorSystem, httpx.AsyncClient],
) -> None:
    system, client = served
    document = (await client.get("/openapi.json")).json()
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    served_routes = {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in system.http.app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette adds HEAD to every GET
    }
    sockets = [route.path for route in system.http.app.routes if isinstance(route, WebSocketRoute)]
    assert served_routes == documented
    assert sockets == ["/runs/{run_id}/ws"]  # OpenAPI cannot describe a WebSocket


async def test_metrics_need_a_token_for_every_tenant_by_default(tmp_path: Path) -> None:
    """A scraper is a reader like any other: no token, a wrong one or a tenant's is refused."""
    config = make_config(tmp_path)
    assert config.http.metrics == "token"  # the default, not set here
    keys = Secrets(
        http_tokens=Secret(TOKENS),
        queue_api_key=Secret("queue-api-key-0123456789"),
        admin_api_key=Secret("admin-api-key-0123456789"),
    )
    async with (
        ActorSystem(msgspec.structs.replace(config, secrets=keys)) as system,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.http.port}") as client,
    ):
        for headers in (
            {},
            auth("not-a-token-at-all"),
            {"x-api-key": "not-a-key-at-all"},
            {"authorization": f"Basic {ADMIN}"},
        ):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401 and "actors_jobs" not in refused.text, headers
        scoped = await client.get("/metrics", headers=auth(ACME))
        assert scoped.status_code == 403 and "actors_jobs" not in scoped.text
        for headers in (
            auth(WORKER),
            auth(PRODUCER),
            auth(ADMIN),
            {"x-api-key": "queue-api-key-0123456789"},
            {"x-api-key": "admin-api-key-0123456789"},
        ):
            scraped = await client.get("/metrics", headers=headers)
            assert scraped.status_code == 200, headers
            assert any(
                f.name == "actors_jobs" for f in text_string_to_metric_families(scraped.text)
            )
        assert (await client.get("/healthz")).status_code == 200
        document = (await client.get("/openapi.json")).json()
    assert document["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]


async def test_open_metrics_are_an_explicit_choice_warned_about_off_loopback(
    tmp_path: Path,
) -> None:
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        (tmp_path / host).mkdir()
        config = make_config(tmp_path / host, metrics="open", host=host)
        with capture_logs() as logs:
            async with (
                ActorSystem(config) as system,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.http.port}") as client,
            ):
                assert (await client.get("/metrics")).status_code == 200
                document = (await client.get("/openapi.json")).json()
        assert document["paths"]["/metrics"]["get"]["security"] == []  # open: no scheme
        warnings = [e for e in logs if e["event"] == "http.metrics_public"]
        assert len(warnings) == warned, (host, warnings)
        if warned:
            assert warnings[0]["log_level"] == "warning" and warnings[0]["host"] == host
            assert 'metrics = "open"' in warnings[0]["hint"]


async def test_the_fastest_server_that_runs_on_the_event_loop_serves(served: Any) -> None:
    system, client = served
    # docs/decisions.md, "The ASGI server": uvicorn with httptools on asyncio, hypercorn on trio.
    expected = {"asyncio": "uvicorn (httptools)", "trio": "hypercorn"}
    assert system.http.served_by == expected[sniffio.current_async_library()]
    assert (await client.get("/healthz")).status_code == 200


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd (Linux)")
async def test_the_servers_connections_send_without_nagles_delay(served: Any) -> None:
    """A response is written in two parts (head, then body): with Nagle's algorithm on, the
    body waits for the client's delayed ACK of the head, 40 ms a request on Linux."""
    system, _ = served
    port = system.http.port
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await stream.receive()).startswith(b"HTTP/1.1 200")
        mine = stream.extra(anyio.abc.SocketAttribute.local_address)
        # The server runs in this process: its end of this connection is one of our sockets.
        ends = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                sock = socket.socket(fileno=os.dup(int(fd)))
            except OSError:
                continue  # not a socket, or gone since the listing
            with sock:
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                try:
                    if sock.getsockname()[1] == port and sock.getpeername() == mine:
                        ends.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                except OSError:
                    continue  # a socket of another kind, or not connected
    assert ends == [1]


async def test_an_embedders_middleware_and_mount_see_the_api_routes_as_served(
    served: Any,
) -> None:
    """The app takes a shortcut to its fixed-path routes; an embedder's middleware still sees
    them, and under a mount they still answer (both the whole way through Starlette)."""
    system, _ = served
    seen: list[str] = []

    class Tap:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                seen.append(scope["path"])
            await self.app(scope, receive, send)

    tapped = create_app(system)
    tapped.add_middleware(Tap)
    mounted = Starlette(routes=[Mount("/ops", app=create_app(system))])
    job = {"runId": "r1", "tenantId": "t1", "r2Key": "t1/r1/a.txt"}
    for app, prefix in ((tapped, ""), (mounted, "/ops")):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            enqueued = await client.post(f"{prefix}/jobs/enqueue", json=job, headers=auth(PRODUCER))
            assert enqueued.status_code == 200, enqueued.text
            assert (await client.post(f"{prefix}/jobs/enqueue", json=job)).status_code == 401
            assert (await client.get(f"{prefix}/jobs/enqueue")).status_code == 405
            pulled = await client.post(f"{prefix}/jobs/pull", json={"max": 1}, headers=auth(WORKER))
            assert [j["id"] for j in pulled.json()["jobs"]] == [enqueued.json()["jobId"]]
    assert seen == ["/jobs/enqueue"] * 3 + ["/jobs/pull"]


async def test_a_crashed_server_is_restarted_by_its_supervisor_and_serves_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actors.http import _server as server_module

    real = server_module._make_server
    crashes = 0

    class FallsOver:
        name = "falls over"

        async def serve(self) -> None:
            raise RuntimeError("the server fell over")

        def stop(self) -> None:
            pass

        def close_now(self) -> None:
            pass

    def crash_once(app: Any, sock: Any) -> Any:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            return FallsOver()
        return real(app, sock)

    monkeypatch.setattr(server_module, "_make_server", crash_once)
    async with ActorSystem(make_config(tmp_path)) as system:
        first = system.http
        with anyio.fail_after(10):
            await until(lambda: system.http is not first and system.http.port is not None)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.http.port}") as client:
            with anyio.fail_after(10):
                assert (await client.get("/readyz")).json()["ready"] is True
        restarts = {c.id: c.restarts for c in system.tree.which_children()}
        assert crashes == 1 and restarts["http"] == 0  # the group restarted its child itself
