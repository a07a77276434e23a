"""Tenant isolation on the S3 store (moto): the fetcher's key check, HEAD, presigned uploads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from adapter_faults import FaultProxy
from conftest import KEY_ID, REGION, SECRET

from actors.config import (
    Config,
    HttpConfig,
    PipelineConfig,
    QueueConfig,
    Secret,
    Secrets,
    StorageConfig,
)
from actors.storage import S3ObjectStore
from actors.system import ActorSystem

pytestmark = pytest.mark.anyio

ACME = "acme-producer-token-0123"
SECRET_TEXT = b"Tenant t1's merger plan: buy the harbour ferries in March. Keep this private.\n"


def s3_config(tmp_path: Path, endpoint: str, bucket: str, *, http: bool = False) -> Config:
    return Config(
        queue=QueueConfig(
            path=str(tmp_path / "q.db"), poll_interval_seconds=0.05, retry_base_seconds=0.01
        ),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        storage=StorageConfig(
            kind="s3",
            endpoint=endpoint,
            bucket=bucket,
            region=REGION,
            addressing_style="path",
            timeout_seconds=5,
            max_retries=0,
        ),
        http=HttpConfig(enabled=http, port=0, queue_only=http),
        secrets=Secrets(
            r2_access_key_id=Secret(KEY_ID),
            r2_secret_access_key=Secret(SECRET),
            http_tokens=Secret(f"{ACME}:producer:acme"),
        ),
    )


async def test_a_foreign_key_fails_for_good_without_a_request_to_the_bucket(
    tmp_path: Path, s3_endpoint: str, bucket: str, s3_sync: Any
) -> None:
    s3_sync.put_object(Bucket=bucket, Key="t1/r1/plan.txt", Body=SECRET_TEXT)
    host, port = s3_endpoint.removeprefix("http://").split(":")
    with FaultProxy((host, int(port))) as proxy:
        async with ActorSystem(s3_config(tmp_path, proxy.url, bucket)) as system:
            # Straight into the queue, past ActorSystem's enqueue check.
            job = await system.queue.enqueue("ra", "acme", "t1/r1/plan.txt")
            with anyio.fail_after(30):
                await system.wait_idle()
            failed = await system.queue.get(job.id)
    assert failed.status == "failed" and failed.attempts == 1 and failed.result is None
    assert "outside the job's tenant prefix 'acme/'" in (failed.last_error or "")
    assert proxy.requests == 0


async def test_head_answers_an_objects_size_or_none(s3_endpoint: str, bucket: str) -> None:
    store = S3ObjectStore(
        bucket=bucket,
        endpoint=s3_endpoint,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        region=REGION,
        addressing_style="path",
    )
    try:
        with anyio.fail_after(20):
            assert await store.head("t1/none.txt") is None
            await store.put("t1/a.txt", b"12345")
            assert await store.head("t1/a.txt") == 5
    finally:
        await store.aclose()


async def test_a_presigned_upload_is_enqueued_only_once_its_object_is_in_the_bucket(
    tmp_path: Path, s3_endpoint: str, bucket: str, s3_sync: Any
) -> None:
    async with ActorSystem(s3_config(tmp_path, s3_endpoint, bucket, http=True)) as system:
        base = f"http://127.0.0.1:{system.http.port}"
        headers = {"authorization": f"Bearer {ACME}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=20) as client:
            body = {"contentType": "text/plain", "filename": "a.txt", "tenantId": "acme"}
            created = (await client.post("/uploads/create", json=body)).json()
            assert created["r2Key"].startswith("acme/")
            complete = {"token": created["uploadToken"]}
            early = await client.post(created["completeUrl"], json=complete)
            assert early.status_code == 409, early.text
            assert early.json()["error"]["code"] == "upload_missing"
            assert "PUT the file" in early.json()["error"]["message"]
            assert (await system.stats()).total == 0
            assert created["uploadHeaders"] == {"Content-Type": "text/plain", "If-None-Match": "*"}
            async with httpx.AsyncClient(timeout=20) as bucket_client:  # no bearer to the bucket
                put = await bucket_client.put(
                    created["uploadUrl"], content=b"hello", headers=created["uploadHeaders"]
                )
                assert put.status_code == 200, put.text
                done = await client.post(created["completeUrl"], json=complete)
                assert done.status_code == 201 and done.json()["r2Key"] == created["r2Key"]
                assert (await system.stats()).pending == 1
                # The URL is single use: a replay cannot replace the object its job reads.
                again = await bucket_client.put(
                    created["uploadUrl"], content=b"replaced", headers=created["uploadHeaders"]
                )
                assert again.status_code == 412, again.text
            stored = s3_sync.get_object(Bucket=bucket, Key=created["r2Key"])["Body"].read()
            assert stored == b"hello"
            # Another tenant's run: refused before anything is signed or stored.
            await system.enqueue("theirs", "t1", "t1/theirs/a.txt")
            theirs = await client.post("/uploads/create", json={**body, "runId": "theirs"})
            assert theirs.status_code == 409
    keys = [o["Key"] for o in s3_sync.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [created["r2Key"]]
