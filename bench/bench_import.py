"""Importing the D1 jobs queue: items/s for reading a dump and for `store import`'s run.

Usage: ``python bench/bench_import.py [--rows 20000] [--batch 500] [--dsn postgresql://...]``;
figures in docs/benchmarks.md ("Moving off Cloudflare"). A ``wrangler d1 export``-shaped dump
of ``--rows`` rows (the seed's jobs table) is read (SQL through the in-memory SQLite, and the
``d1 execute --json`` form), then imported into a new SQLite file and, with ``--dsn``, a new
PostgreSQL schema (dropped after): the run (write, read back, compare), a second run (every
item found imported: a status's cost) and a rollback are timed, with the raw INSERT rate of the
same rows into a plain SQLite table beside them for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from actors import importers
from actors.queue import SQLiteQueue

T0 = 1_714_000_000
COLUMNS = (
    "id, run_id, tenant_id, r2_key, status, attempts, visibility_deadline, created_at, updated_at"
)


def rows(count: int) -> list[tuple[object, ...]]:
    statuses = ("pending", "pending", "pending", "leased", "done", "done", "failed")
    out = []
    for n in range(count):
        tenant = ("acme", "globex")[n % 2]
        run = f"run_{tenant}_{n // 1000}"
        status = statuses[n % len(statuses)]
        out.append(
            (
                f"job_{(T0 + n) * 1000}_{n:09d}",
                run,
                tenant,
                f"{tenant}/{run}/{n:06d}-it's a file.pdf",
                status,
                n % 3,
                T0 + n + 300 if status == "leased" else None,
                T0 + n,
                T0 + n + 60,
            )
        )
    return out


def sql(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def dump(data: list[tuple[object, ...]]) -> str:
    names = ",".join(f'"{c.strip()}"' for c in COLUMNS.split(","))
    lines = [
        "PRAGMA defer_foreign_keys=TRUE;",
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, tenant_id TEXT NOT NULL, "
        "r2_key TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT "
        "NULL DEFAULT 0, visibility_deadline INTEGER, created_at INTEGER NOT NULL, "
        "updated_at INTEGER NOT NULL);",
    ]
    lines += [f'INSERT INTO "jobs" ({names}) VALUES({",".join(map(sql, r))});' for r in data]
    return "\n".join(lines) + "\n"


def raw_insert_rate(data: list[tuple[object, ...]], folder: Path) -> float:
    conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"CREATE TABLE jobs ({COLUMNS})")
    started = time.perf_counter()
    for start in range(0, len(data), 500):
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO jobs VALUES ({','.join('?' * 9)})", data[start : start + 500]
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(data) / elapsed


async def measure(queue: importers.Source, opened: object, batch: int, label: str) -> None:
    source = queue
    started = time.perf_counter()
    report = await importers.run(opened, source, batch=batch)  # type: ignore[arg-type]
    first = time.perf_counter() - started
    assert report.migrated == len(source.jobs), report.errors[:3]
    started = time.perf_counter()
    again = await importers.run(opened, source, batch=batch)  # type: ignore[arg-type]
    second = time.perf_counter() - started
    assert again.imported == len(source.jobs)
    started = time.perf_counter()
    removed = await importers.rollback(opened, source, batch=batch)  # type: ignore[arg-type]
    third = time.perf_counter() - started
    assert removed.removed == len(source.jobs)
    n = len(source.jobs)
    print(
        f"{label:<10} run {n / first:>9,.0f} items/s   again (all imported) {n / second:>9,.0f}"
        f"   rollback {n / third:>9,.0f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dsn", default=None)
    args = parser.parse_args()
    data = rows(args.rows)
    text = dump(data).encode()
    as_json = json.dumps(
        [
            {
                "results": [
                    dict(zip([c.strip() for c in COLUMNS.split(",")], r, strict=True)) for r in data
                ],
                "success": True,
                "meta": {},
            }
        ]
    ).encode()
    started = time.perf_counter()
    source = importers.read_dump("d1", text)
    read_sql = time.perf_counter() - started
    started = time.perf_counter()
    importers.read_dump("d1", as_json)
    read_json = time.perf_counter() - started
    print(f"rows {args.rows}, dump {len(text) / 1e6:.1f} MB, batch {args.batch}")
    print(f"read SQL   {args.rows / read_sql:>9,.0f} rows/s   JSON {args.rows / read_json:>9,.0f}")
    with tempfile.TemporaryDirectory() as folder:
        print(f"raw sqlite3 INSERT {raw_insert_rate(data, Path(folder)):>9,.0f} rows/s (scale)")
        async with SQLiteQueue.open(Path(folder) / "q.db") as sqlite_queue:
            await measure(source, sqlite_queue, args.batch, "sqlite")
    if args.dsn:
        from actors.queue.postgres import PostgresQueue

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            async with PostgresQueue.open(args.dsn, schema=schema) as pg:
                await measure(source, pg, args.batch, "postgres")
        finally:
            import asyncpg

            conn = await asyncpg.connect(args.dsn)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
