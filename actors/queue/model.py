"""The queue's values: jobs, acks, results, stats and run summaries, as frozen msgspec Structs."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

import msgspec

__all__ = [
    "Ack",
    "AckResult",
    "Backoff",
    "ImportReason",
    "ImportResult",
    "ImportedJob",
    "ItemReason",
    "ItemResult",
    "Job",
    "JobStatus",
    "JsonValue",
    "LeaseResult",
    "MaintenanceClaim",
    "MissedTicks",
    "NewJob",
    "NewSchedule",
    "Page",
    "QueueControls",
    "RunCancel",
    "RunStatus",
    "RunSummary",
    "Schedule",
    "ScheduleFiring",
    "Stats",
    "TenantControl",
]


#: A payload or result: any value msgspec encodes as JSON (decoded back as dicts, lists, str,
#: int, float, bool and None). Narrow it with isinstance before use.
JsonValue = object

JobStatus = Literal["pending", "leased", "done", "failed", "cancelled"]
RunStatus = Literal["queued", "processing", "done", "failed", "cancelled"]
#: What a schedule does with ticks that are more than its grace late (everything was down):
#: ``catch_up`` enqueues one job, for the latest of them; ``skip`` enqueues none.
MissedTicks = Literal["catch_up", "skip"]
ItemReason = Literal[
    "ok",  # the operation was applied
    "duplicate",  # an ack repeated under the same lease: nothing changed, the job is as acked
    "expired",  # the lease ran out before this call; nobody else holds the job yet
    "superseded",  # the job was leased again under a newer token
    "foreign_lease",  # an ids-only ack: the job's live lease was taken by another principal
    "finished",  # the job is already done or failed
    "cancelled",  # the job was cancelled (or its cancellation requested): stop working on it
    "not_leased",  # the job is pending again (released, retried or reaped)
    "not_found",  # no job has this id
]

ImportReason = Literal[
    "ok",  # imported (or, for `delete_imported`, deleted)
    "exists",  # a job with this origin is already there: nothing was written
    "changed",  # the job changed after it was imported: left alone (`delete_imported`)
    "refused",  # not written: ``message`` says why (its run belongs to another tenant)
    "not_found",  # no job has this origin (`delete_imported`)
]

T = TypeVar("T")


# gc=False on the two Structs returned by the thousand: untracked by the cyclic GC, they do not
# trigger its collections, which would pause every waiter of a pull (docs/benchmarks.md, Queue).
# Safe: a frozen Struct decoded from a row cannot be part of a reference cycle.
class Job(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One unit of work: an object (``r2_key``) of a run of a tenant, and its lease state.

    Invariant: ``status == "leased"`` exactly when ``lease_token`` names the one live lease and
    ``lease_expires_at`` is set; times are seconds since the epoch on the queue's clock.
    """

    id: int
    run_id: str
    tenant_id: str
    r2_key: str
    payload: JsonValue = None
    status: JobStatus = "pending"
    attempts: int = 0
    max_attempts: int = 5
    priority: int = 0
    available_at: float = 0.0
    lease_token: str | None = None
    lease_expires_at: float | None = None
    worker_id: str | None = None
    last_error: str | None = None
    result: JsonValue = None
    idempotency_key: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    # The principal that took the current lease (an HTTP token's ``Principal.id``, or
    # "anonymous"); None for an in-process pull. Cleared with the lease.
    lease_owner: str | None = None
    # When the current lease's job was handed to the pipeline's first stage (`start_many`).
    # An expired lease of a job never started costs no attempt. Cleared with the lease.
    started_at: float | None = None
    # The key lies outside "{tenant_id}/", which only an admin may allow at enqueue.
    cross_tenant_key: bool = False
    # This job's processing time limit (overrides [pipeline] job_timeout_seconds).
    timeout_seconds: float | None = None
    # Where an imported job came from (``d1:<id>``, ``kv:<task id>``); None if enqueued here.
    origin: str | None = None
    # When someone asked to cancel it (`cancel_many`, `cancel_run`). A leased job with a cancel
    # request is never renewed, started or acked done: its holder's next call ends it
    # `cancelled` (so does the reaper once its lease expires).
    cancel_requested_at: float | None = None


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Retry delay after the n-th failed attempt: ``min(cap, base * 2**(n-1))`` times a factor
    drawn from ``[1 - jitter, 1]`` by the backend (`actors.queue.base.jitter_factors`)."""

    base_seconds: float = 1.0
    cap_seconds: float = 300.0
    jitter: float = 0.5


class NewJob(msgspec.Struct, frozen=True, kw_only=True):
    """The arguments of one enqueue, for ``enqueue_many``."""

    run_id: str
    tenant_id: str
    r2_key: str
    payload: JsonValue = None
    idempotency_key: str | None = None
    delay_seconds: float = 0.0
    priority: int = 0
    max_attempts: int | None = None
    cross_tenant_key: bool = False
    timeout_seconds: float | None = None


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one leased job, for ``ack_many``.

    ``permanent`` with ``status="failed"`` makes the job terminally failed at once (a missing
    object will not appear on retry). ``run_metrics`` is added to the run's metrics in the same
    transaction, e.g. ``{"bytes": 1234, "tokens": 50}``.
    """

    job_id: int
    lease_token: str
    status: Literal["done", "failed"] = "done"
    result: JsonValue = None
    error: str | None = None
    permanent: bool = False
    run_metrics: dict[str, float] | None = None


class ItemResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The outcome of one item of a batch call: applied (``ok``) or refused, and why.

    ``job`` is the job after the call when it was applied (or found); ``message`` says what
    happened and what to do when it was refused.
    """

    job_id: int
    ok: bool
    reason: ItemReason
    job: Job | None = None
    message: str | None = None


# The same shape serves acks and lease calls; the names say which call returned it.
AckResult = ItemResult
LeaseResult = ItemResult


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """How many jobs are in each status, and how long the oldest available job has waited.

    ``pending`` counts every job with status pending, as it always has (``total`` is the sum of
    the five statuses, and a client that waits for ``pending == 0`` still waits for delayed
    jobs and retries). ``scheduled`` is the part of ``pending`` that is not available yet
    (``available_at`` in the future: enqueued with a delay, or waiting out a retry's backoff);
    ``pending - scheduled`` jobs can be leased now. ``oldest_pending_age_seconds`` is measured
    over those available jobs only, from when each became available (``available_at``), so a
    job delayed by an hour is not an hour late when it becomes due; None when none is available.
    """

    pending: int
    scheduled: int
    leased: int
    done: int
    failed: int
    oldest_pending_age_seconds: float | None
    # What is paused (`Queue.pause`): the whole queue, and these tenants (sorted).
    paused: bool = False
    paused_tenants: list[str] = msgspec.field(default_factory=list)
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.leased + self.done + self.failed + self.cancelled


class TenantControl(msgspec.Struct, frozen=True, kw_only=True):
    """One tenant's stored controls: paused or not, its share of claims and its limits.

    ``weight`` is how many of the tenant's jobs a fair claim takes per round (round-robin
    between tenants); ``max_leased`` caps the tenant's live leases across every worker;
    ``max_per_second`` caps how many of its jobs are leased per second (a bucket of that many,
    refilled continuously). None: no limit.
    """

    tenant_id: str
    paused: bool = False
    weight: int = 1
    max_leased: int | None = None
    max_per_second: float | None = None


class QueueControls(msgspec.Struct, frozen=True, kw_only=True):
    """What the queue's operators set: whether the whole queue is paused, and each tenant's
    controls (only tenants with a stored row, sorted by tenant id)."""

    paused: bool = False
    tenants: list[TenantControl] = msgspec.field(default_factory=list)


class MaintenanceClaim(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to ``claim_maintenance``: whether this caller won the task's due round.

    ``round`` counts the task's rounds claimed so far by every process (this one included when
    ``claimed``); ``due_at`` is when its next round may be claimed, on the queue's clock.
    """

    task: str
    claimed: bool
    round: int
    due_at: float


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A run's state: job counts from the jobs table, summed metrics, and a derived status.

    ``status`` is ``"queued"`` while no job has been leased or finished, ``"processing"`` while
    some job is pending or leased, and once every job is finished: ``"cancelled"`` when some
    job was cancelled (the run was stopped; its counts say how far it got), else ``"failed"``
    when some failed, else ``"done"``.
    """

    run_id: str
    tenant_id: str
    status: RunStatus
    total: int
    pending: int
    leased: int
    done: int
    failed: int
    metrics: dict[str, float]
    created_at: float
    updated_at: float
    finished_at: float | None
    cancelled: int = 0


class RunCancel(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to ``cancel_run``: how many of the run's unfinished jobs were cancelled at
    once (pending ones) and how many are marked for cancellation (leased ones: each ends
    ``cancelled`` when its holder next calls, or when the reaper finds its lease expired)."""

    run_id: str
    cancelled: int
    cancel_requested: int


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One page of a listing; pass ``next_cursor`` back to get the next (None: no more)."""

    items: list[T]
    next_cursor: str | None = None


class NewSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """A recurring job: what each tick enqueues (a job of ``tenant_id`` naming ``r2_key``, with
    ``payload`` and ``priority``) and when ticks fall (``cron`` in ``timezone``, or every
    ``interval_seconds``; `actors.cron.Cadence`).

    ``name`` is unique within the tenant. A tick is on time while it is at most
    ``grace_seconds`` old: each such tick enqueues its own job. Older ones were missed (every
    process was down): ``missed`` says whether they enqueue one job, for the latest of them.
    """

    name: str
    tenant_id: str
    r2_key: str
    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str = "UTC"
    payload: JsonValue = None
    priority: int = 0
    missed: MissedTicks = "catch_up"
    grace_seconds: float = 60.0


class Schedule(NewSchedule, frozen=True, kw_only=True):
    """A schedule as the queue holds it: its definition, and when its next tick is due.

    ``last_tick_at`` is the tick of the latest job it enqueued (None: none yet). Times are
    seconds since the epoch on the queue's clock.
    """

    next_tick_at: float
    last_tick_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


class ScheduleFiring(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to ``fire_schedules``: the jobs this round enqueued (one per tick it claimed),
    and when the earliest schedule is next due (None: there is no schedule)."""

    jobs: list[Job]
    next_due_at: float | None


class ImportedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job brought over from another system, for ``import_jobs``: its state as it was there.

    ``origin`` names it in that system (``d1:<id>``, ``kv:<task id>``) and is unique in the
    queue. Only unleased states come over (a lease belongs to the system that granted it).
    """

    origin: str
    run_id: str
    tenant_id: str
    r2_key: str
    status: Literal["pending", "done", "failed"] = "pending"
    attempts: int = 0
    priority: int = 0
    payload: JsonValue = None
    result: JsonValue = None
    last_error: str | None = None
    created_at: float
    updated_at: float
    # Set for a done or failed job (its ``updated_at`` when None).
    finished_at: float | None = None
    cross_tenant_key: bool = False


class ImportResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one item of ``import_jobs`` or ``delete_imported``, by origin."""

    origin: str
    ok: bool
    reason: ImportReason
    job: Job | None = None
    message: str | None = None
