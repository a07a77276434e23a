"""The processor stage: turns a fetched object into the job's result (offline or with Gemini)."""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.config import ProcessorConfig, Secrets
from actors.errors import ActorsError, ConfigError, DocumentError
from actors.inflight import InFlight, stop_scope
from actors.messages import AckInbox, Failed, Fetched, LeasedJob, Processed, Release
from supervisors import Context

__all__ = ["LocalProcessor", "Processor", "ProcessorOutput", "ProcessorStage", "make_processor"]

log = structlog.get_logger("actors.processor")

# Documents this small are processed on the loop's thread (a few hundred microseconds at most);
# larger ones in a worker thread so the loop keeps renewing leases and acking meanwhile.
_INLINE_BYTES = 32 * 1024


class ProcessorOutput(msgspec.Struct, frozen=True, kw_only=True):
    """A job's result and the numbers added to its run's aggregates."""

    result: Any
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


class Processor(Protocol):
    """What the processor stage needs from a processor (offline, Gemini...).

    Error handling: raise `DocumentError` when retrying cannot help (the job fails at once);
    any other `ActorsError` is a failed attempt that the queue retries with backoff.
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


class LocalProcessor:
    """The embedded default: text extraction, chunks, extractive summary; no key, no network."""

    def __init__(self, settings: ProcessorConfig) -> None:
        self._settings = settings

    def _process(self, data: bytes, filename: str, content_type: str | None) -> ProcessorOutput:
        from actors.documents import process_document

        document = process_document(
            data,
            filename=filename,
            content_type=content_type,
            max_chunk_chars=self._settings.max_chunk_chars,
            summary_sentences=self._settings.summary_sentences,
        )
        return ProcessorOutput(
            result=_fit(msgspec.to_builtins(document), filename),
            metrics={"bytes": float(len(data)), "chunks": float(len(document.chunks))},
        )

    async def process(
        self, job: LeasedJob, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        if len(data) <= _INLINE_BYTES:
            return self._process(data, job.r2_key, content_type)
        return await anyio.to_thread.run_sync(self._process, data, job.r2_key, content_type)

    async def aclose(self) -> None:
        """Nothing to release."""


def make_processor(settings: ProcessorConfig, secrets: Secrets | None = None) -> Processor:
    """The processor that ``[processor].kind`` names (``python``: your own, by import path).

    ``secrets`` default to the environment's (``GOOGLE_API_KEY`` for ``gemini``).
    """
    if settings.kind == "local":
        return LocalProcessor(settings)
    if settings.kind == "gemini":
        from actors.gemini_processor import GeminiProcessor  # imports httpx: only when used

        if secrets is None:
            secrets = Secrets.from_env(os.environ)
        return GeminiProcessor.from_settings(settings, secrets)
    if settings.kind == "python":
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
    raise ConfigError(
        f"[processor].kind = {settings.kind!r} is not available in this version; "
        'use "local", "gemini" or "python"'
    )


class ProcessorStage:
    """One of a pool of processors sharing one inbox; sends each outcome to the ack reporter.

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
    ) -> None:
        self.name = name
        self._ctx = ctx
        self._inbox = inbox
        self._acks = acks
        self._processor = processor
        self._inflight = inflight

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

    async def _process(self, message: Fetched) -> None:
        job = message.job
        self._inflight.hold(job, self.name)
        try:
            output = await self._processor.process(job, message.data, message.content_type)
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
        self._inflight.let_go(job, self.name)


def _unexpected(exc: Exception) -> str:
    """A job's error for an exception its processor raised unexpectedly: type and message."""
    if isinstance(exc, RecursionError):
        return (
            f"RecursionError: {exc}; the document nests deeper than the processor can follow,"
            " so retrying cannot help"
        )
    return f"processing raised {type(exc).__name__}: {exc}"
