"""The ASGI app: the route table bound to one host's resources, each route behind the `Gate`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, WebSocketRoute
from starlette.routing import Route as StarletteRoute
from starlette.types import ExceptionHandler, Receive, Scope, Send
from starlette.websockets import WebSocket

from actors.http._auth import Gate, Signer, Tokens
from actors.http._call import Call
from actors.http._errors import ApiError, error_response, kv_error_response
from actors.http._host import Host
from actors.http._jobs import Jobs, ServerStopping
from actors.http._metrics import Metrics
from actors.http._migrate import Migrations
from actors.http._openapi import openapi_document
from actors.http._operations import Operations
from actors.http._routes import Resource, Route, Socket, route_table
from actors.http._runs import Runs
from actors.http._schedules import Schedules
from actors.http._session import Sessions
from actors.http._tasks import Tasks
from actors.http._turnstile import Turnstile
from actors.http._ui import Dashboard
from actors.http._uploads import Uploads
from actors.log import get_logger

__all__ = ["create_app"]

log = get_logger("actors.http")


def create_app(
    host: Host,
    *,
    tokens: Tokens | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """The HTTP API over a running ``host`` (an `ActorSystem`); mount it in a host app or serve
    it as it is.

    ``tokens`` defaults to those of the environment (``ACTORS_TOKENS``, ``JWT_SECRET`` /
    ``EDGE_API_TOKEN``). With no token configured every protected route answers 401: there is
    no anonymous mode. To count actor restarts in ``/metrics`` when embedding, run
    ``app.state.metrics.count_restarts(system.tree.events)`` in a task. Call
    ``app.state.stop_waiting()`` when the server begins to shut down: pulls that wait for a
    job (``waitSeconds``) then answer at once instead of holding the shutdown up.
    """
    config = host.config
    metrics = metrics if metrics is not None else Metrics()
    # Upload URLs and stream tokens are grants signed with a key of this process (for
    # different purposes, so one never passes for the other).
    signer = Signer()
    turnstile = Turnstile.from_config(config)
    gate = Gate(
        tokens if tokens is not None else Tokens.from_config(config),
        host.clock,
        signer,
        turnstile=turnstile is not None,
    )
    metrics_open = config.http.metrics == "open"
    stopping = ServerStopping()
    jobs, runs = Jobs(host, metrics, stopping), Runs(host, gate)
    resources: list[Resource] = [
        Operations(host, metrics, openapi_document(metrics_open=metrics_open)),
        jobs,
        Uploads(host, signer, turnstile),
        runs,
        Schedules(host),
        Tasks(host, jobs),
        Migrations(host),
    ]
    limit = config.http.max_body_bytes
    routes: list[BaseRoute] = []
    for route in route_table(metrics_open=metrics_open):
        bound = _bind(resources, route.handler)
        if isinstance(route, Socket):
            routes.append(WebSocketRoute(route.path, _socket(gate, route, bound), name=route.name))
        else:
            endpoint = _endpoint(gate, metrics, route, bound, limit)
            routes.append(
                StarletteRoute(route.path, endpoint, methods=[route.method], name=route.name)
            )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {
            404: f"no route {request.url.path}; see /openapi.json for the routes",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        # The KV task API's paths answer in its own shape, routes unknown there too.
        kv = request.url.path.startswith("/api/")
        response = (kv_error_response if kv else error_response)(
            ApiError(exc.status_code, code, message)
        )
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matches the path; a path
            # with a route per method (GET and POST /api/result/{id}) allows them all.
            matched = [
                route
                for route in routes
                if isinstance(route, StarletteRoute)
                and route.matches(request.scope)[0] is not Match.NONE
            ]
            if matched:
                allowed = {
                    method
                    for route in routes
                    if isinstance(route, StarletteRoute) and route.path == matched[0].path
                    for method in route.methods or ()
                }
                response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    # The dashboard: pages over the same resources, behind the same gate (a session's
    # principal is checked against the API route each page or action mirrors).
    dashboard = Dashboard(host, gate, jobs, runs, Sessions(gate.tokens, host.clock, config))
    routes.append(Mount("/ui", routes=dashboard.routes(), name="ui"))
    app = _Api(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.metrics = metrics
    app.state.stop_waiting = stopping.set
    return app


class _Api(Starlette):
    """Starlette, with a shortcut to the routes of a fixed path (``/jobs/enqueue``...).

    A request for one of them (that method, that path exactly, the app not mounted under a
    prefix) goes straight to its endpoint: the one Starlette's router would choose (checked
    here, route by route, when the app is built), without the layers around it (the error
    and exception middleware, the router's walk over the routes, the request wrapper), which
    an endpoint does not need: it answers every error itself (`_endpoint`). Those layers took
    about a fifth of the event loop's profile samples of a single-job enqueue (docs/decisions.md,
    "The HTTP hot path"). Everything else goes the whole way, and so does every request once an
    embedder adds a middleware.
    """

    def __init__(
        self, *, routes: list[BaseRoute], exception_handlers: dict[Any, ExceptionHandler]
    ) -> None:
        super().__init__(routes=routes, exception_handlers=exception_handlers)
        self._direct: dict[tuple[str, str], StarletteRoute] = {}
        for route in routes:
            if not isinstance(route, StarletteRoute) or "{" in route.path:
                continue
            for method in route.methods or ():
                if _first_full_match(routes, method, route.path) is route:
                    self._direct[(method, route.path)] = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path") and not self.user_middleware:
            route = self._direct.get((scope["method"], scope["path"]))
            if route is not None:
                # What Starlette and its router put in the scope (``url_for`` reads "router").
                scope["app"] = self
                scope.setdefault("router", self.router)
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = dict(scope.get("path_params", {}))
                response = await route.endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _first_full_match(routes: list[BaseRoute], method: str, path: str) -> BaseRoute | None:
    """The route Starlette's router hands a request for ``method path`` to (the first that
    matches it fully)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)


def _bind(resources: list[Resource], handler: Callable[..., Any]) -> Any:
    """``handler`` (a method of a resource class, as the table names it) bound to its object."""
    for resource in resources:
        if getattr(type(resource), handler.__name__, None) is handler:
            return getattr(resource, handler.__name__)
    raise LookupError(f"no resource has the handler {handler.__qualname__}")


def _endpoint(
    gate: Gate,
    metrics: Metrics,
    route: Route[Any],
    handler: Callable[[Call[Any]], Awaitable[Response]],
    limit: int,
) -> Callable[[Request], Awaitable[Response]]:
    """The route's handler behind the gate, timed, its errors answered as JSON."""
    name = route.name
    answer = kv_error_response if route.error_style == "kv" else error_response

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            principal = gate.admit(request, route)
            response = await handler(Call(request, principal, route.body, limit))
        except ApiError as exc:
            response = answer(exc)
        except Exception:  # a bug: answer 500 without details, log it with its traceback
            log.exception("http.unhandled", route=name, method=request.method)
            response = answer(
                ApiError(500, "internal", "the server failed on this request; see its log")
            )
        metrics.request(name, response.status_code, time.perf_counter() - started)
        return response

    return endpoint


def _socket(
    gate: Gate,
    route: Socket,
    handler: Callable[[WebSocket, Any], Awaitable[None]],
) -> Callable[[WebSocket], Awaitable[None]]:
    """The socket's handler behind the same gate; a refusal closes it with 1008 and the code."""

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await handler(websocket, gate.admit(websocket, route))
        except ApiError as exc:
            await websocket.close(code=1008, reason=exc.code)

    return endpoint
