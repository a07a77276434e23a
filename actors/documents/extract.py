"""Turn a document's bytes into plain text: PDF, plain text, Markdown, HTML and JSON; offline."""

from __future__ import annotations

import codecs
import io
import re
from html.parser import HTMLParser
from typing import Literal

import msgspec

from actors.errors import CorruptDocument, EmptyDocument, EncryptedDocument, UnsupportedDocument

__all__ = ["DocumentKind", "ExtractedText", "detect_kind", "extract_text"]

DocumentKind = Literal["pdf", "text", "markdown", "html", "json"]


class ExtractedText(msgspec.Struct, frozen=True, kw_only=True):
    """The plain text of a document; `pages` is set for PDFs, `title` when the document has one."""

    text: str
    kind: DocumentKind
    pages: int | None = None
    title: str | None = None


def extract_text(
    data: bytes, *, filename: str | None = None, content_type: str | None = None
) -> ExtractedText:
    """Extract the plain text of `data`, a PDF, plain text, Markdown, HTML or JSON document.

    The kind is taken from the bytes' magic number first, then `content_type`, then the extension
    of `filename`, then a look at the text itself (see `detect_kind`). Text is decoded as UTF-8
    (a byte order mark is honoured), else with the charset named in `content_type` or an HTML
    ``<meta charset>``. Line breaks become ``\\n`` and the text is stripped.

    Error handling: every error is a `DocumentError`, and none is worth a retry:
    `EmptyDocument` (no bytes, or no text in them), `UnsupportedDocument` (an image, an archive,
    binary data, text in an unknown encoding), `CorruptDocument` (a damaged PDF, invalid JSON that
    was declared JSON), `EncryptedDocument` (a PDF that needs a password).
    """
    name = filename or "document"
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
        return _extract_pdf(data, name)
    text = _decode(data, name, kind, content_type)
    match kind:
        case "html":
            text, title = _html_to_text(text)
        case "markdown":
            text, title = _markdown_to_text(text)
        case "json":
            text, title = _json_to_text(text, name)
        case _:
            title = _first_line_title(text)
    text = _tidy(text)
    if not text:
        raise EmptyDocument(f"{name} is {kind} without any text in it ({len(data)} bytes)")
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


# PDF ---------------------------------------------------------------------------------------------


def _extract_pdf(data: bytes, name: str) -> ExtractedText:
    # Imported here: pypdf takes ~100 ms to import and most jobs are not PDFs.
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
    text = _tidy("\n\n".join(page.strip() for page in pages))
    if not text:
        raise EmptyDocument(
            f"{name} is a PDF of {len(pages)} page(s) with no extractable text; it is probably"
            " scanned images. Run OCR on it first"
        )
    return ExtractedText(text=text, kind="pdf", pages=len(pages), title=title)


def _pdf_title(reader: object) -> str | None:
    try:
        metadata = reader.metadata  # type: ignore[attr-defined]  # PdfReader, typed loosely here
        title = metadata.title if metadata is not None else None
    except Exception:  # A broken /Info dictionary costs the title, not the document.
        return None
    if isinstance(title, str) and title.strip():
        return " ".join(title.split())
    return None


# HTML --------------------------------------------------------------------------------------------


class _HTMLText(HTMLParser):
    """Collect the visible text of an HTML page, with a paragraph break around each block."""

    BLOCKS = frozenset(
        """address article aside blockquote body caption dd details div dl dt fieldset figcaption
        figure footer form h1 h2 h3 h4 h5 h6 header hr html legend main nav ol p pre section
        summary table tbody thead tfoot ul""".split()  # noqa: SIM905  # reads better as text
    )
    LINES = frozenset({"br", "li", "tr", "option"})
    CELLS = frozenset({"td", "th"})
    HIDDEN = frozenset({"script", "style", "noscript", "template", "svg"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.h1_parts: list[str] = []
        self.hidden = 0
        self.in_title = False
        self.title_done = False
        self.in_h1 = False
        self.pre = 0
        self.seen_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif self.hidden:
            return
        elif tag == "title":
            self.in_title = True
        elif tag in self.BLOCKS:
            self._break("\n\n")
            if tag == "pre":
                self.pre += 1
            elif tag == "h1" and not self.seen_h1:
                self.in_h1 = True
        elif tag in self.LINES:
            self._break("\n")
        elif tag in self.CELLS:
            self._space()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.LINES or tag == "hr":
            self._break("\n" if tag != "hr" else "\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self.in_title:
            self.in_title = False
            self.title_done = bool(self.title_parts)
        elif tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self._break("\n\n")
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            elif tag == "h1" and self.in_h1:
                self.in_h1 = False
                self.seen_h1 = True
        elif tag in self.LINES:
            self._break("\n")

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.in_title:
            if not self.title_done:
                self.title_parts.append(data)
            return
        if self.in_h1:
            self.h1_parts.append(data)
        if self.pre:
            self.parts.append(data)
            return
        collapsed = " ".join(data.split())
        if not collapsed:
            if data and self.parts and not self.parts[-1].endswith((" ", "\n")):
                self.parts.append(" ")
            return
        if data[0].isspace() and self.parts and not self.parts[-1].endswith((" ", "\n")):
            collapsed = " " + collapsed
        if data[-1].isspace():
            collapsed += " "
        self.parts.append(collapsed)

    def _break(self, separator: str) -> None:
        """End the line ("\n") or the paragraph ("\n\n"), unless the text already did."""
        if self.hidden or self.in_title:
            return
        if self.parts and not self.pre:
            self.parts[-1] = self.parts[-1].rstrip(" ")
            if not self.parts[-1]:
                self.parts.pop()
        if not self.parts:
            return
        last = self.parts[-1]
        missing = len(separator) - (len(last) - len(last.rstrip("\n")))
        if missing > 0:
            self.parts.append("\n" * missing)

    def _space(self) -> None:
        if self.parts and not self.parts[-1].endswith((" ", "\n")):
            self.parts.append(" ")


def _html_to_text(html: str) -> tuple[str, str | None]:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    title = " ".join("".join(parser.title_parts).split()) or " ".join(
        "".join(parser.h1_parts).split()
    )
    return text, title or None


# Markdown ----------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"\s{0,3}(#{1,6})(?:\s|$)")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_RULE = re.compile(r"^\s{0,3}(?:(?:\*\s*){3,}|(?:-\s*){3,}|(?:_\s*){3,})$")
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S")
_QUOTE = re.compile(r"^\s{0,3}(?:>\s?)+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+(?:\[[ xX]\]\s+)?")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)+\|?\s*$")
# Invariant: every pattern below runs in time linear in the line; none can backtrack over the
# rest of the line from each of many starting points (a 200 KB line of "[a " took minutes when
# link text was `[^\]]+`). So bracketed parts stop at the next opening bracket, and emphasis
# markers are dropped where they open or close a word instead of being paired.
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)  # an unclosed comment hides the rest
# Code spans and backslash escapes are literal text; the rest of a line goes through _INLINE.
_LITERAL = re.compile(r"(`+)([^`]+)\1|\\([\\`*_{}\[\]()#+\-.!|>~<])")
_INLINE = (
    (re.compile(r"!\[([^\[\]]*)\]\([^()]*\)"), r"\1"),  # image -> alt text
    (re.compile(r"\[([^\[\]]+)\]\([^()]*\)"), r"\1"),  # link -> its text
    (re.compile(r"\[([^\[\]]+)\]\[[^\[\]]*\]"), r"\1"),  # reference link -> its text
    (re.compile(r"<((?:https?|mailto):[^<>\s]+)>"), r"\1"),  # autolink -> the address
    (re.compile(r"</?[A-Za-z][^<>]*>"), ""),  # inline HTML tags
    # Emphasis, strong and strikethrough markers: a run of * _ or ~~ that opens a word (not after
    # a word character) or closes one (not before one); snake_case and 2 * 3 keep theirs.
    (
        re.compile(r"(?<![\w*_~])(?:\*+|_+|~~)(?=[^\s*_~])|(?<=[^\s*_~])(?:\*+|_+|~~)(?![\w*_~])"),
        "",
    ),
)


def _markdown_to_text(markdown: str) -> tuple[str, str | None]:
    """Strip Markdown to plain text: one paragraph per block, soft line breaks joined by a space
    (as CommonMark renders them), list items and table rows one per line, code kept verbatim."""
    lines = _HTML_COMMENT.sub("", markdown.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
    title = None
    if lines and lines[0].strip() == "---" and "---" in (line.strip() for line in lines[1:]):
        # YAML front matter: keep its title, drop the rest.
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
        for line in lines[1:end]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "title" and value.strip():
                title = value.strip().strip("\"'")
        lines = lines[end + 1 :]

    out: list[str] = []  # finished lines; "" is a paragraph break
    paragraph: list[str] = []  # the soft-wrapped lines of the current paragraph
    fence = ""
    first_heading = None

    def flush(blank: bool = True) -> None:
        if paragraph:
            out.append(" ".join(paragraph))
            paragraph.clear()
        if blank and out and out[-1] != "":
            out.append("")

    def heading(text: str, level: int) -> None:
        nonlocal title, first_heading
        flush()
        text = _inline(text)
        if text:
            out.extend([text, ""])
            if level == 1 and title is None:
                title = text
            first_heading = first_heading or text

    for i, line in enumerate(lines):
        if fence:
            if line.strip().startswith(fence):
                fence = ""
                flush()
            else:
                out.append(line.rstrip())
            continue
        if match := _FENCE.match(line):
            flush()
            fence = match.group(1)
            continue
        if not line.strip():
            flush()
            continue
        if match := _ATX.match(line):
            text = line[match.end() :].strip()
            closing = text.rstrip("#")  # "## Title ##": the closing hashes are optional
            if not closing or closing[-1].isspace():
                text = closing.rstrip()
            heading(text, len(match.group(1)))
            continue
        next_line = lines[i + 1] if i + 1 < len(lines) else ""
        if paragraph and _SETEXT.match(line) and not _LIST_ITEM.match(line):
            # The paragraph so far was a setext heading ("Title\n=====").
            text = " ".join(paragraph)
            paragraph.clear()
            heading(text, 1 if line.strip()[0] == "=" else 2)
            continue
        if _RULE.match(line):
            flush()
            continue
        if _REFERENCE_DEFINITION.match(line) or _TABLE_RULE.match(line):
            continue
        line = _QUOTE.sub("", line)
        if match := _LIST_ITEM.match(line):
            flush(blank=False)
            paragraph.append(_inline(line[match.end() :]))
            continue
        if "|" in line and (_TABLE_RULE.match(next_line) or line.lstrip().startswith("|")):
            flush(blank=False)
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            out.append(", ".join(_inline(cell) for cell in cells if cell))
            continue
        paragraph.append(_inline(line.strip()))
    flush()
    return "\n".join(out), title or first_heading


def _inline(text: str) -> str:
    """Strip inline Markdown (links, emphasis, code spans, tags) from one line."""
    pieces = []
    position = 0
    for match in _LITERAL.finditer(text):
        pieces.append(_strip_inline(text[position : match.start()]))
        pieces.append(match.group(2).strip() if match.group(1) else match.group(3))
        position = match.end()
    pieces.append(_strip_inline(text[position:]))
    return "".join(pieces).strip()


def _strip_inline(text: str) -> str:
    if any(c in text for c in "[<*_~"):
        for pattern, replacement in _INLINE:
            text = pattern.sub(replacement, text)
    return text


# JSON --------------------------------------------------------------------------------------------


def _json_to_text(source: str, name: str) -> tuple[str, str | None]:
    """Render every string and number leaf as a "path: value" line, in document order."""
    try:
        document = msgspec.json.decode(source)
    except msgspec.DecodeError as error:
        raise CorruptDocument(f"{name} is not valid JSON: {error}") from None
    lines = []
    stack: list[tuple[str, object]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                stack.append((f"{path}.{key}" if path else str(key), item))
        elif isinstance(value, list):
            for index in range(len(value) - 1, -1, -1):
                stack.append((f"{path}[{index}]", value[index]))
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, str):
            if value.strip():
                lines.append(f"{path}: {value.strip()}" if path else value.strip())
        elif isinstance(value, (int, float)):
            lines.append(f"{path}: {value!r}" if path else repr(value))
    title = None
    if isinstance(document, dict):
        for key in ("title", "name", "headline", "subject"):
            candidate = document.get(key)
            if isinstance(candidate, str) and candidate.strip():
                title = " ".join(candidate.split())
                break
    return "\n".join(lines), title
