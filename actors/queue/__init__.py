"""The durable job queue: the contract (`Queue`), its values, and the embedded SQLite backend."""

from __future__ import annotations

from actors.bounds import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_BATCH,
    MAX_DELAY_SECONDS,
    MAX_PULL,
    MAX_VISIBILITY_SECONDS,
)
from actors.queue.base import OwnedQueue, Queue
from actors.queue.model import (
    Ack,
    AckResult,
    Backoff,
    ItemResult,
    Job,
    JobStatus,
    LeaseResult,
    MaintenanceClaim,
    MissedTicks,
    NewJob,
    NewSchedule,
    Page,
    QueueControls,
    RunCancel,
    RunStatus,
    RunSummary,
    Schedule,
    ScheduleFiring,
    Stats,
    TenantControl,
)
from actors.queue.sqlite import SQLiteQueue
from actors.queue.sqlite.schema import LATEST_VERSION, Durability

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
    "MissedTicks",
    "NewJob",
    "NewSchedule",
    "OwnedQueue",
    "Page",
    "Queue",
    "QueueControls",
    "RunCancel",
    "RunStatus",
    "RunSummary",
    "SQLiteQueue",
    "Schedule",
    "ScheduleFiring",
    "Stats",
    "TenantControl",
]
