"""The text, page count and title of a PDF, read with pypdf; encrypted or damaged files refused."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from actors.errors import CorruptDocument, DocumentTooLarge, EmptyDocument, EncryptedDocument

__all__ = ["MAX_PDF_PAGES", "pdf_to_text"]

#: Pages read at most; a longer PDF is refused (split it).
MAX_PDF_PAGES = 10_000
# Decompressed stream bytes a PDF may yield: 64 times its own size (text compresses 3-10 times;
# zlib at most ~1000 times, so a zip bomb is far past this), at least 2 MiB, at most 256 MiB.
_EXPANSION = 64
_MIN_STREAM_BUDGET = 2 * 1024 * 1024
_MAX_STREAM_BUDGET = 256 * 1024 * 1024
# Tokens in one content stream: a dense page of text has tens of thousands (pypdf's own default,
# two million, took about 25 s to reach on a 200 KB bomb).
_MAX_STREAM_TOKENS = 500_000


def pdf_to_text(data: bytes, name: str, *, max_chars: int) -> tuple[str, int, str | None]:
    """Return the text of a PDF (pages separated by a blank line), its page count and its title.

    Bounded: no stream may decompress to more than the budget (64 times the file's size, 2 to
    256 MiB), nor all pages' content streams together; at most `MAX_PDF_PAGES` pages and
    `max_chars` characters of text.

    Raises `EncryptedDocument`, `CorruptDocument`, `DocumentTooLarge` (past a bound: a zip
    bomb, too many pages, too much text) or `EmptyDocument` (no text: scanned pages).
    """
    # Imported here: pypdf takes ~60 ms to import and most jobs are not PDFs.
    from pypdf import Configuration, PdfReader, apply_configuration
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError

    budget = min(_MAX_STREAM_BUDGET, max(_MIN_STREAM_BUDGET, _EXPANSION * len(data)))
    limits: dict[str, Any] = {
        "zlib_maximum_output_length": budget,
        "lzw_maximum_output_length": budget,
        "run_length_maximum_output_length": budget,
        "brotli_maximum_output_length": budget,
        "array_based_stream_maximum_output_length": budget,
        "stream_parsing_work_maximum_count": _MAX_STREAM_TOKENS,
    }
    known = {field.name for field in dataclasses.fields(Configuration)}
    try:
        # A context variable: these limits hold for this call only, also on other threads.
        with apply_configuration(**{k: v for k, v in limits.items() if k in known}):
            reader = PdfReader(io.BytesIO(data), strict=False)
            # Many PDFs are encrypted with only an owner password and open with an empty one.
            if reader.is_encrypted and not reader.decrypt(""):
                raise EncryptedDocument(
                    f"{name} is an encrypted PDF that needs a password; remove the password"
                    " protection (print to PDF, or qpdf --decrypt) and submit it again"
                )
            count = len(reader.pages)
            if count > MAX_PDF_PAGES:
                raise DocumentTooLarge(
                    f"{name} has {count} pages, over the {MAX_PDF_PAGES} the offline processor"
                    " reads; split it into smaller PDFs"
                )
            pages: list[str] = []
            chars = 0
            for page in reader.pages:
                budget -= _content_bytes(page)
                if budget < 0:
                    raise DocumentTooLarge(
                        f"{name}'s page content decompresses to more than"
                        f" {_EXPANSION} times the file's size ({len(data)} bytes): a zip bomb,"
                        " or a PDF of drawings with little text; it was not read further"
                    )
                text = page.extract_text()
                chars += len(text)
                if chars > max_chars:
                    raise DocumentTooLarge(
                        f"{name}'s text is more than {max_chars} characters (by page"
                        f" {len(pages) + 1}); split the PDF"
                    )
                pages.append(text)
            title = _pdf_title(reader)
    except (EncryptedDocument, DocumentTooLarge):
        raise
    except LimitReachedError as error:
        raise DocumentTooLarge(
            f"{name} passes a bound while being read ({error}): a stream decompresses to far"
            f" more than the file's size ({len(data)} bytes), as in a zip bomb, or the file is"
            " damaged. Re-export it"
        ) from error
    except (DependencyError, FileNotDecryptedError) as error:
        raise EncryptedDocument(
            f"{name} is an encrypted PDF that cannot be opened without a password or a decryption"
            f" library ({error}); remove the protection and submit it again"
        ) from error
    except Exception as error:
        # pypdf raises many kinds of exception on malformed input (PdfReadError, but also
        # ValueError, KeyError, TypeError, RecursionError...); for us they all mean "damaged".
        raise CorruptDocument(
            f"{name} starts like a PDF but cannot be read ({type(error).__name__}: {error});"
            " it is probably truncated or damaged. Re-export or re-upload it"
        ) from error
    text = "\n\n".join(page.strip() for page in pages).strip()
    if not text:
        raise EmptyDocument(
            f"{name} is a PDF of {len(pages)} page(s) with no extractable text; it is probably"
            " scanned images. Run OCR on it first"
        )
    return text, len(pages), title


def _content_bytes(page: Any) -> int:
    """The decompressed size of a page's content streams (pypdf keeps them for extraction)."""
    contents = page.get("/Contents")
    if contents is None:
        return 0
    contents = contents.get_object()
    streams = contents if isinstance(contents, list) else [contents]
    return sum(len(stream.get_object().get_data()) for stream in streams)


def _pdf_title(reader: object) -> str | None:
    try:
        metadata = reader.metadata  # type: ignore[attr-defined]  # PdfReader, typed loosely here
        title = metadata.title if metadata is not None else None
    except Exception:  # A broken /Info dictionary costs the title, not the document.
        return None
    if isinstance(title, str) and title.strip():
        return " ".join(title.split())
    return None
