"""The HTTP handlers: decode the body, check the tenant, call the queue, encode the answer."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from actors.http import wire
from actors.http.auth import Principal, Tokens
from actors.http.errors import ApiError, from_decode_error, from_domain_error
from actors.http.metrics import Metrics, render_queue_stats
from actors.http.openapi import openapi_document
from actors.messages import RunEvent
from actors.queue.model import Ack, NewJob

if TYPE_CHECKING:
    from actors.run_room import RunUpdate
    from actors.system import ActorSystem

__all__ = ["Api"]

log = structlog.get_logger("actors.http")

T = TypeVar("T")

_STATUSES = ("pending", "leased", "done", "failed")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Run metrics summed for /metrics are cached this long: summing reads every run.
_RUN_METRICS_TTL = 10.0
_RUN_METRICS_MAX_PAGES = 10


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
        # Upload URLs are signed with a key of this process: like presigned URLs they need no
        # bearer token; a restart invalidates those not used yet (create another).
        self._upload_key = secrets.token_bytes(32)
        self._run_metrics: tuple[float, dict[str, float]] | None = None

    @property
    def queue(self) -> Any:
        return self.system.queue

    def now(self) -> float:
        return self.system.clock.time()

    # --- plumbing --------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Principal:
        """The request's principal; 401 without a valid bearer token (or ``?token=``)."""
        header = request.headers.get("authorization")
        principal = self.tokens.authenticate(header)
        if principal is None and header is None and "token" in request.query_params:
            # EventSource and WebSocket clients cannot set headers in browsers.
            principal = self.tokens.lookup(request.query_params["token"])
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

    @staticmethod
    def check_tenant(principal: Principal | None, tenant_id: str, field: str = "tenantId") -> None:
        if principal is not None and not principal.sees(tenant_id):
            raise ApiError(403, "wrong_tenant", "this token is limited to another tenant", field)

    @staticmethod
    def owner(principal: Principal | None) -> str:
        """Who takes or settles a lease: the token's id (recorded as the lease's owner; an
        ids-only ack settles only its own leases), "anonymous" for a call without a token."""
        return "anonymous" if principal is None else principal.id

    @staticmethod
    def cross_tenant_key(principal: Principal | None, job: wire.EnqueueIn, at: str = "") -> bool:
        """The job's ``crossTenantKey``; 403 unless an admin (or a tokenless API) sets it."""
        if job.cross_tenant_key and principal is not None and principal.role != "admin":
            raise ApiError(
                403,
                "forbidden",
                "only an admin token may enqueue a key outside the tenant's prefix "
                "(crossTenantKey); leave it out and put the object under the tenant's prefix",
                f"{at}crossTenantKey",
            )
        return job.cross_tenant_key

    @staticmethod
    def unscoped(principal: Principal | None, what: str) -> None:
        if principal is not None and principal.tenant is not None:
            raise ApiError(
                403,
                "tenant_scoped",
                f"a tenant-scoped token cannot {what}: it spans every tenant; "
                "use an unscoped token",
            )

    async def call(self, coro: Any) -> Any:
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
            room = rooms.lookup(event.run_id)
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
        list_runs = getattr(self.queue, "list_runs", None)
        if list_runs is not None:
            cursor = None
            for _ in range(_RUN_METRICS_MAX_PAGES):
                page = await self.call(list_runs(limit=1000, cursor=cursor))
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
                cross_tenant_key=self.cross_tenant_key(principal, body),
                timeout_seconds=body.timeout_seconds,
            )
        )
        return _json(
            wire.EnqueueOut(success=True, job_id=job.id, run_id=job.run_id, status=job.status)
        )

    async def enqueue_many(self, request: Request, principal: Principal | None) -> Response:
        body = await self.body(request, wire.EnqueueManyIn)
        for i, item in enumerate(body.jobs):
            self.check_tenant(principal, item.tenant_id, f"jobs[{i}].tenantId")
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
                        cross_tenant_key=self.cross_tenant_key(principal, j, f"jobs[{i}]."),
                        timeout_seconds=j.timeout_seconds,
                    )
                    for i, j in enumerate(body.jobs)
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
        self, results: list[Any], kinds: Sequence[str] | None = None
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
        self.check_tenant(principal, job.tenant_id)
        return _json(wire.job_out(job))

    async def list_jobs(self, request: Request, principal: Principal | None) -> Response:
        query = request.query_params
        status = query.get("status")
        if status is not None and status not in _STATUSES:
            raise ApiError(
                400, "invalid_field", f"status must be one of {', '.join(_STATUSES)}", "status"
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
            self.queue.list(status, query.get("runId"), tenant, int(limit_text), cursor)
        )
        return _json(
            wire.JobsPage(jobs=[wire.job_out(j) for j in page.items], next_cursor=page.next_cursor)
        )

    async def stats(self, request: Request, principal: Principal | None) -> Response:
        self.unscoped(principal, "read the queue's stats")
        stats = await self.call(self.queue.stats())
        return _json(wire.stats_out(stats, self.now()))

    async def requeue(self, request: Request, principal: Principal | None) -> Response:
        body = await self.body(request, wire.RequeueIn)
        if body.ids is None and body.run_id is None and body.tenant_id is None:
            raise ApiError(400, "invalid_field", "name the jobs: ids, runId or tenantId", "ids")
        count = await self.call(
            self.queue.requeue(body.ids, run_id=body.run_id, tenant_id=body.tenant_id)
        )
        return _json(wire.CountOut(success=True, count=count))

    async def purge(self, request: Request, principal: Principal | None) -> Response:
        body = await self.body(request, wire.PurgeIn)
        count = await self.call(self.queue.purge(body.older_than_seconds))
        return _json(wire.CountOut(success=True, count=count))

    # --- uploads ---------------------------------------------------------------------------

    async def create_upload(self, request: Request, principal: Principal | None) -> Response:
        """Reserve an object key and hand out where to PUT it; the job is enqueued on upload.

        The job does not exist until the object does, so no worker can lease it, fail to find
        its object and spend an attempt while the upload is in flight.
        """
        body = await self.body(request, wire.UploadCreateIn)
        self.check_tenant(principal, body.tenant_id)
        run_id = body.run_id or f"run-{uuid.uuid4().hex[:12]}"
        key = "/".join(
            (
                _segment(body.tenant_id, "tenant"),
                _segment(run_id, "run"),
                f"{uuid.uuid4().hex[:8]}-{_segment(body.filename.rsplit('/', 1)[-1], 'file')}",
            )
        )
        expires = self.now() + self.config.http.upload_url_seconds
        grant = UploadGrant(body.tenant_id, run_id, key, body.content_type, body.filename, expires)
        token = self._sign(grant)
        presign = getattr(self.system.store, "presign_put", None)
        if presign is not None:
            # An object store that signs its own PUTs (R2, S3): the client uploads there, then
            # calls completeUrl, which enqueues the job.
            url = await self.call(
                presign(
                    key,
                    content_type=body.content_type,
                    expires_seconds=max(1, int(self.config.http.upload_url_seconds)),
                )
            )
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
        )
        return _json(out, 201)

    async def put_upload(self, request: Request, principal: Principal | None) -> Response:
        grant = self._verify(request.path_params["token"])
        data = await self.raw_body(request, self.config.pipeline.max_object_bytes)
        await self.call(self.system.store.put(grant.r2_key, data, content_type=grant.content_type))
        return await self._enqueue_upload(grant, len(data))

    async def complete_upload(self, request: Request, principal: Principal | None) -> Response:
        body = await self.body(request, _CompleteIn)
        grant = self._verify(body.token)
        self.check_tenant(principal, grant.tenant_id)
        return await self._enqueue_upload(grant, None)

    async def _enqueue_upload(self, grant: UploadGrant, size: int | None) -> Response:
        payload: dict[str, Any] = {"filename": grant.filename, "contentType": grant.content_type}
        if size is not None:
            payload["bytes"] = size
        # The key makes a repeated PUT or completion return the same job.
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

    def _sign(self, grant: UploadGrant) -> str:
        data = base64.urlsafe_b64encode(msgspec.msgpack.encode(grant)).rstrip(b"=")
        sig = hmac.new(self._upload_key, data, hashlib.sha256).digest()[:18]
        return f"{data.decode()}.{base64.urlsafe_b64encode(sig).decode()}"

    def _verify(self, token: str) -> UploadGrant:
        refused = ApiError(
            403,
            "invalid_upload_token",
            "this upload URL is invalid or expired; create another with /uploads/create",
        )
        data, _, sig = token.partition(".")
        if len(token) > 4096 or not data or not sig:
            raise refused
        expected = hmac.new(self._upload_key, data.encode(), hashlib.sha256).digest()[:18]
        try:
            given = base64.urlsafe_b64decode(sig)
            if not hmac.compare_digest(given, expected):
                raise refused
            grant = msgspec.msgpack.decode(
                base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)), type=UploadGrant
            )
        except (ValueError, msgspec.DecodeError):
            raise refused from None
        if grant.expires < self.now():
            raise refused
        return grant

    # --- runs ------------------------------------------------------------------------------

    async def _readable_run(self, run_id: str, principal: Principal | None) -> Any:
        if not 1 <= len(run_id) <= 1024:
            raise ApiError(400, "invalid_field", "a run id is 1 to 1024 characters", "runId")
        summary = await self.call(self.queue.run_summary(run_id))
        self.check_tenant(principal, summary.tenant_id)
        return summary

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
        header = websocket.headers.get("authorization")
        principal = self.tokens.authenticate(header)
        if principal is None and header is None and "token" in websocket.query_params:
            principal = self.tokens.lookup(websocket.query_params["token"])
        run_id = websocket.path_params["run_id"]
        if principal is None or not principal.may("worker", "producer"):
            await websocket.close(code=1008, reason="unauthorized")
            return
        try:
            summary = await self.queue.run_summary(run_id)
        except Exception as exc:
            mapped = from_domain_error(exc)
            if mapped is None:
                raise
            await websocket.close(code=1008, reason=mapped.code)
            return
        if not principal.sees(summary.tenant_id):
            await websocket.close(code=1008, reason="wrong_tenant")
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
