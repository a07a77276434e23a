"""The processor stage: turns a fetched object into the job's result (offline or with Gemini)."""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.config import ProcessorConfig, Secrets
from actors.errors import ActorsError, ConfigError, DocumentError, JobTimedOut
from actors.inflight import InFlight, stop_scope
from actors.messages import AckInbox, Failed, Fetched, LeasedJob, Processed, Release
from actors.workers import TimeLimit, WorkerPool, current_time_limit
from supervisors import Context

__all__ = [
    "IsolatedProcessor",
    "LocalProcessor",
    "Processor",
    "ProcessorOutput",
    "ProcessorStage",
    "make_processor",
]

log = structlog.get_logger("actors.processor")

T = TypeVar("T")

# Documents up to this size (PDFs excepted) are processed on the loop's thread: half a
# millisecond at most, where a worker process would cost 2-3x the work itself ("Processing in
# worker processes" in docs/benchmarks.md). Every extractor is linear-time, so this bounds the
# time the loop can be held. Anything larger, and every PDF (a few kilobytes can inflate to
# gigabytes), goes to a worker process.
_INLINE_BYTES = 1024


class ProcessorOutput(msgspec.Struct, frozen=True, kw_only=True):
    """A job's result and the numbers added to its run's aggregates."""

    result: Any
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


class Processor(Protocol):
    """What the processor stage needs from a processor (offline, Gemini...).

    Error handling: raise `DocumentError` when retrying cannot help (the job fails at once);
    any other `ActorsError` is a failed attempt that the queue retries with backoff.

    Optional: ``honours_cancellation = True`` tells the stage that ``process`` returns at once
    when cancelled (it is then cancelled in place at the job's time limit, not run in a task
    that can be abandoned); ``process_now(job, data, content_type)`` returns a result computed
    at once on the loop's thread, in a bounded time, or None to have ``process`` called.
    """

    async def process(
        self, job: LeasedJob, data: bytes, content_type: str | None
    ) -> ProcessorOutput: ...

    async def aclose(self) -> None: ...


def _fit(result: dict[str, Any], filename: str) -> dict[str, Any]:
    """Keep a result within what the queue stores per job (256 KiB of JSON).

    The chunks' texts are the bulk of a large document's result; past the limit they are left
    out (each chunk keeps its offsets into the document) and ``chunks_truncated`` says so.
    """
    from actors.queue import DEFAULT_MAX_PAYLOAD_BYTES

    if len(msgspec.json.encode(result)) <= DEFAULT_MAX_PAYLOAD_BYTES:
        return result
    result = {**result, "chunks_truncated": True}
    result["chunks"] = [{k: v for k, v in c.items() if k != "text"} for c in result["chunks"]]
    size = len(msgspec.json.encode(result))
    if size > DEFAULT_MAX_PAYLOAD_BYTES:
        raise DocumentError(
            f"{filename}: its result is {size} bytes even without the chunks' texts, over the "
            f"queue's limit of {DEFAULT_MAX_PAYLOAD_BYTES}; raise [processor].max_chunk_chars "
            "(fewer chunks) or split the document"
        )
    return result


def process_locally(
    settings: ProcessorConfig, data: bytes, filename: str, content_type: str | None
) -> ProcessorOutput:
    """The offline processor's work, on whichever thread or process calls it."""
    from actors.documents import process_document

    document = process_document(
        data,
        filename=filename,
        content_type=content_type,
        max_chunk_chars=settings.max_chunk_chars,
        summary_sentences=settings.summary_sentences,
    )
    return ProcessorOutput(
        result=_fit(msgspec.to_builtins(document), filename),
        metrics={"bytes": float(len(data)), "chunks": float(len(document.chunks))},
    )


def _may_be_pdf(data: bytes, filename: str, content_type: str | None) -> bool:
    return (
        b"%PDF" in data[:1024]
        or filename.lower().endswith(".pdf")
        or (content_type or "").lower().startswith("application/pdf")
    )


class LocalProcessor:
    """The embedded default: text extraction, chunks, extractive summary; no key, no network.

    Small text documents are processed on the loop's thread; the rest in ``pool``'s worker
    processes, so that a document that runs away is killed at its time limit.
    """

    #: The processor stage may cancel ``process`` at a time limit: it returns at once.
    honours_cancellation = True

    def __init__(self, settings: ProcessorConfig, pool: WorkerPool | None = None) -> None:
        self._settings = settings
        self._own_pool = pool is None
        self._pool = pool or _default_pool(settings)

    def process_now(
        self, job: LeasedJob, data: bytes, content_type: str | None
    ) -> ProcessorOutput | None:
        """The result of a small text document, on this thread; None for the others.

        None also when a subclass overrides `process`: the stage must call that one.
        """
        if type(self).process is not LocalProcessor.process:
            return None
        if len(data) <= _INLINE_BYTES and not _may_be_pdf(data, job.r2_key, content_type):
            return process_locally(self._settings, data, job.r2_key, content_type)
        return None

    async def process(
        self, job: LeasedJob, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        output = self.process_now(job, data, content_type)
        if output is not None:
            return output
        return await self._pool.run(process_locally, self._settings, data, job.r2_key, content_type)

    async def aclose(self) -> None:
        """Stop the worker processes, if the pool is this processor's own."""
        if self._own_pool:
            await self._pool.aclose()


def _default_pool(settings: ProcessorConfig) -> WorkerPool:
    return WorkerPool(os.cpu_count() or 2, memory_mib=settings.worker_memory_mib)


# In a worker process: the processors `IsolatedProcessor` built there, by their settings.
_isolated: dict[bytes, Processor] = {}


def _process_isolated(
    settings: ProcessorConfig, job: LeasedJob, data: bytes, content_type: str | None
) -> ProcessorOutput:
    """In a worker process: build the factory's processor once, run one job on a fresh loop."""
    key = msgspec.json.encode(settings)
    processor = _isolated.get(key)
    if processor is None:
        processor = _isolated[key] = _from_factory(settings)
    return anyio.run(processor.process, job, data, content_type)


class IsolatedProcessor:
    """A ``[processor] kind = "python"`` processor with ``isolate = true``.

    The factory is called in each worker process (not in this one) and each job runs there on
    an event loop of its own (asyncio), so a job that blocks its loop, runs away or allocates
    without bound harms only its worker, which is killed at the job's time limit. Arguments
    and results cross the process boundary pickled.
    """

    honours_cancellation = True

    def __init__(self, settings: ProcessorConfig, pool: WorkerPool | None = None) -> None:
        self._settings = settings
        self._own_pool = pool is None
        self._pool = pool or _default_pool(settings)

    async def process(
        self, job: LeasedJob, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        return await self._pool.run(_process_isolated, self._settings, job, data, content_type)

    async def aclose(self) -> None:
        """Stop the worker processes, if the pool is this processor's own."""
        if self._own_pool:
            await self._pool.aclose()


def _from_factory(settings: ProcessorConfig) -> Processor:
    if not settings.factory or ":" not in settings.factory:
        raise ConfigError(
            '[processor].kind = "python" needs [processor].factory = '
            '"package.module:callable", a callable that takes the [processor] table '
            "and returns a processor"
        )
    module_name, _, attribute = settings.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"[processor].factory = {settings.factory!r} cannot be imported: {exc}. Check "
            "the name and that its package is on PYTHONPATH"
        ) from None
    return factory(settings)  # type: ignore[no-any-return]


def make_processor(
    settings: ProcessorConfig, secrets: Secrets | None = None, *, pool: WorkerPool | None = None
) -> Processor:
    """The processor that ``[processor].kind`` names (``python``: your own, by import path).

    ``secrets`` default to the environment's (``GOOGLE_API_KEY`` for ``gemini``); ``pool`` runs
    the offline processor's large documents and isolated processors (without one, such a
    processor has a pool of its own, a worker per CPU, stopped by its ``aclose``).
    """
    if settings.kind == "local":
        return LocalProcessor(settings, pool)
    if settings.kind == "gemini":
        from actors.gemini_processor import GeminiProcessor  # imports httpx: only when used

        if secrets is None:
            secrets = Secrets.from_env(os.environ)
        return GeminiProcessor.from_settings(settings, secrets)
    if settings.kind == "python":
        if settings.isolate:
            if not settings.factory or ":" not in settings.factory:
                _from_factory(settings)  # raises the ConfigError here, not in every worker
            module_name = (settings.factory or "").partition(":")[0]
            try:
                importlib.import_module(module_name)  # a typo fails at start-up
            except ImportError as exc:
                raise ConfigError(
                    f"[processor].factory = {settings.factory!r} cannot be imported: {exc}. "
                    "Check the name and that its package is on PYTHONPATH"
                ) from None
            return IsolatedProcessor(settings, pool)
        return _from_factory(settings)
    raise ConfigError(
        f"[processor].kind = {settings.kind!r} is not available in this version; "
        'use "local", "gemini" or "python"'
    )


async def call_abandonably(calls: TaskGroup, func: Callable[[], Awaitable[T]], seconds: float) -> T:
    """Await ``func()`` in a task of ``calls`` for at most ``seconds``, then stop waiting.

    Past the limit the call is cancelled and `JobTimedOut` raised at once, even when the call
    ignores cancellation (a blocking call in a worker thread, which no one can interrupt): the
    call is then abandoned, left to end on its own in ``calls``, its outcome dropped.
    """
    done = anyio.Event()
    outcome: list[tuple[bool, Any]] = []
    scope = anyio.CancelScope()

    async def call() -> None:
        try:
            with scope:
                try:
                    outcome.append((True, await func()))
                except Exception as exc:  # re-raised in the caller: the job's error
                    outcome.append((False, exc))
        finally:
            done.set()

    calls.start_soon(call)
    try:
        with anyio.move_on_after(seconds):
            await done.wait()
    finally:
        if not done.is_set():
            scope.cancel()  # also when the caller itself is cancelled (a shutdown)
    if not outcome:
        raise JobTimedOut(_timed_out(seconds, "cancelled, and abandoned if it ignores that"))
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


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
    one stuck in a thread cannot hold this stage.

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
    ) -> None:
        self.name = name
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
        with stop_scope(self._ctx):
            async for message in self._inbox:
                await self._process(message)

    async def _call(self, message: Fetched) -> ProcessorOutput:
        job = message.job
        # A processor may answer at once, within a bounded time, without a time limit's cost
        # (LocalProcessor: small text documents; about 10 us less per job).
        process_now = getattr(self._processor, "process_now", None)
        if process_now is not None:
            output: ProcessorOutput | None = process_now(job, message.data, message.content_type)
            if output is not None:
                return output
        limit = job.timeout_seconds or self._timeout
        self._inflight.set_deadline(job, anyio.current_time() + limit)
        call = functools.partial(self._processor.process, job, message.data, message.content_type)
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
        try:
            output = await self._call(message)
        except DocumentError as exc:
            outcome: AckInbox = Failed(job=job, error=str(exc), permanent=True, stage="process")
        except ActorsError as exc:
            outcome = Failed(job=job, error=str(exc), stage="process")
        except Exception as exc:
            # Cancellation is a BaseException and passes through: the job is given back.
            log.warning("process.raised", job_id=job.id, run_id=job.run_id, exc_info=exc)
            outcome = Failed(
                job=job,
                error=_unexpected(exc),
                permanent=isinstance(exc, RecursionError),
                stage="process",
            )
        else:
            if not isinstance(output, ProcessorOutput):
                problem = (
                    f"the processor returned {type(output).__name__}, not a ProcessorOutput;"
                    " a bug in the processor (see the Processor protocol)"
                )
                self._inflight.crashed(job, problem)
                raise TypeError(problem)
            outcome = Processed(job=job, result=output.result, metrics=output.metrics)
        self._acks.send_nowait(outcome)  # never blocks: the stream holds every in-flight job
        self._inflight.decided(job)
        self._inflight.let_go(job, self.name)


def _unexpected(exc: Exception) -> str:
    """A job's error for an exception its processor raised unexpectedly: type and message."""
    if isinstance(exc, RecursionError):
        return (
            f"RecursionError: {exc}; the document nests deeper than the processor can follow,"
            " so retrying cannot help"
        )
    return f"processing raised {type(exc).__name__}: {exc}"
