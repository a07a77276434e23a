"""The pipeline in one process: every job ends once, faults are retried, leases outlive jobs."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors.config import Config, PipelineConfig, QueueConfig, StorageConfig, SupervisionConfig
from actors.errors import ActorsError, StorageError
from actors.processors import JobInput, LocalProcessor, ProcessorOutput
from actors.queue import NewJob
from actors.storage import LocalObjectStore, StoredObject
from actors.system import ActorSystem, SystemFailed
from supervisors.clock import Clock, FakeClock, SystemClock

pytestmark = pytest.mark.anyio

TEXT = b"Lichens grow slowly on old stone. They record clean air. Surveys count them yearly."


def make_config(tmp_path: Path, **tables: Any) -> Config:
    queue = {
        "path": str(tmp_path / "q.db"),
        "retry_base_seconds": 0.01,
        "poll_interval_seconds": 0.05,
        **tables.pop("queue", {}),
    }
    supervision = {
        "backoff_min_seconds": 0.0,
        "backoff_max_seconds": 0.0,
        **tables.pop("supervision", {}),
    }
    return Config(
        queue=QueueConfig(**queue),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        supervision=SupervisionConfig(**supervision),
        pipeline=PipelineConfig(**tables.pop("pipeline", {})),
    )


async def put_objects(root: Path, count: int, data: bytes = TEXT) -> list[str]:
    store = LocalObjectStore(root)
    keys = [f"t1/run/{i}.txt" for i in range(count)]
    for key in keys:
        await store.put(key, data)
    return keys


def jobs_by_status(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


class FlakyStore(LocalObjectStore):
    """Raises an unexpected error (a bug, not a store error) on its first ``failures`` reads."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures
        self.calls = 0

    async def get(self, key: str, *, max_bytes: int) -> StoredObject:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"injected fetcher fault #{self.calls}")
        return await super().get(key, max_bytes=max_bytes)


class CountingProcessor(LocalProcessor):
    """The offline processor, counting calls per job, failing or stalling when told to."""

    def __init__(
        self,
        config: Config,
        *,
        failures: int = 0,
        seconds: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(config.processor)
        self.calls: dict[int, int] = {}
        self.failures = failures
        self.seconds = seconds
        self.clock = clock if clock is not None else SystemClock()

    async def process(
        self, job: JobInput, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        self.calls[job.id] = self.calls.get(job.id, 0) + 1
        if sum(self.calls.values()) <= self.failures:
            raise ZeroDivisionError("injected processor fault")
        if self.seconds:
            await self.clock.sleep(self.seconds)
        return await super().process(job, data, content_type)


async def test_every_job_of_a_run_ends_done_once_with_its_result(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    keys = await put_objects(tmp_path / "objects", 200)
    processor = CountingProcessor(config)
    with anyio.fail_after(60):
        async with ActorSystem(config, processor=processor) as system:
            await system.enqueue_many([NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys])
            summary = await system.wait_run("r1")
            page = await system.queue.list(run_id="r1", limit=1000)
    assert (summary.status, summary.total, summary.done, summary.failed) == ("done", 200, 200, 0)
    assert jobs_by_status(tmp_path / "q.db") == {"done": 200}
    assert sorted(processor.calls.values()) == [1] * 200
    assert {job.result["kind"] for job in page.items} == {"text"}
    assert all(job.result["summary"] for job in page.items)
    assert summary.metrics["bytes"] == 200 * len(TEXT)
    assert system.ack_stats.done == 200
    assert system.ack_stats.stale == 0


async def test_a_missing_object_fails_its_job_at_once_without_burning_retries(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    with anyio.fail_after(30):
        async with ActorSystem(config) as system:
            job = await system.enqueue("r1", "t1", "t1/nowhere.pdf")
            summary = await system.wait_run("r1")
            failed = await system.queue.get(job.id)
    assert summary.status == "failed"
    assert failed.status == "failed"
    assert failed.attempts == 1
    assert "t1/nowhere.pdf" in (failed.last_error or "")
    assert "does not exist" in (failed.last_error or "")


async def test_a_key_too_long_for_the_file_system_fails_its_job_at_once(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    (tmp_path / "objects" / "t1").mkdir(parents=True)
    with anyio.fail_after(30):
        async with ActorSystem(config) as system:
            job = await system.enqueue("r1", "t1", "t1/" + "n" * 300 + ".pdf")
            await system.wait_run("r1")
            failed = await system.queue.get(job.id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "longer than the file system allows" in (failed.last_error or "")


async def test_an_oversized_object_is_refused_unread_and_fails_permanently(tmp_path: Path) -> None:
    config = make_config(tmp_path, pipeline={"max_object_bytes": 10})
    (key,) = await put_objects(tmp_path / "objects", 1)
    with anyio.fail_after(30):
        async with ActorSystem(config) as system:
            job = await system.enqueue("r1", "t1", key)
            await system.wait_run("r1")
            failed = await system.queue.get(job.id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "over the limit of 10" in (failed.last_error or "")


async def test_a_corrupt_document_fails_permanently_with_the_reason(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    (key,) = await put_objects(tmp_path / "objects", 1, data=b"%PDF-1.4 truncated garbage")
    with anyio.fail_after(30):
        async with ActorSystem(config) as system:
            job = await system.enqueue("r1", "t1", key)
            await system.wait_run("r1")
            failed = await system.queue.get(job.id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.last_error


async def test_poison_documents_fail_for_good_and_good_ones_end_done(tmp_path: Path) -> None:
    config = make_config(tmp_path, supervision={"max_restarts": 0})
    good = await put_objects(tmp_path / "objects", 10)
    store = LocalObjectStore(tmp_path / "objects")
    poison = {
        "t1/run/deep.json": b"[" * 50_000 + b"]" * 50_000,
        "t1/run/deep.html": b"<div>" * 5_000 + b"x",
        "t1/run/spaces.md": b"a\n" + b" " * 200_000 + b"x|\n",
    }
    for key, data in poison.items():
        await store.put(key, data)
    keys = [*good[:5], *poison, *good[5:]]
    with anyio.fail_after(60):
        async with ActorSystem(config) as system:
            jobs = await system.enqueue_many(
                [NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys]
            )
            summary = await system.wait_run("r1")
            finished = {job.r2_key: await system.queue.get(job.id) for job in jobs}
    assert (summary.done, summary.failed) == (11, 2)
    assert finished["t1/run/spaces.md"].status == "done"
    for key in ("t1/run/deep.json", "t1/run/deep.html"):
        assert (finished[key].status, finished[key].attempts) == ("failed", 1)
        assert "nest" in (finished[key].last_error or "")


async def test_a_fetcher_that_raises_is_restarted_and_its_job_retried(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    (key,) = await put_objects(tmp_path / "objects", 1)
    store = FlakyStore(tmp_path / "objects", failures=1)
    with anyio.fail_after(30):
        async with ActorSystem(config, store=store) as system:
            with system.tree.events.subscribe() as events:
                job = await system.enqueue("r1", "t1", key)
                summary = await system.wait_run("r1")
                restarted = []
                while not restarted:
                    event = await events.receive()
                    if event.kind == "restarted":
                        restarted.append(event)
            done = await system.queue.get(job.id)
    assert summary.status == "done"
    assert (done.status, done.attempts) == ("done", 2)
    assert restarted[0].child.startswith("fetcher-")
    assert "injected fetcher fault" in repr(restarted[0].exc)


async def test_a_processor_that_raises_fails_that_attempt_and_its_job_is_retried(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    keys = await put_objects(tmp_path / "objects", 3)
    processor = CountingProcessor(config, failures=2)
    with anyio.fail_after(30):
        async with ActorSystem(config, processor=processor) as system:
            with system.tree.events.subscribe() as events:
                await system.enqueue_many(
                    [NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys]
                )
                summary = await system.wait_run("r1")
                page = await system.queue.list(run_id="r1")
                seen = drain(events)
    assert (summary.status, summary.done) == ("done", 3)
    assert sum(job.attempts for job in page.items) == 3 + 2
    assert "ZeroDivisionError: injected processor fault" in "".join(
        job.last_error or "" for job in page.items
    )
    assert [event for event in seen if event.kind == "restarted"] == []


def drain(events: Any) -> list[Any]:
    """The lifecycle events received so far, without waiting."""
    seen = []
    while True:
        try:
            seen.append(events.receive_nowait())
        except anyio.WouldBlock:
            return seen


class RecursingProcessor(LocalProcessor):
    """The offline processor, except that a document holding "deep" recurses without bound."""

    def __init__(self, config: Config) -> None:
        super().__init__(config.processor)

    async def process(
        self, job: JobInput, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        if b"deep" in data:
            descend(0)
        return await super().process(job, data, content_type)


def descend(depth: int) -> int:
    return descend(depth + 1) + 1


async def test_a_processor_raising_recursion_error_fails_that_job_alone_and_for_good(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, supervision={"max_restarts": 0})
    good = await put_objects(tmp_path / "objects", 20)
    await LocalObjectStore(tmp_path / "objects").put("t1/run/deep.txt", b"deep " * 10)
    keys = [*good[:10], "t1/run/deep.txt", *good[10:]]
    with anyio.fail_after(60):
        async with ActorSystem(config, processor=RecursingProcessor(config)) as system:
            with system.tree.events.subscribe() as events:
                jobs = await system.enqueue_many(
                    [NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys]
                )
                summary = await system.wait_run("r1")
                # The system is still running: a later run is processed too.
                await system.enqueue("r2", "t1", good[0])
                later = await system.wait_run("r2")
                seen = drain(events)
            deep = await system.queue.get(jobs[10].id)
    assert (summary.done, summary.failed) == (20, 1)
    assert later.status == "done"
    assert (deep.status, deep.attempts) == ("failed", 1)
    assert (deep.last_error or "").startswith("RecursionError: maximum recursion depth exceeded")
    assert [event for event in seen if event.kind in ("restarted", "crashed")] == []


async def test_an_actor_that_keeps_crashing_stops_the_system_naming_it(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, supervision={"max_restarts": 2, "max_seconds": 60}, queue={"max_attempts": 50}
    )
    keys = await put_objects(tmp_path / "objects", 5)
    store = FlakyStore(tmp_path / "objects", failures=1000)
    failures: list[BaseException] = []
    with anyio.fail_after(30), pytest.raises(SystemFailed) as info:
        async with ActorSystem(config, store=store, on_failure=failures.append) as system:
            await system.enqueue_many([NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys])
            await anyio.sleep_forever()
    assert "fetcher-" in str(info.value)
    assert "max_restarts=2" in str(info.value)
    assert "injected fetcher fault" in str(info.value)
    assert failures == [info.value]
    # Nothing is lost: every job is pending again or waiting for its retry, none is done.
    statuses = jobs_by_status(tmp_path / "q.db")
    assert sum(statuses.values()) == 5
    assert statuses.get("done", 0) == 0


async def test_a_job_longer_than_its_lease_is_renewed_and_processed_once(tmp_path: Path) -> None:
    # Two systems on one file and one fake clock: the rival takes the job if the first lets its
    # lease lapse. The processor holds the job for 4 s of a 1.5 s lease; the clock moves by the
    # renewal interval (a third of the lease) at a time, and only once the lease has been renewed
    # to a full lease from now and both lease managers sleep until their next renewal.
    clock = FakeClock()
    config = make_config(tmp_path, queue={"visibility_seconds": 1.5, "reap_interval_seconds": 0.1})
    (key,) = await put_objects(tmp_path / "objects", 1)
    slow = CountingProcessor(config, seconds=4.0, clock=clock)
    rival = CountingProcessor(config)

    async def renewed_now(job_id: int) -> None:
        now = clock.monotonic()
        while (
            await system.queue.get(job_id)
        ).lease_expires_at != clock.time() + 1.5 or clock.deadlines.count(now + 0.5) < 2:
            await anyio.sleep(0.01)

    with anyio.fail_after(30):
        async with ActorSystem(config, processor=slow, clock=clock) as system:
            job = await system.enqueue("r1", "t1", key)
            while not slow.calls:
                await anyio.sleep(0.01)
            async with ActorSystem(config, processor=rival, clock=clock):
                for _ in range(7):  # to 3.5 s: the processor still holds the job
                    await renewed_now(job.id)
                    clock.advance(0.5)
                while (await system.queue.get(job.id)).lease_expires_at != clock.time() + 1.5:
                    await anyio.sleep(0.01)
                clock.advance(0.5)  # 4 s: the processor returns
                summary = await system.wait_run("r1")
            done = await system.queue.get(job.id)
    assert summary.status == "done"
    assert slow.calls == {job.id: 1}
    assert rival.calls == {}
    assert done.attempts == 1


class LeaseStealingProcessor(LocalProcessor):
    """While processing its first job, lets another worker take that job's lease."""

    def __init__(self, config: Config, db: Path) -> None:
        super().__init__(config.processor)
        self.db = db
        self.calls = 0

    async def process(
        self, job: JobInput, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        self.calls += 1
        if self.calls == 1:
            with sqlite3.connect(self.db) as conn:  # another worker's lease: expired, then leased
                conn.execute(
                    "UPDATE jobs SET lease_token = 'theirs', lease_expires_at = ? WHERE id = ?",
                    (time.time() + 0.5, job.id),
                )
        return await super().process(job, data, content_type)


async def test_an_ack_with_a_stale_lease_is_counted_and_the_pipeline_goes_on(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, queue={"reap_interval_seconds": 0.1})
    keys = await put_objects(tmp_path / "objects", 3)
    processor = LeaseStealingProcessor(config, tmp_path / "q.db")
    with anyio.fail_after(30):
        async with ActorSystem(config, processor=processor) as system:
            await system.enqueue_many([NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys])
            summary = await system.wait_run("r1")
    # The stolen job's ack was refused, the other worker "vanished", its lease expired and was
    # reaped, and the job ran again: every job done once in the queue, one ack refused.
    assert system.ack_stats.stale == 1
    assert (summary.status, summary.done) == ("done", 3)
    assert processor.calls == 4


async def test_stop_gives_back_unfinished_jobs_at_once(tmp_path: Path) -> None:
    config = make_config(tmp_path, pipeline={"shutdown_grace_seconds": 0.2, "concurrency": 4})
    keys = await put_objects(tmp_path / "objects", 10)
    stuck = CountingProcessor(config, seconds=3600)
    with anyio.fail_after(30):
        async with ActorSystem(config, processor=stuck) as system:
            await system.enqueue_many([NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys])
            while len(stuck.calls) < 4:
                await anyio.sleep(0.01)
        # After the block: nothing leased, nothing failed, all ten available now.
        assert jobs_by_status(tmp_path / "q.db") == {"pending": 10}
        async with ActorSystem(config) as again:
            summary = await again.wait_run("r1")
    assert (summary.status, summary.done) == ("done", 10)


async def test_a_local_enqueue_wakes_an_idle_worker_at_once(tmp_path: Path) -> None:
    # One poll a minute: only the wake-up on enqueue can finish this in time.
    config = make_config(tmp_path, queue={"poll_interval_seconds": 60.0})
    (key,) = await put_objects(tmp_path / "objects", 1)
    with anyio.fail_after(20):
        async with ActorSystem(config) as system:
            await anyio.sleep(0.2)  # let the lease manager find nothing and go to sleep
            await system.enqueue("r1", "t1", key)
            summary = await system.wait_run("r1")
    assert summary.status == "done"


async def test_wait_run_sees_a_run_finished_by_another_process(tmp_path: Path) -> None:
    config = make_config(tmp_path, pipeline={"concurrency": 1, "shutdown_grace_seconds": 0.1})
    keys = await put_objects(tmp_path / "objects", 4)
    stuck = CountingProcessor(config, seconds=3600)
    with anyio.fail_after(30):
        async with ActorSystem(config, processor=stuck) as watcher:
            await watcher.enqueue("blocker", "t1", keys[0])
            while not stuck.calls:
                await anyio.sleep(0.01)
            # The watcher's only slot is taken: it will lease nothing of run r1, so no event
            # of r1 ever reaches its run room; only the database can tell it.
            async with ActorSystem(config) as worker:
                await worker.enqueue_many(
                    [NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys[1:]]
                )
                summary = await watcher.wait_run("r1")
    assert (summary.status, summary.done) == ("done", 3)
    assert list(stuck.calls.values()) == [1]


async def test_watch_run_reports_progress_until_the_run_is_done(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    keys = await put_objects(tmp_path / "objects", 20)
    seen: list[Any] = []
    with anyio.fail_after(30):
        async with ActorSystem(config) as system, anyio.create_task_group() as tg:

            async def watch() -> None:
                async for update in system.watch_run("r1"):
                    seen.append(update)

            # Watch before the run exists: a watcher that comes after the end sees only the
            # final state (the finished run's room is gone), not the events on the way.
            tg.start_soon(watch)
            while not seen:
                await anyio.sleep(0.01)
            assert seen[0].summary is None  # no such run yet
            await system.enqueue_many([NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys])
            while not seen[-1].summary or seen[-1].summary.status != "done":
                await anyio.sleep(0.01)
            # The finished run's room leaves the registry (it would otherwise fill it).
            while system.rooms.lookup("r1") is not None:
                await anyio.sleep(0.01)
    assert seen[-1].summary.status == "done"
    assert seen[-1].summary.done == 20
    # Events come with the updates; the state is read afresh from the database on each, so
    # the final state can arrive before the last events (the watcher stops there).
    kinds = {event.kind for update in seen for event in update.events}
    assert "leased" in kinds
    dones = [update.summary.done for update in seen if update.summary is not None]
    assert dones == sorted(dones)


async def test_a_backend_without_its_address_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    config = msgspec.structs.replace(make_config(tmp_path), queue=QueueConfig(backend="postgres"))
    with pytest.raises(ActorsError, match=r'backend = "postgres" needs \[queue\]\.dsn'):
        async with ActorSystem(config):
            pass
    assert not (tmp_path / "q.db").exists()


class OversizedResults(LocalProcessor):
    """Returns, for one document, a result the queue will not store (over 256 KiB)."""

    async def process(
        self, job: JobInput, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        if job.key.endswith("/0.txt"):
            return ProcessorOutput(result={"blob": "x" * 300_000})
        return await super().process(job, data, content_type)


async def test_a_result_the_queue_refuses_fails_that_job_alone_and_for_good(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    keys = await put_objects(tmp_path / "objects", 5)
    with anyio.fail_after(30):
        async with ActorSystem(config, processor=OversizedResults(config.processor)) as system:
            await system.enqueue_many([NewJob(run_id="r1", tenant_id="t1", r2_key=k) for k in keys])
            summary = await system.wait_run("r1")
            page = await system.queue.list(run_id="r1")
    assert (summary.status, summary.done, summary.failed) == ("failed", 4, 1)
    (bad,) = [job for job in page.items if job.status == "failed"]
    assert bad.r2_key.endswith("/0.txt")
    assert bad.attempts == 1  # failed for good, not retried
    assert "could not be stored" in (bad.last_error or "")
    assert "256" in (bad.last_error or "") or "262144" in (bad.last_error or "")


async def test_a_document_too_big_for_one_result_keeps_its_chunk_offsets_only(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    sentence = b"The survey counted lichens on the old north wall again this year. "
    (key,) = await put_objects(tmp_path / "objects", 1, data=sentence * 6000)  # ~400 KB of text
    with anyio.fail_after(60):
        async with ActorSystem(config) as system:
            job = await system.enqueue("r1", "t1", key)
            await system.wait_run("r1")
            done = await system.queue.get(job.id)
    assert done.status == "done"
    assert done.result["chunks_truncated"] is True
    assert all("text" not in c and c["end"] > c["start"] for c in done.result["chunks"])


async def test_run_rooms_ride_out_a_queue_that_cannot_answer_for_a_while(tmp_path: Path) -> None:
    config = make_config(tmp_path, supervision={"max_restarts": 1, "max_seconds": 60})
    keys = await put_objects(tmp_path / "objects", 8)
    with anyio.fail_after(30):
        async with ActorSystem(config) as system:
            real = system.queue.run_summary
            failures = 0

            async def flaky(run_id: str) -> Any:
                nonlocal failures
                if failures < 40:
                    failures += 1
                    raise StorageError("SQLite failed: disk I/O error (injected)")
                return await real(run_id)

            system.queue.run_summary = flaky
            await system.enqueue_many(
                [NewJob(run_id=f"r{i}", tenant_id="t1", r2_key=k) for i, k in enumerate(keys)]
            )
            summaries = [await system.wait_run(f"r{i}") for i in range(8)]
    assert failures == 40
    assert [s.status for s in summaries] == ["done"] * 8


def test_a_processor_reads_the_object_key_under_either_name() -> None:
    # Processors written against the pipeline's LeasedJob read `r2_key`; JobInput keeps it.
    job = JobInput(id=1, run_id="r", tenant_id="t", key="t/r/a.txt")
    assert job.r2_key == job.key == "t/r/a.txt"
