"""The visible text of an HTML page: scripts and styles dropped, blocks apart by blank lines."""

from __future__ import annotations

from actors.errors import DocumentTooLarge

__all__ = ["MAX_HTML_DEPTH", "html_to_text"]

#: Elements nested deeper than this end the parse (libxml2's own limit, with its "huge" option
#: that lifts the 10 MB limit on one text node); such a page is refused rather than read in
#: part. No real page comes near it.
MAX_HTML_DEPTH = 2048


class _HTMLText:
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
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.h1_parts: list[str] = []
        self.hidden = 0
        self.in_title = False
        self.title_done = False
        self.in_h1 = False
        self.pre = 0
        self.seen_h1 = False

    def handle_starttag(self, tag: str) -> None:
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


def html_to_text(html: str, name: str = "document") -> tuple[str, str | None]:
    """Return the visible text of an HTML page and its <title> (else its first <h1>).

    Parsed by libxml2 (through lxml) in time linear in the page, into a tree walked without
    recursion. Raises `DocumentTooLarge` for elements nested over `MAX_HTML_DEPTH` deep.
    """
    # Imported here: lxml takes ~20 ms to import and most jobs are not HTML.
    from lxml import etree

    # The text is already decoded: handing libxml2 UTF-8 and saying so makes it ignore any
    # <meta charset> or XML declaration, which described the bytes, not this text.
    parser = etree.HTMLParser(
        encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True, huge_tree=True
    )
    root = etree.fromstring(html.encode("utf-8", "replace"), parser)
    for entry in parser.error_log:
        if entry.type_name == "ERR_RESOURCE_LIMIT" or "Excessive depth" in entry.message:
            raise DocumentTooLarge(
                f"{name} passes a limit of the HTML parser ({entry.message.strip()}): elements"
                f" nested more than {MAX_HTML_DEPTH} levels deep; no real page does. Check how"
                " it was made"
            )
    collector = _HTMLText()
    if root is not None:
        for event, element in etree.iterwalk(root, events=("start", "end")):
            tag = element.tag if isinstance(element.tag, str) else ""
            if event == "start":
                collector.handle_starttag(tag)
                if element.text:
                    collector.handle_data(element.text)
            else:
                collector.handle_endtag(tag)
                if element.tail:
                    collector.handle_data(element.tail)
    text = "".join(collector.parts)
    title = " ".join("".join(collector.title_parts).split()) or " ".join(
        "".join(collector.h1_parts).split()
    )
    return text, title or None
