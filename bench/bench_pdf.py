"""PDF text: pypdf (what the offline processor uses) against pypdfium2, on the samples and on
generated PDFs; and the time each takes to give up on a zip-bomb-like PDF.

Run: ``.venv/bin/python bench/bench_pdf.py`` after ``pip install pypdfium2`` (not a dependency:
see "Extractors" in docs/decisions.md). Prints one line per file.
"""

from __future__ import annotations

import io
import random
import time
import zlib
from pathlib import Path

import pypdfium2 as pdfium  # type: ignore[import-not-found]  # measured here only
from pypdf import PdfReader, PdfWriter

from actors.documents import extract_text
from actors.documents.samples import make_pdf
from actors.errors import DocumentError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def pypdf_pages(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data), strict=False).pages]


def pdfium_pages(data: bytes) -> list[str]:
    document = pdfium.PdfDocument(data)
    try:
        return [document[i].get_textpage().get_text_range() for i in range(len(document))]
    finally:
        document.close()


def generated() -> dict[str, bytes]:
    rng = random.Random(1)
    words = ["harbour", "channel", "survey", "lichen", "winter", "members", "panels", "meter"]

    def paragraph() -> str:
        return " ".join(rng.choice(words) for _ in range(60)) + "."

    fifty = make_pdf([[paragraph() for _ in range(6)] for _ in range(50)], title="Fifty pages")
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(fifty)))
    for page in writer.pages:
        page.compress_content_streams()
    compressed = io.BytesIO()
    writer.write(compressed)
    five_hundred = make_pdf([[paragraph() for _ in range(6)] for _ in range(500)])
    return {"gen-50p": fifty, "gen-50p-flate": compressed.getvalue(), "gen-500p": five_hundred}


def bomb(decompressed: int) -> bytes:
    """One page whose Flate content stream inflates to `decompressed` bytes of text operators."""
    stream = zlib.compress(b"BT /F1 11 Tf 72 700 Td (A) Tj ET\n" * (decompressed // 34), 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
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
    out += b"xref\n0 6\n0000000000 65535 f \n"
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def main() -> None:
    files = {path.name: path.read_bytes() for path in sorted(SAMPLES.glob("*.pdf"))}
    files.update(generated())
    for name, data in files.items():
        timings = {}
        for label, read in (("pypdf", pypdf_pages), ("pypdfium2", pdfium_pages)):
            read(data)
            runs = 3 if len(data) > 100_000 else 20
            start = time.perf_counter()
            for _ in range(runs):
                pages = read(data)
            timings[label] = (time.perf_counter() - start) / runs
        same = " ".join(" ".join(pypdf_pages(data)).split()) == " ".join(
            " ".join(pdfium_pages(data)).split()
        )
        print(
            f"{name}: {len(data)} bytes, {len(pages)} pages: pypdf {timings['pypdf'] * 1000:.1f}"
            f" ms, pypdfium2 {timings['pypdfium2'] * 1000:.1f} ms,"
            f" x{timings['pypdf'] / timings['pypdfium2']:.1f}; same words: {same}"
        )
    data = bomb(64 * 1024 * 1024)
    start = time.perf_counter()
    try:
        extract_text(data, filename="bomb.pdf")
        outcome = "read"
    except DocumentError as error:
        outcome = type(error).__name__
    print(
        f"bomb ({len(data)} bytes, 64 MiB inflated): extract_text {outcome} in"
        f" {time.perf_counter() - start:.2f} s"
    )
    start = time.perf_counter()
    chars = sum(len(text) for text in pdfium_pages(data))
    print(f"bomb: pypdfium2 read {chars} characters in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
