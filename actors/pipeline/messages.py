"""Every message the pipeline's actors pass to each other; one inbox union per actor."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "AckInbox",
    "Failed",
    "Fetched",
    "JobLeased",
    "LeasedJob",
    "Message",
    "Processed",
    "Refresh",
    "Release",
    "RunEvent",
    "RunEventKind",
    "RunRoomInbox",
    "Subscribe",
]


class Message(msgspec.Struct, frozen=True, tag=True, forbid_unknown_fields=True):
    """Base of every message: frozen, tagged with its class name, unknown fields refused."""


class LeasedJob(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a stage needs to know about a job it works on (plain data; no handles)."""

    id: int
    run_id: str
    tenant_id: str
    r2_key: str
    lease_token: str
    attempts: int
    max_attempts: int
    payload: Any = None
    # An admin allowed this job's key outside "{tenant_id}/"; the fetcher refuses any other.
    cross_tenant_key: bool = False
    # The job's own processing time limit (None: [pipeline].job_timeout_seconds).
    timeout_seconds: float | None = None


class JobLeased(Message, frozen=True, kw_only=True):
    """Lease manager -> fetchers: a job is leased and waits for its object."""

    job: LeasedJob


class Fetched(Message, frozen=True, kw_only=True):
    """Fetchers -> processors: the job's object, read whole and within the size cap."""

    job: LeasedJob
    data: bytes
    content_type: str | None = None


class Processed(Message, frozen=True, kw_only=True):
    """Processors -> ack reporter: the job succeeded; ``result`` is stored with the ack."""

    job: LeasedJob
    result: Any
    # Added to the run's aggregate numbers in the ack's transaction (bytes, chunks, tokens...).
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


class Failed(Message, frozen=True, kw_only=True):
    """Any stage -> ack reporter: the job failed; ``permanent`` skips the remaining retries."""

    job: LeasedJob
    error: str
    permanent: bool = False
    stage: str = ""


class Release(Message, frozen=True, kw_only=True):
    """Any stage -> ack reporter: give the job's lease back untouched (shutdown, lost outcome)."""

    job: LeasedJob
    reason: str = ""


#: What happened to jobs of a run, as its room hears it.
RunEventKind = Literal["leased", "done", "failed", "retrying", "released", "enqueued", "cancelled"]


class RunEvent(Message, frozen=True, kw_only=True):
    """Pipeline -> run room: something happened to jobs of this run (after it was committed)."""

    run_id: str
    kind: RunEventKind
    job_ids: tuple[int, ...] = ()
    at: float = 0.0
    error: str | None = None


class Subscribe(Message, frozen=True, kw_only=True):
    """Anyone -> run room: reply with the room, whose ``updates()`` a watcher iterates."""


class Refresh(Message, frozen=True, kw_only=True):
    """A watcher -> run room: reload the run's state (other processes may have changed it)."""


AckInbox = Processed | Failed | Release
RunRoomInbox = RunEvent | Subscribe | Refresh
