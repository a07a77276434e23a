"""process_document: one deterministic, serializable result per document."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from actors.documents import DocumentResult, process_document
from actors.errors import UnsupportedDocument

_ENCODE_ALL_SAMPLES = """
import sys
from pathlib import Path
import msgspec
from actors.documents import process_document
results = {p.name: process_document(p.read_bytes(), filename=p.name, max_chunk_chars=400)
           for p in sorted(Path(sys.argv[1]).iterdir())}
sys.stdout.buffer.write(msgspec.json.encode(results))
"""


def test_a_small_text_file_gives_its_summary_keywords_stats_and_one_chunk() -> None:
    data = b"Tide Tables\n\nHigh water is at noon. Low water follows at six.\n"
    result = process_document(data, filename="tides.txt", summary_sentences=2)
    assert result.kind == "text"
    assert result.title == "Tide Tables"
    assert result.summary == ["High water is at noon.", "Low water follows at six."]
    assert result.keywords[:2] == ["water", "tide"]
    assert result.bytes == len(data)
    assert result.pages is None
    assert result.stats.paragraphs == 2
    assert [chunk.text for chunk in result.chunks] == [data.decode().strip()]


def test_chunks_overlap_by_a_tenth_of_max_chunk_chars(samples: dict[str, bytes]) -> None:
    result = process_document(samples["harbour-report.pdf"], max_chunk_chars=300)
    assert result.pages == 2
    assert len(result.chunks) > 3
    assert all(len(chunk.text) <= 300 for chunk in result.chunks)
    overlaps = [a.end - b.start for a, b in itertools.pairwise(result.chunks)]
    assert max(overlaps) <= 30
    assert any(overlap > 0 for overlap in overlaps)


def test_summary_length_follows_summary_sentences(samples: dict[str, bytes]) -> None:
    data = samples["lichen-field-notes.txt"]
    assert len(process_document(data, summary_sentences=5).summary) == 5
    assert process_document(data, summary_sentences=0).summary == []


def test_the_same_bytes_give_an_equal_result(samples: dict[str, bytes]) -> None:
    for name, data in samples.items():
        assert process_document(data, filename=name) == process_document(data, filename=name)


def test_results_do_not_depend_on_the_hash_seed(
    samples: dict[str, bytes], sample_dir: Path
) -> None:
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outputs.append(
            subprocess.run(
                [sys.executable, "-c", _ENCODE_ALL_SAMPLES, str(sample_dir)],
                env=env,
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
        )
    assert outputs[0] == outputs[1]
    assert msgspec.json.decode(outputs[0], type=dict[str, DocumentResult]).keys() == samples.keys()


def test_a_result_round_trips_through_json(samples: dict[str, bytes]) -> None:
    result = process_document(samples["museum-newsletter.html"], max_chunk_chars=500)
    encoded = msgspec.json.encode(result)
    assert msgspec.json.decode(encoded, type=DocumentResult) == result


def test_an_unreadable_document_raises_a_document_error() -> None:
    with pytest.raises(UnsupportedDocument):
        process_document(b"\x89PNG\r\n\x1a\n....", filename="photo.png")
