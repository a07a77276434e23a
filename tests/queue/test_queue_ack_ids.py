"""Contract: the seed's ids-only ack settles only a live lease that the same principal took.

An ack by id carries no lease token, so it cannot tell a worker's lease from the one another
worker took after it expired; the lease's owner (the principal that pulled it) is the fence.
"""

from __future__ import annotations

import pytest

from actors.errors import InvalidArgument
from actors.queue import SQLiteQueue
from supervisors.clock import FakeClock

# The queue verbs' semantics, the same on both runtimes: asyncio only (see tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]

A = "token:aaaaaaaaaaaaaaaa"
B = "token:bbbbbbbbbbbbbbbb"


async def test_an_expired_lease_re_leased_to_another_principal_is_refused_to_the_first(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    job = await queue.enqueue("r", "t", "k")
    (first,) = await queue.pull(max=1, visibility_seconds=10, owner=A)
    assert first.lease_owner == A
    clock.advance(11)
    (again,) = await queue.pull(max=1, visibility_seconds=10, owner=B)
    assert (again.id, again.lease_owner) == (job.id, B)
    (refused,) = await queue.ack_ids([job.id], "done", owner=A)
    assert (refused.ok, refused.reason) == (False, "foreign_lease")
    assert refused.message and "another token leased it" in refused.message
    assert (await queue.get(job.id)).status == "leased"
    (settled,) = await queue.ack_ids([job.id], "done", owner=B)
    assert (settled.ok, settled.reason) == (True, "ok")
    assert settled.job is not None and settled.job.status == "done"
    (late,) = await queue.ack_ids([job.id], "done", owner=A)
    assert (late.ok, late.reason) == (False, "finished")
    (repeat,) = await queue.ack_ids([job.id], "done", owner=B)  # a retried request
    assert (repeat.ok, repeat.reason) == (True, "duplicate")


async def test_ids_only_acks_are_refused_per_item_with_their_reason(
    queue: SQLiteQueue, clock: FakeClock
) -> None:
    jobs = []
    for name in ("mine", "other", "stale", "pending"):
        jobs.append(await queue.enqueue("r", "t", name))
        clock.advance(1)  # leased in this order
    mine, other, stale, pending = jobs
    await queue.pull(max=1, visibility_seconds=100, owner=A)
    await queue.pull(max=1, visibility_seconds=100, owner=B)
    await queue.pull(max=1, visibility_seconds=5, owner=A)
    clock.advance(6)  # stale's lease runs out; nobody has reaped it yet
    ids = [mine.id, other.id, stale.id, pending.id, 10**9]
    results = await queue.ack_ids(ids, "failed", owner=A, error="bad")
    assert [(r.ok, r.reason) for r in results] == [
        (True, "ok"),
        (False, "foreign_lease"),
        (False, "expired"),
        (False, "not_leased"),
        (False, "not_found"),
    ]
    assert all(r.message for r in results[1:])
    assert results[2].message and "after its lease expired" in results[2].message
    failed = await queue.get(mine.id)
    assert (failed.status, failed.last_error, failed.lease_owner) == ("pending", "bad", None)


async def test_an_in_process_lease_has_no_owner_and_a_token_lease_is_not_an_http_principals(
    queue: SQLiteQueue,
) -> None:
    a, b = [await queue.enqueue("r", "t", str(i)) for i in range(2)]
    await queue.pull(max=1)
    await queue.pull(max=1, owner=A)
    results = await queue.ack_ids([a.id, b.id], "done", owner=None)
    assert [(r.ok, r.reason) for r in results] == [(True, "ok"), (False, "foreign_lease")]
    with pytest.raises(InvalidArgument, match="an ack's status must be 'done' or 'failed'"):
        await queue.ack_ids([b.id], "maybe", owner=A)  # type: ignore[arg-type]
