"""The durable job queue: one SQLite file, leases with fencing, retries, runs, group commit."""

from __future__ import annotations

from actors.queue.base import DEFAULT_MAX_PAYLOAD_BYTES, OwnedQueue, Queue
from actors.queue.model import (
    MAX_BATCH,
    MAX_DELAY_SECONDS,
    MAX_PULL,
    MAX_VISIBILITY_SECONDS,
    Ack,
    AckResult,
    ItemResult,
    Job,
    JobStatus,
    LeaseResult,
    MaintenanceClaim,
    NewJob,
    Page,
    RunStatus,
    RunSummary,
    Stats,
)
from actors.queue.sqlite._queue import SQLiteQueue
from actors.queue.sqlite._schema import LATEST_VERSION, Durability
from actors.queue.sqlite._verbs import Backoff

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "LATEST_VERSION",
    "MAX_BATCH",
    "MAX_DELAY_SECONDS",
    "MAX_PULL",
    "MAX_VISIBILITY_SECONDS",
    "Ack",
    "AckResult",
    "Backoff",
    "Durability",
    "ItemResult",
    "Job",
    "JobStatus",
    "LeaseResult",
    "MaintenanceClaim",
    "NewJob",
    "OwnedQueue",
    "Page",
    "Queue",
    "RunStatus",
    "RunSummary",
    "SQLiteQueue",
    "Stats",
]
