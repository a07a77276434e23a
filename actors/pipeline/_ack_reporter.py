"""The ack reporter: the pipeline's sink and the only writer of job outcomes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from actors.errors import InvalidArgument
from actors.log import get_logger
from actors.pipeline._inflight import InFlight, stop_scope
from actors.pipeline.messages import AckInbox, Failed, Processed, Release, RunEvent, RunEventKind
from actors.queue import Ack, AckResult
from actors.queue.base import Queue
from supervisors import Clock, Context

__all__ = ["AckReporter", "AckStats"]

log = get_logger("actors.ack_reporter")


class AckStats:
    """Counters of what the ack reporter committed (for metrics and tests)."""

    def __init__(self) -> None:
        self.done = 0
        self.failed = 0
        self.retried = 0
        self.released = 0
        self.stale = 0  # refused: the lease had been lost
        self.cancelled = 0  # refused: the job was cancelled, and ended so
        self.batches = 0


class AckReporter:
    """Commits outcomes in batches: one transaction per batch, fenced by each job's lease token.

    A batch closes when it holds ``batch_size`` outcomes or ``window_seconds`` after its first
    one, whichever comes first. Results are stored in the ack's transaction, and the run's
    aggregate numbers with them, so a job is never done without its result. After the commit
    each job's slot is given back and its run is told (`RunEvent`).

    A job cancelled while in flight has its outcome refused as ``cancelled`` (whatever it was:
    nothing cancelled is ever marked done); the refused call ends it cancelled, and it is
    counted and logged ``job.cancelled``.

    Error handling: a stale lease token refuses that job's ack only (logged ``ack.stale`` and
    counted; another worker owns the job now); the batch goes on. A queue error (disk full...)
    crashes the reporter: the outcomes of the batch were not committed, and its restarted
    successor releases those jobs so that they run again. Commits are shielded from
    cancellation, so a shutdown never abandons a batch half-way.
    """

    name = "ack_reporter"

    def __init__(
        self,
        *,
        queue: Queue,
        inbox: MemoryObjectReceiveStream[AckInbox],
        inflight: InFlight,
        clock: Clock,
        batch_size: int = 100,
        window_seconds: float = 0.005,
        on_committed: Callable[[list[RunEvent]], Awaitable[None]] | None = None,
        stats: AckStats | None = None,
        ctx: Context | None = None,
    ) -> None:
        self._ctx = ctx
        self._queue = queue
        self._inbox = inbox
        self._inflight = inflight
        self._clock = clock
        self._batch_size = batch_size
        self._window = window_seconds
        self._on_committed = on_committed
        self.stats = stats if stats is not None else AckStats()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Outcomes a crashed predecessor had taken but not committed are gone: give the leases
        # back so that the jobs run again (processing is at-least-once; the queue's ack is once).
        lost = [
            Release(job=job, reason="ack reporter restarted before committing its outcome")
            for job, _ in self._inflight.take_held(self.name)
        ]
        task_status.started()
        if lost:
            await self._commit(lost)
        batch: list[AckInbox] = []
        with stop_scope(self._ctx):
            async for first in self._inbox:
                batch = [first]
                self._inflight.hold(first.job, self.name)
                self._take_ready(batch)
                if len(batch) < self._batch_size and self._window > 0:
                    with anyio.move_on_after(self._window):
                        # Every job in flight is in the batch: nothing more can come, commit.
                        while len(batch) < min(self._batch_size, len(self._inflight)):
                            message = await self._inbox.receive()
                            self._inflight.hold(message.job, self.name)
                            batch.append(message)
                            self._take_ready(batch)
                await self._commit(batch)
                batch = []
        # Asked to stop: commit what was collected and whatever else is waiting, so that no
        # finished job is processed again after a graceful shutdown.
        self._take_ready(batch)
        while batch:
            await self._commit(batch)
            batch = []
            self._take_ready(batch)

    def _cancelled(
        self, job_id: int, run_id: str, events: dict[tuple[str, RunEventKind], list[int]]
    ) -> None:
        # The queue refused the outcome: the job was cancelled, and the call ended it so.
        self.stats.cancelled += 1
        events[(run_id, "cancelled")].append(job_id)
        log.info("job.cancelled", job_id=job_id, run_id=run_id)

    def _take_ready(self, batch: list[AckInbox]) -> None:
        while len(batch) < self._batch_size:
            try:
                message = self._inbox.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return
            self._inflight.hold(message.job, self.name)
            batch.append(message)

    async def _ack_one_by_one(self, acks: list[Ack], refused: dict[int, str]) -> list[AckResult]:
        """Ack each outcome alone; fail permanently, with the queue's reason, any it refuses."""
        results: list[AckResult] = []
        for ack in acks:
            try:
                (result,) = await self._queue.ack_many([ack])
            except InvalidArgument as exc:
                refused[ack.job_id] = f"the job's outcome could not be stored: {exc}"
                (result,) = await self._queue.ack_many(
                    [
                        Ack(
                            job_id=ack.job_id,
                            lease_token=ack.lease_token,
                            status="failed",
                            error=refused[ack.job_id],
                            permanent=True,
                        )
                    ]
                )
            results.append(result)
        return results

    async def _commit(self, batch: Sequence[AckInbox]) -> None:
        acks: list[Ack] = []
        releases: list[Release] = []
        for message in batch:
            match message:
                case Processed(job=job, result=result, metrics=metrics):
                    acks.append(
                        Ack(
                            job_id=job.id,
                            lease_token=job.lease_token,
                            status="done",
                            result=result,
                            run_metrics=metrics or None,
                        )
                    )
                case Failed(job=job, error=reason, permanent=permanent):
                    acks.append(
                        Ack(
                            job_id=job.id,
                            lease_token=job.lease_token,
                            status="failed",
                            error=reason,
                            permanent=permanent,
                        )
                    )
                case Release():
                    releases.append(message)
        refused: dict[int, str] = {}
        with anyio.CancelScope(shield=True):
            try:
                ack_results = await self._queue.ack_many(acks) if acks else []
            except InvalidArgument:
                # One outcome the queue will not store (a result over its size limit, not
                # JSON...) must not sink the batch, nor crash this actor into a loop that
                # redoes every job of it: find it, and fail that job for good instead.
                ack_results = await self._ack_one_by_one(acks, refused)
            release_results = (
                await self._queue.release_many([(r.job.id, r.job.lease_token) for r in releases])
                if releases
                else []
            )
        self.stats.batches += 1
        self._inflight.settle(message.job for message in batch)
        now = self._clock.time()
        events: dict[tuple[str, RunEventKind], list[int]] = defaultdict(list)
        errors: dict[tuple[str, str], str | None] = {}
        acked = [m for m in batch if not isinstance(m, Release)]
        for message, result in zip(acked, ack_results, strict=True):
            job = message.job
            if result.ok and (result.job is None or result.job.status == "done"):
                # The common case, kept lean: no bound logger, no lookups per job.
                self.stats.done += 1
                events[(job.run_id, "done")].append(job.id)
                # One line per job: counts go to the summary.
                log.debug("job.done", job_id=job.id, run_id=job.run_id, attempts=job.attempts)
                continue
            bound = log.bind(job_id=job.id, run_id=job.run_id, attempts=job.attempts)
            if result.reason == "cancelled":
                self._cancelled(job.id, job.run_id, events)
                continue
            if not result.ok:
                self.stats.stale += 1
                bound.warning("ack.stale", reason=result.reason, error=result.message)
                continue
            status = result.job.status if result.job is not None else "done"
            error = refused.get(job.id) or getattr(message, "error", None)
            stage = getattr(message, "stage", "ack")
            kind: RunEventKind
            if status == "failed":
                self.stats.failed += 1
                kind = "failed"
                permanent = job.id in refused or getattr(message, "permanent", False)
                bound.warning("job.failed", error=error, stage=stage, permanent=permanent)
            else:
                self.stats.retried += 1
                kind = "retrying"
                bound.info("job.retrying", error=error, stage=stage)
            events[(job.run_id, kind)].append(job.id)
            errors[(job.run_id, kind)] = error
        for message, result in zip(releases, release_results, strict=True):
            if result.reason == "cancelled":
                self._cancelled(message.job.id, message.job.run_id, events)
            elif result.ok:
                self.stats.released += 1
                events[(message.job.run_id, "released")].append(message.job.id)
                log.info(
                    "job.released",
                    job_id=message.job.id,
                    run_id=message.job.run_id,
                    reason=message.reason,
                )
        if events and self._on_committed is not None:
            await self._on_committed(
                [
                    RunEvent(
                        run_id=run_id,
                        kind=kind,
                        job_ids=tuple(ids),
                        at=now,
                        error=errors.get((run_id, kind)),
                    )
                    for (run_id, kind), ids in events.items()
                ]
            )
