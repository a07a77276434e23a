"""The text, page count and title of a PDF, read with pypdf; encrypted or damaged files refused."""

from __future__ import annotations

import io

from actors.errors import CorruptDocument, EmptyDocument, EncryptedDocument

__all__ = ["pdf_to_text"]


def pdf_to_text(data: bytes, name: str) -> tuple[str, int, str | None]:
    """Return the text of a PDF (pages separated by a blank line), its page count and its title.

    Raises `EncryptedDocument`, `CorruptDocument` or `EmptyDocument` (no text: scanned pages).
    """
    # Imported here: pypdf takes ~60 ms to import and most jobs are not PDFs.
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        # Many PDFs are encrypted with only an owner password and open with an empty one.
        if reader.is_encrypted and not reader.decrypt(""):
            raise EncryptedDocument(
                f"{name} is an encrypted PDF that needs a password; remove the password"
                " protection (print to PDF, or qpdf --decrypt) and submit it again"
            )
        pages = [page.extract_text() for page in reader.pages]
        title = _pdf_title(reader)
    except EncryptedDocument:
        raise
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


def _pdf_title(reader: object) -> str | None:
    try:
        metadata = reader.metadata  # type: ignore[attr-defined]  # PdfReader, typed loosely here
        title = metadata.title if metadata is not None else None
    except Exception:  # A broken /Info dictionary costs the title, not the document.
        return None
    if isinstance(title, str) and title.strip():
        return " ".join(title.split())
    return None
