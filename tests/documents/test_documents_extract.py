"""extract_text: each kind gives its text; bad input gives a specific DocumentError."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader, PdfWriter

from actors.documents import detect_kind, extract_text
from actors.documents.samples import make_pdf
from actors.errors import (
    CorruptDocument,
    DocumentError,
    EmptyDocument,
    EncryptedDocument,
    UnsupportedDocument,
)

SAMPLE_EXPECTATIONS = {
    "harbour-report.pdf": (
        "pdf",
        2,
        "Lindqvist Harbour Authority: Third Quarter Report",
        "The dredging of the inner channel finished two weeks early",
    ),
    "beekeeping-survey.pdf": (
        "pdf",
        1,
        "Urban Beekeeping in Ostermoor: Survey Results",
        "Winter losses averaged 14 percent",
    ),
    "lichen-field-notes.txt": (
        "text",
        None,
        "Field Notes: Lichen Transects on Varden Island",
        "Sheep have found their way back onto the headland",
    ),
    "allotment-minutes.txt": (
        "text",
        None,
        "Minutes of the Ashgrove Allotment Society, Autumn Meeting",
        "run a workshop on beer traps, copper tape and encouraging frogs",
    ),
    "community-solar.md": (
        "markdown",
        None,
        "Millbrook Community Solar: Second Year Update",
        "produced 142 megawatt hours in their second year",
    ),
    "museum-newsletter.html": (
        "html",
        None,
        "Newsletter of the Tarrow Museum of Timekeeping",
        "Entry is free for members & children.",
    ),
    "observatory-log.json": (
        "json",
        None,
        "Kestrel Hill Observatory: Observing Log",
        "sessions[2].seeing_arcsec: 1.8",
    ),
}


def _normalized(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", sorted(SAMPLE_EXPECTATIONS))
def test_each_sample_extracts_its_kind_pages_title_and_text(
    samples: dict[str, bytes], name: str
) -> None:
    kind, pages, title, phrase = SAMPLE_EXPECTATIONS[name]
    extracted = extract_text(samples[name], filename=name)
    assert (extracted.kind, extracted.pages, extracted.title) == (kind, pages, title)
    assert phrase in _normalized(extracted.text)
    assert extracted.text == extracted.text.strip()
    assert "\r" not in extracted.text


def test_every_sample_is_covered_by_the_expectations(samples: dict[str, bytes]) -> None:
    assert sorted(samples) == sorted(SAMPLE_EXPECTATIONS)


def test_samples_are_recognised_without_a_file_name(samples: dict[str, bytes]) -> None:
    kinds = {name: extract_text(data).kind for name, data in samples.items()}
    assert kinds == {name: expected[0] for name, expected in SAMPLE_EXPECTATIONS.items()}


def test_pdf_text_comes_back_from_a_pdf_made_inline() -> None:
    pdf = make_pdf(
        [["The first page speaks of (parentheses) and back\\slashes."], ["Page two is short."]]
    )
    extracted = extract_text(pdf)
    assert extracted.kind == "pdf"
    assert extracted.pages == 2
    assert extracted.title is None
    assert extracted.text == (
        "The first page speaks of (parentheses) and back\\slashes.\n\nPage two is short."
    )


def test_plain_text_is_decoded_and_its_line_endings_normalized() -> None:
    extracted = extract_text(b"\xef\xbb\xbfCaf\xc3\xa9 notes\r\n\r\nThe kettle is on.\r\n")
    assert extracted.kind == "text"
    assert extracted.text == "Café notes\n\nThe kettle is on."
    assert extracted.title == "Café notes"


def test_text_in_a_declared_charset_is_read() -> None:
    extracted = extract_text(b"Caf\xe9 au lait.", content_type="text/plain; charset=latin-1")
    assert extracted.text == "Café au lait."


def test_markdown_markup_is_stripped_to_plain_text() -> None:
    markdown = b"""---
title: Front matter title
author: someone
---
Setext heading
==============

Some *emphasis*, **strong** and `code *kept*` with [a link](https://example.org)
that wraps onto a second line. ![a diagram](d.png) <span>tagged</span> snake_case_name.

> A quoted line.

1. first item
2. [ ] second item

* * *

[ref]: https://example.org

```python
x = [1, 2]  # **not** emphasis
```
"""
    extracted = extract_text(markdown, filename="notes.md")
    assert extracted.kind == "markdown"
    assert extracted.title == "Front matter title"
    assert extracted.text == (
        "Setext heading\n\n"
        "Some emphasis, strong and code *kept* with a link that wraps onto a second line."
        " a diagram tagged snake_case_name.\n\n"
        "A quoted line.\n\n"
        "first item\nsecond item\n\n"
        "x = [1, 2]  # **not** emphasis"
    )


def test_markdown_title_is_the_first_level_one_heading() -> None:
    extracted = extract_text(b"## Minor\n\n# Major title #\n\nBody.", content_type="text/markdown")
    assert extracted.title == "Major title"
    assert extracted.text == "Minor\n\nMajor title\n\nBody."


def test_html_drops_scripts_and_styles_and_keeps_block_breaks() -> None:
    html = b"""<html><head><title> The   page </title><style>p { color: red }</style></head>
<body><script>var hidden = "no";</script>
<div>First   block <b>bold</b>
text.</div><p>Second&nbsp;block &amp; more.<br>After a break.</p>
<ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>
<svg><title>icon</title><text>drawn</text></svg><pre>  indented
    code</pre></body></html>"""
    extracted = extract_text(html)
    assert extracted.kind == "html"
    assert extracted.title == "The page"
    assert extracted.text == (
        "First block bold text.\n\n"
        "Second block & more.\nAfter a break.\n\n"
        "one\ntwo\n\n"
        "a b\n\n"
        "  indented\n    code"
    )


def test_html_title_falls_back_to_the_first_h1() -> None:
    extracted = extract_text(b"<h1>Only a <em>heading</em></h1><p>Body text.</p>", filename="a.htm")
    assert extracted.title == "Only a heading"
    assert extracted.text == "Only a heading\n\nBody text."


def test_html_in_a_meta_charset_is_read() -> None:
    html = b'<html><head><meta charset="windows-1252"></head><body><p>Fa\xe7ade</p></body></html>'
    assert extract_text(html).text == "Façade"


def test_json_renders_string_and_number_leaves_as_path_lines() -> None:
    data = (
        b'{"name": "Survey", "count": 3, "ok": true, "none": null, "empty": "  ",'
        b' "items": [{"label": "alpha", "weight": 1.5}, ["nested", 7]], "deep": {"a": {"b": "c"}}}'
    )
    extracted = extract_text(data)
    assert extracted.kind == "json"
    assert extracted.title == "Survey"
    assert extracted.text.splitlines() == [
        "name: Survey",
        "count: 3",
        "items[0].label: alpha",
        "items[0].weight: 1.5",
        "items[1][0]: nested",
        "items[1][1]: 7",
        "deep.a.b: c",
    ]


def test_a_json_scalar_renders_as_its_value() -> None:
    assert extract_text(b'"just a string"', content_type="application/json").text == "just a string"


def test_kind_comes_from_magic_bytes_before_content_type_and_name() -> None:
    pdf = make_pdf([["Magic wins."]])
    assert detect_kind(pdf, filename="a.txt", content_type="text/html") == "pdf"


def test_kind_comes_from_content_type_before_the_extension() -> None:
    assert detect_kind(b"# x", filename="a.json", content_type="text/markdown") == "markdown"
    assert detect_kind(b"{}", filename="a.txt", content_type="application/ld+json") == "json"


def test_a_generic_text_plain_content_type_yields_to_a_specific_extension() -> None:
    assert detect_kind(b"# x", filename="a.md", content_type="text/plain") == "markdown"
    assert detect_kind(b"# x", filename="a.log", content_type="text/plain") == "text"


def test_kind_is_sniffed_from_the_text_when_there_are_no_hints() -> None:
    assert detect_kind(b"  <!DOCTYPE html><p>x</p>") == "html"
    assert detect_kind(b'\n[{"a": 1}]') == "json"
    assert detect_kind(b"[not json") == "text"
    assert detect_kind(b"Intro\n\n## Section\n\ntext") == "markdown"
    assert detect_kind(b"Just a plain sentence.") == "text"
    assert detect_kind(b"plain", filename="archive.unknown") == "text"


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n  "])
def test_empty_documents_raise_empty_document(data: bytes) -> None:
    with pytest.raises(EmptyDocument, match=r"upload\.txt is empty"):
        extract_text(data, filename="upload.txt")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"<html><script>only()</script></html>", "html"),
        (b'{"a": null, "b": [true, false], "c": ""}', "json"),
        (b"<!-- nothing -->\n\n---\n", "markdown"),
    ],
)
def test_documents_without_text_raise_empty_document(data: bytes, kind: str) -> None:
    with pytest.raises(EmptyDocument, match=kind):
        extract_text(data, content_type="text/markdown" if kind == "markdown" else None)


def test_a_pdf_without_text_raises_empty_document_that_suggests_ocr() -> None:
    with pytest.raises(EmptyDocument, match="OCR"):
        extract_text(make_pdf([[], []]))


def test_a_truncated_pdf_raises_corrupt_document(samples: dict[str, bytes]) -> None:
    pdf = samples["harbour-report.pdf"]
    with pytest.raises(CorruptDocument, match=r"report\.pdf .*damaged"):
        extract_text(pdf[: len(pdf) // 3], filename="report.pdf")


@pytest.mark.parametrize(
    "data", [b"%PDF-1.7\n", b"%PDF-1.4\n" + bytes(range(256)) * 4, b"%PDF-\x00\xff garbage"]
)
def test_a_pdf_header_over_garbage_raises_corrupt_document(data: bytes) -> None:
    with pytest.raises(CorruptDocument):
        extract_text(data)


def test_a_declared_pdf_without_a_pdf_header_is_not_read_as_a_pdf() -> None:
    with pytest.raises(CorruptDocument, match="PDF"):
        extract_text(b"hello", content_type="application/pdf")


def _encrypted(pdf: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    # RC4: pypdf encrypts it without the optional cryptography package.
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_password_protected_pdf_raises_encrypted_document(samples: dict[str, bytes]) -> None:
    with pytest.raises(EncryptedDocument, match="password"):
        extract_text(_encrypted(samples["beekeeping-survey.pdf"], "secret"), filename="b.pdf")


def test_a_pdf_with_only_an_owner_password_is_read(samples: dict[str, bytes]) -> None:
    extracted = extract_text(_encrypted(samples["beekeeping-survey.pdf"], ""))
    assert "Winter losses averaged 14 percent" in _normalized(extracted.text)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image"),
        (b"PK\x03\x04\x14\x00\x06\x00", "ZIP archive"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG image"),
        (b"{\\rtf1\\ansi hello}", "RTF document"),
    ],
)
def test_images_archives_and_office_files_raise_unsupported_document(
    data: bytes, what: str
) -> None:
    with pytest.raises(UnsupportedDocument, match=what):
        extract_text(data, filename="upload.txt")


def test_an_image_content_type_raises_unsupported_document() -> None:
    with pytest.raises(UnsupportedDocument, match="image/webp"):
        extract_text(b"RIFF\x00\x00\x00\x00WEBPVP8 ", content_type="image/webp")


def test_binary_garbage_raises_unsupported_document() -> None:
    garbage = bytes(random.Random(4).randrange(0x80, 0x100) for _ in range(4096))
    with pytest.raises(UnsupportedDocument, match="not UTF-8"):
        extract_text(garbage, filename="blob.bin")
    with pytest.raises(UnsupportedDocument, match="NUL"):
        extract_text(b"text\x00with\x00nuls", filename="notes.txt")
    with pytest.raises(UnsupportedDocument, match="control characters"):
        extract_text(bytes(range(1, 32)) * 10)


def test_declared_json_that_does_not_parse_raises_corrupt_document() -> None:
    with pytest.raises(CorruptDocument, match=r"data\.json is not valid JSON"):
        extract_text(b'{"a": 1,', filename="data.json")


@settings(deadline=None)  # the profile's count: 150 in CI
@given(data=st.binary(max_size=300), name=st.sampled_from([None, "x.pdf", "x.md", "x.html"]))
def test_any_bytes_give_text_or_a_document_error(data: bytes, name: str | None) -> None:
    try:
        extracted = extract_text(data, filename=name)
    except DocumentError:
        return
    assert extracted.text.strip()


def test_escaped_markdown_markers_are_kept() -> None:
    extracted = extract_text(rb"A \*literal\* star, 2 * 3, a_b and \[brackets\].", filename="x.md")
    assert extracted.text == "A *literal* star, 2 * 3, a_b and [brackets]."
