"""The processor stage: turns a fetched object into the job's result (offline or with Gemini)."""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol, TypeVar

import anyio
import msgspec
import structlog

from actors.config import ProcessorConfig, Secrets
from actors.errors import ConfigError, DocumentError
from actors.pipeline.messages import LeasedJob
from actors.processors._workers import WorkerPool

__all__ = [
    "IsolatedProcessor",
    "LocalProcessor",
    "Processor",
    "ProcessorOutput",
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
        from actors.processors._gemini import GeminiProcessor  # imports httpx: only when used

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
