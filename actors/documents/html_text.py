"""The visible text of an HTML page: scripts and styles dropped, blocks apart by blank lines."""

from __future__ import annotations

from html.parser import HTMLParser

__all__ = ["html_to_text"]


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


def html_to_text(html: str) -> tuple[str, str | None]:
    """Return the visible text of an HTML page and its <title> (else its first <h1>)."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    title = " ".join("".join(parser.title_parts).split()) or " ".join(
        "".join(parser.h1_parts).split()
    )
    return text, title or None
