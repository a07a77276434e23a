"""The actor system: opens the queue, the store and the processor, and runs the pipeline's tree."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn

import anyio
from anyio.abc import TaskStatus

from actors import tenancy
from actors.config import Config, require_package
from actors.errors import ActorsError, is_fatal, unwrap
from actors.log import get_logger
from actors.pipeline import (
    TERMINAL_RUN_STATUSES,
    AckStats,
    InFlight,
    LoopWatchdog,
    PipelineTree,
    RunEvent,
    RunRoom,
    RunUpdate,
    explain_give_up,
    room_id,
    schedules_from_config,
)
from actors.processors import Processor, WorkerPool, make_processor, worker_modules
from actors.queue import (
    ItemResult,
    Job,
    NewJob,
    NewSchedule,
    OwnedQueue,
    Queue,
    QueueControls,
    RunCancel,
    RunSummary,
    Schedule,
    Stats,
)
from actors.queue.factory import open_queue
from actors.storage import ObjectStore, make_store
from supervisors import (
    Clock,
    Context,
    DynamicSupervisor,
    RestartLimitExceeded,
    Supervisor,
    SystemClock,
)

if TYPE_CHECKING:
    from actors.http import HttpServer

__all__ = ["ActorSystem", "SystemFailed", "raise_system_failed"]

log = get_logger("actors.system")


class SystemFailed(ActorsError):
    """The supervision tree gave up: an actor exceeded its restart limit (the message names it),
    or a fatal error (`actors.errors.is_fatal`) stopped it at once (the message is that error's)."""


def raise_system_failed(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise the one `ActorsError` (`SystemFailed`, `ConfigError`...) a task group wrapped."""
    failed: BaseException | None = group.subgroup(lambda e: isinstance(e, ActorsError))
    while isinstance(failed, BaseExceptionGroup) and len(failed.exceptions) == 1:
        failed = failed.exceptions[0]
    if isinstance(failed, ActorsError):
        raise failed from failed.__cause__


def default_worker_id() -> str:
    """``host:pid:random``: unique per process, readable in ``jobs list``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class ActorSystem:
    """The whole pipeline as an async context manager, for ``python -m actors`` and host apps.

    ``async with ActorSystem(config) as system:`` opens the queue, starts the supervision tree
    (`PipelineTree`: sinks first, the source last) and leaves it running in the caller's task
    group until the block ends, which drains it: stop leasing, let in-flight jobs finish for up
    to ``shutdown_grace_seconds``, give back the leases of the rest, flush the acks.

    Error handling: if the tree gives up (an actor crashed more often than its restart limit
    allows) the block is cancelled and `SystemFailed` comes out of it, naming the actor;
    ``on_failure`` is called first, for hosts that want to know without being cancelled.
    No signal handler is installed here; ``python -m actors`` does that.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        clock: Clock | None = None,
        store: ObjectStore | None = None,
        processor: Processor | None = None,
        worker_id: str | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        track_runs: bool = False,
    ) -> None:
        self.config = config if config is not None else Config()
        self.clock = clock if clock is not None else SystemClock()
        self.worker_id = worker_id or default_worker_id()
        self._store = store
        self._processor = processor
        self._on_failure = on_failure
        self._stack: AsyncExitStack | None = None
        self._queue: Queue | None = None
        self._tree: PipelineTree | None = None
        self._skip_grace = False
        #: The worker processes of the offline processor and of isolated ones.
        self.pool = WorkerPool(
            self.config.pipeline.processors,
            memory_mib=self.config.processor.worker_memory_mib,
            preload=worker_modules(self.config.processor),
        )
        #: With ``track_runs``: runs that had a job finish here (``run --until-idle`` reports them).
        self.runs_seen: set[str] = set()
        self._track_runs = track_runs
        #: The API server, while the tree runs it (``[http].enabled``).
        self.http: HttpServer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ActorSystem:
        config = self.config
        if config.http.enabled:
            for module in ("starlette", "uvicorn", "hypercorn", "prometheus_client"):
                require_package(module, "http", "[http] enabled = true")
        schedules_from_config(config)  # a foreign key is a ConfigError before anything opens
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            # Store and processor first: a mistake in their config must not leave a new,
            # empty database file behind.
            if self._store is None:
                self._store = make_store(config)
            stack.push_async_callback(self._store.aclose)
            if self._processor is None:
                self._processor = make_processor(config.processor, config.secrets, pool=self.pool)
            stack.push_async_callback(self._processor.aclose)
            stack.push_async_callback(self.pool.aclose)
            self._queue = await stack.enter_async_context(open_queue(config, clock=self.clock))
            if isinstance(self._queue, OwnedQueue):
                # [queue.tenants.*] go into the queue's controls, shared by every process: the
                # last process to start with a table for a tenant sets it.
                for tenant, limits in config.queue.tenants.items():
                    await self._queue.set_tenant_limits(
                        tenant,
                        weight=limits.weight,
                        max_leased=limits.max_leased,
                        max_per_second=limits.max_per_second,
                    )
            # Processor calls that may have to be abandoned at their time limit run here, outside
            # the tree, so that no actor waits for one; cancelled after the tree has stopped.
            calls = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(calls.cancel_scope.cancel)
            self._tree = PipelineTree(
                config,
                queue=self._queue,
                store=self._store,
                processor=self._processor,
                clock=self.clock,
                worker_id=self.worker_id,
                calls=calls,
                http=self._serve_http if config.http.enabled else None,
                runs_seen=self.runs_seen if self._track_runs else None,
            )
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self._run_tree)
            stack.push_async_callback(self.stop)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        assert stack is not None
        try:
            return await stack.__aexit__(exc_type, exc, tb)  # stop() runs first: pushed last
        except BaseExceptionGroup as group:
            # The task group wraps the tree's failure; the host wants the failure itself.
            raise_system_failed(group)
            raise

    def _serve_http(self, ctx: Context) -> HttpServer:
        from actors.http import HttpServer  # only a process that serves HTTP imports it

        self.http = HttpServer(self, ctx=ctx)
        return self.http

    async def _run_tree(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._pipeline.run(task_status=task_status)
        except RestartLimitExceeded as exc:
            self._failed(SystemFailed(explain_give_up(exc)), exc)
        except Exception as exc:
            if not is_fatal(exc):
                raise
            # No restart can fix it (a refused token, a full disk): the tree stopped at once.
            self._failed(SystemFailed(f"the system stopped: {unwrap(exc)}"), exc)

    def _failed(self, failure: SystemFailed, cause: Exception) -> NoReturn:
        log.error("system.failed", error=str(failure))
        if self._on_failure is not None:
            self._on_failure(failure)
        raise failure from cause

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Drain: stop leasing, wait for in-flight jobs, give back the rest, flush the acks.

        The leases of jobs still in flight are given back even when the drain is cancelled
        or the tree has failed, so that they can run again at once rather than after their
        visibility timeout.
        """
        grace = (
            self.config.pipeline.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        )
        await self._pipeline.stop(0 if self._skip_grace else grace)

    def skip_grace(self) -> None:
        """Stop waiting for in-flight jobs (a second signal): give their leases back now."""
        self._skip_grace = True
        if self._tree is not None:
            self._tree.skip_grace()

    # -- what the tree holds -----------------------------------------------------------------

    @property
    def _pipeline(self) -> PipelineTree:
        if self._tree is None:
            # AttributeError, so that ``getattr(system, "rooms", None)`` answers None.
            raise AttributeError("the system's tree exists only inside `async with`")
        return self._tree

    @property
    def tree(self) -> Supervisor:
        """The root supervisor (its lifecycle events, ``which_children()``...)."""
        return self._pipeline.supervisor

    @property
    def rooms(self) -> DynamicSupervisor:
        """The run rooms' supervisor: one `RunRoom` actor per run someone watches or works on."""
        return self._pipeline.rooms

    @property
    def inflight(self) -> InFlight:
        """The jobs this process has leased and not yet settled."""
        return self._pipeline.inflight

    @property
    def ack_stats(self) -> AckStats:
        """What this process's ack reporter has committed."""
        return self._pipeline.ack_stats

    @property
    def watchdog(self) -> LoopWatchdog:
        """How late the event loop wakes (``/metrics``' loop lag)."""
        return self._pipeline.watchdog

    @property
    def drained(self) -> bool:
        """True once `stop` has given back or settled every job in flight (the exit is safe)."""
        return self._tree is not None and self._tree.drained

    def tell_watchers(self, events: Sequence[RunEvent]) -> None:
        """Tell the run rooms that exist (someone watches the run) about events committed
        outside the pipeline (over HTTP); no room is started for a run nobody watches.

        A room started later loads its run's state from the database, so only its
        recent-events list misses these; a room that cannot take one (inbox full, stopping)
        reloads on its next poll.
        """
        for event in events:
            room = self.rooms.lookup(room_id(event.run_id))
            if room is not None:
                with contextlib.suppress(Exception):
                    room.tell_nowait(event)

    async def _room(self, run_id: str) -> RunRoom:
        return await self._pipeline.room(run_id)

    @property
    def queue(self) -> Queue:
        """The open queue (whichever backend [queue] names); only inside ``async with``."""
        assert self._queue is not None, "use the system inside `async with`"
        return self._queue

    # -- the embedding API -----------------------------------------------------------------

    @property
    def store(self) -> ObjectStore:
        """The object store jobs are fetched from (put objects here before enqueueing)."""
        assert self._store is not None, "use the system inside `async with`"
        return self._store

    async def enqueue(
        self,
        run_id: str,
        tenant_id: str,
        r2_key: str,
        *,
        payload: object = None,
        idempotency_key: str | None = None,
        delay_seconds: float = 0,
        priority: int = 0,
        max_attempts: int | None = None,
        cross_tenant_key: bool = False,
        timeout_seconds: float | None = None,
    ) -> Job:
        """Enqueue one job (see `Queue.enqueue`); a local worker wakes at once.

        The key must lie under ``"{tenant_id}/"`` (`actors.tenancy`): else `ForeignObjectKey`,
        unless ``cross_tenant_key=True`` says the caller allows this job to read another's.
        """
        tenancy.check_tenant_id(tenant_id)
        tenancy.check_run_id(tenant_id, run_id)
        if not cross_tenant_key:
            tenancy.check_key(tenant_id, r2_key)
        return await self.queue.enqueue(
            run_id,
            tenant_id,
            r2_key,
            payload=payload,
            idempotency_key=idempotency_key,
            delay_seconds=delay_seconds,
            priority=priority,
            max_attempts=max_attempts,
            cross_tenant_key=cross_tenant_key,
            timeout_seconds=timeout_seconds,
        )

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Enqueue jobs in one transaction; each key checked as `enqueue` does, before any."""
        for job in jobs:
            tenancy.check_tenant_id(job.tenant_id)
            tenancy.check_run_id(job.tenant_id, job.run_id)
            if not job.cross_tenant_key:
                tenancy.check_key(job.tenant_id, job.r2_key)
        return await self.queue.enqueue_many(list(jobs))

    async def create_schedule(self, schedule: NewSchedule) -> Schedule:
        """Add a recurring job, or replace the tenant's one of that name (`Queue.create_schedule`).

        Its key must lie under ``"{tenant_id}/"`` (`actors.tenancy`), else `ForeignObjectKey`:
        a schedule's jobs never cross tenants.
        """
        tenancy.check_tenant_id(schedule.tenant_id)
        tenancy.check_key(schedule.tenant_id, schedule.r2_key)
        return await self.queue.create_schedule(schedule)

    async def list_schedules(self, tenant_id: str | None = None) -> list[Schedule]:
        """Every schedule (of one tenant), by tenant and name."""
        return await self.queue.list_schedules(tenant_id)

    async def delete_schedule(self, tenant_id: str, name: str) -> Schedule:
        """Delete the tenant's schedule of this name, or raise `ScheduleNotFound`."""
        return await self.queue.delete_schedule(tenant_id, name)

    async def cancel(
        self, job_ids: Sequence[int], *, tenant_id: str | None = None
    ) -> list[ItemResult]:
        """Cancel jobs (see `Queue.cancel_many`): a pending one ends ``cancelled`` now; a leased
        one is marked, and ends ``cancelled`` once its worker stops (a worker in this process
        stops at once; others at their next renewal) or its lease expires. Per item: ``ok``
        (the job's status says which), ``duplicate``, ``finished`` or ``not_found``."""
        results = await self.queue.cancel_many(job_ids, tenant_id=tenant_id)
        now = self.clock.time()
        by_run: dict[str, list[int]] = {}
        for r in results:
            if r.reason == "ok" and r.job is not None and r.job.status == "cancelled":
                by_run.setdefault(r.job.run_id, []).append(r.job_id)
        self.tell_watchers(
            [
                RunEvent(run_id=run, kind="cancelled", job_ids=tuple(ids), at=now)
                for run, ids in by_run.items()
            ]
        )
        return results

    async def cancel_run(self, run_id: str, *, tenant_id: str | None = None) -> RunCancel:
        """Cancel every unfinished job of the run (as `cancel` does each); RunNotFound if there
        is no such run (or it is another tenant's than ``tenant_id``)."""
        outcome = await self.queue.cancel_run(run_id, tenant_id=tenant_id)
        self.tell_watchers([RunEvent(run_id=run_id, kind="cancelled", at=self.clock.time())])
        return outcome

    async def stats(self) -> Stats:
        return await self.queue.stats()

    async def run_summary(self, run_id: str) -> RunSummary:
        return await self.queue.run_summary(run_id)

    async def pause(self, tenant_id: str | None = None) -> QueueControls:
        """Pause the whole queue, or one tenant, for every process sharing it (`Queue.pause`)."""
        return await self.queue.pause(tenant_id)

    async def resume(self, tenant_id: str | None = None) -> QueueControls:
        """Undo `pause` of the whole queue, or of one tenant."""
        return await self.queue.resume(tenant_id)

    async def controls(self) -> QueueControls:
        """What is paused, and each tenant's weight and limits."""
        return await self.queue.controls()

    async def set_tenant_limits(
        self,
        tenant_id: str,
        *,
        weight: int = 1,
        max_leased: int | None = None,
        max_per_second: float | None = None,
    ) -> QueueControls:
        """Set a tenant's share of fair claims and its limits (`Queue.set_tenant_limits`)."""
        return await self.queue.set_tenant_limits(
            tenant_id, weight=weight, max_leased=max_leased, max_per_second=max_per_second
        )

    async def watch_run(self, run_id: str) -> AsyncGenerator[RunUpdate, None]:
        """Yield the run's state now and after every change, until it is done or failed."""
        while True:
            room = await self._room(run_id)
            async for update in room.updates():
                yield update
                if update.summary is not None and update.summary.status in TERMINAL_RUN_STATUSES:
                    return
            if room.finished:
                return

    async def wait_run(self, run_id: str) -> RunSummary:
        """Wait until every job of the run is done or failed; return the run's summary."""
        async for update in self.watch_run(run_id):
            if update.summary is not None and update.summary.status in TERMINAL_RUN_STATUSES:
                return update.summary
        return await self.run_summary(run_id)

    async def wait_idle(self, poll_seconds: float = 0.05) -> Stats:
        """Wait until no job is pending or leased in the whole queue (``run --until-idle``)."""
        while True:
            stats = await self.stats()
            if stats.pending == 0 and stats.leased == 0 and len(self.inflight) == 0:
                return stats
            await anyio.sleep(poll_seconds)
