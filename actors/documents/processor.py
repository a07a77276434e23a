"""The offline processor: a document's bytes in, its text's summary, keywords and chunks out."""

from __future__ import annotations

import msgspec

from actors.documents.chunk import Chunk, chunk_text
from actors.documents.extract import DocumentKind, extract_text
from actors.documents.summarize import DocumentStats, analyze_text

__all__ = ["DocumentResult", "process_document"]

# 10: enough keywords to tag a document, few enough to read at a glance.
_TOP_KEYWORDS = 10


class DocumentResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the offline processor makes of one document; the same bytes give an equal result."""

    kind: DocumentKind
    title: str | None
    summary: list[str]
    keywords: list[str]
    stats: DocumentStats
    chunks: list[Chunk]
    bytes: int
    pages: int | None = None


def process_document(
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    max_chunk_chars: int = 2000,
    summary_sentences: int = 3,
) -> DocumentResult:
    """Extract the text of `data`, summarize it, find its keywords and split it into chunks.

    Chunks overlap by a tenth of `max_chunk_chars` (200 of 2000 by default).

    Error handling: raises a `DocumentError` (see `extract_text`) when the document cannot be
    read; it is a permanent failure of the job, never worth a retry. Any other exception is a bug.
    """
    extracted = extract_text(data, filename=filename, content_type=content_type)
    analysis = analyze_text(
        extracted.text, summary_sentences=summary_sentences, top_keywords=_TOP_KEYWORDS
    )
    return DocumentResult(
        kind=extracted.kind,
        title=extracted.title,
        summary=analysis.summary,
        keywords=analysis.keywords,
        stats=analysis.stats,
        chunks=chunk_text(
            extracted.text, max_chars=max_chunk_chars, overlap_chars=max_chunk_chars // 10
        ),
        bytes=len(data),
        pages=extracted.pages,
    )
