"""The PostgreSQL schema: versioned migrations (``migrations/NNNN_name.sql``), the same steps
as SQLite's.

A migration file holds its statements to apply under ``-- migrate:up`` and to undo under
``-- migrate:down``, each ending with ``;`` at the end of a line; ``-- migrate:drops <table>``
names a table whose rows undoing it deletes. The schema records only the number of the latest
migration applied (``schema_version``), so a file's number and its statements never change
once released: a change to the schema is a new file.
"""

from __future__ import annotations

import re
from importlib import resources

from actors.errors import InvalidArgument, MigrationRefused, SchemaTooNew
from actors.queue._migrations import Migration
from actors.queue.postgres import _sql
from actors.queue.postgres._pool import Connection
from actors.queue.postgres._sql import NO_ID, RUN_STATE, SHARDS

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "NO_ID",
    "RUN_STATE",
    "SHARDS",
    "current_version",
    "migrate_down",
    "migrate_up",
]

# Serialises migrations of one database across processes (pg_advisory_xact_lock's key).
_MIGRATION_LOCK = 0x6163746F7273  # "actors"

# A statement ends with ";" at the end of a line.
_END = re.compile(r";[ \t]*$", re.MULTILINE)


def _statements(text: str) -> tuple[str, ...]:
    """The statements of one section of a migration file, comments kept, empty ones left out."""
    chunks = (chunk.strip() for chunk in _END.split(text))
    return tuple(
        chunk
        for chunk in chunks
        if any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())
    )


def _migration(file_name: str, text: str) -> Migration:
    """Parse ``NNNN_name.sql``."""
    number, name = file_name.removesuffix(".sql").split("_", 1)
    head, _, rest = text.partition("-- migrate:up\n")
    up, _, down = rest.partition("-- migrate:down\n")
    drops = tuple(
        table
        for line in head.splitlines()
        if line.startswith("-- migrate:drops ")
        for table in line.removeprefix("-- migrate:drops ").split()
    )
    return Migration(
        version=int(number), name=name, up=_statements(up), down=_statements(down), drops=drops
    )


def _migrations() -> tuple[Migration, ...]:
    folder = resources.files("actors.queue.postgres") / "migrations"
    files = sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))
    found = tuple(_migration(f, (folder / f).read_text(encoding="utf-8")) for f in files)
    # Invariant: versions rise (a number may be skipped: each names its own step, so
    # branches can claim theirs), and each has statements both ways.
    versions = [m.version for m in found]
    assert versions == sorted(set(versions)) and versions[0] >= 1, files
    assert all(m.up and m.down for m in found), files
    return found


MIGRATIONS = _migrations()
LATEST_VERSION = MIGRATIONS[-1].version


async def current_version(conn: Connection) -> int:
    """Return the schema version recorded in the current schema (0 when it holds no queue)."""
    exists = await conn.fetchval(_sql.VERSION_EXISTS)
    if not exists:
        return 0
    return int(await conn.fetchval(_sql.VERSION_READ))


def check_version(version: int, where: str) -> None:
    """Raise SchemaTooNew if ``version`` is newer than this code knows."""
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"{where} has schema version {version}, but this version of actors knows versions "
            f"up to {LATEST_VERSION}: it was written by a newer actors. Upgrade actors first"
        )


async def migrate_up(conn: Connection, where: str, target: int | None = None) -> list[int]:
    """Apply every migration above the schema's version up to ``target``; return those applied."""
    target = LATEST_VERSION if target is None else target
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version > target:
            break
        async with conn.transaction():
            # Another process may be migrating the same schema: wait for it, then re-read.
            await conn.execute(_sql.MIGRATION_LOCK, _MIGRATION_LOCK)
            await conn.execute(_sql.VERSION_TABLE)
            version = await current_version(conn)
            check_version(version, where)
            if version < migration.version:
                for statement in migration.up:
                    await conn.execute(statement)
                await conn.execute(_sql.VERSION_CLEAR)
                await conn.execute(_sql.VERSION_WRITE, migration.version)
                applied.append(migration.version)
    return applied


async def migrate_down(
    conn: Connection, where: str, target: int, *, force: bool = False
) -> list[int]:
    """Undo migrations above ``target``, newest first; refuse to drop rows unless ``force``."""
    if not 0 <= target <= LATEST_VERSION:
        raise InvalidArgument(
            f"target version must be between 0 and {LATEST_VERSION}, not {target}"
        )
    undone: list[int] = []
    async with conn.transaction():
        # One transaction and one lock: every step is undone, or (refused) none is.
        await conn.execute(_sql.MIGRATION_LOCK, _MIGRATION_LOCK)
        version = await current_version(conn)
        check_version(version, where)
        steps = [m for m in reversed(MIGRATIONS) if target < m.version <= version]
        for migration in steps:
            rows = {t: await _count_rows(conn, t) for t in migration.drops}
            if any(rows.values()) and not force:
                held = ", ".join(f"{n} rows in {t}" for t, n in rows.items() if n)
                raise MigrationRefused(
                    f"undoing migration {migration.version} ({migration.name}) of {where} "
                    f"would delete {held}; export it first (`python -m actors store export`), "
                    "then force it if you mean it"
                )
        for migration in steps:
            for statement in migration.down:
                await conn.execute(statement)
            undone.append(migration.version)
        await conn.execute(_sql.VERSION_CLEAR)
        # The latest migration left applied (numbers may skip).
        below = max((m.version for m in MIGRATIONS if m.version <= target), default=0)
        if below > 0:
            await conn.execute(_sql.VERSION_WRITE, below)
        else:
            await conn.execute(_sql.VERSION_DROP)
    return undone


async def _count_rows(conn: Connection, table: str) -> int:
    return int(await conn.fetchval(await conn.fetchval(_sql.COUNT_ROWS, table)))
