"""The operator's routes: liveness, readiness, queue stats, Prometheus metrics, the schema."""

from __future__ import annotations

import re
from typing import Any

import anyio
from starlette.responses import Response

from actors import protocol as wire
from actors.http._call import Call, json_response
from actors.http._errors import mapped
from actors.http._host import OperationsHost
from actors.http._metrics import Metrics, render_queue_stats
from actors.queue.base import OwnedQueue

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

    async def metrics(self, call: Call[None]) -> Response:
        lines = render_queue_stats(await mapped(self._host.queue.stats()))
        lines += [
            "# HELP actors_pipeline_outcomes_total Outcomes committed by this process's pipeline.",
            "# TYPE actors_pipeline_outcomes_total counter",
        ]
        acks = self._host.ack_stats
        for outcome in ("done", "failed", "retried", "released", "stale"):
            lines.append(
                f'actors_pipeline_outcomes_total{{outcome="{outcome}"}} {getattr(acks, outcome)}'
            )
        lines += [
            "# HELP actors_run_metric_total Run metrics summed over runs (processor tokens, "
            "bytes, chunks...).",
            "# TYPE actors_run_metric_total gauge",
        ]
        for name, value in sorted((await self._run_metric_sums()).items()):
            lines.append(f'actors_run_metric_total{{name="{name}"}} {value:g}')
        lines += self._metrics.render()
        lines += self._metrics.render_loop_lag(self._host.watchdog.take_max())
        return Response(
            "\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8"
        )

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
