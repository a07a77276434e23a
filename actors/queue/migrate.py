"""Copy a queue between stores (SQLite file, PostgreSQL schema, JSON lines), verified row by row.

``run`` copies every job in every status (attempts, errors, results, leases) and every run
(times, metrics; the counts are derived again by the target) in batches, one transaction each,
and records each copied row in the target's ``migrated_rows`` table. After each batch commits it
reads the rows back and compares them with the source. A row that fails is reported and the
copy goes on. Running it again skips rows already identical, so an interrupted run is resumed by
running it again. ``rollback`` deletes what the runs from that source recorded. A row the target
already holds that did not come from this source is never overwritten (reported instead).

Error handling: every per-row failure becomes a `RowError` in the `Report`; failures of a whole
store (cannot connect, live leases without ``convert_leases``) raise.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

import msgspec

from actors.errors import InvalidArgument, MigrationRefused, StorageError
from actors.queue import postgres_schema, schema, store

__all__ = [
    "JOB_FIELDS",
    "RUN_FIELDS",
    "Report",
    "RowError",
    "Status",
    "export_jsonl",
    "open_store",
    "rollback",
    "run",
    "status",
]

JOB_FIELDS = tuple(c.strip() for c in store.COLUMNS.split(","))
# A job row's fields that an older export may lack, and the value a new job would get.
JOB_DEFAULTS: dict[str, Any] = {"cross_tenant_key": False}
RUN_FIELDS = ("run_id", "tenant_id", "created_at", "updated_at", "finished_at", "metrics")
Row = dict[str, Any]

MANIFEST_SQLITE = """
CREATE TABLE IF NOT EXISTS migrated_rows (
    kind TEXT NOT NULL, key TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (kind, key)
)
"""
MANIFEST_PG = """
CREATE TABLE IF NOT EXISTS migrated_rows (
    kind text NOT NULL, key text NOT NULL, source text NOT NULL, PRIMARY KEY (kind, key)
)
"""


@dataclass(frozen=True)
class RowError:
    """One row that was not copied (or not rolled back), and why."""

    kind: str  # "job" or "run"
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.key}: {self.message}"


@dataclass
class Report:
    """What a run or a rollback did: rows written, skipped as identical, and per-row errors."""

    written: dict[str, int] = field(default_factory=lambda: {"job": 0, "run": 0})
    identical: dict[str, int] = field(default_factory=lambda: {"job": 0, "run": 0})
    converted_leases: int = 0
    errors: list[RowError] = field(default_factory=list)


class Store(Protocol):
    """One side of a migration: where rows are read from, and (for a target) written to."""

    name: str

    async def runs(self) -> list[Row]: ...
    async def jobs(self, after: int, limit: int) -> list[Row]: ...
    async def counts(self) -> dict[str, int]: ...
    async def live_leases(self, now: float) -> int: ...
    async def get(self, kind: str, keys: Sequence[Any]) -> dict[Any, Row]: ...
    async def manifest(self, source: str) -> dict[str, set[str]]: ...
    async def write(self, source: str, kind: str, rows: Sequence[Row]) -> list[RowError]: ...
    async def delete(self, source: str, kind: str, keys: Sequence[str]) -> list[RowError]: ...
    async def finish(self) -> None: ...


# --- SQLite --------------------------------------------------------------------------------


class SQLiteStore:
    """A queue file. Calls are synchronous underneath (a command-line tool, one at a time)."""

    def __init__(self, path: Path) -> None:
        self.name = str(path.resolve())
        self.conn = schema.connect(path)
        schema.migrate_up(self.conn, path)

    async def runs(self) -> list[Row]:
        cur = self.conn.execute(f"SELECT {', '.join(RUN_FIELDS)} FROM runs ORDER BY rowid")
        return [dict(zip(RUN_FIELDS, r, strict=True)) for r in cur]

    async def jobs(self, after: int, limit: int) -> list[Row]:
        cur = self.conn.execute(
            f"SELECT {store.COLUMNS} FROM jobs WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        )
        return [_job_row(dict(zip(JOB_FIELDS, r, strict=True))) for r in cur]

    async def counts(self) -> dict[str, int]:
        counts = dict(self.conn.execute("SELECT status, count(*) FROM jobs GROUP BY status"))
        counts["runs"] = self.conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        return counts

    async def live_leases(self, now: float) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM jobs WHERE status = 'leased' AND lease_expires_at > ?",
                (now,),
            ).fetchone()[0]
        )

    async def get(self, kind: str, keys: Sequence[Any]) -> dict[Any, Row]:
        fields, table, key = _shape(kind)
        out: dict[Any, Row] = {}
        for chunk in _chunks(list(keys), 500):
            marks = ", ".join("?" * len(chunk))
            cur = self.conn.execute(
                f"SELECT {', '.join(fields)} FROM {table} WHERE {key} IN ({marks})", chunk
            )
            rows = (dict(zip(fields, r, strict=True)) for r in cur)
            out.update({row[key]: _job_row(row) if kind == "job" else row for row in rows})
        return out

    async def manifest(self, source: str) -> dict[str, set[str]]:
        self.conn.execute(MANIFEST_SQLITE)
        out: dict[str, set[str]] = {"job": set(), "run": set()}
        for kind, key in self.conn.execute(
            "SELECT kind, key FROM migrated_rows WHERE source = ?", (source,)
        ):
            out[kind].add(key)
        return out

    async def write(self, source: str, kind: str, rows: Sequence[Row]) -> list[RowError]:
        fields, table, key = _shape(kind)
        columns = ", ".join(fields)
        updates = ", ".join(f"{f} = excluded.{f}" for f in fields if f != key)
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(fields))}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
        errors: list[RowError] = []
        conn = self.conn
        conn.execute(MANIFEST_SQLITE)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                conn.execute("SAVEPOINT row")
                try:
                    conn.execute(sql, [row[f] for f in fields])
                    conn.execute(
                        "INSERT OR REPLACE INTO migrated_rows VALUES (?, ?, ?)",
                        (kind, str(row[key]), source),
                    )
                    conn.execute("RELEASE row")
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO row")
                    conn.execute("RELEASE row")
                    errors.append(RowError(kind, str(row[key]), f"not written: {exc}"))
            if kind == "job":
                _recount_sqlite(conn, {row["run_id"] for row in rows})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return errors

    async def delete(self, source: str, kind: str, keys: Sequence[str]) -> list[RowError]:
        _, table, key = _shape(kind)
        errors: list[RowError] = []
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            runs: set[str] = set()
            for k in keys:
                if kind == "run":
                    left = conn.execute("SELECT count(*) FROM jobs WHERE run_id = ?", (k,))
                    if left.fetchone()[0]:
                        errors.append(RowError(kind, k, "kept: jobs not copied by this run use it"))
                        continue
                else:
                    runs.update(
                        r[0]
                        for r in conn.execute("SELECT run_id FROM jobs WHERE id = ?", (int(k),))
                    )
                conn.execute(
                    f"DELETE FROM {table} WHERE {key} = ?", (int(k) if kind == "job" else k,)
                )
                conn.execute(
                    "DELETE FROM migrated_rows WHERE kind = ? AND key = ? AND source = ?",
                    (kind, k, source),
                )
            _recount_sqlite(conn, runs)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return errors

    async def finish(self) -> None:
        self.conn.close()


def _recount_sqlite(conn: sqlite3.Connection, run_ids: Iterable[str]) -> None:
    # SQLite's counts are kept by enqueue (inserts) and triggers (updates, deletes): rows
    # written here bypass enqueue, so their runs are counted again from the jobs table.
    for run_id in run_ids:
        conn.execute(
            """
            UPDATE runs SET
                pending = (SELECT count(*) FROM jobs WHERE run_id = :r AND status = 'pending'),
                leased = (SELECT count(*) FROM jobs WHERE run_id = :r AND status = 'leased'),
                done = (SELECT count(*) FROM jobs WHERE run_id = :r AND status = 'done'),
                failed = (SELECT count(*) FROM jobs WHERE run_id = :r AND status = 'failed')
            WHERE run_id = :r
            """,
            {"r": run_id},
        )


# --- PostgreSQL ----------------------------------------------------------------------------


class PostgresStore:
    """A queue in a PostgreSQL schema (the DSN's ``search_path``, created if missing)."""

    def __init__(self, conn: Any, name: str) -> None:
        self.conn = conn
        self.name = name

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

        parts = urlsplit(dsn)
        search_path = parse_qs(parts.query).get("search_path", ["public"])[0]
        name = urlunsplit(
            (
                parts.scheme,
                f"{parts.hostname or 'localhost'}:{parts.port or 5432}",
                parts.path,
                f"search_path={search_path}",
                "",
            )
        )
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"cannot connect to {name}: {exc}") from exc
        try:
            schema_name = search_path.split(",")[0].strip()
            if not schema_name.replace("_", "").isalnum():
                raise InvalidArgument(f"search_path must name one schema, not {search_path!r}")
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
            await postgres_schema.migrate_up(conn, name)
            await conn.execute(MANIFEST_PG)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, name)

    async def runs(self) -> list[Row]:
        rows = await self.conn.fetch(
            f"SELECT {', '.join(RUN_FIELDS)} FROM ({postgres_schema.RUN_STATE}) s ORDER BY seq"
        )
        return [dict(r) for r in rows]

    async def jobs(self, after: int, limit: int) -> list[Row]:
        rows = await self.conn.fetch(
            f"SELECT {store.COLUMNS} FROM jobs WHERE id > $1 ORDER BY id LIMIT $2", after, limit
        )
        return [dict(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self.conn.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
        counts = {r[0]: int(r[1]) for r in rows}
        counts["runs"] = int(await self.conn.fetchval("SELECT count(*) FROM runs"))
        return counts

    async def live_leases(self, now: float) -> int:
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM jobs WHERE status = 'leased' AND lease_expires_at > $1",
                now,
            )
        )

    async def get(self, kind: str, keys: Sequence[Any]) -> dict[Any, Row]:
        fields, table, key = _shape(kind)
        cast = "bigint[]" if kind == "job" else "text[]"
        source = table if kind == "job" else f"({postgres_schema.RUN_STATE}) s"  # counts too
        rows = await self.conn.fetch(
            f"SELECT {', '.join(fields)} FROM {source} WHERE {key} = ANY($1::{cast})", list(keys)
        )
        return {r[key]: dict(r) for r in rows}

    async def manifest(self, source: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {"job": set(), "run": set()}
        for r in await self.conn.fetch(
            "SELECT kind, key FROM migrated_rows WHERE source = $1", source
        ):
            out[r[0]].add(r[1])
        return out

    async def write(self, source: str, kind: str, rows: Sequence[Row]) -> list[RowError]:
        import asyncpg

        fields, table, key = _shape(kind)
        marks = ", ".join(f"${n}" for n in range(1, len(fields) + 1))
        updates = ", ".join(f"{f} = excluded.{f}" for f in fields if f != key)
        # A new run's first_id (a lower bound of its job ids) starts above every id; the jobs
        # written here, and any enqueue into the run, lower it.
        extra = ("", "") if kind == "job" else (", first_id", f", {postgres_schema.NO_ID}")
        sql = (
            f"INSERT INTO {table} ({', '.join(fields)}{extra[0]}) VALUES ({marks}{extra[1]}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
        errors: list[RowError] = []
        async with self.conn.transaction():
            before: dict[int, tuple[str, str]] = {}
            if kind == "job":  # what the rows replace, for the runs' counts
                before = {
                    r[0]: (r[1], r[2])
                    for r in await self.conn.fetch(
                        "SELECT id, run_id, status FROM jobs WHERE id = ANY($1::bigint[])",
                        [row["id"] for row in rows],
                    )
                }
            counts = _Counts()
            for row in rows:
                try:
                    async with self.conn.transaction():  # a savepoint: one bad row alone
                        if kind == "run":
                            # The row is written as read from the source: the target's count
                            # shards for it go into its base first (their metrics and times
                            # are the source's now), so it reads back as written.
                            await self.conn.execute(_FOLD_SHARDS, row["run_id"])
                        await self.conn.execute(sql, *[row[f] for f in fields])
                        await self.conn.execute(
                            """
                            INSERT INTO migrated_rows VALUES ($1, $2, $3)
                            ON CONFLICT (kind, key) DO UPDATE SET source = excluded.source
                            """,
                            kind,
                            str(row[key]),
                            source,
                        )
                except (asyncpg.PostgresError, asyncpg.DataError) as exc:
                    errors.append(RowError(kind, str(row[key]), f"not written: {exc}"))
                    continue
                if kind == "job":
                    if row["id"] in before:
                        counts.add(*before[row["id"]], -1)
                    counts.add(row["run_id"], row["status"], 1, first_id=row["id"])
            if kind == "job":
                await counts.apply(self.conn)
                # Enqueues after the copy must not reuse a copied id.
                await self.conn.execute(
                    "SELECT setval(pg_get_serial_sequence('jobs', 'id'), "
                    "greatest((SELECT max(id) FROM jobs), 1))"
                )
        return errors

    async def delete(self, source: str, kind: str, keys: Sequence[str]) -> list[RowError]:
        _, table, key = _shape(kind)
        errors: list[RowError] = []
        async with self.conn.transaction():
            counts = _Counts()
            for k in keys:
                if kind == "run" and await self.conn.fetchval(
                    f"SELECT total FROM ({postgres_schema.RUN_STATE} WHERE r.run_id = $1) s", k
                ):
                    errors.append(RowError(kind, k, "kept: jobs not copied by this run use it"))
                    continue
                value: Any = int(k) if kind == "job" else k
                gone = await self.conn.fetch(
                    f"DELETE FROM {table} WHERE {key} = $1 RETURNING run_id"
                    + (", status" if kind == "job" else ""),
                    value,
                )
                if kind == "run":
                    await self.conn.execute("DELETE FROM run_counts WHERE run_id = $1", k)
                for r in gone if kind == "job" else ():
                    counts.add(r[0], r[1], -1)
                await self.conn.execute(
                    "DELETE FROM migrated_rows WHERE kind = $1 AND key = $2 AND source = $3",
                    kind,
                    k,
                    source,
                )
            await counts.apply(self.conn)
        return errors

    async def finish(self) -> None:
        await self.conn.close()


# Moves a run's count shards into its base row (the counts; the rest is about to be rewritten).
_FOLD_SHARDS = """
    WITH gone AS (DELETE FROM run_counts WHERE run_id = $1 RETURNING done, failed, total)
    UPDATE runs SET done = runs.done + s.done, failed = runs.failed + s.failed,
                    total = runs.total + s.total
    FROM (SELECT coalesce(sum(done), 0) AS done, coalesce(sum(failed), 0) AS failed,
                 coalesce(sum(total), 0) AS total FROM gone) s
    WHERE runs.run_id = $1
"""


class _Counts:
    """Changes to runs' stored counts from rows written or deleted here, which bypass the
    queue's verbs; applied to each run's base row in the same transaction."""

    def __init__(self) -> None:
        self.by_run: dict[str, list[int]] = {}  # run -> [done, failed, total, first id or 0]

    def add(self, run_id: str, status: str, n: int, *, first_id: int = 0) -> None:
        counts = self.by_run.setdefault(run_id, [0, 0, 0, 0])
        counts[0] += n if status == "done" else 0
        counts[1] += n if status == "failed" else 0
        counts[2] += n
        if first_id and (not counts[3] or first_id < counts[3]):
            counts[3] = first_id

    async def apply(self, conn: Any) -> None:
        runs = sorted(self.by_run)
        if not runs:
            return
        # d.first_id 0: no job written (a lower bound must only go down).
        await conn.execute(
            """
            UPDATE runs SET done = runs.done + d.done, failed = runs.failed + d.failed,
                            total = runs.total + d.total,
                            first_id = CASE WHEN d.first_id = 0 THEN runs.first_id
                                            ELSE least(runs.first_id, d.first_id) END
            FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
                 AS d(run_id, done, failed, total, first_id)
            WHERE runs.run_id = d.run_id
            """,
            runs,
            *([self.by_run[r][i] for r in runs] for i in range(4)),
        )


# --- JSON lines (a read-only source; export writes them) ------------------------------------


class JsonlStore:
    """A backup written by `export_jsonl`: one JSON object per line, ``kind`` first."""

    def __init__(self, path: Path) -> None:
        self.name = f"file:{path.resolve()}"
        self._runs: list[Row] = []
        self._jobs: list[Row] = []
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = msgspec.json.decode(line)
                kind = row.pop("kind")
            except (msgspec.DecodeError, KeyError, AttributeError) as exc:
                raise InvalidArgument(f"{path}:{number}: not an exported row ({exc})") from exc
            if kind == "job":
                self._jobs.append(
                    _job_row({f: row.get(f, JOB_DEFAULTS.get(f)) for f in JOB_FIELDS})
                )
            elif kind == "run":
                self._runs.append({f: row.get(f) for f in RUN_FIELDS})
        self._jobs.sort(key=lambda r: r["id"])

    async def runs(self) -> list[Row]:
        return list(self._runs)

    async def jobs(self, after: int, limit: int) -> list[Row]:
        return [r for r in self._jobs if r["id"] > after][:limit]

    async def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self._jobs:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        counts["runs"] = len(self._runs)
        return counts

    async def live_leases(self, now: float) -> int:
        return sum(
            r["status"] == "leased" and (r["lease_expires_at"] or 0) > now for r in self._jobs
        )

    async def finish(self) -> None:
        pass


# --- the operations --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_store(spec: str) -> AsyncIterator[Any]:
    """Open ``spec``: a ``postgresql://`` DSN (schema from ``?search_path=``), a ``.jsonl``
    export (read-only), or a SQLite file path."""
    opened: Any
    if spec.startswith(("postgresql://", "postgres://")):
        opened = await PostgresStore.open(spec)
    elif spec.endswith(".jsonl"):
        opened = JsonlStore(Path(spec))
    else:
        opened = SQLiteStore(Path(spec))
    try:
        yield opened
    finally:
        await opened.finish()


def _job_row(row: Row) -> Row:
    """A job row in the stores' common types: SQLite keeps ``cross_tenant_key`` as 0 or 1."""
    row["cross_tenant_key"] = bool(row["cross_tenant_key"])
    return row


def _shape(kind: str) -> tuple[tuple[str, ...], str, str]:
    return (JOB_FIELDS, "jobs", "id") if kind == "job" else (RUN_FIELDS, "runs", "run_id")


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _same(a: Row, b: Row, fields: Sequence[str]) -> list[str]:
    """The fields in which two rows differ."""
    return [f for f in fields if a.get(f) != b.get(f)]


def _converted(row: Row, now: float) -> Row:
    """A live lease copied as given back: pending, its attempt unspent, no token."""
    if row["status"] != "leased" or (row["lease_expires_at"] or 0) <= now:
        return row
    return {
        **row,
        "status": "pending",
        "attempts": max(0, row["attempts"] - 1),
        "lease_token": None,
        "lease_expires_at": None,
        "worker_id": None,
        "lease_owner": None,
        "started_at": None,
    }


async def _all_jobs(source: Any, batch: int) -> AsyncIterator[list[Row]]:
    after = 0
    while rows := await source.jobs(after, batch):
        yield rows
        after = rows[-1]["id"]


async def run(
    source: Any, target: Any, *, now: float, convert_leases: bool = False, batch: int = 500
) -> Report:
    """Copy every run and job from ``source`` to ``target``; verify each row once committed."""
    live = await source.live_leases(now)
    if live and not convert_leases:
        raise MigrationRefused(
            f"{source.name} has {live} job(s) under a live lease: workers are still running on "
            "it. Stop them (or wait for the leases to run out), or pass --convert-leases to copy "
            "those jobs as pending (their work is then done again by the target's workers)"
        )
    report = Report()
    mine = await target.manifest(source.name)
    runs = await source.runs()
    for chunk in _chunks(runs, batch):
        await _copy(source.name, target, "run", chunk, mine["run"], report)
    async for rows in _all_jobs(source, batch):
        if convert_leases:
            wanted = [_converted(r, now) for r in rows]
            report.converted_leases += sum(a is not b for a, b in zip(rows, wanted, strict=True))
            rows = wanted
        await _copy(source.name, target, "job", rows, mine["job"], report)
    return report


async def _copy(
    source: str, target: Any, kind: str, rows: list[Row], mine: set[str], report: Report
) -> None:
    fields, _, key = _shape(kind)
    present = await target.get(kind, [r[key] for r in rows])
    todo: list[Row] = []
    for row in rows:
        there = present.get(row[key])
        if there is None:
            todo.append(row)
        elif not _same(row, there, fields):
            report.identical[kind] += 1
            mine.add(str(row[key]))
        elif str(row[key]) in mine:
            todo.append(row)  # copied before, changed in the source since: copy again
        else:
            report.errors.append(
                RowError(
                    kind,
                    str(row[key]),
                    "the target already holds a different row that "
                    "this source did not write; left alone. Migrate into an empty store",
                )
            )
    if not todo:
        return
    write_errors = await target.write(source, kind, todo)
    report.errors.extend(write_errors)
    failed = {e.key for e in write_errors}
    # Verify: read every written row back after the commit and compare it field by field.
    written = await target.get(kind, [r[key] for r in todo])
    for row in todo:
        k = str(row[key])
        if k in failed:
            continue
        there = written.get(row[key])
        if there is None:
            report.errors.append(RowError(kind, k, "written, but not found when read back"))
        elif diff := _same(row, there, fields):
            report.errors.append(
                RowError(kind, k, f"read back different in {', '.join(diff)}; run it again")
            )
        else:
            report.written[kind] += 1
            mine.add(k)


@dataclass
class Status:
    """What is where and what differs, before (or after) a run."""

    source: dict[str, int]
    target: dict[str, int]
    live_leases: int
    missing: dict[str, int] = field(default_factory=lambda: {"job": 0, "run": 0})
    different: dict[str, int] = field(default_factory=lambda: {"job": 0, "run": 0})
    identical: dict[str, int] = field(default_factory=lambda: {"job": 0, "run": 0})
    copied: dict[str, int] = field(default_factory=lambda: {"job": 0, "run": 0})

    @property
    def complete(self) -> bool:
        return not any(self.missing.values()) and not any(self.different.values())


async def status(source: Any, target: Any, *, now: float, batch: int = 500) -> Status:
    """Compare ``source`` with ``target`` row by row (counts, missing and differing rows)."""
    result = Status(
        source=await source.counts(),
        target=await target.counts(),
        live_leases=await source.live_leases(now),
    )
    mine = await target.manifest(source.name)
    result.copied = {kind: len(keys) for kind, keys in mine.items()}

    async def compare(kind: str, rows: list[Row]) -> None:
        fields, _, key = _shape(kind)
        present = await target.get(kind, [r[key] for r in rows])
        for row in rows:
            there = present.get(row[key])
            bucket = (
                result.missing
                if there is None
                else result.different
                if _same(row, there, fields)
                else result.identical
            )
            bucket[kind] += 1

    for chunk in _chunks(await source.runs(), batch):
        await compare("run", chunk)
    async for rows in _all_jobs(source, batch):
        await compare("job", rows)
    return result


async def rollback(source_name: str, target: Any) -> Report:
    """Delete from ``target`` every row that runs from ``source_name`` copied into it."""
    report = Report()
    mine = await target.manifest(source_name)
    for kind in ("job", "run"):  # jobs first: a run goes only once no job uses it
        keys = sorted(mine[kind])
        for chunk in _chunks(keys, 500):
            errors = await target.delete(source_name, kind, chunk)
            report.errors.extend(errors)
            report.written[kind] += len(chunk) - len(errors)
    return report


async def export_jsonl(source: Any, out: Path, *, batch: int = 1000) -> dict[str, int]:
    """Write every run and job of ``source`` to ``out`` as JSON lines; return how many."""
    written = {"run": 0, "job": 0}
    encoder = msgspec.json.Encoder()
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("wb") as f:
        for row in await source.runs():
            f.write(encoder.encode({"kind": "run", **row}) + b"\n")
            written["run"] += 1
        async for rows in _all_jobs(source, batch):
            for row in rows:
                f.write(encoder.encode({"kind": "job", **row}) + b"\n")
                written["job"] += 1
    tmp.replace(out)  # a reader never sees half an export
    return written
