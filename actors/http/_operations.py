"""The operator's routes: liveness, readiness, queue stats and controls, Prometheus metrics, the
schema."""

from __future__ import annotations

import re
from typing import Any

import anyio
from starlette.responses import Response

from actors import protocol as wire
from actors.http._auth import Principal, check_tenant
from actors.http._call import Call, json_response
from actors.http._errors import ApiError, mapped
from actors.http._host import OperationsHost
from actors.http._metrics import CONTENT_TYPE, PIPELINE_OUTCOMES, Metrics, Scrape
from actors.queue.base import OwnedQueue, Queue
from actors.queue.model import QueueControls

__all__ = ["Operations"]

# Run metrics summed for /metrics are cached this long: summing reads every run.
_RUN_METRICS_TTL = 10.0
_RUN_METRICS_MAX_PAGES = 10
_METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Operations:
    """Health, stats, metrics and ``/openapi.json`` (``document``, computed once)."""

    def __init__(self, host: OperationsHost, metrics: Metrics, document: dict[str, Any]) -> None:
        self._host = host
        self._metrics = metrics
        self._document = document
        self._run_metrics: tuple[float, dict[str, float]] | None = None

    async def healthz(self, call: Call[None]) -> Response:
        return json_response({"ok": True})

    async def readyz(self, call: Call[None]) -> Response:
        checks: dict[str, Any] = {}
        try:
            with anyio.fail_after(2.0):
                await self._host.queue.stats()
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks["database"] = f"unreachable: {type(exc).__name__}"
        counts = self._host.tree.count_children()
        running = counts.specs > 0 and counts.active == counts.specs
        checks["tree"] = "running" if running else "not running"
        ready = checks["database"] == "ok" and running
        return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)

    async def openapi(self, call: Call[None]) -> Response:
        return json_response(self._document)

    async def stats(self, call: Call[None]) -> Response:
        stats = await mapped(self._host.queue.stats())
        return json_response(wire.stats_out(stats, self._host.clock.time()))

    # --- the queue's controls ------------------------------------------------------------------

    async def pause(self, call: Call[wire.PauseIn]) -> Response:
        return await self._set_paused(call, paused=True)

    async def resume(self, call: Call[wire.PauseIn]) -> Response:
        return await self._set_paused(call, paused=False)

    async def _set_paused(self, call: Call[wire.PauseIn], *, paused: bool) -> Response:
        body = await call.body()
        controls = await set_paused(self._host.queue, call.principal, body.tenant_id, paused)
        return json_response(wire.controls_out(controls, _scope(call.principal)))

    async def controls(self, call: Call[None]) -> Response:
        controls = await mapped(self._host.queue.controls())
        return json_response(wire.controls_out(controls, _scope(call.principal)))

    async def set_limits(self, call: Call[wire.LimitsIn]) -> Response:
        tenant_id: str = call.request.path_params["tenant_id"]
        if not 1 <= len(tenant_id) <= 1024:
            raise ApiError(
                400, "invalid_field", "tenantId must be 1 to 1024 characters", "tenantId"
            )
        body = await call.body()
        controls = await mapped(
            self._host.queue.set_tenant_limits(
                tenant_id,
                weight=body.weight,
                max_leased=body.max_leased,
                max_per_second=body.max_per_second,
            )
        )
        return json_response(wire.controls_out(controls))

    async def metrics(self, call: Call[None]) -> Response:
        stats = await mapped(self._host.queue.stats())
        run_metrics = await self._run_metric_sums()
        acks = self._host.ack_stats
        scrape = Scrape(
            stats=stats,
            outcomes={name: getattr(acks, name) for name in PIPELINE_OUTCOMES},
            run_metrics=run_metrics,
            loop_lag=self._host.watchdog.take_max(),
            children=self._host.tree.count_children(),
        )
        return Response(self._metrics.render(scrape), media_type=CONTENT_TYPE)

    async def _run_metric_sums(self) -> dict[str, float]:
        now = self._host.clock.time()
        if self._run_metrics is not None and now - self._run_metrics[0] < _RUN_METRICS_TTL:
            return self._run_metrics[1]
        sums: dict[str, float] = {}
        queue = self._host.queue
        if isinstance(queue, OwnedQueue):  # a queue reached over HTTP lists no runs
            cursor = None
            for _ in range(_RUN_METRICS_MAX_PAGES):
                page = await mapped(queue.list_runs(limit=1000, cursor=cursor))
                for run in page.items:
                    for name, value in run.metrics.items():
                        if _METRIC_NAME.fullmatch(name):
                            sums[name] = sums.get(name, 0.0) + value
                cursor = page.next_cursor
                if cursor is None:
                    break
        self._run_metrics = (now, sums)
        return sums


def _scope(principal: Principal | None) -> str | None:
    """The one tenant a principal is limited to (None: every tenant, or no tokens at all)."""
    return None if principal is None else principal.tenant


async def set_paused(
    queue: Queue, principal: Principal | None, tenant_id: str | None, paused: bool
) -> QueueControls:
    """Pause or resume the whole queue (None) or one tenant, as ``principal`` may: a tenant's
    admin only its own tenant, which holds back no other tenant's work, never the whole queue.
    (The API's pause and resume routes and the dashboard's buttons.)"""
    if _scope(principal) is not None:
        if tenant_id is None:
            raise ApiError(
                403,
                "wrong_tenant",
                "a tenant-scoped token may pause or resume only its own tenant, not the "
                "whole queue: send tenantId",
                "tenantId",
            )
        check_tenant(principal, tenant_id)
    verb = queue.pause if paused else queue.resume
    return await mapped(verb(tenant_id))
