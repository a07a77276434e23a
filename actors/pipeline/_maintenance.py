"""Maintenance: the queue's scheduled work (reap, purge), each round done once across processes."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from actors.config import QueueConfig
from actors.errors import QueueError, is_fatal
from actors.log import get_logger
from actors.pipeline._inflight import stop_scope
from actors.queue.model import MaintenanceClaim
from supervisors import Clock, Context

__all__ = ["MaintainedQueue", "Maintenance", "MaintenanceTask", "queue_tasks"]

log = get_logger("actors.maintenance")


class MaintainedQueue(Protocol):
    """What maintenance needs of a queue that this process opened itself (SQLite, PostgreSQL)."""

    async def claim_maintenance(
        self, task: str, interval_seconds: float, owner: str | None = None
    ) -> MaintenanceClaim: ...

    async def reap(self) -> int: ...

    async def purge(self, older_than_seconds: float) -> int: ...


@dataclass(frozen=True)
class MaintenanceTask:
    """One kind of scheduled work: its name (its row in the queue's `maintenance` table), how
    often a round is due, and the round itself, which returns how many rows it changed."""

    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[int]]


def queue_tasks(queue: MaintainedQueue, settings: QueueConfig) -> list[MaintenanceTask]:
    """The queue's own maintenance: reap expired leases, purge finished jobs past retention."""
    tasks = [MaintenanceTask("reap", settings.reap_interval_seconds, queue.reap)]
    retention = settings.retention_seconds
    if retention > 0:  # 0 keeps finished jobs forever

        async def purge() -> int:
            return await queue.purge(older_than_seconds=retention)

        tasks.append(MaintenanceTask("purge", settings.purge_interval_seconds, purge))
    return tasks


class Maintenance:
    """Runs each task's due rounds in this process, whether or not it leases jobs.

    Every process that opens the queue itself (SQLite or PostgreSQL) runs one; before a round
    it claims the round in the queue (`claim_maintenance`: one conditional UPDATE of the task's
    row that moves its next due time), so of all the processes sharing a queue exactly one does
    each round, and the others skip it. It then sleeps until the earliest next due time, at
    most one of its own intervals (so that if the claimer dies, another takes over a round
    later). A process with ``backend = "http"`` runs none: the server it talks to does.

    Error handling: a queue error while claiming or doing a round is logged and that task is
    tried again an interval later; anything else crashes the actor, which its supervisor
    restarts. A round cut short (a crash, a shutdown) is simply done by the next round: reap
    and purge are idempotent, and a queue call already handed to the database completes.
    """

    def __init__(
        self,
        *,
        queue: MaintainedQueue,
        tasks: Sequence[MaintenanceTask],
        clock: Clock,
        owner: str,
        ctx: Context | None = None,
    ) -> None:
        self._queue = queue
        self._tasks = tuple(tasks)
        self._clock = clock
        self._owner = owner
        self._ctx = ctx
        #: Rounds this object claimed and did: (task, round), in order (for tests and operators).
        self.rounds: list[tuple[str, int]] = []

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with stop_scope(self._ctx):
            while True:
                due = min([await self._round(task) for task in self._tasks], default=math.inf)
                wait = due - self._clock.time()
                if wait > 0:
                    await self._clock.sleep(wait)

    async def _round(self, task: MaintenanceTask) -> float:
        """Do ``task``'s round if this process wins it; return when the task is next due."""
        # Never sleep longer than one interval: the claimer may have died.
        latest = self._clock.time() + task.interval_seconds
        try:
            claim = await self._queue.claim_maintenance(
                task.name, task.interval_seconds, owner=self._owner
            )
            if not claim.claimed:
                return min(claim.due_at, latest)
            changed = await task.run()
        except QueueError as exc:
            if is_fatal(exc):
                raise  # a full disk: the system stops (`PipelineTree`), nothing to retry
            log.warning("maintenance.failed", task=task.name, error=str(exc))
            return latest
        self.rounds.append((task.name, claim.round))
        # Rounds that change nothing are the common case: not worth a line each at info.
        (log.info if changed else log.debug)(
            "maintenance.round", task=task.name, round=claim.round, changed=changed
        )
        return min(claim.due_at, latest)
