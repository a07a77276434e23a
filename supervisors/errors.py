"""Every exception the supervision runtime raises on purpose.

The hierarchy::

    SupervisionError
    ├── ActorStopped          tell/ask to an actor that has stopped for good
    ├── AskTimeout            ask() got no reply in time (also a TimeoutError)
    ├── MailboxFull           tell_nowait() on a full inbox
    ├── NotAnActor            a ref was asked of a child that has no inbox
    ├── UnknownChild          a ref was asked of an id its supervisor lacks (a LookupError)
    ├── DuplicateChild        two children with one id under one supervisor
    ├── MaxChildrenReached    a dynamic supervisor is at its max_children cap
    ├── ChildStartFailed      a child raised or returned before it was ready
    └── RestartLimitExceeded  a supervisor gave up: too many restarts in its window

An exception raised by an actor's own ``handle()`` is never wrapped: the asker gets
that exception object itself.
"""

from __future__ import annotations

__all__ = [
    "ActorStopped",
    "AskTimeout",
    "ChildStartFailed",
    "DuplicateChild",
    "MailboxFull",
    "MaxChildrenReached",
    "NotAnActor",
    "RestartLimitExceeded",
    "SupervisionError",
    "UnknownChild",
]


class SupervisionError(Exception):
    """Base class of every error raised on purpose by ``supervisors``."""


class ActorStopped(SupervisionError):
    """The actor behind a ref has stopped for good; its inbox refuses messages."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"actor {path!r} has stopped ({reason}) and takes no more messages. "
            "A ref lives as long as its child is supervised: if the child is dynamic, look it "
            "up or start it again; if it should outlive this, make it restart='permanent'."
        )


class AskTimeout(SupervisionError, TimeoutError):
    """``ask()`` got no reply within its timeout; a late reply will be dropped."""

    def __init__(self, path: str, timeout: float, buffered: int) -> None:
        self.path = path
        self.timeout = timeout
        super().__init__(
            f"ask to {path!r} got no reply within {timeout:g}s ({buffered} messages were "
            "waiting in its inbox). The actor is slow, stuck or restarting; a reply that "
            "arrives later is dropped. Raise the timeout or look at the actor's handler."
        )


class MailboxFull(SupervisionError):
    """``tell_nowait()`` found the inbox full."""

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        super().__init__(
            f"inbox of {path!r} is full ({size} messages): the actor is slower than its "
            "senders. Use `await ref.tell(...)` to wait for room (backpressure), or raise "
            "the ChildSpec's inbox_size."
        )


class NotAnActor(SupervisionError):
    """A ref was asked of a child that was declared without an inbox."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"child {path!r} has no inbox, so it cannot be sent messages. Give its ChildSpec "
            "an inbox_size (every Actor needs one; a plain run() child may read one with "
            "ctx.receive())."
        )


class UnknownChild(SupervisionError, LookupError):
    """A sibling ref was asked for an id that its supervisor does not have."""

    def __init__(self, supervisor: str, child: str, known: list[str]) -> None:
        self.supervisor = supervisor
        self.child = child
        super().__init__(
            f"supervisor {supervisor!r} has no child {child!r}; its children are "
            f"{', '.join(known) or '(none)'}. Check the id in the ChildSpec; a child of a "
            "nested supervisor is reached through ctx.parent.sibling(...)."
        )


class DuplicateChild(SupervisionError):
    """A supervisor already has a child with this id."""

    def __init__(self, supervisor: str, child: str) -> None:
        self.supervisor = supervisor
        self.child = child
        super().__init__(
            f"supervisor {supervisor!r} already has a child {child!r}. Ids are unique per "
            "supervisor: look the existing one up (DynamicSupervisor.lookup or "
            "get_or_start) instead of starting it twice."
        )


class MaxChildrenReached(SupervisionError):
    """A dynamic supervisor refused a child because it is at ``max_children``."""

    def __init__(self, supervisor: str, child: str, max_children: int) -> None:
        self.supervisor = supervisor
        self.child = child
        self.max_children = max_children
        super().__init__(
            f"supervisor {supervisor!r} refused child {child!r}: it already supervises "
            f"max_children={max_children}. Stop children you no longer need (or give them an "
            "idle_timeout), or raise max_children."
        )


class ChildStartFailed(SupervisionError):
    """A child raised (or returned) before it called ``task_status.started()``."""

    def __init__(self, supervisor: str, child: str, cause: BaseException | None) -> None:
        self.supervisor = supervisor
        self.child = child
        what = f"{type(cause).__name__}: {cause}" if cause else "it returned before it was ready"
        super().__init__(
            f"supervisor {supervisor!r} could not start child {child!r}: {what}. Children "
            "start in order and each must be ready (on_start returned, or "
            "task_status.started() called) before the next; the cause is chained below."
        )


class RestartLimitExceeded(SupervisionError):
    """A supervisor saw more than ``max_restarts`` restarts within ``max_seconds`` and gave up."""

    def __init__(
        self, supervisor: str, child: str, restarts: int, max_restarts: int, max_seconds: float
    ) -> None:
        self.supervisor = supervisor
        self.child = child
        self.restarts = restarts
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        super().__init__(
            f"supervisor {supervisor!r} gave up: child {child!r} failed again, which makes "
            f"{restarts} restarts within {max_seconds:g}s, over the limit of max_restarts="
            f"{max_restarts} in max_seconds={max_seconds:g}. Its children are stopped and the "
            "failure goes to its parent. Fix the cause chained below, or widen the limit if "
            "the failures are expected."
        )
