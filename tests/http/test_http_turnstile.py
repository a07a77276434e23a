"""/uploads/create without a bearer token, when Turnstile protects it (TURNSTILE_SECRET set).

A real server on a socket asks a local fake siteverify (``fake_siteverify.py``) that answers in
Cloudflare's JSON; each refusal is a clear 4xx, an unreachable or broken siteverify a 503, and
nothing is stored for a refused request.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_siteverify import SECRET, FakeSiteverify, fake_siteverify
from http_helpers import ACME, ADMIN, PRODUCER, TOKENS, auth

from actors.config import (
    Config,
    HttpConfig,
    PipelineConfig,
    QueueConfig,
    Secret,
    Secrets,
    StorageConfig,
)
from actors.system import ActorSystem

pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]

Served = tuple[ActorSystem, httpx.AsyncClient]
UPLOAD = {"contentType": "text/plain", "filename": "note.txt", "tenantId": "public"}


def make_config(tmp_path: Path, url: str, *, secret: str | None = SECRET, **http: Any) -> Config:
    settings: dict[str, Any] = {
        "turnstile_tenants": ["public"],
        "turnstile_verify_url": url,
        # Long enough for a loaded machine (a good answer must never time out), well short of
        # the fake's `slow` answer (SLOW_SECONDS).
        "turnstile_timeout_seconds": 2.5,
        **http,
    }
    return Config(
        queue=QueueConfig(path=str(tmp_path / "q.db"), poll_interval_seconds=0.05),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        http=HttpConfig(enabled=True, port=0, queue_only=True, **settings),
        secrets=Secrets(
            http_tokens=Secret(TOKENS),
            turnstile_secret=Secret(secret) if secret is not None else None,
        ),
    )


@pytest.fixture
def siteverify() -> Iterator[FakeSiteverify]:
    with fake_siteverify() as fake:
        yield fake


async def serve(config: Config) -> AsyncIterator[Served]:
    async with ActorSystem(config) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield system, client


@pytest.fixture
async def served(tmp_path: Path, siteverify: FakeSiteverify) -> AsyncIterator[Served]:
    async for value in serve(make_config(tmp_path, siteverify.url)):
        yield value


async def nothing_stored(system: ActorSystem, tmp_path: Path) -> bool:
    objects = tmp_path / "objects"
    return (await system.stats()).total == 0 and not (objects.exists() and any(objects.iterdir()))


@pytest.mark.runtimes("asyncio", "trio")
async def test_a_verified_turnstile_token_creates_an_upload_of_an_allowed_tenant(
    served: Served, siteverify: FakeSiteverify
) -> None:
    system, client = served
    created = await client.post("/uploads/create", json={**UPLOAD, "turnstileToken": "good"})
    assert created.status_code == 201, created.text
    upload = created.json()
    assert upload["r2Key"].startswith("public/")
    assert siteverify.requests == [{"secret": SECRET, "response": "good"}]
    put = await client.put(upload["uploadUrl"], content=b"hello", headers=upload["uploadHeaders"])
    assert put.status_code == 201, put.text
    job = await system.queue.get(put.json()["jobId"])
    assert (job.tenant_id, job.r2_key, job.status) == ("public", upload["r2Key"], "pending")


async def test_the_token_may_come_in_the_header_or_the_widgets_form_field(
    served: Served, siteverify: FakeSiteverify
) -> None:
    _, client = served
    by_header = await client.post(
        "/uploads/create",
        json=UPLOAD,
        headers={"CF-Turnstile-Response": "good", "CF-Connecting-IP": "203.0.113.7"},
    )
    assert by_header.status_code == 201, by_header.text
    by_field = await client.post(
        "/uploads/create", json={**UPLOAD, "cf-turnstile-response": "good"}
    )
    assert by_field.status_code == 201, by_field.text
    assert siteverify.requests[0] == {
        "secret": SECRET,
        "response": "good",
        "remoteip": "203.0.113.7",
    }


async def test_refused_tokens_are_clear_4xx_errors_and_store_nothing(
    served: Served, siteverify: FakeSiteverify, tmp_path: Path
) -> None:
    system, client = served
    missing = await client.post("/uploads/create", json=UPLOAD)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "turnstile_required"
    assert "CF-Turnstile-Response" in missing.json()["error"]["message"]
    for token, reason in (("bad", "invalid-input-response"), ("used", "timeout-or-duplicate")):
        refused = await client.post("/uploads/create", json={**UPLOAD, "turnstileToken": token})
        assert refused.status_code == 403, token
        error = refused.json()["error"]
        assert (error["code"], error["field"]) == ("turnstile_failed", "turnstileToken")
        assert reason in error["message"]
    too_long = await client.post("/uploads/create", json={**UPLOAD, "turnstileToken": "x" * 2049})
    assert too_long.status_code == 400
    assert len(siteverify.requests) == 2  # neither the missing nor the oversized token was sent
    assert await nothing_stored(system, tmp_path)


async def test_only_the_configured_tenants_may_upload_with_turnstile(
    served: Served, siteverify: FakeSiteverify, tmp_path: Path
) -> None:
    system, client = served
    other = await client.post(
        "/uploads/create", json={**UPLOAD, "tenantId": "acme", "turnstileToken": "good"}
    )
    assert other.status_code == 403
    error = other.json()["error"]
    assert (error["code"], error["field"]) == ("turnstile_tenant", "tenantId")
    assert "[http].turnstile_tenants" in error["message"]
    assert siteverify.requests == []  # refused before asking siteverify
    assert await nothing_stored(system, tmp_path)
    # A bearer token still works for every tenant its role and scope allow.
    own = await client.post(
        "/uploads/create", json={**UPLOAD, "tenantId": "acme"}, headers=auth(ACME)
    )
    assert own.status_code == 201, own.text
    foreign = await client.post("/uploads/create", json=UPLOAD, headers=auth(ACME))
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "wrong_tenant"
    # A wrong bearer token is a 401, never a fall back to Turnstile.
    wrong = await client.post(
        "/uploads/create", json={**UPLOAD, "turnstileToken": "good"}, headers=auth("nope" * 4)
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    # Turnstile opens /uploads/create alone.
    for path in ("/jobs/stats", "/jobs"):
        assert (
            await client.get(path, headers={"CF-Turnstile-Response": "good"})
        ).status_code == 401
    enqueue = {
        "runId": "r",
        "tenantId": "public",
        "r2Key": "public/r/a.txt",
        "turnstileToken": "good",
    }
    assert (await client.post("/jobs/enqueue", json=enqueue)).status_code == 401


async def test_every_tenant_with_a_star_and_hostname_and_action_checked_when_configured(
    tmp_path: Path, siteverify: FakeSiteverify
) -> None:
    config = make_config(
        tmp_path,
        siteverify.url,
        turnstile_tenants=["*"],
        turnstile_hostnames=["uploads.example.com"],
        turnstile_action="upload",
    )
    async for _, client in serve(config):
        ok = await client.post(
            "/uploads/create", json={**UPLOAD, "tenantId": "anyone", "turnstileToken": "good"}
        )
        assert ok.status_code == 201, ok.text
        for token, code in (
            ("other-host", "turnstile_hostname"),
            ("other-action", "turnstile_action"),
        ):
            refused = await client.post("/uploads/create", json={**UPLOAD, "turnstileToken": token})
            assert (refused.status_code, refused.json()["error"]["code"]) == (403, code)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/siteverify"


async def test_a_siteverify_that_cannot_answer_is_a_503_never_an_open_door(
    tmp_path: Path, siteverify: FakeSiteverify
) -> None:
    async for system, client in serve(make_config(tmp_path / "down", closed_port_url())):
        down = await client.post("/uploads/create", json={**UPLOAD, "turnstileToken": "good"})
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "turnstile_unavailable"
        assert await nothing_stored(system, tmp_path / "down")
    async for system, client in serve(make_config(tmp_path / "broken", siteverify.url)):
        for token in ("slow", "boom", "garbled"):
            broken = await client.post("/uploads/create", json={**UPLOAD, "turnstileToken": token})
            assert broken.status_code == 503, token
            assert broken.json()["error"]["code"] == "turnstile_unavailable"
        assert await nothing_stored(system, tmp_path / "broken")
    config = make_config(tmp_path / "secret", siteverify.url, secret="not-the-secret")
    async for _, client in serve(config):
        misconfigured = await client.post(
            "/uploads/create", json={**UPLOAD, "turnstileToken": "good"}
        )
        assert misconfigured.status_code == 503
        error = misconfigured.json()["error"]
        assert error["code"] == "turnstile_misconfigured" and "TURNSTILE_SECRET" in error["message"]
        assert "not-the-secret" not in misconfigured.text


async def test_without_turnstile_secret_the_bearer_rule_stays(
    tmp_path: Path, siteverify: FakeSiteverify
) -> None:
    async for _, client in serve(make_config(tmp_path, siteverify.url, secret=None)):
        anonymous = await client.post("/uploads/create", json={**UPLOAD, "turnstileToken": "good"})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"
        assert siteverify.requests == []
        with_token = await client.post("/uploads/create", json=UPLOAD, headers=auth(PRODUCER))
        assert with_token.status_code == 201
        assert (await client.get("/jobs/stats", headers=auth(ADMIN))).status_code == 200


class PresigningStore:
    """An object store that signs its own PUTs, as the R2/S3 store does."""

    def __init__(self) -> None:
        self.uploaded: dict[str, int] = {}  # what the client PUT to the presigned URLs

    async def get(self, key: str, *, max_bytes: int) -> Any:
        raise AssertionError("nothing is fetched in this test")

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        raise AssertionError("a presigned upload never passes through this server")

    async def head(self, key: str) -> int | None:
        return self.uploaded.get(key)

    async def presign_put(self, key: str, **options: Any) -> str:
        return f"https://bucket.example/{key}?X-Amz-Signature=abc"

    async def aclose(self) -> None:
        pass


async def test_a_browser_completes_its_presigned_upload_with_the_signed_token_alone(
    tmp_path: Path, siteverify: FakeSiteverify
) -> None:
    store = PresigningStore()
    config = make_config(tmp_path, siteverify.url, turnstile_tenants=["public", "other"])
    async with (
        ActorSystem(config, store=store) as system,  # type: ignore[arg-type]
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.http.port}") as client,
    ):
        created = await client.post("/uploads/create", json={**UPLOAD, "turnstileToken": "good"})
        assert created.status_code == 201, created.text
        upload = created.json()
        store.uploaded[upload["r2Key"]] = 5  # the browser's PUT to the presigned URL
        done = await client.post(upload["completeUrl"], json={"token": upload["uploadToken"]})
        assert done.status_code == 201, done.text
        job = await system.queue.get(done.json()["jobId"])
        assert (job.tenant_id, job.r2_key) == ("public", upload["r2Key"])
        forged = await client.post(
            upload["completeUrl"], json={"token": upload["uploadToken"] + "x"}
        )
        assert forged.status_code == 403
        # A grant of a tenant that may not use Turnstile needs a producer's token to complete.
        private = await client.post(
            "/uploads/create", json={**UPLOAD, "tenantId": "acme"}, headers=auth(ACME)
        )
        grant = private.json()
        store.uploaded[grant["r2Key"]] = 5
        refused = await client.post(grant["completeUrl"], json={"token": grant["uploadToken"]})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "turnstile_tenant"
