"""The pipeline: the stages a job passes through, the messages between them, and their tree.

A job goes lease manager -> fetchers -> processors -> ack reporter, and its run's room hears
what happened once it is committed. `PipelineTree` builds one process's supervision tree and
is what `actors.system.ActorSystem` runs.

The actor model: every long-lived part is a supervised child of that one tree (the
``supervisors`` runtime restarts it within ``[supervision]``'s limits), and each child is the
kind of child its work calls for. A stage is a supervised *task* that reads a bounded memory
stream owned by the tree, not by the stage: the stream outlives every restart of the stages at
its ends, so a message is never lost with the task that would have read it, and a pool (the
fetchers, the processors) shares one stream, each member taking the next job when it is free.
The in-flight table (`InFlight`) records which worker holds which job, so a restarted worker
takes over what its predecessor held. A run room is an *actor* (`supervisors.Actor`): it is
addressed by its run id, told events and asked for subscriptions, and sleeps when idle, which
is what a mailbox per child gives. Supervisors never handle messages; stages never restart
anything.
"""

from __future__ import annotations

from actors.pipeline._ack_reporter import AckReporter, AckStats
from actors.pipeline._fetcher import START_BATCH, Fetcher
from actors.pipeline._inflight import InFlight, ObjectBudget
from actors.pipeline._lease_manager import LeaseManager, leased_job
from actors.pipeline._maintenance import MaintainedQueue, Maintenance, MaintenanceTask, queue_tasks
from actors.pipeline._processing import ProcessorStage, call_abandonably
from actors.pipeline._run_room import (
    TERMINAL_RUN_STATUSES,
    RunRoom,
    RunUpdate,
    room_id,
    run_of_room,
)
from actors.pipeline._scheduler import ScheduledQueue, Scheduler, schedules_from_config
from actors.pipeline._tree import PipelineTree, explain_give_up
from actors.pipeline._watchdog import LoopWatchdog
from actors.pipeline.messages import (
    AckInbox,
    Failed,
    Fetched,
    JobLeased,
    LeasedJob,
    Message,
    Processed,
    Refresh,
    Release,
    RunEvent,
    RunRoomInbox,
    Subscribe,
)

__all__ = [
    "START_BATCH",
    "TERMINAL_RUN_STATUSES",
    "AckInbox",
    "AckReporter",
    "AckStats",
    "Failed",
    "Fetched",
    "Fetcher",
    "InFlight",
    "JobLeased",
    "LeaseManager",
    "LeasedJob",
    "LoopWatchdog",
    "MaintainedQueue",
    "Maintenance",
    "MaintenanceTask",
    "Message",
    "ObjectBudget",
    "PipelineTree",
    "Processed",
    "ProcessorStage",
    "Refresh",
    "Release",
    "RunEvent",
    "RunRoom",
    "RunRoomInbox",
    "RunUpdate",
    "ScheduledQueue",
    "Scheduler",
    "Subscribe",
    "call_abandonably",
    "explain_give_up",
    "leased_job",
    "queue_tasks",
    "room_id",
    "run_of_room",
    "schedules_from_config",
]
