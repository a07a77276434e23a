"""Extractive summary, keywords and statistics of plain text, by term frequency; no model."""

from __future__ import annotations

import math
import re

import msgspec

from actors.documents.segment import WORD, paragraph_spans, sentence_spans

__all__ = ["DocumentStats", "TextAnalysis", "analyze_text", "document_stats", "summarize_text"]

# A small English stopword list: function words that say nothing about what a text is about.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each either few for from further get gets got had hadn't has
    hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his how
    how's however i i'd i'll i'm i've if in into is isn't it it's its itself just let's like may
    me might more most must mustn't my myself neither no nor not now of off on once one only or
    other ought our ours ourselves out over own per same shall shan't she she'd she'll she's should
    shouldn't since so some such than that that's the their theirs them themselves then there
    there's these they they'd they'll they're they've this those though through thus to too two
    under until up upon us very was wasn't we we'd we'll we're we've were weren't what what's when
    when's where where's whether which while who who's whom why why's will with within without
    won't would wouldn't yet you you'd you'll you're you've your yours yourself yourselves
    """.split()  # noqa: SIM905  # 170 words read better as text than as a list of literals
)
# 238 words a minute: the average silent reading rate for English non-fiction (Brysbaert, 2019).
_WORDS_PER_MINUTE = 238
# Sentences shorter than this many words (headings, list items) are scored down in proportion.
_FULL_SENTENCE_WORDS = 8
_TERMINAL = re.compile(r"[.!?\u2026][)\"'\]\u2019\u201d\u00bb]*$")
_FIRST_SENTENCE_BONUS = 0.5
_PARAGRAPH_LEAD_BONUS = 0.2


class DocumentStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts that describe a text; `reading_minutes` assumes 238 words a minute."""

    characters: int
    words: int
    sentences: int
    paragraphs: int
    unique_words: int
    reading_minutes: float


class TextAnalysis(msgspec.Struct, frozen=True, kw_only=True):
    """The summary sentences (in document order), the top keywords and the statistics of a text."""

    summary: list[str]
    keywords: list[str]
    stats: DocumentStats


def analyze_text(text: str, *, summary_sentences: int = 3, top_keywords: int = 10) -> TextAnalysis:
    """Summarize `text` in up to `summary_sentences` sentences, list its keywords and count it.

    A sentence scores the sum of the normalized frequencies (count / highest count) of its content
    words over the square root of their number, scaled down if it has fewer than 8 words, with a
    bonus for the first sentence of the text and of each paragraph. Fragments without terminal
    punctuation (headings, list items) are chosen only when real sentences run out. Ties go to the
    earlier sentence, so the result depends on the text alone.
    """
    sentences = sentence_spans(text)
    sentence_words = [
        [word.replace("\u2019", "'").lower() for word in WORD.findall(text, start, end)]
        for start, end, _ in sentences
    ]
    frequency: dict[str, int] = {}
    for words in sentence_words:
        for word in words:
            frequency[word] = frequency.get(word, 0) + 1
    # Only content words count towards keywords and scores.
    counts = {word: count for word, count in frequency.items() if _is_content(word)}
    total_words = sum(frequency.values())

    # sorted() is stable and dicts keep insertion order, so equal counts rank by first appearance.
    keywords = [word for word, _ in sorted(counts.items(), key=lambda item: -item[1])]
    stats = DocumentStats(
        characters=len(text),
        words=total_words,
        sentences=len(sentences),
        paragraphs=len(paragraph_spans(text)),
        unique_words=len(frequency),
        reading_minutes=round(total_words / _WORDS_PER_MINUTE, 2),
    )
    summary = _summary(text, sentences, sentence_words, counts, summary_sentences)
    return TextAnalysis(summary=summary, keywords=keywords[: max(top_keywords, 0)], stats=stats)


def summarize_text(text: str, *, sentences: int = 3) -> list[str]:
    """Return up to `sentences` of the text's most representative sentences, in document order."""
    return analyze_text(text, summary_sentences=sentences, top_keywords=0).summary


def document_stats(text: str) -> DocumentStats:
    """Count the characters, words, sentences, paragraphs and distinct words of `text`."""
    return analyze_text(text, summary_sentences=0, top_keywords=0).stats


def _summary(
    text: str,
    sentences: list[tuple[int, int, int]],
    sentence_words: list[list[str]],
    counts: dict[str, int],
    k: int,
) -> list[str]:
    if k <= 0 or not sentences:
        return []
    if len(sentences) > k:
        highest = max(counts.values(), default=1)
        scores = []
        previous_paragraph = -1
        for i, ((_, _, paragraph), words) in enumerate(zip(sentences, sentence_words, strict=True)):
            content = [word for word in words if word in counts]
            score = sum(counts[word] for word in content) / highest / math.sqrt(len(content) or 1)
            score *= min(1.0, len(words) / _FULL_SENTENCE_WORDS)
            if i == 0:
                score *= 1 + _FIRST_SENTENCE_BONUS
            elif paragraph != previous_paragraph:
                score *= 1 + _PARAGRAPH_LEAD_BONUS
            previous_paragraph = paragraph
            # A sentence that does not end in . ! or ? is a heading, a list item or a label: it is
            # chosen only when there are not enough real sentences.
            fragment = _TERMINAL.search(text, sentences[i][0], sentences[i][1]) is None
            scores.append((fragment, -score, i))
        chosen = sorted(i for _, _, i in sorted(scores)[:k])
    else:
        chosen = list(range(len(sentences)))
    # Whitespace is collapsed so that a sentence wrapped over lines reads as one line.
    return [" ".join(text[sentences[i][0] : sentences[i][1]].split()) for i in chosen]


def _is_content(word: str) -> bool:
    return len(word) > 2 and word not in STOPWORDS and not word.isdigit()
