"""The offline processor: text extraction, chunks and a summary, on the loop or in workers."""

from __future__ import annotations

from typing import Any

import msgspec

from actors.config import ProcessorConfig
from actors.errors import DocumentError
from actors.processors._workers import WorkerPool, default_pool
from actors.processors.base import JobInput, ProcessorOutput

__all__ = ["LocalProcessor", "process_locally"]

# Documents up to this size (PDFs excepted) are processed on the loop's thread: half a
# millisecond at most, where a worker process would cost 2-3x the work itself ("Processing in
# worker processes" in docs/benchmarks.md). Every extractor is linear-time, so this bounds the
# time the loop can be held. Anything larger, and every PDF (a few kilobytes can inflate to
# gigabytes), goes to a worker process.
_INLINE_BYTES = 1024


def _fit(result: dict[str, Any], filename: str) -> dict[str, Any]:
    """Keep a result within what the queue stores per job (256 KiB of JSON).

    The chunks' texts are the bulk of a large document's result; past the limit they are left
    out (each chunk keeps its offsets into the document) and ``chunks_truncated`` says so.
    """
    from actors.bounds import DEFAULT_MAX_PAYLOAD_BYTES

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
