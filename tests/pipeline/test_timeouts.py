"""Time limits and the lease window, in-process: a job's own limit, renewals, what is leased."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors.config import Config, PipelineConfig, ProcessorConfig, QueueConfig, StorageConfig
from actors.processors import JobInput, ProcessorOutput
from actors.queue import NewJob
from actors.storage import LocalObjectStore
from actors.system import ActorSystem

pytestmark = pytest.mark.anyio

HERE = str(Path(__file__).resolve().parent)  # slow_import.py, for the worker processes
TEXT = b"Lichens grow slowly on old stone. They record clean air. Surveys count them yearly."


def make_config(tmp_path: Path, *, batch_size: int = 32, **pipeline: Any) -> Config:
    return Config(
        queue=QueueConfig(
            path=str(tmp_path / "q.db"),
            batch_size=batch_size,
            retry_base_seconds=0.01,
            retry_cap_seconds=0.02,
            poll_interval_seconds=0.05,
            visibility_seconds=3,
            max_attempts=1,
        ),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=0, **pipeline),
    )


async def enqueue(system: ActorSystem, count: int, **options: Any) -> None:
    store = LocalObjectStore(system.config.storage.root)
    await store.put("t1/run/doc.txt", TEXT)
    await system.enqueue_many(
        [NewJob(run_id="run", tenant_id="t1", r2_key="t1/run/doc.txt", **options)] * count
    )


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


class Hanging:
    """Waits for ever: on the loop (``in_thread=False``) or in a worker thread, uninterruptibly."""

    def __init__(self, *, in_thread: bool) -> None:
        self.in_thread = in_thread
        self.started = 0
        self.release = threading.Event()

    async def process(self, job: JobInput, data: bytes, content_type: str | None) -> Any:
        self.started += 1
        if self.in_thread:
            await anyio.to_thread.run_sync(self.release.wait)
        else:
            await anyio.sleep_forever()
        return ProcessorOutput(result={})

    async def aclose(self) -> None:
        self.release.set()


@pytest.mark.slow  # two jobs wait out a time limit of 1 s on the wall clock
@pytest.mark.parametrize("in_thread", [False, True], ids=["async", "thread"])
async def test_a_jobs_own_time_limit_fails_a_hung_processor_and_frees_its_stage(
    tmp_path: Path, in_thread: bool
) -> None:
    processor = Hanging(in_thread=in_thread)
    config = make_config(tmp_path, processors=1, fetchers=1, job_timeout_seconds=600)
    async with ActorSystem(config, processor=processor) as system:
        await enqueue(system, 2, timeout_seconds=1)
        with anyio.fail_after(20):
            summary = await system.wait_run("run")
        processor.release.set()  # let the abandoned thread go
    assert (summary.done, summary.failed) == (0, 2)
    # One stage did both: the first job's hang, cancelled or abandoned, did not keep it.
    assert processor.started == 2
    errors = rows(tmp_path / "q.db", "SELECT last_error FROM jobs")
    assert all(
        e.startswith("timeout: processing took longer than the job's time limit of 1s")
        for (e,) in errors
    ), errors


async def test_a_job_past_its_time_limit_is_renewed_no_more(tmp_path: Path) -> None:
    config = make_config(tmp_path, processors=1, fetchers=1)
    release = anyio.Event()

    class Stalling:
        async def process(self, job: JobInput, data: bytes, content_type: str | None) -> Any:
            await release.wait()
            return ProcessorOutput(result={})

        async def aclose(self) -> None:
            pass

    async with ActorSystem(config, processor=Stalling()) as system:
        await enqueue(system, 1)
        with anyio.fail_after(10):
            while not system.inflight.jobs() or system.inflight.undecided == 0:
                await anyio.sleep(0.02)
            # Waiting for the processor to take it: its time limit starts then. (A job not yet
            # taken has no deadline, and is renewable too: counting those raced on a busy box.)
            while (deadline := next(iter(system.inflight._entries.values())).deadline) is None:
                await anyio.sleep(0.02)
        (job,) = system.inflight.jobs()
        assert system.inflight.renewable_jobs(deadline - 1) == [job]
        assert system.inflight.renewable_jobs(deadline) == []
        release.set()


async def test_only_what_the_stages_can_start_soon_is_leased(tmp_path: Path) -> None:
    # concurrency would allow 128 jobs in flight; 1 fetcher and 2 processors can start 7, and
    # one pull batch (4) more may wait: 11.
    config = make_config(tmp_path, processors=2, fetchers=1, concurrency=128, batch_size=4)
    release = anyio.Event()

    class Stalling:
        async def process(self, job: JobInput, data: bytes, content_type: str | None) -> Any:
            await release.wait()
            return ProcessorOutput(result={})

        async def aclose(self) -> None:
            pass

    async with ActorSystem(config, processor=Stalling()) as system:
        await enqueue(system, 100)
        with anyio.fail_after(10):
            while len(system.inflight) < 8:  # two pulls; a third would overflow the window
                await anyio.sleep(0.02)
        await anyio.sleep(0.5)  # more pulls would have happened by now
        leased = rows(tmp_path / "q.db", "SELECT count(*) FROM jobs WHERE status = 'leased'")
        assert 8 <= leased[0][0] <= 11, leased
        release.set()
        with anyio.fail_after(20):
            summary = await system.wait_run("run")
    assert summary.done == 100


@pytest.mark.slow  # a worker process takes 8 s to import the processor's module
async def test_an_isolated_processors_imports_are_not_counted_against_a_jobs_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker imports the factory's module before it is ready; the job's limit (4 s,
    shorter than that import) counts its processing only."""
    import slow_import

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    config = msgspec.structs.replace(
        make_config(tmp_path, processors=1, job_timeout_seconds=4.0),
        processor=ProcessorConfig(kind="python", factory="slow_import:make", isolate=True),
    )
    assert config.pipeline.job_timeout_seconds < slow_import.IMPORT_SECONDS
    async with ActorSystem(config) as system:
        await enqueue(system, 1)
        with anyio.fail_after(60):
            summary = await system.wait_run("run")
    assert (summary.done, summary.failed) == (1, 0), rows(
        tmp_path / "q.db", "SELECT status, attempts, last_error FROM jobs"
    )
