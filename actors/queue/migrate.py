"""Copy a queue between stores (SQLite file, PostgreSQL schema, JSON lines), verified row by row.

``run`` copies every job in every status (attempts, errors, results, leases), every run
(times, metrics; the counts are derived again by the target) and every schedule (its next tick
as the source left it) in batches, one transaction each,
and records each copied row in the target's ``migrated_rows`` table. After each batch commits it
reads the rows back and compares them with the source. A row that fails is reported and the
copy goes on. Running it again skips rows already identical, so an interrupted run is resumed by
running it again. ``rollback`` deletes what the runs from that source recorded. A row the target
already holds that did not come from this source is never overwritten (reported instead).

Invariant: a row that changed in the target after it was copied (its workers ran the job, a
run's counts moved on, it was purged) is never overwritten by ``run`` nor deleted by
``rollback``: the manifest keeps a digest of each row as the copy left it, the row is checked
against it in the transaction that would write or delete it, and a mismatch is a conflict
(`Report.conflicts`) unless ``force``. So running ``run`` again after the cut-over copies only
what changed in the source alone, and can never reset the target's progress.

Error handling: every per-row failure becomes a `RowError` in the `Report`; failures of a whole
store (cannot connect, live leases without ``convert_leases``) raise.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

import msgspec

from actors.errors import InvalidArgument, MigrationRefused, StorageError
from actors.queue._rows import COLUMNS, SCHEDULE_COLUMNS
from actors.queue.postgres import schema as postgres_schema
from actors.queue.sqlite import schema

__all__ = [
    "JOB_FIELDS",
    "KINDS",
    "RUN_FIELDS",
    "SCHEDULE_FIELDS",
    "Manifest",
    "Report",
    "RowError",
    "Status",
    "export_jsonl",
    "open_store",
    "rollback",
    "run",
    "status",
    "store_name",
]

JOB_FIELDS = tuple(c.strip() for c in COLUMNS.split(","))
# A job row's fields that an older export may lack, and the value a new job would get.
JOB_DEFAULTS: dict[str, Any] = {"cross_tenant_key": False}
RUN_FIELDS = ("run_id", "tenant_id", "created_at", "updated_at", "finished_at", "metrics")
SCHEDULE_FIELDS = tuple(c.strip() for c in SCHEDULE_COLUMNS.split(","))
# The kinds of row a migration copies, in the order it copies them.
KINDS = ("run", "job", "schedule")
Row = dict[str, Any]
# Per kind: each key a source copied (a schedule's is ``tenant/name``: a tenant id holds no
# "/"), with the digest of the row as the copy left it in the target (None: recorded by an
# older actors that kept none).
Manifest = dict[str, dict[str, str | None]]

# `digest`: `_digest` of the row as read back from the target in the transaction that wrote it.
MANIFEST_SQLITE = """
CREATE TABLE IF NOT EXISTS migrated_rows (
    kind TEXT NOT NULL, key TEXT NOT NULL, source TEXT NOT NULL, digest TEXT,
    PRIMARY KEY (kind, key)
)
"""
MANIFEST_PG = """
CREATE TABLE IF NOT EXISTS migrated_rows (
    kind text NOT NULL, key text NOT NULL, source text NOT NULL, digest text,
    PRIMARY KEY (kind, key)
)
"""


@dataclass(frozen=True)
class RowError:
    """One row that was not copied (or not rolled back), and why."""

    kind: str  # "job", "run" or "schedule"
    key: str
    message: str
    # The row changed in the target after it was copied: left alone, `force` overrides.
    conflict: bool = False

    def __str__(self) -> str:
        return f"{self.kind} {self.key}: {self.message}"


@dataclass
class Report:
    """What a run or a rollback did: rows written, skipped as identical, and per-row errors."""

    written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    identical: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    converted_leases: int = 0
    errors: list[RowError] = field(default_factory=list)
    # Rows left alone because they changed in the target after they were copied.
    conflicts: list[RowError] = field(default_factory=list)
    # Rows that had changed in the target and were written (or deleted) anyway (`force`).
    forced: int = 0

    def add(self, errors: Iterable[RowError]) -> None:
        for error in errors:
            (self.conflicts if error.conflict else self.errors).append(error)


class Store(Protocol):
    """One side of a migration: where rows are read from, and (for a target) written to.

    A `JsonlStore` export is only ever a source, and an `AbsentStore` only read: their target
    verbs refuse with a message that says so.
    """

    name: str
    exists: bool

    async def runs(self) -> list[Row]: ...
    async def jobs(self, after: int, limit: int) -> list[Row]: ...
    async def schedules(self) -> list[Row]: ...
    async def counts(self) -> dict[str, int]: ...
    async def live_leases(self, now: float) -> int: ...
    async def get(self, kind: str, keys: Sequence[Any]) -> dict[Any, Row]: ...
    async def manifest(self, source: str) -> Manifest: ...
    # `expect`: for each key in it, the digest its target row must still have (None: absent);
    # a row that no longer does is a conflict, left alone. Keys not in it are not checked.
    async def write(
        self,
        source: str,
        kind: str,
        rows: Sequence[Row],
        expect: Mapping[str, str | None] | None = None,
    ) -> list[RowError]: ...
    async def delete(
        self,
        source: str,
        kind: str,
        keys: Sequence[str],
        expect: Mapping[str, str | None] | None = None,
    ) -> list[RowError]: ...
    async def finish(self) -> None: ...


# --- SQLite --------------------------------------------------------------------------------


class SQLiteStore:
    """A queue file. Calls are synchronous underneath (a command-line tool, one at a time).

    ``read_only``: the file must exist at the latest schema version; nothing is created or
    migrated (`status`). Otherwise it is created or migrated as needed.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.name = str(path.resolve())
        self.exists = True
        if read_only:
            self.conn = schema.open_existing(path)
            try:
                version = schema.current_version(self.conn)
                schema.check_version(version, path)
                if version < schema.LATEST_VERSION:
                    raise StorageError(
                        f"{str(path)!r} has schema version {version}, older than this actors' "
                        f"{schema.LATEST_VERSION}; upgrade it first: "
                        f"`python -m actors --db {path} migrate up`"
                    )
            except BaseException:
                self.conn.close()
                raise
            return
        self.conn = schema.connect(path)
        schema.migrate_up(self.conn, path)
        self.conn.execute(MANIFEST_SQLITE)
        # A manifest written before digests were kept gains the column (NULL: unknown).
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(migrated_rows)")}
        if "digest" not in columns:
            self.conn.execute("ALTER TABLE migrated_rows ADD COLUMN digest TEXT")

    async def runs(self) -> list[Row]:
        cur = self.conn.execute(f"SELECT {', '.join(RUN_FIELDS)} FROM runs ORDER BY rowid")
        return [dict(zip(RUN_FIELDS, r, strict=True)) for r in cur]

    async def jobs(self, after: int, limit: int) -> list[Row]:
        cur = self.conn.execute(
            f"SELECT {COLUMNS} FROM jobs WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        )
        return [_job_row(dict(zip(JOB_FIELDS, r, strict=True))) for r in cur]

    async def schedules(self) -> list[Row]:
        cur = self.conn.execute(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY tenant_id, name"
        )
        return [dict(zip(SCHEDULE_FIELDS, r, strict=True)) for r in cur]

    async def counts(self) -> dict[str, int]:
        counts = dict(self.conn.execute("SELECT status, count(*) FROM jobs GROUP BY status"))
        counts["runs"] = self.conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        counts["schedules"] = self.conn.execute("SELECT count(*) FROM schedules").fetchone()[0]
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
            out.update({_key(kind, row): _job_row(row) if kind == "job" else row for row in rows})
        return out

    async def manifest(self, source: str) -> Manifest:
        out: Manifest = {kind: {} for kind in KINDS}
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(migrated_rows)")}
        if not columns:  # read-only, and nothing was ever copied into this file
            return out
        digest = "digest" if "digest" in columns else "NULL"
        for kind, key, value in self.conn.execute(
            f"SELECT kind, key, {digest} FROM migrated_rows WHERE source = ?", (source,)
        ):
            out[kind][key] = value
        return out

    async def write(
        self,
        source: str,
        kind: str,
        rows: Sequence[Row],
        expect: Mapping[str, str | None] | None = None,
    ) -> list[RowError]:
        fields, table, _ = _shape(kind)
        columns = ", ".join(fields)
        unique = _PRIMARY_KEYS[kind]
        updates = ", ".join(f"{f} = excluded.{f}" for f in fields if f not in unique)
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(fields))}) "
            f"ON CONFLICT ({', '.join(unique)}) DO UPDATE SET {updates}"
        )
        errors: list[RowError] = []
        conn = self.conn
        # IMMEDIATE: no other writer between the check against `expect` and the write.
        conn.execute("BEGIN IMMEDIATE")
        try:
            present = await self.get(kind, [_key(kind, r) for r in rows])
            rows = _unchanged(kind, rows, present, expect, errors)
            written = []
            for row in rows:
                conn.execute("SAVEPOINT row")
                try:
                    conn.execute(sql, [row[f] for f in fields])
                    conn.execute("RELEASE row")
                    written.append(_key(kind, row))
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO row")
                    conn.execute("RELEASE row")
                    errors.append(RowError(kind, str(_key(kind, row)), f"not written: {exc}"))
            conn.executemany(
                "INSERT OR REPLACE INTO migrated_rows VALUES (?, ?, ?, ?)",
                [
                    (kind, str(k), source, _digest(there, fields))
                    for k, there in (await self.get(kind, written)).items()
                ],
            )
            if kind == "job":
                _recount_sqlite(conn, {row["run_id"] for row in rows})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return errors

    async def delete(
        self,
        source: str,
        kind: str,
        keys: Sequence[str],
        expect: Mapping[str, str | None] | None = None,
    ) -> list[RowError]:
        fields, table, key = _shape(kind)
        errors: list[RowError] = []
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            runs: set[str] = set()
            present = await self.get(kind, [int(k) if kind == "job" else k for k in keys])
            for k in keys:
                there = present.get(int(k) if kind == "job" else k)
                if kind == "run":
                    left = conn.execute("SELECT count(*) FROM jobs WHERE run_id = ?", (k,))
                    if left.fetchone()[0]:
                        errors.append(RowError(kind, k, "kept: jobs left in the target use it"))
                        continue
                if there is not None and _moved(there, fields, k, expect):
                    errors.append(_kept(kind, k, there))
                    continue
                if there is not None and kind == "job":
                    runs.add(there["run_id"])
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
                failed = (SELECT count(*) FROM jobs WHERE run_id = :r AND status = 'failed'),
                cancelled = (SELECT count(*) FROM jobs WHERE run_id = :r AND status = 'cancelled')
            WHERE run_id = :r
            """,
            {"r": run_id},
        )


# --- PostgreSQL ----------------------------------------------------------------------------


class PostgresStore:
    """A queue in a PostgreSQL schema (the DSN's ``search_path``, created if missing).

    ``read_only``: the schema must hold a queue at the latest version; nothing is created or
    migrated (`status`); a schema that does not exist or holds no queue opens as `AbsentStore`.
    """

    def __init__(self, conn: Any, name: str) -> None:
        self.conn = conn
        self.name = name
        self.exists = True

    @classmethod
    async def open(
        cls, dsn: str, *, read_only: bool = False, must_exist: bool = False
    ) -> PostgresStore | AbsentStore:
        import asyncpg

        name, schema_name = _pg_name(dsn)
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"cannot connect to {name}: {exc}") from exc
        try:
            version = 0
            if await conn.fetchval(
                "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema_name
            ):
                version = await postgres_schema.current_version(conn)
            if version == 0 and must_exist:
                raise StorageError(f"{name} does not exist (no queue in schema {schema_name})")
            if read_only:
                if version == 0:
                    await conn.close()
                    return AbsentStore(name)
                postgres_schema.check_version(version, name)
                if version < postgres_schema.LATEST_VERSION:
                    raise StorageError(
                        f"{name} has schema version {version}, older than this actors' "
                        f"{postgres_schema.LATEST_VERSION}; `store migrate run` into it "
                        "upgrades it"
                    )
                return cls(conn, name)
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
            await postgres_schema.migrate_up(conn, name)
            await conn.execute(MANIFEST_PG)
            # A manifest written before digests were kept gains the column (NULL: unknown).
            await conn.execute("ALTER TABLE migrated_rows ADD COLUMN IF NOT EXISTS digest text")
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
            f"SELECT {COLUMNS} FROM jobs WHERE id > $1 ORDER BY id LIMIT $2", after, limit
        )
        return [dict(r) for r in rows]

    async def schedules(self) -> list[Row]:
        rows = await self.conn.fetch(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY tenant_id, name"
        )
        return [dict(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self.conn.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
        counts = {r[0]: int(r[1]) for r in rows}
        counts["runs"] = int(await self.conn.fetchval("SELECT count(*) FROM runs"))
        counts["schedules"] = int(await self.conn.fetchval("SELECT count(*) FROM schedules"))
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
        source = f"({postgres_schema.RUN_STATE}) s" if kind == "run" else table  # counts too
        rows = await self.conn.fetch(
            f"SELECT {', '.join(fields)} FROM {source} WHERE {key} = ANY($1::{cast})", list(keys)
        )
        return {_key(kind, r): dict(r) for r in rows}

    async def manifest(self, source: str) -> Manifest:
        out: Manifest = {kind: {} for kind in KINDS}
        columns = {
            r[0]
            for r in await self.conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'migrated_rows'"
            )
        }
        if not columns:  # read-only, and nothing was ever copied into this schema
            return out
        digest = "digest" if "digest" in columns else "NULL"
        for r in await self.conn.fetch(
            f"SELECT kind, key, {digest} FROM migrated_rows WHERE source = $1", source
        ):
            out[r[0]][r[1]] = r[2]
        return out

    async def _lock(self, kind: str, keys: Sequence[Any]) -> None:
        # The rows stay as checked until the transaction ends: a worker's ack waits for it.
        _, table, key = _shape(kind)
        cast = "bigint[]" if kind == "job" else "text[]"
        await self.conn.execute(
            f"SELECT 1 FROM {table} WHERE {key} = ANY($1::{cast}) FOR UPDATE", list(keys)
        )

    async def write(
        self,
        source: str,
        kind: str,
        rows: Sequence[Row],
        expect: Mapping[str, str | None] | None = None,
    ) -> list[RowError]:
        import asyncpg

        fields, table, _ = _shape(kind)
        marks = ", ".join(f"${n}" for n in range(1, len(fields) + 1))
        unique = _PRIMARY_KEYS[kind]
        updates = ", ".join(f"{f} = excluded.{f}" for f in fields if f not in unique)
        # A new run's first_id (a lower bound of its job ids) starts above every id; the jobs
        # written here, and any enqueue into the run, lower it.
        extra = (", first_id", f", {postgres_schema.NO_ID}") if kind == "run" else ("", "")
        sql = (
            f"INSERT INTO {table} ({', '.join(fields)}{extra[0]}) VALUES ({marks}{extra[1]}) "
            f"ON CONFLICT ({', '.join(unique)}) DO UPDATE SET {updates}"
        )
        errors: list[RowError] = []
        async with self.conn.transaction():
            await self._lock(kind, [_key(kind, row) for row in rows])
            present = await self.get(kind, [_key(kind, row) for row in rows])
            rows = _unchanged(kind, rows, present, expect, errors)
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
            written = []
            for row in rows:
                try:
                    async with self.conn.transaction():  # a savepoint: one bad row alone
                        if kind == "run":
                            # The row is written as read from the source: the target's count
                            # shards for it go into its base first (their metrics and times
                            # are the source's now), so it reads back as written.
                            await self.conn.execute(_FOLD_SHARDS, row["run_id"])
                        await self.conn.execute(sql, *[row[f] for f in fields])
                except (asyncpg.PostgresError, asyncpg.DataError) as exc:
                    errors.append(RowError(kind, str(_key(kind, row)), f"not written: {exc}"))
                    continue
                written.append(_key(kind, row))
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
            # Each row as this transaction leaves it (a job's run: its counts applied).
            await self.conn.executemany(
                """
                INSERT INTO migrated_rows VALUES ($1, $2, $3, $4)
                ON CONFLICT (kind, key) DO UPDATE
                SET source = excluded.source, digest = excluded.digest
                """,
                [
                    (kind, str(k), source, _digest(there, fields))
                    for k, there in (await self.get(kind, written)).items()
                ],
            )
        return errors

    async def delete(
        self,
        source: str,
        kind: str,
        keys: Sequence[str],
        expect: Mapping[str, str | None] | None = None,
    ) -> list[RowError]:
        fields, table, key = _shape(kind)
        errors: list[RowError] = []
        async with self.conn.transaction():
            counts = _Counts()
            values: list[Any] = [int(k) if kind == "job" else k for k in keys]
            await self._lock(kind, values)
            present = await self.get(kind, values)
            for k, value in zip(keys, values, strict=True):
                if kind == "run" and await self.conn.fetchval(
                    f"SELECT total FROM ({postgres_schema.RUN_STATE} WHERE r.run_id = $1) s", k
                ):
                    errors.append(RowError(kind, k, "kept: jobs left in the target use it"))
                    continue
                there = present.get(value)
                if there is not None and _moved(there, fields, k, expect):
                    errors.append(_kept(kind, k, there))
                    continue
                gone = await self.conn.fetch(
                    f"DELETE FROM {table} WHERE {key} = $1 RETURNING tenant_id"
                    + (", run_id, status" if kind == "job" else ""),
                    value,
                )
                if kind == "run":
                    await self.conn.execute("DELETE FROM run_counts WHERE run_id = $1", k)
                for r in gone if kind == "job" else ():
                    counts.add(r[1], r[2], -1)
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


def _pg_name(dsn: str) -> tuple[str, str]:
    """The store's name (the DSN without user or password) and its schema."""
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
    schema_name = search_path.split(",")[0].strip()
    if not schema_name.replace("_", "").isalnum():
        raise InvalidArgument(f"search_path must name one schema, not {search_path!r}")
    return name, schema_name


# Moves a run's count shards into its base row (the counts; the rest is about to be rewritten).
_FOLD_SHARDS = """
    WITH gone AS (
        DELETE FROM run_counts WHERE run_id = $1 RETURNING done, failed, total, cancelled
    )
    UPDATE runs SET done = runs.done + s.done, failed = runs.failed + s.failed,
                    total = runs.total + s.total, cancelled = runs.cancelled + s.cancelled
    FROM (SELECT coalesce(sum(done), 0) AS done, coalesce(sum(failed), 0) AS failed,
                 coalesce(sum(total), 0) AS total, coalesce(sum(cancelled), 0) AS cancelled
          FROM gone) s
    WHERE runs.run_id = $1
"""


class _Counts:
    """Changes to runs' stored counts from rows written or deleted here, which bypass the
    queue's verbs; applied to each run's base row in the same transaction."""

    def __init__(self) -> None:
        # run -> [done, failed, total, first id or 0, cancelled]
        self.by_run: dict[str, list[int]] = {}

    def add(self, run_id: str, status: str, n: int, *, first_id: int = 0) -> None:
        counts = self.by_run.setdefault(run_id, [0, 0, 0, 0, 0])
        counts[0] += n if status == "done" else 0
        counts[1] += n if status == "failed" else 0
        counts[2] += n
        counts[4] += n if status == "cancelled" else 0
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
                            cancelled = runs.cancelled + d.cancelled,
                            first_id = CASE WHEN d.first_id = 0 THEN runs.first_id
                                            ELSE least(runs.first_id, d.first_id) END
            FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                        $6::bigint[])
                 AS d(run_id, done, failed, total, first_id, cancelled)
            WHERE runs.run_id = d.run_id
            """,
            runs,
            *([self.by_run[r][i] for r in runs] for i in range(5)),
        )


# --- JSON lines (a read-only source; export writes them) ------------------------------------


class _SourceOnly:
    """The target verbs of a store that can only be read: each refuses, saying why."""

    name: str

    def _refuse(self) -> InvalidArgument:
        return InvalidArgument(
            f"{self.name} can only be read (a .jsonl export is a source, never a target); "
            "copy into a SQLite file or a PostgreSQL schema instead"
        )

    async def get(self, kind: str, keys: Sequence[Any]) -> dict[Any, Row]:
        raise self._refuse()

    async def manifest(self, source: str) -> Manifest:
        raise self._refuse()

    async def write(
        self,
        source: str,
        kind: str,
        rows: Sequence[Row],
        expect: Mapping[str, str | None] | None = None,
    ) -> list[RowError]:
        raise self._refuse()

    async def delete(
        self,
        source: str,
        kind: str,
        keys: Sequence[str],
        expect: Mapping[str, str | None] | None = None,
    ) -> list[RowError]:
        raise self._refuse()


class JsonlStore(_SourceOnly):
    """A backup written by `export_jsonl`: one JSON object per line, ``kind`` first."""

    def __init__(self, path: Path) -> None:
        self.name = f"file:{path.resolve()}"
        self.exists = True
        self._runs: list[Row] = []
        self._jobs: list[Row] = []
        self._schedules: list[Row] = []
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
            elif kind == "schedule":
                self._schedules.append({f: row.get(f) for f in SCHEDULE_FIELDS})
        self._jobs.sort(key=lambda r: r["id"])

    async def runs(self) -> list[Row]:
        return list(self._runs)

    async def jobs(self, after: int, limit: int) -> list[Row]:
        return [r for r in self._jobs if r["id"] > after][:limit]

    async def schedules(self) -> list[Row]:
        return list(self._schedules)

    async def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self._jobs:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        counts["runs"] = len(self._runs)
        counts["schedules"] = len(self._schedules)
        return counts

    async def live_leases(self, now: float) -> int:
        return sum(
            r["status"] == "leased" and (r["lease_expires_at"] or 0) > now for r in self._jobs
        )

    async def finish(self) -> None:
        pass


class AbsentStore(_SourceOnly):
    """A store opened read-only that does not exist yet (or holds no queue): it reads as empty."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.exists = False

    async def runs(self) -> list[Row]:
        return []

    async def jobs(self, after: int, limit: int) -> list[Row]:
        return []

    async def schedules(self) -> list[Row]:
        return []

    async def counts(self) -> dict[str, int]:
        return {}

    async def live_leases(self, now: float) -> int:
        return 0

    async def get(self, kind: str, keys: Sequence[Any]) -> dict[Any, Row]:
        return {}

    async def manifest(self, source: str) -> Manifest:
        return {kind: {} for kind in KINDS}

    async def finish(self) -> None:
        pass


# --- the operations --------------------------------------------------------------------------


def _is_pg(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


def store_name(spec: str) -> str:
    """The name under which ``spec`` is recorded as a source, without opening it."""
    if _is_pg(spec):
        return _pg_name(spec)[0]
    if spec.endswith(".jsonl"):
        return f"file:{Path(spec).resolve()}"
    return str(Path(spec).resolve())


@contextlib.asynccontextmanager
async def open_store(
    spec: str, *, read_only: bool = False, must_exist: bool = False
) -> AsyncIterator[Store]:
    """Open ``spec``: a ``postgresql://`` DSN (schema from ``?search_path=``), a ``.jsonl``
    export (read-only), or a SQLite file path.

    ``read_only``: create, migrate and write nothing; a store that does not exist (or holds no
    queue yet) opens as an `AbsentStore` (``exists`` is False), which reads as empty.
    ``must_exist``: a store that does not exist is an error (StorageError), not created.
    """
    opened: Store
    if _is_pg(spec):
        opened = await PostgresStore.open(spec, read_only=read_only, must_exist=must_exist)
    elif spec.endswith(".jsonl"):
        opened = JsonlStore(Path(spec))
    # A command-line tool, one task at a time: a blocking stat stalls nobody (as SQLite's).
    elif (must_exist or read_only) and not os.path.isfile(spec):  # noqa: ASYNC240
        if must_exist:
            raise StorageError(f"{spec} does not exist (no such file)")
        opened = AbsentStore(store_name(spec))
    else:
        opened = SQLiteStore(Path(spec), read_only=read_only)
    try:
        yield opened
    finally:
        await opened.finish()


def _job_row(row: Row) -> Row:
    """A job row in the stores' common types: SQLite keeps ``cross_tenant_key`` as 0 or 1."""
    row["cross_tenant_key"] = bool(row["cross_tenant_key"])
    return row


# Each kind's primary key columns.
_PRIMARY_KEYS = {"job": ("id",), "run": ("run_id",), "schedule": ("tenant_id", "name")}


def _shape(kind: str) -> tuple[tuple[str, ...], str, str]:
    """A kind's fields, its table, and its key as SQL (the value `_key` reads from a row)."""
    if kind == "job":
        return JOB_FIELDS, "jobs", "id"
    if kind == "run":
        return RUN_FIELDS, "runs", "run_id"
    return SCHEDULE_FIELDS, "schedules", "tenant_id || '/' || name"


def _key(kind: str, row: Mapping[str, Any]) -> Any:
    """A row's key: a job's id, a run's id, a schedule's ``tenant/name``."""
    if kind == "job":
        return row["id"]
    if kind == "run":
        return row["run_id"]
    return f"{row['tenant_id']}/{row['name']}"


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _same(a: Row, b: Row, fields: Sequence[str]) -> list[str]:
    """The fields in which two rows differ."""
    return [f for f in fields if a.get(f) != b.get(f)]


# Fields added after digests were first recorded: left out of a digest while they are None,
# so a row copied before they existed keeps its digest (an unchanged row is no conflict).
_LATER_FIELDS = frozenset({"cancel_requested_at"})


def _digest(row: Row, fields: Sequence[str]) -> str:
    """A hash of ``row``'s fields as one store reads them: the same row, the same digest."""
    values = [row[f] for f in fields if not (f in _LATER_FIELDS and row[f] is None)]
    return hashlib.sha256(msgspec.json.encode(values)).hexdigest()[:32]


def _moved(
    there: Row, fields: Sequence[str], key: str, expect: Mapping[str, str | None] | None
) -> bool:
    """Whether the target's row ``there`` is no longer as ``expect`` says (None: unchecked)."""
    return expect is not None and key in expect and _digest(there, fields) != expect[key]


def _unchanged(
    kind: str,
    rows: Sequence[Row],
    present: Mapping[Any, Row],
    expect: Mapping[str, str | None] | None,
    errors: list[RowError],
) -> list[Row]:
    """The rows whose target row (``present``) is still as ``expect`` says; a conflict in
    ``errors`` for each other one."""
    if expect is None:
        return list(rows)
    fields, _, _ = _shape(kind)
    out = []
    for row in rows:
        k, there = str(_key(kind, row)), present.get(_key(kind, row))
        if k in expect and (None if there is None else _digest(there, fields)) != expect[k]:
            errors.append(_changed(kind, k, row, there))
        else:
            out.append(row)
    return out


def _changed(kind: str, key: str, row: Row, there: Row | None) -> RowError:
    """The conflict of a row that changed in the target after it was copied."""
    if there is None:
        what = "deleted in the target after it was copied (purged, or rolled back)"
    elif kind == "job":
        what = (
            f"changed in the target after it was copied ({there['status']} there, "
            f"{row['status']} in the source; {there['attempts']} attempt(s) there)"
        )
    elif kind == "run":
        what = "changed in the target after it was copied (its jobs ran there)"
    else:
        what = "changed in the target after it was copied (it fired there, or was replaced)"
    return RowError(
        kind,
        key,
        f"{what}; left alone. The target has moved on: `store migrate run --force` "
        "replaces it with the source's row",
        conflict=True,
    )


def _kept(kind: str, key: str, there: Row) -> RowError:
    """The conflict of a row that rollback keeps: it changed in the target after the copy."""
    now = f" (now {there['status']})" if kind == "job" else ""
    return RowError(
        kind,
        key,
        f"changed in the target after it was copied{now}; kept. "
        "`store migrate rollback --force` deletes it anyway",
        conflict=True,
    )


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


async def _all_jobs(source: Store, batch: int) -> AsyncIterator[list[Row]]:
    after = 0
    while rows := await source.jobs(after, batch):
        yield rows
        after = rows[-1]["id"]


async def run(
    source: Store,
    target: Store,
    *,
    now: float,
    convert_leases: bool = False,
    force: bool = False,
    batch: int = 500,
    report: Report | None = None,
) -> Report:
    """Copy every run and job from ``source`` to ``target``; verify each row once committed.

    A row that changed in the target after it was copied is a conflict, left alone, unless
    ``force`` (then the source's row replaces it). Pass ``report`` to read it while it fills.
    """
    live = await source.live_leases(now)
    if live and not convert_leases:
        raise MigrationRefused(
            f"{source.name} has {live} job(s) under a live lease: workers are still running on "
            "it. Stop them (or wait for the leases to run out), or pass --convert-leases to copy "
            "those jobs as pending (their work is then done again by the target's workers)"
        )
    report = Report() if report is None else report
    mine = await target.manifest(source.name)
    runs = await source.runs()
    for chunk in _chunks(runs, batch):
        await _copy(source.name, target, "run", chunk, mine["run"], report, force)
    async for rows in _all_jobs(source, batch):
        if convert_leases:
            wanted = [_converted(r, now) for r in rows]
            report.converted_leases += sum(a is not b for a, b in zip(rows, wanted, strict=True))
            rows = wanted
        await _copy(source.name, target, "job", rows, mine["job"], report, force)
    # After the jobs: a schedule's next tick in the target is the source's, and the jobs of
    # the ticks before it are there already (their idempotency keys with them).
    for chunk in _chunks(await source.schedules(), batch):
        await _copy(source.name, target, "schedule", chunk, mine["schedule"], report, force)
    return report


async def _copy(
    source: str,
    target: Store,
    kind: str,
    rows: list[Row],
    mine: dict[str, str | None],
    report: Report,
    force: bool,
) -> None:
    fields, _, _ = _shape(kind)
    present = await target.get(kind, [_key(kind, r) for r in rows])
    todo: list[Row] = []
    # What each row to write must still be in the target (checked again as it is written).
    expect: dict[str, str | None] = {}
    for row in rows:
        k = str(_key(kind, row))
        there = present.get(_key(kind, row))
        if there is not None and not _same(row, there, fields):
            report.identical[kind] += 1
        elif k in mine:
            # Copied before. Copy it again only if the target's row is still as that copy
            # left it (then it changed in the source alone).
            if there is not None and mine[k] is not None and _digest(there, fields) == mine[k]:
                todo.append(row)
                expect[k] = mine[k]
            elif force:
                todo.append(row)
                report.forced += 1
            elif there is not None and mine[k] is None:
                report.conflicts.append(
                    RowError(
                        kind,
                        k,
                        "copied by an older actors, which kept no record of the row as copied: "
                        "it may have changed in the target since; left alone. "
                        "`store migrate run --force` replaces it with the source's row",
                        conflict=True,
                    )
                )
            else:
                report.conflicts.append(_changed(kind, k, row, there))
        elif there is None:
            todo.append(row)
            expect[k] = None
        else:
            report.errors.append(
                RowError(
                    kind,
                    k,
                    "the target already holds a different row that "
                    "this source did not write; left alone. Migrate into an empty store",
                )
            )
    if not todo:
        return
    write_errors = await target.write(source, kind, todo, expect)
    report.add(write_errors)
    failed = {e.key for e in write_errors}
    # Verify: read every written row back after the commit and compare it field by field.
    written = await target.get(kind, [_key(kind, r) for r in todo])
    for row in todo:
        k = str(_key(kind, row))
        if k in failed:
            continue
        there = written.get(_key(kind, row))
        if there is None:
            report.errors.append(RowError(kind, k, "written, but not found when read back"))
        elif diff := _same(row, there, fields):
            report.errors.append(
                RowError(kind, k, f"read back different in {', '.join(diff)}; run it again")
            )
        else:
            report.written[kind] += 1


@dataclass
class Status:
    """What is where and what differs, before (or after) a run."""

    source: dict[str, int]
    target: dict[str, int]
    live_leases: int
    missing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    # Copied before and changed in the source since (the target's row is as copied): a run
    # copies them again.
    different: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    identical: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    copied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    # Changed (or deleted) in the target after they were copied: a run leaves them alone.
    conflicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    # Different rows the target holds that this source did not write: a run leaves them alone.
    foreign: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def complete(self) -> bool:
        """The target holds every row of the source as it is there, and nothing conflicts."""
        return not any(
            any(counts.values())
            for counts in (self.missing, self.different, self.conflicts, self.foreign)
        )


async def status(source: Store, target: Store, *, now: float, batch: int = 500) -> Status:
    """Compare ``source`` with ``target`` row by row (counts, missing, differing and
    conflicting rows); reads only."""
    result = Status(
        source=await source.counts(),
        target=await target.counts(),
        live_leases=await source.live_leases(now),
    )
    mine = await target.manifest(source.name)
    result.copied = {kind: len(keys) for kind, keys in mine.items()}

    async def compare(kind: str, rows: list[Row]) -> None:
        fields, _, _ = _shape(kind)
        present = await target.get(kind, [_key(kind, r) for r in rows])
        for row in rows:
            k, there = str(_key(kind, row)), present.get(_key(kind, row))
            if there is not None and not _same(row, there, fields):
                bucket = result.identical
            elif k in mine[kind]:
                unchanged = there is not None and _digest(there, fields) == mine[kind][k]
                bucket = result.different if unchanged else result.conflicts
            else:
                bucket = result.missing if there is None else result.foreign
            bucket[kind] += 1

    for chunk in _chunks(await source.runs(), batch):
        await compare("run", chunk)
    async for rows in _all_jobs(source, batch):
        await compare("job", rows)
    for chunk in _chunks(await source.schedules(), batch):
        await compare("schedule", chunk)
    return result


async def rollback(source_name: str, target: Store, *, force: bool = False) -> Report:
    """Delete from ``target`` every row that runs from ``source_name`` copied into it and that
    has not changed there since (a changed one is a conflict, kept unless ``force``)."""
    report = Report()
    mine = await target.manifest(source_name)
    for kind in ("schedule", "job", "run"):  # jobs first: a run goes only once no job uses it
        keys = sorted(mine[kind])
        for chunk in _chunks(keys, 500):
            expect = None if force else {k: mine[kind][k] for k in chunk}
            # Rows gone from the target already (purged there) only leave the manifest.
            there = await target.get(kind, [int(k) if kind == "job" else k for k in chunk])
            errors = await target.delete(source_name, kind, chunk, expect)
            report.add(errors)
            report.written[kind] += len(there) - len(errors)
    return report


async def export_jsonl(source: Store, out: Path, *, batch: int = 1000) -> dict[str, int]:
    """Write every run, job and schedule of ``source`` to ``out`` as JSON lines; return how
    many of each."""
    written = dict.fromkeys(KINDS, 0)
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
        for row in await source.schedules():
            f.write(encoder.encode({"kind": "schedule", **row}) + b"\n")
            written["schedule"] += 1
    tmp.replace(out)  # a reader never sees half an export
    return written
