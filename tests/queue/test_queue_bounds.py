"""The queue's checks, the wire types and the configuration accept exactly the same bounds.

Each bound is defined once (`actors.bounds`); these tests hold the three readers of a bound to
the same edge: the largest (or smallest) value is accepted by each, one step past it is refused
by each, so a ``gt`` written where ``ge`` was meant shows up here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from actors import bounds
from actors import protocol as wire
from actors.config import HttpConfig, PipelineConfig, QueueConfig
from actors.errors import InvalidArgument
from actors.queue.base import (
    check_batch,
    check_delay,
    check_maintenance,
    check_new_job,
    check_open,
    check_page,
    check_pull,
    check_visibility,
)
from actors.queue.model import NewJob

ENQUEUE = {"runId": "r", "tenantId": "t", "r2Key": "t/r/a"}


def new_job(**fields: Any) -> NewJob:
    return NewJob(**{"run_id": "r", "tenant_id": "t", "r2_key": "t/r/a", **fields})


def accepts(check: Callable[[], object]) -> bool:
    try:
        check()
    except (InvalidArgument, msgspec.ValidationError):
        return False
    return True


def wire_accepts(body: dict[str, Any], type: type) -> bool:
    return accepts(lambda: msgspec.convert(body, type))


def config_accepts(type: type, **fields: Any) -> bool:
    return accepts(lambda: msgspec.convert(fields, type))


# (name, edge value, a value one step past it, the queue's check of a value, the wire's check)
EDGES: list[tuple[str, float, float, Callable[[Any], object], Callable[[Any], bool]]] = [
    (
        "priority (top)",
        bounds.MAX_PRIORITY,
        bounds.MAX_PRIORITY + 1,
        lambda v: check_new_job(new_job(priority=v), bounds.DEFAULT_MAX_PAYLOAD_BYTES),
        lambda v: wire_accepts({**ENQUEUE, "priority": v}, wire.EnqueueIn),
    ),
    (
        "priority (bottom)",
        -bounds.MAX_PRIORITY,
        -bounds.MAX_PRIORITY - 1,
        lambda v: check_new_job(new_job(priority=v), bounds.DEFAULT_MAX_PAYLOAD_BYTES),
        lambda v: wire_accepts({**ENQUEUE, "priority": v}, wire.EnqueueIn),
    ),
    (
        "delay_seconds",
        bounds.MAX_DELAY_SECONDS,
        bounds.MAX_DELAY_SECONDS + 1,
        lambda v: check_new_job(new_job(delay_seconds=v), bounds.DEFAULT_MAX_PAYLOAD_BYTES),
        lambda v: wire_accepts({**ENQUEUE, "delaySeconds": v}, wire.EnqueueIn),
    ),
    (
        "max_attempts",
        bounds.MAX_ATTEMPTS,
        bounds.MAX_ATTEMPTS + 1,
        lambda v: check_new_job(new_job(max_attempts=v), bounds.DEFAULT_MAX_PAYLOAD_BYTES),
        lambda v: wire_accepts({**ENQUEUE, "maxAttempts": v}, wire.EnqueueIn),
    ),
    (
        "timeout_seconds (top)",
        bounds.MAX_TIMEOUT_SECONDS,
        bounds.MAX_TIMEOUT_SECONDS + 1,
        lambda v: check_new_job(new_job(timeout_seconds=v), bounds.DEFAULT_MAX_PAYLOAD_BYTES),
        lambda v: wire_accepts({**ENQUEUE, "timeoutSeconds": v}, wire.EnqueueIn),
    ),
    (
        "timeout_seconds (bottom)",
        bounds.MIN_TIMEOUT_SECONDS,
        bounds.MIN_TIMEOUT_SECONDS - 0.5,
        lambda v: check_new_job(new_job(timeout_seconds=v), bounds.DEFAULT_MAX_PAYLOAD_BYTES),
        lambda v: wire_accepts({**ENQUEUE, "timeoutSeconds": v}, wire.EnqueueIn),
    ),
    (
        "an id's length",
        bounds.MAX_ID_CHARS,
        bounds.MAX_ID_CHARS + 1,
        lambda v: check_new_job(new_job(run_id="r" * v), bounds.DEFAULT_MAX_PAYLOAD_BYTES),
        lambda v: wire_accepts({**ENQUEUE, "runId": "r" * v}, wire.EnqueueIn),
    ),
    (
        "pull max",
        bounds.MAX_PULL,
        bounds.MAX_PULL + 1,
        lambda v: check_pull(v, 60, None, None),
        lambda v: wire_accepts({"max": v}, wire.PullIn),
    ),
    (
        "visibility_seconds (top)",
        bounds.MAX_VISIBILITY_SECONDS,
        bounds.MAX_VISIBILITY_SECONDS + 1,
        check_visibility,
        lambda v: wire_accepts({"visibilitySeconds": v}, wire.PullIn),
    ),
    (
        "visibility_seconds (bottom)",
        0.001,
        0,
        check_visibility,
        lambda v: wire_accepts({"leases": [], "visibilitySeconds": v}, wire.RenewIn),
    ),
    (
        "release delay_seconds",
        bounds.MAX_DELAY_SECONDS,
        bounds.MAX_DELAY_SECONDS + 1,
        check_delay,
        lambda v: wire_accepts({"leases": [], "delaySeconds": v}, wire.ReleaseIn),
    ),
    (
        "a batch's length",
        bounds.MAX_BATCH,
        bounds.MAX_BATCH + 1,
        lambda v: check_batch("leases", [None] * v),
        lambda v: wire_accepts({"leases": [{"id": 1, "leaseToken": "x"}] * v}, wire.StartIn),
    ),
]


@pytest.mark.parametrize(
    ("edge", "past", "queue_check", "wire_check"),
    [edge[1:] for edge in EDGES],
    ids=[edge[0] for edge in EDGES],
)
def test_the_queue_and_the_wire_accept_the_same_edge_and_refuse_one_step_past_it(
    edge: float,
    past: float,
    queue_check: Callable[[Any], object],
    wire_check: Callable[[Any], bool],
) -> None:
    assert accepts(lambda: queue_check(edge))
    assert wire_check(edge)
    assert not accepts(lambda: queue_check(past))
    assert not wire_check(past)


def test_a_page_holds_one_to_max_page_items() -> None:
    assert accepts(lambda: check_page(bounds.MAX_PAGE))
    assert not accepts(lambda: check_page(bounds.MAX_PAGE + 1))
    assert not accepts(lambda: check_page(0))


def test_the_config_bounds_the_queues_settings_as_the_queue_does() -> None:
    # [queue].visibility_seconds is a lease length, [queue].batch_size a pull's max,
    # [pipeline].ack_batch_size one ack_many call, [pipeline].job_timeout_seconds a job's limit.
    for field, edge, past in [
        ("visibility_seconds", bounds.MAX_VISIBILITY_SECONDS, bounds.MAX_VISIBILITY_SECONDS + 1),
        ("batch_size", bounds.MAX_PULL, bounds.MAX_PULL + 1),
        ("max_attempts", bounds.MAX_ATTEMPTS, bounds.MAX_ATTEMPTS + 1),
        ("retry_cap_seconds", bounds.MAX_DELAY_SECONDS, bounds.MAX_DELAY_SECONDS + 1),
        ("retention_seconds", bounds.MAX_RETENTION_SECONDS, bounds.MAX_RETENTION_SECONDS + 1),
        (
            "purge_interval_seconds",
            bounds.MAX_MAINTENANCE_INTERVAL_SECONDS,
            bounds.MAX_MAINTENANCE_INTERVAL_SECONDS + 1,
        ),
    ]:
        assert config_accepts(QueueConfig, **{field: edge}), field
        assert not config_accepts(QueueConfig, **{field: past}), field
    assert accepts(lambda: check_open(bounds.MAX_ATTEMPTS, bounds.DEFAULT_MAX_PAYLOAD_BYTES))
    assert accepts(
        lambda: check_maintenance("purge", bounds.MAX_MAINTENANCE_INTERVAL_SECONDS, None)
    )
    assert not accepts(
        lambda: check_maintenance("purge", bounds.MAX_MAINTENANCE_INTERVAL_SECONDS + 1, None)
    )
    assert config_accepts(PipelineConfig, ack_batch_size=bounds.MAX_BATCH)
    assert not config_accepts(PipelineConfig, ack_batch_size=bounds.MAX_BATCH + 1)
    assert config_accepts(PipelineConfig, job_timeout_seconds=bounds.MAX_TIMEOUT_SECONDS)
    assert not config_accepts(PipelineConfig, job_timeout_seconds=bounds.MIN_TIMEOUT_SECONDS - 0.5)
    assert config_accepts(HttpConfig, upload_url_seconds=bounds.MAX_UPLOAD_URL_SECONDS)
    assert not config_accepts(HttpConfig, upload_url_seconds=bounds.MAX_UPLOAD_URL_SECONDS + 1)


def test_purging_accepts_the_retention_the_config_accepts() -> None:
    assert wire_accepts({"olderThanSeconds": bounds.MAX_RETENTION_SECONDS}, wire.PurgeIn)
    assert not wire_accepts({"olderThanSeconds": bounds.MAX_RETENTION_SECONDS + 1}, wire.PurgeIn)
