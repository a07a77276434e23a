"""Offline document processing: extract text, chunk it, summarize it; no network, no model."""

from __future__ import annotations

from actors.documents.chunk import Chunk, chunk_text
from actors.documents.extract import DocumentKind, ExtractedText, detect_kind, extract_text
from actors.documents.processor import DocumentResult, process_document
from actors.documents.summarize import (
    DocumentStats,
    TextAnalysis,
    analyze_text,
    document_stats,
    summarize_text,
)

__all__ = [
    "Chunk",
    "DocumentKind",
    "DocumentResult",
    "DocumentStats",
    "ExtractedText",
    "TextAnalysis",
    "analyze_text",
    "chunk_text",
    "detect_kind",
    "document_stats",
    "extract_text",
    "process_document",
    "summarize_text",
]
