"""The fetcher: reads a leased job's object from the object store (R2, S3 or a local folder)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors import tenancy
from actors.errors import ObjectStoreError, QueueError, is_fatal
from actors.log import get_logger
from actors.pipeline._inflight import InFlight, ObjectBudget, stop_scope
from actors.pipeline.messages import AckInbox, Failed, Fetched, JobLeased, LeasedJob, Release
from actors.queue.base import Queue
from actors.storage import ObjectStore, StoredObject
from supervisors import Context

__all__ = ["Fetcher"]

log = get_logger("actors.fetcher")

# A fetcher takes up to this many jobs waiting in its stream at once and marks them started in
# one queue call (one commit instead of four); they then count as started while it fetches them
# one by one, so a crash costs an attempt to at most this many per fetcher.
START_BATCH = 4


class Fetcher:
    """One of a pool of fetchers sharing one inbox; hands each object on to the processors.

    Before it fetches jobs from its stream it marks them started in the queue (`start_many`,
    up to ``start_batch`` jobs taken together, `START_BATCH` unless the tree says otherwise): a
    lease that expires from then on spends the job's attempt, while a job that waited in the
    stream when the process died gets its attempt back. Concurrent fetchers' marks also share
    the SQLite writer's group commit.

    Error handling: a permanent store error (missing object, too large, bad key) fails the job
    at once without burning retries; so does a key outside the job's tenant prefix that no
    admin allowed (``cross_tenant_key``), refused before the store is asked anything (defence in
    depth behind the enqueue checks: a job that reached the queue another way reads nothing). A
    transient store error fails this attempt and the queue retries it with backoff. Any other
    exception crashes the fetcher after marking the job, so that the restarted fetcher fails it
    (a retry) instead of losing it; a fetcher stopped while holding a job (a sibling's restart)
    fetches it again when it comes back. A job whose lease is gone before it started is given
    back untouched (its ack would be refused); a queue error while marking it is logged and the
    job is fetched anyway (a crash during it then costs nothing).
    """

    def __init__(
        self,
        name: str,
        *,
        inbox: MemoryObjectReceiveStream[JobLeased],
        outbox: MemoryObjectSendStream[Fetched],
        acks: MemoryObjectSendStream[AckInbox],
        store: ObjectStore,
        inflight: InFlight,
        queue: Queue | None = None,
        ctx: Context | None = None,
        max_bytes: int,
        draining: Callable[[], bool] = lambda: False,
        budget: ObjectBudget | None = None,
        start_batch: int = START_BATCH,
    ) -> None:
        self.name = name
        self._start_batch = start_batch
        self._budget = budget
        self._ctx = ctx
        self._inbox = inbox
        self._outbox = outbox
        self._acks = acks
        self._store = store
        self._inflight = inflight
        self._queue = queue
        self._max_bytes = max_bytes
        self._draining = draining

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        recovered = self._inflight.take_held(self.name)
        task_status.started()
        for job, crash in recovered:
            if crash is not None:
                self._acks.send_nowait(
                    Failed(
                        job=job, error=f"{self.name} crashed on this job: {crash}", stage="fetch"
                    )
                )
        with stop_scope(self._ctx):
            for job, crash in recovered:
                if crash is None:
                    await self._fetch(job)  # stopped by a sibling's restart: fetch it again
            async for message in self._inbox:
                jobs = [message.job]
                while len(jobs) < self._start_batch:
                    try:
                        jobs.append(self._inbox.receive_nowait().job)
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                if not self._draining():
                    for job in jobs:
                        self._inflight.hold(job, self.name)
                    jobs = await self._start(jobs)
                if len(jobs) > 1 and not self._draining() and hasattr(self._store, "get_many"):
                    await self._fetch_many(jobs)
                else:
                    for job in jobs:
                        await self._fetch(job)

    async def _fetch_many(self, jobs: list[LeasedJob]) -> None:
        """Fetch ``jobs`` with one ``get_many`` of the store (a local folder's: its folders
        opened once); if it raises other than per object, fetch each alone instead."""
        readable = []
        for job in jobs:
            self._inflight.hold(job, self.name)
            try:
                if not job.cross_tenant_key:
                    tenancy.check_key(job.tenant_id, job.r2_key)
            except ObjectStoreError as exc:
                self._failed(job, exc)
            else:
                readable.append(job)
        try:
            read = await self._store.get_many(  # type: ignore[attr-defined]
                [job.r2_key for job in readable], max_bytes=self._max_bytes
            )
        except Exception:
            read = None  # whichever object is at fault shows when each is fetched alone
        if read is None or len(read) != len(readable):
            for job in readable:
                await self._fetch(job)
            return
        for job, obj in zip(readable, read, strict=True):
            if isinstance(obj, ObjectStoreError):
                self._failed(job, obj)
            else:
                await self._hand_on(job, obj)

    async def _fetch(self, job: LeasedJob) -> None:
        if self._draining():
            self._inflight.let_go(job, self.name)
            self._acks.send_nowait(Release(job=job, reason="shutting down before the fetch"))
            return
        self._inflight.hold(job, self.name)
        try:
            if not job.cross_tenant_key:
                tenancy.check_key(job.tenant_id, job.r2_key)
            obj = await self._store.get(job.r2_key, max_bytes=self._max_bytes)
        except ObjectStoreError as exc:
            self._failed(job, exc)
            return
        except Exception as exc:
            self._inflight.crashed(job, repr(exc))
            raise
        await self._hand_on(job, obj)

    def _failed(self, job: LeasedJob, exc: ObjectStoreError) -> None:
        self._inflight.let_go(job, self.name)
        log.info(
            "fetch.failed",
            job_id=job.id,
            run_id=job.run_id,
            error=str(exc),
            permanent=exc.permanent,
        )
        self._acks.send_nowait(
            Failed(job=job, error=str(exc), permanent=exc.permanent, stage="fetch")
        )

    async def _hand_on(self, job: LeasedJob, obj: StoredObject) -> None:
        # The processors' stream holds whole objects, so this may wait (for the budget, or for
        # room in a short stream). The job stays in this fetcher's custody until the send is
        # done: a cancelled send leaves it here, to be fetched again by its successor.
        fetched = Fetched(job=job, data=obj.data, content_type=obj.content_type)
        if self._budget is None:
            await self._outbox.send(fetched)
        else:
            size = len(obj.data)
            await self._budget.admit(size)
            try:
                # Never blocks: the stream holds `concurrency` items, the budget their bytes.
                self._outbox.send_nowait(fetched)
            except BaseException:
                self._budget.cancel(size)
                raise
        self._inflight.let_go(job, self.name)

    async def _start(self, jobs: list[LeasedJob]) -> list[LeasedJob]:
        """Mark the jobs started in the queue; return those still leased (the others are given
        back: their outcome would be refused)."""
        if self._queue is None:
            return jobs
        try:
            results = await self._queue.start_many([(job.id, job.lease_token) for job in jobs])
        except QueueError as exc:
            if is_fatal(exc):
                raise  # a full disk: the system stops (`PipelineTree`), nothing to retry
            log.warning("fetch.start_failed", job_ids=[j.id for j in jobs], error=str(exc))
            return jobs
        kept = []
        for job, result in zip(jobs, results, strict=True):
            if result.ok:
                kept.append(job)
                continue
            self._inflight.let_go(job, self.name)
            self._inflight.mark_lost(job)
            log.info("fetch.lease_lost", job_id=job.id, run_id=job.run_id, reason=result.reason)
            self._acks.send_nowait(
                Release(job=job, reason=f"its lease was lost before it started ({result.reason})")
            )
        return kept
