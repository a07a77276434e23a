"""The ASGI app: the edge worker's protocol, run events, health and metrics over one ActorSystem."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from actors.http import handlers
from actors.http.auth import Principal, Role, Tokens
from actors.http.errors import ApiError, error_response
from actors.http.metrics import Metrics

if TYPE_CHECKING:
    from actors.system import ActorSystem

__all__ = ["create_app"]

log = structlog.get_logger("actors.http")

Handler = Callable[[handlers.Api, Request, Principal | None], Awaitable[Response]]


def create_app(
    system: ActorSystem,
    *,
    tokens: Tokens | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """The HTTP API over a running ``system``; mount it in a host app or serve it as it is.

    ``tokens`` defaults to those of the environment (``ACTORS_TOKENS``, ``JWT_SECRET`` /
    ``EDGE_API_TOKEN``). With no token configured every protected route answers 401: there is
    no anonymous mode. To count actor restarts in ``/metrics`` when embedding, run
    ``app.state.metrics.count_restarts(system.tree.events)`` in a task.
    """
    api = handlers.Api(
        system,
        tokens=tokens if tokens is not None else Tokens.from_config(system.config),
        metrics=metrics if metrics is not None else Metrics(),
    )

    def route(
        path: str, fn: Handler, method: str, name: str, roles: tuple[Role, ...] | None
    ) -> Route:
        return Route(path, _endpoint(api, fn, name, roles), methods=[method], name=name)

    worker: tuple[Role, ...] = ("worker",)
    producer: tuple[Role, ...] = ("producer",)
    readers: tuple[Role, ...] = ("worker", "producer")
    admin: tuple[Role, ...] = ()
    metrics_roles = None if system.config.http.metrics == "open" else readers
    routes: list[BaseRoute] = [
        route("/healthz", handlers.Api.healthz, "GET", "healthz", None),
        route("/readyz", handlers.Api.readyz, "GET", "readyz", None),
        route("/metrics", handlers.Api.metrics_text, "GET", "metrics", metrics_roles),
        route("/openapi.json", handlers.Api.openapi, "GET", "openapi", None),
        route("/jobs/enqueue", handlers.Api.enqueue, "POST", "enqueue", producer),
        route("/jobs/enqueue-many", handlers.Api.enqueue_many, "POST", "enqueue_many", producer),
        route("/jobs/pull", handlers.Api.pull, "POST", "pull", worker),
        route("/jobs/ack", handlers.Api.ack, "POST", "ack", worker),
        route("/jobs/renew", handlers.Api.renew, "POST", "renew", worker),
        route("/jobs/start", handlers.Api.start, "POST", "start", worker),
        route("/jobs/release", handlers.Api.release, "POST", "release", worker),
        route("/jobs/requeue", handlers.Api.requeue, "POST", "requeue", admin),
        route("/jobs/purge", handlers.Api.purge, "POST", "purge", admin),
        route("/jobs/stats", handlers.Api.stats, "GET", "stats", readers),
        route("/jobs", handlers.Api.list_jobs, "GET", "list_jobs", readers),
        route("/jobs/{job_id:int}", handlers.Api.get_job, "GET", "get_job", readers),
        route(
            "/jobs/{job_id:int}/result", handlers.Api.store_result, "POST", "store_result", worker
        ),
        route("/uploads/create", handlers.Api.create_upload, "POST", "create_upload", producer),
        route(
            "/uploads/complete", handlers.Api.complete_upload, "POST", "complete_upload", producer
        ),
        # Authorised by the signed token in its path, like a presigned URL: no bearer needed.
        route("/uploads/{token}", handlers.Api.put_upload, "PUT", "put_upload", None),
        route("/runs/{run_id}", handlers.Api.get_run, "GET", "get_run", readers),
        route("/runs/{run_id}/events", handlers.Api.run_events, "GET", "run_events", readers),
        WebSocketRoute("/runs/{run_id}/ws", _websocket(api), name="run_ws"),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {
            404: f"no route {request.url.path}; see /openapi.json for the routes",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        response = error_response(ApiError(exc.status_code, code, message))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.api = api
    app.state.metrics = api.metrics
    return app


def _endpoint(
    api: handlers.Api, fn: Handler, name: str, roles: tuple[Role, ...] | None
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: authenticate, check the role, time it, and turn errors into JSON."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            principal = None
            if roles is not None:
                principal = api.authenticate(request)
                if not principal.may(*roles):
                    raise ApiError(
                        403,
                        "forbidden",
                        f"a {principal.role} token may not call {name}; it needs the "
                        f"{' or '.join(('admin', *roles))} role",
                    )
            response = await fn(api, request, principal)
        except ApiError as exc:
            response = error_response(exc)
        except Exception:  # a bug: answer 500 without details, log it with its traceback
            log.exception("http.unhandled", route=name, method=request.method)
            response = error_response(
                ApiError(500, "internal", "the server failed on this request; see its log")
            )
        api.metrics.request(name, response.status_code, time.perf_counter() - started)
        return response

    return endpoint


def _websocket(api: handlers.Api) -> Callable[[WebSocket], Awaitable[None]]:
    async def run_ws(websocket: WebSocket) -> None:
        await api.run_ws(websocket)

    return run_ws
