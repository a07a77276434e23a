"""``/api/migrate/*`` over real sockets: the same report as ``store import``, admin only, bounded;
and the old system's ids still settle their jobs in an ids-only ack."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import ADMIN, TOKENS, WORKER, auth

from actors import importers
from actors.config import (
    Config,
    HttpConfig,
    PipelineConfig,
    QueueConfig,
    Secret,
    Secrets,
    StorageConfig,
)
from actors.queue import SQLiteQueue
from actors.system import ActorSystem

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "importers"))
from cloudflare_dumps import d1_rows, d1_sql, kv_bulk

pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]

ACME_ADMIN = "acme-admin-token-0123456789"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ActorSystem, httpx.AsyncClient]]:
    config = Config(
        queue=QueueConfig(path=str(tmp_path / "q.db"), visibility_seconds=30),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        http=HttpConfig(enabled=True, port=0, queue_only=True),
        secrets=Secrets(http_tokens=Secret(f"{TOKENS},{ACME_ADMIN}:admin:acme")),
    )
    async with ActorSystem(config) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            yield system, client


async def migrate(
    client: httpx.AsyncClient, step: str, dump: str, token: str = ADMIN, **query: str
) -> httpx.Response:
    method = "GET" if step == "status" else "POST"
    return await client.request(
        method,
        f"/api/migrate/{step}",
        params=query,
        content=dump.encode(),
        headers={**auth(token), "content-type": "application/sql"},
    )


async def test_the_api_imports_verifies_and_rolls_back_with_the_clis_report(
    served: Any, tmp_path: Path
) -> None:
    _, client = served
    rows = d1_rows(300)
    dump = d1_sql(
        rows, extra=("INSERT INTO \"jobs\" VALUES('job_x','r','acme','acme/x','odd',0,NULL,1,1);",)
    )
    before = await migrate(client, "status", dump, source="d1")
    assert before.status_code == 200, before.text
    assert (before.json()["missing"], before.json()["complete"]) == (300, False)

    ran = await migrate(client, "run", dump, source="d1")
    assert ran.status_code == 200, ran.text
    report = ran.json()
    assert (report["migrated"], report["failed"], report["complete"]) == (300, 1, True)
    assert report["errors"][0]["item"] == "d1:job_x"
    # The same engine on the command line's side gives the same report, field for field.
    async with SQLiteQueue.open(tmp_path / "q.db") as queue:
        again = importers.report_json(
            await importers.status(queue, importers.read_dump("d1", dump.encode()))
        )
    after = (await migrate(client, "status", dump, source="d1")).json()
    assert after == again and after["imported"] == 300
    # Imported jobs show where they came from, and can be found by it.
    origin = f"d1:{rows[7]['id']}"
    found = await client.get("/jobs", params={"origin": origin}, headers=auth(ADMIN))
    (job,) = found.json()["jobs"]
    assert (job["origin"], job["r2Key"]) == (origin, rows[7]["r2_key"])

    rolled = await migrate(client, "rollback", dump, source="d1")
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["removed"], rolled.json()["conflicts"]) == (300, [])
    stats = (await client.get("/jobs/stats", headers=auth(ADMIN))).json()["stats"]
    assert stats["pending"] + stats["done"] + stats["failed"] == 0


async def test_only_an_unscoped_admin_may_migrate_and_bad_dumps_are_400s(
    served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = served
    dump = d1_sql(d1_rows(5))
    for token, status in ((WORKER, 403), (ACME_ADMIN, 403), ("wrong-token-wrong", 401)):
        response = await migrate(client, "run", dump, token=token, source="d1")
        assert response.status_code == status, response.text
    for query, body, field in (
        ({}, dump, "source"),
        ({"source": "d1"}, "", "body"),
        ({"source": "d1"}, "CREATE TABLE other (a TEXT);", "body"),
        ({"source": "kv"}, "{}", "body"),
        ({"source": "d1", "crossTenantKeys": "maybe"}, dump, "crossTenantKeys"),
    ):
        response = await migrate(client, "run", body, **query)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field
    monkeypatch.setattr("actors.http._migrate.MAX_IMPORT_BYTES", 1000)
    too_big = await migrate(client, "run", dump, source="d1")
    assert too_big.status_code == 413
    assert (await client.get("/jobs", headers=auth(ADMIN))).json()["jobs"] == []


async def test_a_kv_dump_goes_in_over_http_and_old_ids_settle_their_jobs(served: Any) -> None:
    system, client = served
    dump = kv_bulk(20)
    response = await migrate(client, "run", dump.text(), source="kv", tenantId="ops")
    assert response.status_code == 200, response.text
    assert response.json()["migrated"] == len(dump.expected)
    # A worker of the old system still names a task by its old id: the ack finds the job.
    pulled = await client.post("/jobs/pull", json={"max": 100}, headers=auth(WORKER))
    jobs = pulled.json()["jobs"]
    assert jobs and all(j["origin"].startswith("kv:") for j in jobs)
    old_ids = [j["origin"].removeprefix("kv:") for j in jobs]
    acked = await client.post(
        "/jobs/ack", json={"ids": old_ids, "status": "done"}, headers=auth(WORKER)
    )
    assert acked.status_code == 200, acked.text
    results = acked.json()["results"]
    assert [r["id"] for r in results] == old_ids  # as the client sent them
    assert all(r["ok"] for r in results)
    for job in jobs:
        assert (await system.queue.get(job["id"])).status == "done"
    unknown = await client.post(
        "/jobs/ack", json={"ids": ["no-such-task"], "status": "done"}, headers=auth(WORKER)
    )
    (item,) = unknown.json()["results"]
    assert (item["id"], item["reason"]) == ("no-such-task", "not_found")


async def test_the_routes_are_in_the_openapi_document(served: Any) -> None:
    _, client = served
    document = (await client.get("/openapi.json")).json()
    for method, step in (("get", "status"), ("post", "run"), ("post", "rollback")):
        operation = document["paths"][f"/api/migrate/{step}"][method]
        assert "application/sql" in operation["requestBody"]["content"]
        assert {p["name"] for p in operation["parameters"]} >= {"source", "tenantId", "runId"}
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/MigrationReport"}
    assert {"migrated", "failed", "complete", "conflicts"} <= set(
        document["components"]["schemas"]["MigrationReport"]["properties"]
    )


async def test_a_kv_deployment_moves_with_its_keys_and_its_workers_keep_their_task_ids(
    tmp_path: Path,
) -> None:
    admin_key, queue_key = "kv-admin-key-0123456789", "kv-queue-key-0123456789"
    config = Config(
        queue=QueueConfig(path=str(tmp_path / "q.db"), visibility_seconds=30),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        http=HttpConfig(enabled=True, port=0, queue_only=True),
        secrets=Secrets(admin_api_key=Secret(admin_key), queue_api_key=Secret(queue_key)),
    )
    dump = kv_bulk(10)
    async with ActorSystem(config) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            # The original's own admin key drives the import, as it drove its migration API.
            ran = await client.post(
                "/api/migrate/run?source=kv",
                content=dump.text().encode(),
                headers={"x-api-key": admin_key, "content-type": "application/json"},
            )
            assert ran.status_code == 200, ran.text
            refused = await client.post(
                "/api/migrate/run?source=kv",
                content=dump.text().encode(),
                headers={"x-api-key": queue_key},
            )
            assert refused.status_code == 403
            # A worker that still holds an old task id reads, claims and completes it.
            pending = [o for o, (status, _) in dump.expected.items() if status == "pending"]
            old_id = pending[0].removeprefix("kv:")
            task = await client.get(f"/api/queue/{old_id}", headers={"x-api-key": queue_key})
            assert task.status_code == 200, task.text
            assert (task.json()["originalId"], task.json()["status"]) == (old_id, "pending")
            job_id = task.json()["id"]
            unknown = await client.get("/api/queue/no-such-task", headers={"x-api-key": queue_key})
            assert unknown.status_code == 404
            while True:  # claim until the worker holds that task
                claimed = await client.post(
                    "/api/queue/claim", json={"workerId": "w1"}, headers={"x-api-key": queue_key}
                )
                assert claimed.json()["success"], claimed.text
                if claimed.json()["taskId"] == job_id:
                    break
            done = await client.post(
                f"/api/result/{old_id}",
                json={"workerId": "w1", "success": True, "output": "moved"},
                headers={"x-api-key": queue_key},
            )
            assert done.status_code == 200, done.text
            assert (await system.queue.get(int(job_id))).status == "done"
