"""Read one table of a SQL dump (as ``wrangler d1 export`` writes it) through an in-memory SQLite.

The dump is SQLite's own dialect, so SQLite parses it: quoting, escapes, ``X'..'`` blobs,
NULLs and multi-line strings come out exactly as they went in. Statements run one by one, so a
malformed one is reported (with its line) and the rest still load.

Invariant: a dump changes nothing outside its in-memory database and cannot run for long. An
authorizer allows only creating tables and indexes, inserting, reading and a few harmless
pragmas (no ATTACH: a dump cannot write a file), and a progress handler stops a statement that
runs for more steps than the dump's size justifies (a recursive query that would not end).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DumpError", "SqlDump", "read_sql_dump"]

# Statements a dump may hold: creating its schema and inserting its rows.
_ALLOWED = {
    sqlite3.SQLITE_CREATE_TABLE,
    sqlite3.SQLITE_CREATE_INDEX,
    sqlite3.SQLITE_REINDEX,  # creating an index fills it
    sqlite3.SQLITE_CREATE_VIEW,
    sqlite3.SQLITE_INSERT,
    # `sqlite3 .dump` clears sqlite_sequence before refilling it.
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_TRANSACTION,
    sqlite3.SQLITE_FUNCTION,
    # Creating a table writes sqlite_master (and AUTOINCREMENT, sqlite_sequence).
    sqlite3.SQLITE_UPDATE,
}
# Pragmas that D1 and `sqlite3 .dump` write at the top of a dump; they change nothing here.
_PRAGMAS = {"defer_foreign_keys", "foreign_keys"}
# VM steps a statement may take per byte of the dump (plus a floor): far above what inserting
# literal rows needs, far below a runaway query.
_STEPS_PER_BYTE = 2_000
_MIN_STEPS = 50_000_000
_PROGRESS_EVERY = 10_000
# Statements that never end, each split again from its next line (then the rest is one error).
_MAX_RESTARTS = 100


@dataclass(frozen=True)
class DumpError:
    """A statement of the dump that did not run, and why."""

    line: int
    statement: str  # its first characters
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message} (in `{self.statement}`)"


@dataclass
class SqlDump:
    """The rows of the table asked for (as dicts, column name to value), the tables the dump
    created, and the statements that failed."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    errors: list[DumpError] = field(default_factory=list)


def _authorize(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
    if action in _ALLOWED:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _statements(text: str) -> list[tuple[int, str]]:
    """Split ``text`` into complete statements, each with the line it starts on.

    A statement that never ends (an unclosed quote) would swallow the rest of the dump: it is
    kept as its first line alone (to be reported) and the split goes on from the next line.
    """
    lines = text.splitlines(keepends=True)
    out: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = index = 0
    restarts = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not buffer:
            if not line.strip() or line.lstrip().startswith("--"):
                continue
            start = index - 1
        buffer.append(line)
        if sqlite3.complete_statement("".join(buffer)):
            out.append((start + 1, "".join(buffer)))
            buffer = []
        elif index == len(lines) and len(buffer) > 1 and restarts < _MAX_RESTARTS:
            restarts += 1
            out.append((start + 1, buffer[0]))
            buffer = []
            index = start + 1
    if buffer and "".join(buffer).strip():
        out.append((start + 1, "".join(buffer)))  # never completed: reported when it fails
    return out


def read_sql_dump(text: str, table: str) -> SqlDump:
    """Run the dump ``text`` in an in-memory database; return the rows of ``table`` (in the
    dump's order), every table it created, and each statement that failed."""
    dump = SqlDump()
    if "\x00" in text:  # SQLite cannot take it in a statement
        dump.errors.append(DumpError(1, "", "the dump holds a NUL character: not SQL text"))
        return dump
    budget = max(_MIN_STEPS, _STEPS_PER_BYTE * len(text)) // _PROGRESS_EVERY
    steps = 0

    def progress() -> int:
        nonlocal steps
        steps += 1
        return 1 if steps > budget else 0

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.set_authorizer(_authorize)
        conn.set_progress_handler(progress, _PROGRESS_EVERY)
        return conn

    # Fast path: a well-formed dump in one script (one budget for all of it). Any failure
    # starts again statement by statement, on a new database, to report each bad one.
    conn = connect()
    try:
        conn.executescript(text)
    except (sqlite3.Error, ValueError, OverflowError):
        conn.close()
        conn = connect()
        statements = _statements(text)
    else:
        statements = []
    try:
        for line, statement in statements:
            steps = 0
            try:
                conn.execute(statement)
            except (sqlite3.Error, ValueError, OverflowError) as exc:
                message = str(exc)
                if not sqlite3.complete_statement(statement):
                    message = "the statement never ends (a truncated dump?)"
                elif message == "interrupted":
                    message = "ran too long for a dump's statement; not loaded"
                elif "not authorized" in message:
                    message = "not a statement a dump holds (only CREATE, INSERT and pragmas)"
                dump.errors.append(DumpError(line, " ".join(statement.split())[:80], message))
        conn.set_authorizer(None)
        conn.set_progress_handler(None, 0)
        dump.tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid"
            )
        ]
        if table in dump.tables:
            quoted = table.replace('"', '""')
            try:
                cursor = conn.execute(f'SELECT * FROM "{quoted}" ORDER BY rowid')
            except sqlite3.OperationalError:  # a WITHOUT ROWID table: its key's order
                cursor = conn.execute(f'SELECT * FROM "{quoted}"')
            names = [d[0] for d in cursor.description]
            dump.rows = [dict(zip(names, row, strict=True)) for row in cursor]
    finally:
        conn.close()
    return dump
