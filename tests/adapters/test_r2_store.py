"""The S3/R2 store against a real S3 server (moto) on loopback, and through a faulty proxy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from adapter_faults import FaultProxy
from conftest import KEY_ID, REGION, SECRET

from actors.config import Config, StorageConfig
from actors.errors import (
    ConfigError,
    InvalidObjectKey,
    ObjectMissing,
    ObjectStoreRefused,
    ObjectStoreUnavailable,
    ObjectTooLarge,
)
from actors.storage import S3ObjectStore, make_store

# What is refused before or without retries is the same on both runtimes: asyncio only (see
# tests/conftest.py); calls through the bridge, its retries and time limits keep their trio leg.
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]

MiB = 1024 * 1024


def s3_store(endpoint: str, bucket: str, **options: Any) -> S3ObjectStore:
    settings: dict[str, Any] = {
        "timeout_seconds": 5.0,
        "max_retries": 3,
        "retry_base_seconds": 0.01,
        "retry_cap_seconds": 0.05,
    }
    settings.update(options)
    return S3ObjectStore(
        bucket=bucket,
        endpoint=endpoint,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        region=REGION,
        addressing_style="path",
        **settings,
    )


def upstream(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.removeprefix("http://").split(":")
    return host, int(port)


@pytest.mark.runtimes("asyncio", "trio")
async def test_an_object_put_is_read_back_whole_with_its_type(
    s3_endpoint: str, bucket: str
) -> None:
    store = s3_store(s3_endpoint, bucket)
    try:
        with anyio.fail_after(20):
            await store.put("t1/run/a.txt", b"hello lichens", content_type="text/plain")
            obj = await store.get("t1/run/a.txt", max_bytes=1000)
    finally:
        await store.aclose()
    assert (obj.key, obj.data, obj.content_type) == ("t1/run/a.txt", b"hello lichens", "text/plain")


async def test_a_missing_key_fails_at_once_without_retries(s3_endpoint: str, bucket: str) -> None:
    with FaultProxy(upstream(s3_endpoint)) as proxy:
        store = s3_store(proxy.url, bucket)
        try:
            with anyio.fail_after(20), pytest.raises(ObjectMissing, match="does not exist"):
                await store.get("t1/nowhere.pdf", max_bytes=1000)
        finally:
            await store.aclose()
    assert proxy.requests == 1


async def test_a_missing_bucket_is_refused_permanently_and_named(s3_endpoint: str) -> None:
    store = s3_store(s3_endpoint, "no-such-bucket-here")
    try:
        with anyio.fail_after(20), pytest.raises(ObjectStoreRefused, match="no-such-bucket-here"):
            await store.get("t1/a.txt", max_bytes=1000)
    finally:
        await store.aclose()


async def test_a_malformed_key_is_refused_before_any_request(s3_endpoint: str, bucket: str) -> None:
    store = s3_store(s3_endpoint, bucket)
    with pytest.raises(InvalidObjectKey):
        await store.get("../etc/passwd", max_bytes=10)
    await store.aclose()


async def test_an_object_over_the_cap_is_refused_from_its_announced_length(
    s3_endpoint: str, bucket: str, s3_sync: Any
) -> None:
    s3_sync.put_object(Bucket=bucket, Key="t1/big.bin", Body=b"x" * 100_000)
    store = s3_store(s3_endpoint, bucket)
    try:
        with anyio.fail_after(20), pytest.raises(ObjectTooLarge, match="is 100000 bytes"):
            await store.get("t1/big.bin", max_bytes=1000)
    finally:
        await store.aclose()


@pytest.mark.runtimes("asyncio", "trio")
async def test_resets_503s_and_a_body_cut_short_are_retried_and_the_whole_object_returned(
    s3_endpoint: str, bucket: str, s3_sync: Any
) -> None:
    data = os.urandom(300_000)
    s3_sync.put_object(Bucket=bucket, Key="t1/doc.bin", Body=data)
    with FaultProxy(upstream(s3_endpoint), match="doc.bin") as proxy:
        proxy.faults.extend(["reset", "503", "truncate"])
        store = s3_store(proxy.url, bucket)
        try:
            with anyio.fail_after(30):
                obj = await store.get("t1/doc.bin", max_bytes=10 * MiB)
        finally:
            await store.aclose()
    assert proxy.applied == ["reset", "503", "truncate"]
    assert hashlib.sha256(obj.data).digest() == hashlib.sha256(data).digest()


async def test_a_body_always_cut_short_is_unavailable_never_partial(
    s3_endpoint: str, bucket: str, s3_sync: Any
) -> None:
    s3_sync.put_object(Bucket=bucket, Key="t1/doc.bin", Body=os.urandom(200_000))
    with FaultProxy(upstream(s3_endpoint), match="doc.bin") as proxy:
        proxy.faults.extend(["truncate"] * 3)
        store = s3_store(proxy.url, bucket, max_retries=2)
        try:
            with anyio.fail_after(30), pytest.raises(ObjectStoreUnavailable, match="2 retries"):
                await store.get("t1/doc.bin", max_bytes=10 * MiB)
        finally:
            await store.aclose()
    assert proxy.applied == ["truncate"] * 3


@pytest.mark.runtimes("asyncio", "trio")
async def test_a_slow_answer_times_out_and_the_retry_succeeds(
    s3_endpoint: str, bucket: str, s3_sync: Any
) -> None:
    s3_sync.put_object(Bucket=bucket, Key="t1/slow.txt", Body=b"eventually")
    with FaultProxy(upstream(s3_endpoint), match="slow.txt") as proxy:
        proxy.faults.append("delay:2")
        store = s3_store(proxy.url, bucket, timeout_seconds=0.5)
        try:
            with anyio.fail_after(30):
                obj = await store.get("t1/slow.txt", max_bytes=1000)
        finally:
            await store.aclose()
    assert obj.data == b"eventually"
    assert proxy.applied == ["delay:2"]


@pytest.mark.runtimes("asyncio", "trio")
async def test_a_large_file_goes_up_in_parts_surviving_a_reset_part(
    s3_endpoint: str, bucket: str, s3_sync: Any, tmp_path: Path
) -> None:
    data = os.urandom(11 * MiB)
    path = tmp_path / "big.pdf"
    path.write_bytes(data)
    with FaultProxy(upstream(s3_endpoint), match="partNumber=2") as proxy:
        proxy.faults.append("reset")
        store = s3_store(
            proxy.url, bucket, multipart_threshold_bytes=5 * MiB, multipart_part_bytes=5 * MiB
        )
        try:
            with anyio.fail_after(60):
                size = await store.put_file(path, "t1/run/big.pdf", content_type="application/pdf")
                obj = await store.get("t1/run/big.pdf", max_bytes=20 * MiB)
        finally:
            await store.aclose()
    assert size == len(data)
    assert proxy.applied == ["reset"]
    assert obj.data == data
    head = s3_sync.head_object(Bucket=bucket, Key="t1/run/big.pdf")
    assert head["ETag"].endswith('-3"')  # three parts: 5 + 5 + 1 MiB
    assert s3_sync.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.runtimes("asyncio", "trio")
async def test_a_presigned_put_url_uploads_without_credentials(
    s3_endpoint: str, bucket: str
) -> None:
    store = s3_store(s3_endpoint, bucket)
    try:
        with anyio.fail_after(20):
            url = await store.presign_put(
                "t1/run/up.txt", expires_seconds=60, content_type="text/plain"
            )
            async with httpx.AsyncClient() as http:
                response = await http.put(
                    url, content=b"uploaded by a browser", headers={"Content-Type": "text/plain"}
                )
            obj = await store.get("t1/run/up.txt", max_bytes=1000)
    finally:
        await store.aclose()
    assert response.status_code == 200, response.text
    assert "X-Amz-Signature=" in url
    assert obj.data == b"uploaded by a browser"


def test_make_store_builds_the_s3_store_from_config_and_environment(s3_endpoint: str) -> None:
    from actors.config import Secret, Secrets

    storage = StorageConfig(kind="r2", endpoint=s3_endpoint, bucket="docs")
    with pytest.raises(ConfigError, match="R2_ACCESS_KEY_ID"):
        make_store(Config(storage=storage))
    with pytest.raises(ConfigError, match="R2_BUCKET"):
        make_store(Config(storage=StorageConfig(kind="s3")))
    with pytest.raises(ConfigError, match="R2_ENDPOINT"):
        make_store(Config(storage=StorageConfig(kind="r2", bucket="docs")))
    secrets = Secrets(r2_access_key_id=Secret("a"), r2_secret_access_key=Secret("b"))
    store = make_store(Config(storage=storage, secrets=secrets))
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.endpoint) == ("docs", s3_endpoint)
