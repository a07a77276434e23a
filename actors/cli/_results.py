"""Reading a run's results back: a readable report, JSON lines export, similarity search."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import TextIO

import msgspec

from actors.processors import decode_vector
from actors.queue import Job, Queue

__all__ = ["Hit", "export_run", "iter_run_jobs", "job_record", "report_run", "search_run"]

_PAGE = 500


async def iter_run_jobs(queue: Queue, run_id: str) -> AsyncIterator[Job]:
    """Every job of the run, in id order, a page at a time (memory holds one page)."""
    cursor: str | None = None
    while True:
        page = await queue.list(run_id=run_id, limit=_PAGE, cursor=cursor)
        for job in page.items:
            yield job
        cursor = page.next_cursor
        if not cursor:
            return


def _vectors(result: object) -> list[list[float]]:
    embeddings = result.get("embeddings") if isinstance(result, dict) else None
    if not isinstance(embeddings, dict):
        return []
    return [decode_vector(v) for v in embeddings.get("vectors") or []]


def job_record(job: Job) -> dict[str, object]:
    """One job as an export line: its outcome, analysis, chunks, embeddings (floats), usage."""
    result = job.result if isinstance(job.result, dict) else None
    record: dict[str, object] = {
        "job_id": job.id,
        "run_id": job.run_id,
        "tenant_id": job.tenant_id,
        "key": job.r2_key,
        "status": job.status,
        "attempts": job.attempts,
        "error": job.last_error,
    }
    if result is None:
        return record
    if result.get("processor") == "gemini":
        record.update(
            analysis=result.get("analysis"),
            chunks=result.get("chunks"),
            embeddings=_vectors(result),
            embed_model=result.get("embed_model"),
            chat_model=result.get("chat_model"),
            usage=result.get("usage"),
        )
    else:  # the offline processor's result, as it is
        record["result"] = result
    return record


async def export_run(queue: Queue, run_id: str, out: TextIO) -> int:
    """Write one JSON line per job of the run to ``out``; return how many."""
    await queue.run_summary(run_id)  # RunNotFound for a wrong id, before any output
    count = 0
    encoder = msgspec.json.Encoder()
    async for job in iter_run_jobs(queue, run_id):
        out.write(encoder.encode(job_record(job)).decode() + "\n")
        count += 1
    return count


def _headline(job: Job) -> str:
    result = job.result if isinstance(job.result, dict) else {}
    if job.status == "failed":
        return f"error: {job.last_error}"
    analysis = result.get("analysis")
    if isinstance(analysis, dict) and analysis.get("summary"):
        return str(analysis["summary"])
    summary = result.get("summary")
    if isinstance(summary, list) and summary:
        return str(summary[0])
    return ""


async def report_run(queue: Queue, run_id: str, out: TextIO, *, limit: int = 20) -> None:
    """The run's summary, then one line per job (up to ``limit``): status, key, headline."""
    from actors.service import format_summary

    print(format_summary(await queue.run_summary(run_id)), file=out)
    shown = 0
    async for job in iter_run_jobs(queue, run_id):
        if shown == limit:
            print("  ... (--limit N shows more; runs export writes everything)", file=out)
            break
        headline = " ".join(_headline(job).split())
        if len(headline) > 100:
            headline = headline[:99] + "…"
        result = job.result if isinstance(job.result, dict) else {}
        chunks = len(result.get("chunks") or [])
        detail = f"{chunks} chunks" if job.status == "done" else f"{job.attempts} attempts"
        print(f"  #{job.id} {job.status:<7} {job.r2_key}  ({detail})", file=out)
        if headline:
            print(f"      {headline}", file=out)
        shown += 1


class Hit(msgspec.Struct, frozen=True, kw_only=True):
    """A chunk that `search_run` found: how similar it is to the query, and where it is."""

    score: float  # cosine similarity, rounded to 4 places
    job_id: int
    key: str  # the job's object key
    chunk: int | None  # the chunk's index in its document
    text: str | None  # None when the processor did not store chunk texts


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


async def search_run(
    queue: Queue, run_id: str, query_vector: list[float], *, top: int = 5
) -> list[Hit]:
    """The ``top`` chunks of the run most similar (cosine) to ``query_vector``, best first."""
    await queue.run_summary(run_id)
    hits: list[Hit] = []
    async for job in iter_run_jobs(queue, run_id):
        result = job.result if isinstance(job.result, dict) else {}
        chunks = result.get("chunks") or []
        for chunk, vector in zip(chunks, _vectors(result), strict=False):
            hits.append(
                Hit(
                    score=round(_cosine(query_vector, vector), 4),
                    job_id=job.id,
                    key=job.r2_key,
                    chunk=chunk.get("index"),
                    text=chunk.get("text"),
                )
            )
        hits.sort(key=lambda h: -h.score)
        del hits[top:]
    return hits
