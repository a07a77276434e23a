"""The `Scheduler` child on a fake clock: configured schedules written into the queue, each
tick fired once by whichever of several schedulers sharing the queue gets to it first."""

from __future__ import annotations

import anyio
import pytest
from conftest import OpenQueue

from actors.pipeline import Scheduler
from actors.queue import NewSchedule
from supervisors.clock import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio", "trio")]

EVERY_10 = NewSchedule(name="ten", tenant_id="t", r2_key="t/a", interval_seconds=10)


async def test_schedulers_sharing_a_queue_fire_each_tick_once_and_skip_a_refused_schedule(
    open_queue: OpenQueue, clock: FakeClock
) -> None:
    # One configured schedule the queue refuses (no such time zone here): it is logged and
    # left out, and the good one fires all the same.
    bad = NewSchedule(name="bad", tenant_id="t", r2_key="t/b", cron="* * * * *", timezone="X/Y")
    async with open_queue() as a, open_queue() as b, open_queue() as c:
        schedulers = [
            Scheduler(queue=q, schedules=[EVERY_10, bad], clock=clock, poll_seconds=3)
            for q in (a, b, c)
        ]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for scheduler in schedulers:
                    await tg.start(scheduler.run)
                for _ in range(20):  # 60 s, in steps shorter than the poll and the interval
                    await clock.wait_for_sleepers(3)
                    clock.advance(3)
                await clock.wait_for_sleepers(3)
                tg.cancel_scope.cancel()
        fired = [key for scheduler in schedulers for key in scheduler.fired]
        assert len(fired) == len(set(fired)) == 6  # ticks at +10 .. +60 (the start is +0)
        assert [s.name for s in await a.list_schedules()] == ["ten"]
        assert len((await a.list(tenant_id="t")).items) == 6
