"""Markdown stripped to plain text: headings, lists, tables, links and emphasis become text."""

from __future__ import annotations

import re

__all__ = ["markdown_to_text"]

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


def markdown_to_text(markdown: str) -> tuple[str, str | None]:
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
