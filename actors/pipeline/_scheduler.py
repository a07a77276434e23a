"""The scheduler: writes ``[[schedules]]`` into the queue, then fires due ticks as they fall."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from actors import tenancy
from actors.config import Config
from actors.errors import ActorsError, ConfigError, InvalidArgument, QueueError
from actors.log import get_logger
from actors.pipeline._inflight import stop_scope
from actors.queue.model import NewSchedule, Schedule, ScheduleFiring
from supervisors import Clock, Context

__all__ = ["ScheduledQueue", "Scheduler", "schedules_from_config"]

log = get_logger("actors.scheduler")


class ScheduledQueue(Protocol):
    """What the scheduler needs of a queue that this process opened itself."""

    async def create_schedule(self, schedule: NewSchedule) -> Schedule: ...

    async def fire_schedules(self, limit: int = 100) -> ScheduleFiring: ...


def schedules_from_config(config: Config) -> list[NewSchedule]:
    """The ``[[schedules]]`` of ``config``, each checked against the tenancy rule.

    Raises `ConfigError` naming the schedule whose tenant id cannot prefix keys or whose key
    lies outside ``"{tenant_id}/"`` (its jobs would fail for good at the fetcher).
    """
    out: list[NewSchedule] = []
    for i, entry in enumerate(config.schedules):
        try:
            tenancy.check_tenant_id(entry.tenant_id)
            tenancy.check_key(entry.tenant_id, entry.r2_key)
        except ActorsError as exc:
            raise ConfigError(
                f"{config.source or 'config'}: [[schedules]] #{i + 1} ({entry.name!r}): {exc}"
            ) from None
        out.append(
            NewSchedule(
                name=entry.name,
                tenant_id=entry.tenant_id,
                r2_key=entry.r2_key,
                cron=entry.cron,
                interval_seconds=entry.interval_seconds,
                timezone=entry.timezone,
                payload=entry.payload,
                priority=entry.priority,
                missed=entry.missed,
                grace_seconds=entry.grace_seconds,
            )
        )
    return out


class Scheduler:
    """Enqueues the jobs of due schedule ticks in this process, whether or not it leases jobs.

    Every process that opens the queue itself (SQLite or PostgreSQL) runs one, beside
    `Maintenance`. It first writes the configured schedules into the queue (a replacement with
    the same timing keeps its next tick, so restarts neither repeat nor lose one), then calls
    `fire_schedules` whenever the earliest schedule is due, and at least every
    ``poll_seconds`` (a schedule created elsewhere may be due sooner). `fire_schedules` claims
    each tick in the transaction that enqueues its job, so of all the processes sharing the
    queue exactly one enqueues it, however many are up; while none is, the ticks wait in the
    table and the first process back fires them (or skips those missed, as each schedule says).

    Error handling: a queue error is logged and the round tried again ``poll_seconds`` later
    (a configured schedule that could not be written is tried again first; one the queue
    refuses is logged and left out, the others fire); anything else crashes the actor, which
    its supervisor restarts. A round cut short enqueued everything it
    claimed or nothing: its transaction commits whole.
    """

    def __init__(
        self,
        *,
        queue: ScheduledQueue,
        schedules: Sequence[NewSchedule],
        clock: Clock,
        poll_seconds: float,
        ctx: Context | None = None,
    ) -> None:
        self._queue = queue
        self._schedules = tuple(schedules)
        self._clock = clock
        self._poll = poll_seconds
        self._ctx = ctx
        #: Jobs this object enqueued, by the tick's idempotency key (for tests and operators).
        self.fired: list[str] = []

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with stop_scope(self._ctx):
            unwritten = list(self._schedules)
            while True:
                unwritten = await self._write(unwritten)
                wait = self._poll
                started = self._clock.time()
                try:
                    firing = await self._queue.fire_schedules()
                except QueueError as exc:
                    log.warning("schedule.failed", error=str(exc))
                else:
                    for job in firing.jobs:
                        self.fired.append(job.idempotency_key or "")
                        log.info(
                            "schedule.fired",
                            job_id=job.id,
                            run_id=job.run_id,
                            tenant_id=job.tenant_id,
                            key=job.idempotency_key,
                        )
                    due = firing.next_due_at
                    if due is not None and not (due <= started and not firing.jobs):
                        wait = min(wait, due - self._clock.time())
                    # Else due when this round began and not fired here: another process holds
                    # it (and fires it), or it cannot be used on this host (logged). Poll.
                if wait > 0:
                    await self._clock.sleep(wait)

    async def _write(self, schedules: list[NewSchedule]) -> list[NewSchedule]:
        """Write the configured schedules into the queue; return those to try again."""
        again: list[NewSchedule] = []
        for schedule in schedules:
            try:
                await self._queue.create_schedule(schedule)
            except InvalidArgument as exc:  # e.g. the tenant has too many: retrying cannot help
                log.error("schedule.refused", name=schedule.name, error=str(exc))
            except QueueError as exc:
                log.warning("schedule.write_failed", name=schedule.name, error=str(exc))
                again.append(schedule)
        return again
