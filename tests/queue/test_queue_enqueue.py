"""Contract: enqueue and enqueue_many."""

from __future__ import annotations

import pytest

from actors.errors import InvalidArgument, OutOfRange, PayloadTooLarge
from actors.queue import MAX_DELAY_SECONDS, NewJob, SQLiteQueue
from supervisors.clock import FakeClock

# The queue verbs' semantics, the same on both runtimes: asyncio only (see tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]


async def test_enqueue_returns_a_pending_job_with_every_field(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    job = await queue.enqueue("run-1", "tenant-1", "docs/a.pdf", payload={"lang": "en"})
    assert job.id > 0
    assert (job.run_id, job.tenant_id, job.r2_key) == ("run-1", "tenant-1", "docs/a.pdf")
    assert job.payload == {"lang": "en"}
    assert job.status == "pending"
    assert (job.attempts, job.max_attempts, job.priority) == (0, 5, 0)
    assert job.available_at == job.created_at == job.updated_at == clock.time()
    assert job.lease_token is job.lease_expires_at is job.finished_at is None
    assert await queue.get(job.id) == job


async def test_the_same_idempotency_key_within_a_tenant_returns_the_existing_job(
    queue: SQLiteQueue,
) -> None:
    first = await queue.enqueue("run-1", "tenant-1", "a", idempotency_key="k")
    again = await queue.enqueue("run-2", "tenant-1", "b", idempotency_key="k")
    assert again == first
    assert (await queue.stats()).total == 1


async def test_the_same_idempotency_key_in_another_tenant_is_another_job(
    queue: SQLiteQueue,
) -> None:
    a = await queue.enqueue("run-1", "tenant-1", "a", idempotency_key="k")
    b = await queue.enqueue("run-2", "tenant-2", "a", idempotency_key="k")
    assert a.id != b.id


async def test_a_delayed_job_is_invisible_until_its_delay_passes(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    await queue.enqueue("r", "t", "k", delay_seconds=30)
    assert await queue.pull() == []
    clock.advance(30)
    assert len(await queue.pull()) == 1


async def test_enqueue_many_commits_every_job_in_order(queue: SQLiteQueue) -> None:
    jobs = await queue.enqueue_many(
        [NewJob(run_id="r", tenant_id="t", r2_key=f"k{i}", max_attempts=2) for i in range(5)]
    )
    assert [j.r2_key for j in jobs] == [f"k{i}" for i in range(5)]
    assert all(j.max_attempts == 2 for j in jobs)
    assert (await queue.stats()).pending == 5
    assert await queue.enqueue_many([]) == []


async def test_enqueue_many_is_all_or_nothing(queue: SQLiteQueue) -> None:
    await queue.enqueue("run-1", "tenant-1", "a")
    batch = [
        NewJob(run_id="run-2", tenant_id="tenant-2", r2_key="b"),
        NewJob(run_id="run-1", tenant_id="tenant-2", r2_key="c"),  # run-1 belongs to tenant-1
    ]
    with pytest.raises(InvalidArgument, match="belongs to tenant 'tenant-1'"):
        await queue.enqueue_many(batch)
    assert (await queue.stats()).total == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"delay_seconds": -1}, OutOfRange, "delay_seconds must be between 0 and 86400"),
        ({"delay_seconds": MAX_DELAY_SECONDS + 1}, OutOfRange, "delay_seconds"),
        ({"priority": 10**7}, OutOfRange, "priority"),
        ({"max_attempts": 0}, OutOfRange, "max_attempts must be between 1 and 1000"),
        ({"idempotency_key": ""}, InvalidArgument, "idempotency_key must be a non-empty string"),
        ({"payload": {"x": object()}}, InvalidArgument, "payload must be JSON-serialisable"),
        ({"payload": "x" * 300_000}, PayloadTooLarge, "over the limit of 262144"),
    ],
)
async def test_enqueue_refuses_bad_arguments_with_a_specific_error(
    queue: SQLiteQueue, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        await queue.enqueue("r", "t", "k", **kwargs)  # type: ignore[arg-type]
    assert (await queue.stats()).total == 0


async def test_enqueue_refuses_an_empty_or_overlong_key(queue: SQLiteQueue) -> None:
    with pytest.raises(InvalidArgument, match="r2_key must be a non-empty string"):
        await queue.enqueue("r", "t", "")
    with pytest.raises(OutOfRange, match="over the limit of 1024"):
        await queue.enqueue("r", "t", "k" * 1025)
