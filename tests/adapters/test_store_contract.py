"""The `ObjectStore` contract, one suite over every store: the local folder and S3 (moto)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from conftest import KEY_ID, REGION, SECRET

from actors.errors import InvalidObjectKey, ObjectMissing, ObjectTooLarge
from actors.storage import LocalObjectStore, ObjectStore, S3ObjectStore

# The stores' semantics, the same on both runtimes: asyncio only (see tests/conftest.py); the S3
# store's path through the bridge on trio is tested in test_r2_store.py.
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str, bucket: str
) -> AsyncIterator[ObjectStore]:
    made: ObjectStore
    if request.param == "local":
        made = LocalObjectStore(tmp_path / "objects")
    else:
        made = S3ObjectStore(
            bucket=bucket,
            endpoint=s3_endpoint,
            access_key_id=KEY_ID,
            secret_access_key=SECRET,
            region=REGION,
            addressing_style="path",
            timeout_seconds=5.0,
            max_retries=1,
            retry_base_seconds=0.01,
        )
    try:
        yield made
    finally:
        await made.aclose()


async def test_an_object_put_is_read_back_whole_and_its_size_is_known(store: ObjectStore) -> None:
    with anyio.fail_after(20):
        await store.put("t1/run/a.txt", b"hello lichens", content_type="text/plain")
        got = await store.get("t1/run/a.txt", max_bytes=1000)
        size = await store.head("t1/run/a.txt")
    assert (got.key, got.data, got.content_type) == ("t1/run/a.txt", b"hello lichens", "text/plain")
    assert size == len(b"hello lichens")


async def test_a_put_replaces_the_object_under_its_key(store: ObjectStore) -> None:
    with anyio.fail_after(20):
        await store.put("t1/run/a.txt", b"first")
        await store.put("t1/run/a.txt", b"second")
        got = await store.get("t1/run/a.txt", max_bytes=1000)
    assert got.data == b"second"


async def test_a_missing_object_has_no_size_and_fails_a_read_naming_the_cure(
    store: ObjectStore,
) -> None:
    with anyio.fail_after(20):
        assert await store.head("t1/run/none.txt") is None
        with pytest.raises(ObjectMissing, match=r"does not exist in .*; upload it") as caught:
            await store.get("t1/run/none.txt", max_bytes=1000)
    assert caught.value.permanent


async def test_an_object_over_the_cap_is_refused_naming_the_setting(store: ObjectStore) -> None:
    with anyio.fail_after(20):
        await store.put("t1/run/big.bin", b"x" * 101)
        await store.get("t1/run/big.bin", max_bytes=101)  # at the cap: read
        with pytest.raises(ObjectTooLarge, match=r"over the limit of 100.*max_object_bytes"):
            await store.get("t1/run/big.bin", max_bytes=100)


@pytest.mark.parametrize("key", ["/abs.txt", "t1/../up.txt", "t1//a.txt", "t1/./a.txt", "a\\b"])
async def test_a_malformed_key_is_refused_by_every_verb(store: ObjectStore, key: str) -> None:
    with anyio.fail_after(20):
        with pytest.raises(InvalidObjectKey):
            await store.get(key, max_bytes=1000)
        with pytest.raises(InvalidObjectKey):
            await store.put(key, b"x")
        with pytest.raises(InvalidObjectKey):
            await store.head(key)
