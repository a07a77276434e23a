"""``HttpQueue``: the queue contract over the edge worker's HTTP protocol, for remote workers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote

import httpx
import msgspec

from actors import protocol as wire
from actors.bounds import HOUR
from actors.errors import (
    ConfigError,
    InvalidArgument,
    JobNotFound,
    LeaseLost,
    PayloadTooLarge,
    QueueClosed,
    QueueError,
    RunNotFound,
    ScheduleNotFound,
)
from actors.log import get_logger
from actors.queue.base import Queue, SingleItemVerbs
from actors.queue.model import (
    Ack,
    AckResult,
    ItemReason,
    ItemResult,
    Job,
    JobStatus,
    LeaseResult,
    NewJob,
    NewSchedule,
    Page,
    QueueControls,
    RunCancel,
    RunSummary,
    Schedule,
    Stats,
    TenantControl,
)

__all__ = ["HttpQueue", "QueueUnavailable"]

log = get_logger("actors.queue.http")

T = TypeVar("T")


class QueueUnavailable(QueueError):
    """The queue server could not be reached or answered 5xx; the call may be retried."""


class _ErrorOut(msgspec.Struct, kw_only=True):
    code: str = "unknown"
    message: str = ""
    field: str | None = None


class _ErrorBody(msgspec.Struct, kw_only=True):
    error: _ErrorOut = msgspec.field(default_factory=_ErrorOut)


class HttpQueue(SingleItemVerbs):
    """The queue's async API, served by another process (``[queue] backend = "http"``).

    Open it with ``async with HttpQueue.open(url, token) as q``. Each verb is one request:
    ``pull`` is ``POST /jobs/pull``, ``ack_many`` one lease-aware ``POST /jobs/ack``, and so on.
    ``reap`` and ``purge`` are the server's business and do nothing here; ``on_enqueue``
    subscribers hear only of enqueues made through this object; other processes' jobs are
    found by a waiting pull (``pull(wait_seconds=...)``, a long poll the server answers as soon
    as a job arrives) or by polling. Runs on asyncio and trio (httpx).

    Error handling: a connection failure, a timeout or a 5xx raises `QueueUnavailable` (the
    lease manager retries on its next round); 401/403 raise `ConfigError` (a wrong token is
    a configuration mistake, and retrying cannot fix it); 404, 409 and 400 raise the queue's
    own `JobNotFound` / `RunNotFound`, `LeaseLost` and `InvalidArgument`.
    """

    def __init__(self, client: httpx.AsyncClient, url: str, timeout_seconds: float = 30.0) -> None:
        self._client = client
        self.url = url
        self._timeout = timeout_seconds
        self._on_enqueue: list[Callable[[], object]] = []
        self._on_cancel: list[Callable[[], object]] = []
        self._closed = False

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str, token: str | None, *, timeout_seconds: float = 30.0
    ) -> AsyncIterator[HttpQueue]:
        """A client of the queue server at ``url``, sending ``token`` as its bearer token."""
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"[queue].url = {url!r} is not an http(s) URL; set it (or EDGE_BASE_URL) to "
                "the queue server, e.g. http://127.0.0.1:8787"
            )
        # Bytes: httpx encodes str headers as ASCII; a token may hold any UTF-8 text.
        headers = {b"authorization": f"Bearer {token}".encode()} if token else {}
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout_seconds, limits=limits
        ) as client:
            queue = cls(client, url, timeout_seconds)
            try:
                yield queue
            finally:
                queue._closed = True

    async def aclose(self) -> None:
        self._closed = True
        await self._client.aclose()

    # --- transport -----------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        type: type[T],
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        wait_seconds: float | None = None,
    ) -> T:
        if self._closed:
            raise QueueClosed("the HTTP queue client was used after it was closed")
        content = msgspec.json.encode(body) if body is not None else None
        try:
            response = await self._client.request(
                method,
                path,
                content=content,
                params=params,
                headers={"content-type": "application/json"} if content is not None else None,
                # A request the server may hold (a long poll) has that much longer.
                timeout=(
                    httpx.USE_CLIENT_DEFAULT
                    if wait_seconds is None
                    else self._timeout + wait_seconds
                ),
            )
        except httpx.HTTPError as exc:
            raise QueueUnavailable(
                f"{method} {self.url}{path} failed: {type_name(exc)}: {exc}; is the queue "
                "server running and [queue].url (EDGE_BASE_URL) right?"
            ) from None
        if response.status_code >= 400:
            self._raise(method, path, response, params)
        try:
            return msgspec.json.decode(response.content, type=type)
        except msgspec.DecodeError as exc:
            raise QueueUnavailable(
                f"{method} {self.url}{path} answered a body this client cannot read ({exc}); "
                "is [queue].url the actors queue server?"
            ) from None

    def _raise(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        params: dict[str, Any] | None = None,
    ) -> None:
        status = response.status_code
        try:
            error = msgspec.json.decode(response.content, type=_ErrorBody).error
        except msgspec.DecodeError:
            error = _ErrorOut(message=response.text[:200])
        where = f"{method} {self.url}{path}"
        if status in (401, 403):
            raise ConfigError(
                f"{where} was refused ({status}: {error.message}); check the token "
                "(EDGE_API_TOKEN) and that its role is worker or admin"
            )
        if status == 404 and error.code == "job_not_found":
            raise JobNotFound(_job_id(path))
        if status == 404 and error.code == "run_not_found":
            raise RunNotFound(unquote(path.removesuffix("/cancel").rsplit("/", 1)[-1]))
        if status == 404 and error.code == "schedule_not_found":
            tenant = str((params or {}).get("tenantId", ""))
            raise ScheduleNotFound(tenant, path.rsplit("/", 1)[-1])
        if status == 409:
            raise LeaseLost(_job_id(path), "expired", error.message)
        if status == 413:
            raise PayloadTooLarge(error.message)
        if status in (400, 422):
            raise InvalidArgument(error.message or f"{where} refused the request ({status})")
        reason = error.message or response.reason_phrase
        raise QueueUnavailable(f"{where} answered {status}: {reason}")

    # --- producers -----------------------------------------------------------------------

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Add every job in one transaction on the server: all of them, or none."""
        if not jobs:
            return []
        body = {"jobs": [_camel_new_job(j) for j in jobs]}
        out = await self._request("POST", "/jobs/enqueue-many", wire.EnqueueManyOut, body=body)
        for callback in list(self._on_enqueue):
            try:
                callback()
            except Exception:
                log.exception("queue.on_enqueue_failed", callback=repr(callback))
        return [_job(j) for j in out.jobs]

    def on_enqueue(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` after each enqueue through this object; returns an unsubscribe."""
        self._on_enqueue.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._on_enqueue.remove(callback)

        return unsubscribe

    # --- consumers -----------------------------------------------------------------------

    async def pull(
        self,
        max: int = 10,
        visibility_seconds: float = 60,
        worker_id: str | None = None,
        *,
        owner: str | None = None,
        started: bool = False,
        wait_seconds: float = 0,
    ) -> list[Job]:
        """Lease up to ``max`` visible jobs for ``visibility_seconds``.

        The server records this client's token as the leases' owner; ``owner`` is ignored.
        As in-process, the jobs are not started until `start_many` (unless ``started``).
        ``wait_seconds`` is a long poll: with nothing to lease, the server holds the request
        until a job arrives (and answers with it within milliseconds) or the time is up; it
        answers early, empty, when it shuts down. Cancelling a waiting pull closes its
        connection: the server then gives back anything it leased for it.
        """
        body: dict[str, Any] = {
            "max": max,
            "visibilitySeconds": visibility_seconds,
            "started": started,
        }
        if worker_id is not None:
            body["workerId"] = worker_id
        held = None
        if wait_seconds:
            body["waitSeconds"] = wait_seconds
            if isinstance(wait_seconds, int | float) and 0 < wait_seconds <= HOUR:
                held = float(wait_seconds)  # the server refuses more than its bound
        out = await self._request("POST", "/jobs/pull", wire.PullOut, body=body, wait_seconds=held)
        return [_job(j) for j in out.jobs]

    async def renew_many(
        self, leases: Sequence[tuple[int, str]], visibility_seconds: float
    ) -> list[LeaseResult]:
        """Extend every live lease; stale ones are refused item by item."""
        body = {
            "leases": [{"id": i, "leaseToken": t} for i, t in leases],
            "visibilitySeconds": visibility_seconds,
        }
        out = await self._request("POST", "/jobs/renew", wire.LeasesOut, body=body)
        return [_item(r) for r in out.results]

    async def start_many(self, leases: Sequence[tuple[int, str]]) -> list[LeaseResult]:
        """Mark each live lease's job started; stale ones are refused item by item."""
        body = {"leases": [{"id": i, "leaseToken": t} for i, t in leases]}
        out = await self._request("POST", "/jobs/start", wire.LeasesOut, body=body)
        return [_item(r) for r in out.results]

    async def release_many(
        self, leases: Sequence[tuple[int, str]], delay_seconds: float = 0
    ) -> list[LeaseResult]:
        """Give back every live lease without spending an attempt."""
        body = {
            "leases": [{"id": i, "leaseToken": t} for i, t in leases],
            "delaySeconds": delay_seconds,
        }
        out = await self._request("POST", "/jobs/release", wire.LeasesOut, body=body)
        return [_item(r) for r in out.results]

    async def ack_many(self, acks: Sequence[Ack]) -> list[AckResult]:
        """Record every outcome in one server transaction; a stale lease refuses its own item."""
        if not acks:
            return []
        body = {"acks": [_camel_ack(a) for a in acks]}
        out = await self._request("POST", "/jobs/ack", wire.AckOut, body=body)
        return [_item(r) for r in out.results]

    async def ack_ids(
        self,
        ids: Sequence[int],
        status: Literal["done", "failed"],
        *,
        owner: str | None = None,
        error: str | None = None,
    ) -> list[AckResult]:
        """The seed's form: record an outcome by job id alone, for live leases this client's
        token took (the server knows the owner from the token; ``owner`` is ignored)."""
        body: dict[str, Any] = {"ids": list(ids), "status": status}
        if error is not None:
            body["error"] = error
        out = await self._request("POST", "/jobs/ack", wire.AckOut, body=body)
        return [_item(r) for r in out.results]

    # --- operators -----------------------------------------------------------------------

    async def cancel_many(
        self, job_ids: Sequence[int], *, tenant_id: str | None = None
    ) -> list[ItemResult]:
        """Cancel jobs (``POST /jobs/cancel``; a producer's or an admin's token): a pending one
        now, a leased one when its worker stops. Another tenant's job answers ``not_found``."""
        if not job_ids:
            return []
        body: dict[str, Any] = {"ids": list(job_ids)}
        if tenant_id is not None:
            body["tenantId"] = tenant_id
        out = await self._request("POST", "/jobs/cancel", wire.CancelOut, body=body)
        results = [
            ItemResult(
                job_id=item.id,
                ok=item.ok,
                reason=msgspec.convert(item.reason, ItemReason),
                job=None if item.job is None else _job(item.job),
                message=item.message,
            )
            for item in out.results
        ]
        if any(item.outcome == "cancel_requested" for item in out.results):
            self._notify_cancelled()
        return results

    async def cancel_run(self, run_id: str, *, tenant_id: str | None = None) -> RunCancel:
        """Cancel every unfinished job of the run (``POST /runs/{id}/cancel``), or raise
        RunNotFound (also for a run of another tenant than ``tenant_id``)."""
        path = f"/runs/{quote(run_id, safe='')}"
        if tenant_id is not None and (await self.run_summary(run_id)).tenant_id != tenant_id:
            raise RunNotFound(run_id)  # a run's tenant never changes
        out = await self._request("POST", f"{path}/cancel", wire.RunCancelOut)
        if out.cancel_requested:
            self._notify_cancelled()
        return RunCancel(
            run_id=out.run_id, cancelled=out.cancelled, cancel_requested=out.cancel_requested
        )

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` after a cancel through this object marks leased jobs (holders
        elsewhere learn at their next renewal); returns an unsubscribe."""
        self._on_cancel.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._on_cancel.remove(callback)

        return unsubscribe

    def _notify_cancelled(self) -> None:
        for callback in list(self._on_cancel):
            try:
                callback()
            except Exception:  # a subscriber's bug must not break the caller's cancel
                log.exception("queue.on_cancel_failed", callback=repr(callback))

    async def reap(self) -> int:
        """Nothing to do here: the server reaps expired leases on every pull."""
        return 0

    async def purge(self, older_than_seconds: float) -> int:
        """Nothing to do here: retention is the server's ``[queue].retention_seconds``."""
        return 0

    async def requeue(
        self,
        job_ids: Sequence[int] | None = None,
        *,
        run_id: str | None = None,
        tenant_id: str | None = None,
    ) -> int:
        """Return terminally failed jobs to pending (needs an admin token)."""
        body = {
            "ids": list(job_ids) if job_ids is not None else None,
            "runId": run_id,
            "tenantId": tenant_id,
        }
        out = await self._request("POST", "/jobs/requeue", wire.CountOut, body=body)
        return out.count

    # --- schedules -----------------------------------------------------------------------

    async def create_schedule(self, schedule: NewSchedule) -> Schedule:
        """Add a recurring job on the server, or replace the tenant's one of that name."""
        body: dict[str, Any] = {
            "name": schedule.name,
            "tenantId": schedule.tenant_id,
            "r2Key": schedule.r2_key,
            "timezone": schedule.timezone,
            "priority": schedule.priority,
            "missed": schedule.missed,
            "graceSeconds": schedule.grace_seconds,
        }
        if schedule.cron is not None:
            body["cron"] = schedule.cron
        if schedule.interval_seconds is not None:
            body["intervalSeconds"] = schedule.interval_seconds
        if schedule.payload is not None:
            body["payload"] = schedule.payload
        return _schedule(await self._request("POST", "/schedules", wire.ScheduleOut, body=body))

    async def delete_schedule(self, tenant_id: str, name: str) -> Schedule:
        """Delete the tenant's schedule of this name, or raise ScheduleNotFound."""
        out = await self._request(
            "DELETE",
            f"/schedules/{quote(name, safe='')}",
            wire.ScheduleOut,
            params={"tenantId": tenant_id},
        )
        return _schedule(out)

    async def list_schedules(self, tenant_id: str | None = None) -> list[Schedule]:
        """Return every schedule (of one tenant) the token may see, by tenant and name."""
        params = {"tenantId": tenant_id} if tenant_id is not None else None
        out = await self._request("GET", "/schedules", wire.SchedulesOut, params=params)
        return [_schedule(s) for s in out.schedules]

    async def pause(self, tenant_id: str | None = None) -> QueueControls:
        """Pause the whole queue, or one tenant, on the server (an admin token; a tenant's admin
        may pause its own tenant)."""
        return await self._controls("POST", "/queue/pause", {"tenantId": tenant_id})

    async def resume(self, tenant_id: str | None = None) -> QueueControls:
        """Undo a pause of the whole queue, or of one tenant, on the server."""
        return await self._controls("POST", "/queue/resume", {"tenantId": tenant_id})

    async def set_tenant_limits(
        self,
        tenant_id: str,
        *,
        weight: int = 1,
        max_leased: int | None = None,
        max_per_second: float | None = None,
    ) -> QueueControls:
        """Set a tenant's weight and limits on the server (an admin token for every tenant)."""
        body = {"weight": weight, "maxLeased": max_leased, "maxPerSecond": max_per_second}
        path = f"/queue/tenants/{quote(tenant_id, safe='')}/limits"
        return await self._controls("PUT", path, body)

    async def controls(self) -> QueueControls:
        """Return what is paused and the tenants' controls (a tenant's admin: its own only)."""
        return await self._controls("GET", "/queue/controls", None)

    async def _controls(self, method: str, path: str, body: Any) -> QueueControls:
        out = await self._request(method, path, wire.ControlsOut, body=body)
        return QueueControls(
            paused=bool(out.paused),
            tenants=[msgspec.convert(t, TenantControl, from_attributes=True) for t in out.tenants],
        )

    # --- readers -------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job:
        """Return the job with this id, or raise JobNotFound."""
        return _job(await self._request("GET", f"/jobs/{job_id}", wire.JobOut))

    async def stats(self) -> Stats:
        """Count jobs by status on the server."""
        out = await self._request("GET", "/jobs/stats", wire.StatsOut)
        return msgspec.convert(out.stats, Stats, from_attributes=True)

    async def run_summary(self, run_id: str) -> RunSummary:
        """Return the run's counts, metrics and status, or raise RunNotFound."""
        out = await self._request("GET", f"/runs/{quote(run_id, safe='')}", wire.RunOut)
        return msgspec.convert(out, RunSummary, from_attributes=True)

    # Defined last: inside the class body, later annotations would see this `list`.
    async def list(
        self,
        status: JobStatus | None = None,
        run_id: str | None = None,
        tenant_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Job]:
        """Return one page of jobs in id order, filtered by status, run and tenant."""
        params = {
            k: v
            for k, v in (
                ("status", status),
                ("runId", run_id),
                ("tenantId", tenant_id),
                ("limit", limit),
                ("cursor", cursor),
            )
            if v is not None
        }
        out = await self._request("GET", "/jobs", wire.JobsPage, params=params)
        return Page(items=[_job(j) for j in out.jobs], next_cursor=out.next_cursor)


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


def _job_id(path: str) -> int:
    for part in path.split("/"):
        if part.isdigit():
            return int(part)
    return 0


def _job(out: wire.JobOut) -> Job:
    return msgspec.convert(out, Job, from_attributes=True)


def _schedule(out: wire.ScheduleOut) -> Schedule:
    return msgspec.convert(out, Schedule, from_attributes=True)


def _item(out: wire.ItemOut) -> ItemResult:
    # The server sends the job's status, not the whole job: enough for the ack reporter,
    # which only reads ``ok``, ``reason``, ``message`` and ``job.status``. Both are checked
    # against the contract's values (a server that sends another is a ValidationError).
    job = None
    if out.status is not None:
        status = msgspec.convert(out.status, JobStatus)
        job = Job(id=int(out.id), run_id="", tenant_id="", r2_key="", status=status)
    return ItemResult(
        job_id=int(out.id),
        ok=out.ok,
        reason=msgspec.convert(out.reason, ItemReason),
        job=job,
        message=out.message,
    )


def _camel_new_job(new: NewJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "runId": new.run_id,
        "tenantId": new.tenant_id,
        "r2Key": new.r2_key,
        "delaySeconds": new.delay_seconds,
        "priority": new.priority,
    }
    if new.payload is not None:
        body["payload"] = new.payload
    if new.idempotency_key is not None:
        body["idempotencyKey"] = new.idempotency_key
    if new.max_attempts is not None:
        body["maxAttempts"] = new.max_attempts
    if new.cross_tenant_key:
        body["crossTenantKey"] = True
    if new.timeout_seconds is not None:
        body["timeoutSeconds"] = new.timeout_seconds
    return body


def _camel_ack(a: Ack) -> dict[str, Any]:
    body: dict[str, Any] = {"id": a.job_id, "leaseToken": a.lease_token, "status": a.status}
    if a.result is not None:
        body["result"] = a.result
    if a.error is not None:
        body["error"] = a.error
    if a.permanent:
        body["permanent"] = True
    if a.run_metrics:
        body["runMetrics"] = a.run_metrics
    return body


# mypy checks the class against the contract here, verb by verb.
_contract: type[Queue] = HttpQueue
