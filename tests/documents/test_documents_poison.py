"""Hostile documents: each is read in linear time and bounded memory, or refused as a document.

No timing assertion here: pytest-timeout fails a test that hangs, and each input is large enough
that a quadratic algorithm would hang (a line of 40,000 spaces took 38 s before; these are 1 MB).
"""

from __future__ import annotations

import zlib

import pytest

from actors.documents import extract_text, process_document
from actors.documents.html_text import MAX_HTML_DEPTH
from actors.errors import DocumentError, DocumentTooLarge

MB = 1024 * 1024


def read_or_refuse(data: bytes, **hints: str) -> str | DocumentError:
    """The text of `data`, or the `DocumentError` that refused it; anything else is a bug."""
    try:
        return extract_text(data, **hints).text
    except DocumentError as error:
        return error


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"a\n" + b" " * MB + b"x|\n", ["a", "x|"]),  # the old table-row pattern's two \s*
        (b" " * MB + b"x|", ["x|"]),
        (b"a" + b" " * MB + b"b", ["a", "b"]),
        (b"a\n" + b"\t" * MB + b"-\n", ["a", "-"]),
    ],
    ids=["spaces-then-pipe", "leading-spaces", "inner-spaces", "tabs-then-rule"],
)
def test_a_markdown_line_of_a_megabyte_of_whitespace_is_read(data: bytes, words: list[str]) -> None:
    assert extract_text(data, filename="line.md").text.split() == words


@pytest.mark.parametrize(
    "data",
    [
        b"*a " * 20_000,
        b"[a " * 20_000,
        b"[a](" * 20_000,
        b"`a " * 20_000,
        b"<!--a " * 20_000,
        b"a" + b"!" * 60_000 + b" b",
        b"![" * 20_000,
        b">" * MB,
        b"- " * 200_000,
        b"#" * (MB // 4),
        b"a|" * 25_000 + b"\n" + b"-|" * 25_000,
    ],
    ids=[
        "stars",
        "brackets",
        "link-starts",
        "backticks",
        "comment-starts",
        "bangs",
        "image-starts",
        "quotes",
        "list-markers",
        "hashes",
        "wide-table",
    ],
)
def test_pathological_markdown_is_read_or_refused_as_a_document(data: bytes) -> None:
    # Each of these made a hand-written pattern backtrack (seconds to minutes at this size).
    result = read_or_refuse(data, filename="line.md")
    assert isinstance(result, str | DocumentError)


@pytest.mark.parametrize("depth", [10_000, 200_000])
@pytest.mark.parametrize(
    ("opening", "closing"),
    [(b"[", b"]"), (b'{"a":', b"}"), (b'{"a":[', b"]}")],
    ids=["arrays", "objects", "mixed"],
)
def test_json_nested_thousands_deep_is_refused_not_a_recursion_error(
    depth: int, opening: bytes, closing: bytes
) -> None:
    data = opening * depth + b'"leaf"' + closing * depth
    for hints in ({"filename": "deep.json"}, {}):
        with pytest.raises(DocumentTooLarge, match="nests"):
            extract_text(data, **hints)


def test_unclosed_json_nested_thousands_deep_is_refused() -> None:
    with pytest.raises(DocumentError):
        extract_text(b"[" * MB, filename="deep.json")


def test_deep_json_renders_short_paths_so_its_text_grows_with_the_document() -> None:
    # 500 levels (within the decoder's reach) over 100,000 leaves: full paths would be ~2 KB a
    # line, 200 MB of text from 300 KB of JSON.
    data = b'{"level":' * 500 + b"[" + b",".join([b"1"] * 100_000) + b"]" + b"}" * 500
    text = extract_text(data, filename="wide.json").text
    lines = text.splitlines()
    assert len(lines) == 100_000
    assert lines[-1].endswith("[99999]: 1")
    assert lines[-1].startswith("…")
    assert max(len(line) for line in lines) < 250


def test_json_whose_text_passes_the_bound_is_refused() -> None:
    data = b"[" + b",".join([b'"a b c"'] * 10_000) + b"]"
    with pytest.raises(DocumentTooLarge, match="more than 50000 characters"):
        extract_text(data, filename="big.json", max_chars=50_000)


@pytest.mark.parametrize("depth", [10_000, 200_000])
@pytest.mark.parametrize("tag", [b"div", b"b", b"span", b"table"])
def test_html_nested_thousands_deep_is_refused_in_linear_time(tag: bytes, depth: int) -> None:
    data = b"<html><body>" + b"<%s>x " % tag * depth + b"</%s>" % tag * depth
    with pytest.raises(DocumentTooLarge, match=f"more than {MAX_HTML_DEPTH} levels"):
        extract_text(data, filename="deep.html")


def test_an_html_text_of_twenty_megabytes_in_one_element_is_read_whole() -> None:
    # libxml2 refuses a text node over 10 MB unless told to parse "huge" documents.
    data = b"<html><body><pre>" + b"line of a log\n" * 1_500_000 + b"</pre><p>end</p>"
    text = extract_text(data, filename="log.html").text
    assert text.count("line of a log") == 1_500_000
    assert text.endswith("end")


def test_html_nested_just_within_the_bound_keeps_all_its_text() -> None:
    depth = MAX_HTML_DEPTH - 10
    data = b"<div>x " * depth + b"bottom" + b"</div>" * depth
    text = extract_text(data, filename="deep.html").text
    assert text.count("x") == depth
    assert text.endswith("bottom")


@pytest.mark.parametrize(
    "data",
    [
        b"<a " * 300_000,  # CPython's html.parser rescans to the end from each "<": quadratic
        b"<" * MB,
        b"<!--" * 250_000,
        b"&#x" * 300_000,
        b"</" * 500_000,
        b'<a b="' + b"c" * MB,
        b"<a><b><i><u><s>" * 20_000,
        b"<li>" * 200_000,
    ],
    ids=["tag-starts", "lt", "comment-starts", "char-refs", "end-tags", "attribute", "af", "li"],
)
def test_pathological_html_is_read_or_refused_as_a_document(data: bytes) -> None:
    result = read_or_refuse(data, filename="page.html")
    assert isinstance(result, str | DocumentError)


def bomb_pdf(
    decompressed_bytes: int, *, pages: int = 1, line: bytes = b"BT /F1 11 Tf 72 700 Td (A) Tj ET\n"
) -> bytes:
    """A small PDF whose one content stream (shared by every page) inflates to `line` repeated."""
    stream = zlib.compress(line * (decompressed_bytes // len(line)), 9)
    kids = b" ".join([b"4 0 R"] * pages)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    size = len(objects) + 1
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def test_a_zip_bomb_pdf_is_refused_as_too_large() -> None:
    data = bomb_pdf(64 * MB)  # ~200 KB on disk
    assert len(data) < MB
    with pytest.raises(DocumentTooLarge, match="zip bomb"):
        extract_text(data, filename="bomb.pdf")


def test_a_pdf_whose_pages_share_one_inflating_stream_is_refused_as_too_large() -> None:
    # Comments inflate without costing the parser much: what stops this is the budget alone.
    data = bomb_pdf(MB, pages=1000, line=b"BT /F1 11 Tf (A) Tj ET %" + b"x" * 1000 + b"\n")
    assert len(data) < 20_000
    with pytest.raises(DocumentTooLarge):
        extract_text(data, filename="pages.pdf")


def test_a_pdf_with_more_text_than_the_bound_is_refused() -> None:
    with pytest.raises(DocumentTooLarge, match="more than 1000 characters"):
        extract_text(bomb_pdf(200_000), filename="wordy.pdf", max_chars=1000)


@pytest.mark.slow  # megabytes of text, about 1 to 3 s each
@pytest.mark.parametrize(
    "data",
    [b"a" * (4 * MB), b"word " * MB, b"." * (2 * MB), b"\xc3\xa9" * (2 * MB)],
    ids=["one-word", "no-sentence-end", "dots", "accents"],
)
def test_a_huge_single_line_text_is_processed_whole(data: bytes) -> None:
    document = process_document(data, filename="line.txt")
    assert document.chunks[-1].end == document.stats.characters
    assert document.stats.characters == len(data.decode().strip())


def test_a_text_longer_than_the_bound_is_refused() -> None:
    with pytest.raises(DocumentTooLarge, match="over the 1000 read at most"):
        extract_text(b"word " * 1000, filename="long.txt", max_chars=1000)
