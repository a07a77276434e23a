"""The local object store: safe keys, whole objects, atomic writes, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.errors import (
    InvalidObjectKey,
    ObjectMissing,
    ObjectStoreRefused,
    ObjectTooLarge,
)
from actors.storage import LocalObjectStore, check_key

ROOT = Path(__file__).resolve().parents[2]

# The local store's semantics, the same on both runtimes: asyncio only (see tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


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


async def test_a_key_through_a_symlinked_folder_neither_reads_nor_writes_outside_the_root(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"another tenant's document")
    (root / "acme").symlink_to(outside)
    store = LocalObjectStore(root)
    with pytest.raises(InvalidObjectKey, match="symbolic link"):
        await store.get("acme/secret.txt", max_bytes=1000)
    with pytest.raises(InvalidObjectKey, match="symbolic link"):
        await store.head("acme/secret.txt")
    with pytest.raises(InvalidObjectKey, match="symbolic link"):
        await store.put("acme/new.txt", b"written through the link")
    with pytest.raises(InvalidObjectKey, match="symbolic link"):
        await store.put("acme/deeper/new.txt", b"written through the link")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


async def test_a_symlinked_object_is_refused_and_a_write_replaces_the_link_not_its_target(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside.txt"
    (root / "acme").mkdir(parents=True)
    outside.write_bytes(b"outside the root")
    (root / "acme" / "a.txt").symlink_to(outside)
    store = LocalObjectStore(root)
    with pytest.raises(InvalidObjectKey, match="symbolic link") as caught:
        await store.get("acme/a.txt", max_bytes=1000)
    assert caught.value.permanent
    await store.put("acme/a.txt", b"inside")
    assert outside.read_bytes() == b"outside the root"
    assert not (root / "acme" / "a.txt").is_symlink()
    assert (await store.get("acme/a.txt", max_bytes=1000)).data == b"inside"


async def test_head_answers_the_size_or_none(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "root")
    assert await store.head("t/a.txt") is None
    await store.put("t/a.txt", b"12345")
    assert await store.head("t/a.txt") == 5
    assert await store.head("t") is None  # a folder is no object


async def test_a_key_segment_over_the_name_limit_is_a_permanent_error(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = "t1/" + "n" * 300 + ".txt"
    (tmp_path / "t1").mkdir()
    with pytest.raises(InvalidObjectKey, match="longer than the file system allows") as read:
        await store.get(key, max_bytes=10)
    with pytest.raises(InvalidObjectKey, match="longer than the file system allows"):
        await store.put(key, b"x")
    assert read.value.permanent


async def test_a_name_just_within_the_limit_is_written_and_read(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = "t1/" + "n" * 251 + ".txt"  # 255 bytes: the temporary file must fit too
    await store.put(key, b"fits")
    assert (await store.get(key, max_bytes=10)).data == b"fits"


async def test_a_folder_or_a_file_in_the_way_is_a_permanent_error(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    (tmp_path / "folder").mkdir()
    await store.put("file", b"x")
    with pytest.raises(ObjectStoreRefused, match="Is a directory") as write:
        await store.put("folder", b"x")  # EISDIR
    with pytest.raises(ObjectStoreRefused, match="in the way"):
        await store.get("file/below.txt", max_bytes=10)  # ENOTDIR
    with pytest.raises(ObjectStoreRefused, match="in the way"):
        await store.put("file/below.txt", b"x")
    assert write.value.permanent


# Root reads and writes past permission bits, so the store is tried by a child process that
# drops to an unprivileged user first (as a non-root user, the bits alone refuse it).
_DENIED = """
import asyncio, os, sys
from actors.errors import ObjectStoreRefused
from actors.storage import LocalObjectStore
# Load now what the calls below import lazily: this interpreter may live where the unprivileged
# user cannot read (under /root).
import anyio._backends._asyncio
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
store = LocalObjectStore(sys.argv[1])
for attempt in (store.get("secret.txt", max_bytes=10), store.put("locked/new.txt", b"x")):
    try:
        asyncio.run(attempt)
    except ObjectStoreRefused as error:
        print(type(error).__name__, error.permanent, error)
    else:
        print("no error")
"""


def test_permission_denied_is_a_permanent_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "locked").mkdir(parents=True)
    (root / "secret.txt").write_bytes(b"x")
    (root / "secret.txt").chmod(0o000)
    (root / "locked").chmod(0o555)
    # The unprivileged user is refused by these modes, and by pytest's private temporary
    # folder above them: EACCES either way.
    done = subprocess.run(
        [sys.executable, "-c", _DENIED, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    reading, writing = done.stdout.splitlines()
    assert reading.startswith("ObjectStoreRefused True reading object 'secret.txt'")
    assert "Permission denied" in reading
    assert "Fix the permissions of [storage].root" in reading
    assert writing.startswith("ObjectStoreRefused True writing object 'locked/new.txt'")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_in_the_store_fails_its_job_instead_of_freezing_the_process(
    tmp_path: Path,
) -> None:
    # Opening a FIFO for reading waits for a writer: done on the event loop's thread, one such
    # "object" froze the whole process (no /healthz, no job timeout). It is no regular file.
    objects = tmp_path / "objects"
    (objects / "t" / "r").mkdir(parents=True)
    os.mkfifo(objects / "t" / "r" / "pipe.txt")
    (objects / "t" / "r" / "good.txt").write_text("a good document")
    config = tmp_path / "actors.toml"
    config.write_text(
        f'[queue]\npath = "{tmp_path / "q.db"}"\n[storage]\nroot = "{objects}"\n'
        '[log]\nlevel = "warning"\n'
    )

    def actors(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "actors", "--config", str(config), *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    for name in ("pipe", "good"):
        enqueued = actors(
            "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", f"t/r/{name}.txt"
        )
        assert enqueued.returncode == 0, enqueued.stderr
    done = actors("run", "--until-idle")
    assert done.returncode == 2, done.stderr  # the run has a failed job (the pipe's)
    pipe = actors("jobs", "show", "1")
    good = actors("jobs", "show", "2")
    assert '"status": "done"' in good.stdout
    assert '"status": "failed"' in pipe.stdout and "not a regular file" in pipe.stdout


async def test_a_batch_read_answers_each_key_as_a_read_alone_would(tmp_path: Path) -> None:
    # get_many opens each folder once for the batch and reads small files with plain system
    # calls: every object and every error must be what `get` gives for the same key.
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"another tenant's document")
    store = LocalObjectStore(root)
    await store.put("t/r/a.txt", b"alpha")
    await store.put("t/r/b.md", b"# beta")
    await store.put("t/other/c.json", b"{}")
    await store.put("t/r/empty.txt", b"")
    await store.put("t/r/big.bin", bytes(range(256)) * 512)  # 128 KiB: read in a thread
    await store.put("t/r/over.txt", b"x" * 101)
    (root / "t" / "r" / "folder").mkdir()
    (root / "t" / "link").symlink_to(outside)
    (root / "t" / "r" / "linked.txt").symlink_to(outside / "secret.txt")
    keys = [
        "t/r/a.txt",
        "t/r/missing.txt",
        "t/r/b.md",
        "t/r/folder",
        "t/link/secret.txt",
        "t/r/linked.txt",
        "t/other/c.json",
        "t/r/over.txt",
        "t/nowhere/a.txt",
        "t/r/a.txt/below",
        "t/r/empty.txt",
        "t/r/big.bin",
        "t/../escape.txt",
    ]
    read = await store.get_many(keys, max_bytes=200 * 1024)
    assert len(read) == len(keys)
    for key, got in zip(keys, read, strict=True):
        try:
            alone: object = await store.get(key, max_bytes=200 * 1024)
        except Exception as exc:
            alone = exc
        if isinstance(alone, Exception):
            assert (type(got), str(got)) == (type(alone), str(alone)), key
        else:
            assert got == alone, key
    assert [type(r).__name__ for r in read[:6]] == [
        "StoredObject",
        "ObjectMissing",
        "StoredObject",
        "ObjectMissing",
        "InvalidObjectKey",
        "InvalidObjectKey",
    ]
    small = await store.get_many(["t/r/over.txt"], max_bytes=100)
    assert isinstance(small[0], ObjectTooLarge)
