"""DynamicSupervisor: children on demand by key, the registry, max_children, idle sleep and wake."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sv_helpers import Probe, Worker, next_event, worker

from supervisors import (
    Actor,
    ActorStopped,
    ChildSpec,
    ChildStartFailed,
    Context,
    DuplicateChild,
    DynamicSupervisor,
    FakeClock,
    MaxChildrenReached,
    Restart,
    Supervisor,
)

pytestmark = pytest.mark.anyio


def rooms(probe: Probe, *, restart: Restart = "transient", **kwargs: Any) -> DynamicSupervisor:
    return DynamicSupervisor(
        spec_for=lambda key: worker(probe, key, restart=restart), name="rooms", **kwargs
    )


async def test_children_start_on_demand_by_key_and_lookup_finds_them() -> None:
    probe = Probe()
    with anyio.fail_after(5):
        async with rooms(probe) as sup:
            assert sup.lookup("run-1") is None
            first = await sup.get_or_start("run-1")
            again = await sup.get_or_start("run-1")
            assert first == again == sup.lookup("run-1")
            assert await first.ask("hello", timeout=5) == ("run-1", "hello", 1)
            await sup.get_or_start("run-2")
            assert sup.keys() == ["run-1", "run-2"] and len(sup) == 2 and "run-2" in sup
            assert first.path == "rooms/run-1"
    assert probe.starts == {"run-1": 1, "run-2": 1}
    assert not first.alive


async def test_a_duplicate_id_and_a_full_supervisor_are_refused_with_clear_errors() -> None:
    probe = Probe()
    with anyio.fail_after(5):
        async with rooms(probe, max_children=2) as sup:
            await sup.start_child(worker(probe, "a"))
            with pytest.raises(DuplicateChild, match="'rooms' already has a child 'a'"):
                await sup.start_child(worker(probe, "a"))
            await sup.get_or_start("b")
            with pytest.raises(MaxChildrenReached, match=r"refused child 'c'.*max_children=2"):
                await sup.get_or_start("c")
            await sup.terminate_child("a")
            await sup.get_or_start("c")  # room again


async def test_the_registry_never_returns_a_child_that_has_stopped_for_good() -> None:
    probe = Probe()
    sup = rooms(probe, restart="transient")
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            done = await sup.get_or_start("done")
            assert await done.ask("exit", timeout=5) == "bye"  # exits normally: not restarted
            await next_event(events, "stopped", "done")
            assert sup.lookup("done") is None and "done" not in sup
            with pytest.raises(ActorStopped, match="'rooms/done' has stopped"):
                await done.tell("late")

            temp = await sup.start_child(worker(probe, "temp", restart="temporary"))
            assert temp is not None
            await temp.tell("crash")
            await next_event(events, "crashed", "temp")
            assert sup.lookup("temp") is None

            gone = await sup.get_or_start("gone")
            await sup.terminate_child("gone")
            assert sup.lookup("gone") is None and not gone.alive

            # A new child under an old id is a new entry; the old ref stays dead.
            fresh = await sup.get_or_start("done")
            assert fresh != done and fresh.alive and not done.alive


async def test_a_crashing_dynamic_child_is_restarted_and_keeps_its_entry_and_ref() -> None:
    probe = Probe()
    sup = rooms(probe, restart="transient")
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            ref = await sup.get_or_start("r")
            await ref.tell("crash")
            await next_event(events, "restarted", "r")
            assert sup.lookup("r") == ref
            assert await ref.ask("x", timeout=5) == ("r", "x", 1)
    assert probe.starts["r"] == 2


async def test_an_idle_child_sleeps_and_the_next_message_wakes_a_fresh_instance() -> None:
    clock = FakeClock()
    probe = Probe()
    sup = rooms(probe, idle_timeout=30, clock=clock)
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            ref = await sup.get_or_start("r")
            assert await ref.ask("a", timeout=5) == ("r", "a", 1)
            await clock.wait_for_sleepers(1)  # the actor waits for a message, with a deadline
            clock.advance(29)
            await anyio.lowlevel.checkpoint()
            assert sup.which_children()[0].state == "running"
            clock.advance(1)
            await next_event(events, "slept", "r")
            assert probe.stops == ["r"]  # on_stop ran
            assert sup.lookup("r") == ref  # asleep, not gone
            assert ref.statistics().state == "sleeping"
            assert sup.count_children().active == 0
            await ref.tell("b")  # wakes it
            await next_event(events, "started", "r")
            assert await ref.ask("c", timeout=5) == ("r", "c", 2)
    assert probe.starts["r"] == 2
    assert [m for _, m in probe.handled] == ["a", "b", "c"]


async def test_a_dynamic_child_that_fails_to_start_is_not_registered() -> None:
    class Broken(Actor[Any]):
        async def on_start(self) -> None:
            raise OSError("no such run")

    with anyio.fail_after(5):
        async with DynamicSupervisor(
            spec_for=lambda key: ChildSpec(key, lambda ctx: Broken(), inbox_size=1)
        ) as sup:
            with pytest.raises(
                ChildStartFailed, match="could not start child 'x': OSError: no such run"
            ):
                await sup.get_or_start("x")
            assert sup.lookup("x") is None


async def test_a_dynamic_supervisor_nested_in_a_tree_is_reached_through_its_object() -> None:
    probe = Probe()
    room_sup = rooms(probe)

    class Router(Actor[str]):
        def __init__(self, ctx: Context) -> None:
            self.ctx = ctx

        async def handle(self, message: str) -> Any:
            room = await room_sup.get_or_start(message)
            return await room.ask("hi", timeout=5)

    with anyio.fail_after(5):
        async with Supervisor(
            [ChildSpec("rooms", lambda ctx: room_sup), ChildSpec("router", Router, inbox_size=4)],
            strategy="rest_for_one",
        ) as tree:
            assert await tree.ref("router").ask("run-9", timeout=5) == ("run-9", "hi", 1)
            assert room_sup.path == "root/rooms"
            assert tree.count_children().supervisors == 1
    assert isinstance(Worker, type)


async def test_a_message_that_arrives_while_a_child_falls_asleep_wakes_it_again() -> None:
    clock = FakeClock()
    in_on_stop = anyio.Event()
    release = anyio.Event()
    handled: list[str] = []
    got_it = anyio.Event()

    class Sleepy(Actor[str]):
        async def handle(self, message: str) -> None:
            handled.append(message)
            got_it.set()

        async def on_stop(self) -> None:
            if not release.is_set():
                in_on_stop.set()
                await release.wait()

    sup = DynamicSupervisor(
        spec_for=lambda key: ChildSpec(key, lambda ctx: Sleepy(), inbox_size=4),
        idle_timeout=10,
        clock=clock,
    )
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            ref = await sup.get_or_start("r")
            await clock.wait_for_sleepers(1)
            clock.advance(10)
            await in_on_stop.wait()  # going to sleep, not asleep yet
            await ref.tell("in between")
            release.set()
            await next_event(events, "slept", "r")
            await next_event(events, "started", "r")
            await got_it.wait()
    assert handled == ["in between"]
