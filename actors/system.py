"""The actor system: wires config, queue, stores and actors into one supervised tree."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from actors import tenancy
from actors.config import Config
from actors.errors import ActorsError
from actors.pipeline._ack_reporter import AckReporter, AckStats
from actors.pipeline._fetcher import Fetcher
from actors.pipeline._inflight import InFlight
from actors.pipeline._lease_manager import LeaseManager
from actors.pipeline._maintenance import Maintenance, queue_tasks
from actors.pipeline._processing import ProcessorStage
from actors.pipeline._run_room import (
    TERMINAL_RUN_STATUSES,
    RunRoom,
    RunUpdate,
    room_id,
    run_of_room,
)
from actors.pipeline._watchdog import LoopWatchdog
from actors.pipeline.messages import AckInbox, Fetched, JobLeased, LeasedJob, RunEvent, Subscribe
from actors.processors import Processor, make_processor
from actors.processors._workers import WorkerPool
from actors.queue import Job, NewJob, OwnedQueue, Queue, RunSummary, Stats
from actors.queue.factory import open_queue
from actors.storage._local import ObjectStore, make_store
from supervisors import (
    ActorStopped,
    Backoff,
    ChildSpec,
    Clock,
    Context,
    DynamicSupervisor,
    MailboxFull,
    RestartLimitExceeded,
    SupervisionError,
    Supervisor,
    SystemClock,
)

__all__ = ["ActorSystem", "SystemFailed", "raise_system_failed"]

log = structlog.get_logger("actors.system")

# A run room's inbox: events come a few per ack batch; more than this waiting means the room
# is stuck, and dropping an event there costs only an entry of its recent-events list.
_ROOM_INBOX = 1000
# Rooms of idle runs sleep; this bounds the awake and asleep rooms kept at once.
_MAX_ROOMS = 100_000


def _explain_give_up(exc: BaseException) -> str:
    """Name the innermost actor whose crashes made the tree give up, and its last error."""
    chain: list[RestartLimitExceeded] = []
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, RestartLimitExceeded):
            chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    inner = chain[-1] if chain else exc
    actor = f"{getattr(inner, 'supervisor', '?')}/{getattr(inner, 'child', '?')}"
    root = inner.__cause__ or inner.__context__
    while isinstance(root, BaseExceptionGroup) and len(root.exceptions) == 1:
        root = root.exceptions[0]  # a task group inside the actor wrapped it
    why = f"; its last error: {type(root).__name__}: {root}" if root is not None else ""
    return (
        f"actor {actor!r} kept crashing: {getattr(inner, 'restarts', '?')} restarts within "
        f"{getattr(inner, 'max_seconds', '?')}s, over [supervision].max_restarts="
        f"{getattr(inner, 'max_restarts', '?')}, so the system stopped{why}. Jobs in flight "
        "were given back to the queue. Fix the cause, or raise [supervision].max_restarts "
        "if such crashes are expected"
    )


class SystemFailed(ActorsError):
    """The supervision tree gave up: an actor exceeded its restart limit. The message names it."""


def raise_system_failed(group: BaseExceptionGroup[Any]) -> None:
    """Raise the one `ActorsError` (`SystemFailed`, `ConfigError`...) a task group wrapped."""
    failed = group.subgroup(lambda e: isinstance(e, ActorsError))
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
    (sinks first, the source last) and leaves it running in the caller's task group until the
    block ends, which drains it: stop leasing, let in-flight jobs finish for up to
    ``shutdown_grace_seconds``, give back the leases of the rest, flush the acks.

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
        self.ack_stats = AckStats()
        self._draining = False
        self._grace_scope: anyio.CancelScope | None = None
        self._skip_grace = False
        #: True once `stop` has given back or settled every job in flight (the exit is safe).
        self.drained = False
        self.watchdog = LoopWatchdog()
        #: The worker processes of the offline processor and of isolated ones.
        self.pool = WorkerPool(
            self.config.pipeline.processors, memory_mib=self.config.processor.worker_memory_mib
        )
        #: With ``track_runs``: runs that had a job finish here (``run --until-idle`` reports them).
        self.runs_seen: set[str] = set()
        self._track_runs = track_runs

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ActorSystem:
        config = self.config
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
            # Processor calls that may have to be abandoned at their time limit run here, outside
            # the tree, so that no actor waits for one; cancelled after the tree has stopped.
            self._calls = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._calls.cancel_scope.cancel)
            self._build()
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            await self._tg.start(self._run_tree)
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

    def _build(self) -> None:
        config = self.config
        capacity = config.pipeline.concurrency
        self.inflight = InFlight(capacity)
        # The channels between stages belong to the system, not to an actor: they outlive
        # every restart, so a message is never lost with the actor that would have read it.
        self._fetch_send, self._fetch_recv = anyio.create_memory_object_stream[JobLeased](capacity)
        # Fetched objects are whole documents: keep only a couple per processor waiting, so
        # memory is bounded by the stage sizes, not by the concurrency.
        self._process_send, self._process_recv = anyio.create_memory_object_stream[Fetched](
            2 * config.pipeline.processors
        )
        self._ack_send, self._ack_recv = anyio.create_memory_object_stream[AckInbox](capacity)
        sup = config.supervision
        limits: dict[str, Any] = {
            "max_restarts": sup.max_restarts,
            "max_seconds": sup.max_seconds,
            "backoff": Backoff(
                min_seconds=sup.backoff_min_seconds, max_seconds=sup.backoff_max_seconds
            ),
        }
        assert self._store is not None and self._processor is not None
        store, processor = self._store, self._processor

        def fetcher(i: int) -> ChildSpec:
            return ChildSpec(
                f"fetcher-{i}",
                lambda ctx: Fetcher(
                    ctx.id,
                    inbox=self._fetch_recv,
                    outbox=self._process_send,
                    acks=self._ack_send,
                    store=store,
                    inflight=self.inflight,
                    queue=self.queue,
                    max_bytes=config.pipeline.max_object_bytes,
                    draining=lambda: self._draining,
                    ctx=ctx,
                ),
                shutdown=1.0,
            )

        def processor_stage(i: int) -> ChildSpec:
            return ChildSpec(
                f"processor-{i}",
                lambda ctx: ProcessorStage(
                    ctx.id,
                    inbox=self._process_recv,
                    acks=self._ack_send,
                    processor=processor,
                    inflight=self.inflight,
                    ctx=ctx,
                    timeout_seconds=config.pipeline.job_timeout_seconds,
                    calls=self._calls,
                ),
                shutdown=1.0,
            )

        def ack_reporter(ctx: Context) -> AckReporter:
            return AckReporter(
                queue=self.queue,
                inbox=self._ack_recv,
                inflight=self.inflight,
                clock=self.clock,
                batch_size=config.pipeline.ack_batch_size,
                window_seconds=config.pipeline.ack_window_seconds,
                on_committed=self._on_committed,
                stats=self.ack_stats,
                ctx=ctx,
            )

        # Jobs leased but not yet decided: what the stages can start soon (each fetcher and
        # processor holds one, the processors' stream two per processor) and one pull batch,
        # so a crash strands few jobs; decided ones wait for their ack's commit and do not
        # count. The batch keeps pulls full: without it, pulls of a few jobs each cost more
        # CPU per job than today's (docs/benchmarks.md, "Processing in worker processes").
        lease_window = (
            config.pipeline.fetchers + 3 * config.pipeline.processors + config.queue.batch_size
        )

        def lease_manager(ctx: Context) -> LeaseManager:
            self.lease_manager = LeaseManager(
                queue=self.queue,
                inflight=self.inflight,
                outbox=self._fetch_send,
                settings=config.queue,
                clock=self.clock,
                worker_id=self.worker_id,
                on_leased=self._on_leased,
                ctx=ctx,
                draining=lambda: self._draining,
                window=lease_window,
            )
            return self.lease_manager

        self.rooms = DynamicSupervisor(
            name="run_rooms",
            spec_for=lambda room: ChildSpec(
                room,
                lambda ctx: RunRoom(
                    run_of_room(room),
                    queue=self.queue,
                    ctx=ctx,
                    poll_seconds=config.queue.poll_interval_seconds,
                ),
                restart="transient",
                inbox_size=_ROOM_INBOX,
            ),
            max_children=_MAX_ROOMS,
            idle_timeout=config.pipeline.run_idle_seconds,
            **limits,
        )
        self.lease_manager = None  # type: ignore[assignment]

        async def sweep_sleeping_rooms(*, task_status: TaskStatus[None]) -> None:
            # A sleeping room keeps its place in the registry (max_children counts it), and
            # only an event tells a room its run has finished: runs finished by another process
            # or failed by a reap would fill it. Their state is in the database, so a room
            # asleep for a whole idle period is simply let go.
            task_status.started()
            while True:
                await self.clock.sleep(config.pipeline.run_idle_seconds)
                for child in self.rooms.which_children():
                    if child.state == "sleeping":
                        with contextlib.suppress(SupervisionError, LookupError, RuntimeError):
                            await self.rooms.terminate_child(child.id)

        def group(name: str, children: list[ChildSpec]) -> ChildSpec:
            return ChildSpec(name, lambda ctx: Supervisor(children, name=name, **limits))

        # [http]: the API server (actors/http/), supervised like any actor. It stops after
        # the workers, so remote workers can still ack while this process drains; with
        # queue_only this process serves the queue and leases nothing itself.
        self.http: Any = None

        def http_server(ctx: Context) -> Any:
            from actors.http import HttpServer  # only a process that serves HTTP imports it

            self.http = HttpServer(self, ctx=ctx)
            return self.http

        # Maintenance (reap, purge) runs in every process that opens the queue itself, whether
        # or not it leases; a process that reaches its queue over HTTP leaves it to the server.
        def maintenance(ctx: Context) -> Maintenance:
            queue = self.queue
            assert isinstance(queue, OwnedQueue), "maintenance runs where the queue is opened"
            return Maintenance(
                queue=queue,
                tasks=queue_tasks(queue, config.queue),
                clock=self.clock,
                owner=self.worker_id,
                ctx=ctx,
            )

        upkeep = [group("maintenance", [ChildSpec("maintenance", maintenance, shutdown=1.0)])]
        http = [group("http", [ChildSpec("server", http_server, shutdown=5.0)])]
        source = [group("source", [ChildSpec("lease_manager", lease_manager, shutdown=5.0)])]

        # Sinks first, the source last: stopping in reverse order is a drain.
        self.tree = Supervisor(
            [
                group("sink", [ChildSpec("ack_reporter", ack_reporter, shutdown=10.0)]),
                ChildSpec("run_rooms", lambda ctx: self.rooms),
                ChildSpec("room_sweeper", lambda ctx: sweep_sleeping_rooms, shutdown=0),
                ChildSpec("loop_watchdog", lambda ctx: self.watchdog.run, shutdown=0),
                *([] if config.queue.backend == "http" else upkeep),
                *(http if config.http.enabled else []),
                group(
                    "processors", [processor_stage(i) for i in range(config.pipeline.processors)]
                ),
                group("fetchers", [fetcher(i) for i in range(config.pipeline.fetchers)]),
                *([] if config.http.queue_only else source),
            ],
            name="actors",
            strategy="one_for_one",
            # Each group restarts its own children within [supervision]'s limits; a group that
            # gives up has a bug or a dead dependency that restarting will not fix, so the
            # root gives up at once and the process exits non-zero for its manager to see.
            max_restarts=0,
            clock=self.clock,
        )

    async def _run_tree(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.tree.run(task_status=task_status)
        except RestartLimitExceeded as exc:
            failure = SystemFailed(_explain_give_up(exc))
            log.error("system.failed", error=str(failure))
            if self._on_failure is not None:
                self._on_failure(failure)
            raise failure from exc

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Drain: stop leasing, wait for in-flight jobs, give back the rest, flush the acks.

        The leases of jobs still in flight are given back even when the drain is cancelled
        or the tree has failed, so that they can run again at once rather than after their
        visibility timeout.
        """
        grace = (
            self.config.pipeline.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        )
        try:
            self._draining = True
            if self.lease_manager is not None:
                self.lease_manager.wake()
            with anyio.move_on_after(0 if self._skip_grace else grace) as self._grace_scope:
                await self.inflight.wait_empty()
            await self.tree.stop()
        finally:
            with anyio.CancelScope(shield=True):
                await self._release_leftovers()
            self.drained = True

    def skip_grace(self) -> None:
        """Stop waiting for in-flight jobs (a second signal): give their leases back now."""
        self._skip_grace = True
        if self._grace_scope is not None:
            self._grace_scope.cancel()

    async def _release_leftovers(self) -> None:
        left = self.inflight.jobs()
        if not left:
            return
        results = await self.queue.release_many([(job.id, job.lease_token) for job in left])
        released = sum(1 for r in results if r.ok)
        self.inflight.settle(left)
        log.info("system.released", jobs=released)

    # -- run rooms -------------------------------------------------------------------------

    async def _on_leased(self, jobs: list[LeasedJob]) -> None:
        now = self.clock.time()
        by_run: dict[str, list[int]] = {}
        for job in jobs:
            by_run.setdefault(job.run_id, []).append(job.id)
        await self._on_committed(
            [
                RunEvent(run_id=run, kind="leased", job_ids=tuple(ids), at=now)
                for run, ids in by_run.items()
            ]
        )

    async def _on_committed(self, events: list[RunEvent]) -> None:
        """Tell each event's run room (started on demand); a full room inbox drops the event."""
        for event in events:
            if self._track_runs and event.kind in ("done", "failed"):
                self.runs_seen.add(event.run_id)
            try:
                room = await self.rooms.get_or_start(room_id(event.run_id))
                room.tell_nowait(event)
            except MailboxFull:
                # The room reloads its state from the database on its next event, so only
                # this entry of its recent-events list is lost, never a count.
                log.warning("run_room.event_dropped", run_id=event.run_id, kind=event.kind)
            except (SupervisionError, RuntimeError) as exc:
                # RuntimeError: the room supervisor has stopped (a shutdown in progress); the
                # outcome is committed all the same, only this notice goes.
                log.warning("run_room.unavailable", run_id=event.run_id, error=str(exc))

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
        while True:
            ref = await self.rooms.get_or_start(room_id(run_id))
            try:
                room: RunRoom = await ref.ask(Subscribe(), timeout=10.0)
            except ActorStopped:
                continue  # the room's run finished and it left just now: start a fresh one
            return room

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
            if not job.cross_tenant_key:
                tenancy.check_key(job.tenant_id, job.r2_key)
        return await self.queue.enqueue_many(list(jobs))

    async def stats(self) -> Stats:
        return await self.queue.stats()

    async def run_summary(self, run_id: str) -> RunSummary:
        return await self.queue.run_summary(run_id)

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
