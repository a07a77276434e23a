"""Object stores: where a job's object is read from (a local folder, S3 or R2)."""

from actors.storage._local import LocalObjectStore, ObjectStore, StoredObject, check_key, make_store

__all__ = ["LocalObjectStore", "ObjectStore", "StoredObject", "check_key", "make_store"]
