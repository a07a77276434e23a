"""JSON rendered as text: one "path: value" line per string or number leaf."""

from __future__ import annotations

import msgspec

from actors.errors import CorruptDocument, DocumentTooLarge

__all__ = ["json_to_text"]

# A path longer than this shows only its last characters: a leaf's line stays short however
# deep it is, so the text grows with the document, not with its leaves times its depth.
_MAX_PATH_CHARS = 200


def json_to_text(source: str, name: str, *, max_chars: int) -> tuple[str, str | None]:
    """Render every string and number leaf as a "path: value" line, in document order; the title
    is a top-level "title", "name", "headline" or "subject" string.

    Raises `CorruptDocument` for invalid JSON and `DocumentTooLarge` for JSON nested deeper than
    the decoder reads (about a thousand levels) or text over `max_chars` characters.
    """
    try:
        document = msgspec.json.decode(source)
    except msgspec.DecodeError as error:
        raise CorruptDocument(f"{name} is not valid JSON: {error}") from None
    except RecursionError:
        raise DocumentTooLarge(
            f"{name} nests JSON arrays or objects deeper than the decoder reads (about a"
            " thousand levels); no real document does. Check how it was made"
        ) from None
    lines = []
    chars = 0
    # Iterative, not recursive: the walk's depth is bounded by nothing but memory.
    stack: list[tuple[str, object]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                stack.append((_path(f"{path}.{key}" if path else str(key)), item))
        elif isinstance(value, list):
            for index in range(len(value) - 1, -1, -1):
                stack.append((_path(f"{path}[{index}]"), value[index]))
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, (str, int, float)):
            text = value.strip() if isinstance(value, str) else repr(value)
            if not text:
                continue
            line = f"{path}: {text}" if path else text
            chars += len(line) + 1
            if chars > max_chars:
                raise DocumentTooLarge(
                    f"{name} renders to more than {max_chars} characters of text; split it"
                )
            lines.append(line)
    title = None
    if isinstance(document, dict):
        for key in ("title", "name", "headline", "subject"):
            candidate = document.get(key)
            if isinstance(candidate, str) and candidate.strip():
                title = " ".join(candidate.split())
                break
    return "\n".join(lines), title


def _path(path: str) -> str:
    return path if len(path) <= _MAX_PATH_CHARS else "…" + path[1 - _MAX_PATH_CHARS :]
