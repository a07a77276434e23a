"""What the HTTP API needs from the system that serves it: one narrow Protocol per resource."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from actors.config import Config
from actors.pipeline.messages import RunEvent
from actors.queue.base import Queue
from actors.queue.model import Job, NewJob, NewSchedule, Schedule
from actors.storage import ObjectStore
from supervisors import ChildCounts, Clock

if TYPE_CHECKING:
    from actors.pipeline._run_room import RunUpdate

__all__ = [
    "Host",
    "JobsHost",
    "LagGauge",
    "OperationsHost",
    "OutcomeCounts",
    "PresigningStore",
    "RunsHost",
    "SchedulesHost",
    "TreeCounts",
    "UploadsHost",
]


class _Base(Protocol):
    """Every resource reads the config, the clock and the queue."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def queue(self) -> Queue: ...


class _Enqueues(Protocol):
    """Enqueue with the tenancy rule checked (`ActorSystem.enqueue`), so a local worker wakes."""

    async def enqueue(
        self,
        run_id: str,
        tenant_id: str,
        r2_key: str,
        *,
        payload: object = None,
        idempotency_key: str | None = None,
        delay_seconds: float = 0,
        priority: int = 0,
        max_attempts: int | None = None,
        cross_tenant_key: bool = False,
        timeout_seconds: float | None = None,
    ) -> Job: ...


class JobsHost(_Base, _Enqueues, Protocol):
    """The job verbs: the queue, enqueueing, and telling a run's watchers what changed."""

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]: ...

    def tell_watchers(self, events: Sequence[RunEvent]) -> None:
        """Tell those watching a run (its room, if it has one) about events committed here."""
        ...


class UploadsHost(_Base, _Enqueues, Protocol):
    """Uploads: the object store the files go to, and the enqueue of their jobs."""

    @property
    def store(self) -> ObjectStore: ...


@runtime_checkable
class PresigningStore(Protocol):
    """An object store that signs its own upload URLs (S3, R2): clients PUT there directly."""

    async def presign_put(
        self,
        key: str,
        *,
        expires_seconds: int = 900,
        content_type: str | None = None,
        if_absent: bool = False,
    ) -> str: ...


class SchedulesHost(_Base, Protocol):
    """Schedules: created with the tenancy rule checked (`ActorSystem.create_schedule`)."""

    async def create_schedule(self, schedule: NewSchedule) -> Schedule: ...


class RunsHost(_Base, Protocol):
    """Runs: their summaries (from the queue) and a subscription to their updates."""

    def watch_run(self, run_id: str) -> AsyncGenerator[RunUpdate, None]:
        """The run's state now and after every change, until it is done or failed."""
        ...


class OutcomeCounts(Protocol):
    """Outcomes the pipeline of this process committed (`AckStats`)."""

    @property
    def done(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def retried(self) -> int: ...
    @property
    def released(self) -> int: ...
    @property
    def stale(self) -> int: ...
    @property
    def cancelled(self) -> int: ...


class LagGauge(Protocol):
    """The event loop's largest lag since the previous reading (`LoopWatchdog`)."""

    def take_max(self) -> float: ...


class TreeCounts(Protocol):
    """The supervision tree, as far as readiness asks: are all its children running?"""

    def count_children(self) -> ChildCounts: ...


class OperationsHost(_Base, Protocol):
    """Health and metrics: the queue's counts, the pipeline's outcomes, the loop, the tree."""

    @property
    def ack_stats(self) -> OutcomeCounts: ...

    @property
    def watchdog(self) -> LagGauge: ...

    @property
    def tree(self) -> TreeCounts: ...


class Host(JobsHost, UploadsHost, RunsHost, SchedulesHost, OperationsHost, Protocol):
    """Everything the API serves from; `ActorSystem` is one (``create_app(system)``)."""
