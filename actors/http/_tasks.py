"""The KV task-queue API (``/api/queue``, ``/api/result``): a task is a job, a claim a lease."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from starlette.responses import Response

from actors import protocol as wire
from actors.bounds import MAX_ID_CHARS, MAX_JOB_ID, MAX_PAGE
from actors.http._auth import Principal, owner
from actors.http._call import Call, json_response
from actors.http._errors import ApiError, mapped
from actors.http._host import JobsHost
from actors.http._jobs import Jobs
from actors.queue.base import OwnedQueue
from actors.queue.model import Ack, Job

__all__ = ["DEFAULT_LEASE_SECONDS", "PRIORITIES", "Tasks", "iso_time", "task_of"]

#: A claim's or renewal's lease when the client names none, as the original handlers.
DEFAULT_LEASE_SECONDS = 300

#: A job's status as a KV task's.
TASK_STATUS = {
    "pending": "pending",
    "leased": "claimed",
    "done": "completed",
    "failed": "failed",
    "cancelled": "cancelled",  # not the original's: a job cancelled here (`jobs cancel`)
}

#: A KV task's priority as a job's (higher is leased first), and back.
PRIORITIES = {"low": -1, "medium": 0, "high": 1, "critical": 2}

# Whose lease a task's is, as far as a call can tell: nobody's live one, the caller's, another's.
_Holder = Literal["none", "mine", "other"]


def iso_time(seconds: float) -> str:
    """Epoch seconds as JavaScript's ``toISOString()`` writes them: ``2026-01-02T03:04:05.678Z``."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _priority_name(priority: int) -> str:
    if priority <= PRIORITIES["low"]:
        return "low"
    if priority >= PRIORITIES["critical"]:
        return "critical"
    return "high" if priority == PRIORITIES["high"] else "medium"


def task_of(job: Job) -> dict[str, Any]:
    """The job as a KV task.

    A payload that is an object is the task as enqueued (an imported task keeps every field);
    what it lacks comes from the job (``content`` is the object key, ``source`` the tenant).
    ``id`` and ``status`` are always the job's; an ``id`` of the payload that differs stays as
    ``originalId``. The job's own fields follow under their API names.
    """
    payload: dict[str, Any] = job.payload if isinstance(job.payload, dict) else {}
    task: dict[str, Any] = {
        "type": "task",
        "source": job.tenant_id,
        "content": job.r2_key,
        "priority": _priority_name(job.priority),
        "metadata": {},
        "queuedAt": iso_time(job.created_at),
    }
    task.update(payload)
    original = payload.get("id")
    if original is not None and str(original) != str(job.id):
        task["originalId"] = original
    task.update(
        id=str(job.id),
        status=TASK_STATUS[job.status],
        runId=job.run_id,
        tenantId=job.tenant_id,
        r2Key=job.r2_key,
        attempts=job.attempts,
        workerId=job.worker_id,
    )
    return task


def _lease(job: Job, renewed_at: float | None = None) -> wire.TaskLease:
    assert job.lease_token is not None and job.lease_expires_at is not None
    return wire.TaskLease(
        worker_id=job.worker_id or "",
        claim_nonce=job.lease_token,
        claimed_at=iso_time(job.started_at if job.started_at is not None else job.updated_at),
        expires_at=iso_time(job.lease_expires_at),
        renewed_at=iso_time(renewed_at) if renewed_at is not None else None,
    )


def _task_not_found() -> ApiError:
    return ApiError(404, "task_not_found", "Task not found")


class Tasks:
    """The KV task API over the queue: every task verb reads the job and acts under the lease
    token it read, so a lease that changed hands in between refuses the act (fencing).

    Who holds a lease: the principal that claimed it (``lease_owner``: the key or token), and,
    when the call names them, the ``workerId`` it claimed with and the ``claimNonce`` (its
    lease token) the claim returned. Workers that share one QUEUE_API_KEY tell each other apart
    by ``workerId`` as in the original; ``claimNonce`` makes a lease unforgeable.

    Error handling: as `Jobs`; errors are answered in the original's shape (``{error}``) by
    the endpoint (``error_style = "kv"`` in the route table).
    """

    def __init__(self, host: JobsHost, jobs: Jobs) -> None:
        self._host = host
        self._jobs = jobs

    # --- reads -------------------------------------------------------------------------------

    async def list_tasks(self, call: Call[None]) -> Response:
        """The ids of the tasks not finished, pending or claimed, as the original's list kept a
        task until its result (at most 1000, as a KV list returns at once)."""
        principal = call.principal
        tenant = principal.tenant if principal is not None else None
        queue = self._host.queue
        ids: list[int] = []
        for status in ("pending", "leased"):
            page = await mapped(queue.list(status, None, tenant, MAX_PAGE, None))
            ids.extend(job.id for job in page.items)
        listed = [str(i) for i in sorted(ids)[:MAX_PAGE]]
        return json_response(wire.PendingTasksOut(pending=listed, count=len(listed)))

    async def get_task(self, call: Call[None]) -> Response:
        return json_response(task_of(await self._job(call)))

    async def get_result(self, call: Call[None]) -> Response:
        """A finished task's result: what ``/api/result`` stored, or the failure."""
        job = await self._job(call)
        if job.status == "done":
            return json_response(job.result if job.result is not None else {"success": True})
        if job.status == "failed":
            return json_response({"success": False, "error": job.last_error})
        if job.status == "cancelled":
            return json_response({"success": False, "error": "cancelled"})
        raise ApiError(404, "result_not_found", "Result not found")

    # --- workers -----------------------------------------------------------------------------

    async def claim_task(self, call: Call[wire.ClaimTaskIn]) -> Response:
        """Lease the next task to ``workerId`` for ``leaseDurationSec`` (default 300 s)."""
        body = await call.body()
        now = self._host.clock.time()
        worker = body.worker_id or f"worker_{int(now * 1000)}"
        seconds = body.lease_duration_sec or DEFAULT_LEASE_SECONDS
        queue = self._host.queue
        # started: a KV worker never says when work begins, so a crash spends the attempt.
        jobs = await mapped(
            queue.pull(
                max=1,
                visibility_seconds=seconds,
                worker_id=worker,
                owner=owner(call.principal),
                started=True,
            )
        )
        if not jobs:
            stats = await mapped(queue.stats())
            # The tasks not finished, as the original counted its task keys.
            return json_response(
                wire.ClaimTaskOut(
                    success=False,
                    message="No tasks available or all tasks are leased",
                    pending=stats.pending + stats.leased,
                )
            )
        self._jobs.announce_leased(jobs)
        (job,) = jobs
        return json_response(
            wire.ClaimTaskOut(
                success=True, task_id=str(job.id), task=task_of(job), lease=_lease(job)
            )
        )

    async def renew_task(self, call: Call[wire.RenewTaskIn]) -> Response:
        """Extend the caller's lease by ``extendSec`` (default 300 s) from now."""
        body = await call.body()
        job, holder = await self._holder(call, body.worker_id, body.claim_nonce)
        refused = ApiError(403, "not_lease_holder", "Invalid lease or not holder")
        if holder != "mine":
            raise refused
        assert job.lease_token is not None
        seconds = body.extend_sec or DEFAULT_LEASE_SECONDS
        (result,) = await mapped(self._host.queue.renew_many([(job.id, job.lease_token)], seconds))
        if result.reason == "cancelled":
            raise ApiError(409, "task_cancelled", result.message or "Task was cancelled")
        if not result.ok or result.job is None:
            raise refused
        lease = _lease(result.job, renewed_at=self._host.clock.time())
        return json_response(wire.TaskOk(success=True, lease=lease))

    async def release_task(self, call: Call[wire.ReleaseTaskIn]) -> Response:
        """Give the caller's lease back: the task is pending again, its attempt refunded."""
        body = await call.body()
        job, holder = await self._holder(call, body.worker_id, body.claim_nonce)
        if holder == "other":
            raise ApiError(403, "not_lease_holder", "Not lease holder")
        if holder == "none":
            return json_response(wire.TaskOk(success=True, message="No active lease"))
        assert job.lease_token is not None
        (result,) = await mapped(self._host.queue.release_many([(job.id, job.lease_token)]))
        if result.reason == "superseded":
            raise ApiError(403, "not_lease_holder", "Not lease holder")
        if not result.ok:  # expired, reaped or finished meanwhile: no lease to give back
            return json_response(wire.TaskOk(success=True, message="No active lease"))
        return json_response(wire.TaskOk(success=True))

    async def set_status(self, call: Call[wire.TaskStatusIn]) -> Response:
        """Take a task's status note. As in the original it changes nothing the queue does:
        ``/api/result`` completes a task and ``/release`` gives it back."""
        body = await call.body()
        await self._job(call)
        return json_response(wire.TaskOk(success=True, status=body.status))

    async def store_result(self, call: Call[wire.TaskResultIn]) -> Response:
        """Complete the caller's task with its result (``success: false``: failed for good)."""
        body = await call.body()
        job, holder = await self._holder(call, body.worker_id, body.claim_nonce)
        if job.status in ("done", "failed", "cancelled"):
            raise ApiError(
                409,
                "task_finished",
                f"Task already {TASK_STATUS[job.status]}; see GET /api/result/{job.id}",
            )
        if holder == "other":
            raise ApiError(403, "not_lease_holder", "Not lease holder")
        if holder == "none":
            raise ApiError(
                409,
                "not_claimed",
                "No active lease: claim the task (POST /api/queue/claim) before storing its "
                "result; a lease that expired may have been given to another worker",
            )
        assert job.lease_token is not None
        if body.success:
            result: dict[str, Any] = {"success": True}
            if body.output is not msgspec.UNSET:
                result["output"] = body.output
            if body.error is not None:
                result["error"] = body.error
            ack = Ack(job_id=job.id, lease_token=job.lease_token, status="done", result=result)
        else:
            error = body.error or "the worker reported success: false"
            ack = Ack(
                job_id=job.id,
                lease_token=job.lease_token,
                status="failed",
                error=error,
                permanent=True,
            )
        results = await mapped(self._host.queue.ack_many([ack]))
        (item,) = self._jobs.settled(results, [ack.status])
        if not item.ok:
            raise ApiError(409, "lease_lost", item.message or f"task {job.id}: {item.reason}")
        return json_response(wire.TaskOk(success=True))

    # --- helpers -----------------------------------------------------------------------------

    async def _job(self, call: Call[Any]) -> Job:
        """The task of the path's ``task_id``: a job id, or the id a task had in KV before it
        was imported (its origin ``kv:<id>``); 404 for an unknown id or another tenant's."""
        text: str = call.request.path_params["task_id"]
        queue = self._host.queue
        job: Job | None = None
        if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_JOB_ID:
            try:
                job = await mapped(queue.get(int(text)))
            except ApiError as exc:
                if exc.code != "job_not_found":
                    raise
        if job is None and isinstance(queue, OwnedQueue) and len(text) <= MAX_ID_CHARS - 3:
            found = await mapped(queue.find_by_origin([f"kv:{text}"]))
            job = found[0] if found else None
        if job is None:
            raise _task_not_found()
        principal = call.principal
        if principal is not None and not principal.sees(job.tenant_id):
            raise _task_not_found()
        return job

    async def _holder(
        self, call: Call[Any], worker_id: str | None, nonce: str | None
    ) -> tuple[Job, _Holder]:
        """The task, and whose its live lease is as far as this call shows."""
        job = await self._job(call)
        now = self._host.clock.time()
        token = job.lease_token
        if job.status != "leased" or token is None or (job.lease_expires_at or 0.0) <= now:
            return job, "none"
        if not _owns(call.principal, job):
            return job, "other"
        if worker_id and worker_id != job.worker_id:
            return job, "other"
        if nonce and not hmac.compare_digest(nonce.encode(), token.encode()):
            return job, "other"
        return job, "mine"


def _owns(principal: Principal | None, job: Job) -> bool:
    """Whether the principal took the job's lease; an unscoped admin may act on any lease."""
    if principal is not None and principal.unscoped_admin:
        return True
    return job.lease_owner == owner(principal)
