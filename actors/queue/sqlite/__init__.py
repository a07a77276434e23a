"""The SQLite backend: one database file, one writer thread, group commit."""

from actors.queue.sqlite._queue import SQLiteQueue

__all__ = ["SQLiteQueue"]
