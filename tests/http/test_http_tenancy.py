"""Tenant isolation over real HTTP: keys, reads, non-ASCII tenants, tokens in URLs, uploads.

The invariant (ARCHITECTURE.md): a tenant-scoped token reads and names only its own tenant's
objects, jobs, results, runs and events; another tenant's are answered as if they did not exist.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import msgspec
import pytest
from http_helpers import ACME, ACME_WORKER, ADMIN, PRODUCER, TOKENS, WORKER, auth
from test_http_api import WsClient

from actors.config import (
    Config,
    HttpConfig,
    PipelineConfig,
    QueueConfig,
    Secret,
    Secrets,
    StorageConfig,
)
from actors.errors import ConfigError, ForeignObjectKey, InvalidArgument, ObjectMissing
from actors.http import Tokens
from actors.queue.http import HttpQueue
from actors.storage import LocalObjectStore, StoredObject
from actors.system import ActorSystem

pytestmark = pytest.mark.anyio

SECRET_TEXT = b"Tenant t1's merger plan: buy the harbour ferries in March. Keep this private.\n"
OWN_TEXT = b"Acme's own notes: the pier needs repair before the ferries run again in spring.\n"
# A tenant and a token beyond ASCII (hmac.compare_digest refuses non-ASCII str).
ZURICH = "zürich"
ZURICH_TOKEN = "zürich-tøken-0123456"
ZURICH_WORKER = "wörker-tøken-0123456"
SCOPED_ADMIN = "scoped-admin-token-0123"
ALL_TOKENS = (
    f"{TOKENS},{ZURICH_TOKEN}:producer:{ZURICH},{ZURICH_WORKER}:worker,{SCOPED_ADMIN}:admin:acme"
)


def config(tmp_path: Path, *, queue_only: bool = True) -> Config:
    return Config(
        queue=QueueConfig(
            path=str(tmp_path / "q.db"),
            poll_interval_seconds=0.05,
            visibility_seconds=30,
            retry_base_seconds=0.01,
        ),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        http=HttpConfig(enabled=True, port=0, queue_only=queue_only),
        secrets=Secrets(http_tokens=Secret(ALL_TOKENS)),
    )


class CountingStore(LocalObjectStore):
    """The local store, counting the reads it is asked for (to prove an object stayed unread)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    async def get(self, key: str, *, max_bytes: int) -> StoredObject:
        self.reads.append(key)
        return await super().get(key, max_bytes=max_bytes)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ActorSystem, httpx.AsyncClient]]:
    async with ActorSystem(config(tmp_path)) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield system, client


async def enqueue(client: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    return await client.post("/jobs/enqueue", json=body, headers=auth(token))


async def finished(system: ActorSystem) -> None:
    with anyio.fail_after(20):
        await system.wait_idle()


# --- object keys belong to the job's tenant ----------------------------------------------------


async def test_a_scoped_producer_cannot_have_another_tenants_object_processed_for_it(
    tmp_path: Path,
) -> None:
    """The attack: acme enqueues t1's predictable key under its own tenant and reads the result."""
    async with (
        ActorSystem(config(tmp_path, queue_only=False)) as system,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.http.port}", timeout=10) as client,
    ):
        await system.store.put("t1/r1/plan.txt", SECRET_TEXT)
        await system.enqueue("r1", "t1", "t1/r1/plan.txt")
        await system.store.put("acme/ra/notes.txt", OWN_TEXT)
        attack = {"runId": "ra", "tenantId": "acme", "r2Key": "t1/r1/plan.txt"}
        refused = await enqueue(client, ACME, **attack)
        many = await client.post(
            "/jobs/enqueue-many",
            headers=auth(ACME),
            json={"jobs": [{**attack, "r2Key": "acme/ra/notes.txt"}, attack]},
        )
        await finished(system)
        listed = await client.get("/jobs", params={"runId": "ra"}, headers=auth(ACME))
        assert "merger plan" not in listed.text
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert error["code"] == "foreign_object_key" and error["field"] == "r2Key"
        assert "'acme/'" in error["message"]
        assert many.status_code == 403 and many.json()["error"]["field"] == "jobs[1].r2Key"
        assert listed.json()["jobs"] == []  # nothing was enqueued, not even the good one
        assert (await system.stats()).total == 1  # t1's own job only


async def test_an_admin_may_enqueue_any_key_and_only_an_admin_may_say_so(served: Any) -> None:
    system, client = served
    crossed = await enqueue(client, ADMIN, runId="rx", tenantId="acme", r2Key="t1/r1/a.txt")
    assert crossed.status_code == 200, crossed.text
    job = await system.queue.get(crossed.json()["jobId"])
    assert job.cross_tenant_key is True
    own = await enqueue(client, ADMIN, runId="ry", tenantId="acme", r2Key="acme/ry/a.txt")
    assert (await system.queue.get(own.json()["jobId"])).cross_tenant_key is False
    for token in (PRODUCER, ACME):
        claimed = await enqueue(
            client, token, runId="rz", tenantId="acme", r2Key="acme/rz/a.txt", crossTenantKey=True
        )
        assert claimed.status_code == 403, claimed.text
        assert claimed.json()["error"]["field"] == "crossTenantKey"
    assert (await system.stats()).total == 2


async def test_tenant_ids_with_a_slash_and_malformed_keys_are_refused(served: Any) -> None:
    system, client = served
    slash = await enqueue(client, ADMIN, runId="r", tenantId="a/b", r2Key="a/b/c.txt")
    assert slash.status_code == 400 and slash.json()["error"]["field"] == "tenantId"
    assert "cannot contain '/'" in slash.json()["error"]["message"]
    for key in ("t1/../t2/a.txt", "t1//a.txt", "t1/./a.txt", "t1/"):
        bad = await enqueue(client, PRODUCER, runId="r", tenantId="t1", r2Key=key)
        assert bad.status_code in (400, 403) and bad.json()["error"]["field"] == "r2Key", key
    assert (await system.stats()).total == 0
    with pytest.raises(ForeignObjectKey, match="'t1/'"):
        await system.enqueue("r", "t1", "t2/r/a.txt")
    with pytest.raises(InvalidArgument, match="cannot contain '/'"):
        await system.enqueue("r", "a/b", "a/b/r/a.txt")
    allowed = await system.enqueue("r", "t1", "t2/r/a.txt", cross_tenant_key=True)
    assert allowed.cross_tenant_key is True


@pytest.fixture(params=["sqlite", "postgres"])
def queue_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueConfig]:
    """The queue on each backend (the job's cross_tenant_key travels through each one's SQL)."""
    base = config(tmp_path).queue
    if request.param == "sqlite":
        yield base
        return
    dsn = os.environ.get("ACTORS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        pg(dsn, f"CREATE SCHEMA {schema}")
    except Exception as exc:  # any failure to reach the server
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable at {dsn}: {exc}")
    yield msgspec.structs.replace(base, backend="postgres", dsn=f"{dsn}?search_path={schema}")
    pg(dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def pg(dsn: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


async def test_the_fetcher_fails_a_foreign_key_for_good_without_reading_it(
    tmp_path: Path, queue_config: QueueConfig
) -> None:
    """Defence in depth: a job that reached the queue without the enqueue checks reads nothing."""
    store = CountingStore(tmp_path / "objects")
    await store.put("t1/r1/plan.txt", SECRET_TEXT)
    await store.put("acme/r2/plan.txt", OWN_TEXT)
    cfg = msgspec.structs.replace(config(tmp_path, queue_only=False), queue=queue_config)
    async with ActorSystem(cfg, store=store) as system:
        # Straight into the queue, past ActorSystem's check, as another writer of the database.
        foreign = await system.queue.enqueue("ra", "acme", "t1/r1/plan.txt")
        allowed = await system.queue.enqueue("rb", "acme", "t1/r1/plan.txt", cross_tenant_key=True)
        await finished(system)
        failed = await system.queue.get(foreign.id)
        done = await system.queue.get(allowed.id)
    assert failed.status == "failed" and failed.attempts == 1 and failed.result is None
    assert "outside the job's tenant prefix 'acme/'" in (failed.last_error or "")
    assert done.status == "done"
    assert store.reads == ["t1/r1/plan.txt"]  # the admin-allowed job's read only


def test_a_token_cannot_be_scoped_to_a_tenant_id_no_key_could_live_under() -> None:
    for tenant in ("a/b", ".", ".."):
        with pytest.raises(ConfigError, match="cannot contain '/'") as caught:
            Tokens.parse(f"aaaaaaaa:producer:{tenant}")
        assert "aaaaaaaa" not in str(caught.value)
    assert Tokens.parse(f"aaaaaaaa:producer:{ZURICH}").lookup("aaaaaaaa").tenant == ZURICH  # type: ignore[union-attr]


# --- existence probing -----------------------------------------------------------------------


def shape(response: httpx.Response, ident: str) -> tuple[int, dict[str, Any]]:
    """The status and the body with the probed id blanked out (the only allowed difference)."""
    body = json.loads(response.text.replace(ident, "ID"))
    return response.status_code, body


async def test_another_tenants_job_run_and_events_answer_like_ones_that_do_not_exist(
    served: Any,
) -> None:
    system, client = served
    theirs = await system.enqueue("rt", "t1", "t1/rt/a.txt")
    probes = [
        ("GET", f"/jobs/{theirs.id}", "/jobs/987654", str(theirs.id), "987654"),
        ("GET", "/runs/rt", "/runs/nope", "'rt'", "'nope'"),
        ("GET", "/runs/rt/events", "/runs/nope/events", "'rt'", "'nope'"),
        ("POST", "/runs/rt/stream-token", "/runs/nope/stream-token", "'rt'", "'nope'"),
        ("POST", f"/jobs/{theirs.id}/cancel", "/jobs/987654/cancel", str(theirs.id), "987654"),
        ("POST", "/runs/rt/cancel", "/runs/nope/cancel", "'rt'", "'nope'"),
    ]
    for method, existing, missing, ident_a, ident_b in probes:
        a = await client.request(method, existing, headers=auth(ACME))
        b = await client.request(method, missing, headers=auth(ACME))
        assert a.status_code == 404, (existing, a.text)
        assert shape(a, ident_a) == shape(b, ident_b), (existing, a.text, b.text)
    async with await anyio.connect_tcp("127.0.0.1", system.http.port) as stream:
        theirs_ws = WsClient(stream)
        assert not await theirs_ws.open("/runs/rt/ws", ACME)
    async with await anyio.connect_tcp("127.0.0.1", system.http.port) as stream:
        missing_ws = WsClient(stream)
        assert not await missing_ws.open("/runs/nope/ws", ACME)
    assert theirs_ws.closed_reason == missing_ws.closed_reason is not None
    # Worker verbs by id refuse a scoped token whatever the id: nothing to tell them apart.
    for method, existing, missing, body in (
        ("POST", f"/jobs/{theirs.id}/result", "/jobs/987654/result", {"leaseToken": "x"}),
        ("POST", "/jobs/renew", "/jobs/renew", {"leases": [{"id": theirs.id, "leaseToken": "x"}]}),
        ("POST", "/jobs/release", "/jobs/release", {"leases": [{"id": 987654, "leaseToken": "x"}]}),
    ):
        a = await client.request(method, existing, json=body, headers=auth(ACME_WORKER))
        b = await client.request(method, missing, json=body, headers=auth(ACME_WORKER))
        assert a.status_code == b.status_code == 403 and a.json() == b.json(), (existing, a.text)
    # Their owner and an unscoped reader still see them.
    assert (await client.get(f"/jobs/{theirs.id}", headers=auth(PRODUCER))).status_code == 200
    assert (await client.get("/runs/rt", headers=auth(PRODUCER))).status_code == 200


async def test_queue_wide_figures_and_operations_refuse_a_scoped_token(tmp_path: Path) -> None:
    async with (
        ActorSystem(config(tmp_path)) as system,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.http.port}", timeout=10) as client,
    ):
        assert (await client.get("/metrics", headers=auth(ACME))).status_code == 403
        assert (await client.get("/jobs/stats", headers=auth(ACME))).status_code == 403
        assert (await client.get("/metrics", headers=auth(WORKER))).status_code == 200
        for path, body in (
            ("/jobs/requeue", {"ids": [1]}),
            ("/jobs/purge", {"olderThanSeconds": 0}),
        ):
            refused = await client.post(path, json=body, headers=auth(SCOPED_ADMIN))
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "tenant_scoped"
        # A scoped admin is still limited to its tenant's keys.
        crossed = await enqueue(
            client, SCOPED_ADMIN, runId="r", tenantId="acme", r2Key="t1/r/a.txt"
        )
        assert (
            crossed.status_code == 403 and crossed.json()["error"]["code"] == "foreign_object_key"
        )


async def test_pause_and_limits_over_http_keep_to_the_tokens_role_and_tenant(
    served: Any,
) -> None:
    system, client = served
    # The whole queue: an admin for every tenant only.
    for token in (SCOPED_ADMIN, WORKER, PRODUCER, ACME):
        refused = await client.post("/queue/pause", headers=auth(token))
        assert refused.status_code == 403, token
    assert not (await system.controls()).paused
    paused = await client.post("/queue/pause", headers=auth(ADMIN))
    assert paused.status_code == 200 and paused.json() == {"paused": True, "tenants": []}
    stats = (await client.get("/jobs/stats", headers=auth(ADMIN))).json()["stats"]
    assert (stats["paused"], stats["pausedTenants"]) == (True, [])
    resumed = await client.post("/queue/resume", json={}, headers=auth(ADMIN))
    assert resumed.json()["paused"] is False
    # A tenant's admin pauses its own tenant, never another's, and sees only its own row.
    other = await client.post("/queue/pause", json={"tenantId": "t1"}, headers=auth(SCOPED_ADMIN))
    assert other.status_code == 403 and other.json()["error"]["code"] == "wrong_tenant"
    own = await client.post("/queue/pause", json={"tenantId": "acme"}, headers=auth(SCOPED_ADMIN))
    assert own.status_code == 200
    assert own.json() == {
        "paused": None,
        "tenants": [
            {
                "tenantId": "acme",
                "paused": True,
                "weight": 1,
                "maxLeased": None,
                "maxPerSecond": None,
            }
        ],
    }
    await client.post("/queue/pause", json={"tenantId": "t1"}, headers=auth(ADMIN))
    seen = (await client.get("/queue/controls", headers=auth(SCOPED_ADMIN))).json()
    assert [t["tenantId"] for t in seen["tenants"]] == ["acme"] and seen["paused"] is None
    everything = (await client.get("/queue/controls", headers=auth(ADMIN))).json()
    assert [t["tenantId"] for t in everything["tenants"]] == ["acme", "t1"]
    # While acme is paused its jobs wait; t1's too; a third tenant's go on.
    for tenant in ("acme", "t1", "t2"):
        await enqueue(client, ADMIN, runId=f"r-{tenant}", tenantId=tenant, r2Key=f"{tenant}/r/a")
    pulled = await client.post("/jobs/pull", json={"maxJobs": 10}, headers=auth(WORKER))
    assert [j["tenantId"] for j in pulled.json()["jobs"]] == ["t2"]
    # Limits weigh a tenant against every other: an admin for every tenant only.
    body = {"weight": 2, "maxLeased": 5, "maxPerSecond": 1.5}
    scoped = await client.put("/queue/tenants/acme/limits", json=body, headers=auth(SCOPED_ADMIN))
    assert scoped.status_code == 403
    limited = await client.put("/queue/tenants/acme/limits", json=body, headers=auth(ADMIN))
    assert limited.status_code == 200
    assert limited.json()["tenants"][0] == {
        "tenantId": "acme",
        "paused": True,
        "weight": 2,
        "maxLeased": 5,
        "maxPerSecond": 1.5,
    }
    bad = await client.put("/queue/tenants/acme/limits", json={"weight": 0}, headers=auth(ADMIN))
    assert bad.status_code == 400 and "weight" in bad.json()["error"]["field"]
    async with HttpQueue.open(str(client.base_url), SCOPED_ADMIN) as remote:
        controls = await remote.resume("acme")
        assert [(t.tenant_id, t.paused, t.weight) for t in controls.tenants] == [("acme", False, 2)]


# --- non-ASCII tenants and tokens ------------------------------------------------------------


async def test_a_non_ascii_tenant_and_token_work_on_every_route(served: Any) -> None:
    system, client = served
    token = {"authorization": f"Bearer {ZURICH_TOKEN}".encode()}
    run = "lauf-ü"
    one = await client.post(
        "/jobs/enqueue",
        headers=token,
        json={"runId": run, "tenantId": ZURICH, "r2Key": f"{ZURICH}/{run}/bericht.txt"},
    )
    assert one.status_code == 200, one.text
    many = await client.post(
        "/jobs/enqueue-many",
        headers=token,
        json={"jobs": [{"runId": run, "tenantId": ZURICH, "r2Key": f"{ZURICH}/{run}/b.txt"}]},
    )
    assert many.status_code == 200, many.text
    foreign = await client.post(
        "/jobs/enqueue",
        headers=token,
        json={"runId": "x", "tenantId": ZURICH, "r2Key": "t1/x/a.txt"},
    )
    assert foreign.status_code == 403 and f"'{ZURICH}/'" in foreign.json()["error"]["message"]
    listed = await client.get("/jobs", params={"tenantId": ZURICH}, headers=token)
    assert listed.status_code == 200 and len(listed.json()["jobs"]) == 2
    assert (await client.get("/jobs", headers=token)).json() == listed.json()
    job = await client.get(f"/jobs/{one.json()['jobId']}", headers=token)
    assert job.status_code == 200 and job.json()["tenantId"] == ZURICH
    summary = await client.get(f"/runs/{run}", headers=token)
    assert summary.status_code == 200 and summary.json()["total"] == 2
    async with client.stream("GET", f"/runs/{run}/events", headers=token) as events:
        assert events.status_code == 200
        async for line in events.aiter_lines():
            if line.startswith("data:"):
                assert json.loads(line[5:])["run"]["tenantId"] == ZURICH
                break
    granted = await client.post(f"/runs/{run}/stream-token", headers=token)
    assert granted.status_code == 200, granted.text
    upload = await client.post(
        "/uploads/create",
        headers=token,
        json={"contentType": "text/plain", "filename": "ä.txt", "tenantId": ZURICH},
    )
    assert upload.status_code == 201 and upload.json()["r2Key"].startswith(f"{ZURICH}/")
    put = await client.put(upload.json()["uploadUrl"], content=OWN_TEXT)
    assert put.status_code == 201, put.text
    async with await anyio.connect_tcp("127.0.0.1", system.http.port) as stream:
        assert await WsClient(stream).open(f"/runs/{quote(run)}/ws", ZURICH_TOKEN)
    # Another tenant's scoped token, and a wrong non-ASCII one, see nothing of it.
    assert (await client.get(f"/runs/{run}", headers=auth(ACME))).status_code == 404
    wrong = {"authorization": "Bearer zürich-tøken-0123457".encode()}
    assert (await client.get(f"/runs/{run}", headers=wrong)).status_code == 401


async def test_a_remote_worker_with_a_non_ascii_token_drains_a_non_ascii_tenants_jobs(
    served: Any,
) -> None:
    system, _ = served
    await system.enqueue("lauf", ZURICH, f"{ZURICH}/lauf/a.txt")
    async with HttpQueue.open(f"http://127.0.0.1:{system.http.port}", ZURICH_WORKER) as queue:
        (job,) = await queue.pull(max=5, visibility_seconds=30)
        assert job.tenant_id == ZURICH and job.r2_key == f"{ZURICH}/lauf/a.txt"
        assert (await queue.stats()).leased == 1


# --- tokens in the URL -----------------------------------------------------------------------


async def test_a_token_in_the_url_is_refused_except_a_stream_token_on_its_runs_streams(
    served: Any,
) -> None:
    system, client = served
    await system.enqueue("rs", "t1", "t1/rs/a.txt")
    await system.enqueue("ro", "t1", "t1/ro/a.txt")
    for path in ("/jobs/stats", "/jobs", "/runs/rs", "/healthz"):
        leaked = await client.get(path, params={"token": ADMIN})
        assert leaked.status_code == 401, (path, leaked.text)
        assert leaked.json()["error"]["code"] == "token_in_url"
        assert "Authorization" in leaked.json()["error"]["message"]
    both = await client.get("/jobs/stats", params={"token": ADMIN}, headers=auth(ADMIN))
    assert both.status_code == 401
    # An API token in the URL is refused on the stream routes too: it would end up in logs.
    api_token = await client.get("/runs/rs/events", params={"token": PRODUCER})
    assert api_token.status_code == 401
    assert "stream-token" in api_token.json()["error"]["message"]
    async with await anyio.connect_tcp("127.0.0.1", system.http.port) as stream:
        assert not await WsClient(stream).open(f"/runs/rs/ws?token={PRODUCER}", None)

    granted = await client.post("/runs/rs/stream-token", headers=auth(PRODUCER))
    assert granted.status_code == 200, granted.text
    grant = granted.json()
    assert grant["eventsUrl"].endswith(f"/runs/rs/events?token={grant['token']}")
    assert grant["wsUrl"].startswith("ws://")
    async with client.stream("GET", grant["eventsUrl"]) as events:
        assert events.status_code == 200
        async for line in events.aiter_lines():
            if line.startswith("data:"):
                assert json.loads(line[5:])["run"]["runId"] == "rs"
                break
    async with await anyio.connect_tcp("127.0.0.1", system.http.port) as stream:
        assert await WsClient(stream).open(f"/runs/rs/ws?token={grant['token']}", None)
    # The token opens that run's streams only, and nothing else.
    other = await client.get("/runs/ro/events", params={"token": grant["token"]})
    assert other.status_code == 401
    assert (await client.get("/runs/rs", params={"token": grant["token"]})).status_code == 401
    assert (
        await client.get("/runs/rs/events", params={"token": grant["token"][:-2] + "AA"})
    ).status_code == 401
    # A bearer header keeps working on the stream routes.
    async with client.stream("GET", "/runs/rs/events", headers=auth(WORKER)) as events:
        assert events.status_code == 200


async def test_a_stream_token_expires(tmp_path: Path) -> None:
    from supervisors import FakeClock

    clock = FakeClock()
    async with (
        ActorSystem(config(tmp_path), clock=clock) as system,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.http.port}", timeout=10) as client,
    ):
        await system.enqueue("rs", "t1", "t1/rs/a.txt")
        token = (await client.post("/runs/rs/stream-token", headers=auth(PRODUCER))).json()
        clock.advance(301)
        expired = await client.get("/runs/rs/events", params={"token": token["token"]})
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


# --- uploads -----------------------------------------------------------------------------------


async def test_an_upload_url_is_single_use_and_never_overwrites_its_object(served: Any) -> None:
    system, client = served
    created = await client.post(
        "/uploads/create",
        headers=auth(ACME),
        json={"contentType": "text/plain", "filename": "a.txt", "tenantId": "acme"},
    )
    url, key = created.json()["uploadUrl"], created.json()["r2Key"]
    first = await client.put(url, content=OWN_TEXT)
    assert first.status_code == 201
    second = await client.put(url, content=b"replaced after the job was enqueued")
    assert second.status_code == 409 and second.json()["error"]["code"] == "upload_used"
    assert (await system.store.get(key, max_bytes=10_000)).data == OWN_TEXT
    assert (await system.stats()).total == 1


UPLOAD = {"contentType": "text/plain", "filename": "a.txt", "tenantId": "acme"}


async def test_an_upload_into_another_tenants_run_stores_nothing(
    served: Any, tmp_path: Path
) -> None:
    system, client = served
    await system.enqueue("theirs", "t1", "t1/theirs/a.txt")
    created = await client.post(
        "/uploads/create",
        headers=auth(ACME),
        json={
            "contentType": "text/plain",
            "filename": "a.txt",
            "tenantId": "acme",
            "runId": "theirs",
        },
    )
    assert created.status_code == 409, created.text
    assert created.json()["error"]["code"] == "run_of_another_tenant"
    # A grant made before the other tenant took the run id: its PUT stores nothing either.
    early = await client.post(
        "/uploads/create",
        headers=auth(ACME),
        json={
            "contentType": "text/plain",
            "filename": "b.txt",
            "tenantId": "acme",
            "runId": "soon",
        },
    )
    assert early.status_code == 201
    await system.enqueue("soon", "t1", "t1/soon/a.txt")
    put = await client.put(early.json()["uploadUrl"], content=OWN_TEXT)
    assert put.status_code == 409 and put.json()["error"]["code"] == "run_of_another_tenant"
    with pytest.raises(ObjectMissing):
        await system.store.get(early.json()["r2Key"], max_bytes=10_000)
    assert not (tmp_path / "objects" / "acme").exists()
    assert (await system.stats()).total == 2


# --- schedules: a tenant manages only its own ---------------------------------------------------


async def test_a_scoped_token_manages_only_its_own_tenants_schedules(
    served: tuple[ActorSystem, httpx.AsyncClient],
) -> None:
    system, client = served
    tick = {"intervalSeconds": 60, "missed": "skip"}
    theirs = await client.post(
        "/schedules",
        headers=auth(ADMIN),
        json={"name": "nightly", "tenantId": "t1", "r2Key": "t1/plan.txt", **tick},
    )
    assert theirs.status_code == 200, theirs.text
    # acme's producer may create its own (the same name: unique within a tenant only)...
    own = await client.post(
        "/schedules",
        headers=auth(ACME),
        json={"name": "nightly", "tenantId": "acme", "r2Key": "acme/notes.txt", **tick},
    )
    assert own.status_code == 200, own.text
    assert own.json()["tenantId"] == "acme" and own.json()["missed"] == "skip"
    # ...but not one of another tenant, nor one whose jobs would read another tenant's key.
    other = await client.post(
        "/schedules",
        headers=auth(ACME),
        json={"name": "steal", "tenantId": "t1", "r2Key": "t1/plan.txt", **tick},
    )
    assert other.status_code == 403 and other.json()["error"]["code"] == "wrong_tenant"
    foreign = await client.post(
        "/schedules",
        headers=auth(ACME),
        json={"name": "steal", "tenantId": "acme", "r2Key": "t1/plan.txt", **tick},
    )
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "foreign_object_key"
    # Not even an unscoped admin: a schedule's jobs never cross tenants.
    crossing = await client.post(
        "/schedules",
        headers=auth(ADMIN),
        json={"name": "x", "tenantId": "acme", "r2Key": "t1/plan.txt", **tick},
    )
    assert crossing.status_code == 403
    # Listing: acme sees its own only, whatever it asks for.
    listed = await client.get("/schedules", headers=auth(ACME))
    assert [(s["tenantId"], s["name"]) for s in listed.json()["schedules"]] == [("acme", "nightly")]
    asked = await client.get("/schedules", params={"tenantId": "t1"}, headers=auth(ACME))
    assert asked.status_code == 403
    everything = await client.get("/schedules", headers=auth(ADMIN))
    assert len(everything.json()["schedules"]) == 2
    # Deleting another tenant's answers as a missing one, and leaves it be.
    gone = await client.delete("/schedules/nightly", params={"tenantId": "t1"}, headers=auth(ACME))
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "schedule_not_found"
    assert [s.tenant_id for s in await system.list_schedules()] == ["acme", "t1"]
    mine = await client.delete("/schedules/nightly", headers=auth(ACME))
    assert mine.status_code == 200 and mine.json()["tenantId"] == "acme"
    assert [s.tenant_id for s in await system.list_schedules()] == ["t1"]
    # A worker manages no schedules; an unscoped delete must say whose.
    assert (await client.get("/schedules", headers=auth(WORKER))).status_code == 403
    unnamed = await client.delete("/schedules/nightly", headers=auth(ADMIN))
    assert unnamed.status_code == 400 and unnamed.json()["error"]["field"] == "tenantId"


async def test_a_scoped_token_cannot_squat_another_tenants_schedule_runs(
    served: tuple[ActorSystem, httpx.AsyncClient],
) -> None:
    """The attack: acme enqueues into the run a t1 schedule's next tick will use, so that the
    tick's enqueue would be refused (a run has one tenant)."""
    _, client = served
    squat = await enqueue(
        client,
        ACME,
        runId="schedule:t1:nightly:20300101T000000Z",
        tenantId="acme",
        r2Key="acme/notes.txt",
    )
    assert squat.status_code == 400 and "schedule:" in squat.json()["error"]["message"]
    own = await enqueue(
        client,
        ACME,
        runId="schedule:acme:nightly:20300101T000000Z",
        tenantId="acme",
        r2Key="acme/notes.txt",
    )
    assert own.status_code == 200, own.text


# --- cancelling ------------------------------------------------------------------------------


async def test_a_scoped_producer_cancels_its_own_tenants_jobs_and_no_one_elses(
    served: Any,
) -> None:
    system, client = served
    theirs = await system.enqueue("rt", "t1", "t1/rt/a.txt")
    mine = await system.enqueue("ra", "acme", "acme/ra/a.txt")
    mine_too = await system.enqueue("ra", "acme", "acme/ra/b.txt")
    # A batch naming another tenant's job: that one answers as missing, untouched.
    response = await client.post(
        "/jobs/cancel", json={"ids": [theirs.id, mine.id]}, headers=auth(ACME)
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["id"], r["ok"], r["outcome"]) for r in results] == [
        (theirs.id, False, "not_found"),
        (mine.id, True, "cancelled"),
    ]
    assert results[0]["job"] is None  # nothing of the other tenant's job shows
    assert (await system.queue.get(theirs.id)).status == "pending"
    # Naming another tenant outright is refused; a worker may not cancel at all.
    other = await client.post(
        "/jobs/cancel", json={"ids": [theirs.id], "tenantId": "t1"}, headers=auth(ACME)
    )
    assert other.status_code == 403
    worker = await client.post("/jobs/cancel", json={"ids": [theirs.id]}, headers=auth(WORKER))
    assert worker.status_code == 403
    assert (await client.post(f"/jobs/{theirs.id}/cancel", headers=auth(ACME))).status_code == 404
    assert (await client.post("/runs/rt/cancel", headers=auth(ACME))).status_code == 404
    assert (await system.queue.get(theirs.id)).status == "pending"
    # Its own run: every unfinished job.
    run = await client.post("/runs/ra/cancel", headers=auth(ACME))
    assert run.status_code == 200, run.text
    assert run.json() == {"success": True, "runId": "ra", "cancelled": 1, "cancelRequested": 0}
    assert (await system.queue.get(mine_too.id)).status == "cancelled"
    # An unscoped admin may cancel anything.
    admin = await client.post(f"/jobs/{theirs.id}/cancel", headers=auth(ADMIN))
    assert admin.status_code == 200, admin.text
    assert admin.json()["results"][0]["outcome"] == "cancelled"
