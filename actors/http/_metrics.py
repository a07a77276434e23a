"""Prometheus metrics: counters and histograms kept in memory, rendered as text on scrape."""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Iterable

from actors.queue.model import Stats
from supervisors import EventBus

__all__ = ["Histogram", "Metrics", "render_queue_stats"]

# Seconds: loopback requests take about a millisecond; jobs take up to minutes.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Lease start times kept to measure processing latency at the ack; an unacked job's entry
# is dropped when more than this many wait (the lease expired or the worker died).
_MAX_TRACKED_LEASES = 100_000


class Histogram:
    """A Prometheus histogram with fixed buckets (cumulative on render)."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            return
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        lines = []
        total = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            total += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {total}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {self.sum:.6f}")
        lines.append(f"{name}_count{suffix} {self.count}")
        return lines


def render_queue_stats(stats: Stats) -> list[str]:
    """The queue's gauges: jobs by status, the scheduled part of pending, the oldest wait.

    ``actors_jobs{status="pending"}`` counts every pending job (the four statuses sum to the
    queue's total); ``actors_jobs_scheduled`` is the part of it not available yet (delayed or
    backing off), so alert on ``pending - scheduled`` for a backlog that can run now. The age
    is the oldest available job's, since it became available (0 when none is).
    """
    lines = ["# HELP actors_jobs Jobs in the queue by status.", "# TYPE actors_jobs gauge"]
    for status in ("pending", "leased", "done", "failed"):
        lines.append(f'actors_jobs{{status="{status}"}} {getattr(stats, status)}')
    age = stats.oldest_pending_age_seconds
    return [
        *lines,
        "# HELP actors_jobs_scheduled Pending jobs not available yet (delayed, or waiting out "
        'a retry\'s backoff); part of actors_jobs{status="pending"}.',
        "# TYPE actors_jobs_scheduled gauge",
        f"actors_jobs_scheduled {stats.scheduled}",
        "# HELP actors_oldest_pending_age_seconds How long the oldest available pending job has "
        "waited since it became available.",
        "# TYPE actors_oldest_pending_age_seconds gauge",
        f"actors_oldest_pending_age_seconds {age if age is not None else 0:.6f}",
    ]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """What ``/metrics`` shows besides the queue's own counts, collected as requests pass.

    - request latency by route, and responses by route and status code;
    - lease latency (enqueue-or-retry time to lease) and processing latency (lease to ack)
      of jobs leased and acked over HTTP;
    - outcomes of acks over HTTP (``done``, ``failed``, ``retrying``, ``stale``);
    - actor restarts, counted from the supervision tree's `EventBus` (`count_restarts`).
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.lease_latency = Histogram(JOB_BUCKETS)
        self.processing_latency = Histogram(JOB_BUCKETS)
        self.outcomes: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self._leased_at: OrderedDict[int, float] = OrderedDict()

    def request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = Histogram(REQUEST_BUCKETS)
        histogram.observe(seconds)

    def leased(self, job_id: int, available_at: float, now: float) -> None:
        self.lease_latency.observe(now - available_at)
        self._leased_at[job_id] = now
        while len(self._leased_at) > _MAX_TRACKED_LEASES:
            self._leased_at.popitem(last=False)

    def acked(self, job_id: int, outcome: str, now: float) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        started = self._leased_at.pop(job_id, None)
        if started is not None and outcome != "stale":
            self.processing_latency.observe(now - started)

    @staticmethod
    def render_loop_lag(seconds: float) -> list[str]:
        """The loop watchdog's gauge: the largest lag since the previous scrape."""
        return [
            "# HELP actors_event_loop_lag_seconds How much later than asked the event loop woke "
            "its watchdog, at most, since the previous scrape (time nothing else ran on it).",
            "# TYPE actors_event_loop_lag_seconds gauge",
            f"actors_event_loop_lag_seconds {seconds:.6f}",
        ]

    async def count_restarts(self, bus: EventBus) -> None:
        """Count ``restarted`` events per child until cancelled (run it in a task)."""
        with bus.subscribe(max_buffer=1000) as events:
            async for event in events:
                if event.kind == "restarted":
                    self.restarts[event.child] = self.restarts.get(event.child, 0) + 1

    def render(self) -> list[str]:
        lines = [
            "# HELP actors_http_requests_total HTTP responses by route and status code.",
            "# TYPE actors_http_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(
                f'actors_http_requests_total{{route="{_escape(route)}",status="{status}"}} {count}'
            )
        lines += [
            "# HELP actors_http_request_seconds HTTP request latency by route.",
            "# TYPE actors_http_request_seconds histogram",
        ]
        for route, histogram in sorted(self.latency.items()):
            lines += histogram.render("actors_http_request_seconds", f'route="{_escape(route)}"')
        lines += [
            "# HELP actors_job_lease_latency_seconds Time from a job becoming visible to its "
            "lease, for jobs leased over HTTP.",
            "# TYPE actors_job_lease_latency_seconds histogram",
            *self.lease_latency.render("actors_job_lease_latency_seconds"),
            "# HELP actors_job_processing_seconds Time from lease to ack, for jobs leased and "
            "acked over HTTP.",
            "# TYPE actors_job_processing_seconds histogram",
            *self.processing_latency.render("actors_job_processing_seconds"),
            "# HELP actors_http_acks_total Outcomes of acks received over HTTP.",
            "# TYPE actors_http_acks_total counter",
        ]
        for outcome, count in sorted(self.outcomes.items()):
            lines.append(f'actors_http_acks_total{{outcome="{outcome}"}} {count}')
        lines += [
            "# HELP actors_actor_restarts_total Restarts of each supervised child.",
            "# TYPE actors_actor_restarts_total counter",
        ]
        for child, count in sorted(self.restarts.items()):
            lines.append(f'actors_actor_restarts_total{{child="{_escape(child)}"}} {count}')
        return lines
