"""Row-independent helpers both SQL backends share: decoding rows, cursors, refusal texts.

A row is a sequence of the job's (or run's) columns in `COLUMNS` (`RUN_COLUMNS`) order, as
both sqlite3 and asyncpg return them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from actors.errors import InvalidArgument, JobNotFound
from actors.queue.model import (
    ImportedJob,
    ImportResult,
    ItemReason,
    ItemResult,
    Job,
    JobStatus,
    RunStatus,
    RunSummary,
    Schedule,
)

__all__ = [
    "COLUMNS",
    "RUN_COLUMNS",
    "SCHEDULE_COLUMNS",
    "ByOwner",
    "cancel_refusal",
    "cancelled",
    "changed_since",
    "decode",
    "encode",
    "foreign_run",
    "job_from_row",
    "origin_not_found",
    "parse_cursor",
    "refusal",
    "schedule_from_row",
    "summary_from_row",
]

# The job's columns in the order `job_from_row` reads them (both backends' tables have them).
COLUMNS = (
    "id, run_id, tenant_id, r2_key, payload, status, attempts, max_attempts, priority, "
    "available_at, lease_token, lease_expires_at, worker_id, last_error, result, "
    "idempotency_key, created_at, updated_at, finished_at, lease_owner, started_at, "
    "cross_tenant_key, timeout_seconds, origin, cancel_requested_at"
)
# A run's columns in the order `summary_from_row` reads them: the counts by status are stored,
# kept in the transactions that change the jobs.
RUN_COLUMNS = (
    "run_id, tenant_id, created_at, updated_at, finished_at, metrics, pending, leased, done, "
    "failed, cancelled"
)
# A schedule's columns in the order `schedule_from_row` reads them.
SCHEDULE_COLUMNS = (
    "tenant_id, name, cron, interval_seconds, timezone, r2_key, payload, priority, missed, "
    "grace_seconds, next_tick_at, last_tick_at, created_at, updated_at"
)

encode = msgspec.json.encode
decode = msgspec.json.decode
metrics_decoder = msgspec.json.Decoder(dict[str, float])


class ByOwner(msgspec.Struct, frozen=True):
    """An ids-only ack's fence: the principal (``lease_owner``; None for in-process pulls)
    whose live leases it may settle."""

    owner: str | None


def job_from_row(row: Sequence[Any]) -> Job:
    """Decode a job row (its columns in `COLUMNS` order) into a `Job`."""
    payload = row[4]
    result = row[14]
    return Job(
        id=row[0],
        run_id=row[1],
        tenant_id=row[2],
        r2_key=row[3],
        payload=None if payload is None else decode(payload),
        status=row[5],
        attempts=row[6],
        max_attempts=row[7],
        priority=row[8],
        available_at=row[9],
        lease_token=row[10],
        lease_expires_at=row[11],
        worker_id=row[12],
        last_error=row[13],
        result=None if result is None else decode(result),
        idempotency_key=row[15],
        created_at=row[16],
        updated_at=row[17],
        finished_at=row[18],
        lease_owner=row[19],
        started_at=row[20],
        cross_tenant_key=bool(row[21]),
        timeout_seconds=row[22],
        origin=row[23],
        cancel_requested_at=row[24],
    )


def summary_from_row(row: Sequence[Any]) -> RunSummary:
    """Decode a run row (`RUN_COLUMNS` order) into a `RunSummary` with its status."""
    run_id, tenant_id, created_at, updated_at, finished_at, metrics = row[:6]
    pending, leased, done, failed, cancelled = row[6:11]
    total = pending + leased + done + failed + cancelled
    status: RunStatus
    if total == 0:  # every job was purged
        status = "done" if finished_at is not None else "queued"
    elif pending + leased == 0:
        status = "cancelled" if cancelled else "failed" if failed else "done"
    elif leased + done + failed + cancelled == 0:
        status = "queued"
    else:
        status = "processing"
    return RunSummary(
        run_id=run_id,
        tenant_id=tenant_id,
        status=status,
        total=total,
        pending=pending,
        leased=leased,
        done=done,
        failed=failed,
        cancelled=cancelled,
        metrics=metrics_decoder.decode(metrics),
        created_at=created_at,
        updated_at=updated_at,
        finished_at=finished_at,
    )


def parse_cursor(cursor: str | None) -> int:
    """The id after which a page starts (0 for the first page), or InvalidArgument."""
    if cursor is None:
        return 0
    try:
        return int(cursor)
    except ValueError:
        raise InvalidArgument(
            f"cursor {cursor!r} is not one this queue returned; pass a page's next_cursor "
            "unchanged, or none for the first page"
        ) from None


def refusal(
    row: Sequence[Any] | None,
    now: float,
    job_id: int,
    token: str,
    verb: str,
    ack_status: JobStatus | None = None,
    *,
    owned: ByOwner | None = None,
) -> ItemResult:
    """Say why a fenced call changed nothing (or, for a repeated ack, that it already happened).

    ``row`` is the job's current row (None if there is none). With ``owned`` (an ids-only
    ack) the lease is the caller's when its principal took it.
    """
    if row is None:
        return ItemResult(
            job_id=job_id, ok=False, reason="not_found", message=str(JobNotFound(job_id))
        )
    job = job_from_row(row)
    mine = job.lease_token == token if owned is None else job.lease_owner == owned.owner
    reason: ItemReason
    if job.status == "cancelled" or (job.status == "leased" and job.cancel_requested_at):
        return cancelled(job, verb)
    if job.status in ("done", "failed") and mine and job.status == ack_status:
        # The same ack again (a retry after a cancelled or lost reply): it already happened.
        return ItemResult(job_id=job_id, ok=True, reason="duplicate", job=job)
    if job.status == "leased" and mine:
        reason = "expired"
        late = now - (job.lease_expires_at or now)
        message = (
            f"job {job_id} was {verb} {late:.1f}s after its lease expired; another worker may "
            "run it. Nothing changed. Raise [queue].visibility_seconds or renew the lease "
            "while working"
        )
    elif job.status == "leased" and owned is not None:
        reason = "foreign_lease"
        message = (
            f"job {job_id} was not {verb}: another token leased it (this token's lease, if it "
            "had one, expired), and an ack by id alone settles only a live lease this token "
            "took, so nothing changed. Discard this work; ack with leaseToken to be exact"
        )
    elif job.status == "leased":
        reason = "superseded"
        message = (
            f"job {job_id} was not {verb}: it is leased under another token (this lease expired "
            f"and {_worker(job.worker_id)} leased it again), so nothing changed. Discard this "
            "work; renew leases well before visibility_seconds runs out"
        )
    elif job.status in ("done", "failed"):
        reason = "finished"
        stale = "this token is stale" if owned is None else "this ack is stale"
        message = (
            f"job {job_id} was not {verb}: it is already {job.status} under another lease, so "
            f"{stale} and nothing changed. Discard this work"
        )
    else:
        reason = "not_leased"
        message = (
            f"job {job_id} was not {verb}: it is pending again (its lease was released, retried "
            "or reaped after expiring), so nothing changed. Pull it again to work on it"
        )
    return ItemResult(job_id=job_id, ok=False, reason=reason, job=job, message=message)


def cancelled(job: Job, verb: str) -> ItemResult:
    """The refusal of a lease verb on a job that was cancelled (or whose cancellation was
    requested): ``job`` is the job as the call left it (``cancelled`` once its holder called)."""
    return ItemResult(
        job_id=job.id,
        ok=False,
        reason="cancelled",
        job=job,
        message=(
            f"job {job.id} was not {verb}: it was cancelled (`jobs cancel`, POST "
            f"/jobs/{job.id}/cancel or a run's cancel), so it "
            + ("ends cancelled once its holder stops" if job.status == "leased" else "is cancelled")
            + "; nothing cancelled is ever marked done. Stop working on it and discard its result"
        ),
    )


def cancel_refusal(job: Job | None, job_id: int, tenant_id: str | None) -> ItemResult:
    """Say why a cancel changed nothing: no such job (or another tenant's), already cancelled
    or marked, or finished."""
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        return ItemResult(
            job_id=job_id, ok=False, reason="not_found", message=str(JobNotFound(job_id))
        )
    if job.status == "cancelled" or job.cancel_requested_at is not None:
        return ItemResult(job_id=job_id, ok=True, reason="duplicate", job=job)
    return ItemResult(
        job_id=job_id,
        ok=False,
        reason="finished",
        job=job,
        message=f"job {job_id} was not cancelled: it is already {job.status}, so nothing changed",
    )


def _worker(worker_id: str | None) -> str:
    return "an unnamed worker" if worker_id is None else f"worker {worker_id!r}"


def schedule_from_row(row: Sequence[Any]) -> Schedule:
    """Decode a schedule row (its columns in `SCHEDULE_COLUMNS` order) into a `Schedule`."""
    payload = row[6]
    return Schedule(
        tenant_id=row[0],
        name=row[1],
        cron=row[2],
        interval_seconds=row[3],
        timezone=row[4],
        r2_key=row[5],
        payload=None if payload is None else decode(payload),
        priority=row[7],
        missed=row[8],
        grace_seconds=row[9],
        next_tick_at=row[10],
        last_tick_at=row[11],
        created_at=row[12],
        updated_at=row[13],
    )


def foreign_run(job: ImportedJob, owner: str) -> ImportResult:
    """The refusal of an imported job whose run belongs to another tenant here."""
    return ImportResult(
        origin=job.origin,
        ok=False,
        reason="refused",
        message=(
            f"run {job.run_id!r} belongs to tenant {owner!r} here, not {job.tenant_id!r}; a run "
            "has one tenant. Import into a queue where that run id is free"
        ),
    )


def changed_since(origin: str, job: Job) -> ImportResult:
    """The refusal to delete an imported job that changed after it was imported."""
    return ImportResult(
        origin=origin,
        ok=False,
        reason="changed",
        job=job,
        message=(
            f"job {job.id} (origin {origin!r}) changed after it was imported (now {job.status}, "
            f"{job.attempts} attempt(s)); kept. Force it to delete it anyway"
        ),
    )


def origin_not_found(origin: str) -> ImportResult:
    """The answer for an origin no job has."""
    return ImportResult(
        origin=origin,
        ok=False,
        reason="not_found",
        message=f"no job has origin {origin!r} (purged, or never imported)",
    )
