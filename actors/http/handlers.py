"""The HTTP handlers: decode the body, check the tenant, call the queue, encode the answer."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import msgspec
import structlog
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from actors import protocol as wire
from actors import tenancy
from actors.errors import InvalidArgument, InvalidObjectKey, JobNotFound, RunNotFound
from actors.http.auth import STREAM_TOKEN_SECONDS, Principal, Signer, Tokens
from actors.http.errors import ApiError, from_decode_error, from_domain_error
from actors.http.metrics import Metrics, render_queue_stats
from actors.http.openapi import openapi_document
from actors.pipeline._run_room import room_id
from actors.pipeline.messages import RunEvent
from actors.queue.base import STATUSES, OwnedQueue, Queue
from actors.queue.model import Ack, ItemResult, Job, JobStatus, NewJob, RunSummary

if TYPE_CHECKING:
    from actors.pipeline._run_room import RunUpdate
    from actors.system import ActorSystem

__all__ = ["Api"]

log = structlog.get_logger("actors.http")

T = TypeVar("T")

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Run metrics summed for /metrics are cached this long: summing reads every run.
_RUN_METRICS_TTL = 10.0
_RUN_METRICS_MAX_PAGES = 10
_UPLOAD = "upload"
_STREAM = "stream"


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def _integral(value: Any, key: str | None = None) -> Any:
    """JSON numbers like ``3.0`` as ints, as JSON Schema's "integer" allows; user data untouched.

    msgspec's strict decoding refuses ``3.0`` for an int field. Only whole, finite numbers
    within int64 change; ``payload`` and ``result`` are the client's own data and stay as sent.
    """
    if key in ("payload", "result"):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**63 else value
    if isinstance(value, dict):
        return {k: _integral(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _segment(text: str, fallback: str) -> str:
    """``text`` as one safe object-key segment (no '/', no leading dots)."""
    cleaned = _SAFE.sub("_", text).lstrip(".")[:200]
    return cleaned or fallback


class EventOut(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    kind: str
    job_ids: tuple[int, ...]
    at: float
    error: str | None = None


class UpdateOut(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    """One server-sent event or WebSocket message: the run's state and the events since the last."""

    run: wire.RunOut | None
    events: list[EventOut]
    missed: int = 0


def _update_out(update: RunUpdate) -> bytes:
    run = wire.run_out(update.summary) if update.summary is not None else None
    events = [
        EventOut(kind=e.kind, job_ids=e.job_ids, at=e.at, error=e.error) for e in update.events
    ]
    return msgspec.json.encode(UpdateOut(run=run, events=events, missed=update.missed))


class UploadGrant(msgspec.Struct, frozen=True, array_like=True):
    """What an upload URL allows: one object of one run of one tenant, until ``expires``."""

    tenant_id: str
    run_id: str
    r2_key: str
    content_type: str
    filename: str
    expires: float


class StreamGrant(msgspec.Struct, frozen=True, array_like=True):
    """What a stream token allows: reading one run's events (its tenant's), until ``expires``."""

    run_id: str
    tenant_id: str
    expires: float


class Api:
    """The state the handlers share: the system, the tokens, the metrics, the upload key.

    Error handling: a handler raises `ApiError` for what the client got wrong; queue and store
    errors become 4xx/503 answers (`from_domain_error`); anything else is a bug, answered 500
    and logged by the endpoint wrapper in ``app.py``.
    """

    def __init__(self, system: ActorSystem, *, tokens: Tokens, metrics: Metrics) -> None:
        self.system = system
        self.config = system.config
        self.tokens = tokens
        self.metrics = metrics
        # Upload URLs and stream tokens are signed with a key of this process: like presigned
        # URLs they need no bearer token; a restart invalidates those not used yet.
        self.signer = Signer()
        # Keys whose upload this process is writing now: a second PUT of one grant waits for
        # nothing and is refused (the object is written once; see put_upload).
        self._uploading: set[str] = set()
        self._run_metrics: tuple[float, dict[str, float]] | None = None

    @property
    def queue(self) -> Queue:
        return self.system.queue

    def now(self) -> float:
        return self.system.clock.time()

    # --- plumbing --------------------------------------------------------------------------

    def authenticate(self, request: HTTPConnection, *, url_token: bool = False) -> Principal:
        """The request's principal; 401 without a valid bearer token.

        ``?token=`` is refused (URLs end up in access and proxy logs) except where a browser
        cannot send a header (``url_token``: a run's SSE and WebSocket routes), and there it
        must be a stream token for that run, never an API token.
        """
        header = request.headers.get("authorization")
        query = request.query_params.get("token")
        if query is not None:
            if not url_token:
                raise ApiError(
                    401,
                    "token_in_url",
                    "tokens are not accepted in the URL here (URLs end up in access logs); send "
                    "'Authorization: Bearer <token>' instead",
                )
            if header is None:
                return self.stream_principal(query, request.path_params.get("run_id", ""))
        principal = self.tokens.authenticate(header)
        if principal is None:
            raise ApiError(
                401,
                "unauthorized",
                "a valid bearer token is required: send 'Authorization: Bearer <token>' with a "
                "token from ACTORS_TOKENS (or JWT_SECRET / EDGE_API_TOKEN)",
            )
        return principal

    async def body(self, request: Request, type: type[T], *, limit: int | None = None) -> T:
        """Read the body within the limit (413); decode it as ``type`` (400 naming the field)."""
        data = await self.raw_body(request, limit or self.config.http.max_body_bytes)
        if not data.strip():
            data = b"{}"
        try:
            return msgspec.convert(_integral(msgspec.json.decode(data)), type, strict=True)
        except msgspec.DecodeError as exc:
            raise from_decode_error(exc) from None

    async def raw_body(self, request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(
                413, "body_too_large", f"the body is {declared} bytes, over the limit of {limit}"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, "body_too_large", f"the body is over the limit of {limit} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def stream_principal(self, token: str, run_id: str) -> Principal:
        """Who a stream token in ``?token=`` speaks for: a reader of that one run; else 401."""
        grant = self.signer.verify(_STREAM, token, StreamGrant)
        if grant is None or grant.run_id != run_id or grant.expires < self.now():
            raise ApiError(
                401,
                "invalid_stream_token",
                "?token= must be a stream token for this run, not expired: get one with POST "
                f"/runs/{{runId}}/stream-token (valid {STREAM_TOKEN_SECONDS:g}s), or send "
                "'Authorization: Bearer <token>' (API tokens are not accepted in URLs)",
            )
        return Principal(role="producer", tenant=grant.tenant_id, id=f"stream:{grant.run_id}")

    @staticmethod
    def check_tenant(principal: Principal | None, tenant_id: str, field: str = "tenantId") -> None:
        """403 when a scoped principal names another tenant in what it sends.

        Not for reads: a job or run of another tenant is answered as missing (`readable_job`).
        """
        if principal is not None and not principal.sees(tenant_id):
            raise ApiError(403, "wrong_tenant", "this token is limited to another tenant", field)

    @staticmethod
    def owner(principal: Principal | None) -> str:
        """Who takes or settles a lease: the token's id (recorded as the lease's owner; an
        ids-only ack settles only its own leases), "anonymous" for a call without a token."""
        return "anonymous" if principal is None else principal.id

    @staticmethod
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

    def readable_job(self, principal: Principal | None, job: Job) -> Job:
        """``job`` if the principal may see it, else the very 404 of a job that does not exist."""
        if principal is not None and not principal.sees(job.tenant_id):
            raise self._as_http(JobNotFound(job.id))
        return job

    @staticmethod
    def _as_http(exc: Exception) -> ApiError:
        """The answer a queue error gets (the same body as when the queue raises it)."""
        mapped = from_domain_error(exc)
        assert mapped is not None
        return mapped

    @staticmethod
    def unscoped(principal: Principal | None, what: str) -> None:
        if principal is not None and principal.tenant is not None:
            raise ApiError(
                403,
                "tenant_scoped",
                f"a tenant-scoped token cannot {what}: it spans every tenant; "
                "use an unscoped token",
            )

    async def call(self, coro: Awaitable[T]) -> T:
        """Await a queue or store call, turning its errors into HTTP errors."""
        try:
            return await coro
        except Exception as exc:
            mapped = from_domain_error(exc)
            if mapped is None:
                raise
            raise mapped from None

    def tell_rooms(self, events: list[RunEvent]) -> None:
        """Tell the run rooms that exist (someone watches the run) what changed over HTTP.

        A run nobody watches has no room, and none is started for it: a room started later
        loads the run's state from the database, so only its recent-events list misses these.
        """
        rooms = getattr(self.system, "rooms", None)
        if rooms is None:
            return
        for event in events:
            room = rooms.lookup(room_id(event.run_id))
            if room is None:
                continue
            # A room that cannot take the event (inbox full, stopping) reloads on its next poll.
            with contextlib.suppress(Exception):
                room.tell_nowait(event)

    # --- health, metrics, schema -----------------------------------------------------------

    async def healthz(self, request: Request, principal: Principal | None) -> Response:
        return _json({"ok": True})

    async def readyz(self, request: Request, principal: Principal | None) -> Response:
        checks: dict[str, Any] = {}
        try:
            with anyio.fail_after(2.0):
                await self.queue.stats()
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks["database"] = f"unreachable: {type(exc).__name__}"
        tree = getattr(self.system, "tree", None)
        counts = tree.count_children() if tree is not None else None
        running = counts is not None and counts.specs > 0 and counts.active == counts.specs
        checks["tree"] = "running" if running else "not running"
        ready = checks["database"] == "ok" and running
        return _json({"ready": ready, "checks": checks}, 200 if ready else 503)

    async def openapi(self, request: Request, principal: Principal | None) -> Response:
        return _json(openapi_document(metrics_open=self.config.http.metrics == "open"))

    async def metrics_text(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "read the metrics (they span every tenant)")
        lines = render_queue_stats(await self.call(self.queue.stats()))
        lines += [
            "# HELP actors_pipeline_outcomes_total Outcomes committed by this process's pipeline.",
            "# TYPE actors_pipeline_outcomes_total counter",
        ]
        acks = self.system.ack_stats
        for outcome in ("done", "failed", "retried", "released", "stale"):
            lines.append(
                f'actors_pipeline_outcomes_total{{outcome="{outcome}"}} {getattr(acks, outcome)}'
            )
        lines += [
            "# HELP actors_run_metric_total Run metrics summed over runs (processor tokens, "
            "bytes, chunks...).",
            "# TYPE actors_run_metric_total gauge",
        ]
        for name, value in sorted((await self.run_metric_sums()).items()):
            lines.append(f'actors_run_metric_total{{name="{name}"}} {value:g}')
        lines += self.metrics.render()
        lines += self.metrics.render_loop_lag(self.system.watchdog.take_max())
        return Response(
            "\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def run_metric_sums(self) -> dict[str, float]:
        now = self.now()
        if self._run_metrics is not None and now - self._run_metrics[0] < _RUN_METRICS_TTL:
            return self._run_metrics[1]
        sums: dict[str, float] = {}
        queue = self.queue
        if isinstance(queue, OwnedQueue):  # a queue reached over HTTP lists no runs
            cursor = None
            for _ in range(_RUN_METRICS_MAX_PAGES):
                page = await self.call(queue.list_runs(limit=1000, cursor=cursor))
                for run in page.items:
                    for name, value in run.metrics.items():
                        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                            sums[name] = sums.get(name, 0.0) + value
                cursor = page.next_cursor
                if cursor is None:
                    break
        self._run_metrics = (now, sums)
        return sums

    # --- producers -------------------------------------------------------------------------

    async def enqueue(self, request: Request, principal: Principal | None) -> Response:
        body = await self.body(request, wire.EnqueueIn)
        self.check_tenant(principal, body.tenant_id)
        cross = self.check_new_job(principal, body.tenant_id, body.r2_key, body.cross_tenant_key)
        job = await self.call(
            self.system.enqueue(
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
        return _json(
            wire.EnqueueOut(success=True, job_id=job.id, run_id=job.run_id, status=job.status)
        )

    async def enqueue_many(self, request: Request, principal: Principal | None) -> Response:
        body = await self.body(request, wire.EnqueueManyIn)
        cross = []
        for i, item in enumerate(body.jobs):
            self.check_tenant(principal, item.tenant_id, f"jobs[{i}].tenantId")
            cross.append(
                self.check_new_job(
                    principal, item.tenant_id, item.r2_key, item.cross_tenant_key, f"jobs[{i}]."
                )
            )
        jobs = await self.call(
            self.system.enqueue_many(
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
        return _json(wire.EnqueueManyOut(success=True, jobs=[wire.job_out(j) for j in jobs]))

    # --- workers ---------------------------------------------------------------------------

    async def pull(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "pull (the queue leases across tenants)")
        body = await self.body(request, wire.PullIn)
        jobs = await self.call(
            self.queue.pull(
                max=body.max,
                visibility_seconds=body.visibility_seconds,
                worker_id=body.worker_id,
                owner=self.owner(principal),
                started=body.started,
            )
        )
        now = self.now()
        by_run: dict[str, list[int]] = {}
        for job in jobs:
            self.metrics.leased(job.id, job.available_at, now)
            by_run.setdefault(job.run_id, []).append(job.id)
        self.tell_rooms(
            [
                RunEvent(run_id=run, kind="leased", job_ids=tuple(ids), at=now)
                for run, ids in by_run.items()
            ]
        )
        return _json(wire.PullOut(jobs=[wire.job_out(j) for j in jobs]))

    async def ack(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "ack")
        body = await self.body(request, wire.AckIn)
        if (body.ids is None) == (body.acks is None):
            raise ApiError(
                400,
                "invalid_field",
                "send either ids (with status) or acks, not both and not neither",
                "ids",
            )
        if body.acks is not None:
            results = await self.call(
                self.queue.ack_many(
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
            items = await self._items(results, [a.status for a in body.acks])
        else:
            if body.status is None:
                raise ApiError(
                    400,
                    "invalid_field",
                    "an ack by ids needs status: 'done' or 'failed' (nothing was acked)",
                    "status",
                )
            sent = body.ids or []
            ids = [int(i) for i in sent]  # digit strings are ids too (the seed's client's)
            results = await self.call(
                self.queue.ack_ids(ids, body.status, owner=self.owner(principal), error=body.error)
            )
            items = await self._items(results, [body.status] * len(ids))
            # Each result names its job as the request did (a string stays a string).
            items = [msgspec.structs.replace(o, id=i) for o, i in zip(items, sent, strict=True)]
        return _json(wire.AckOut(success=all(r.ok for r in results), results=items))

    async def _items(
        self, results: Sequence[ItemResult], kinds: Sequence[str] | None = None
    ) -> list[wire.ItemOut]:
        """Encode batch results; for acks, count outcomes and tell the runs' rooms."""
        now = self.now()
        events: dict[tuple[str, str], list[int]] = {}
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
            if not r.ok or job is None:
                self.metrics.acked(r.job_id, "stale", now)
                continue
            outcome = (
                "done" if kinds[i] == "done" else "failed" if job.status == "failed" else "retrying"
            )
            self.metrics.acked(r.job_id, outcome, now)
            if r.reason == "ok":
                events.setdefault((job.run_id, outcome), []).append(r.job_id)
        self.tell_rooms(
            [
                RunEvent(run_id=run, kind=kind, job_ids=tuple(ids), at=now)  # type: ignore[arg-type]
                for (run, kind), ids in events.items()
            ]
        )
        return out

    async def renew(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "renew leases")
        body = await self.body(request, wire.RenewIn)
        results = await self.call(
            self.queue.renew_many(
                [(lease.id, lease.lease_token) for lease in body.leases], body.visibility_seconds
            )
        )
        items = await self._items(results)
        return _json(wire.LeasesOut(success=all(r.ok for r in results), results=items))

    async def start(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "start jobs")
        body = await self.body(request, wire.StartIn)
        results = await self.call(
            self.queue.start_many([(lease.id, lease.lease_token) for lease in body.leases])
        )
        items = await self._items(results)
        return _json(wire.LeasesOut(success=all(r.ok for r in results), results=items))

    async def release(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "release leases")
        body = await self.body(request, wire.ReleaseIn)
        results = await self.call(
            self.queue.release_many(
                [(lease.id, lease.lease_token) for lease in body.leases], body.delay_seconds
            )
        )
        items = await self._items(results)
        return _json(wire.LeasesOut(success=all(r.ok for r in results), results=items))

    async def store_result(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "store results")
        job_id = self.job_id(request)
        body = await self.body(request, wire.ResultIn)
        results = await self.call(
            self.queue.ack_many(
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
        (item,) = await self._items(results, ["done"])
        if not item.ok:
            raise ApiError(409, "lease_lost", item.message or f"job {job_id}: {item.reason}")
        return _json(wire.AckOut(success=True, results=[item]))

    # --- readers and operators -------------------------------------------------------------

    @staticmethod
    def job_id(request: Request) -> int:
        job_id: int = request.path_params["job_id"]  # digits only: the route's int convertor
        if not 1 <= job_id < 2**63:
            raise ApiError(400, "invalid_field", f"job id {job_id} is out of range", "jobId")
        return job_id

    async def get_job(self, request: Request, principal: Principal | None) -> Response:
        job = await self.call(self.queue.get(self.job_id(request)))
        return _json(wire.job_out(self.readable_job(principal, job)))

    async def list_jobs(self, request: Request, principal: Principal | None) -> Response:
        query = request.query_params
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
        if principal is not None and principal.tenant is not None:
            if tenant is not None:
                self.check_tenant(principal, tenant)
            tenant = principal.tenant
        for name in ("runId", "tenantId"):
            value = query.get(name)
            if value is not None and not 1 <= len(value) <= 1024:
                raise ApiError(400, "invalid_field", f"{name} must be 1 to 1024 characters", name)
        page = await self.call(
            self.queue.list(
                cast("JobStatus | None", status),  # one of STATUSES, checked above
                query.get("runId"),
                tenant,
                int(limit_text),
                cursor,
            )
        )
        return _json(
            wire.JobsPage(jobs=[wire.job_out(j) for j in page.items], next_cursor=page.next_cursor)
        )

    async def stats(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "read the queue's stats")
        stats = await self.call(self.queue.stats())
        return _json(wire.stats_out(stats, self.now()))

    async def requeue(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "requeue jobs (ids and runs span every tenant)")
        body = await self.body(request, wire.RequeueIn)
        if body.ids is None and body.run_id is None and body.tenant_id is None:
            raise ApiError(400, "invalid_field", "name the jobs: ids, runId or tenantId", "ids")
        count = await self.call(
            self.queue.requeue(body.ids, run_id=body.run_id, tenant_id=body.tenant_id)
        )
        return _json(wire.CountOut(success=True, count=count))

    async def purge(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "purge jobs (the queue spans every tenant)")
        body = await self.body(request, wire.PurgeIn)
        count = await self.call(self.queue.purge(body.older_than_seconds))
        return _json(wire.CountOut(success=True, count=count))

    # --- uploads ---------------------------------------------------------------------------

    async def create_upload(self, request: Request, principal: Principal | None) -> Response:
        """Reserve an object key and hand out where to PUT it; the job is enqueued on upload.

        The job does not exist until the object does, so no worker can lease it, fail to find
        its object and spend an attempt while the upload is in flight. The key lies under the
        tenant's prefix (``tenant/run/xxxxxxxx-filename``), and a run of another tenant is
        refused here, before anything is stored.
        """
        body = await self.body(request, wire.UploadCreateIn)
        self.check_tenant(principal, body.tenant_id)
        try:
            tenancy.check_tenant_id(body.tenant_id)
        except InvalidArgument as exc:
            raise ApiError(400, "invalid_field", str(exc), "tenantId") from None
        run_id = body.run_id or f"run-{uuid.uuid4().hex[:12]}"
        await self._check_run_tenant(run_id, body.tenant_id)
        key = tenancy.tenant_prefix(body.tenant_id) + "/".join(
            (
                _segment(run_id, "run"),
                f"{uuid.uuid4().hex[:8]}-{_segment(body.filename.rsplit('/', 1)[-1], 'file')}",
            )
        )
        expires = self.now() + self.config.http.upload_url_seconds
        grant = UploadGrant(body.tenant_id, run_id, key, body.content_type, body.filename, expires)
        token = self.signer.sign(_UPLOAD, grant)
        presign = getattr(self.system.store, "presign_put", None)
        headers = {"Content-Type": body.content_type}
        if presign is not None:
            # An object store that signs its own PUTs (R2, S3): the client uploads there, then
            # calls completeUrl, which enqueues the job. If-None-Match makes the URL single use
            # there too: the store refuses a second PUT (412) instead of overwriting.
            url = await self.call(
                presign(
                    key,
                    content_type=body.content_type,
                    expires_seconds=max(1, int(self.config.http.upload_url_seconds)),
                    if_absent=True,
                )
            )
            headers["If-None-Match"] = "*"
            complete = str(request.url_for("complete_upload"))
        else:
            url = str(request.url_for("put_upload", token=token))
            complete = None
        out = wire.UploadCreateOut(
            success=True,
            run_id=run_id,
            r2_key=key,
            upload_url=url,
            method="PUT",
            expires_at=expires,
            complete_url=complete,
            upload_token=token if complete is not None else None,
            upload_headers=headers,
        )
        return _json(out, 201)

    async def _check_run_tenant(self, run_id: str, tenant_id: str) -> None:
        """409 if the run exists and belongs to another tenant (a run has one tenant)."""
        try:
            summary = await self.queue.run_summary(run_id)
        except RunNotFound:
            return
        except Exception as exc:
            mapped = from_domain_error(exc)
            if mapped is None:
                raise
            raise mapped from None
        if summary.tenant_id != tenant_id:
            raise self._as_http(
                InvalidArgument(f"run_id {run_id!r} belongs to tenant {summary.tenant_id!r}")
            )

    async def put_upload(self, request: Request, principal: Principal | None) -> Response:
        """Store the uploaded file, once, then enqueue its job.

        An upload URL is single use: once its object is stored, a second PUT (the URL found in
        a log, a replay) is refused with 409 and overwrites nothing, so the object a job was
        enqueued for is the object it processes.
        """
        grant = self._verify(request.path_params["token"])
        key = grant.r2_key
        if key in self._uploading:
            raise _upload_used(key)
        self._uploading.add(key)  # before any await: of two concurrent PUTs, one goes on
        try:
            if await self.call(self.system.store.head(key)) is not None:
                raise _upload_used(key)
            await self._check_run_tenant(grant.run_id, grant.tenant_id)
            data = await self.raw_body(request, self.config.pipeline.max_object_bytes)
            await self.call(self.system.store.put(key, data, content_type=grant.content_type))
        finally:
            self._uploading.discard(key)
        return await self._enqueue_upload(grant, len(data))

    async def complete_upload(self, request: Request, principal: Principal | None) -> Response:
        """Enqueue the job of a presigned upload, once its object is in the store (409 if not)."""
        body = await self.body(request, _CompleteIn)
        grant = self._verify(body.token)
        self.check_tenant(principal, grant.tenant_id)
        if await self.call(self.system.store.head(grant.r2_key)) is None:
            raise ApiError(
                409,
                "upload_missing",
                f"nothing is stored under {grant.r2_key!r} yet: PUT the file to the uploadUrl "
                "that /uploads/create returned, then call completeUrl again",
                "token",
            )
        return await self._enqueue_upload(grant, None)

    async def _enqueue_upload(self, grant: UploadGrant, size: int | None) -> Response:
        payload: dict[str, Any] = {"filename": grant.filename, "contentType": grant.content_type}
        if size is not None:
            payload["bytes"] = size
        # The key makes a repeated completion return the same job.
        job = await self.call(
            self.system.enqueue(
                grant.run_id,
                grant.tenant_id,
                grant.r2_key,
                payload=payload,
                idempotency_key=f"upload:{grant.r2_key}",
            )
        )
        return _json(
            wire.UploadDoneOut(
                success=True, job_id=job.id, run_id=job.run_id, r2_key=job.r2_key, status=job.status
            ),
            201,
        )

    def _verify(self, token: str) -> UploadGrant:
        grant = self.signer.verify(_UPLOAD, token, UploadGrant)
        if grant is None or grant.expires < self.now():
            raise ApiError(
                403,
                "invalid_upload_token",
                "this upload URL is invalid or expired; create another with /uploads/create",
            )
        return grant

    # --- runs ------------------------------------------------------------------------------

    async def _readable_run(self, run_id: str, principal: Principal | None) -> RunSummary:
        if not 1 <= len(run_id) <= 1024:
            raise ApiError(400, "invalid_field", "a run id is 1 to 1024 characters", "runId")
        summary = await self.call(self.queue.run_summary(run_id))
        if principal is not None and not principal.sees(summary.tenant_id):
            # Exactly what a run that does not exist answers: no probing for others' runs.
            raise self._as_http(RunNotFound(run_id))
        return summary

    async def stream_token(self, request: Request, principal: Principal | None) -> Response:
        """A token that opens this run's ``/events`` and ``/ws`` in ``?token=``, for a while.

        For browsers, which cannot send a header with EventSource or a WebSocket: the token
        names one run and expires after `STREAM_TOKEN_SECONDS`, so one found in a log later
        opens nothing else and soon nothing at all.
        """
        run_id = request.path_params["run_id"]
        summary = await self._readable_run(run_id, principal)
        expires = self.now() + STREAM_TOKEN_SECONDS
        token = self.signer.sign(_STREAM, StreamGrant(run_id, summary.tenant_id, expires))
        query = f"?token={token}"
        return _json(
            wire.StreamTokenOut(
                token=token,
                expires_at=expires,
                events_url=str(request.url_for("run_events", run_id=run_id)) + query,
                ws_url=str(request.url_for("run_ws", run_id=run_id)).replace("http", "ws", 1)
                + query,
            )
        )

    async def get_run(self, request: Request, principal: Principal | None) -> Response:
        summary = await self._readable_run(request.path_params["run_id"], principal)
        return _json(wire.run_out(summary))

    async def run_events(self, request: Request, principal: Principal | None) -> Response:
        """Server-sent events: the run's state now, then after every change, until it ends."""
        run_id = request.path_params["run_id"]
        await self._readable_run(run_id, principal)

        async def stream() -> AsyncIterator[bytes]:
            watch: AsyncGenerator[RunUpdate, None] = self.system.watch_run(run_id)  # type: ignore[assignment]
            async with contextlib.aclosing(watch) as updates:
                async for update in updates:
                    yield b"event: update\ndata: " + _update_out(update) + b"\n\n"
            yield b"event: end\ndata: {}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def run_ws(self, websocket: WebSocket) -> None:
        """The same updates as ``/events`` over a WebSocket; closes when the run ends."""
        run_id = websocket.path_params["run_id"]
        try:
            principal = self.authenticate(websocket, url_token=True)
            if not principal.may("worker", "producer"):
                raise ApiError(403, "forbidden", "this token may not read runs")
            await self._readable_run(run_id, principal)  # another tenant's: run_not_found
        except ApiError as exc:
            await websocket.close(code=1008, reason=exc.code)
            return
        await websocket.accept()
        async with anyio.create_task_group() as tg:

            async def until_disconnect() -> None:
                with contextlib.suppress(WebSocketDisconnect):
                    while True:
                        await websocket.receive_text()
                tg.cancel_scope.cancel()

            tg.start_soon(until_disconnect)
            watch: AsyncGenerator[RunUpdate, None] = self.system.watch_run(run_id)  # type: ignore[assignment]
            try:
                async with contextlib.aclosing(watch) as updates:
                    async for update in updates:
                        await websocket.send_bytes(_update_out(update))
                await websocket.close()
            except (WebSocketDisconnect, OSError, RuntimeError):
                pass  # the client went away mid-send
            tg.cancel_scope.cancel()


class _CompleteIn(msgspec.Struct, kw_only=True, frozen=True):
    token: str


def _upload_used(key: str) -> ApiError:
    return ApiError(
        409,
        "upload_used",
        f"this upload URL was used already: {key!r} is stored and is never overwritten, so its "
        "job processes what was uploaded first; create another upload for another file",
    )
