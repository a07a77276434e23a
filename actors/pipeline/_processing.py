"""The processor stage: runs each fetched job through the processor, within its time limit."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.errors import ActorsError, DocumentError, JobTimedOut
from actors.log import get_logger
from actors.pipeline._inflight import InFlight, ObjectBudget, stop_scope
from actors.pipeline.messages import AckInbox, Failed, Fetched, LeasedJob, Processed, Release
from actors.processors import JobInput, Processor, ProcessorOutput, TimeLimit, current_time_limit
from supervisors import Context

__all__ = ["BATCH_BYTES", "PROCESS_BATCH", "ProcessorStage", "call_abandonably"]

T = TypeVar("T")

log = get_logger("actors.processor")

# A processor stage takes up to this many fetched jobs waiting in its stream at once; those its
# processor can batch (``batchable``, small documents of bounded work) go to it in one call
# (``process_batch``: for the offline processor, one round trip to a worker process).
PROCESS_BATCH = 32
# ... and stops taking more once they hold this many bytes: a processor holds at most that and
# one large object, as the processors' stream's budget (`ObjectBudget`) assumes.
BATCH_BYTES = 64 * 1024


async def call_abandonably(calls: TaskGroup, func: Callable[[], Awaitable[T]], seconds: float) -> T:
    """Await ``func()`` in a task of ``calls`` for at most ``seconds``, then stop waiting.

    Past the limit the call is cancelled and `JobTimedOut` raised at once, even when the call
    ignores cancellation (a blocking call in a worker thread, which no one can interrupt): the
    call is then abandoned, left to end on its own in ``calls``, its outcome dropped.
    """
    done = anyio.Event()
    returned: list[T] = []
    raised: list[Exception] = []
    scope = anyio.CancelScope()

    async def call() -> None:
        try:
            with scope:
                try:
                    returned.append(await func())
                except Exception as exc:  # re-raised in the caller: the job's error
                    raised.append(exc)
        finally:
            done.set()

    calls.start_soon(call)
    try:
        with anyio.move_on_after(seconds):
            await done.wait()
    finally:
        if not done.is_set():
            scope.cancel()  # also when the caller itself is cancelled (a shutdown)
    if returned:
        return returned[0]
    if raised:
        raise raised[0]
    raise JobTimedOut(_timed_out(seconds, "cancelled, and abandoned if it ignores that"))


def _timed_out(seconds: float, how: str) -> str:
    return (
        f"timeout: processing took longer than the job's time limit of {seconds:g}s "
        f"([pipeline].job_timeout_seconds, or the job's own timeout_seconds), so it was {how}. "
        "The attempt is retried with backoff up to max_attempts; raise the limit if such "
        "documents are legitimate"
    )


class ProcessorStage:
    """One of a pool of processors sharing one inbox; sends each outcome to the ack reporter.

    Each job runs within its time limit (``timeout_seconds``, or the job's own): past it the
    job fails with `JobTimedOut` (a retry) and its lease is no longer renewed. A processor that
    ``honours_cancellation`` (the offline one, isolated ones: their worker process is killed)
    is cancelled in place; any other runs in a task of ``calls`` (`call_abandonably`), so that
    one stuck in a thread cannot hold this stage. A job cancelled while in flight
    (`InFlight.cancel`, when the queue refuses its lease as cancelled) has its processing
    cancelled the same way (a worker process running it is killed) and its lease given back,
    which ends it cancelled; a job cancelled before it got here is given back unprocessed.

    Error handling: whatever the processor raises while handling a job is that job's failure,
    never this actor's: a `DocumentError` fails it permanently (a corrupt PDF stays corrupt), as
    does a `RecursionError` (the same input recurses as deep again); any other exception
    (another `ActorsError`, a `MemoryError`, a `TimeoutError`, a bug in the processor) fails the
    attempt with the error's type and message, retried with backoff up to max_attempts. Only a
    bug in this stage's own machinery, or a processor that returns something other than a
    `ProcessorOutput`, crashes this processor, after marking the job, so that its restarted
    successor fails the job (a retry) rather than losing it.
    """

    def __init__(
        self,
        name: str,
        *,
        inbox: MemoryObjectReceiveStream[Fetched],
        acks: MemoryObjectSendStream[AckInbox],
        processor: Processor,
        inflight: InFlight,
        ctx: Context | None = None,
        timeout_seconds: float = 600.0,
        calls: TaskGroup | None = None,
        budget: ObjectBudget | None = None,
    ) -> None:
        self.name = name
        self._budget = budget
        self._ctx = ctx
        self._inbox = inbox
        self._acks = acks
        self._processor = processor
        self._inflight = inflight
        self._timeout = timeout_seconds
        self._calls = calls
        self._in_place = calls is None or getattr(processor, "honours_cancellation", False)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        recovered = self._inflight.take_held(self.name)
        task_status.started()
        for job, crash in recovered:
            # The object went with the crashed predecessor: give the lease back (or fail the
            # attempt if the processor crashed on it) and let the queue hand it out again.
            if crash is None:
                self._acks.send_nowait(Release(job=job, reason=f"{self.name} was restarted"))
            else:
                self._acks.send_nowait(
                    Failed(
                        job=job, error=f"{self.name} crashed on this job: {crash}", stage="process"
                    )
                )
        batchable = getattr(self._processor, "batchable", None)
        with stop_scope(self._ctx):
            if batchable is None:
                async for message in self._inbox:
                    self._taken(message)
                    await self._process(message)
                return
            while True:
                taken = await self._take_batch(batchable)
                if taken is None:
                    return  # the stream was closed
                together, alone = taken
                if together:
                    await self._process_together(together)
                if alone is not None:
                    await self._process(alone)

    async def _take_batch(
        self, batchable: Callable[[JobInput, bytes, str | None], bool]
    ) -> tuple[list[Fetched], Fetched | None] | None:
        """Wait for a fetched job, and take the batchable ones that wait with it (held): the
        batch, and the job that ended it that must be processed alone; None at the end.

        A job that cannot be batched (or was cancelled) ends the batch, so that jobs processed
        one by one are spread over the processors as before. The processors take turns at the
        stream: the stream gives a sent item straight to a waiting receiver, so processors all
        waiting would each get a batch of one.
        """
        async with self._turn():
            try:
                first = await self._inbox.receive()
            except anyio.EndOfStream:
                return None
            self._taken(first)
            self._inflight.hold(first.job, self.name)
            if not self._fits(first, batchable):
                return [], first
            batch = [first]
            alone = self._take_ready(batch, batchable)
            if alone is None and len(batch) < PROCESS_BATCH:
                # Let the fetchers that are ready hand on what they hold first.
                await anyio.lowlevel.checkpoint()
                alone = self._take_ready(batch, batchable)
        return batch, alone

    def _fits(
        self, message: Fetched, batchable: Callable[[JobInput, bytes, str | None], bool]
    ) -> bool:
        return not self._inflight.is_cancelled(message.job) and batchable(
            _input(message.job), message.data, message.content_type
        )

    def _take_ready(
        self, batch: list[Fetched], batchable: Callable[[JobInput, bytes, str | None], bool]
    ) -> Fetched | None:
        """Add the batchable jobs waiting in the stream to ``batch`` (held), within its bounds;
        return the one that ended it by not being batchable, if any."""
        size = sum(len(message.data) for message in batch)
        while len(batch) < PROCESS_BATCH and size <= BATCH_BYTES:
            try:
                message = self._inbox.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return None
            self._taken(message)
            self._inflight.hold(message.job, self.name)
            if not self._fits(message, batchable):
                return message
            batch.append(message)
            size += len(message.data)
        return None

    def _turn(self) -> anyio.Lock | contextlib.nullcontext[None]:
        return contextlib.nullcontext() if self._budget is None else self._budget.turn

    def _taken(self, message: Fetched) -> None:
        if self._budget is not None:
            self._budget.taken(len(message.data))

    async def _call(self, message: Fetched) -> ProcessorOutput:
        job = message.job
        given = _input(job)
        # A processor may answer at once, within a bounded time, and so without a time limit's
        # scope and deadline (LocalProcessor: small text documents).
        process_now = getattr(self._processor, "process_now", None)
        if process_now is not None:
            output: ProcessorOutput | None = process_now(given, message.data, message.content_type)
            if output is not None:
                return output
        limit = job.timeout_seconds or self._timeout
        self._inflight.set_deadline(job, anyio.current_time() + limit)
        call = functools.partial(self._processor.process, given, message.data, message.content_type)
        if not self._in_place:
            assert self._calls is not None
            return await call_abandonably(self._calls, call, limit)
        with anyio.move_on_after(limit) as scope:
            # The pool adds a wait for a worker process to the deadline (and to the renewals').
            token = current_time_limit.set(
                TimeLimit(scope, lambda deadline: self._inflight.set_deadline(job, deadline))
            )
            try:
                return await call()
            finally:
                current_time_limit.reset(token)
        raise JobTimedOut(_timed_out(limit, "cancelled (a worker process running it is killed)"))

    async def _process(self, message: Fetched) -> None:
        job = message.job
        self._inflight.hold(job, self.name)
        outcome: AckInbox | None = None
        if not self._inflight.is_cancelled(job):
            # The job's own scope: cancelling the job (`InFlight.cancel`, when the queue says it
            # was cancelled) cancels its processing, and kills a worker process running it.
            with anyio.CancelScope() as scope:
                self._inflight.set_scope(job, scope)
                outcome = await self._outcome(message)
            self._inflight.set_scope(job, None)
        if outcome is None:
            log.info("process.cancelled", job_id=job.id, run_id=job.run_id)
            # Giving the lease back ends the job cancelled in the queue (never done).
            outcome = Release(job=job, reason="cancelled")
        self._acks.send_nowait(outcome)  # never blocks: the stream holds every in-flight job
        self._inflight.decided(job)
        self._inflight.let_go(job, self.name)

    async def _process_together(self, batch: list[Fetched]) -> None:
        """Process ``batch`` in one ``process_batch`` call, within the shortest of its jobs' time
        limits; if that call fails as a whole (a time limit, a worker that died), each job is
        processed alone, so that a hostile document is charged to its own job only."""
        limit = min(m.job.timeout_seconds or self._timeout for m in batch)

        def set_deadlines(deadline: float) -> None:
            for m in batch:
                self._inflight.set_deadline(m.job, deadline)

        set_deadlines(anyio.current_time() + limit)
        items = [(_input(m.job), m.data, m.content_type) for m in batch]
        outputs: list[ProcessorOutput | Exception] | None = None
        # Not the jobs' own scopes: a job cancelled meanwhile (`InFlight.cancel`) is given back
        # once the batch returns, within milliseconds (its documents are small).
        with anyio.move_on_after(limit) as scope:
            token = current_time_limit.set(TimeLimit(scope, set_deadlines))
            try:
                outputs = await self._processor.process_batch(items)  # type: ignore[attr-defined]
            except Exception as exc:
                log.info("process.batch_failed", jobs=len(batch), error=repr(exc))
            finally:
                current_time_limit.reset(token)
        if outputs is None or len(outputs) != len(batch):
            for message in batch:
                await self._process(message)
            return
        for message, output in zip(batch, outputs, strict=True):
            job = message.job
            if self._inflight.is_cancelled(job):
                log.info("process.cancelled", job_id=job.id, run_id=job.run_id)
                outcome: AckInbox = Release(job=job, reason="cancelled")
            else:
                outcome = self._judge(job, output)
            self._acks.send_nowait(outcome)  # never blocks: the stream holds every job
            self._inflight.decided(job)
            self._inflight.let_go(job, self.name)

    async def _outcome(self, message: Fetched) -> AckInbox:
        """Process the job; return its outcome (whatever the processor raised is the job's)."""
        try:
            output: ProcessorOutput | Exception = await self._call(message)
        except Exception as exc:
            output = exc
        return self._judge(message.job, output)

    def _judge(self, job: LeasedJob, output: object) -> AckInbox:
        """The outcome of ``job`` whose processor returned or raised ``output``."""
        if isinstance(output, Exception):
            return _failed(job, output)
        if not isinstance(output, ProcessorOutput):
            problem = (
                f"the processor returned {type(output).__name__}, not a ProcessorOutput;"
                " a bug in the processor (see the Processor protocol)"
            )
            self._inflight.crashed(job, problem)
            raise TypeError(problem)
        return Processed(job=job, result=output.result, metrics=output.metrics)


def _failed(job: LeasedJob, exc: Exception) -> Failed:
    """The outcome of a job whose processor raised ``exc`` (cancellation, a BaseException,
    never gets here: the job is given back)."""
    if isinstance(exc, DocumentError):
        return Failed(job=job, error=str(exc), permanent=True, stage="process")
    if isinstance(exc, ActorsError):
        return Failed(job=job, error=str(exc), stage="process")
    log.warning("process.raised", job_id=job.id, run_id=job.run_id, exc_info=exc)
    return Failed(
        job=job,
        error=_unexpected(exc),
        permanent=isinstance(exc, RecursionError),
        stage="process",
    )


def _input(job: LeasedJob) -> JobInput:
    """What the processor is told of ``job``: its identity, key and payload, no lease."""
    return JobInput(
        id=job.id, run_id=job.run_id, tenant_id=job.tenant_id, key=job.r2_key, payload=job.payload
    )


def _unexpected(exc: Exception) -> str:
    """A job's error for an exception its processor raised unexpectedly: type and message."""
    if isinstance(exc, RecursionError):
        return (
            f"RecursionError: {exc}; the document nests deeper than the processor can follow,"
            " so retrying cannot help"
        )
    return f"processing raised {type(exc).__name__}: {exc}"
