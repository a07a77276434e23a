"""ARCHITECTURE.md's code map matches the tree, file by file.

The matching rule. ARCHITECTURE.md is read as blocks: a paragraph, a list item (with its
indented continuation lines) or a heading; fenced code blocks are skipped. Each block has its
*folders*: the repository's root; the folder its section is about, when the section's heading
names one as its first backticked token ending in ``/`` (``### `actors/queue/```), until the
next heading; and, inside a list item that opens with a backticked folder (``- `sqlite/`: ...``),
that folder below the section's. A backticked token names the path ``folder + token`` for each
of its block's folders.

(a) Every module file under ``actors/`` and ``supervisors/`` (each ``*.py``, and each folder
    that holds ``.sql`` files, as ``name/``) is named by some token.
(b) Every backticked token that looks like a project path (a ``.py``, ``.sql``, ``.md`` or
    ``.toml`` file, or a folder ending in ``/``) names a path that exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "ARCHITECTURE.md"
PACKAGES = ("actors", "supervisors")

_TOKEN = re.compile(r"`([^`]+)`")
_PATH_LIKE = re.compile(r"[\w.-]+(/[\w.-]+)*(\.(py|sql|md|toml)|/)")


def _blocks(text: str) -> Iterator[tuple[list[str], str]]:
    """Yield (folders, block text) for each paragraph, list item and heading, outside fences."""
    section = ""
    folders: list[str] = [""]
    lines: list[str] = []
    fenced = False

    def flush() -> Iterator[tuple[list[str], str]]:
        if lines:
            block = "\n".join(lines)
            item = re.match(r"- `([^`]+/)`", block)
            yield ([*folders, section + item.group(1)] if item and section else folders), block
            lines.clear()

    for line in text.splitlines():
        if line.startswith("```"):
            yield from flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            yield from flush()
            named = [t for t in _TOKEN.findall(line) if t.endswith("/")]
            section = named[0] if named else ""
            folders = [""] + ([section] if section else [])
            yield folders, line
        elif not line.strip() or line.startswith("- "):
            yield from flush()
            if line.strip():
                lines.append(line)
        else:
            lines.append(line)
    yield from flush()


def _named_paths() -> dict[str, str]:
    """Every path a path-like token of the map names, to the token that names it."""
    named: dict[str, str] = {}
    for folders, block in _blocks(MAP.read_text()):
        for token in _TOKEN.findall(block):
            if _PATH_LIKE.fullmatch(token):
                for folder in folders:
                    named.setdefault(folder + token, token)
    return named


def _module_files() -> list[str]:
    """The module files (``*.py``) and ``.sql`` folders (``name/``) of the packages."""
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            relative = path.relative_to(ROOT)
            if any(part.startswith((".", "__pycache__")) for part in relative.parts):
                continue
            if path.suffix == ".py":
                found.add(relative.as_posix())
            elif path.suffix == ".sql":
                found.add(relative.parent.as_posix() + "/")
    return sorted(found)


def test_every_module_file_is_in_the_code_map() -> None:
    named = _named_paths()
    missing = [path for path in _module_files() if path not in named]
    assert not missing, (
        f"ARCHITECTURE.md's code map does not name {missing}: add each, with one line of what "
        "it is, in its package's section (the rule is in this test's docstring)"
    )


def test_every_path_in_the_map_exists() -> None:
    stale = sorted(
        {
            token
            for folders, block in _blocks(MAP.read_text())
            for token in _TOKEN.findall(block)
            if _PATH_LIKE.fullmatch(token)
            and not any((ROOT / folder / token).exists() for folder in folders)
        }
    )
    assert not stale, f"ARCHITECTURE.md names paths that do not exist: {stale}"


def test_the_rule_reads_sections_and_list_items() -> None:
    text = (
        "## Code map\n\n`a.py` at the root.\n\n### `actors/queue/`\n\n"
        "- `sqlite/`: `_queue.py` and\n  `schema.py`.\n- `base.py`.\n\n"
        "```\n`fenced.py`\n```\n\n### Other\n\n`model.py`\n"
    )
    blocks = list(_blocks(text))
    names = {
        folder + t for folders, block in blocks for t in _TOKEN.findall(block) for folder in folders
    }
    assert {
        "actors/queue/sqlite/_queue.py",
        "actors/queue/sqlite/schema.py",
        "actors/queue/base.py",
        "a.py",
        "model.py",
    } <= names
    assert "actors/queue/model.py" not in names
    assert not any("fenced" in name for name in names)
