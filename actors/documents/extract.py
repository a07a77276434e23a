"""Turn a document's bytes into plain text: PDF, plain text, Markdown, HTML and JSON; offline."""

from __future__ import annotations

import codecs
import re
from typing import Literal

import msgspec

from actors.documents.html_text import html_to_text
from actors.documents.json_text import json_to_text
from actors.documents.markdown_text import markdown_to_text
from actors.documents.pdf_text import pdf_to_text
from actors.errors import CorruptDocument, DocumentTooLarge, EmptyDocument, UnsupportedDocument

__all__ = ["MAX_TEXT_CHARS", "DocumentKind", "ExtractedText", "detect_kind", "extract_text"]

#: Characters of text a document may yield at most (32 Mi): more than any object within the
#: default [pipeline].max_object_bytes holds as plain text; a PDF or JSON that expands past it
#: is refused with `DocumentTooLarge` instead of filling memory.
MAX_TEXT_CHARS = 32 * 1024 * 1024

DocumentKind = Literal["pdf", "text", "markdown", "html", "json"]


class ExtractedText(msgspec.Struct, frozen=True, kw_only=True):
    """The plain text of a document; `pages` is set for PDFs, `title` when the document has one."""

    text: str
    kind: DocumentKind
    pages: int | None = None
    title: str | None = None


def extract_text(
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    max_chars: int = MAX_TEXT_CHARS,
) -> ExtractedText:
    """Extract the plain text of `data`, a PDF, plain text, Markdown, HTML or JSON document.

    The kind is taken from the bytes' magic number first, then `content_type`, then the extension
    of `filename`, then a look at the text itself (see `detect_kind`). Text is decoded as UTF-8
    (a byte order mark is honoured), else with the charset named in `content_type` or an HTML
    ``<meta charset>``. Line breaks become ``\\n`` and the text is stripped.

    Error handling: every error is a `DocumentError`, and none is worth a retry:
    `EmptyDocument` (no bytes, or no text in them), `UnsupportedDocument` (an image, an archive,
    binary data, text in an unknown encoding), `CorruptDocument` (a damaged PDF, invalid JSON that
    was declared JSON), `EncryptedDocument` (a PDF that needs a password), `DocumentTooLarge`
    (more than `max_chars` characters of text, a PDF that decompresses far past its size, JSON or
    HTML nested thousands of levels deep).

    Time and memory are linear in the document's size: no extractor recurses per level of
    nesting or backtracks over a line (tests/documents/test_documents_poison.py).
    """
    name = filename or "document"
    try:
        return _extract(data, name, filename, content_type, max_chars)
    except RecursionError:
        # No extractor recurses per level of nesting; this is a safety net, so that whatever a
        # library does with a document nested thousands deep, it stays the document's error.
        raise DocumentTooLarge(
            f"{name} nests too deeply to be read (RecursionError); no real document does"
        ) from None


def _extract(
    data: bytes, name: str, filename: str | None, content_type: str | None, max_chars: int
) -> ExtractedText:
    if not data or data.isspace():
        raise EmptyDocument(
            f"{name} is empty ({len(data)} bytes, no text); check that the upload was complete"
        )
    kind = detect_kind(data, filename=filename, content_type=content_type)
    if kind == "pdf":
        # 1024 bytes: readers accept a PDF header anywhere in the first kilobyte.
        if b"%PDF-" not in data[:1024]:
            raise CorruptDocument(
                f"{name} is declared a PDF (by its content type or name) but has no %PDF- header;"
                " it is another kind of file or a damaged one. Check the upload"
            )
        text, pages, title = pdf_to_text(data, name, max_chars=max_chars)
        return ExtractedText(text=_tidy(text), kind="pdf", pages=pages, title=title)
    text = _decode(data, name, kind, content_type)
    match kind:
        case "html":
            text, title = html_to_text(text, name)
        case "markdown":
            text, title = markdown_to_text(text)
        case "json":
            text, title = json_to_text(text, name, max_chars=max_chars)
        case _:
            title = _first_line_title(text)
    text = _tidy(text)
    if not text:
        raise EmptyDocument(f"{name} is {kind} without any text in it ({len(data)} bytes)")
    if len(text) > max_chars:
        raise DocumentTooLarge(
            f"{name} holds {len(text)} characters of text, over the {max_chars} read at most;"
            " split it"
        )
    return ExtractedText(text=text, kind=kind, title=title)


# Formats we recognise in order to refuse them with a useful message.
_FOREIGN_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a ZIP archive (which is also what .docx, .xlsx, .pptx and .epub files are)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE file (an old .doc, .xls or .ppt)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"{\\rtf", "an RTF document"),
)
_CONTENT_TYPES: dict[str, DocumentKind] = {
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/json": "json",
    "text/json": "json",
}
_EXTENSIONS: dict[str, DocumentKind] = {
    ".pdf": "pdf",
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".json": "json",
}
_HTML_START = re.compile(
    rb"\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)
_MARKDOWN_HINT = re.compile(r"^(?:#{1,6}\s|```|~~~|\s{0,3}[-*+]\s|\d+\.\s)|\]\([^()\s]+\)", re.M)
# A byte order mark says both "this is text" and which encoding it is in.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# 1 %: a few stray control characters happen in real text; more than that means binary data.
_MAX_CONTROL_RATIO = 0.01
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def detect_kind(
    data: bytes, *, filename: str | None = None, content_type: str | None = None
) -> DocumentKind:
    """Tell which kind of document `data` is: magic bytes, then content type, then extension, then
    a sniff of the text (an HTML start tag, a JSON object or array, Markdown syntax, else text).

    Raises `UnsupportedDocument` for images, archives, office files and executables.
    """
    head = data[:16]
    if data[:1024].lstrip()[:5] == b"%PDF-":
        return "pdf"
    for magic, description in _FOREIGN_MAGIC:
        if head.startswith(magic):
            raise UnsupportedDocument(
                f"{filename or 'document'} is {description}, not a document the offline processor"
                " reads (PDF, plain text, Markdown, HTML, JSON); convert it to one of those first"
            )
    if content_type:
        media_type = content_type.partition(";")[0].strip().lower()
        # text/plain is what many stores say of any text file, so a .md, .html or .json name wins.
        if media_type in _CONTENT_TYPES and not (
            media_type == "text/plain" and _extension_kind(filename) not in (None, "pdf")
        ):
            return _CONTENT_TYPES[media_type]
        if media_type.endswith("+json"):
            return "json"
        if media_type.startswith(("image/", "audio/", "video/", "font/")):
            raise UnsupportedDocument(
                f"{filename or 'document'} has content type {media_type}; the offline processor"
                " reads PDF, plain text, Markdown, HTML and JSON"
            )
    if kind := _extension_kind(filename):
        return kind
    if _HTML_START.match(data[:4096]):
        return "html"
    if data[:1024].lstrip()[:1] in (b"{", b"[") and _is_json(data):
        return "json"
    sample = data[:4096].decode("utf-8", errors="replace")
    if _MARKDOWN_HINT.search(sample):
        return "markdown"
    return "text"


def _extension_kind(filename: str | None) -> DocumentKind | None:
    if not filename:
        return None
    dot = filename.rfind(".")
    if dot <= filename.rfind("/"):
        return None
    return _EXTENSIONS.get(filename[dot:].lower())


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    except RecursionError:
        return True  # JSON-like and nested too deep to tell: json_to_text refuses it clearly
    return True


def _decode(data: bytes, name: str, kind: DocumentKind, content_type: str | None) -> str:
    """Decode text: a BOM wins, then UTF-8, then the declared or <meta> charset."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _check_text(data.decode(encoding), name)
            except UnicodeDecodeError as error:
                raise CorruptDocument(
                    f"{name} starts with a {encoding} byte order mark but is not valid {encoding}"
                    f" ({error.reason} at byte {error.start})"
                ) from None
    if b"\x00" in data[:8192]:
        raise UnsupportedDocument(
            f"{name} contains NUL bytes, so it is binary data, not {kind}; the offline processor"
            " reads PDF, plain text, Markdown, HTML and JSON"
        )
    try:
        return _check_text(data.decode("utf-8"), name)
    except UnicodeDecodeError as utf8_error:
        charset = _declared_charset(data, kind, content_type)
        if charset:
            try:
                return _check_text(data.decode(charset), name)
            except (UnicodeDecodeError, LookupError):
                pass
        raise UnsupportedDocument(
            f"{name} is not UTF-8 text ({utf8_error.reason} at byte {utf8_error.start})"
            + (f" nor {charset}" if charset else "")
            + "; it is binary data or text in another encoding. Re-save it as UTF-8, or name the"
            " encoding in the content type (text/plain; charset=windows-1252)"
        ) from None


def _check_text(text: str, name: str) -> str:
    controls = len(_CONTROL.findall(text, 0, 8192))
    if controls > _MAX_CONTROL_RATIO * min(len(text), 8192):
        raise UnsupportedDocument(
            f"{name} decodes as text but {controls} of its first {min(len(text), 8192)} characters"
            " are control characters; it is binary data, not a document"
        )
    return text


_META_CHARSET = re.compile(rb"<meta[^<>]+charset\s*=\s*[\"']?([\w.:-]+)", re.I)


def _declared_charset(data: bytes, kind: DocumentKind, content_type: str | None) -> str | None:
    if content_type:
        for parameter in content_type.split(";")[1:]:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                return value.strip().strip("\"'")
    if kind == "html":
        match = _META_CHARSET.search(data[:4096])
        if match:
            return match.group(1).decode("ascii")
    return None


_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"(?<![ \t])[ \t]+\n")  # the lookbehind keeps this linear


def _tidy(text: str) -> str:
    """Use \\n line breaks, drop trailing spaces, keep at most one blank line in a row, strip."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def _first_line_title(text: str) -> str | None:
    """Take the first line as a title if it looks like one: short, alone, not a sentence."""
    text = text.lstrip()
    line, newline, rest = text.partition("\n")
    line = line.strip()
    # 100 chars: longer than any sensible title, shorter than most paragraphs.
    if not line or len(line) > 100 or line[-1] in ".,;:!?" or not newline:
        return None
    return line if rest.lstrip(" \t\r").startswith("\n") else None
