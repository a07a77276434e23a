"""The local object store: safe keys, whole objects, atomic writes, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.errors import InvalidObjectKey, ObjectMissing, ObjectTooLarge
from actors.stores import LocalObjectStore, check_key

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("key", ["", "/etc/passwd", "a/../../b", "./a", "a//b", "a\\b", "a\x00b"])
def test_keys_that_could_escape_the_store_are_refused(key: str) -> None:
    with pytest.raises(InvalidObjectKey):
        check_key(key)


async def test_an_object_reads_back_whole_with_its_content_type(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    await store.put("t/run/report.pdf", b"%PDF-1.4 ...")
    got = await store.get("t/run/report.pdf", max_bytes=1000)
    assert (got.data, got.content_type) == (b"%PDF-1.4 ...", "application/pdf")


async def test_a_large_object_is_read_off_the_event_loop_and_whole(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    data = bytes(range(256)) * 1024  # 256 KiB: above the inline-read threshold
    await store.put("big.bin", data)
    assert (await store.get("big.bin", max_bytes=len(data))).data == data


async def test_a_write_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    await store.put("a/b.txt", b"one")
    await store.put("a/b.txt", b"two")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.txt"]
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"two"


async def test_a_missing_object_and_a_folder_are_missing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ObjectMissing, match="does not exist"):
        await store.get("nope.txt", max_bytes=10)
    with pytest.raises(ObjectMissing, match="is a folder"):
        await store.get("folder", max_bytes=10)


async def test_an_object_over_the_limit_is_refused_naming_the_setting(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    await store.put("x.txt", b"12345678901")
    with pytest.raises(ObjectTooLarge, match=r"11 bytes, over the limit of 10.*max_object_bytes"):
        await store.get("x.txt", max_bytes=10)
