"""Dumps of the two Cloudflare queues, written the way their tools write them.

`d1_sql` writes what ``wrangler d1 export`` writes: ``PRAGMA defer_foreign_keys=TRUE;``, each
table's ``CREATE TABLE`` followed by its rows as ``INSERT INTO "t" ("col",...) VALUES(...);``
(SQL literals: strings in single quotes with quotes doubled, ``NULL``, integers), D1's own
``d1_migrations`` table first. `d1_json` writes what ``wrangler d1 execute --json`` prints for
``SELECT * FROM jobs``: ``[{"results": [...], "success": true, "meta": {...}}]``. `kv_bulk`
writes ``wrangler kv bulk`` JSON: ``[{"key": ..., "value": "<JSON text>"}, ...]``.

The rows are the seed's ``jobs`` table (its migration 002): TEXT ids as its
``generateJobId()`` makes them (``job_<ms>_<9 base-36 chars>``), unix-second times, the four
statuses, and lease deadlines on leased rows.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from typing import Any

D1_SCHEMA = """CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  tenant_id TEXT NOT NULL,
  r2_key TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending', -- pending|leased|done|failed
  attempts INTEGER NOT NULL DEFAULT 0,
  visibility_deadline INTEGER,            -- unix seconds when lease expires
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);"""
D1_COLUMNS = (
    "id",
    "run_id",
    "tenant_id",
    "r2_key",
    "status",
    "attempts",
    "visibility_deadline",
    "created_at",
    "updated_at",
)
# Awkward names: quotes, a semicolon, a newline, SQL in a string, non-ASCII.
NAMES = (
    "report.pdf",
    'it\'s the "final" copy.pdf',
    "a;b;c -- not a comment.txt",
    "line one\nline two.md",
    "'); DROP TABLE jobs; --.txt",
    "Überblick \u2013 São Paulo 東京 🚀.html",
    "tab\there.json",
)
T0 = 1_714_000_000  # 2024-04-25, unix seconds


def job_id(rng: random.Random, n: int) -> str:
    """An id as the seed's generateJobId() makes one: job_<Date.now()>_<9 base-36 chars>."""
    tail = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(9))
    return f"job_{(T0 + n) * 1000 + rng.randrange(1000)}_{tail}"


def d1_rows(count: int, *, seed: int = 17) -> list[dict[str, Any]]:
    """``count`` rows of the seed's jobs table: runs of two tenants, every status."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        tenant = ("acme", "globex")[n % 2]
        run = f"run_{tenant}_{n // 250}"
        status = rng.choice(["pending"] * 4 + ["leased", "done", "done", "failed"])
        attempts = 0 if status == "pending" and rng.random() < 0.7 else rng.randint(1, 4)
        created = T0 + n
        updated = created + rng.randint(0, 3600)
        rows.append(
            {
                "id": job_id(rng, n),
                "run_id": run,
                "tenant_id": tenant,
                "r2_key": f"{tenant}/{run}/{n:05d}-{NAMES[n % len(NAMES)]}",
                "status": status,
                "attempts": attempts,
                "visibility_deadline": updated + 300 if status == "leased" else None,
                "created_at": created,
                "updated_at": updated,
            }
        )
    return rows


def sql_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def insert(table: str, row: dict[str, Any]) -> str:
    columns = ",".join(f'"{c}"' for c in row)
    values = ",".join(sql_literal(v) for v in row.values())
    return f'INSERT INTO "{table}" ({columns}) VALUES({values});'


def d1_sql(rows: list[dict[str, Any]], *, extra: tuple[str, ...] = ()) -> str:
    """The dump as ``wrangler d1 export`` writes it; ``extra`` statements go after the rows."""
    lines = [
        "PRAGMA defer_foreign_keys=TRUE;",
        "CREATE TABLE d1_migrations(\n\t\tid         INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "\t\tname       TEXT UNIQUE,\n"
        "\t\tapplied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL\n);",
        insert("d1_migrations", {"id": 1, "name": "0001_init.sql", "applied_at": "2024-04-20"}),
        insert("d1_migrations", {"id": 2, "name": "0002_jobs.sql", "applied_at": "2024-04-21"}),
        D1_SCHEMA,
        *(insert("jobs", row) for row in rows),
        *extra,
        "CREATE INDEX idx_jobs_status ON jobs(status);",
        "CREATE INDEX idx_jobs_visibility ON jobs(visibility_deadline);",
        "CREATE INDEX idx_jobs_run_id ON jobs(run_id);",
        "CREATE INDEX idx_jobs_created ON jobs(created_at);",
        "DELETE FROM sqlite_sequence;",
        "INSERT INTO \"sqlite_sequence\" VALUES('d1_migrations',2);",
    ]
    return "\n".join(lines) + "\n"


def d1_json(rows: list[dict[str, Any]]) -> str:
    """What ``wrangler d1 execute DB --json --command 'SELECT * FROM jobs'`` prints."""
    meta = {
        "served_by": "v3-prod",
        "duration": 1.2,
        "changes": 0,
        "last_row_id": 0,
        "changed_db": False,
        "size_after": 245760,
        "rows_read": len(rows),
        "rows_written": 0,
    }
    return json.dumps([{"results": rows, "success": True, "meta": meta}], ensure_ascii=False)


def iso(seconds: float) -> str:
    """As JavaScript's toISOString() writes it."""
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class KvDump:
    """A KV namespace as ``wrangler kv bulk`` JSON, and what importing it must give."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    # origin -> (status, result) of each job the import must create
    expected: dict[str, tuple[str, Any]] = field(default_factory=dict)
    leases: int = 0

    def put(self, key: str, value: Any, **extra: Any) -> None:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        self.entries.append({"key": key, "value": text, **extra})

    def text(self) -> str:
        return json.dumps(self.entries, ensure_ascii=False)


def kv_task(task_id: str, n: int, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "type": ("task", "query", "approval", "notification")[n % 4],
        "source": "commhub",
        "content": f"Task {n}: summarise «{NAMES[n % len(NAMES)]}» — it's urgent",
        "priority": ("low", "medium", "high", "critical")[n % 4],
        "metadata": {"thread": f"t-{n % 7}", "tags": ["a", "ü"]},
        "queuedAt": iso(T0 + n + 0.123),
        "status": status,
        **fields,
    }


def kv_bulk(count: int, *, seed: int = 23) -> KvDump:
    """Tasks in the new format (``queue:task:``) and the old one (``orchestrator:queue:`` with
    its ``orchestrator:pending`` list), leases of both formats, stored results, results whose
    task is gone, and keys of other features."""
    rng = random.Random(seed)
    dump = KvDump()
    old_pending = []
    for n in range(count):
        task_id = f"req_{T0 + n}_{rng.randrange(16**6):06x}"
        status = rng.choice(["pending", "pending", "claimed", "completed", "failed"])
        old = n % 5 == 0
        task = kv_task(task_id, n, status)
        dump.put(("orchestrator:queue:" if old else "queue:task:") + task_id, task)
        if old:
            old_pending.append(task_id)
        if status == "claimed":
            lease = {"workerId": f"w{n % 3}", "claimedAt": iso(T0 + n), "expiresAt": iso(T0 + n)}
            dump.put(("orchestrator:lease:" if old else "queue:lease:") + task_id, lease)
            dump.leases += 1
        result = None
        if status == "completed":
            result = {"success": True, "output": f"summary {n}", "tokens": n}
            dump.put(f"orchestrator:result:{task_id}", result, expiration=T0 + n + 3600)
        job_status = {"pending": "pending", "claimed": "pending", "completed": "done"}.get(
            status, "failed"
        )
        dump.expected[f"kv:{task_id}"] = (job_status, result)
    dump.put("orchestrator:pending", old_pending)
    # The original deletes a task when its result is stored: results alone.
    for n in range(3):
        task_id = f"gone_{n}"
        result = {"success": True, "output": "done before the export", "completedAt": iso(T0)}
        dump.put(f"orchestrator:result:{task_id}", result, expiration=T0 + 3600)
        dump.expected[f"kv:{task_id}"] = ("done", result)
    dump.put("session:abc", {"user": "x"})  # another feature's key
    return dump
