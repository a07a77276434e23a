"""The supervision tree one process runs: the stages, the streams between them, the run rooms."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup, TaskStatus

from actors.config import Config
from actors.errors import is_fatal, unwrap
from actors.log import get_logger
from actors.pipeline._ack_reporter import AckReporter, AckStats
from actors.pipeline._fetcher import START_BATCH, Fetcher
from actors.pipeline._inflight import InFlight, ObjectBudget
from actors.pipeline._lease_manager import LeaseManager
from actors.pipeline._maintenance import Maintenance, queue_tasks
from actors.pipeline._processing import BATCH_BYTES, PROCESS_BATCH, ProcessorStage
from actors.pipeline._run_room import RunRoom, room_id, run_of_room
from actors.pipeline._scheduler import Scheduler, schedules_from_config
from actors.pipeline._watchdog import LoopWatchdog
from actors.pipeline.messages import AckInbox, Fetched, JobLeased, LeasedJob, RunEvent, Subscribe
from actors.processors import Processor
from actors.queue.base import OwnedQueue, Queue
from actors.storage import ObjectStore
from supervisors import (
    ActorStopped,
    Backoff,
    Child,
    ChildSpec,
    Clock,
    Context,
    DynamicSupervisor,
    MailboxFull,
    RestartLimitExceeded,
    SupervisionError,
    Supervisor,
)

__all__ = ["PipelineTree", "explain_give_up"]

log = get_logger("actors.system")

# A run room's inbox: events come a few per ack batch; more than this waiting means the room
# is stuck, and dropping an event there costs only an entry of its recent-events list.
_ROOM_INBOX = 1000
# Rooms of idle runs sleep; this bounds the awake and asleep rooms kept at once.
_MAX_ROOMS = 100_000


class PipelineTree:
    """Every long-lived part of one process, as one tree of supervised children.

    ``supervisor`` is the root; its children start in this order and stop in the reverse one,
    so that stopping is a drain (sinks first, the source last)::

        actors (one_for_one; gives up as soon as a group does)
        ├── sink/ack_reporter            task   commits outcomes in batches
        ├── run_rooms/<run>              actor  one per run, started on demand, sleeps when idle
        ├── room_sweeper                 task   lets go of rooms asleep for a whole idle period
        ├── loop_watchdog                task   measures how late the event loop wakes
        ├── maintenance/maintenance      task   reap, purge (where the queue is opened here)
        ├── maintenance/scheduler        task   [[schedules]] in, due ticks' jobs enqueued (same)
        ├── http/server                  task   the API server (with [http] enabled)
        ├── processors/processor-<i>     task   run the processor on fetched objects
        ├── fetchers/fetcher-<i>         task   read each job's object from the store
        └── source/lease_manager         task   leases jobs, renews their leases (not queue_only)

    Stages are supervised tasks over bounded streams that this tree owns, run rooms are actors
    (the package docstring says why). Each group restarts its own children within
    ``[supervision]``'s limits.

    Error handling: a group that exceeds its restart limit has a bug or a dead dependency that
    restarting will not fix, so the root gives up at once: `run` raises `RestartLimitExceeded`
    (`explain_give_up` names the child). A fatal error (`actors.errors.is_fatal`: a token the
    queue server refuses, a full disk) is restarted never: every supervisor escalates it, and
    `run` raises it at once. `stop` gives back the leases of the jobs still in
    flight whatever happened, so that they can run again at once.
    """

    def __init__(
        self,
        config: Config,
        *,
        queue: Queue,
        store: ObjectStore,
        processor: Processor,
        clock: Clock,
        worker_id: str,
        calls: TaskGroup,
        http: Callable[[Context], Child] | None = None,
        runs_seen: set[str] | None = None,
    ) -> None:
        """Build the tree (nothing runs until `run`).

        ``calls`` runs the processor calls that may have to be abandoned at their time limit
        (`call_abandonably`); it must outlive the tree. ``http`` starts the API server child.
        ``runs_seen``, if given, collects the runs that had a job finish here.
        """
        self._config = config
        self._queue = queue
        self._clock = clock
        self._runs_seen = runs_seen
        self.inflight = InFlight(config.pipeline.concurrency)
        self.ack_stats = AckStats()
        self.watchdog = LoopWatchdog()
        #: The source, once started (``None`` with ``[http].queue_only``).
        self.lease_manager: LeaseManager | None = None
        #: True once `stop` began: the lease manager leases nothing more, fetchers give back.
        self.draining = False
        #: True once `stop` has given back or settled every job in flight (the exit is safe).
        self.drained = False
        self._skip_grace = False
        self._grace_scope: anyio.CancelScope | None = None

        pipeline = config.pipeline
        capacity = pipeline.concurrency
        # Invariant: the lease, processors' and ack streams hold `capacity` items, the
        # in-flight table at most `capacity` jobs, so sending to them never blocks.
        fetch_send, fetch_recv = anyio.create_memory_object_stream[JobLeased](capacity)
        # Fetched objects are whole documents: only a couple per processor wait, whatever
        # their size, so memory is bounded by the stage sizes, not by the concurrency; a
        # processor that batches small documents gets more of those, within a byte budget.
        batches = hasattr(processor, "batchable")
        budget = ObjectBudget(
            2 * pipeline.processors, 2 * pipeline.processors * BATCH_BYTES if batches else 0
        )
        process_send, process_recv = anyio.create_memory_object_stream[Fetched](capacity)
        # A fetcher takes this many jobs at once (one start mark, one read of the store): for a
        # processor that batches, enough that the fetchers together fill a batch.
        start_batch = (
            max(START_BATCH, -(-PROCESS_BATCH // pipeline.fetchers)) if batches else START_BATCH
        )
        ack_send, ack_recv = anyio.create_memory_object_stream[AckInbox](capacity)

        sup = config.supervision
        backoff = Backoff(min_seconds=sup.backoff_min_seconds, max_seconds=sup.backoff_max_seconds)

        def group(name: str, children: list[ChildSpec]) -> ChildSpec:
            return ChildSpec(
                name,
                lambda ctx: Supervisor(
                    children,
                    name=name,
                    max_restarts=sup.max_restarts,
                    max_seconds=sup.max_seconds,
                    backoff=backoff,
                    escalate=is_fatal,
                ),
            )

        def fetcher(i: int) -> ChildSpec:
            return ChildSpec(
                f"fetcher-{i}",
                lambda ctx: Fetcher(
                    ctx.id,
                    inbox=fetch_recv,
                    outbox=process_send,
                    acks=ack_send,
                    store=store,
                    inflight=self.inflight,
                    queue=queue,
                    max_bytes=pipeline.max_object_bytes,
                    draining=lambda: self.draining,
                    ctx=ctx,
                    budget=budget,
                    start_batch=start_batch,
                ),
                shutdown=1.0,
            )

        def processor_stage(i: int) -> ChildSpec:
            return ChildSpec(
                f"processor-{i}",
                lambda ctx: ProcessorStage(
                    ctx.id,
                    inbox=process_recv,
                    acks=ack_send,
                    processor=processor,
                    inflight=self.inflight,
                    ctx=ctx,
                    timeout_seconds=pipeline.job_timeout_seconds,
                    calls=calls,
                    budget=budget,
                ),
                shutdown=1.0,
            )

        def ack_reporter(ctx: Context) -> AckReporter:
            return AckReporter(
                queue=queue,
                inbox=ack_recv,
                inflight=self.inflight,
                clock=clock,
                batch_size=pipeline.ack_batch_size,
                window_seconds=pipeline.ack_window_seconds,
                on_committed=self._on_committed,
                stats=self.ack_stats,
                ctx=ctx,
            )

        # Jobs leased but not yet decided: what the stages can start soon (each fetcher and
        # processor holds one, the processors' stream two per processor) and one pull batch,
        # so a crash strands few jobs; decided ones wait for their ack's commit and do not
        # count. The batch keeps pulls full: pulls of a few jobs each would cost more CPU per
        # job (docs/benchmarks.md, "Processing in worker processes"). A processor that
        # batches small documents starts a batch at once.
        lease_window = pipeline.fetchers + 3 * pipeline.processors + config.queue.batch_size
        if batches:
            lease_window += pipeline.processors * PROCESS_BATCH

        def lease_manager(ctx: Context) -> LeaseManager:
            self.lease_manager = LeaseManager(
                queue=queue,
                inflight=self.inflight,
                outbox=fetch_send,
                settings=config.queue,
                clock=clock,
                worker_id=worker_id,
                on_leased=self._on_leased,
                ctx=ctx,
                draining=lambda: self.draining,
                window=lease_window,
                # A remote queue's pull waits at the server for a job (a long poll); a queue
                # opened here wakes on its own enqueues, or NOTIFY, and polls for the rest.
                long_poll_seconds=(
                    config.queue.pull_wait_seconds if config.queue.backend == "http" else 0
                ),
            )
            return self.lease_manager

        self.rooms = DynamicSupervisor(
            name="run_rooms",
            spec_for=lambda room: ChildSpec(
                room,
                lambda ctx: RunRoom(
                    run_of_room(room),
                    queue=queue,
                    ctx=ctx,
                    poll_seconds=config.queue.poll_interval_seconds,
                ),
                restart="transient",
                inbox_size=_ROOM_INBOX,
            ),
            max_children=_MAX_ROOMS,
            idle_timeout=pipeline.run_idle_seconds,
            max_restarts=sup.max_restarts,
            max_seconds=sup.max_seconds,
            backoff=backoff,
        )

        # Maintenance (reap, purge) and the scheduler run in every process that opens the queue
        # itself, whether or not it leases; a process that reaches its queue over HTTP leaves
        # them to the server.
        upkeep: list[ChildSpec] = []
        if config.queue.backend != "http":
            assert isinstance(queue, OwnedQueue), "maintenance runs where the queue is opened"
            owned = queue

            def maintenance(ctx: Context) -> Maintenance:
                return Maintenance(
                    queue=owned,
                    tasks=queue_tasks(owned, config.queue),
                    clock=clock,
                    owner=worker_id,
                    ctx=ctx,
                )

            configured = schedules_from_config(config)

            def scheduler(ctx: Context) -> Scheduler:
                return Scheduler(
                    queue=owned,
                    schedules=configured,
                    clock=clock,
                    poll_seconds=config.queue.poll_interval_seconds,
                    ctx=ctx,
                )

            upkeep = [
                group(
                    "maintenance",
                    [
                        ChildSpec("maintenance", maintenance, shutdown=1.0),
                        ChildSpec("scheduler", scheduler, shutdown=1.0),
                    ],
                )
            ]
        # The API server stops after the workers, so remote workers can still ack while this
        # process drains; with queue_only this process serves the queue and leases nothing.
        server = [] if http is None else [group("http", [ChildSpec("server", http, shutdown=5.0)])]
        source = [group("source", [ChildSpec("lease_manager", lease_manager, shutdown=5.0)])]

        self.supervisor = Supervisor(
            [
                group("sink", [ChildSpec("ack_reporter", ack_reporter, shutdown=10.0)]),
                ChildSpec("run_rooms", lambda ctx: self.rooms),
                ChildSpec("room_sweeper", lambda ctx: self._sweep_sleeping_rooms, shutdown=0),
                ChildSpec("loop_watchdog", lambda ctx: self.watchdog.run, shutdown=0),
                *upkeep,
                *server,
                group("processors", [processor_stage(i) for i in range(pipeline.processors)]),
                group("fetchers", [fetcher(i) for i in range(pipeline.fetchers)]),
                *([] if config.http.queue_only else source),
            ],
            name="actors",
            strategy="one_for_one",
            max_restarts=0,  # a group that gave up is not restarted: see the class docstring
            clock=clock,
            escalate=is_fatal,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the tree until it is stopped; ready once every child is."""
        await self.supervisor.run(task_status=task_status)

    async def stop(self, grace_seconds: float) -> None:
        """Drain: stop leasing, wait for in-flight jobs, give back the rest, flush the acks.

        The leases of jobs still in flight are given back even when the drain is cancelled
        or the tree has failed, so that they can run again at once rather than after their
        visibility timeout.
        """
        try:
            self.draining = True
            if self.lease_manager is not None:
                self.lease_manager.wake()
            with anyio.move_on_after(0 if self._skip_grace else grace_seconds) as scope:
                self._grace_scope = scope
                await self.inflight.wait_empty()
            await self.supervisor.stop()
        finally:
            with anyio.CancelScope(shield=True):
                await self._release_leftovers()
            self.drained = True

    def skip_grace(self) -> None:
        """Stop waiting for in-flight jobs: give their leases back now."""
        self._skip_grace = True
        if self._grace_scope is not None:
            self._grace_scope.cancel()

    async def _release_leftovers(self) -> None:
        left = self.inflight.jobs()
        if not left:
            return
        try:
            results = await self._queue.release_many([(job.id, job.lease_token) for job in left])
        except Exception as exc:
            if not is_fatal(exc):
                raise
            # What stops the system stops this too (a full disk, a refused token), and is
            # reported once, as the system's failure: these leases run out instead.
            log.debug("system.release_failed", jobs=len(left), error=str(unwrap(exc)))
            return
        released = sum(1 for r in results if r.ok)
        self.inflight.settle(left)
        log.info("system.released", jobs=released)

    # -- run rooms -------------------------------------------------------------------------

    async def room(self, run_id: str) -> RunRoom:
        """The run's live room, started (and loaded from the database) if it was not running."""
        while True:
            ref = await self.rooms.get_or_start(room_id(run_id))
            try:
                room: RunRoom = await ref.ask(Subscribe(), timeout=10.0)
            except ActorStopped:
                continue  # the room's run finished and it left just now: start a fresh one
            return room

    async def _on_leased(self, jobs: list[LeasedJob]) -> None:
        now = self._clock.time()
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
            if self._runs_seen is not None and event.kind in ("done", "failed", "cancelled"):
                self._runs_seen.add(event.run_id)
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

    async def _sweep_sleeping_rooms(self, *, task_status: TaskStatus[None]) -> None:
        # A sleeping room keeps its place in the registry (max_children counts it), and only
        # an event tells a room its run has finished: runs finished by another process or
        # failed by a reap would fill it. Their state is in the database, so a room asleep
        # for a whole idle period is simply let go.
        task_status.started()
        while True:
            await self._clock.sleep(self._config.pipeline.run_idle_seconds)
            for child in self.rooms.which_children():
                if child.state == "sleeping":
                    with contextlib.suppress(SupervisionError, LookupError, RuntimeError):
                        await self.rooms.terminate_child(child.id)


def explain_give_up(exc: RestartLimitExceeded) -> str:
    """Name the innermost child whose crashes made the tree give up, and its last error."""
    chain: list[RestartLimitExceeded] = []
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, RestartLimitExceeded):
            chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    inner = chain[-1]
    root = inner.__cause__ or inner.__context__
    while isinstance(root, BaseExceptionGroup) and len(root.exceptions) == 1:
        root = root.exceptions[0]  # a task group inside the actor wrapped it
    why = f"; its last error: {type(root).__name__}: {root}" if root is not None else ""
    actor = f"{inner.supervisor}/{inner.child}"
    return (
        f"actor {actor!r} kept crashing: {inner.restarts} restarts within "
        f"{inner.max_seconds}s, over [supervision].max_restarts={inner.max_restarts}, so the "
        f"system stopped{why}. Jobs in flight were given back to the queue. Fix the cause, or "
        "raise [supervision].max_restarts if such crashes are expected"
    )
