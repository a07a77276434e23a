"""Prometheus metrics: counts kept in memory as requests pass, exposed through
``prometheus_client`` on a registry of the app's own (never the library's global one: several
apps may share a process), with the process metrics the library brings."""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actors.queue.model import Stats
from supervisors import ChildCounts, EventBus

__all__ = ["CONTENT_TYPE", "PIPELINE_OUTCOMES", "Histogram", "Metrics", "Scrape"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: loopback requests take about a millisecond; jobs take up to minutes.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Lease start times kept to measure processing latency at the ack; an unacked job's entry
# is dropped when more than this many wait (the lease expired or the worker died).
_MAX_TRACKED_LEASES = 100_000
PIPELINE_OUTCOMES = ("done", "failed", "retried", "released", "stale", "cancelled")


class Histogram:
    """Observations in fixed buckets (per bucket; cumulated when exposed)."""

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

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        pairs: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            total += count
            pairs.append((repr(float(bound)), total))
        pairs.append(("+Inf", self.count))
        return pairs


@dataclass(frozen=True, slots=True)
class Scrape:
    """What a scrape reads from the queue and the pipeline (asynchronously) before rendering.

    ``outcomes`` holds the pipeline's committed outcomes by name (`OutcomeCounts`);
    ``run_metrics`` the run metrics summed over runs; ``loop_lag`` the largest event loop lag
    since the previous scrape; ``children`` the supervision tree's top-level counts.
    """

    stats: Stats
    children: ChildCounts | None = None
    outcomes: Mapping[str, int] = field(default_factory=dict)
    run_metrics: Mapping[str, float] = field(default_factory=dict)
    loop_lag: float = 0.0


class Metrics:
    """What ``/metrics`` shows, and the per-app registry that renders it.

    Collected as requests pass:

    - request latency by route, and responses by route and status code;
    - lease latency (enqueue-or-retry time to lease) and processing latency (lease to ack)
      of jobs leased and acked over HTTP;
    - outcomes of acks over HTTP (``done``, ``failed``, ``retrying``, ``stale``,
      ``cancelled``: refused because the job was cancelled);
    - actor restarts, counted from the supervision tree's `EventBus` (`count_restarts`).

    Read at scrape time (`Scrape`): the queue's counts, the pipeline's outcomes, run metrics
    and the loop's lag. The registry also holds the library's process, platform and garbage
    collector metrics (``process_*`` exist on Linux only).
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.lease_latency = Histogram(JOB_BUCKETS)
        self.processing_latency = Histogram(JOB_BUCKETS)
        self.outcomes: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        #: Pulls over HTTP waiting now for a job to arrive (long polls).
        self.pulls_waiting = 0
        self._leased_at: OrderedDict[int, float] = OrderedDict()
        self._scrape: Scrape | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

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
        if started is not None and outcome not in ("stale", "cancelled"):
            self.processing_latency.observe(now - started)

    async def count_restarts(self, bus: EventBus) -> None:
        """Count ``restarted`` events per child until cancelled (run it in a task)."""
        with bus.subscribe(max_buffer=1000) as events:
            async for event in events:
                if event.kind == "restarted":
                    self.restarts[event.child] = self.restarts.get(event.child, 0) + 1

    def render(self, scrape: Scrape) -> bytes:
        """The exposition text of this registry, with ``scrape``'s figures.

        Rendering is synchronous: the scrape's figures are read (awaited) before, and no
        other task runs between setting them and `generate_latest`.
        """
        self._scrape = scrape
        try:
            return generate_latest(self.registry)
        finally:
            self._scrape = None

    def families(self) -> Iterator[Metric]:
        scrape = self._scrape
        if scrape is not None:
            yield from _scrape_families(scrape)
        requests = CounterMetricFamily(
            "actors_http_requests",
            "HTTP responses by route and status code.",
            labels=["route", "status"],
        )
        for (route, status), count in sorted(self.requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "actors_http_request_seconds", "HTTP request latency by route.", labels=["route"]
        )
        for route, histogram in sorted(self.latency.items()):
            latency.add_metric([route], histogram.cumulative(), histogram.sum)
        yield latency
        yield GaugeMetricFamily(
            "actors_http_pulls_waiting",
            "Pulls over HTTP waiting now for a job to arrive (waitSeconds, a long poll).",
            value=self.pulls_waiting,
        )
        yield _histogram(
            "actors_job_lease_latency_seconds",
            "Time from a job becoming visible to its lease, for jobs leased over HTTP.",
            self.lease_latency,
        )
        yield _histogram(
            "actors_job_processing_seconds",
            "Time from lease to ack, for jobs leased and acked over HTTP.",
            self.processing_latency,
        )
        acks = CounterMetricFamily(
            "actors_http_acks", "Outcomes of acks received over HTTP.", labels=["outcome"]
        )
        for outcome, count in sorted(self.outcomes.items()):
            acks.add_metric([outcome], count)
        yield acks
        restarts = CounterMetricFamily(
            "actors_actor_restarts", "Restarts of each supervised child.", labels=["child"]
        )
        for child, count in sorted(self.restarts.items()):
            restarts.add_metric([child], count)
        yield restarts


class _Collector(Collector):
    """Reads `Metrics` when the registry is collected (at each scrape)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], histogram.cumulative(), histogram.sum)
    return family


def _scrape_families(scrape: Scrape) -> Iterator[Metric]:
    """The queue's gauges, the pipeline's outcomes, run metrics and the loop's lag.

    ``actors_jobs{status="pending"}`` counts every pending job (the five statuses sum to the
    queue's total); ``actors_jobs_scheduled`` is the part of it not available yet (delayed or
    backing off), so alert on ``pending - scheduled`` for a backlog that can run now. The age
    is the oldest available job's, since it became available (0 when none is). What is
    paused is read with the counts: ``actors_queue_paused`` (0 or 1) and a series
    ``actors_tenant_paused{tenant}`` of 1 per paused tenant. The queue's
    counts are gauges (a done job can be purged); the pipeline's outcomes and the run metrics
    only grow, so they are counters.
    """
    stats = scrape.stats
    jobs = GaugeMetricFamily("actors_jobs", "Jobs in the queue by status.", labels=["status"])
    for status in ("pending", "leased", "done", "failed", "cancelled"):
        jobs.add_metric([status], getattr(stats, status))
    yield jobs
    yield GaugeMetricFamily(
        "actors_jobs_scheduled",
        "Pending jobs not available yet (delayed, or waiting out a retry's backoff); "
        'part of actors_jobs{status="pending"}.',
        value=stats.scheduled,
    )
    age = stats.oldest_pending_age_seconds
    yield GaugeMetricFamily(
        "actors_oldest_pending_age_seconds",
        "How long the oldest available pending job has waited since it became available.",
        value=age if age is not None else 0.0,
    )
    yield GaugeMetricFamily(
        "actors_queue_paused",
        "1 while the whole queue is paused (nothing new is leased; leased jobs finish), else 0.",
        value=1 if stats.paused else 0,
    )
    # A series per paused tenant, gone once it is resumed: alert on its presence.
    tenants = GaugeMetricFamily(
        "actors_tenant_paused",
        "1 for each tenant paused on its own (its jobs wait; leased ones finish).",
        labels=["tenant"],
    )
    for tenant in sorted(stats.paused_tenants):
        tenants.add_metric([tenant], 1)
    yield tenants
    outcomes = CounterMetricFamily(
        "actors_pipeline_outcomes",
        "Outcomes committed by this process's pipeline.",
        labels=["outcome"],
    )
    for outcome in PIPELINE_OUTCOMES:
        outcomes.add_metric([outcome], scrape.outcomes.get(outcome, 0))
    yield outcomes
    runs = CounterMetricFamily(
        "actors_run_metric",
        "Run metrics summed over runs (processor tokens, bytes, chunks...).",
        labels=["name"],
    )
    for name, value in sorted(scrape.run_metrics.items()):
        runs.add_metric([name], value)
    yield runs
    if scrape.children is not None:
        children = GaugeMetricFamily(
            "actors_tree_children",
            "The supervision tree's top-level children: configured (specs) and running "
            "(active); alert when active < specs.",
            labels=["state"],
        )
        children.add_metric(["specs"], scrape.children.specs)
        children.add_metric(["active"], scrape.children.active)
        yield children
    yield GaugeMetricFamily(
        "actors_event_loop_lag_seconds",
        "How much later than asked the event loop woke its watchdog, at most, since the "
        "previous scrape (time nothing else ran on it).",
        value=scrape.loop_lag,
    )
