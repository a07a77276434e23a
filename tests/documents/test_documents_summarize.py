"""Extractive summaries, keywords and statistics: drawn from the text, in order, deterministic."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.documents import analyze_text, document_stats, extract_text, summarize_text
from actors.documents.segment import sentence_spans


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _assert_drawn_in_order(summary: list[str], text: str) -> None:
    flat = _normalized(text)
    position = 0
    for sentence in summary:
        found = flat.find(sentence, position)
        assert found >= 0, f"{sentence!r} is not in the text after offset {position}"
        position = found + len(sentence)


def test_summary_sentences_of_every_sample_are_drawn_from_it_in_order(
    samples: dict[str, bytes],
) -> None:
    for name, data in samples.items():
        text = extract_text(data, filename=name).text
        summary = summarize_text(text, sentences=3)
        assert len(summary) == 3, name
        _assert_drawn_in_order(summary, text)


@settings(deadline=None)  # the profile's count: 150 in CI
@given(
    text=st.lists(
        st.sampled_from(
            [
                "Cats sleep.",
                "Dogs bark loudly!",
                "Why?",
                "Rain",
                "\n",
                "\n\n",
                " ",
                "e.g. this",
                "Dr. Ng came.",
                "cats and dogs",
            ]
        ),
        max_size=40,
    ).map(" ".join),
    k=st.integers(0, 6),
)
def test_summary_sentences_are_always_drawn_from_the_text_in_order(text: str, k: int) -> None:
    summary = summarize_text(text, sentences=k)
    assert len(summary) == min(k, len(sentence_spans(text)))
    _assert_drawn_in_order(summary, text)


def test_summary_prefers_sentences_about_the_main_topic() -> None:
    text = (
        "Weekly notes. The river flooded the lower meadow again this week. "
        "Someone left a blue umbrella at the office. "
        "The river flooding reached the meadow fence, and the wardens closed the meadow path. "
        "Lunch was late on Tuesday. The wardens expect the river to fall by Friday."
    )
    assert summarize_text(text, sentences=2) == [
        "The river flooded the lower meadow again this week.",
        "The river flooding reached the meadow fence, and the wardens closed the meadow path.",
    ]


def test_headings_are_chosen_only_when_real_sentences_run_out() -> None:
    text = "Annual Garden Report\n\nThe roses did well. The beans failed in the drought."
    assert summarize_text(text, sentences=2) == [
        "The roses did well.",
        "The beans failed in the drought.",
    ]
    assert summarize_text(text, sentences=5) == [
        "Annual Garden Report",
        "The roses did well.",
        "The beans failed in the drought.",
    ]


def test_abbreviations_initials_and_decimals_do_not_end_a_sentence() -> None:
    text = "Dr. Ng met J. R. Okafor at 3.5 km, e.g. near the mill. They talked. It rained."
    assert summarize_text(text, sentences=3) == [
        "Dr. Ng met J. R. Okafor at 3.5 km, e.g. near the mill.",
        "They talked.",
        "It rained.",
    ]


def test_soft_wrapped_lines_join_into_one_sentence_but_short_lines_stand_alone() -> None:
    text = (
        "The committee reviewed the proposal for the new footbridge over\n"
        "the canal and asked for a second survey.\n"
        "Budget\n"
        "Costs rose."
    )
    assert summarize_text(text, sentences=5) == [
        "The committee reviewed the proposal for the new footbridge over the canal and asked for"
        " a second survey.",
        "Budget",
        "Costs rose.",
    ]


def test_statistics_count_characters_words_sentences_and_paragraphs() -> None:
    text = "The cat sat. The cat slept!\n\nA dog's bark woke it. Then 3 birds sang."
    stats = document_stats(text)
    assert stats.characters == len(text)
    assert stats.words == 15
    assert stats.sentences == 4
    assert stats.paragraphs == 2
    assert stats.unique_words == 13  # "the" and "cat" repeat; "dog's" is one word
    assert stats.reading_minutes == round(15 / 238, 2)


def test_keywords_skip_stopwords_and_rank_by_frequency_then_first_appearance() -> None:
    text = "The river and the mill. The mill wheel turns; the river runs. A heron waits by a river."
    assert analyze_text(text, top_keywords=4).keywords == ["river", "mill", "wheel", "turns"]


def test_an_empty_text_has_no_summary_keywords_or_sentences() -> None:
    analysis = analyze_text("")
    assert (analysis.summary, analysis.keywords, analysis.stats.sentences) == ([], [], 0)
