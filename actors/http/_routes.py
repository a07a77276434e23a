"""The route table: every route once; the app (``_app.py``) and ``/openapi.json`` both read it."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec
from starlette.responses import Response
from starlette.websockets import WebSocket

from actors import protocol as wire
from actors.bounds import SCHEDULE_NAME_PATTERN
from actors.http._auth import STREAM_TOKEN_SECONDS, Principal, Role, Roles
from actors.http._call import Call
from actors.http._jobs import Jobs
from actors.http._migrate import DUMP_MEDIA, Migrations
from actors.http._operations import Operations
from actors.http._runs import Runs
from actors.http._schedules import Schedules
from actors.http._tasks import Tasks
from actors.http._uploads import UploadCompleteIn, Uploads

__all__ = ["OPEN", "Param", "Resource", "Route", "Socket", "route_table"]

B = TypeVar("B")
# The objects that hold the handlers, one per resource; `create_app` makes one of each.
Resource = Jobs | Uploads | Runs | Schedules | Operations | Tasks | Migrations

OPEN: Roles = None  # no token needed (a token in the URL is refused all the same)
ADMIN: tuple[Role, ...] = ()  # admin only: admin may call every route
WORKER: tuple[Role, ...] = ("worker",)
PRODUCER: tuple[Role, ...] = ("producer",)
READERS: tuple[Role, ...] = ("worker", "producer")


@dataclass(frozen=True)
class Param:
    """A path or query parameter as ``/openapi.json`` states it (the handler checks it)."""

    name: str
    where: Literal["path", "query"]
    schema: dict[str, Any]
    required: bool = False  # a path parameter always is

    def openapi(self) -> dict[str, Any]:
        required = self.where == "path" or self.required
        return {"name": self.name, "in": self.where, "required": required, "schema": self.schema}


JOB_ID = Param("job_id", "path", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1})
RUN_ID = Param("run_id", "path", {"type": "string", "minLength": 1, "maxLength": 1024})
TASK_ID = Param("task_id", "path", {"type": "string", "minLength": 1, "maxLength": 1024})
_TEXT = {"type": "string", "minLength": 1, "maxLength": 1024}
SCHEDULE_NAME = Param("name", "path", {"type": "string", "pattern": SCHEDULE_NAME_PATTERN})
TENANT_QUERY = Param("tenantId", "query", _TEXT)
_FLAG = {"type": "string", "enum": ["true", "false", "1", "0"]}
# What every /api/migrate/* call takes besides the dump.
_MIGRATE_PARAMS = (
    Param("source", "query", {"type": "string", "enum": ["d1", "kv"]}, required=True),
    Param("tenantId", "query", _TEXT),
    Param("runId", "query", _TEXT),
    Param("crossTenantKeys", "query", _FLAG),
)


@dataclass(frozen=True)
class Route(Generic[B]):
    """One HTTP route. ``handler`` is a method of one `Resource` class, called on its object.

    ``roles`` may call it besides admin (`Gate.admit` checks them); ``tenant_wide`` says what
    the route does across tenants, which tenant-scoped tokens may not. ``body`` is the request's
    wire type (decoded by ``Call.body()``); ``response`` the answer's, a wire Struct or the name
    of a schema written out in ``_openapi.py``; ``params`` are stated for ``/openapi.json`` and
    checked by the handler. ``turnstile``: with TURNSTILE_SECRET set, a call without a token is
    let in for the handler to verify its Turnstile challenge. ``error_style``: errors as
    ``ErrorOut`` (``"api"``) or in the KV task API's shape, ``{error}`` (``"kv"``).
    """

    method: str
    path: str
    handler: Callable[[Any, Call[B]], Awaitable[Response]]
    roles: Roles
    summary: str
    body: type[B] | None = None
    response: type[msgspec.Struct] | str | None = None
    status: int = 200
    params: tuple[Param, ...] = ()
    media: str = "application/json"
    body_required: bool = True
    url_token: bool = False
    tenant_wide: str | None = None
    turnstile: bool = False
    error_style: Literal["api", "kv"] = "api"
    # Media types of a body the handler reads as it is (a dump), instead of a JSON ``body``.
    raw_body: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The route's name: its handler's (in metrics labels, errors and ``url_for``)."""
        return self.handler.__name__


@dataclass(frozen=True)
class Socket:
    """A WebSocket route; OpenAPI cannot describe one, so ``/openapi.json`` leaves it out."""

    path: str
    handler: Callable[[Any, WebSocket, Principal | None], Awaitable[None]]
    roles: Roles
    url_token: bool = False
    tenant_wide: str | None = None
    turnstile: bool = False

    @property
    def name(self) -> str:
        return self.handler.__name__


@functools.cache
def route_table(*, metrics_open: bool = False) -> tuple[Route[Any] | Socket, ...]:
    """Every route, in matching order; ``/metrics`` needs a reader's token (any role, for
    every tenant) unless ``[http].metrics = "open"`` opens it."""
    return (
        # --- operations ----------------------------------------------------------------------
        Route("GET", "/healthz", Operations.healthz, OPEN, "liveness", response="Health"),
        Route(
            "GET",
            "/readyz",
            Operations.readyz,
            OPEN,
            "readiness: database reachable and tree running",
            response="Health",
        ),
        Route(
            "GET",
            "/metrics",
            Operations.metrics,
            OPEN if metrics_open else READERS,
            "Prometheus metrics",
            media="text/plain",
            tenant_wide="read the metrics (they span every tenant)",
        ),
        Route("GET", "/openapi.json", Operations.openapi, OPEN, "this document", response="Health"),
        # --- jobs ----------------------------------------------------------------------------
        Route(
            "POST",
            "/jobs/enqueue",
            Jobs.enqueue,
            PRODUCER,
            "enqueue one job (producer)",
            body=wire.EnqueueIn,
            response=wire.EnqueueOut,
        ),
        Route(
            "POST",
            "/jobs/enqueue-many",
            Jobs.enqueue_many,
            PRODUCER,
            "enqueue jobs in one transaction (producer)",
            body=wire.EnqueueManyIn,
            response=wire.EnqueueManyOut,
        ),
        Route(
            "POST",
            "/jobs/pull",
            Jobs.pull,
            WORKER,
            "lease visible jobs (worker)",
            body=wire.PullIn,
            response=wire.PullOut,
            body_required=False,
            tenant_wide="pull (the queue leases across tenants)",
        ),
        Route(
            "POST",
            "/jobs/ack",
            Jobs.ack,
            WORKER,
            "record outcomes: {ids, status} or {acks} (worker)",
            body=wire.AckIn,
            response=wire.AckOut,
            tenant_wide="ack",
        ),
        Route(
            "POST",
            "/jobs/renew",
            Jobs.renew,
            WORKER,
            "extend leases (worker)",
            body=wire.RenewIn,
            response=wire.LeasesOut,
            tenant_wide="renew leases",
        ),
        Route(
            "POST",
            "/jobs/start",
            Jobs.start,
            WORKER,
            "mark leased jobs started: a crash now costs an attempt (worker)",
            body=wire.StartIn,
            response=wire.LeasesOut,
            tenant_wide="start jobs",
        ),
        Route(
            "POST",
            "/jobs/release",
            Jobs.release,
            WORKER,
            "give leases back (worker)",
            body=wire.ReleaseIn,
            response=wire.LeasesOut,
            tenant_wide="release leases",
        ),
        Route(
            "POST",
            "/jobs/requeue",
            Jobs.requeue,
            ADMIN,
            "return failed jobs to pending (admin)",
            body=wire.RequeueIn,
            response=wire.CountOut,
            tenant_wide="requeue jobs (ids and runs span every tenant)",
        ),
        Route(
            "POST",
            "/jobs/purge",
            Jobs.purge,
            ADMIN,
            "delete old finished jobs (admin)",
            body=wire.PurgeIn,
            response=wire.CountOut,
            tenant_wide="purge jobs (the queue spans every tenant)",
        ),
        Route(
            "GET",
            "/jobs/stats",
            Operations.stats,
            READERS,
            "count jobs by status",
            response=wire.StatsOut,
            tenant_wide="read the queue's stats",
        ),
        # --- the queue's controls --------------------------------------------------------------
        Route(
            "POST",
            "/queue/pause",
            Operations.pause,
            ADMIN,
            "pause the whole queue, or one tenant (tenantId): nothing new is leased from it; "
            "leased jobs finish (admin; a tenant's admin: its own tenant only)",
            body=wire.PauseIn,
            response=wire.ControlsOut,
            body_required=False,
        ),
        Route(
            "POST",
            "/queue/resume",
            Operations.resume,
            ADMIN,
            "undo a pause of the whole queue, or of one tenant (tenantId) (admin; a tenant's "
            "admin: its own tenant only)",
            body=wire.PauseIn,
            response=wire.ControlsOut,
            body_required=False,
        ),
        Route(
            "GET",
            "/queue/controls",
            Operations.controls,
            ADMIN,
            "what is paused, and each tenant's weight and limits (admin; a tenant's admin sees "
            "its own tenant's)",
            response=wire.ControlsOut,
        ),
        Route(
            "PUT",
            "/queue/tenants/{tenant_id}/limits",
            Operations.set_limits,
            ADMIN,
            "set a tenant's weight in fair claims and its limits (maxLeased live leases, "
            "maxPerSecond leased a second); a limit left out is none (admin)",
            body=wire.LimitsIn,
            response=wire.ControlsOut,
            params=(Param("tenant_id", "path", _TEXT),),
            body_required=False,
            tenant_wide="set a tenant's share and limits (they weigh it against every other "
            "tenant)",
        ),
        Route(
            "GET",
            "/jobs",
            Jobs.list_jobs,
            READERS,
            "list jobs, paged",
            response=wire.JobsPage,
            params=(
                Param(
                    "status",
                    "query",
                    {
                        "type": "string",
                        "enum": ["pending", "leased", "done", "failed", "cancelled"],
                    },
                ),
                Param("runId", "query", _TEXT),
                Param("tenantId", "query", _TEXT),
                Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
                Param("cursor", "query", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
                # An imported job's origin (d1:<id>, kv:<id>): that job alone.
                Param("origin", "query", _TEXT),
            ),
        ),
        Route(
            "POST",
            "/jobs/cancel",
            Jobs.cancel_jobs,
            PRODUCER,
            "cancel jobs: a pending one now, a leased one when its worker stops (producer: "
            "its tenant's jobs)",
            body=wire.CancelIn,
            response=wire.CancelOut,
        ),
        Route(
            "POST",
            "/jobs/{job_id:int}/cancel",
            Jobs.cancel_job,
            PRODUCER,
            "cancel one job (producer: its tenant's); 404 for another tenant's",
            response=wire.CancelOut,
            params=(JOB_ID,),
            body_required=False,
        ),
        Route(
            "GET",
            "/jobs/{job_id:int}",
            Jobs.get_job,
            READERS,
            "one job",
            response=wire.JobOut,
            params=(JOB_ID,),
        ),
        Route(
            "POST",
            "/jobs/{job_id:int}/result",
            Jobs.store_result,
            WORKER,
            "store a leased job's result: acks it done (worker)",
            body=wire.ResultIn,
            response=wire.AckOut,
            params=(JOB_ID,),
            tenant_wide="store results",
        ),
        # --- uploads -------------------------------------------------------------------------
        Route(
            "POST",
            "/uploads/create",
            Uploads.create_upload,
            PRODUCER,
            "reserve an object key and an upload URL (producer; with TURNSTILE_SECRET set, "
            "a Turnstile token instead, for the tenants of [http].turnstile_tenants)",
            body=wire.UploadCreateIn,
            response=wire.UploadCreateOut,
            status=201,
            turnstile=True,
        ),
        Route(
            "POST",
            "/uploads/complete",
            Uploads.complete_upload,
            PRODUCER,
            "enqueue the job of a presigned upload (producer; with TURNSTILE_SECRET set, the "
            "signed uploadToken alone, for the tenants of [http].turnstile_tenants)",
            body=UploadCompleteIn,
            response=wire.UploadDoneOut,
            status=201,
            turnstile=True,
        ),
        # Authorised by the signed token in its path, like a presigned URL: no bearer needed.
        Route(
            "PUT",
            "/uploads/{token}",
            Uploads.put_upload,
            OPEN,
            "upload the file; enqueues its job (signed URL)",
            response=wire.UploadDoneOut,
            status=201,
            params=(Param("token", "path", {"type": "string"}),),
        ),
        # --- runs ----------------------------------------------------------------------------
        Route(
            "GET",
            "/runs/{run_id}",
            Runs.get_run,
            READERS,
            "a run's state",
            response=wire.RunOut,
            params=(RUN_ID,),
        ),
        Route(
            "POST",
            "/runs/{run_id}/cancel",
            Runs.cancel_run,
            PRODUCER,
            "cancel every unfinished job of the run (producer: its tenant's runs); 404 for "
            "another tenant's",
            response=wire.RunCancelOut,
            params=(RUN_ID,),
            body_required=False,
        ),
        Route(
            "POST",
            "/runs/{run_id}/stream-token",
            Runs.stream_token,
            READERS,
            "a token for ?token= on this run's /events and /ws, valid "
            f"{STREAM_TOKEN_SECONDS:g} s (for browsers, which cannot send a header); /ws "
            "takes the same ?token=",
            response=wire.StreamTokenOut,
            params=(RUN_ID,),
        ),
        # EventSource cannot send a header: ?token= here takes a stream token for this run.
        Route(
            "GET",
            "/runs/{run_id}/events",
            Runs.run_events,
            READERS,
            "server-sent events of the run until it ends; authorised by a bearer header or "
            "by ?token= holding a stream token of this run (never an API token)",
            response="RunEvent",
            params=(RUN_ID, Param("token", "query", {"type": "string"})),
            media="text/event-stream",
            url_token=True,
        ),
        Socket("/runs/{run_id}/ws", Runs.run_ws, READERS, url_token=True),
        # --- schedules -----------------------------------------------------------------------
        Route(
            "POST",
            "/schedules",
            Schedules.create_schedule,
            PRODUCER,
            "create a recurring job, or replace the tenant's one of that name (producer); a "
            "replacement with the same timing keeps its next tick",
            body=wire.ScheduleIn,
            response=wire.ScheduleOut,
        ),
        Route(
            "GET",
            "/schedules",
            Schedules.list_schedules,
            PRODUCER,
            "list recurring jobs (a tenant-scoped token: its tenant's)",
            response=wire.SchedulesOut,
            params=(TENANT_QUERY,),
        ),
        Route(
            "DELETE",
            "/schedules/{name}",
            Schedules.delete_schedule,
            PRODUCER,
            "delete a tenant's recurring job (a tenant-scoped token may leave tenantId out: "
            "its own)",
            response=wire.ScheduleOut,
            params=(SCHEDULE_NAME, Param("tenantId", "query", _TEXT, required=True)),
        ),
        # --- the KV task API: a task is a job (README, "The KV task API") -------------------
        Route(
            "GET",
            "/api/queue",
            Tasks.list_tasks,
            READERS,
            "the ids of the tasks not finished (pending or claimed), at most 1000 (KV task API)",
            response=wire.PendingTasksOut,
            error_style="kv",
        ),
        Route(
            "POST",
            "/api/queue/claim",
            Tasks.claim_task,
            WORKER,
            "lease the next task to workerId for leaseDurationSec, 1 to 600 (default 300) "
            "(KV task API, worker)",
            body=wire.ClaimTaskIn,
            response=wire.ClaimTaskOut,
            body_required=False,
            tenant_wide="claim tasks (the queue leases across tenants)",
            error_style="kv",
        ),
        Route(
            "POST",
            "/api/queue/{task_id}/renew",
            Tasks.renew_task,
            WORKER,
            "extend the caller's lease by extendSec, 1 to 600 (default 300) (KV task API, worker)",
            body=wire.RenewTaskIn,
            response=wire.TaskOk,
            params=(TASK_ID,),
            tenant_wide="renew leases",
            error_style="kv",
        ),
        Route(
            "POST",
            "/api/queue/{task_id}/release",
            Tasks.release_task,
            WORKER,
            "give the caller's lease back: the task is pending again (KV task API, worker)",
            body=wire.ReleaseTaskIn,
            response=wire.TaskOk,
            params=(TASK_ID,),
            body_required=False,
            tenant_wide="release leases",
            error_style="kv",
        ),
        Route(
            "POST",
            "/api/queue/{task_id}/status",
            Tasks.set_status,
            WORKER,
            "a status note on a task; it changes nothing the queue does, as in the original "
            "(KV task API, worker)",
            body=wire.TaskStatusIn,
            response=wire.TaskOk,
            params=(TASK_ID,),
            error_style="kv",
        ),
        Route(
            "GET",
            "/api/queue/{task_id}",
            Tasks.get_task,
            READERS,
            "one task (KV task API)",
            response="Task",
            params=(TASK_ID,),
            error_style="kv",
        ),
        Route(
            "POST",
            "/api/result/{task_id}",
            Tasks.store_result,
            WORKER,
            "store the caller's task's result and complete it; success false fails it for good "
            "(KV task API, worker)",
            body=wire.TaskResultIn,
            response=wire.TaskOk,
            params=(TASK_ID,),
            tenant_wide="store results",
            error_style="kv",
        ),
        Route(
            "GET",
            "/api/result/{task_id}",
            Tasks.get_result,
            READERS,
            "a finished task's result (KV task API)",
            response="TaskResult",
            params=(TASK_ID,),
            error_style="kv",
        ),
        # --- moving off Cloudflare (the dump in the body, at most MAX_IMPORT_BYTES) ----------
        *(
            Route(
                method,
                f"/api/migrate/{step}",
                handler,
                ADMIN,
                summary,
                response="MigrationReport",
                params=_MIGRATE_PARAMS + extra,
                raw_body=DUMP_MEDIA,
                tenant_wide="import jobs (a dump spans tenants)",
            )
            for method, step, handler, summary, extra in (
                (
                    "GET",
                    "status",
                    Migrations.migrate_status,
                    "compare a D1 or KV dump with the queue: imported, missing, changed (admin)",
                    (),
                ),
                (
                    "POST",
                    "run",
                    Migrations.migrate_run,
                    "import a D1 or KV dump, each job verified; safe to run again (admin)",
                    (),
                ),
                (
                    "POST",
                    "rollback",
                    Migrations.migrate_rollback,
                    "remove the jobs a dump's import created, except those changed since (admin)",
                    (Param("force", "query", _FLAG),),
                ),
            )
        ),
    )
