"""Small documents go to a worker process in batches: an outcome per job, as if processed alone."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import msgspec
import pytest

from actors.config import ProcessorConfig
from actors.errors import WorkerCrashed
from actors.pipeline import (
    AckInbox,
    Failed,
    Fetched,
    InFlight,
    LeasedJob,
    ObjectBudget,
    Processed,
    ProcessorStage,
)
from actors.processors import (
    JobInput,
    LocalProcessor,
    ProcessorOutput,
    WorkerPool,
    process_locally,
)

pytestmark = pytest.mark.anyio

DOCS = {
    "t/r/a.txt": b"The harbour opened at dawn. Two ferries ran.\n",
    "t/r/b.md": b"# Notes\n\nThe pier needs *repair* soon.\n",
    "t/r/bad.json": b'{"a": [1, 2',  # truncated: a corrupt document, failed for good
    "t/r/c.html": b"<html><body><h1>Tide</h1><p>High water at noon.</p></body></html>\n",
    "t/r/large.txt": b"A longer report on the harbour and its ferries. " * 40,  # not batched
}


def leased(job_id: int, key: str) -> LeasedJob:
    return LeasedJob(
        id=job_id,
        run_id="r",
        tenant_id="t",
        r2_key=key,
        lease_token=f"token-{job_id}",
        attempts=1,
        max_attempts=3,
    )


class CountingPool(WorkerPool):
    def __init__(self) -> None:
        super().__init__(2)
        self.calls = 0

    async def run(self, func, *args):  # type: ignore[no-untyped-def]
        self.calls += 1
        return await super().run(func, *args)


async def run_stage(processor: LocalProcessor) -> dict[str, AckInbox]:
    """Hand every document to one processor stage at once; its outcome per key."""
    jobs = [leased(i, key) for i, key in enumerate(DOCS, start=1)]
    inflight = InFlight(len(jobs))
    inflight.add(jobs)
    budget = ObjectBudget(2, 64 * 1024)
    send, inbox = anyio.create_memory_object_stream[Fetched](len(jobs))
    acks, outcomes = anyio.create_memory_object_stream[AckInbox](len(jobs))
    for job in jobs:
        await budget.admit(len(DOCS[job.r2_key]))
        send.send_nowait(Fetched(job=job, data=DOCS[job.r2_key]))
    send.close()
    stage = ProcessorStage(
        "processor-0", inbox=inbox, acks=acks, processor=processor, inflight=inflight, budget=budget
    )
    with anyio.fail_after(60):
        await stage.run()
    assert (budget.waiting, budget.bytes) == (0, 0)  # every object counted out of the stream
    assert inflight.take_held("processor-0") == []  # every job decided and handed on
    assert inflight.undecided == 0
    got = {}
    for _ in jobs:
        outcome = outcomes.receive_nowait()
        got[outcome.job.r2_key] = outcome
    return got


def expect_as_alone(got: dict[str, AckInbox]) -> None:
    settings = ProcessorConfig()
    for key, data in DOCS.items():
        outcome = got[key]
        if key == "t/r/bad.json":
            assert isinstance(outcome, Failed) and outcome.permanent, outcome
            assert "is not valid JSON" in outcome.error
            continue
        assert isinstance(outcome, Processed), outcome
        alone = process_locally(settings, data, key, None)
        # A batched result is its JSON text, stored as it is: the same JSON.
        assert msgspec.json.decode(msgspec.json.encode(outcome.result)) == alone.result, key
        assert outcome.metrics == alone.metrics


async def test_small_documents_go_to_a_worker_in_one_call_each_with_its_own_outcome() -> None:
    pool = CountingPool()
    try:
        got = await run_stage(LocalProcessor(ProcessorConfig(), pool))
    finally:
        await pool.aclose()
    expect_as_alone(got)
    # One call for the four small documents, one for the large one.
    assert pool.calls == 2


async def test_a_batch_that_fails_as_a_whole_is_processed_one_job_at_a_time() -> None:
    class CrashingBatches(LocalProcessor):
        batches = 0

        async def process_batch(
            self, items: Sequence[tuple[JobInput, bytes, str | None]]
        ) -> list[ProcessorOutput | Exception]:
            self.batches += 1
            raise WorkerCrashed("the worker process running this batch died")

    pool = CountingPool()
    processor = CrashingBatches(ProcessorConfig(), pool)
    try:
        got = await run_stage(processor)
    finally:
        await pool.aclose()
    assert processor.batches == 1
    expect_as_alone(got)  # each job processed alone: none charged with the batch's failure
