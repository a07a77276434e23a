"""Supervisor semantics: restart types x strategies, intensity, backoff, start/stop, nesting."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sv_helpers import Boom, Probe, Worker, next_event, worker

from supervisors import (
    Backoff,
    ChildSpec,
    ChildStartFailed,
    Context,
    FakeClock,
    LifecycleEvent,
    RestartLimitExceeded,
    Supervisor,
)

pytestmark = pytest.mark.anyio

RESTARTED_WITH = {
    "one_for_one": {"b"},
    "one_for_all": {"a", "b", "c"},
    "rest_for_one": {"b", "c"},
}


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
@pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
@pytest.mark.parametrize("how", ["crash", "exit"])
async def test_the_restart_type_decides_whether_and_the_strategy_decides_who_restarts(
    strategy: Any, restart: Any, how: str
) -> None:
    probe = Probe()
    sup = Supervisor(
        [worker(probe, "a"), worker(probe, "b", restart=restart), worker(probe, "c")],
        strategy=strategy,
    )
    restarts = restart == "permanent" or (restart == "transient" and how == "crash")
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            await sup.ref("b").tell(how)
            if restarts:
                last = max(RESTARTED_WITH[strategy])  # children restart in order a, b, c
                await next_event(events, "restarted", last)
                assert await sup.ref("b").ask("ping", timeout=5) == ("b", "ping", 1)
            else:
                await next_event(events, "crashed" if how == "crash" else "stopped", "b")
                assert not sup.ref("b").alive
            states = {c.id: c.state for c in sup.which_children()}
    expected = {"a": 1, "b": 1, "c": 1}
    if restarts:
        for child_id in RESTARTED_WITH[strategy]:
            expected[child_id] = 2
    assert dict(probe.starts) == expected
    assert states == {"a": "running", "b": "running" if restarts else "stopped", "c": "running"}


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_a_temporary_child_stopped_by_a_siblings_failure_is_not_restarted(
    strategy: Any,
) -> None:
    probe = Probe()
    sup = Supervisor(
        [worker(probe, "a"), worker(probe, "b"), worker(probe, "c", restart="temporary")],
        strategy=strategy,
    )
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            await sup.ref("b").tell("crash")
            await next_event(events, "restarted", "b")
            assert not sup.ref("c").alive
            assert sup.ref("b").alive
    assert probe.starts["c"] == 1


async def test_a_transient_child_stopped_by_a_siblings_failure_is_restarted_with_it() -> None:
    probe = Probe()
    sup = Supervisor(
        [worker(probe, "a", restart="transient"), worker(probe, "b")], strategy="one_for_all"
    )
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            await sup.ref("b").tell("crash")
            await next_event(events, "restarted", "b")
            assert sup.ref("a").alive
    assert dict(probe.starts) == {"a": 2, "b": 2}


async def test_the_supervisor_gives_up_after_more_than_max_restarts_within_max_seconds() -> None:
    clock = FakeClock()
    probe = Probe()
    sup = Supervisor(
        [worker(probe, "a"), worker(probe, "b")], max_restarts=2, max_seconds=10, clock=clock
    )
    with (
        anyio.fail_after(5),
        sup.events.subscribe() as events,
        pytest.raises(RestartLimitExceeded) as info,
    ):
        async with sup:
            for _ in range(2):
                await sup.ref("b").tell("crash")
                await next_event(events, "restarted", "b")
            clock.advance(9.9)  # both restarts are still inside the 10 s window
            await sup.ref("b").tell("crash")
            await anyio.sleep_forever()  # the give-up cancels the body
    error = info.value
    assert (error.supervisor, error.child, error.restarts) == ("root", "b", 3)
    assert "child 'b'" in str(error) and "max_restarts=2 in max_seconds=10" in str(error)
    assert isinstance(error.__cause__, Boom)
    assert probe.stops[-2:] == ["b", "a"]  # everything stopped, in reverse order


async def test_restarts_older_than_the_window_do_not_count() -> None:
    clock = FakeClock()
    probe = Probe()
    sup = Supervisor([worker(probe, "b")], max_restarts=2, max_seconds=10, clock=clock)
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            for _ in range(6):
                await sup.ref("b").tell("crash")
                await next_event(events, "restarted", "b")
                clock.advance(5.01)  # at most two restarts in any 10 s
    assert probe.starts["b"] == 7


async def test_an_inner_supervisor_that_gives_up_escalates_exactly_once_to_its_parent() -> None:
    clock = FakeClock()
    probe = Probe()
    inner = lambda ctx: Supervisor([worker(probe, "w")], max_restarts=1, max_seconds=10)  # noqa: E731
    root = Supervisor(
        [worker(probe, "before"), ChildSpec("inner", inner), worker(probe, "after")],
        strategy="one_for_one",
        max_restarts=3,
        max_seconds=10,
        clock=clock,
    )
    seen: list[LifecycleEvent] = []
    with anyio.fail_after(5), root.events.subscribe() as events:
        async with root:
            assert root.which_children()[1].kind == "supervisor"
            for _ in range(2):
                await ref_of(root, "inner", "w").tell("crash")
            while (event := await events.receive()).kind != "restarted" or event.child != "inner":
                seen.append(event)
            assert await ref_of(root, "inner", "w").ask("ok", timeout=5) == ("w", "ok", 1)
    gave_up = [e for e in seen if e.kind == "gave_up"]
    assert [(e.supervisor, e.child) for e in gave_up] == [("root/inner", "w")]
    assert [e.child for e in seen if e.kind == "crashed" and e.supervisor == "root"] == ["inner"]
    crash = next(e for e in seen if e.kind == "crashed" and e.child == "inner")
    assert isinstance(crash.exc, RestartLimitExceeded)
    assert dict(probe.starts) == {"before": 1, "w": 3, "after": 1}


def ref_of(root: Supervisor, *path: str) -> Any:
    """A grandchild's ref, through the running child supervisor."""
    inc = root._slots[path[0]].inc
    assert inc is not None and inc.child_sup is not None
    return inc.child_sup.ref(path[1])


async def test_backoff_delays_grow_and_reset_after_a_quiet_period() -> None:
    clock = FakeClock()
    probe = Probe()
    backoff = Backoff(min_seconds=1, max_seconds=4, jitter=0.5, reset_after=60, random=lambda: 0.0)
    sup = Supervisor(
        [worker(probe, "w")], max_restarts=100, max_seconds=1, backoff=backoff, clock=clock
    )
    delays: list[float | None] = []
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            for _ in range(4):
                await sup.ref("w").tell("crash")
                await clock.wait_for_sleepers(1)
                assert sup.which_children()[0].state == "restarting"
                clock.advance(clock.next_deadline - clock.monotonic())
                delays.append((await next_event(events, "restarted", "w")).delay)
            clock.advance(60)  # a quiet minute: the next failure starts from min_seconds again
            await sup.ref("w").tell("crash")
            await clock.wait_for_sleepers(1)
            clock.advance(1)
            restarted = await next_event(events, "restarted", "w")
    assert delays == [1, 2, 4, 4]
    assert (restarted.attempt, restarted.delay) == (1, 1)


def test_backoff_jitter_adds_at_most_its_fraction() -> None:
    assert Backoff(min_seconds=1, max_seconds=8, jitter=0.25, random=lambda: 1.0).delay(3) == 5.0
    assert Backoff(min_seconds=1, max_seconds=8, jitter=0.25, random=lambda: 0.0).delay(30) == 8.0
    with pytest.raises(ValueError, match="min_seconds <= max_seconds"):
        Backoff(min_seconds=5, max_seconds=1)


async def test_children_start_in_order_each_ready_before_the_next_starts() -> None:
    order: list[str] = []

    def slow_task(name: str) -> Any:
        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            order.append(f"{name} starting")
            await anyio.lowlevel.checkpoint()  # still not ready: the next child must wait
            await anyio.lowlevel.checkpoint()
            order.append(f"{name} ready")
            task_status.started()
            await anyio.sleep_forever()

        return lambda ctx: run

    with anyio.fail_after(5):
        async with Supervisor([ChildSpec(n, slow_task(n), shutdown=0) for n in "abc"]):
            pass
    assert order == [f"{n} {s}" for n in "abc" for s in ("starting", "ready")]


async def test_children_stop_in_reverse_order_and_a_stuck_one_is_cancelled_after_its_timeout() -> (
    None
):
    clock = FakeClock()
    probe = Probe()
    never = anyio.Event()
    sup = Supervisor(
        [worker(probe, "a"), worker(probe, "b"), worker(probe, "stuck", shutdown=3)], clock=clock
    )
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            await sup.ref("stuck").tell(("block", never))
            while sup.ref("stuck").statistics().buffered:
                await anyio.lowlevel.checkpoint()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.stop)
                await clock.wait_for_sleepers(1)  # waiting out stuck's shutdown timeout
                assert probe.stops == []
                clock.advance(2.9)
                await anyio.lowlevel.checkpoint()
                assert probe.stops == []
                clock.advance(0.1)
            kinds = [(e.kind, e.child) async for e in drain(events) if e.kind != "started"]
    assert kinds == [("killed", "stuck"), ("stopped", "stuck"), ("stopped", "b"), ("stopped", "a")]
    # The killed one's on_stop still ran (it has no await that cancellation could interrupt).
    assert probe.stops == ["stuck", "b", "a"]


async def drain(events: Any) -> Any:
    while True:
        try:
            yield events.receive_nowait()
        except anyio.WouldBlock:
            return


async def test_a_task_child_gets_the_stop_signal_and_drains_within_its_timeout() -> None:
    log: list[str] = []

    class Loop:
        def __init__(self, ctx: Context) -> None:
            self.ctx = ctx

        async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            with self.ctx.stop_scope():
                await anyio.sleep_forever()
            await anyio.lowlevel.checkpoint()  # the drain may await: it is no longer cancelled
            log.append("drained")

    with anyio.fail_after(5):
        async with Supervisor([ChildSpec("loop", Loop)]):
            pass
    assert log == ["drained"]


async def test_a_child_that_fails_during_start_fails_the_supervisors_start() -> None:
    probe = Probe()

    class BadStart(Exception):
        pass

    async def failing(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        raise BadStart("cannot open the database")

    sup = Supervisor(
        [worker(probe, "a"), ChildSpec("db", lambda ctx: failing), worker(probe, "never")]
    )
    with anyio.fail_after(5), pytest.raises(ChildStartFailed) as info:
        async with sup:
            pytest.fail("the body must not run")
    assert "could not start child 'db': BadStart: cannot open the database" in str(info.value)
    assert isinstance(info.value.__cause__, BadStart)
    assert probe.stops == ["a"]
    assert "never" not in probe.starts


async def test_a_child_that_fails_while_restarting_counts_toward_the_intensity() -> None:
    probe = Probe()
    attempts = 0

    def flaky(ctx: Context) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            raise Boom("dependency down")
        return Worker(ctx, probe)

    sup = Supervisor([ChildSpec("w", flaky, inbox_size=4)], max_restarts=3, max_seconds=5)
    with anyio.fail_after(5), pytest.raises(RestartLimitExceeded) as info:
        async with sup:
            await sup.ref("w").tell("crash")
            await anyio.sleep_forever()
    assert info.value.restarts == 4
    assert attempts == 4  # the first start, then three failed restarts


async def test_the_root_can_report_giving_up_through_a_callback_instead() -> None:
    probe = Probe()
    failures: list[Exception] = []
    told = anyio.Event()

    def on_give_up(error: Exception) -> None:
        failures.append(error)
        told.set()

    with anyio.fail_after(5):
        async with Supervisor([worker(probe, "w")], max_restarts=0, on_give_up=on_give_up) as sup:
            await sup.ref("w").tell("crash")
            await told.wait()  # the body goes on: the host decides
    assert isinstance(failures[0], RestartLimitExceeded)


async def test_a_supervisor_runs_as_the_main_of_a_program_and_stops_when_asked() -> None:
    probe = Probe()
    sup = Supervisor([worker(probe, "w")])
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            assert await sup.ref("w").ask("x", timeout=5) == ("w", "x", 1)
            await sup.stop()
    assert probe.stops == ["w"]
    assert sup.count_children().active == 0


async def test_nested_supervisors_stop_depth_first_in_reverse_order() -> None:
    probe = Probe()
    pool = lambda ctx: Supervisor([worker(probe, "p1"), worker(probe, "p2")])  # noqa: E731
    with anyio.fail_after(5):
        async with Supervisor(
            [worker(probe, "first"), ChildSpec("pool", pool), worker(probe, "last")]
        ) as sup:
            counts = sup.count_children()
    assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (3, 3, 1, 2)
    assert probe.stops == ["last", "p2", "p1", "first"]


def test_child_specs_are_checked_when_written() -> None:
    with pytest.raises(ValueError, match="restart must be"):
        ChildSpec("x", lambda ctx: None, restart="always")  # type: ignore[arg-type,return-value]
    with pytest.raises(Exception, match="already has a child 'x'"):
        Supervisor([ChildSpec("x", lambda ctx: None), ChildSpec("x", lambda ctx: None)])  # type: ignore[arg-type,return-value]
    assert math.isinf(Supervisor([]).max_seconds) is False


async def test_a_child_that_keeps_failing_to_start_grows_its_backoff_until_the_limit() -> None:
    clock = FakeClock()
    probe = Probe()
    healthy = True

    def start(ctx: Context) -> Any:
        if not healthy:
            raise Boom("dependency down")
        return Worker(ctx, probe)

    backoff = Backoff(min_seconds=1, max_seconds=8, jitter=0, reset_after=60)
    sup = Supervisor(
        [ChildSpec("w", start, inbox_size=4)],
        max_restarts=4,
        max_seconds=1000,
        backoff=backoff,
        clock=clock,
    )
    delays = []
    with anyio.fail_after(5), pytest.raises(RestartLimitExceeded):
        async with sup:
            clock.advance(100)  # it ran for a long, quiet time before failing
            healthy = False
            await sup.ref("w").tell("crash")
            while True:
                await clock.wait_for_sleepers(1)
                delays.append(clock.next_deadline - clock.monotonic())
                clock.advance(delays[-1])
    assert delays == [1, 2, 4, 8]


async def test_many_immediate_restarts_do_not_recurse() -> None:
    attempts = 0

    def start(ctx: Context) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            raise Boom("always fails")
        return Worker(ctx, Probe())

    sup = Supervisor([ChildSpec("w", start, inbox_size=1)], max_restarts=1500, max_seconds=60)
    # 1500 restarts take well under a second on a quiet machine; the deadline (inside the
    # 60-second window, so the limit is still what ends it) only catches a hang.
    with anyio.fail_after(50), pytest.raises(RestartLimitExceeded):
        async with sup:
            await sup.ref("w").tell("crash")
            await anyio.sleep_forever()
    assert attempts == 1501  # the first start, then 1500 failed restarts


async def test_a_child_with_no_grace_is_stopped_by_cancelling_it_which_is_not_a_kill() -> None:
    # shutdown=0 asks to be cancelled at once (a task that sleeps between rounds, say): its stop
    # is the designed one, so it is reported as stopped, never as killed.
    probe = Probe()
    never = anyio.Event()
    sup = Supervisor([worker(probe, "a"), worker(probe, "sweeper", shutdown=0)])
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            await sup.ref("sweeper").tell(("block", never))
            while sup.ref("sweeper").statistics().buffered:
                await anyio.lowlevel.checkpoint()
        kinds = [(e.kind, e.child) async for e in drain(events) if e.kind != "started"]
    assert kinds == [("stopped", "sweeper"), ("stopped", "a")]


class Unfixable(Exception):
    """What the escalation tests' supervisors escalate: no restart could fix it."""


class Fatal(Worker):
    async def handle(self, message: Any) -> Any:
        if message == "fatal":
            raise Unfixable(f"{self.ctx.id} cannot go on")
        return await super().handle(message)


async def test_an_escalated_error_restarts_nothing_and_comes_out_of_every_level_as_itself() -> None:
    probe = Probe()
    fatal = ChildSpec("w", lambda ctx: Fatal(ctx, probe), inbox_size=8)

    def escalate(exc: BaseException) -> bool:
        return isinstance(exc, Unfixable)

    inner = lambda ctx: Supervisor([fatal, worker(probe, "x")], max_restarts=5, escalate=escalate)  # noqa: E731
    root = Supervisor(
        [worker(probe, "before"), ChildSpec("inner", inner)],
        max_restarts=5,
        escalate=escalate,
    )
    failures: list[Exception] = []

    async def run_root(*, task_status: Any) -> None:
        try:
            await root.run(task_status=task_status)
        except Unfixable as exc:
            failures.append(exc)

    with anyio.fail_after(5), root.events.subscribe(max_buffer=1000) as events:
        async with anyio.create_task_group() as tg:
            await tg.start(run_root)
            # An ordinary crash is still restarted...
            await ref_of(root, "inner", "w").tell("crash")
            await next_event(events, "restarted", "w")
            # ...an escalated one is not: both levels stop and fail with it.
            await ref_of(root, "inner", "w").tell("fatal")
        seen: list[LifecycleEvent] = []
        with contextlib.suppress(anyio.WouldBlock):
            while True:
                seen.append(events.receive_nowait())
    assert [str(exc) for exc in failures] == ["w cannot go on"]
    escalated = [(e.supervisor, e.child) for e in seen if e.kind == "escalated"]
    assert escalated == [("root/inner", "w"), ("root", "inner")]
    assert [e for e in seen if e.kind in ("crashed", "restarted", "gave_up")] == []
    assert dict(probe.starts) == {"before": 1, "w": 2, "x": 1}
    # Every child was stopped (an actor that raised runs its on_stop too).
    assert sorted(probe.stops) == ["before", "w", "w", "x"]
