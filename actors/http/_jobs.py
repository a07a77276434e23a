"""The job routes: enqueue, lease verbs for workers, reads, and the admin's requeue and purge."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, cast

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from actors import protocol as wire
from actors import tenancy
from actors.bounds import MAX_BATCH, MAX_ID_CHARS, MAX_JOB_ID
from actors.errors import InvalidArgument, InvalidObjectKey, JobNotFound
from actors.http._auth import Principal, check_tenant, owner
from actors.http._call import Call, json_response
from actors.http._errors import ApiError, as_http, from_domain_error, mapped
from actors.http._host import JobsHost
from actors.http._metrics import Metrics
from actors.pipeline.messages import RunEvent
from actors.queue.base import STATUSES, OwnedQueue
from actors.queue.model import Ack, ItemResult, Job, JobStatus, NewJob, Page

__all__ = ["Jobs", "ServerStopping"]

# What an ack over HTTP did to its job, as metrics count it and the run's watchers hear it.
_Outcome = Literal["done", "failed", "retrying", "cancelled"]


def check_new_job(
    principal: Principal | None, tenant_id: str, r2_key: str, cross: bool, at: str = ""
) -> bool:
    """Check a job to enqueue against the tenancy rule; return its ``cross_tenant_key``.

    The tenant id must be able to prefix keys (400); the key must lie under
    ``"{tenantId}/"`` (403 naming that prefix) unless the principal is an unscoped admin,
    whose job then carries ``crossTenantKey``; nobody else may send that flag (403).
    """
    try:
        tenancy.check_tenant_id(tenant_id)
    except InvalidArgument as exc:
        raise ApiError(400, "invalid_field", str(exc), f"{at}tenantId") from None
    admin = principal is not None and principal.unscoped_admin
    if cross and not admin:
        raise ApiError(
            403,
            "forbidden",
            "crossTenantKey: only an admin token limited to no tenant may enqueue a key "
            "outside the job's tenant prefix; leave it out",
            f"{at}crossTenantKey",
        )
    try:
        tenancy.check_key_form(r2_key)
    except InvalidObjectKey as exc:
        raise ApiError(400, "invalid_object_key", str(exc), f"{at}r2Key") from None
    if tenancy.key_in_tenant(tenant_id, r2_key):
        return cross
    if admin:
        return True
    raise ApiError(
        403,
        "foreign_object_key",
        f"r2Key {r2_key!r} is outside this job's tenant prefix: a job of tenant "
        f"{tenant_id!r} may only name keys under {tenancy.tenant_prefix(tenant_id)!r} "
        "(/uploads/create and submit make such keys)",
        f"{at}r2Key",
    )


def _job_id(request: Request) -> int:
    job_id: int = request.path_params["job_id"]  # digits only: the route's int convertor
    if not 1 <= job_id < 2**63:
        raise ApiError(400, "invalid_field", f"job id {job_id} is out of range", "jobId")
    return job_id


class ServerStopping:
    """Set when the server begins to shut down: pulls that wait answer at once, with no jobs
    (a server waits for open requests only a short grace period)."""

    def __init__(self) -> None:
        self._set = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._set:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class Jobs:
    """The job routes over the queue; every verb is one queue call.

    Error handling: a handler raises `ApiError` for what the client got wrong; queue errors
    become 4xx/503 answers (`mapped`); anything else is a bug, answered 500 and logged by the
    endpoint (``_app.py``).
    """

    def __init__(
        self, host: JobsHost, metrics: Metrics, stopping: ServerStopping | None = None
    ) -> None:
        self._host = host
        self._metrics = metrics
        self._stopping = stopping if stopping is not None else ServerStopping()

    # --- producers -------------------------------------------------------------------------

    async def enqueue(self, call: Call[wire.EnqueueIn]) -> Response:
        body = await call.body()
        check_tenant(call.principal, body.tenant_id)
        cross = check_new_job(call.principal, body.tenant_id, body.r2_key, body.cross_tenant_key)
        job = await mapped(
            self._host.enqueue(
                body.run_id,
                body.tenant_id,
                body.r2_key,
                payload=body.payload,
                idempotency_key=body.idempotency_key,
                delay_seconds=body.delay_seconds,
                priority=body.priority,
                max_attempts=body.max_attempts,
                cross_tenant_key=cross,
                timeout_seconds=body.timeout_seconds,
            )
        )
        return json_response(
            wire.EnqueueOut(success=True, job_id=job.id, run_id=job.run_id, status=job.status)
        )

    async def enqueue_many(self, call: Call[wire.EnqueueManyIn]) -> Response:
        body = await call.body()
        cross = []
        for i, item in enumerate(body.jobs):
            check_tenant(call.principal, item.tenant_id, f"jobs[{i}].tenantId")
            cross.append(
                check_new_job(
                    call.principal,
                    item.tenant_id,
                    item.r2_key,
                    item.cross_tenant_key,
                    f"jobs[{i}].",
                )
            )
        jobs = await mapped(
            self._host.enqueue_many(
                [
                    NewJob(
                        run_id=j.run_id,
                        tenant_id=j.tenant_id,
                        r2_key=j.r2_key,
                        payload=j.payload,
                        idempotency_key=j.idempotency_key,
                        delay_seconds=j.delay_seconds,
                        priority=j.priority,
                        max_attempts=j.max_attempts,
                        cross_tenant_key=crosses,
                        timeout_seconds=j.timeout_seconds,
                    )
                    for j, crosses in zip(body.jobs, cross, strict=True)
                ]
            )
        )
        return json_response(
            wire.EnqueueManyOut(success=True, jobs=[wire.job_out(j) for j in jobs])
        )

    # --- workers ---------------------------------------------------------------------------

    async def pull(self, call: Call[wire.PullIn]) -> Response:
        body = await call.body()
        pull = functools.partial(
            self._host.queue.pull,
            max=body.max,
            visibility_seconds=body.visibility_seconds,
            worker_id=body.worker_id,
            owner=owner(call.principal),
            started=body.started,
        )
        if body.wait_seconds > 0:
            jobs = await self._pull_waiting(call.request, pull, body.wait_seconds)
        else:
            jobs = await mapped(pull())
        self.announce_leased(jobs)
        return json_response(wire.PullOut(jobs=[wire.job_out(j, lease_token=True) for j in jobs]))

    def settled(self, results: Sequence[ItemResult], kinds: Sequence[str]) -> list[wire.ItemOut]:
        """Encode acks another resource made (the KV task API's results), counted and told to
        their runs' watchers as this resource's own."""
        return self._items(results, kinds)

    def announce_leased(self, jobs: Sequence[Job]) -> None:
        """Count jobs leased over HTTP and tell their runs' watchers."""
        now = self._host.clock.time()
        by_run: dict[str, list[int]] = {}
        for job in jobs:
            self._metrics.leased(job.id, job.available_at, now)
            by_run.setdefault(job.run_id, []).append(job.id)
        self._host.tell_watchers(
            [
                RunEvent(run_id=run, kind="leased", job_ids=tuple(ids), at=now)
                for run, ids in by_run.items()
            ]
        )

    async def _pull_waiting(
        self, request: Request, pull: Callable[..., Awaitable[list[Job]]], seconds: float
    ) -> list[Job]:
        """A long poll: the queue's waiting pull, ended early by the client going away or the
        server stopping. Jobs leased for a client that went meanwhile are given back."""
        jobs: list[Job] = []
        error: Exception | None = None
        gone = False
        self._metrics.pulls_waiting += 1
        try:
            async with anyio.create_task_group() as tg:

                async def until_disconnected() -> None:
                    nonlocal gone
                    while (await request.receive())["type"] != "http.disconnect":
                        pass
                    gone = True
                    tg.cancel_scope.cancel()

                async def until_stopping() -> None:
                    await self._stopping.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(until_disconnected)
                tg.start_soon(until_stopping)
                try:
                    # Cancelled while it waits, it leases nothing; during a claim, it still
                    # returns what the claim leased (`PullWaits`).
                    jobs = await pull(wait_seconds=seconds)
                except Exception as exc:  # raised below, outside the task group
                    error = exc
                tg.cancel_scope.cancel()
        finally:
            self._metrics.pulls_waiting -= 1
        if error is not None:
            answer = from_domain_error(error)
            raise (answer if answer is not None else error) from None
        if gone and jobs:
            # Nobody reads this answer: give the leases back at once (no attempt is spent).
            with anyio.CancelScope(shield=True):
                await mapped(
                    self._host.queue.release_many([(job.id, job.lease_token or "") for job in jobs])
                )
            return []
        return jobs

    async def ack(self, call: Call[wire.AckIn]) -> Response:
        body = await call.body()
        if (body.ids is None) == (body.acks is None):
            raise ApiError(
                400,
                "invalid_field",
                "send either ids (with status) or acks, not both and not neither",
                "ids",
            )
        queue = self._host.queue
        if body.acks is not None:
            results = await mapped(
                queue.ack_many(
                    [
                        Ack(
                            job_id=a.id,
                            lease_token=a.lease_token,
                            status=a.status,
                            result=a.result,
                            error=a.error,
                            permanent=a.permanent,
                            run_metrics=a.run_metrics,
                        )
                        for a in body.acks
                    ]
                )
            )
            items = self._items(results, [a.status for a in body.acks])
        else:
            if body.status is None:
                raise ApiError(
                    400,
                    "invalid_field",
                    "an ack by ids needs status: 'done' or 'failed' (nothing was acked)",
                    "status",
                )
            sent = body.ids or []
            ids = await self._ack_targets(sent, owner(call.principal))
            results = await mapped(
                queue.ack_ids(ids, body.status, owner=owner(call.principal), error=body.error)
            )
            results = [
                _unknown(r, i) if isinstance(i, str) and t == MAX_JOB_ID else r
                for r, i, t in zip(results, sent, ids, strict=True)
            ]
            items = self._items(results, [body.status] * len(ids))
            # Each result names its job as the request did (a string stays a string).
            items = [msgspec.structs.replace(o, id=i) for o, i in zip(items, sent, strict=True)]
        return json_response(wire.AckOut(success=all(r.ok for r in results), results=items))

    async def _ack_targets(self, sent: Sequence[int | str], me: str | None) -> list[int]:
        """The job each id of an ids-only ack names: an integer is a job id; a string is a job
        id's digits (the seed's client) or the id an imported job had in D1 or KV (its origin
        ``d1:<id>``, ``kv:<id>``), so the old system's references still resolve.

        Where the digits name both a job and an imported job's old id, the one whose live lease
        this principal took wins: an ack by ids settles nothing else. A string that names no
        job is `MAX_JOB_ID` (no job has it): its item answers ``not_found``.
        """
        queue = self._host.queue
        # An origin is an id of at most MAX_ID_CHARS with its prefix.
        texts = list(
            dict.fromkeys(i for i in sent if isinstance(i, str) and len(i) <= MAX_ID_CHARS - 3)
        )
        imported: dict[str, Job] = {}
        if texts and isinstance(queue, OwnedQueue):
            origins = [f"{prefix}:{text}" for text in texts for prefix in ("d1", "kv")]
            for start in range(0, len(origins), MAX_BATCH):
                for job in await mapped(queue.find_by_origin(origins[start : start + MAX_BATCH])):
                    imported[job.origin or ""] = job
        targets: list[int] = []
        for item in sent:
            if isinstance(item, int):
                targets.append(item)
                continue
            found = [imported[o] for o in (f"d1:{item}", f"kv:{item}") if o in imported]
            mine = [j for j in found if j.status == "leased" and j.lease_owner == me]
            if mine:
                targets.append(mine[0].id)
            elif item.isascii() and item.isdigit() and 1 <= int(item) <= MAX_JOB_ID:
                targets.append(int(item))
            else:
                targets.append(found[0].id if found else MAX_JOB_ID)
        return targets

    def _items(
        self, results: Sequence[ItemResult], kinds: Sequence[str] | None = None
    ) -> list[wire.ItemOut]:
        """Encode batch results; for acks, count outcomes and tell the runs' watchers."""
        now = self._host.clock.time()
        events: dict[tuple[str, _Outcome], list[int]] = {}
        out = []
        for i, r in enumerate(results):
            job = r.job
            out.append(
                wire.ItemOut(
                    id=r.job_id,
                    ok=r.ok,
                    reason=r.reason,
                    status=job.status if job is not None else None,
                    message=r.message,
                )
            )
            if kinds is None:
                continue
            if r.reason == "cancelled":
                self._metrics.acked(r.job_id, "cancelled", now)
                if job is not None and job.run_id:
                    events.setdefault((job.run_id, "cancelled"), []).append(r.job_id)
                continue
            if not r.ok or job is None:
                self._metrics.acked(r.job_id, "stale", now)
                continue
            outcome: _Outcome = (
                "done" if kinds[i] == "done" else "failed" if job.status == "failed" else "retrying"
            )
            self._metrics.acked(r.job_id, outcome, now)
            if r.reason == "ok":
                events.setdefault((job.run_id, outcome), []).append(r.job_id)
        self._host.tell_watchers(
            [
                RunEvent(run_id=run, kind=kind, job_ids=tuple(ids), at=now)
                for (run, kind), ids in events.items()
            ]
        )
        return out

    async def renew(self, call: Call[wire.RenewIn]) -> Response:
        body = await call.body()
        results = await mapped(
            self._host.queue.renew_many(
                [(lease.id, lease.lease_token) for lease in body.leases], body.visibility_seconds
            )
        )
        items = self._items(results)
        return json_response(wire.LeasesOut(success=all(r.ok for r in results), results=items))

    async def start(self, call: Call[wire.StartIn]) -> Response:
        body = await call.body()
        results = await mapped(
            self._host.queue.start_many([(lease.id, lease.lease_token) for lease in body.leases])
        )
        items = self._items(results)
        return json_response(wire.LeasesOut(success=all(r.ok for r in results), results=items))

    async def release(self, call: Call[wire.ReleaseIn]) -> Response:
        body = await call.body()
        results = await mapped(
            self._host.queue.release_many(
                [(lease.id, lease.lease_token) for lease in body.leases], body.delay_seconds
            )
        )
        items = self._items(results)
        return json_response(wire.LeasesOut(success=all(r.ok for r in results), results=items))

    async def store_result(self, call: Call[wire.ResultIn]) -> Response:
        job_id = _job_id(call.request)
        body = await call.body()
        results = await mapped(
            self._host.queue.ack_many(
                [
                    Ack(
                        job_id=job_id,
                        lease_token=body.lease_token,
                        status="done",
                        result=body.result,
                        run_metrics=body.run_metrics,
                    )
                ]
            )
        )
        (item,) = self._items(results, ["done"])
        if not item.ok:
            raise ApiError(409, "lease_lost", item.message or f"job {job_id}: {item.reason}")
        return json_response(wire.AckOut(success=True, results=[item]))

    # --- readers and operators -------------------------------------------------------------

    async def get_job(self, call: Call[None]) -> Response:
        return json_response(wire.job_out(await self.read(call.principal, _job_id(call.request))))

    async def read(self, principal: Principal | None, job_id: int) -> Job:
        """The job, if ``principal`` may see it; else the 404 of a job that does not exist."""
        return _readable(principal, await mapped(self._host.queue.get(job_id)))

    async def list_jobs(self, call: Call[None]) -> Response:
        query = call.request.query_params
        status = query.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(
                400, "invalid_field", f"status must be one of {', '.join(STATUSES)}", "status"
            )
        limit_text = query.get("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            raise ApiError(400, "invalid_field", "limit must be an integer from 1 to 1000", "limit")
        cursor = query.get("cursor")
        if cursor is not None and (not cursor.isdigit() or len(cursor) > 18):
            raise ApiError(
                400, "invalid_field", "cursor must be the nextCursor of a previous page", "cursor"
            )
        tenant = query.get("tenantId")
        principal = call.principal
        if principal is not None and principal.tenant is not None:
            if tenant is not None:
                check_tenant(principal, tenant)
            tenant = principal.tenant
        origin = query.get("origin")
        if origin is not None:
            return await self._by_origin(origin, principal, status, query.get("runId"), tenant)
        for name in ("runId", "tenantId"):
            value = query.get(name)
            if value is not None and not 1 <= len(value) <= 1024:
                raise ApiError(400, "invalid_field", f"{name} must be 1 to 1024 characters", name)
        page = await self.page(
            call.principal,
            cast("JobStatus | None", status),  # one of STATUSES, checked above
            query.get("runId"),
            tenant,
            int(limit_text),
            cursor,
        )
        return json_response(
            wire.JobsPage(jobs=[wire.job_out(j) for j in page.items], next_cursor=page.next_cursor)
        )

    async def page(
        self,
        principal: Principal | None,
        status: JobStatus | None,
        run_id: str | None,
        tenant: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Job]:
        """One page of the jobs ``principal`` may see: a tenant-scoped one sees its tenant's
        only (naming another is 403)."""
        if principal is not None and principal.tenant is not None:
            if tenant is not None:
                check_tenant(principal, tenant)
            tenant = principal.tenant
        return await mapped(self._host.queue.list(status, run_id, tenant, limit, cursor))

    async def cancel_jobs(self, call: Call[wire.CancelIn]) -> Response:
        """Cancel jobs by id; a tenant-scoped token reaches only its tenant's (the others
        answer ``not_found``, as jobs that do not exist)."""
        body = await call.body()
        if body.tenant_id is not None:
            check_tenant(call.principal, body.tenant_id)
        return await self._cancel(call.principal, body.ids, body.tenant_id)

    async def cancel_job(self, call: Call[None]) -> Response:
        """Cancel one job: 404 when it does not exist or belongs to another tenant."""
        job_id = _job_id(call.request)
        return await self._cancel(call.principal, [job_id], None, one=True)

    async def _cancel(
        self,
        principal: Principal | None,
        ids: list[int],
        tenant: str | None,
        *,
        one: bool = False,
    ) -> Response:
        results = await self.cancel(principal, ids, tenant, one=one)
        return json_response(
            wire.CancelOut(
                success=all(r.ok for r in results),
                results=[wire.cancel_item_out(r) for r in results],
            )
        )

    async def cancel(
        self,
        principal: Principal | None,
        ids: list[int],
        tenant: str | None,
        *,
        one: bool = False,
    ) -> list[ItemResult]:
        """Cancel jobs by id, within the principal's tenant if it has one, and tell the runs'
        watchers; ``one``: 404 when the job does not exist or is another tenant's. (The API's
        cancel routes and the dashboard's cancel action.)"""
        if principal is not None and principal.tenant is not None:
            tenant = principal.tenant
        results = await mapped(self._host.queue.cancel_many(ids, tenant_id=tenant))
        if one and results[0].reason == "not_found":
            raise as_http(JobNotFound(ids[0]))
        now = self._host.clock.time()
        cancelled: dict[str, list[int]] = {}
        for r in results:
            if r.ok and r.reason == "ok" and r.job is not None and r.job.status == "cancelled":
                cancelled.setdefault(r.job.run_id, []).append(r.job_id)
        self._host.tell_watchers(
            [
                RunEvent(run_id=run, kind="cancelled", job_ids=tuple(ids), at=now)
                for run, ids in cancelled.items()
            ]
        )
        return results

    async def _by_origin(
        self,
        origin: str,
        principal: Principal | None,
        status: str | None,
        run_id: str | None,
        tenant: str | None,
    ) -> Response:
        """The listing's one page for ``?origin=``: the job imported with that origin, if it
        matches the other filters and the principal may see it."""
        if not 1 <= len(origin) <= 1024:
            raise ApiError(400, "invalid_field", "origin must be 1 to 1024 characters", "origin")
        queue = self._host.queue
        found = (
            await mapped(queue.find_by_origin([origin])) if isinstance(queue, OwnedQueue) else []
        )
        jobs = [
            job
            for job in found
            if (principal is None or principal.sees(job.tenant_id))
            and status in (None, job.status)
            and run_id in (None, job.run_id)
            and tenant in (None, job.tenant_id)
        ]
        return json_response(wire.JobsPage(jobs=[wire.job_out(j) for j in jobs]))

    async def requeue(self, call: Call[wire.RequeueIn]) -> Response:
        body = await call.body()
        if body.ids is None and body.run_id is None and body.tenant_id is None:
            raise ApiError(400, "invalid_field", "name the jobs: ids, runId or tenantId", "ids")
        count = await mapped(
            self._host.queue.requeue(body.ids, run_id=body.run_id, tenant_id=body.tenant_id)
        )
        return json_response(wire.CountOut(success=True, count=count))

    async def purge(self, call: Call[wire.PurgeIn]) -> Response:
        body = await call.body()
        count = await mapped(self._host.queue.purge(body.older_than_seconds))
        return json_response(wire.CountOut(success=True, count=count))


def _unknown(result: ItemResult, sent: str) -> ItemResult:
    """The ``not_found`` of an id sent as a string that names no job, in its own words."""
    return msgspec.structs.replace(
        result,
        message=f"no job has id {sent[:80]!r}, nor was one imported from D1 or KV with it",
    )


def _readable(principal: Principal | None, job: Job) -> Job:
    """``job`` if the principal may see it, else the very 404 of a job that does not exist."""
    if principal is not None and not principal.sees(job.tenant_id):
        raise as_http(JobNotFound(job.id))
    return job
