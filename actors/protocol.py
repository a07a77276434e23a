"""The edge worker's JSON bodies as msgspec Structs, camelCase on the wire (server and client)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from actors.bounds import (
    MAX_BATCH,
    AckIdText,
    Attempts,
    Delay,
    ErrorText,
    IdText,
    JobId,
    JobTimeout,
    LeaseToken,
    MetricName,
    Priority,
    PullSize,
    PullWait,
    Retention,
    ScheduleCron,
    ScheduleGrace,
    ScheduleInterval,
    ScheduleName,
    TenantLeased,
    TenantRate,
    TimeZoneName,
    UploadName,
    Visibility,
    Weight,
)
from actors.queue.model import (
    ItemResult,
    Job,
    MissedTicks,
    QueueControls,
    RunSummary,
    Schedule,
    Stats,
)

__all__ = [
    "AckIn",
    "AckItem",
    "AckOut",
    "CancelIn",
    "CancelItemOut",
    "CancelOut",
    "ClaimTaskIn",
    "ClaimTaskOut",
    "ControlsOut",
    "CountOut",
    "EnqueueIn",
    "EnqueueManyIn",
    "EnqueueManyOut",
    "EnqueueOut",
    "ErrorOut",
    "ItemOut",
    "JobOut",
    "JobsPage",
    "LeaseRef",
    "LeasesOut",
    "LimitsIn",
    "PauseIn",
    "PendingTasksOut",
    "PullIn",
    "PullOut",
    "PurgeIn",
    "ReleaseIn",
    "ReleaseTaskIn",
    "RenewIn",
    "RenewTaskIn",
    "RequeueIn",
    "ResultIn",
    "RunCancelOut",
    "RunOut",
    "ScheduleIn",
    "ScheduleOut",
    "SchedulesOut",
    "StartIn",
    "StatsBody",
    "StatsOut",
    "StreamTokenOut",
    "TaskErrorOut",
    "TaskIssue",
    "TaskLease",
    "TaskLeaseIn",
    "TaskOk",
    "TaskResultIn",
    "TaskStatusIn",
    "TenantControlOut",
    "UploadCreateIn",
    "UploadCreateOut",
    "UploadDoneOut",
    "cancel_item_out",
    "controls_out",
    "job_out",
    "run_out",
    "schedule_out",
    "stats_out",
]

# Cloudflare documents a Turnstile token as at most 2048 characters.
TurnstileToken = Annotated[str, Meta(max_length=2048)]

# The bounds (`actors.bounds`) are the queue's, so that the OpenAPI schema states them and a
# bad value is a 400 naming the field before any queue call.
Metrics = dict[MetricName, float]


class _In(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    """Base of request bodies: camelCase keys; unknown keys are ignored, as the edge worker did."""


class _Out(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    """Base of response bodies: camelCase keys."""


# --- jobs ------------------------------------------------------------------------------------


class EnqueueIn(_In, frozen=True):
    run_id: IdText
    tenant_id: IdText
    r2_key: IdText
    payload: Any = None
    idempotency_key: IdText | None = None
    delay_seconds: Delay = 0.0
    priority: Priority = 0
    max_attempts: Attempts | None = None
    # Only an admin may enqueue a key outside the tenant's prefix; this says it meant to.
    cross_tenant_key: bool = False
    timeout_seconds: JobTimeout | None = None


class EnqueueOut(_Out, frozen=True):
    success: bool
    job_id: int
    run_id: str
    status: str


class EnqueueManyIn(_In, frozen=True):
    jobs: Annotated[list[EnqueueIn], Meta(max_length=MAX_BATCH)]


class JobOut(_Out, frozen=True):
    """A job as the API shows it; the seed's pull returned the first six fields.

    ``leaseToken`` is the lease's fencing credential (whoever holds it may ack, renew or
    release the lease): only a pull's answer, to the worker that took the lease, carries it;
    every other answer (listings, a job, a cancel's jobs) leaves it out.
    """

    id: int
    run_id: str
    tenant_id: str
    r2_key: str
    attempts: int
    lease_token: str | None = None
    status: str = "pending"
    max_attempts: int = 5
    priority: int = 0
    payload: Any = None
    available_at: float = 0.0
    lease_expires_at: float | None = None
    worker_id: str | None = None
    last_error: str | None = None
    result: Any = None
    idempotency_key: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    lease_owner: str | None = None
    started_at: float | None = None
    cross_tenant_key: bool = False
    timeout_seconds: float | None = None
    # Where an imported job came from (``d1:<id>``, ``kv:<task id>``).
    origin: str | None = None
    # When someone asked to cancel it; a leased job with this set ends `cancelled`.
    cancel_requested_at: float | None = None


class EnqueueManyOut(_Out, frozen=True):
    success: bool
    jobs: list[JobOut]


class PullIn(_In, frozen=True):
    """``started``: the jobs count as started when leased (a crash then spends their attempt),
    for clients that never call ``/jobs/start``; send false and call it when work begins.
    ``waitSeconds``: how long to wait for a job when none is there (a long poll)."""

    max: PullSize = 10
    visibility_seconds: Visibility = 60.0
    worker_id: IdText | None = None
    started: bool = True
    wait_seconds: PullWait = 0.0


class PullOut(_Out, frozen=True):
    jobs: list[JobOut]


class AckItem(_In, frozen=True):
    """One lease-aware outcome: the job, its lease token, and what happened."""

    id: JobId
    lease_token: LeaseToken
    status: Literal["done", "failed"] = "done"
    result: Any = None
    error: ErrorText | None = None
    permanent: bool = False
    run_metrics: Metrics | None = None


class AckIn(_In, frozen=True):
    """Either the seed's ``{ids, status}`` (settles only live leases this token took) or
    ``{acks: [...]}`` (each under its lease token). ``status`` is required with ``ids``."""

    # A string names a job by its id's digits or by the id it had before it was imported.
    ids: Annotated[list[JobId | AckIdText], Meta(max_length=MAX_BATCH)] | None = None
    status: Literal["done", "failed"] | None = None
    error: ErrorText | None = None
    acks: Annotated[list[AckItem], Meta(max_length=MAX_BATCH)] | None = None


class ItemOut(_Out, frozen=True):
    """The outcome of one item of a batch: applied (``ok``) or refused, and why.

    ``id`` is the job id as the request gave it (a string in an ids-only ack that sent one).
    """

    id: int | str
    ok: bool
    reason: str
    status: str | None = None
    message: str | None = None


class AckOut(_Out, frozen=True):
    success: bool
    results: list[ItemOut]


class LeaseRef(_In, frozen=True):
    id: JobId
    lease_token: LeaseToken


class RenewIn(_In, frozen=True):
    leases: Annotated[list[LeaseRef], Meta(max_length=MAX_BATCH)]
    visibility_seconds: Visibility = 60.0


class StartIn(_In, frozen=True):
    """Mark leased jobs started: from now on an expired lease spends the job's attempt."""

    leases: Annotated[list[LeaseRef], Meta(max_length=MAX_BATCH)]


class ReleaseIn(_In, frozen=True):
    leases: Annotated[list[LeaseRef], Meta(max_length=MAX_BATCH)]
    delay_seconds: Delay = 0.0


class LeasesOut(_Out, frozen=True):
    success: bool
    results: list[ItemOut]


class ResultIn(_In, frozen=True):
    """Store a leased job's result: the job is acked done with it under its lease."""

    lease_token: LeaseToken
    result: Any = None
    run_metrics: Metrics | None = None


class RequeueIn(_In, frozen=True):
    ids: Annotated[list[JobId], Meta(max_length=MAX_BATCH)] | None = None
    run_id: IdText | None = None
    tenant_id: IdText | None = None


class PurgeIn(_In, frozen=True):
    older_than_seconds: Retention


class CountOut(_Out, frozen=True):
    success: bool
    count: int


class JobsPage(_Out, frozen=True):
    jobs: list[JobOut]
    next_cursor: str | None = None


class StatsBody(_Out, frozen=True):
    """The queue's counts (`Stats`): ``pending`` counts every pending job, ``scheduled`` the
    pending jobs not available yet; the age is the oldest available job's, since it became
    available. ``scheduled`` defaults to 0 for a server that predates it."""

    pending: int
    leased: int
    done: int
    failed: int
    scheduled: int = 0
    oldest_pending_age_seconds: float | None = None
    # What is paused (POST /queue/pause); false and none for a server that predates it.
    paused: bool = False
    paused_tenants: list[str] = msgspec.field(default_factory=list)
    cancelled: int = 0


class StatsOut(_Out, frozen=True):
    stats: StatsBody
    timestamp: float


# --- the queue's controls --------------------------------------------------------------------


class PauseIn(_In, frozen=True):
    """Whom to pause or resume: one tenant, or (left out) the whole queue."""

    tenant_id: IdText | None = None


class LimitsIn(_In, frozen=True):
    """A tenant's share of fair claims and its limits; a limit left out is none."""

    weight: Weight = 1
    max_leased: TenantLeased | None = None
    max_per_second: TenantRate | None = None


class TenantControlOut(_Out, frozen=True):
    tenant_id: str
    paused: bool
    weight: int
    max_leased: int | None = None
    max_per_second: float | None = None


class ControlsOut(_Out, frozen=True):
    """What is paused, and the tenants' stored controls. For a tenant-scoped token only its
    own tenant's row, and ``paused`` (the whole queue's) null: it sees nothing queue-wide."""

    paused: bool | None
    tenants: list[TenantControlOut]


class RunOut(_Out, frozen=True):
    run_id: str
    tenant_id: str
    status: str
    total: int
    pending: int
    leased: int
    done: int
    failed: int
    metrics: dict[str, float]
    created_at: float
    updated_at: float
    finished_at: float | None = None
    cancelled: int = 0


class CancelIn(_In, frozen=True):
    """The jobs to cancel (a tenant-scoped token cancels only its tenant's; others answer
    ``not_found``, as jobs that do not exist). ``tenantId`` limits the cancel to that tenant's
    jobs in the same way."""

    ids: Annotated[list[JobId], Meta(min_length=1, max_length=MAX_BATCH)]
    tenant_id: IdText | None = None


class CancelItemOut(_Out, frozen=True):
    """What a cancel did to one job: ``outcome`` is ``cancelled`` (it was pending: cancelled
    now), ``cancel_requested`` (it is leased: it ends cancelled when its worker stops or its
    lease expires), ``already_cancelled`` (cancelled or requested before), ``finished`` (done
    or failed: nothing changed) or ``not_found``. ``job`` is the job after the call."""

    id: int
    ok: bool
    reason: str
    outcome: Literal["cancelled", "cancel_requested", "already_cancelled", "finished", "not_found"]
    job: JobOut | None = None
    message: str | None = None


class CancelOut(_Out, frozen=True):
    success: bool
    results: list[CancelItemOut]


class RunCancelOut(_Out, frozen=True):
    """What a run's cancel did: ``cancelled`` pending jobs now, ``cancelRequested`` leased ones
    marked (each ends cancelled when its worker stops or its lease expires)."""

    success: bool
    run_id: str
    cancelled: int
    cancel_requested: int


# --- schedules -------------------------------------------------------------------------------


class ScheduleIn(_In, frozen=True):
    """A recurring job (`NewSchedule`): ``cron`` (five fields, or six with seconds last) in
    ``timezone``, or every ``intervalSeconds``; each tick enqueues a job of ``tenantId``
    naming ``r2Key``. Ticks more than ``graceSeconds`` late were missed: ``missed`` says
    whether they enqueue one job (``catch_up``, for the latest) or none (``skip``)."""

    name: ScheduleName
    tenant_id: IdText
    r2_key: IdText
    cron: ScheduleCron | None = None
    interval_seconds: ScheduleInterval | None = None
    timezone: TimeZoneName = "UTC"
    payload: Any = None
    priority: Priority = 0
    missed: MissedTicks = "catch_up"
    grace_seconds: ScheduleGrace = 60.0


class ScheduleOut(_Out, frozen=True):
    name: str
    tenant_id: str
    r2_key: str
    next_tick_at: float
    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str = "UTC"
    payload: Any = None
    priority: int = 0
    missed: MissedTicks = "catch_up"
    grace_seconds: float = 60.0
    last_tick_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


class SchedulesOut(_Out, frozen=True):
    schedules: list[ScheduleOut]


# --- uploads ---------------------------------------------------------------------------------


class UploadCreateIn(_In, frozen=True):
    """With TURNSTILE_SECRET set, a call without a bearer token carries the Turnstile widget's
    token as ``turnstileToken`` or ``cf-turnstile-response`` (or the CF-Turnstile-Response
    header)."""

    content_type: UploadName
    filename: UploadName
    tenant_id: IdText
    run_id: IdText | None = None
    turnstile_token: TurnstileToken | None = None
    cf_turnstile_response: TurnstileToken | None = msgspec.field(
        default=None, name="cf-turnstile-response"
    )


class UploadCreateOut(_Out, frozen=True):
    """Where to PUT the file. ``completeUrl`` enqueues the job after a presigned upload."""

    success: bool
    run_id: str
    r2_key: str
    upload_url: str
    method: str
    expires_at: float
    complete_url: str | None = None
    upload_token: str | None = None  # with completeUrl: POST {"token": uploadToken} there
    # The headers the PUT must send: a presigned URL signs them (If-None-Match: * makes it
    # single use), so a PUT without them is refused by the store.
    upload_headers: dict[str, str] | None = None


class StreamTokenOut(_Out, frozen=True):
    """A run-scoped token for ``?token=`` on the run's SSE and WebSocket routes, and both URLs."""

    token: str
    expires_at: float
    events_url: str
    ws_url: str


class UploadDoneOut(_Out, frozen=True):
    success: bool
    job_id: int
    run_id: str
    r2_key: str
    status: str


class ErrorBody(_Out, frozen=True):
    code: str
    message: str
    field: str | None = None


class ErrorOut(_Out, frozen=True):
    success: bool
    error: ErrorBody


# --- the KV task API: field names as its original handlers (actors/http/_tasks.py) ----------

# A lease of the KV task API: 1 to 600 s (its default, 300 s, is the handler's).
KvLeaseSeconds = Annotated[int, Meta(ge=1, le=600)]
KvStatus = Annotated[str, Meta(min_length=1, max_length=64)]
# An optional workerId may be empty, as the original's: "" is no worker id.
KvWorker = Annotated[str, Meta(max_length=1024)]


class ClaimTaskIn(_In, frozen=True):
    """Claim the next task for ``workerId`` for ``leaseDurationSec`` (default 300)."""

    worker_id: KvWorker | None = None
    lease_duration_sec: KvLeaseSeconds | None = None


class TaskLeaseIn(_In, frozen=True):
    """Who holds a task's lease: ``workerId`` (as the original), and ``claimNonce`` (the lease
    token the claim returned) for a check no other worker can pass."""

    worker_id: IdText | None = None
    claim_nonce: LeaseToken | None = None


class ReleaseTaskIn(TaskLeaseIn, frozen=True, kw_only=True):
    reason: ErrorText | None = None


class RenewTaskIn(_In, frozen=True):
    worker_id: IdText
    extend_sec: KvLeaseSeconds | None = None
    claim_nonce: LeaseToken | None = None


class TaskStatusIn(_In, frozen=True):
    status: KvStatus


class TaskResultIn(TaskLeaseIn, frozen=True, kw_only=True):
    """A task's result: ``success`` true completes it (the result is stored), false fails it
    for good with ``error``."""

    success: bool
    output: Any = msgspec.UNSET
    error: ErrorText | None = None


class TaskLease(_Out, frozen=True, omit_defaults=True):
    """A lease as the KV API shows it; ``claimNonce`` is the job's lease token."""

    worker_id: str
    claim_nonce: str
    claimed_at: str
    expires_at: str
    renewed_at: str | None = None


class ClaimTaskOut(_Out, frozen=True, omit_defaults=True):
    """A claimed task and its lease; or ``success: false`` with ``message`` and ``pending``."""

    success: bool
    task_id: str | None = None
    task: dict[str, Any] | None = None
    lease: TaskLease | None = None
    message: str | None = None
    pending: int | None = None


class PendingTasksOut(_Out, frozen=True):
    pending: list[str]
    count: int


class TaskOk(_Out, frozen=True, omit_defaults=True):
    success: bool
    message: str | None = None
    status: str | None = None
    lease: TaskLease | None = None


class TaskIssue(_Out, frozen=True):
    path: str
    message: str


class TaskErrorOut(_Out, frozen=True, omit_defaults=True):
    """An error of the KV task API: ``error`` as the original worded it, ``code`` as this
    server's other errors, ``details`` for a malformed body."""

    error: str
    code: str | None = None
    message: str | None = None
    details: list[TaskIssue] | None = None


# --- conversions -----------------------------------------------------------------------------


def job_out(job: Job, *, lease_token: bool = False) -> JobOut:
    """Encode a job for the API; ``lease_token``: with its lease token, for the answer to
    the worker that took the lease (a pull) and no one else."""
    out = msgspec.convert(job, JobOut, from_attributes=True)
    if lease_token or out.lease_token is None:
        return out
    return msgspec.structs.replace(out, lease_token=None)


def cancel_item_out(result: ItemResult) -> CancelItemOut:
    """Encode one item of a cancel's results with what changed."""
    job = result.job
    outcome: Literal["cancelled", "cancel_requested", "already_cancelled", "finished", "not_found"]
    if result.reason == "not_found" or job is None:
        outcome = "not_found"
    elif result.reason == "duplicate":
        outcome = "already_cancelled"
    elif not result.ok:
        outcome = "finished"
    elif job.status == "cancelled":
        outcome = "cancelled"
    else:
        outcome = "cancel_requested"
    return CancelItemOut(
        id=result.job_id,
        ok=result.ok,
        reason=result.reason,
        outcome=outcome,
        job=None if job is None else job_out(job),
        message=result.message,
    )


def run_out(summary: RunSummary) -> RunOut:
    return msgspec.convert(summary, RunOut, from_attributes=True)


def schedule_out(schedule: Schedule) -> ScheduleOut:
    return msgspec.convert(schedule, ScheduleOut, from_attributes=True)


def controls_out(controls: QueueControls, tenant: str | None = None) -> ControlsOut:
    """The controls as the API shows them; with ``tenant``, only that tenant's."""
    rows = [msgspec.convert(t, TenantControlOut, from_attributes=True) for t in controls.tenants]
    if tenant is None:
        return ControlsOut(paused=controls.paused, tenants=rows)
    return ControlsOut(paused=None, tenants=[r for r in rows if r.tenant_id == tenant])


def stats_out(stats: Stats, now: float) -> StatsOut:
    return StatsOut(stats=msgspec.convert(stats, StatsBody, from_attributes=True), timestamp=now)
