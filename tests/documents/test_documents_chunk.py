"""chunk_text: bounded chunks at the best boundary that cover the whole text, with overlaps."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.documents import Chunk, chunk_text


def _reassemble(chunks: list[Chunk]) -> str:
    """Concatenate the chunks, dropping the part of each that overlaps the one before."""
    text = ""
    previous_end = 0
    for chunk in chunks:
        text += chunk.text[previous_end - chunk.start :]
        previous_end = chunk.end
    return text


_PIECES = st.sampled_from(
    [
        "word",
        "Another",
        "x",
        "sentence.",
        "Ends!",
        "Dr.",
        "e.g.",
        " ",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "supercalifragilistic",
        "é",
        "3.5",
    ]
)


# Twice the profile's count (300 in CI): examples are cheap and the boundaries many.
@settings(max_examples=2 * settings().max_examples, deadline=None)
@given(
    text=st.lists(_PIECES | st.text(max_size=5), max_size=120).map("".join),
    max_chars=st.integers(1, 120),
    data=st.data(),
)
@example(text="a" * 50, max_chars=7, data=None)
def test_chunks_cover_the_text_in_bounded_overlapping_pieces(
    text: str, max_chars: int, data: st.DataObject | None
) -> None:
    overlap = data.draw(st.integers(0, 2 * max_chars)) if data else max_chars
    chunks = chunk_text(text, max_chars=max_chars, overlap_chars=overlap)

    assert _reassemble(chunks) == text
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    if text:
        assert chunks[0].start == 0
        assert chunks[-1].end == len(text)
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
        assert 0 < len(chunk.text) <= max_chars
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start <= before.end < after.end
        assert before.end - after.start <= min(overlap, max_chars // 2)


def test_a_short_text_is_one_chunk() -> None:
    assert chunk_text("Short.", max_chars=10) == [Chunk(index=0, start=0, end=6, text="Short.")]


def test_an_empty_text_has_no_chunks() -> None:
    assert chunk_text("") == []


def test_chunks_end_at_paragraph_breaks_when_they_can() -> None:
    paragraphs = [f"Paragraph {i} has a few words in it." for i in range(6)]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, max_chars=80, overlap_chars=0)
    assert [chunk.text.strip() for chunk in chunks] == [
        "\n\n".join(paragraphs[i : i + 2]) for i in range(0, 6, 2)
    ]


def test_chunks_fall_back_to_sentence_then_word_boundaries() -> None:
    text = "One two three four. Five six seven eight. Nine ten eleven twelve."
    by_sentence = chunk_text(text, max_chars=45, overlap_chars=0)
    assert [chunk.text for chunk in by_sentence] == [
        "One two three four. Five six seven eight. ",
        "Nine ten eleven twelve.",
    ]
    by_word = chunk_text("alpha beta gamma delta epsilon", max_chars=12, overlap_chars=0)
    assert [chunk.text for chunk in by_word] == ["alpha beta ", "gamma delta ", "epsilon"]


def test_a_word_longer_than_a_chunk_is_cut_at_max_chars() -> None:
    chunks = chunk_text("abcdefghij", max_chars=4, overlap_chars=0)
    assert [chunk.text for chunk in chunks] == ["abcd", "efgh", "ij"]


def test_an_overlap_starts_at_a_sentence_when_one_is_in_reach() -> None:
    text = "First sentence here. Second one follows. " * 3
    chunks = chunk_text(text.strip(), max_chars=60, overlap_chars=25)
    assert chunks[1].text.startswith("Second one follows.")
    assert chunks[0].end > chunks[1].start


def test_an_overlap_is_at_most_half_a_chunk_and_starts_at_a_word() -> None:
    chunks = chunk_text("aa bb cc dd ee ff", max_chars=6, overlap_chars=200)
    assert [chunk.text for chunk in chunks] == ["aa bb ", "bb cc ", "cc dd ", "dd ee ", "ee ff"]
    # Inside one long word there is no word start to begin an overlap at.
    assert [chunk.text for chunk in chunk_text("abcdefghij", max_chars=4)] == ["abcd", "efgh", "ij"]


@pytest.mark.parametrize(("max_chars", "overlap"), [(0, 0), (10, -1)])
def test_impossible_sizes_are_refused(max_chars: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        chunk_text("text", max_chars=max_chars, overlap_chars=overlap)


def test_chunking_a_long_text_is_deterministic(samples: dict[str, bytes]) -> None:
    text = samples["lichen-field-notes.txt"].decode() * 20
    assert chunk_text(text, max_chars=500) == chunk_text(text, max_chars=500)
    assert all(len(chunk.text) <= 500 for chunk in chunk_text(text, max_chars=500))
