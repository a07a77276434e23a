"""JSON rendered as text: one "path: value" line per string or number leaf."""

from __future__ import annotations

import msgspec

from actors.errors import CorruptDocument

__all__ = ["json_to_text"]


def json_to_text(source: str, name: str) -> tuple[str, str | None]:
    """Render every string and number leaf as a "path: value" line, in document order; the title
    is a top-level "title", "name", "headline" or "subject" string."""
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
