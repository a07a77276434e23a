"""Every exception that ``actors`` raises on purpose.

Hierarchy::

    ActorsError                      base of everything raised on purpose
    ├── ConfigError                  a config file or environment variable is wrong
    ├── DumpUnreadable               a dump to import is unreadable as a whole (also a ValueError)
    ├── QueueError                   the durable queue refused or failed an operation
    │   ├── InvalidArgument          an argument is malformed (also a ValueError)
    │   │   ├── OutOfRange           a number is outside its documented bounds
    │   │   └── PayloadTooLarge      a payload or result exceeds max_payload_bytes
    │   ├── JobNotFound              no job has that id (also a LookupError)
    │   ├── RunNotFound              no run has that id (also a LookupError)
    │   ├── ScheduleNotFound         the tenant has no schedule of that name (a LookupError)
    │   ├── LeaseLost                a lease token is stale: expired, superseded or finished
    │   ├── QueueClosed              the queue was used after it was closed
    │   ├── StorageError             SQLite itself failed (disk full, file unreadable, ...)
    │   │   └── DiskFull             the disk under the queue is full (fatal, see is_fatal)
    │   └── SchemaError              the file's schema cannot be used as it is
    │       ├── SchemaTooNew         the file was written by a newer version of actors
    │       └── MigrationRefused     a down-migration would drop data and was not forced
    ├── DocumentError                a document cannot be processed (permanent job failure)
    │   ├── UnsupportedDocument      not a kind the offline processor reads
    │   ├── CorruptDocument          claims a kind but is damaged or invalid
    │   ├── EncryptedDocument        an encrypted PDF
    │   ├── EmptyDocument            no extractable text
    │   ├── DocumentTooLarge         expands past a bound when read (a PDF bomb, deep nesting)
    │   ├── ModelRejected            the model API refused the request (a 4xx): permanent
    │   └── OutOfMemory              processing needed more than a worker process may use
    ├── JobTimedOut                  processing outlasted the job's time limit; retried
    ├── WorkerCrashed                a worker process died under a job; retried
    ├── ModelError                   the model API failed; the attempt is retried by the queue
    │   ├── ModelUnavailable         429, 5xx or timeouts outlasted the processor's own retries
    │   └── ModelResponseInvalid     the answer is malformed or not what was asked for
    └── ObjectStoreError             the object store refused or failed a read or write
        ├── ObjectMissing            no object under that key (permanent job failure)
        ├── ObjectTooLarge           the object exceeds [pipeline].max_object_bytes (permanent)
        ├── InvalidObjectKey         malformed (absolute, `..`, empty) or via a symlink (permanent)
        │   └── ForeignObjectKey     the key lies outside its job's tenant prefix (permanent)
        ├── ObjectStoreRefused       access denied, no such bucket, another 4xx (permanent)
        └── ObjectStoreUnavailable   a transient failure: retry with backoff

Each message says what happened, the likely cause and what to do about it. `is_fatal` says
which of them no retry or restart can fix while the process runs.
"""

from __future__ import annotations

__all__ = [
    "ActorsError",
    "ConfigError",
    "CorruptDocument",
    "DiskFull",
    "DocumentError",
    "DocumentTooLarge",
    "DumpUnreadable",
    "EmptyDocument",
    "EncryptedDocument",
    "ForeignObjectKey",
    "InvalidArgument",
    "InvalidObjectKey",
    "JobNotFound",
    "JobTimedOut",
    "LeaseLost",
    "MigrationRefused",
    "ModelError",
    "ModelRejected",
    "ModelResponseInvalid",
    "ModelUnavailable",
    "ObjectMissing",
    "ObjectStoreError",
    "ObjectStoreRefused",
    "ObjectStoreUnavailable",
    "ObjectTooLarge",
    "OutOfMemory",
    "OutOfRange",
    "PayloadTooLarge",
    "QueueClosed",
    "QueueError",
    "RunNotFound",
    "ScheduleNotFound",
    "SchemaError",
    "SchemaTooNew",
    "StorageError",
    "UnsupportedDocument",
    "WorkerCrashed",
    "is_fatal",
    "unwrap",
]


def unwrap(exc: BaseException) -> BaseException:
    """The exception inside ``exc`` if it is a group of one (nested: to the innermost).

    A task group wraps even a single failure in an `ExceptionGroup`; a message or a log line
    names the one error instead of the group. A group of several is returned as it is.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def is_fatal(exc: BaseException) -> bool:
    """Whether ``exc`` is an error that no retry or restart can fix while the process runs.

    A configuration mistake found at run time (the queue server refuses the worker's token)
    and a full disk under the queue: retried, each only repeats itself. The system stops on one
    at once (``python -m actors run`` exits with 70 and one line) instead of retrying.
    """
    return isinstance(unwrap(exc), ConfigError | DiskFull)


class ActorsError(Exception):
    """Base class of every error ``actors`` raises on purpose."""


class ConfigError(ActorsError):
    """A config file, a key in it or an environment variable is wrong; the message names which."""


class DumpUnreadable(ActorsError, ValueError):
    """A dump to import (D1 or KV) cannot be read as a whole: not JSON, no jobs table, too large."""


class QueueError(ActorsError):
    """The durable queue refused or failed an operation."""


class InvalidArgument(QueueError, ValueError):
    """An argument is malformed; the message names it and the accepted form."""


class OutOfRange(InvalidArgument):
    """A number is outside its documented bounds; the message names the bounds."""


class PayloadTooLarge(InvalidArgument):
    """A payload or result encodes to more than ``max_payload_bytes``."""


class JobNotFound(QueueError, LookupError):
    """No job has this id (it never existed, or it was purged)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(
            f"job {job_id} does not exist; it was never enqueued in this database or it was "
            "purged. Check the id and the --db path (`python -m actors jobs list`)."
        )


class RunNotFound(QueueError, LookupError):
    """No run has this id (no job was ever enqueued for it, or it was purged)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"run {run_id!r} does not exist; no job was enqueued for it in this database or "
            "it was purged. Check the run id and the --db path."
        )


class ScheduleNotFound(QueueError, LookupError):
    """The tenant has no schedule of this name (it was never created, or it was deleted)."""

    def __init__(self, tenant_id: str, name: str) -> None:
        self.tenant_id = tenant_id
        self.name = name
        super().__init__(
            f"schedule {name!r} of tenant {tenant_id!r} does not exist; list the tenant's "
            "schedules with `python -m actors schedules list`"
        )


class LeaseLost(QueueError):
    """A renew, release or ack carried a lease token that is no longer live; nothing changed.

    ``reason`` is one of ``"expired"`` (the lease ran out; nobody holds the job yet),
    ``"superseded"`` (the job was leased again under a new token), ``"finished"`` (the job
    is already done or failed), ``"not_leased"`` (the job is pending again: released,
    retried or reaped) or ``"cancelled"`` (the job was cancelled: stop working on it; the call
    that was refused ended it ``cancelled`` if its lease was marked).
    """

    def __init__(self, job_id: int, reason: str, message: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(message)


class QueueClosed(QueueError):
    """The queue was used after ``close()`` or outside its ``async with`` block."""


class StorageError(QueueError):
    """SQLite failed underneath the queue; the message carries SQLite's own words."""


class DiskFull(StorageError):
    """The disk that holds the queue is full: no write can succeed until space is freed."""


class SchemaError(QueueError):
    """The database file's schema cannot be used as it is."""


class SchemaTooNew(SchemaError):
    """The file's schema version is newer than this version of actors knows."""


class MigrationRefused(SchemaError):
    """A down-migration would drop rows and ``force`` was not given."""


class DocumentError(ActorsError):
    """A document cannot be processed; retrying will not help, so the job fails permanently."""


class UnsupportedDocument(DocumentError):
    """The bytes are not a kind the offline processor reads (binary data, unknown format)."""


class CorruptDocument(DocumentError):
    """The bytes claim a kind (a PDF header, JSON) but are damaged, truncated or invalid."""


class EncryptedDocument(DocumentError):
    """A PDF is encrypted; the offline processor has no password to open it."""


class EmptyDocument(DocumentError):
    """The document is empty or holds no extractable text (a scanned PDF, whitespace only)."""


class DocumentTooLarge(DocumentError):
    """Reading the document would pass a bound: its text, its decompressed streams, its pages
    or its nesting depth; a zip-bomb-like PDF or a generated document nested thousands deep."""


class ModelRejected(DocumentError):
    """The model API answered 400-class (bad request, key refused, document too large...).

    Retrying the same request cannot help, so the job fails permanently with the API's message.
    """


class OutOfMemory(DocumentError):
    """Processing a document needed more memory than its worker process may use (permanent)."""


class JobTimedOut(ActorsError):
    """Processing a job outlasted its time limit; it was stopped and the attempt is retried."""


class WorkerCrashed(ActorsError):
    """The worker process running a job died before it answered; the attempt is retried."""


class ModelError(ActorsError):
    """The model API failed in a way that a later attempt may not repeat."""


class ModelUnavailable(ModelError):
    """Rate limits (429), 5xx or timeouts lasted through the processor's retries."""


class ModelResponseInvalid(ModelError):
    """The API's answer is not what it promises: not JSON, no candidates, a broken schema."""


class ObjectStoreError(ActorsError):
    """The object store refused or failed a read or a write.

    ``permanent`` says whether retrying the job can help: a missing object stays missing.
    """

    permanent = True


class ObjectMissing(ObjectStoreError, LookupError):
    """No object is stored under the key."""


class ObjectTooLarge(ObjectStoreError):
    """The object is larger than ``[pipeline].max_object_bytes``; it was not read."""


class InvalidObjectKey(ObjectStoreError, ValueError):
    """The key is empty, absolute, climbs out of the store with ``..`` or passes a symlink."""


class ForeignObjectKey(InvalidObjectKey):
    """The key lies outside ``"{tenant_id}/"`` of its job's tenant, and no admin allowed it.

    Raised when such a job is enqueued (HTTP answers 403) and, for a job already stored, by the
    fetcher before the store is asked for anything: the job fails for good, its object unread.
    """


class ObjectStoreRefused(ObjectStoreError):
    """The store refused the request for good: access denied, no such bucket, another 4xx."""


class ObjectStoreUnavailable(ObjectStoreError):
    """A transient failure (timeout, reset, 5xx, throttling): the job is retried with backoff."""

    permanent = False
