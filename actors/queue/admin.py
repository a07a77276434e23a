"""The configured queue's schema, administered: whether a queue is there, its version, and
migrating it up or down, on SQLite or PostgreSQL.

These are synchronous calls for the command line; each opens one connection of its own and
closes it. They never create a queue except `migrate_up`, which is how one is created on purpose.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec

from actors.errors import InvalidArgument, StorageError

if TYPE_CHECKING:
    import sqlite3

    from actors.config import Config

__all__ = ["MigrationInfo", "SchemaStatus", "migrate_down", "migrate_up", "require_queue", "status"]

T = TypeVar("T")

#: An ``asyncpg.Connection`` (asyncpg ships no type hints).
_PgConnection = Any


class MigrationInfo(msgspec.Struct, frozen=True):
    """One migration this version of actors knows."""

    version: int
    name: str


class SchemaStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Where the queue is, its schema's version, and every migration known here."""

    where: str
    version: int
    migrations: tuple[MigrationInfo, ...]

    @property
    def latest(self) -> int:
        return self.migrations[-1].version


def require_queue(config: Config) -> None:
    """Raise StorageError if the configured queue does not exist: a SQLite file that is not
    there, or a PostgreSQL schema that holds no queue (opening either would create it). A
    remote queue (``backend = "http"``) is the server's to check."""
    if config.queue.backend == "sqlite":
        from actors.queue.sqlite import schema as sqlite_schema

        sqlite_schema.require_queue_file(config.queue.path)
    elif config.queue.backend == "postgres":
        from actors.queue.postgres import schema as postgres_schema

        async def holds_a_queue(conn: _PgConnection, where: str) -> None:
            if await postgres_schema.current_version(conn) == 0:
                raise StorageError(
                    f"no queue at {where}: the schema holds none; check [queue].dsn's "
                    "search_path (`submit`, `enqueue`, `run` and `migrate up` create one)"
                )

        _on_postgres(config, holds_a_queue)


def status(config: Config) -> SchemaStatus:
    """The schema's version where the configured queue is (which must exist)."""
    if _is_postgres(config):
        from actors.queue.postgres import schema as postgres_schema

        async def read(conn: _PgConnection, where: str) -> SchemaStatus:
            version = await postgres_schema.current_version(conn)
            return _status(where, version, postgres_schema.MIGRATIONS)

        return _on_postgres(config, read)
    from actors.queue.sqlite import schema as sqlite_schema

    with _sqlite(config) as (path, conn):
        return _status(str(path), sqlite_schema.current_version(conn), sqlite_schema.MIGRATIONS)


def migrate_up(config: Config, to: int | None = None) -> list[int]:
    """Apply migrations up to ``to`` (the latest by default); the versions applied. Creates the
    queue if there is none."""
    if _is_postgres(config):
        from actors.queue.postgres import schema as postgres_schema

        async def up(conn: _PgConnection, where: str) -> list[int]:
            return await postgres_schema.migrate_up(conn, where, to)

        return _on_postgres(config, up)
    from actors.queue.sqlite import schema as sqlite_schema

    with _sqlite(config, create=True) as (path, conn):
        return sqlite_schema.migrate_up(conn, path, to)


def migrate_down(config: Config, to: int | None = None, *, force: bool = False) -> list[int]:
    """Undo migrations down to ``to`` (one below the current by default); the versions undone.
    Refuses to drop rows unless ``force``."""
    if _is_postgres(config):
        from actors.queue.postgres import schema as postgres_schema

        async def down(conn: _PgConnection, where: str) -> list[int]:
            version = await postgres_schema.current_version(conn)
            target = version - 1 if to is None else to
            return await postgres_schema.migrate_down(conn, where, max(target, 0), force=force)

        return _on_postgres(config, down)
    from actors.queue.sqlite import schema as sqlite_schema

    with _sqlite(config) as (path, conn):
        target = sqlite_schema.current_version(conn) - 1 if to is None else to
        return sqlite_schema.migrate_down(conn, path, max(target, 0), force=force)


def _status(where: str, version: int, migrations: Any) -> SchemaStatus:
    known = tuple(MigrationInfo(m.version, m.name) for m in migrations)
    return SchemaStatus(where=where, version=version, migrations=known)


def _is_postgres(config: Config) -> bool:
    """True for PostgreSQL, False for SQLite; a remote queue has no schema here."""
    if config.queue.backend == "sqlite":
        return False
    if config.queue.backend != "postgres":
        raise InvalidArgument(
            f"`migrate` changes the queue's own database, and [queue].backend = "
            f"{config.queue.backend!r} has none here: run it where the queue server runs"
        )
    return True


@contextlib.contextmanager
def _sqlite(config: Config, *, create: bool = False) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """The configured SQLite file, opened without migrating it; unless ``create``, only a file
    that exists."""
    from actors.queue.sqlite import schema as sqlite_schema

    path = Path(config.queue.path)
    opener = sqlite_schema.connect if create else sqlite_schema.open_existing
    conn = opener(path, durability=config.queue.durability)
    try:
        yield path, conn
    finally:
        conn.close()


def _on_postgres(config: Config, step: Callable[[_PgConnection, str], Awaitable[T]]) -> T:
    """Run ``step(conn, where)`` on one connection to the configured PostgreSQL schema, which
    must exist. asyncpg runs on asyncio only, whatever [runtime].backend says; these calls run
    no actor, so they run their own asyncio loop."""
    dsn = config.queue.dsn
    if not dsn:
        raise InvalidArgument('[queue].backend = "postgres" needs [queue].dsn = "postgresql://..."')
    password = config.secrets.pg_password.reveal() if config.secrets.pg_password else None

    async def work() -> T:
        import asyncpg

        from actors.queue.migrate import store_name

        where = store_name(dsn)
        kwargs: dict[str, object] = {"timeout": 10}
        if password is not None:
            kwargs["password"] = password
        try:
            conn = await asyncpg.connect(dsn, **kwargs)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StorageError(
                f"cannot connect to PostgreSQL at {where}: {exc}. Check [queue].dsn, that the "
                "server runs, and PGPASSWORD"
            ) from exc
        try:
            if await conn.fetchval("SELECT current_schema()") is None:
                raise StorageError(
                    f"{where}: the search_path names no schema that exists. Create it, or name "
                    "an existing one in [queue].dsn (?search_path=...)"
                )
            return await step(conn, where)
        finally:
            await conn.close()

    return anyio.run(work, backend="asyncio")
