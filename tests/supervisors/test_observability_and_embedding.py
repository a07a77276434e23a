"""Lifecycle events (structlog and subscribers), introspection, and running inside a host app."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs
from sv_helpers import Boom, Probe, next_event, worker

from supervisors import Backoff, EventBus, FakeClock, RestartLimitExceeded, Supervisor

pytestmark = pytest.mark.anyio


async def test_lifecycle_events_are_logged_with_stable_names_and_fields() -> None:
    clock = FakeClock()
    probe = Probe()
    sup = Supervisor(
        [worker(probe, "w")],
        max_restarts=1,
        backoff=Backoff(min_seconds=0.5, jitter=0, random=lambda: 0.0),
        clock=clock,
    )
    with anyio.fail_after(5), capture_logs() as logs, pytest.raises(RestartLimitExceeded):
        async with sup:
            await sup.ref("w").tell("crash")
            await clock.wait_for_sleepers(1)
            clock.advance(0.5)
            while sup.which_children()[0].state != "running":
                await anyio.lowlevel.checkpoint()
            await sup.ref("w").tell("crash")
            await anyio.sleep_forever()
    names = [entry["event"] for entry in logs]
    assert names == [
        "supervisor.child_started",
        "supervisor.child_crashed",
        "supervisor.child_restarted",
        "supervisor.child_crashed",
        "supervisor.gave_up",
    ]
    restarted = logs[2]
    assert (restarted["child"], restarted["attempt"], restarted["delay"]) == ("w", 1, 0.5)
    assert restarted["error"] == "Boom('w crashed on purpose')"
    assert isinstance(logs[1]["exc_info"], Boom)
    assert logs[1]["log_level"] == "error" and logs[4]["supervisor"] == "root"


async def test_a_program_can_subscribe_to_the_event_stream_of_a_whole_tree() -> None:
    probe = Probe()
    bus = EventBus()
    pool = lambda ctx: Supervisor([worker(probe, "p")])  # noqa: E731
    from supervisors import ChildSpec

    with anyio.fail_after(5), bus.subscribe() as events:
        async with Supervisor([ChildSpec("pool", pool)], events=bus):
            first = await next_event(events, "started")
            second = await next_event(events, "started")
    assert (first.supervisor, first.child) == ("root/pool", "p")
    assert (second.supervisor, second.child) == ("root", "pool")


async def test_a_slow_subscriber_loses_events_instead_of_slowing_the_supervisor() -> None:
    probe = Probe()
    bus = EventBus()
    with anyio.fail_after(5), bus.subscribe(max_buffer=1):
        async with Supervisor([worker(probe, "a"), worker(probe, "b")], events=bus):
            pass
    assert bus.dropped == 3  # started b, stopped b, stopped a


async def test_which_children_and_count_children_describe_the_tree() -> None:
    probe = Probe()
    with anyio.fail_after(5):
        async with Supervisor(
            [worker(probe, "a"), worker(probe, "t", restart="temporary")], strategy="one_for_all"
        ) as sup:
            await sup.ref("t").tell("exit")
            while sup.which_children()[1].state != "stopped":
                await anyio.lowlevel.checkpoint()
            rows = [(c.id, c.state, c.kind, c.restart, c.restarts) for c in sup.which_children()]
            counts = sup.count_children()
    assert rows == [
        ("a", "running", "actor", "permanent", 0),
        ("t", "stopped", "actor", "temporary", 0),
    ]
    assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (2, 1, 0, 2)


async def test_a_tree_embedded_in_a_host_task_group_takes_the_host_down_when_it_gives_up() -> None:
    probe = Probe()
    served: list[int] = []

    async def web_server(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        for n in range(1000):
            served.append(n)
            await anyio.lowlevel.checkpoint()

    # The host's task group wraps what leaves it in an ExceptionGroup, as task groups do.
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with (
            anyio.create_task_group() as host,
            Supervisor([worker(probe, "w")], max_restarts=0) as sup,
        ):
            await host.start(web_server)
            await sup.ref("w").tell("crash")
            await anyio.sleep_forever()
    assert info.group_contains(RestartLimitExceeded, match="child 'w'")
    assert len(served) < 1000  # never a dead tree behind a live server


async def test_cancelling_the_host_cancels_the_tree() -> None:
    probe = Probe()
    with anyio.fail_after(5):
        with anyio.CancelScope() as scope:
            async with Supervisor([worker(probe, "w")]):
                scope.cancel()
                await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert probe.starts == {"w": 1}


async def test_an_exception_in_the_host_body_stops_the_tree_gracefully_and_propagates() -> None:
    probe = Probe()
    with anyio.fail_after(5), pytest.raises(KeyError):
        async with Supervisor([worker(probe, "a"), worker(probe, "b")]):
            raise KeyError("host bug")
    assert probe.stops == ["b", "a"]


async def test_lifecycle_lines_are_debug_and_only_failures_and_restarts_rise_above_it() -> None:
    probe = Probe()
    clock = FakeClock()
    sup = Supervisor(
        [worker(probe, "w")],
        max_restarts=3,
        backoff=Backoff(min_seconds=0.5, jitter=0, random=lambda: 0.0),
        clock=clock,
    )
    with anyio.fail_after(5), capture_logs() as logs:
        async with sup:
            await sup.ref("w").tell("crash")
            await clock.wait_for_sleepers(1)
            clock.advance(0.5)
            while sup.which_children()[0].state != "running":
                await anyio.lowlevel.checkpoint()
    levels = [(entry["event"], entry["log_level"]) for entry in logs]
    assert levels == [
        ("supervisor.child_started", "debug"),
        ("supervisor.child_crashed", "error"),
        ("supervisor.child_restarted", "warning"),
        ("supervisor.child_stopped", "debug"),
    ]
