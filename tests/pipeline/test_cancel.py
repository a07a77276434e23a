"""Cancelling jobs while the pipeline of this process works on them: the processor observes the
cancellation (its call is cancelled), a result it produces anyway is refused, and the job ends
cancelled, never done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from actors.config import Config, PipelineConfig, QueueConfig, StorageConfig
from actors.processors import JobInput, ProcessorOutput
from actors.queue import SQLiteQueue
from actors.storage import LocalObjectStore
from actors.system import ActorSystem

pytestmark = pytest.mark.anyio

KEY = "t1/r1/a.txt"


def make_config(tmp_path: Path, **queue: Any) -> Config:
    return Config(
        queue=QueueConfig(path=str(tmp_path / "q.db"), poll_interval_seconds=0.05, **queue),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(concurrency=4, shutdown_grace_seconds=1),
    )


class Sleeper:
    """Sleeps until cancelled, and records the cancellation it observes."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled: list[int] = []
        self.observed = anyio.Event()

    async def process(self, job: JobInput, data: bytes, content_type: str | None) -> Any:
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(job.id)
            self.observed.set()
            raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        pass


class Stubborn:
    """Ignores cancellation (shielded) and returns a result once told to: its ack comes late."""

    honours_cancellation = True  # run in place: its result is not abandoned, it is acked

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.finish = anyio.Event()

    async def process(self, job: JobInput, data: bytes, content_type: str | None) -> Any:
        self.started.set()
        with anyio.CancelScope(shield=True):
            await self.finish.wait()
        return ProcessorOutput(result={"finished": "anyway"})

    async def aclose(self) -> None:
        pass


async def test_a_job_cancelled_mid_processing_has_its_processor_cancelled(
    tmp_path: Path,
) -> None:
    await LocalObjectStore(tmp_path / "objects").put(KEY, b"a document")
    processor = Sleeper()
    with anyio.fail_after(30):
        async with ActorSystem(make_config(tmp_path), processor=processor) as system:
            job = await system.enqueue("r1", "t1", KEY)
            await processor.started.wait()
            (result,) = await system.cancel([job.id])
            assert (result.ok, result.reason) == (True, "ok")
            assert result.job is not None and result.job.status == "leased"
            # In this process the worker hears of it at once, not at its next renewal.
            await processor.observed.wait()
            summary = await system.wait_run("r1")
            assert processor.cancelled == [job.id]
            ended = await system.queue.get(job.id)
            assert (ended.status, ended.result) == ("cancelled", None)
            assert (summary.status, summary.cancelled, summary.done) == ("cancelled", 1, 0)
            assert (system.ack_stats.cancelled, system.ack_stats.done) == (1, 0)
            assert system.ack_stats.failed == system.ack_stats.retried == 0


async def test_a_result_finished_after_the_cancel_is_refused_and_the_job_ends_cancelled(
    tmp_path: Path,
) -> None:
    await LocalObjectStore(tmp_path / "objects").put(KEY, b"a document")
    processor = Stubborn()
    with anyio.fail_after(30):
        async with ActorSystem(make_config(tmp_path), processor=processor) as system:
            job = await system.enqueue("r1", "t1", KEY)
            await processor.started.wait()
            await system.cancel([job.id])
            processor.finish.set()  # the result comes anyway, after the cancel
            summary = await system.wait_run("r1")
            ended = await system.queue.get(job.id)
            # Invariant: nothing cancelled is ever marked done; the late ack was refused.
            assert (ended.status, ended.result) == ("cancelled", None)
            assert (summary.status, summary.done) == ("cancelled", 0)
            assert (system.ack_stats.cancelled, system.ack_stats.done) == (1, 0)


async def test_a_cancel_from_another_process_is_learned_at_the_next_renewal(
    tmp_path: Path,
) -> None:
    await LocalObjectStore(tmp_path / "objects").put(KEY, b"a document")
    processor = Sleeper()
    # Renewed every half second: a third of the lease.
    config = make_config(tmp_path, visibility_seconds=1.5)
    with anyio.fail_after(30):
        async with ActorSystem(config, processor=processor) as system:
            job = await system.enqueue("r1", "t1", KEY)
            await processor.started.wait()
            # Another queue object on the same file, as the CLI's `jobs cancel` is: no
            # callback reaches this process's worker.
            async with SQLiteQueue.open(tmp_path / "q.db") as other:
                (result,) = await other.cancel_many([job.id])
            assert result.ok
            await processor.observed.wait()
            summary = await system.wait_run("r1")
            assert processor.cancelled == [job.id]
            assert (summary.status, summary.cancelled) == ("cancelled", 1)
            assert (await system.queue.get(job.id)).status == "cancelled"
