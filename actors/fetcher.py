"""The fetcher: reads a leased job's object from the object store (R2, S3 or a local folder)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors import tenancy
from actors.errors import ObjectStoreError
from actors.inflight import InFlight, stop_scope
from actors.messages import AckInbox, Failed, Fetched, JobLeased, LeasedJob, Release
from actors.stores import ObjectStore
from supervisors import Context

__all__ = ["Fetcher"]

log = structlog.get_logger("actors.fetcher")


class Fetcher:
    """One of a pool of fetchers sharing one inbox; hands each object on to the processors.

    Error handling: a permanent store error (missing object, too large, bad key) fails the job
    at once without burning retries; so does a key outside the job's tenant prefix that no
    admin allowed (``cross_tenant_key``), refused before the store is asked anything (defence in
    depth behind the enqueue checks: a job that reached the queue another way reads nothing). A
    transient store error fails this attempt and the queue retries it with backoff. Any other
    exception crashes the fetcher after marking the job, so that the restarted fetcher fails it
    (a retry) instead of losing it; a fetcher stopped while holding a job (a sibling's restart)
    fetches it again when it comes back.
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
        ctx: Context | None = None,
        max_bytes: int,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.name = name
        self._ctx = ctx
        self._inbox = inbox
        self._outbox = outbox
        self._acks = acks
        self._store = store
        self._inflight = inflight
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
                await self._fetch(message.job)

    async def _fetch(self, job: LeasedJob) -> None:
        if self._draining():
            self._acks.send_nowait(Release(job=job, reason="shutting down before the fetch"))
            return
        self._inflight.hold(job, self.name)
        try:
            if not job.cross_tenant_key:
                tenancy.check_key(job.tenant_id, job.r2_key)
            obj = await self._store.get(job.r2_key, max_bytes=self._max_bytes)
        except ObjectStoreError as exc:
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
            return
        except Exception as exc:
            self._inflight.crashed(job, repr(exc))
            raise
        # The processors' stream is short (it holds whole objects: memory stays bounded), so
        # this may wait. The job stays in this fetcher's custody until the send is done: a
        # cancelled send leaves it here, to be fetched again by this fetcher's successor.
        await self._outbox.send(Fetched(job=job, data=obj.data, content_type=obj.content_type))
        self._inflight.let_go(job, self.name)
