"""The lease manager: the pipeline's source; leases jobs for free slots, keeps leases alive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from actors.config import QueueConfig
from actors.errors import QueueError, is_fatal
from actors.log import get_logger
from actors.pipeline._inflight import InFlight, stop_scope
from actors.pipeline.messages import JobLeased, LeasedJob
from actors.queue.base import Queue
from actors.queue.model import Job
from supervisors import Clock, Context

__all__ = ["LeaseManager", "leased_job"]

log = get_logger("actors.lease_manager")


def leased_job(job: Job) -> LeasedJob:
    """The plain-data view of a leased queue ``Job`` (it has a token) that stages pass around."""
    assert job.lease_token is not None, f"job {job.id} is not leased"
    return LeasedJob(
        id=job.id,
        run_id=job.run_id,
        tenant_id=job.tenant_id,
        r2_key=job.r2_key,
        lease_token=job.lease_token,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        payload=job.payload,
        cross_tenant_key=job.cross_tenant_key,
        timeout_seconds=job.timeout_seconds,
    )


class LeaseManager:
    """Leases at most as many jobs as there are free slots and renews them.

    It wakes at once when this process enqueues a job (``queue.on_enqueue``) and polls every
    ``poll_interval_seconds`` otherwise, for jobs enqueued by other processes. With
    ``long_poll_seconds`` (a remote queue, ``[queue] pull_wait_seconds``) an empty queue is
    waited on by the pull itself instead: the server answers it as soon as a job is enqueued
    anywhere. Such a pull is not shielded (it may wait for seconds): when the process stops or
    drains it is cancelled, and the server gives back anything it leased for it. Every in-flight
    job's lease is renewed every third of ``visibility_seconds``, so a slow job is never handed
    to a second worker while this process is alive. A pull never passes over a job whose lease
    has expired (every backend's `Queue.pull` reaps before it claims); reaping on a schedule and
    purging belong to `Maintenance`, which runs whether or not this process leases. A renewal
    refused as ``cancelled`` stops that job (`InFlight.cancel`); ``queue.on_cancel`` (a cancel
    in this process, or by NOTIFY on PostgreSQL) makes it renew at once rather than at its
    next round.

    Error handling: a queue error while pulling or renewing is logged and retried on the next
    round, unless it is fatal (`actors.errors.is_fatal`: a full disk), which stops the system;
    anything else (a token the queue server refuses) crashes the actor. A crash loses no job:
    jobs already handed on stay in the in-flight table (their leases are renewed again after
    the restart), and a job leased but not yet recorded is redelivered when its lease expires.
    """

    def __init__(
        self,
        *,
        queue: Queue,
        inflight: InFlight,
        outbox: MemoryObjectSendStream[JobLeased],
        settings: QueueConfig,
        clock: Clock,
        worker_id: str,
        on_leased: Callable[[list[LeasedJob]], Awaitable[None]] | None = None,
        ctx: Context | None = None,
        draining: Callable[[], bool] = lambda: False,
        window: int | None = None,
        long_poll_seconds: float = 0,
    ) -> None:
        self._ctx = ctx
        self._long_poll = long_poll_seconds
        # The scope of a waiting pull in progress, cancelled when draining begins.
        self._waiting: anyio.CancelScope | None = None
        # At most this many jobs leased and not yet decided (None: the in-flight capacity).
        self._window = window
        # True once the system drains: lease nothing more; in-flight jobs' leases are renewed.
        self._draining = draining
        self._queue = queue
        self._inflight = inflight
        self._outbox = outbox
        self._settings = settings
        self._clock = clock
        self._worker_id = worker_id
        self._on_leased = on_leased
        self._wake: anyio.Event | None = None
        self._renew_wake: anyio.Event | None = None

    def wake(self) -> None:
        """Look for jobs now (called after a local enqueue, on the loop's thread); once
        draining, stop a waiting pull."""
        if self._wake is not None:
            self._wake.set()
        if self._waiting is not None and self._draining():
            self._waiting.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        unsubscribe = self._queue.on_enqueue(self.wake)
        stop_hearing = self._queue.on_cancel(self._renew_now)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._renew_forever)
                task_status.started()
                with stop_scope(self._ctx):
                    await self._lease_until_draining()
                    # Draining: in-flight jobs still need their leases renewed until they end.
                    await anyio.sleep_forever()
                tg.cancel_scope.cancel()
        finally:
            unsubscribe()
            stop_hearing()

    def _renew_now(self) -> None:
        """Renew at once (a cancel marked leases somewhere): a renewal refused as cancelled
        stops the job's processing, well before the next round."""
        if self._renew_wake is not None:
            self._renew_wake.set()

    async def _lease_until_draining(self) -> None:
        settings = self._settings
        while not self._draining():
            free = self._inflight.free
            if free <= 0:
                await self._inflight.wait_changed()
                continue
            if self._window is not None:
                # Lease only what the stages can start soon: a crash strands few jobs. The
                # window refills by half of itself (or a pull batch) at a time, not by one job
                # per outcome: a pull costs a queue write whatever its size.
                undecided = self._inflight.undecided
                refill = min(settings.batch_size, (self._window + 1) // 2)
                if undecided > 0 and self._window - undecided < refill:
                    await self._inflight.wait_undecided(self._window - refill)
                    continue
                free = min(free, self._window - undecided)
            # A fresh event before the pull: an enqueue that commits during it still wakes us.
            self._wake = anyio.Event()
            size = min(free, settings.batch_size)
            if self._long_poll > 0:
                jobs, waited = await self._pull_waiting(size)
            else:
                jobs, waited = await self._pull(size), False
            if not jobs:
                if not waited:
                    await self._sleep_unless_woken(settings.poll_interval_seconds)
                continue
            leased = [leased_job(job) for job in jobs]
            self._inflight.add(leased)
            for job in leased:
                # Never blocks: the stream holds `concurrency` items and the in-flight table
                # never holds more jobs than that.
                self._outbox.send_nowait(JobLeased(job=job))
            if self._on_leased is not None:
                await self._on_leased(leased)

    async def _pull(self, size: int) -> list[Job]:
        jobs: list[Job] = []
        try:
            # Shielded: a pull cancelled half-way would still commit its leases in the writer
            # thread, and jobs leased but never recorded would wait out their visibility
            # timeout. Recorded, they are given back at once on shutdown.
            with anyio.CancelScope(shield=True):
                jobs = await self._queue.pull(
                    max=size,
                    visibility_seconds=self._settings.visibility_seconds,
                    worker_id=self._worker_id,
                )
        except QueueError as exc:
            if is_fatal(exc):
                raise  # a full disk: the system stops (`PipelineTree`), nothing to retry
            log.warning("lease.pull_failed", error=str(exc))
        return jobs

    async def _pull_waiting(self, size: int) -> tuple[list[Job], bool]:
        """A pull that waits at the server for a job; also says whether it waited its time
        out (else, empty, it failed or the server answered early: poll before the next)."""
        began = anyio.current_time()
        jobs: list[Job] = []
        with anyio.CancelScope() as scope:
            self._waiting = scope
            try:
                jobs = await self._queue.pull(
                    max=size,
                    visibility_seconds=self._settings.visibility_seconds,
                    worker_id=self._worker_id,
                    wait_seconds=self._long_poll,
                )
            except QueueError as exc:
                if is_fatal(exc):
                    raise  # a refused token: the system stops, nothing to retry
                log.warning("lease.pull_failed", error=str(exc))
            finally:
                self._waiting = None
        return jobs, anyio.current_time() - began >= self._long_poll / 2

    async def _sleep_unless_woken(self, seconds: float) -> None:
        wake = self._wake
        if wake is None:
            return
        await self._sleep_or_until(seconds, wake)

    async def _sleep_or_until(self, seconds: float, wake: anyio.Event) -> None:
        """Sleep ``seconds`` on the clock, or less if ``wake`` is set meanwhile."""
        if wake.is_set():
            return
        async with anyio.create_task_group() as tg:

            async def sleep_then_stop() -> None:
                await self._clock.sleep(seconds)
                tg.cancel_scope.cancel()

            tg.start_soon(sleep_then_stop)
            await wake.wait()
            tg.cancel_scope.cancel()

    async def _renew_forever(self) -> None:
        # A third of the lease: two renewals can fail in a row before a lease runs out.
        # Renew at once on start too: after a restart the in-flight jobs' leases have been
        # running down since the predecessor's last renewal.
        # A job past its processing time limit is renewed no more: its processor is being
        # stopped, and if it ignores that, the lease runs out and the job can run elsewhere.
        interval = self._settings.visibility_seconds / 3
        while True:
            self._renew_wake = anyio.Event()
            jobs = self._inflight.renewable_jobs(anyio.current_time())
            if jobs:
                await self._renew(jobs)
            # Or sooner, when a cancel is heard of.
            await self._sleep_or_until(interval, self._renew_wake)

    async def _renew(self, jobs: list[LeasedJob]) -> None:
        try:
            results = await self._queue.renew_many(
                [(job.id, job.lease_token) for job in jobs],
                visibility_seconds=self._settings.visibility_seconds,
            )
        except QueueError as exc:
            if is_fatal(exc):
                raise
            log.warning("lease.renew_failed", jobs=len(jobs), error=str(exc))
            return
        for job, result in zip(jobs, results, strict=True):
            if result.reason == "cancelled" and job in self._inflight:
                # Cancelled: stop its processing; its holder gives it back, which ends it.
                self._inflight.cancel(job)
                log.info("lease.cancelled", job_id=job.id, run_id=job.run_id)
            elif not result.ok and job in self._inflight:
                # Its outcome will be refused; renewing it again would only repeat this line.
                self._inflight.mark_lost(job)
                log.warning(
                    "lease.lost",
                    job_id=job.id,
                    run_id=job.run_id,
                    reason=result.reason,
                    error=result.message,
                )
