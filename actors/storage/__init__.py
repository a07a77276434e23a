"""Object stores: where a job's object is read from (a local folder, S3 or R2).

The front door: the `ObjectStore` contract (from `actors.storage.base`), the local store, and
`make_store`, the registry of ``[storage].kind``. ``S3ObjectStore`` is imported on first use,
so that a process with a local store never loads the S3 module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.config import Config
from actors.errors import ConfigError
from actors.storage._local import LocalObjectStore
from actors.storage.base import ObjectStore, StoredObject, check_key

if TYPE_CHECKING:
    from actors.storage._s3 import S3ObjectStore

__all__ = [
    "LocalObjectStore",
    "ObjectStore",
    "S3ObjectStore",
    "StoredObject",
    "check_key",
    "make_store",
]


def make_store(config: Config) -> ObjectStore:
    """The object store that ``[storage].kind`` names."""
    if config.storage.kind == "local":
        return LocalObjectStore(config.storage.root)
    if config.storage.kind in ("r2", "s3"):
        from actors.storage._s3 import S3ObjectStore  # aioboto3 is an extra: only when configured

        return S3ObjectStore.from_config(config)
    raise ConfigError(
        f'[storage].kind = {config.storage.kind!r} is not available in this version; use "local"'
    )


def __getattr__(name: str) -> object:
    if name == "S3ObjectStore":
        from actors.storage._s3 import S3ObjectStore

        return S3ObjectStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
