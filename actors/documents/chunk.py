"""Split text into overlapping chunks of bounded size, at paragraph, sentence or word boundaries."""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import msgspec

from actors.documents.segment import paragraph_spans, sentence_spans, word_starts

__all__ = ["Chunk", "chunk_text"]


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """A slice of the text: ``text == source[start:end]``; chunks cover the source in order."""

    index: int
    start: int
    end: int
    text: str


def chunk_text(text: str, *, max_chars: int = 2000, overlap_chars: int = 200) -> list[Chunk]:
    """Split `text` into chunks of at most `max_chars`, each repeating up to `overlap_chars` of the
    previous one, and never more than half a chunk (so a small `max_chars` works with the default).

    Invariant: the first chunk starts at 0, the last ends at ``len(text)``, and each chunk starts
    after the previous one starts and no later than it ends, so the spans cover the whole text and
    dropping each chunk's overlap with its predecessor gives the text back.

    A cut is made at the last paragraph start in the window, else the last sentence start, else
    the last word start, else at `max_chars` (a word longer than a chunk); cuts in the second half
    of the window are preferred so that chunks are of even size. An overlap starts at a sentence
    start if one falls inside it, else at a word start.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if overlap_chars < 0:
        raise ValueError(f"overlap_chars must be at least 0, got {overlap_chars}")
    overlap_chars = min(overlap_chars, max_chars // 2)
    if not text:
        return []
    if len(text) <= max_chars:
        # The hot path: most documents in a job are small.
        return [Chunk(index=0, start=0, end=len(text), text=text)]

    paragraphs = [start for start, _ in paragraph_spans(text)]
    sentences = [start for start, _, _ in sentence_spans(text)]
    words = word_starts(text)
    levels = (paragraphs, sentences, words)

    chunks: list[Chunk] = []
    start = 0
    previous_end = 0
    while len(text) - start > max_chars:
        limit = start + max_chars
        end = (
            _last_boundary(levels, max(previous_end + 1, start + max_chars // 2), limit)
            or _last_boundary(levels, previous_end + 1, limit)
            or limit
        )
        chunks.append(Chunk(index=len(chunks), start=start, end=end, text=text[start:end]))
        previous_end = end
        start = _overlap_start(levels[1:], max(end - overlap_chars, start + 1), end)
    chunks.append(Chunk(index=len(chunks), start=start, end=len(text), text=text[start:]))
    return chunks


def _last_boundary(levels: tuple[list[int], ...], low: int, high: int) -> int | None:
    """Return the last boundary in [low, high] of the most preferred level that has one."""
    for boundaries in levels:
        i = bisect_right(boundaries, high)
        if i and boundaries[i - 1] >= low:
            return boundaries[i - 1]
    return None


def _overlap_start(levels: tuple[list[int], ...], low: int, end: int) -> int:
    """Return the first boundary in [low, end) of the most preferred level, else `end`."""
    for boundaries in levels:
        i = bisect_left(boundaries, low)
        if i < len(boundaries) and boundaries[i] < end:
            return boundaries[i]
    return end
