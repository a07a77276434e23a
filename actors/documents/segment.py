"""Find paragraphs, sentences and words in plain text, as character spans into that text."""

from __future__ import annotations

import re

__all__ = ["WORD", "paragraph_spans", "sentence_spans", "word_starts"]

# A word: letters and digits, with inner apostrophes, straight or curly (U+2019).
WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")

_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# A place where a sentence may end: terminal punctuation (and closing quotes or brackets) before
# whitespace, or a line break.
# The lookbehinds make each match start at the beginning of its run, so that a long run of spaces
# or of "!" is scanned once, not once from each of its characters.
_CANDIDATE = re.compile(
    r"(?<![.!?\u2026])[.!?\u2026]+[)\"'\]\u2019\u201d\u00bb]*\s+|(?<![ \t])[ \t]*\n\s*"
)
_SPACE_RUN = re.compile(r"\s+")
_INITIALS = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "e.g", "i.e", "cf", "fig", "vol"}
    | {"approx", "dept", "inc", "ltd", "corp"}
)
# 40 chars: a line at least this long that ends mid-sentence is a soft wrap (PDF text, plain text
# wrapped at 72-90 columns); shorter lines are headings, list items or "key: value" lines.
_SOFT_WRAP_MIN_LINE = 40


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """Return the (start, end) of each paragraph: runs of text between blank lines, trimmed."""
    spans: list[tuple[int, int]] = []
    position = 0
    for match in _BLANK_LINE.finditer(text):
        _add_trimmed(text, position, match.start(), spans)
        position = match.end()
    _add_trimmed(text, position, len(text), spans)
    return spans


def sentence_spans(text: str) -> list[tuple[int, int, int]]:
    """Return (start, end, paragraph number) of each sentence, in order, trimmed of whitespace.

    A sentence ends at terminal punctuation followed by whitespace and a character that is not
    lower case (so "e.g. this" and "Dr. Ng" do not end one), and at a line break unless the line
    looks soft-wrapped (long, and the next line carries on in lower case).
    """
    sentences = []
    for number, (start, end) in enumerate(paragraph_spans(text)):
        sentence_start = start
        line_start = start
        for match in _CANDIDATE.finditer(text, start, end):
            gap = match.group()
            has_break = "\n" in gap
            sentence_end = match.start() + len(gap.rstrip())
            next_start = match.end()
            if sentence_end > match.start():
                # Terminal punctuation.
                ends = has_break or not (
                    text[next_start].islower() or _is_abbreviation(text, line_start, match.start())
                )
            else:
                line = text[line_start:sentence_end]
                ends = len(line) < _SOFT_WRAP_MIN_LINE or not text[next_start].islower()
            if has_break:
                line_start = next_start
            if ends:
                sentences.append((sentence_start, sentence_end, number))
                sentence_start = next_start
        sentences.append((sentence_start, end, number))
    return sentences


def word_starts(text: str) -> list[int]:
    """Return the offset of every character that follows a run of whitespace."""
    return [match.end() for match in _SPACE_RUN.finditer(text) if match.end() < len(text)]


def _add_trimmed(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        lead = len(piece) - len(piece.lstrip())
        spans.append((start + lead, start + lead + len(stripped)))


def _is_abbreviation(text: str, line_start: int, dot: int) -> bool:
    """Tell whether the word ending at `dot` (a ".") is an abbreviation or an initial."""
    if text[dot] != ".":
        return False
    word_start = text.rfind(" ", line_start, dot) + 1 or line_start
    word = text[max(word_start, line_start) : dot].lstrip("([\"'\u201c\u2018")
    return word.lower() in _ABBREVIATIONS or _INITIALS.fullmatch(word) is not None
