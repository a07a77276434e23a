"""Markdown stripped to plain text with markdown-it-py: headings, lists, tables, links, emphasis."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

__all__ = ["markdown_to_text"]

# Invariant: extraction is linear in the document. markdown-it-py parses CommonMark in linear
# time (its inline rules bound nesting at `maxNesting`, 20, and cache what they skip); the code
# here walks its tokens once. The patterns below match bounded or non-overlapping spans only.
_TAG = re.compile(r"<[^<>]*>")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)  # an unclosed comment hides the rest
_TASK_BOX = re.compile(r"\[[ xX]\][ \t]+")


@functools.cache
def _parser() -> MarkdownIt:
    # Imported here: most jobs are not Markdown. One parser serves every call: parse() keeps
    # its state per call, so threads may share it.
    from markdown_it import MarkdownIt

    # CommonMark, plus GitHub's tables and ~~strikethrough~~, which most Markdown files use.
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def markdown_to_text(markdown: str) -> tuple[str, str | None]:
    """Strip Markdown to plain text: one paragraph per block, soft line breaks joined by a space
    (as CommonMark renders them), list items and table rows one per line (cells joined by ", "),
    code kept verbatim, HTML tags and comments dropped.

    The title is YAML front matter's ``title``, else the first level-one heading, else the
    first heading.
    """
    markdown = markdown.replace("\r\n", "\n").replace("\r", "\n")
    title, markdown = _front_matter(markdown)
    out: list[str] = []  # pieces of text; a block ends with "\n" (a line) or "\n\n"
    first_heading: str | None = None
    lists = 0  # depth of list nesting: blocks inside a list item end a line, not a paragraph
    row: list[str] = []  # the cells of the table row being read
    in_cell = False
    tokens = _parser().parse(markdown)
    for index, token in enumerate(tokens):
        kind = token.type
        if kind == "inline":
            text = _inline(token.children or [])
            if in_cell:
                row.append(text.strip())
                continue
            if index > 1 and tokens[index - 2].type == "list_item_open":
                box = _TASK_BOX.match(text)  # a task list's "[ ] " or "[x] "
                text = text[box.end() :] if box else text
            out.append(text.strip())
            if tokens[index - 1].type == "heading_open":
                level = int(tokens[index - 1].tag[1])
                heading = " ".join(text.split())
                if heading:
                    if level == 1 and title is None:
                        title = heading
                    first_heading = first_heading or heading
        elif kind in ("paragraph_close", "heading_close"):
            _end(out, "\n" if lists else "\n\n")
        elif kind in ("bullet_list_open", "ordered_list_open"):
            _end(out, "\n")
            lists += 1
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists -= 1
            _end(out, "\n" if lists else "\n\n")
        elif kind == "list_item_open":
            _end(out, "\n")
        elif kind in ("blockquote_open", "blockquote_close", "hr", "table_open", "table_close"):
            _end(out, "\n" if lists else "\n\n")
        elif kind in ("fence", "code_block"):
            _end(out, "\n" if lists else "\n\n")
            out.append(token.content.rstrip("\n"))
            _end(out, "\n" if lists else "\n\n")
        elif kind == "html_block":
            text = " ".join(_TAG.sub(" ", _HTML_COMMENT.sub("", token.content)).split())
            if text:
                _end(out, "\n" if lists else "\n\n")
                out.append(text)
                _end(out, "\n" if lists else "\n\n")
        elif kind in ("th_open", "td_open"):
            in_cell = True
        elif kind in ("th_close", "td_close"):
            in_cell = False
        elif kind == "tr_close":
            out.append(", ".join(cell for cell in row if cell))
            row.clear()
            _end(out, "\n")
    return "".join(out), title or first_heading


def _inline(children: list[Token]) -> str:
    """The text of a paragraph's inline tokens: link and image text kept, markup dropped."""
    pieces = []
    for child in children:
        match child.type:
            case "text" | "code_inline" | "text_special":
                pieces.append(child.content)
            case "image":
                pieces.append(child.content)  # the alt text, already stripped of markup
            case "softbreak":
                pieces.append(" ")
            case "hardbreak":
                pieces.append("\n")
    return "".join(pieces)


def _end(out: list[str], separator: str) -> None:
    """End the line ("\n") or the paragraph ("\n\n"), unless the text already did."""
    while out and not out[-1].strip(" \t") and "\n" not in out[-1]:
        out.pop()  # an empty block's text
    if not out:
        return
    if not out[-1].strip("\n"):  # already a break: make it at least this long
        if len(out[-1]) < len(separator):
            out[-1] = separator
        return
    missing = len(separator) - (len(out[-1]) - len(out[-1].rstrip("\n")))
    if missing > 0:
        out.append("\n" * missing)


def _front_matter(markdown: str) -> tuple[str | None, str]:
    """Split off YAML front matter (between two ``---`` lines at the very start): its title
    and the rest of the document."""
    if not markdown.startswith("---"):
        return None, markdown
    first, newline, rest = markdown.partition("\n")
    if first.strip() != "---" or not newline:
        return None, markdown
    lines = rest.split("\n")
    end = next((i for i, line in enumerate(lines) if line.strip() == "---"), None)
    if end is None:
        return None, markdown
    title = None
    for line in lines[:end]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "title" and value.strip():
            title = value.strip().strip("\"'")
            break
    return title, "\n".join(lines[end + 1 :])
