"""The object-store contract every store implements: the protocol, keys, and shared errors."""

from __future__ import annotations

from typing import Protocol

import msgspec

from actors.errors import InvalidObjectKey, ObjectMissing, ObjectTooLarge

__all__ = ["ObjectStore", "StoredObject", "check_key", "missing", "too_large"]


class StoredObject(msgspec.Struct, frozen=True, kw_only=True):
    """An object's bytes, read whole, and what the store knows of its type."""

    key: str
    data: bytes
    content_type: str | None = None


class ObjectStore(Protocol):
    """What the fetcher and ``submit`` need from an object store.

    Error handling: ``get`` raises `ObjectMissing`, `ObjectTooLarge` or `InvalidObjectKey`
    (permanent: the job fails without retries) or `ObjectStoreUnavailable` (transient: the job
    is retried with backoff). A store never returns part of an object. ``head`` answers the
    object's size, or None when there is none (``/uploads/complete`` checks an upload arrived).

    Optional: ``put_file(path, key, content_type=...)`` uploads a file without holding it in
    memory (``submit`` uses it when present); ``presign_put(key, ...)`` signs a URL for an
    upload straight to the store (``/uploads/create`` needs it).
    """

    async def get(self, key: str, *, max_bytes: int) -> StoredObject: ...

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None: ...

    async def head(self, key: str) -> int | None: ...

    async def aclose(self) -> None: ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a relative path of plain segments, else raise `InvalidObjectKey`."""
    # A leading '/' shows as an empty first segment.
    if any(part in ("..", ".", "") for part in key.split("/")):
        raise InvalidObjectKey(
            f"object key {key!r} is not allowed: keys are relative paths like "
            "'tenant/run/file.pdf', without empty, '.' or '..' segments and without a leading '/'"
        )
    if "\x00" in key or "\\" in key:
        raise InvalidObjectKey(f"object key {key!r} contains a NUL byte or a backslash")
    return key


def missing(key: str, where: str) -> ObjectMissing:
    """The error for a key with no object in ``where`` (e.g. "the local store at /data")."""
    return ObjectMissing(
        f"object {key!r} does not exist in {where}; upload it (python -m actors submit) before "
        "enqueueing its job"
    )


def too_large(key: str, max_bytes: int, size: int | None = None) -> ObjectTooLarge:
    """The error for an object over ``max_bytes``; ``size`` when the store announced it."""
    if size is None:
        what = f"is over the limit of {max_bytes} bytes"
    else:
        what = f"is {size} bytes, over the limit of {max_bytes}"
    return ObjectTooLarge(
        f"object {key!r} {what}; raise [pipeline].max_object_bytes or split the document"
    )
