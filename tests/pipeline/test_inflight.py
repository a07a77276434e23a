"""The in-flight table: slots, custody, and a job leased twice by one process."""

from __future__ import annotations

import pytest

from actors.pipeline import InFlight, LeasedJob


def job(job_id: int, token: str) -> LeasedJob:
    return LeasedJob(
        id=job_id,
        run_id="r",
        tenant_id="t",
        r2_key="k",
        lease_token=token,
        attempts=1,
        max_attempts=5,
    )


def test_a_job_leased_again_is_a_second_entry_and_settling_one_keeps_the_other() -> None:
    table = InFlight(capacity=4)
    stale, fresh = job(7, "old"), job(7, "new")
    table.add([stale])
    table.mark_lost(stale)  # its lease lapsed; the queue handed the job out again
    table.add([fresh])
    assert (len(table), table.free) == (2, 2)
    assert table.live_jobs() == [fresh]  # only the live lease is renewed
    table.hold(stale, "processor-0")
    table.hold(fresh, "fetcher-1")
    table.settle([stale])  # the stale copy's ack was refused
    assert fresh in table and stale not in table
    assert table.take_held("fetcher-1") == [(fresh, None)]


def test_custody_is_let_go_only_by_its_holder() -> None:
    table = InFlight(capacity=2)
    j = job(1, "a")
    table.add([j])
    table.hold(j, "fetcher-0")
    table.hold(j, "processor-0")  # the next stage took it before the fetcher let go
    table.let_go(j, "fetcher-0")
    assert table.take_held("processor-0") == [(j, None)]


def test_a_crash_is_remembered_for_the_successor() -> None:
    table = InFlight(capacity=2)
    j = job(1, "a")
    table.add([j])
    table.hold(j, "processor-1")
    table.crashed(j, "ZeroDivisionError()")
    assert table.take_held("processor-1") == [(j, "ZeroDivisionError()")]
    assert table.take_held("processor-1") == []


def test_more_jobs_than_slots_is_a_bug_that_fails_loudly() -> None:
    table = InFlight(capacity=1)
    with pytest.raises(AssertionError, match="over capacity"):
        table.add([job(1, "a"), job(2, "b")])
