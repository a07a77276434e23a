"""Actors and the refs that address them: a bounded inbox, handled one message at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from supervisors.clock import Clock
from supervisors.errors import ActorStopped, AskTimeout, MailboxFull

__all__ = ["Actor", "ActorRef", "MailboxState", "MailboxStatistics"]

M = TypeVar("M")

MailboxState = Literal["starting", "running", "restarting", "sleeping", "stopped"]


class Actor(Generic[M]):
    """A message handler that a supervisor runs: subclass it and implement :meth:`handle`.

    The runtime owns the inbox and calls ``handle`` with one message at a time, in the order
    they arrived. What ``handle`` returns is the reply to an ``ask``; for a ``tell`` it is
    dropped. The actor gets its context (its own ref, its siblings' refs, the clock) from the
    ``start`` function of its :class:`~supervisors.ChildSpec`, usually as a constructor
    argument.

    Error handling: an exception from ``handle`` is sent to the asker (if the message was an
    ``ask``) and then crashes this actor; its supervisor restarts a fresh instance per the
    child's restart type. The inbox survives the restart, so messages queued behind the
    failing one are handled by the new instance; the failing message itself is not retried.
    """

    async def on_start(self) -> None:
        """Get ready; the supervisor starts the next child only after this returns."""

    async def handle(self, message: M) -> Any:
        """Handle one message; the return value is the reply to an ``ask``."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle(message)")

    async def on_stop(self) -> None:
        """Clean up; called when the actor stops after ``on_start`` succeeded, crash included."""


class _Ask:
    """An ask in flight: the message and a one-shot slot for its reply."""

    __slots__ = ("done", "error", "message", "result")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def reply(self, result: Any) -> None:
        # A reply after the asker gave up lands here and is dropped with the _Ask.
        self.result = result
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A snapshot of one inbox: what is buffered and who is waiting to send."""

    path: str
    state: MailboxState
    buffered: int
    max_buffer: float
    waiting_senders: int


class Mailbox:
    """The inbox of one supervised child. It belongs to the child's slot, not to one
    incarnation of the child, so it outlives restarts (and idle sleep)."""

    __slots__ = (
        "_receive",
        "_send",
        "clock",
        "path",
        "size",
        "state",
        "stopped_reason",
        "wake",
        "wake_requested",
    )

    def __init__(self, path: str, size: int, clock: Clock) -> None:
        self.path = path
        self.size = size
        self.clock = clock
        self._send: MemoryObjectSendStream[Any]
        self._receive: MemoryObjectReceiveStream[Any]
        self._send, self._receive = anyio.create_memory_object_stream[Any](size)
        self.state: MailboxState = "starting"
        self.stopped_reason = ""
        # Set by a dynamic supervisor: called (once per sleep) when a message reaches a
        # sleeping child.
        self.wake: Callable[[], None] | None = None
        self.wake_requested = False

    @property
    def receive_stream(self) -> MemoryObjectReceiveStream[Any]:
        return self._receive

    def buffered(self) -> int:
        return self._receive.statistics().current_buffer_used

    def statistics(self) -> MailboxStatistics:
        stats = self._receive.statistics()
        return MailboxStatistics(
            path=self.path,
            state=self.state,
            buffered=stats.current_buffer_used,
            max_buffer=stats.max_buffer_size,
            waiting_senders=stats.tasks_waiting_send,
        )

    def _wake_if_sleeping(self) -> None:
        if self.state == "sleeping" and not self.wake_requested and self.wake is not None:
            self.wake_requested = True
            self.wake()

    def close(self, reason: str) -> None:
        """Refuse every further message; fail the asks still queued with :class:`ActorStopped`."""
        if self.state == "stopped":
            return
        self.state = "stopped"
        self.stopped_reason = reason
        # Draining also takes the items of senders blocked on a full inbox.
        while True:
            try:
                item = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if type(item) is _Ask:
                item.fail(ActorStopped(self.path, reason))
        # Closing the receiving end makes blocked and later sends raise BrokenResourceError.
        self._receive.close()
        self._send.close()


class ActorRef(Generic[M]):
    """The address of a supervised child: valid across its restarts.

    A ref addresses the child's slot in its supervisor, not one incarnation: while the child
    restarts (or sleeps), messages wait in its inbox and are handled by the next incarnation
    (a sleeping dynamic child is woken by them). Once the child has stopped for good (not
    restarted per its restart type, removed from a dynamic supervisor, or its supervisor
    stopped) every ``tell``/``ask`` raises :class:`ActorStopped`, and so does an ``ask``
    that was still queued.
    """

    __slots__ = ("_mailbox",)

    def __init__(self, mailbox: Mailbox) -> None:
        self._mailbox = mailbox

    @property
    def path(self) -> str:
        """The child's path in the tree, e.g. ``root/rooms/run-42``."""
        return self._mailbox.path

    @property
    def alive(self) -> bool:
        """True until the child has stopped for good."""
        return self._mailbox.state != "stopped"

    def __repr__(self) -> str:
        return f"<ActorRef {self._mailbox.path} {self._mailbox.state}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._mailbox is self._mailbox

    def __hash__(self) -> int:
        return id(self._mailbox)

    async def tell(self, message: M) -> None:
        """Send ``message``; wait while the inbox is full (backpressure).

        Raises :class:`ActorStopped` if the child has stopped for good (also while waiting).
        """
        mailbox = self._mailbox
        if mailbox.state == "sleeping":
            mailbox._wake_if_sleeping()
        try:
            await mailbox._send.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ActorStopped(mailbox.path, mailbox.stopped_reason) from None

    def tell_nowait(self, message: M) -> None:
        """Send ``message`` now or raise :class:`MailboxFull` (or :class:`ActorStopped`)."""
        mailbox = self._mailbox
        if mailbox.state == "sleeping":
            mailbox._wake_if_sleeping()
        try:
            mailbox._send.send_nowait(message)
        except anyio.WouldBlock:
            raise MailboxFull(mailbox.path, mailbox.size) from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ActorStopped(mailbox.path, mailbox.stopped_reason) from None

    # The timeout is a parameter on purpose: it is read on the supervisor's clock, which
    # a caller's cancel scope cannot be.
    async def ask(self, message: M, *, timeout: float) -> Any:  # noqa: ASYNC109
        """Send ``message`` and return the handler's reply; re-raise the handler's exception.

        ``timeout`` (seconds on the supervisor's clock) covers waiting for room in the inbox
        and for the reply. On timeout raises :class:`AskTimeout`; a reply that arrives later
        is dropped and does not affect the actor.
        """
        mailbox = self._mailbox
        request = _Ask(message)
        with mailbox.clock.move_on_after(timeout):
            await self.tell(request)  # type: ignore[arg-type]
            await request.done.wait()
        if not request.done.is_set():
            raise AskTimeout(mailbox.path, timeout, mailbox.buffered())
        if request.error is not None:
            raise request.error
        return request.result

    def statistics(self) -> MailboxStatistics:
        """How many messages wait in the inbox and how many senders wait for room."""
        return self._mailbox.statistics()
