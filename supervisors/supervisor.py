"""OTP-style supervisors: start children in order, restart them per strategy, stop in reverse."""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc

from supervisors.actor import Actor, ActorRef, Mailbox, _Ask
from supervisors.clock import Clock, SystemClock
from supervisors.context import Context
from supervisors.errors import (
    ChildStartFailed,
    DuplicateChild,
    NotAnActor,
    RestartLimitExceeded,
    UnknownChild,
)
from supervisors.events import EventBus, EventKind, LifecycleEvent
from supervisors.spec import (
    Backoff,
    ChildCounts,
    ChildInfo,
    ChildKind,
    ChildSpec,
    ChildState,
    Strategy,
    resolve_shutdown,
)

__all__ = ["GiveUpCallback", "Supervisor"]

GiveUpCallback = Callable[[Exception], None]

_NOTHING: Any = object()
_ACTIVE_STATES = ("starting", "running", "restarting")


class _Status:
    """A task status that remembers whether ``started()`` was called and forwards it."""

    __slots__ = ("_outer", "is_started")

    def __init__(self, outer: anyio.abc.TaskStatus[Any]) -> None:
        self._outer = outer
        self.is_started = False

    def started(self, value: object = None) -> None:
        if self.is_started:
            raise RuntimeError("task_status.started() called twice")
        self.is_started = True
        self._outer.started(None)


@dataclass(slots=True)
class _StartFailure:
    """What ``_child_main`` hands to ``tg.start`` when the child failed before it was ready."""

    exc: Exception | None


class _Slot:
    """A child's place in its supervisor: its spec, its inbox and its current incarnation."""

    __slots__ = (
        "attempt",
        "cause",
        "inc",
        "kind",
        "mailbox",
        "restarts",
        "spec",
        "started_at",
        "state",
        "token",
    )

    def __init__(self, spec: ChildSpec, mailbox: Mailbox | None) -> None:
        self.spec = spec
        self.mailbox = mailbox
        self.state: ChildState = "starting"
        self.inc: _Incarnation | None = None
        self.kind: ChildKind | None = None
        self.restarts = 0  # total restarts, for which_children()
        self.attempt = 0  # consecutive restarts, for backoff; reset after a quiet period
        self.cause: BaseException | None = None  # the failure that caused the pending restart
        self.started_at: float | None = None
        self.token = 0  # bumped whenever a scheduled restart is superseded

    def set_state(self, state: ChildState) -> None:
        self.state = state
        # Only Mailbox.close() marks an inbox stopped: it also drains and closes it.
        if self.mailbox is not None and state != "stopped" and self.mailbox.state != "stopped":
            self.mailbox.state = state


class _Incarnation:
    """One run of a child, from ``start(ctx)`` to its exit."""

    __slots__ = (
        "child_sup",
        "ctx",
        "done",
        "exc",
        "graceful",
        "hard",
        "idle_exit",
        "slot",
        "stop_requested",
        "waiting",
    )

    def __init__(self, slot: _Slot, ctx: Context) -> None:
        self.slot = slot
        self.ctx = ctx
        self.done = anyio.Event()
        self.hard: anyio.CancelScope | None = None
        self.graceful: anyio.CancelScope | None = None
        self.waiting = False  # an actor waiting for its next message (safe to interrupt)
        self.stop_requested = False
        self.idle_exit = False
        self.exc: Exception | None = None
        self.child_sup: _SupervisorBase | None = None

    def request_stop(self) -> None:
        self.stop_requested = True
        self.ctx._request_stop()
        if self.graceful is not None and self.waiting:
            self.graceful.cancel()
        if self.child_sup is not None:
            self.child_sup._request_stop()


@dataclass(slots=True)
class _Exit:
    inc: _Incarnation
    exc: Exception | None
    reason: Literal["normal", "exception", "idle", "killed"]


@dataclass(slots=True)
class _RestartDue:
    batch: list[tuple[_Slot, int]]
    trigger: _Slot
    delay: float


@dataclass(slots=True)
class _Wake:
    slot: _Slot


@dataclass(slots=True)
class _StartRequest:
    slot: _Slot
    done: anyio.Event
    error: BaseException | None = None


@dataclass(slots=True)
class _TerminateRequest:
    slot: _Slot
    done: anyio.Event


@dataclass(slots=True)
class _StopRequest:
    pass


_Command = _Exit | _RestartDue | _Wake | _StartRequest | _TerminateRequest | _StopRequest


async def _answer(handle: Callable[[Any], Awaitable[Any]], request: _Ask) -> None:
    """Handle an ask: the reply or the handler's exception goes to the asker."""
    try:
        result = await handle(request.message)
    except Exception as exc:
        request.fail(exc)
        raise  # and the actor crashes: its supervisor restarts it per its spec
    request.reply(result)


class _SupervisorBase:
    """The machinery shared by :class:`Supervisor` and :class:`DynamicSupervisor`.

    Invariant: only the supervisor's main loop changes slots; other tasks (children exiting,
    backoff timers, callers of ``start_child``) post commands to it.
    """

    _strategy: Strategy = "one_for_one"
    _idle_timeout: float | None = None

    def __init__(
        self,
        *,
        name: str,
        max_restarts: int,
        max_seconds: float,
        backoff: Backoff | None,
        clock: Clock | None,
        events: EventBus | None,
        on_give_up: GiveUpCallback | None,
        escalate: Callable[[BaseException], bool] | None = None,
    ) -> None:
        if max_restarts < 0 or not max_seconds > 0:
            raise ValueError(
                f"supervisor {name!r}: need max_restarts >= 0 and max_seconds > 0; got "
                f"{max_restarts!r}, {max_seconds!r}"
            )
        self.name = name
        self.path = name
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.backoff = backoff
        self._clock = clock
        self._events = events
        self._on_give_up = on_give_up
        self._escalate = escalate
        self._parent_ctx: Context | None = None
        self._slots: dict[str, _Slot] = {}
        self._restart_times: deque[float] = deque()
        # Unbounded on purpose: at most one exit and one timer per child, plus requests from
        # callers that each wait for their answer, so it cannot grow without bound.
        self._commands_send, self._commands_receive = anyio.create_memory_object_stream[_Command](
            math.inf
        )
        self._tg: anyio.abc.TaskGroup | None = None
        self._failure: Exception | None = None
        self._stop_requested = False
        self._finished: anyio.Event | None = None
        self._host_tg: anyio.abc.TaskGroup | None = None
        self._hosted_failure: Exception | None = None

    # -- public ----------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = SystemClock()
        return self._clock

    @property
    def events(self) -> EventBus:
        """The tree's lifecycle events; ``with sup.events.subscribe() as stream: ...``."""
        if self._events is None:
            self._events = EventBus()
        return self._events

    def ref(self, child_id: str) -> ActorRef[Any]:
        """The ref of child ``child_id`` (valid across its restarts)."""
        slot = self._slots.get(child_id)
        if slot is None:
            raise UnknownChild(self.path, child_id, list(self._slots))
        if slot.mailbox is None:
            raise NotAnActor(f"{self.path}/{child_id}")
        return ActorRef(slot.mailbox)

    def which_children(self) -> list[ChildInfo]:
        """One row per child, in start order: id, state, kind, restart type, restarts, ref."""
        return [
            ChildInfo(
                id=slot.spec.id,
                state=slot.state,
                kind=slot.kind,
                restart=slot.spec.restart,
                restarts=slot.restarts,
                ref=ActorRef(slot.mailbox) if slot.mailbox is not None else None,
            )
            for slot in self._slots.values()
        ]

    def count_children(self) -> ChildCounts:
        """OTP's counts: specs, active (running) children, supervisors and workers among them."""
        slots = list(self._slots.values())
        return ChildCounts(
            specs=len(slots),
            active=sum(1 for s in slots if s.state == "running"),
            supervisors=sum(1 for s in slots if s.kind == "supervisor"),
            workers=sum(1 for s in slots if s.kind in ("actor", "task")),
        )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order, report ready, then supervise until stopped.

        Returns after :meth:`stop` (or a parent's stop) once every child has stopped, in
        reverse order. Raises :class:`ChildStartFailed` if a child fails during the initial
        start (before ``task_status.started()``) and :class:`RestartLimitExceeded` when the
        restart intensity is exceeded; in both cases every child has been stopped first.

        Error handling: a child's exception never escapes; it is logged, published and
        answered with a restart per the child's restart type and this supervisor's strategy,
        except one that ``escalate`` picks: every child is stopped and ``run`` raises it.
        """
        if self._finished is not None and not self._finished.is_set():
            raise RuntimeError(
                f"supervisor {self.path!r} is already running; a supervisor runs once at a time"
            )
        # A supervisor may run again (its parent restarted it): every run starts afresh, so
        # a handle to the supervisor object stays useful across its restarts.
        self._slots = {}
        self._restart_times.clear()
        self._failure = None
        self._stop_requested = False
        self._commands_send, self._commands_receive = anyio.create_memory_object_stream[_Command](
            math.inf
        )
        self._finished = anyio.Event()
        start_error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                start_error = await self._start_initial()
                if start_error is None:
                    task_status.started()
                    await self._main_loop()
                tg.cancel_scope.cancel()  # pending backoff timers
        finally:
            self._tg = None
            self._answer_pending_requests()
            for slot in list(self._slots.values()):
                if slot.mailbox is not None:
                    slot.mailbox.close("its supervisor stopped")
            self._finished.set()
        if start_error is not None:
            raise start_error
        if self._failure is not None:
            raise self._failure

    def _answer_pending_requests(self) -> None:
        # Requests that arrived after the main loop stopped: nobody will start those children.
        while True:
            try:
                command = self._commands_receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            if type(command) is _StartRequest:
                cause = RuntimeError("its supervisor stopped before it could start the child")
                command.error = ChildStartFailed(self.path, command.slot.spec.id, cause)
                command.done.set()
            elif type(command) is _TerminateRequest:
                command.done.set()

    def request_stop(self) -> None:
        """Ask the supervisor to stop its children in reverse order, without waiting for it.

        Safe to call from one of its own children (``stop()`` there would wait for itself).
        """
        self._request_stop()

    async def stop(self) -> None:
        """Stop every child in reverse start order (each within its shutdown timeout) and return."""
        self._request_stop()
        if self._finished is not None:
            await self._finished.wait()

    # -- embedding -------------------------------------------------------------------------

    async def __aenter__(self) -> _SupervisorBase:
        """Run this supervisor as the root of a tree inside the caller's task.

        The ``async with`` body runs once every child is ready. Leaving the block stops the
        tree gracefully (reverse order). If the tree gives up while the body runs, the body is
        cancelled and :class:`RestartLimitExceeded` comes out of the ``async with`` -- unless
        ``on_give_up`` was given, which is then called with it and the body goes on.
        """
        self._hosted_failure = None
        self._host_tg = anyio.create_task_group()
        await self._host_tg.__aenter__()
        try:
            error = await self._host_tg.start(self._run_hosted)
        except BaseException as exc:
            await self._host_tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if error is not None:
            await self._host_tg.__aexit__(None, None, None)
            raise error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Returns None, never True: what the body raised always propagates (mypy relies on it).
        assert self._host_tg is not None
        host_tg = self._host_tg
        if self._hosted_failure is not None:
            # The tree gave up and cancelled the body; replace that cancellation with the cause.
            await host_tg.__aexit__(None, None, None)
            raise self._hosted_failure
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            # The host is being cancelled: no graceful shutdown, cancel the tree with it.
            await host_tg.__aexit__(exc_type, exc, tb)
            return
        try:
            await self.stop()
        except BaseException as stop_exc:
            await host_tg.__aexit__(type(stop_exc), stop_exc, stop_exc.__traceback__)
            raise
        await host_tg.__aexit__(None, None, None)
        if self._hosted_failure is not None:
            raise self._hosted_failure

    async def _run_hosted(self, *, task_status: anyio.abc.TaskStatus[Any]) -> None:
        status = _Status(task_status)
        try:
            await self.run(task_status=status)
        except Exception as exc:
            if not status.is_started:
                task_status.started(exc)
            elif self._on_give_up is not None:
                self._on_give_up(exc)
            else:
                self._hosted_failure = exc
                assert self._host_tg is not None
                self._host_tg.cancel_scope.cancel()

    # -- for Context ----------------------------------------------------------------------

    def _attach(self, ctx: Context) -> None:
        """Become a child of the supervisor that handed out ``ctx``: inherit path, clock, events."""
        self._parent_ctx = ctx
        self.path = ctx.path
        if self._clock is None:
            self._clock = ctx.clock
        if self._events is None:
            self._events = ctx.events

    def _request_stop(self) -> None:
        if not self._stop_requested and self._tg is not None:
            self._stop_requested = True
            self._post(_StopRequest())

    def _post(self, command: _Command) -> None:
        self._commands_send.send_nowait(command)

    # -- starting --------------------------------------------------------------------------

    def _new_slot(self, spec: ChildSpec) -> _Slot:
        mailbox = None
        if spec.inbox_size is not None:
            mailbox = Mailbox(f"{self.path}/{spec.id}", spec.inbox_size, self.clock)
        return _Slot(spec, mailbox)

    async def _start_initial(self) -> Exception | None:
        for slot in list(self._slots.values()):
            error = await self._start_slot(slot)
            if error is not None:
                self._publish("crashed", slot, exc=error)
                await self._stop_all(f"child {slot.spec.id!r} failed to start")
                failure = ChildStartFailed(self.path, slot.spec.id, error)
                failure.__cause__ = error
                return failure
        return None

    async def _start_slot(
        self, slot: _Slot, *, restart: tuple[int, float] | None = None
    ) -> Exception | None:
        """Start one child and wait until it is ready; return its exception if it failed first."""
        assert self._tg is not None
        ctx = Context(
            child_id=slot.spec.id,
            clock=self.clock,
            events=self.events,
            parent=self._parent_ctx,
            siblings=self,
            mailbox=slot.mailbox,
        )
        inc = _Incarnation(slot, ctx)
        slot.inc = inc
        slot.set_state("starting")
        if slot.mailbox is not None:
            slot.mailbox.wake_requested = False
        result = await self._tg.start(self._child_main, inc)
        if isinstance(result, _StartFailure):
            slot.inc = None
            slot.started_at = None  # it never ran: no quiet period to reset the backoff
            exc = result.exc
            if exc is None:
                exc = RuntimeError(
                    f"child {slot.spec.id!r} returned before it was ready (before on_start "
                    "returned or task_status.started() was called)"
                )
            return exc
        slot.set_state("running")
        slot.started_at = self.clock.monotonic()
        if restart is None:
            self._publish("started", slot)
        else:
            self._publish("restarted", slot, attempt=restart[0], delay=restart[1], exc=slot.cause)
        return None

    async def _child_main(
        self, inc: _Incarnation, *, task_status: anyio.abc.TaskStatus[Any]
    ) -> None:
        status = _Status(task_status)
        exc: Exception | None = None
        try:
            with anyio.CancelScope() as inc.hard:
                try:
                    await self._run_child(inc, status)
                except Exception as error:  # never BaseException: cancellation must propagate
                    exc = error
            killed = inc.hard.cancelled_caught
        finally:
            inc.exc = exc
            inc.done.set()
        if not status.is_started:
            task_status.started(_StartFailure(exc))
            return
        reason: Literal["normal", "exception", "idle", "killed"] = "normal"
        if killed:
            reason = "killed"
        elif exc is not None:
            reason = "exception"
        elif inc.idle_exit:
            reason = "idle"
        self._post(_Exit(inc, exc, reason))

    async def _run_child(self, inc: _Incarnation, status: _Status) -> None:
        slot = inc.slot
        child = slot.spec.start(inc.ctx)
        if isinstance(child, Actor):
            slot.kind = "actor"
            if slot.mailbox is None:
                raise TypeError(
                    f"child {inc.ctx.path!r} is an Actor but its ChildSpec has no inbox_size; "
                    "give it one, e.g. ChildSpec(..., inbox_size=64)"
                )
            await self._run_actor(inc, child, status)
        elif isinstance(child, _SupervisorBase):
            slot.kind = "supervisor"
            inc.child_sup = child
            child._attach(inc.ctx)
            await child.run(task_status=status)
        elif inspect.iscoroutine(child):
            child.close()
            raise TypeError(
                f"the start function of child {inc.ctx.path!r} returned a coroutine; it must "
                "return the child itself (an Actor, a supervisor, an object with "
                "`async def run(*, task_status)`, or such a function), not call it"
            )
        elif hasattr(child, "run"):
            slot.kind = "task"
            await child.run(task_status=status)
        elif callable(child):
            slot.kind = "task"
            await child(task_status=status)
        else:
            raise TypeError(
                f"the start function of child {inc.ctx.path!r} returned {child!r}; expected an "
                "Actor, a supervisor, an object with `async def run(*, task_status)`, or such "
                "a coroutine function"
            )

    async def _run_actor(self, inc: _Incarnation, actor: Actor[Any], status: _Status) -> None:
        await actor.on_start()
        status.started()
        try:
            await self._actor_loop(inc, actor)
        finally:
            await actor.on_stop()

    async def _actor_loop(self, inc: _Incarnation, actor: Actor[Any]) -> None:
        assert inc.slot.mailbox is not None
        receive = inc.slot.mailbox.receive_stream.receive
        handle = actor.handle
        idle_timeout = self._idle_timeout
        clock = self.clock
        item: Any = _NOTHING
        try:
            with anyio.CancelScope() as graceful:
                inc.graceful = graceful
                # The stop signal cancels `graceful` only while the actor waits for a message
                # (inc.waiting); during a handler it only sets inc.stop_requested, so the
                # current message is always finished.
                ctx = inc.ctx
                while not (inc.stop_requested or ctx._stop_self):
                    inc.waiting = True
                    if idle_timeout is None:
                        item = await receive()
                    else:
                        with clock.move_on_after(idle_timeout):
                            item = await receive()
                        if item is _NOTHING:
                            inc.waiting = False
                            inc.idle_exit = True
                            return
                    inc.waiting = False
                    if graceful.cancel_called:
                        break  # taken just as the stop came; handled below, outside the scope
                    if type(item) is _Ask:
                        await _answer(handle, item)
                    else:
                        await handle(item)
                    item = _NOTHING
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return  # the inbox was closed: the child is being removed
        if item is not _NOTHING:
            await (_answer(handle, item) if type(item) is _Ask else handle(item))

    # -- the main loop ---------------------------------------------------------------------

    async def _main_loop(self) -> None:
        while True:
            command = await self._commands_receive.receive()
            if type(command) is _Exit:
                await self._on_exit(command)
            elif type(command) is _RestartDue:
                await self._restart_batch(command.batch, command.trigger, command.delay)
            elif type(command) is _Wake:
                await self._on_wake(command.slot)
            elif type(command) is _StartRequest:
                await self._on_start_request(command)
            elif type(command) is _TerminateRequest:
                await self._on_terminate_request(command)
            elif type(command) is _StopRequest:
                await self._stop_all("its supervisor was stopped")
                return
            if self._failure is not None:
                return

    async def _on_exit(self, command: _Exit) -> None:
        inc = command.inc
        slot = inc.slot
        if slot.inc is not inc or inc.stop_requested:
            return  # stopped on purpose: whoever stopped it has already updated the slot
        slot.inc = None
        if command.reason == "idle":
            self._publish("slept", slot)
            slot.set_state("sleeping")
            mailbox = slot.mailbox
            assert mailbox is not None
            mailbox.wake_requested = False
            if mailbox.buffered() > 0:  # a message arrived while it was going to sleep
                mailbox._wake_if_sleeping()
            return
        exc = command.exc
        if exc is not None and self._escalates(exc):
            await self._fail_with(slot, exc)
            return
        if exc is not None:
            self._publish("crashed", slot, exc=exc)
        else:
            self._publish("stopped", slot)
        restart = slot.spec.restart
        if restart == "temporary" or (restart == "transient" and exc is None):
            how = "it exited normally" if exc is None else f"it crashed ({type(exc).__name__})"
            self._terminate(slot, f"{how} and is {restart}")
            return
        await self._restart(slot, exc)

    async def _restart(self, slot: _Slot, exc: BaseException | None) -> None:
        """Restart ``slot`` (and its group, per strategy) unless the intensity is exceeded."""
        assert self._tg is not None
        now = self.clock.monotonic()
        # OTP's sliding window: the restarts of the last max_seconds, this one included.
        self._restart_times.append(now)
        while self._restart_times and self._restart_times[0] <= now - self.max_seconds:
            self._restart_times.popleft()
        if len(self._restart_times) > self.max_restarts:
            await self._give_up(slot, exc, len(self._restart_times))
            return
        backoff = self.backoff
        started_at = slot.started_at
        if (
            backoff is not None
            and started_at is not None
            and now - started_at >= backoff.quiet_period
        ):
            slot.attempt = 0
        slot.attempt += 1
        for member in self._group(slot):
            member.cause = exc
        delay = backoff.delay(slot.attempt) if backoff is not None else 0.0

        group = self._group(slot)
        for other in reversed(group):
            if other is not slot and other.inc is not None:
                await self._stop_slot(other)
        batch: list[tuple[_Slot, int]] = []
        for member in group:
            if member is not slot and member.spec.restart == "temporary":
                self._terminate(
                    member,
                    f"sibling {slot.spec.id!r} failed and temporary children are not restarted",
                )
                continue
            member.set_state("restarting")
            member.token += 1
            batch.append((member, member.token))
        if delay <= 0:
            # Through the command queue, not a direct call: a child that keeps failing to
            # start would otherwise recurse once per attempt.
            self._post(_RestartDue(batch, slot, 0.0))
        else:
            self._tg.start_soon(self._restart_later, _RestartDue(batch, slot, delay))

    async def _restart_later(self, command: _RestartDue) -> None:
        await self.clock.sleep(command.delay)
        self._post(command)

    async def _restart_batch(
        self, batch: list[tuple[_Slot, int]], trigger: _Slot, delay: float
    ) -> None:
        for member, token in batch:
            if member.token != token or member.state != "restarting" or self._failure is not None:
                continue  # superseded by a later failure (or the supervisor gave up)
            member.restarts += 1
            error = await self._start_slot(member, restart=(trigger.attempt, delay))
            if error is not None and self._escalates(error):
                await self._fail_with(member, error)
                return
            if error is not None:
                # A failed restart counts as one more failure of that child.
                self._publish("crashed", member, exc=error)
                await self._restart(member, error)

    def _group(self, slot: _Slot) -> list[_Slot]:
        """The children restarted together with ``slot``, in start order."""
        if self._strategy == "one_for_one":
            return [slot]
        ordered = list(self._slots.values())
        if self._strategy == "rest_for_one":
            ordered = ordered[ordered.index(slot) :]
        return [s for s in ordered if s is slot or s.state in _ACTIVE_STATES]

    def _escalates(self, exc: BaseException) -> bool:
        return self._escalate is not None and self._escalate(exc)

    async def _fail_with(self, slot: _Slot, exc: Exception) -> None:
        """Akka's Escalate: stop every child and fail with ``exc``, restarting nothing."""
        self._publish("escalated", slot, exc=exc)
        await self._stop_all(f"child {slot.spec.id!r} failed with an error that escalates")
        self._failure = exc

    async def _give_up(self, slot: _Slot, exc: BaseException | None, restarts: int) -> None:
        failure = RestartLimitExceeded(
            self.path, slot.spec.id, restarts, self.max_restarts, self.max_seconds
        )
        failure.__cause__ = exc
        self._publish("gave_up", slot, exc=failure)
        await self._stop_all(f"its supervisor gave up after child {slot.spec.id!r} failed")
        self._failure = failure

    # -- stopping --------------------------------------------------------------------------

    async def _stop_slot(self, slot: _Slot) -> None:
        """Ask a running child to stop, give it its shutdown timeout, then cancel it.

        A child whose timeout is 0 is stopped by cancelling it, as its spec asks: that is a
        stop, not a kill. ``killed`` is published only for a child that outlived a grace.
        """
        inc = slot.inc
        assert inc is not None
        inc.request_stop()
        if not inc.done.is_set():
            grace = resolve_shutdown(slot.spec, slot.kind)
            with self.clock.move_on_after(grace):
                await inc.done.wait()
            if not inc.done.is_set():
                assert inc.hard is not None
                inc.hard.cancel()
                if grace > 0:
                    self._publish("killed", slot)
                await inc.done.wait()
        slot.inc = None
        if inc.exc is not None:
            kind: EventKind = "escalated" if self._escalates(inc.exc) else "crashed"
            self._publish(kind, slot, exc=inc.exc)
        else:
            self._publish("stopped", slot)

    async def _stop_all(self, reason: str) -> None:
        """Stop every child in reverse start order, then close their inboxes."""
        for slot in reversed(list(self._slots.values())):
            if slot.inc is not None:
                await self._stop_slot(slot)
        for slot in list(self._slots.values()):
            self._terminate(slot, reason)

    def _terminate(self, slot: _Slot, reason: str) -> None:
        """The child will not run again: close its inbox (its refs now raise ActorStopped)."""
        slot.set_state("stopped")
        if slot.mailbox is not None:
            slot.mailbox.close(reason)

    # -- dynamic children (used by DynamicSupervisor) --------------------------------------

    async def _on_wake(self, slot: _Slot) -> None:
        if slot.state != "sleeping":
            return
        error = await self._start_slot(slot)
        if error is not None and self._escalates(error):
            await self._fail_with(slot, error)
            return
        if error is not None:
            self._publish("crashed", slot, exc=error)
            await self._restart(slot, error)

    async def _on_start_request(self, command: _StartRequest) -> None:
        raise NotImplementedError  # only a DynamicSupervisor takes start requests

    async def _on_terminate_request(self, command: _TerminateRequest) -> None:
        raise NotImplementedError

    def _publish(
        self,
        kind: EventKind,
        slot: _Slot,
        *,
        attempt: int | None = None,
        delay: float | None = None,
        exc: BaseException | None = None,
    ) -> None:
        self.events.publish(
            LifecycleEvent(
                kind=kind,
                supervisor=self.path,
                child=slot.spec.id,
                at=self.clock.monotonic(),
                attempt=attempt,
                delay=delay,
                exc=exc,
            )
        )


class Supervisor(_SupervisorBase):
    """A supervisor of a fixed list of children (OTP's ``supervisor`` with static child specs).

    Children start in list order, each only once the previous one is ready, and stop in
    reverse order. When a child exits, its restart type decides whether it is restarted
    (``permanent``: always; ``transient``: after an exception; ``temporary``: never) and the
    strategy decides what else restarts with it: ``one_for_one`` (only it),
    ``one_for_all`` (all children) or ``rest_for_one`` (it and the children started after
    it). The others are stopped in reverse order first; temporary ones among them are not
    restarted. More than ``max_restarts`` restarts within ``max_seconds`` (on the clock) and
    the supervisor stops every child and raises :class:`RestartLimitExceeded` to its parent.
    With ``backoff``, each restart waits an exponentially growing, jittered delay. A child's
    exception for which ``escalate(exc)`` is true is restarted never (Akka's Escalate
    directive: no restart can fix it): the supervisor stops every child and raises that
    exception itself to its parent.

    Run it with ``await tg.start(sup.run)``, ``anyio.run(sup.run)``, ``async with sup:``, or
    as a child: ``ChildSpec("pool", lambda ctx: Supervisor([...]))``.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = "one_for_one",
        name: str = "root",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        events: EventBus | None = None,
        on_give_up: GiveUpCallback | None = None,
        escalate: Callable[[BaseException], bool] | None = None,
    ) -> None:
        super().__init__(
            name=name,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            backoff=backoff,
            clock=clock,
            events=events,
            on_give_up=on_give_up,
            escalate=escalate,
        )
        if strategy not in ("one_for_one", "one_for_all", "rest_for_one"):
            raise ValueError(
                f"supervisor {name!r}: strategy must be 'one_for_one', 'one_for_all' or "
                f"'rest_for_one'; got {strategy!r}"
            )
        self._strategy = strategy
        self._specs = list(children)
        seen: set[str] = set()
        for spec in self._specs:
            if spec.id in seen:
                raise DuplicateChild(name, spec.id)
            seen.add(spec.id)

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    async def _start_initial(self) -> Exception | None:
        # Slots (and inboxes) exist before any child starts, so a child can take the ref of
        # a sibling that starts after it; messages wait in that sibling's inbox.
        for spec in self._specs:
            self._slots[spec.id] = self._new_slot(spec)
        return await super()._start_initial()

    async def __aenter__(self) -> Supervisor:
        await super().__aenter__()
        return self
