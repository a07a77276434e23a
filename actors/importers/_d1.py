"""Read the D1 jobs queue's ``jobs`` table from a dump: ``wrangler d1 export``'s SQL, or the JSON
``wrangler d1 execute --json`` prints (an array of ``{results, success, meta}``), or a JSON array
of rows.

The D1 table (the seed's migration 002)::

    jobs (id TEXT PRIMARY KEY, run_id TEXT, tenant_id TEXT, r2_key TEXT,
          status TEXT -- pending|leased|done|failed, attempts INTEGER,
          visibility_deadline INTEGER -- unix seconds when the lease expires,
          created_at INTEGER, updated_at INTEGER)  -- unix seconds

Each row becomes a job of origin ``d1:<id>`` with its run, tenant, key, status, attempts and
times; a leased row comes over pending (its lease belongs to D1's workers) with its attempts.
Columns the seed never had but a fork may (``payload``, ``result``, ``priority``, ``last_error``
or ``error``) come over too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors.errors import DumpUnreadable, InvalidArgument
from actors.importers._items import Item, Source, placed, seconds, text
from actors.queue.dump import read_sql_dump
from actors.queue.model import ImportedJob

__all__ = ["read_d1"]

STATUSES = ("pending", "leased", "done", "failed")


def read_d1(data: bytes, *, cross_tenant_keys: bool = False) -> Source:
    """Read a D1 dump (SQL or JSON, told apart by its first character) into items."""
    try:
        body = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DumpUnreadable(f"the D1 dump is not UTF-8 text: {exc}") from None
    if "\x00" in body:  # SQL text never holds one (JSON writes it as \u0000)
        raise DumpUnreadable("the D1 dump holds a NUL character: it is neither SQL nor JSON text")
    source = Source(kind="d1")
    rows: list[tuple[str, object]] = []  # (where, row)
    if body.lstrip()[:1] in ("[", "{"):
        rows = _json_rows(body)
    else:
        dump = read_sql_dump(body, "jobs")
        if "jobs" not in dump.tables:
            found = ", ".join(dump.tables) or "none"
            raise DumpUnreadable(
                f"the D1 dump creates no `jobs` table (tables: {found}); export the database "
                "that holds the jobs queue: `wrangler d1 export DB --output FILE.sql`"
            )
        for error in dump.errors:
            source.items.append(Item(origin=f"line {error.line}", error=str(error)))
        rows = [(f"row {n}", row) for n, row in enumerate(dump.rows, start=1)]
    seen: set[str] = set()
    for where, row in rows:
        item = _item(where, row, cross_tenant_keys)
        if item.job is not None and item.origin in seen:
            item = Item(origin=item.origin, error="the dump holds this id twice; the first is kept")
        seen.add(item.origin)
        if isinstance(row, dict) and row.get("status") == "leased" and item.job is not None:
            source.dropped_leases += 1
        source.items.append(item)
    return source


def _json_rows(body: str) -> list[tuple[str, object]]:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise DumpUnreadable(f"the D1 dump is neither SQL nor JSON: {exc}") from None
    statements: list[Any]
    if isinstance(value, dict) and "results" in value:
        statements = [value]
    elif isinstance(value, list) and all(isinstance(v, dict) and "results" in v for v in value):
        statements = value  # `wrangler d1 execute --json`: one entry per statement
    elif isinstance(value, list):
        return [(f"row {n}", row) for n, row in enumerate(value, start=1)]
    else:
        raise DumpUnreadable(
            "the D1 JSON is neither an array of rows nor what `wrangler d1 execute --json` prints "
            "(an array of {results, success, meta})"
        )
    rows: list[tuple[str, object]] = []
    for n, statement in enumerate(statements, start=1):
        if statement.get("success") is False:
            raise DumpUnreadable(
                f"statement {n} of the D1 JSON did not succeed (success: false); run "
                "`wrangler d1 execute DB --json` on the jobs table again"
            )
        if not isinstance(statement["results"], list):
            raise DumpUnreadable(f"statement {n} of the D1 JSON has no list of results")
        base = len(rows)
        rows.extend((f"row {base + i}", row) for i, row in enumerate(statement["results"], 1))
    return rows


def _item(where: str, row: object, cross_tenant_keys: bool) -> Item:
    if not isinstance(row, dict):
        return Item(origin=where, error=f"not a row (an object of columns): {row!r:.80}")
    try:
        origin = f"d1:{text(row.get('id'), 'id')}"
    except InvalidArgument as exc:
        return Item(origin=where, error=str(exc))
    try:
        return Item(origin=origin, job=_job(origin, row, cross_tenant_keys))
    except InvalidArgument as exc:
        return Item(origin=origin, error=str(exc))


def _job(origin: str, row: dict[str, Any], cross_tenant_keys: bool) -> ImportedJob:
    run_id = text(row.get("run_id"), "run_id")
    tenant_id = text(row.get("tenant_id"), "tenant_id")
    r2_key = text(row.get("r2_key"), "r2_key")
    status = row.get("status")
    if status not in STATUSES:
        raise InvalidArgument(
            f"status {status!r} is not one of the D1 queue's ({', '.join(STATUSES)})"
        )
    attempts = row.get("attempts", 0)
    if isinstance(attempts, str) and attempts.isdigit():
        attempts = int(attempts)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise InvalidArgument(f"attempts {attempts!r} is not a count")
    created = seconds(row.get("created_at"), "created_at")
    updated = seconds(row.get("updated_at", row.get("created_at")), "updated_at")
    priority = row.get("priority", 0) or 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidArgument(f"priority {priority!r} is not an integer")
    error = row.get("last_error", row.get("error"))
    return ImportedJob(
        origin=origin,
        run_id=run_id,
        tenant_id=tenant_id,
        r2_key=r2_key,
        status="pending" if status == "leased" else status,
        attempts=attempts,
        priority=priority,
        payload=_json_column(row.get("payload"), "payload"),
        result=_json_column(row.get("result"), "result"),
        last_error=None if error is None else str(error).replace("\x00", "")[:1024],
        created_at=created,
        updated_at=max(created, updated),
        cross_tenant_key=placed(tenant_id, r2_key, cross_tenant_keys=cross_tenant_keys),
    )


def _json_column(value: object, name: str) -> object:
    """A column that holds JSON text (as SQLite keeps it), or a value already decoded."""
    if isinstance(value, str):
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            return value  # plain text: kept as a string
    if isinstance(value, bytes):
        raise InvalidArgument(f"{name} is a blob, not JSON text")
    return value
