"""Writes the poison corpus next to this file: ``python tests/poison/make_corpus.py``.

The files are committed; this script says how each was made and can make them again.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def long_tab_line() -> bytes:
    """Markdown with one line of 60,000 tabs: quadratic in a regex-based extractor (minutes)."""
    return b"# Tabs\n\nA paragraph before the line.\n\n" + b"\t" * 60_000 + b"end\n"


def deep_json() -> bytes:
    """A JSON document nested 5,000 arrays deep (a recursive walk overflows the stack)."""
    return b'{"title": "deep", "body": ' + b"[" * 5_000 + b'"x"' + b"]" * 5_000 + b"}\n"


def deep_html() -> bytes:
    """An HTML document nested 5,000 elements deep."""
    return (
        b"<html><head><title>deep</title></head><body>"
        + b"<div>" * 5_000
        + b"Text at the bottom of the nesting."
        + b"</div>" * 5_000
        + b"</body></html>\n"
    )


def bomb_pdf() -> bytes:
    """A PDF of a few kilobytes whose pages' content streams inflate to gigabytes.

    Each page's stream is deflated twice (``/Filter [/FlateDecode /FlateDecode]``): 70 MB of
    text operators, under pypdf's 75 MB limit per stream, shrink to a few kilobytes. Forty
    pages share one such stream object: 2.8 GB of content to parse.
    """
    content = b"BT /F1 12 Tf 72 720 Td (a) Tj ET\n" * (70_000_000 // 34)
    once = zlib.compress(content, 9)
    twice = zlib.compress(once, 9)
    pages = 40
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
        + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter [/FlateDecode /FlateDecode] >>\nstream\n" % len(twice)
        + twice
        + b"\nendstream",
    ]
    for _ in range(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


CORPUS = {
    "long-tab-line.md": long_tab_line,
    "deep.json": deep_json,
    "deep.html": deep_html,
    "bomb.pdf": bomb_pdf,
}

if __name__ == "__main__":
    for name, make in CORPUS.items():
        (HERE / name).write_bytes(make())
        print(name, (HERE / name).stat().st_size, "bytes")
