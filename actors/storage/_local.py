"""The local object store: objects as files under a folder (the embedded default)."""

from __future__ import annotations

import contextlib
import errno
import functools
import mimetypes
import os
import stat
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio

from actors.errors import (
    InvalidObjectKey,
    ObjectMissing,
    ObjectStoreError,
    ObjectStoreRefused,
    ObjectStoreUnavailable,
    ObjectTooLarge,
)
from actors.storage.base import StoredObject, check_key, missing, too_large

__all__ = ["LocalObjectStore"]

# Objects this small are read on the event loop's thread: a thread hop costs more than the read.
# Larger ones go to a worker thread so a slow disk never blocks the loop.
_INLINE_READ_BYTES = 64 * 1024


class LocalObjectStore:
    """Objects as files under ``root``: the key ``a/b.pdf`` is the file ``root/a/b.pdf``.

    Writes go to a temporary file that is renamed into place, so a reader never sees a
    partial object, even if the writer is killed.

    Symbolic links under ``root`` are never followed, on reads and writes alike: every folder of
    a key is opened relative to the one before it with ``O_NOFOLLOW``, and so is the file, so a
    link placed inside the root cannot make a key read or write outside it (the key fails with
    `InvalidObjectKey`, permanent). ``root`` itself may be a link: the operator chose it.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        """The store's errors for what reading ``key`` raised: missing, not a file, or the OS's."""
        try:
            yield
        except FileNotFoundError:
            raise missing(key, f"the local store at {self.root}") from None
        except IsADirectoryError:
            raise ObjectMissing(
                f"object {key!r} is a folder (or not a regular file) in {self.root}, not a file"
            ) from None
        except OSError as exc:
            raise _os_error(exc, key, self.root, "reading") from None

    async def get(self, key: str, *, max_bytes: int) -> StoredObject:
        """Read the object under ``key`` whole, refusing it unread if it exceeds ``max_bytes``."""
        check_key(key)
        with self._reading(key):
            # Opened on the loop's thread on purpose: one open+fstat of a local file costs
            # less than a hop to a worker thread; large objects are read in one (below).
            fd = _open_beneath(self.root, key)
            with open(fd, "rb") as f:  # noqa: ASYNC230
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise IsADirectoryError
                size = info.st_size
                if size > max_bytes:
                    raise too_large(key, max_bytes, size)
                # Read what fstat promised plus one byte, not max_bytes + 1: read(n) allocates
                # n bytes up front, the whole cap for a tiny object ("The local store's reads"
                # in docs/benchmarks.md). The extra byte tells a file that grew since fstat.
                if size <= _INLINE_READ_BYTES:
                    data = f.read(size + 1)
                else:
                    data = await anyio.to_thread.run_sync(f.read, size + 1)
                if len(data) > size:  # it grew: read on, still within the cap
                    data += f.read(max_bytes + 1 - len(data))
        if len(data) > max_bytes:  # the file grew between the size check and the read
            raise ObjectTooLarge(f"object {key!r} grew past the limit of {max_bytes} bytes")
        content_type, _ = mimetypes.guess_type(key)
        return StoredObject(key=key, data=data, content_type=content_type)

    async def get_many(
        self, keys: Sequence[str], *, max_bytes: int
    ) -> list[StoredObject | ObjectStoreError]:
        """Read the objects under ``keys`` as `get` would: each one's object or store error.

        On the loop's thread, as `get` opens files, but each folder opened once for the whole
        batch and a small file read with plain system calls; a large one goes through `get`
        (a worker thread).
        """
        folders: dict[str, int] = {}
        read: list[StoredObject | ObjectStoreError] = []
        try:
            for key in keys:
                try:
                    read.append(self._get_small(key, folders, max_bytes))
                except ObjectStoreError as exc:
                    read.append(exc)
                except _Large:
                    try:
                        read.append(await self.get(key, max_bytes=max_bytes))
                    except ObjectStoreError as exc:
                        read.append(exc)
        finally:
            for fd in folders.values():
                os.close(fd)
        return read

    def _get_small(self, key: str, folders: dict[str, int], max_bytes: int) -> StoredObject:
        """`get` for a small file, with the folders' descriptors kept in ``folders``; raises
        `_Large` for a file over ``_INLINE_READ_BYTES`` (before reading it)."""
        check_key(key)
        folder, _, name = key.rpartition("/")
        with self._reading(key):
            parent = folders.get(folder)
            if parent is None:
                parent = _open_dirs(self.root, folder.split("/") if folder else [], create=False)
                folders[folder] = parent
            fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise IsADirectoryError
                size = info.st_size
                if size > max_bytes:
                    raise too_large(key, max_bytes, size)
                if size > _INLINE_READ_BYTES:
                    raise _Large
                data = _read_to_end(fd, size, max_bytes)
            finally:
                os.close(fd)
        if len(data) > max_bytes:  # the file grew between the size check and the read
            raise ObjectTooLarge(f"object {key!r} grew past the limit of {max_bytes} bytes")
        return StoredObject(key=key, data=data, content_type=_content_type(key))

    async def head(self, key: str) -> int | None:
        """The size of the object under ``key``, or None if there is none."""
        check_key(key)

        def size() -> int | None:
            try:
                fd = _open_beneath(self.root, key)
            except (FileNotFoundError, NotADirectoryError):
                return None
            try:
                info = os.fstat(fd)
            finally:
                os.close(fd)
            return info.st_size if stat.S_ISREG(info.st_mode) else None

        try:
            return await anyio.to_thread.run_sync(size)
        except OSError as exc:
            raise _os_error(exc, key, self.root, "looking up") from None

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store ``data`` under ``key`` atomically and durably (fsync, then rename)."""
        check_key(key)
        try:
            await anyio.to_thread.run_sync(_write_atomically, self.root, key, data)
        except OSError as exc:
            raise _os_error(exc, key, self.root, "writing") from None

    async def aclose(self) -> None:
        """Nothing to release: files are opened per call."""


def _content_type(key: str) -> str | None:
    """``mimetypes.guess_type(key)``'s type, cached by the file name's extensions."""
    name = key.rpartition("/")[2]
    dot = name.find(".")
    if dot <= 0 or ":" in key:  # no extension, a dot file, or what might read as a URL
        return mimetypes.guess_type(key)[0]
    return _type_of_extensions(name[dot:])


@functools.lru_cache(maxsize=256)
def _type_of_extensions(extensions: str) -> str | None:
    # guess_type reads only a name's extensions: "x" + ".tar.gz" types like "a.tar.gz".
    return mimetypes.guess_type("x" + extensions)[0]


class _Large(Exception):
    """A file too large to read on the loop's thread: `get` reads it in a worker thread."""


def _read_to_end(fd: int, size: int, max_bytes: int) -> bytes:
    """Read a file that fstat said holds ``size`` bytes: to its end, at most ``max_bytes + 1``.

    Asks for one byte more than ``size``, not ``max_bytes + 1`` (read(n) allocates n bytes up
    front); the extra byte tells a file that grew since fstat, which is read on within the cap.
    """
    data = os.read(fd, size + 1)
    while len(data) <= max_bytes:
        more = os.read(fd, (size + 1 if len(data) <= size else max_bytes + 1) - len(data))
        if not more:
            break
        data += more
    return data


# O_NOFOLLOW makes opening a symlink fail with ELOOP; O_DIRECTORY refuses a file as a folder.
# O_NONBLOCK: opening a named pipe (or a device) returns at once instead of waiting for a
# writer on the event loop's thread; fstat then refuses it as no regular file. Reads of a
# regular file ignore the flag.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = (
    os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)


def _open_dirs(root: Path, parts: list[str], *, create: bool) -> int:
    """Open the folder ``root/parts...`` one component at a time, following no link below root.

    Returns its descriptor (the caller closes it). With ``create``, missing folders are made.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except NotADirectoryError:
                # Linux says ENOTDIR, not ELOOP, for a link opened with O_DIRECTORY|O_NOFOLLOW.
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, "a symbolic link", part) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_beneath(root: Path, key: str) -> int:
    """Open the file of ``key`` for reading without following any link below ``root``."""
    *folders, name = key.split("/")
    parent = _open_dirs(root, folders, create=False)
    try:
        return os.open(name, _FILE_FLAGS, dir_fd=parent)
    finally:
        os.close(parent)


def _through_link(key: str, root: Path) -> InvalidObjectKey:
    return InvalidObjectKey(
        f"object key {key!r} passes through a symbolic link inside the local store at {root}; "
        "the store never follows links below its root, so that no key reads or writes outside "
        "it: replace the link by the real folder or file"
    )


def _write_atomically(root: Path, key: str, data: bytes) -> None:
    *folders, name = key.split("/")
    root.mkdir(parents=True, exist_ok=True)
    parent = _open_dirs(root, folders, create=True)
    try:
        # Not named after the object: a name near the file system's limit must fit here too.
        tmp = f".{uuid.uuid4().hex}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, 0o644, dir_fd=parent)
        try:
            with open(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # rename replaces a link at the final name; it never writes through it.
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=parent)
    finally:
        os.close(parent)


# Errors of the request, not of the moment: the same key fails the same way on every attempt.
_PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EEXIST})
_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _os_error(exc: OSError, key: str, root: Path, doing: str) -> ObjectStoreError:
    """The store error for a failed read or write of ``key``: permanent when retrying the same
    key cannot help (a symbolic link, a name too long, a folder or file in the way, permission
    denied), else `ObjectStoreUnavailable` (a full disk, an I/O error: retried with backoff)."""
    if exc.errno == errno.ELOOP:
        return _through_link(key, root)
    what = f"{doing} object {key!r} in the local store at {root} failed: {exc.strerror}"
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidObjectKey(
            f"{what}; the key or a segment of it is longer than the file system allows (on most,"
            " 255 bytes a name and 4096 a path). Use shorter keys"
        )
    if exc.errno in _PERMANENT_ERRNOS:
        return ObjectStoreRefused(
            f"{what}; a folder or a file is in the way of the key's path. Use another key or"
            " move what is there"
        )
    if exc.errno in _DENIED_ERRNOS:
        return ObjectStoreRefused(
            f"{what}; the process may not {'write' if doing == 'writing' else 'read'} there."
            " Fix the permissions of [storage].root (or run as its owner)"
        )
    return ObjectStoreUnavailable(
        f"{what}; check free disk space and the health of the disk under [storage].root"
    )
