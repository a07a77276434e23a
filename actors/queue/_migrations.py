"""`Migration`: one versioned schema step, the shape both SQL backends' migrations take."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Migration"]


@dataclass(frozen=True)
class Migration:
    """One schema step: statements to apply it, statements to undo it, and what undoing drops."""

    version: int
    name: str
    up: tuple[str, ...]
    down: tuple[str, ...]
    # Tables whose rows the down-migration deletes: a non-empty one refuses unless forced.
    drops: tuple[str, ...]
