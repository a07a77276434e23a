"""Reading the dumps, without a queue: the KV key formats and value encodings, D1's times."""

from __future__ import annotations

import base64
import json

import pytest
from cloudflare_dumps import T0, iso, kv_task

from actors import importers


def kv(*entries: dict[str, object]) -> importers.Source:
    return importers.read_dump("kv", json.dumps(list(entries)).encode())


def test_a_task_in_both_key_formats_comes_from_the_new_one() -> None:
    old = kv_task("t1", 0, "pending", content="old copy")
    new = kv_task("t1", 0, "claimed", content="new copy")
    source = kv(
        {"key": "orchestrator:queue:t1", "value": json.dumps(old)},
        {"key": "queue:task:t1", "value": json.dumps(new)},
        {"key": "orchestrator:pending", "value": json.dumps(["t1"])},
        {"key": "queue:lease:t1", "value": json.dumps({"workerId": "w"})},
    )
    (job,) = source.jobs
    assert (job.origin, job.status, job.payload["content"]) == ("kv:t1", "pending", "new copy")
    assert source.dropped_leases == 1 and [i.error for i in source.items] == [None]


def test_values_may_be_base64_or_already_json_and_results_date_themselves() -> None:
    task = kv_task("b64", 1, "completed", metadata={"tenantId": "acme", "runId": "r9"})
    source = kv(
        {"key": "queue:task:b64", "value": base64.b64encode(json.dumps(task).encode()).decode(),
         "base64": True},
        {"key": "orchestrator:result:b64", "value": {"success": True, "output": "ok"}},
        {"key": "orchestrator:result:gone", "value": "plain text result", "expiration": T0 + 3600},
        {"key": "queue:task:bad64", "value": "%%%", "base64": True},
    )  # fmt: skip
    jobs = {job.origin: job for job in source.jobs}
    done = jobs["kv:b64"]
    assert (done.tenant_id, done.run_id, done.r2_key) == ("acme", "r9", "acme/kv/b64")
    assert (done.status, done.result) == ("done", {"success": True, "output": "ok"})
    assert done.created_at == pytest.approx(T0 + 1.123)
    gone = jobs["kv:gone"]
    assert (gone.status, gone.result, gone.created_at) == ("done", "plain text result", T0)
    (bad,) = [i for i in source.items if i.error]
    assert bad.origin == "kv:bad64" and "not base64" in (bad.error or "")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (T0, T0),
        (T0 * 1000 + 250, T0 + 0.25),  # JavaScript's Date.now()
        (str(T0), T0),
        (iso(T0), T0),  # toISOString()
        ("2024-04-24 23:06:40", T0),  # SQLite's CURRENT_TIMESTAMP: UTC
    ],
)
def test_d1_times_in_seconds_milliseconds_digits_or_iso_are_epoch_seconds(
    value: object, seconds: float
) -> None:
    row = {"id": "j", "run_id": "r", "tenant_id": "t", "r2_key": "t/k", "status": "done",
           "attempts": 1, "created_at": value, "updated_at": value}  # fmt: skip
    (job,) = importers.read_dump("d1", json.dumps([row]).encode()).jobs
    assert job.created_at == pytest.approx(seconds)
    assert job.finished_at is None  # the queue sets it from updated_at when written
