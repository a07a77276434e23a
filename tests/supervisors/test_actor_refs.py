"""Actors and refs: tell, tell_nowait, ask, replies, errors, statistics, refs across restarts."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sv_helpers import Boom, Probe, Worker, next_event, worker

from supervisors import (
    Actor,
    ActorStopped,
    AskTimeout,
    Backoff,
    ChildSpec,
    Context,
    FakeClock,
    MailboxFull,
    NotAnActor,
    Supervisor,
    UnknownChild,
)

pytestmark = pytest.mark.anyio


async def test_ask_returns_the_handlers_reply_and_tell_keeps_order() -> None:
    probe = Probe()
    with anyio.fail_after(5):
        async with Supervisor([worker(probe, "w")]) as sup:
            ref = sup.ref("w")
            for n in range(5):
                await ref.tell(n)
            assert await ref.ask("last", timeout=5) == ("w", "last", 6)
    assert probe.handled == [("w", n) for n in range(5)] + [("w", "last")]


async def test_tell_waits_while_the_inbox_is_full_and_tell_nowait_raises_mailbox_full() -> None:
    probe = Probe()
    release = anyio.Event()
    with anyio.fail_after(5):
        async with (
            Supervisor([worker(probe, "w", inbox_size=2)]) as sup,
            anyio.create_task_group() as tg,
        ):
            ref = sup.ref("w")
            ref.tell_nowait(("block", release))
            while ref.statistics().buffered:  # the actor takes the blocking message
                await anyio.lowlevel.checkpoint()
            ref.tell_nowait(1)
            ref.tell_nowait(2)
            with pytest.raises(MailboxFull, match=r"inbox of 'root/w' is full \(2 messages\)"):
                ref.tell_nowait(3)
            tg.start_soon(ref.tell, 3)  # waits: backpressure
            while ref.statistics().waiting_senders == 0:
                await anyio.lowlevel.checkpoint()
            stats = ref.statistics()
            assert (stats.buffered, stats.max_buffer, stats.waiting_senders) == (2, 2, 1)
            release.set()
            assert await ref.ask("after", timeout=5) == ("w", "after", 4)
    assert [m for _, m in probe.handled] == [1, 2, 3, "after"]


async def test_ask_times_out_and_a_late_reply_is_dropped_without_hurting_the_actor() -> None:
    clock = FakeClock()
    probe = Probe()
    release = anyio.Event()
    with anyio.fail_after(5):
        async with Supervisor([worker(probe, "w")], clock=clock) as sup:
            ref = sup.ref("w")
            async with anyio.create_task_group() as tg:

                async def ask_and_time_out() -> None:
                    with pytest.raises(AskTimeout, match="no reply within 2s"):
                        await ref.ask(("block", release), timeout=2)

                tg.start_soon(ask_and_time_out)
                await clock.wait_for_sleepers(1)
                clock.advance(2)
            release.set()  # the handler now replies to an asker that is gone
            assert await ref.ask("next", timeout=5) == ("w", "next", 1)
            assert probe.starts["w"] == 1  # never restarted


async def test_an_exception_in_a_handler_reaches_the_asker_and_the_actor_is_restarted() -> None:
    probe = Probe()
    sup = Supervisor([worker(probe, "w")])
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            ref = sup.ref("w")
            assert await ref.ask("one", timeout=5) == ("w", "one", 1)
            with pytest.raises(Boom, match="w crashed on purpose"):
                await ref.ask("crash", timeout=5)
            crashed = await next_event(events, "crashed", "w")
            assert isinstance(crashed.exc, Boom)
            restarted = await next_event(events, "restarted", "w")
            assert restarted.attempt == 1
            # Same ref, fresh instance: the per-incarnation count starts again.
            assert await ref.ask("two", timeout=5) == ("w", "two", 1)
    assert probe.starts["w"] == 2


async def test_messages_queued_behind_a_failing_one_are_handled_by_the_next_incarnation() -> None:
    probe = Probe()
    release = anyio.Event()
    with anyio.fail_after(5):
        async with Supervisor([worker(probe, "w")]) as sup:
            ref = sup.ref("w")
            await ref.tell(("block", release))
            await ref.tell("crash")
            await ref.tell("a")
            await ref.tell("b")
            release.set()
            assert await ref.ask("c", timeout=5) == ("w", "c", 3)
    assert [m for _, m in probe.handled] == ["a", "b", "c"]
    assert probe.starts["w"] == 2


async def test_a_ref_to_a_child_that_stopped_for_good_raises_actor_stopped() -> None:
    probe = Probe()
    release = anyio.Event()
    sup = Supervisor([worker(probe, "w", restart="temporary")])
    with anyio.fail_after(5), sup.events.subscribe() as events:
        async with sup:
            ref = sup.ref("w")
            await ref.tell(("block", release))
            await ref.tell("crash")
            async with anyio.create_task_group() as tg:

                async def queued_ask() -> None:
                    with pytest.raises(ActorStopped, match="'root/w' has stopped"):
                        await ref.ask("queued", timeout=5)

                tg.start_soon(queued_ask)
                while ref.statistics().buffered < 2:
                    await anyio.lowlevel.checkpoint()
                release.set()
            await next_event(events, "crashed", "w")
            assert not ref.alive
            with pytest.raises(ActorStopped, match="temporary"):
                await ref.tell("late")
            with pytest.raises(ActorStopped):
                ref.tell_nowait("late")
            assert [c.state for c in sup.which_children()] == ["stopped"]
    assert probe.starts["w"] == 1


class Caller(Actor[str]):
    """Asks its sibling (which starts after it) and itself through refs from its context."""

    def __init__(self, ctx: Context) -> None:
        self.me = ctx.self_ref
        self.callee = ctx.sibling("callee")

    async def handle(self, message: str) -> Any:
        if message == "who":
            return self.me.path
        return await self.callee.ask(message, timeout=5)


async def test_a_child_reaches_itself_and_its_siblings_through_refs_from_its_context() -> None:
    probe = Probe()
    with anyio.fail_after(5):
        async with Supervisor(
            [ChildSpec("caller", Caller, inbox_size=4), worker(probe, "callee")]
        ) as sup:
            assert await sup.ref("caller").ask("who", timeout=5) == "root/caller"
            assert await sup.ref("caller").ask("hi", timeout=5) == ("callee", "hi", 1)
            with pytest.raises(
                UnknownChild, match="no child 'nope'; its children are caller, callee"
            ):
                sup.ref("nope")


async def test_a_task_child_runs_a_loop_and_may_read_its_inbox_with_ctx_receive() -> None:
    seen: list[Any] = []
    done = anyio.Event()

    class Collector:
        def __init__(self, ctx: Context) -> None:
            self.ctx = ctx

        async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            while len(seen) < 3:
                seen.append(await self.ctx.receive())
            done.set()
            await self.ctx.wait_stop_requested()

    with anyio.fail_after(5):
        async with Supervisor([ChildSpec("collector", Collector, inbox_size=4)]) as sup:
            ref = sup.ref("collector")
            await ref.tell(0)
            with pytest.raises(TypeError, match="cannot reply to ask"):
                await ref.ask("question", timeout=5)
            await ref.tell(1)
            await ref.tell(2)
            await done.wait()
    assert seen == [0, 1, 2]


async def test_a_child_without_inbox_has_no_ref() -> None:
    async def forever(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with Supervisor([ChildSpec("loop", lambda ctx: forever, shutdown=0)]) as sup:
            with pytest.raises(NotAnActor, match="'root/loop' has no inbox"):
                sup.ref("loop")
            assert sup.which_children()[0].kind == "task"


async def test_an_actor_without_inbox_size_fails_to_start_with_a_clear_message() -> None:
    probe = Probe()
    with anyio.fail_after(5), pytest.raises(Exception, match="has no inbox_size") as info:
        async with Supervisor([ChildSpec("w", lambda ctx: Worker(ctx, probe))]):
            pass
    assert "could not start child 'w'" in str(info.value)


async def test_a_tell_during_a_backoff_waits_in_the_inbox_for_the_restarted_actor() -> None:
    clock = FakeClock()
    probe = Probe()
    sup = Supervisor([worker(probe, "w")], backoff=Backoff(min_seconds=10, jitter=0), clock=clock)
    with anyio.fail_after(5):
        async with sup:
            ref = sup.ref("w")
            await ref.tell("crash")
            await clock.wait_for_sleepers(1)
            assert ref.statistics().state == "restarting" and ref.alive
            await ref.tell("waits")
            assert ref.statistics().buffered == 1
            clock.advance(10)
            assert await ref.ask("then", timeout=5) == ("w", "then", 2)
    assert [m for _, m in probe.handled] == ["waits", "then"]


async def test_a_child_can_ask_its_own_supervisor_to_stop() -> None:
    probe = Probe()

    class Quitter(Actor[str]):
        async def handle(self, message: str) -> None:
            sup.request_stop()

    sup = Supervisor(
        [worker(probe, "a"), ChildSpec("quitter", lambda ctx: Quitter(), inbox_size=1)]
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await sup.ref("quitter").tell("quit")
    assert probe.stops == ["a"]
