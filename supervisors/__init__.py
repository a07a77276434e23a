"""A generic supervision runtime on anyio: actors, bounded mailboxes, OTP-style supervisors."""

from __future__ import annotations

from supervisors.actor import Actor, ActorRef, MailboxState, MailboxStatistics
from supervisors.clock import Clock, FakeClock, SystemClock
from supervisors.context import Context
from supervisors.dynamic import DynamicSupervisor
from supervisors.errors import (
    ActorStopped,
    AskTimeout,
    ChildStartFailed,
    DuplicateChild,
    MailboxFull,
    MaxChildrenReached,
    NotAnActor,
    RestartLimitExceeded,
    SupervisionError,
    UnknownChild,
)
from supervisors.events import EventBus, EventKind, LifecycleEvent
from supervisors.spec import (
    Backoff,
    Child,
    ChildCounts,
    ChildInfo,
    ChildKind,
    ChildSpec,
    ChildState,
    Restart,
    Runnable,
    Strategy,
)
from supervisors.supervisor import GiveUpCallback, Supervisor

__all__ = [
    "Actor",
    "ActorRef",
    "ActorStopped",
    "AskTimeout",
    "Backoff",
    "Child",
    "ChildCounts",
    "ChildInfo",
    "ChildKind",
    "ChildSpec",
    "ChildStartFailed",
    "ChildState",
    "Clock",
    "Context",
    "DuplicateChild",
    "DynamicSupervisor",
    "EventBus",
    "EventKind",
    "FakeClock",
    "GiveUpCallback",
    "LifecycleEvent",
    "MailboxFull",
    "MailboxState",
    "MailboxStatistics",
    "MaxChildrenReached",
    "NotAnActor",
    "Restart",
    "RestartLimitExceeded",
    "Runnable",
    "Strategy",
    "SupervisionError",
    "Supervisor",
    "SystemClock",
    "UnknownChild",
]
