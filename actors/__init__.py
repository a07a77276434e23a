"""Durable document-processing jobs through supervised actors over a SQLite-backed queue."""

from __future__ import annotations

__all__: list[str] = []
