"""The offline processor: text extraction, chunks and a summary, on the loop or in workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from actors.config import ProcessorConfig
from actors.errors import DocumentError
from actors.processors._workers import WorkerPool, default_pool
from actors.processors.base import JobInput, ProcessorOutput

__all__ = ["LocalProcessor", "process_locally"]

# Documents up to this size (PDFs excepted) take half a millisecond at most (every extractor is
# linear-time): the pipeline sends them to a worker process in batches, where one round trip
# serves many; alone (`process`) they are processed on the caller's thread, as a worker would
# cost 2-3x the work itself ("Processing in worker processes" in docs/benchmarks.md). Anything
# larger, and every PDF (a few kilobytes can inflate to gigabytes), goes to a worker process
# one document per call.
_INLINE_BYTES = 1024


def _fitted(result: dict[str, Any], filename: str) -> tuple[dict[str, Any], bytes]:
    """The result kept within what the queue stores per job (256 KiB of JSON), and its JSON.

    The chunks' texts are the bulk of a large document's result; past the limit they are left
    out (each chunk keeps its offsets into the document) and ``chunks_truncated`` says so.
    """
    from actors.bounds import DEFAULT_MAX_PAYLOAD_BYTES

    encoded = msgspec.json.encode(result)
    if len(encoded) <= DEFAULT_MAX_PAYLOAD_BYTES:
        return result, encoded
    result = {**result, "chunks_truncated": True}
    result["chunks"] = [{k: v for k, v in c.items() if k != "text"} for c in result["chunks"]]
    encoded = msgspec.json.encode(result)
    size = len(encoded)
    if size > DEFAULT_MAX_PAYLOAD_BYTES:
        raise DocumentError(
            f"{filename}: its result is {size} bytes even without the chunks' texts, over the "
            f"queue's limit of {DEFAULT_MAX_PAYLOAD_BYTES}; raise [processor].max_chunk_chars "
            "(fewer chunks) or split the document"
        )
    return result, encoded


def process_locally(
    settings: ProcessorConfig, data: bytes, filename: str, content_type: str | None
) -> ProcessorOutput:
    """The offline processor's work, on whichever thread or process calls it."""
    return _process(settings, data, filename, content_type, raw=False)


def _process(
    settings: ProcessorConfig, data: bytes, filename: str, content_type: str | None, *, raw: bool
) -> ProcessorOutput:
    from actors.documents import process_document

    document = process_document(
        data,
        filename=filename,
        content_type=content_type,
        max_chunk_chars=settings.max_chunk_chars,
        summary_sentences=settings.summary_sentences,
    )
    result, encoded = _fitted(msgspec.to_builtins(document), filename)
    return ProcessorOutput(
        # Raw: the result's JSON, which the queue stores as it is (no second encoding) and
        # which crosses from a worker process as one string instead of many small objects.
        result=msgspec.Raw(encoded) if raw else result,
        metrics={"bytes": float(len(data)), "chunks": float(len(document.chunks))},
    )


def process_all(
    settings: ProcessorConfig, documents: Sequence[tuple[bytes, str, str | None]]
) -> list[ProcessorOutput | Exception]:
    """Process each of ``documents`` (data, file name, type): its output or its exception.

    Run in a worker process for a batch of small documents: each result is its JSON text
    (`msgspec.Raw`), which the queue stores as it is.
    """
    outcomes: list[ProcessorOutput | Exception] = []
    for data, filename, content_type in documents:
        try:
            outcomes.append(_process(settings, data, filename, content_type, raw=True))
        except Exception as exc:  # that document's failure, reported with its outcome
            outcomes.append(exc)
    return outcomes


def _may_be_pdf(data: bytes, filename: str, content_type: str | None) -> bool:
    return (
        b"%PDF" in data[:1024]
        or filename.lower().endswith(".pdf")
        or (content_type or "").lower().startswith("application/pdf")
    )


class LocalProcessor:
    """The embedded default: text extraction, chunks, extractive summary; no key, no network.

    Every document is processed in ``pool``'s worker processes, so that the event loop stays
    free and a document that runs away is killed at its time limit: small text documents in
    batches (`process_batch`, one worker call for many, so the round trip costs little per
    document), the rest one per call. Called alone (`process`), a small text document is
    processed on the caller's thread, where it takes half a millisecond at most.
    """

    #: The processor stage may cancel ``process`` at a time limit: it returns at once.
    honours_cancellation = True

    def __init__(self, settings: ProcessorConfig, pool: WorkerPool | None = None) -> None:
        self._settings = settings
        self._own_pool = pool is None
        self._pool = pool or default_pool(settings.worker_memory_mib)

    def process_now(
        self, job: JobInput, data: bytes, content_type: str | None
    ) -> ProcessorOutput | None:
        """The result of a small text document, on this thread; None for the others.

        None also when a subclass overrides `process`: the stage must call that one.
        """
        if type(self).process is not LocalProcessor.process:
            return None
        if len(data) <= _INLINE_BYTES and not _may_be_pdf(data, job.key, content_type):
            return process_locally(self._settings, data, job.key, content_type)
        return None

    def batchable(self, job: JobInput, data: bytes, content_type: str | None) -> bool:
        """Whether the document may go in a batch: small text, whose work is bounded.

        False for all when a subclass overrides `process`: the stage must call that one.
        """
        return (
            type(self).process is LocalProcessor.process
            and len(data) <= _INLINE_BYTES
            and not _may_be_pdf(data, job.key, content_type)
        )

    async def process_batch(
        self, items: Sequence[tuple[JobInput, bytes, str | None]]
    ) -> list[ProcessorOutput | Exception]:
        """Process `batchable` documents in one call to a worker process: an outcome each."""
        documents = [(data, job.key, content_type) for job, data, content_type in items]
        return await self._pool.run(process_all, self._settings, documents)

    async def process(
        self, job: JobInput, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        output = self.process_now(job, data, content_type)
        if output is not None:
            return output
        return await self._pool.run(process_locally, self._settings, data, job.key, content_type)

    async def aclose(self) -> None:
        """Stop the worker processes, if the pool is this processor's own."""
        if self._own_pool:
            await self._pool.aclose()
