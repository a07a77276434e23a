"""What the command groups share: exit codes, the effective config, opening the queue, printing."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import msgspec

from actors.errors import InvalidArgument, StorageError

if TYPE_CHECKING:
    from actors.config import Config
    from actors.queue.base import Queue

    #: What ``add_subparsers`` returns: each group adds its commands to it.
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SYSTEM_FAILED",
    "Command",
    "PgConnection",
    "PgStep",
    "QueueCommand",
    "emit",
    "load_effective_config",
    "print_table",
    "require_queue",
    "run_on_asyncio",
    "run_on_postgres",
    "with_queue",
]

# Exit codes. A usage error exits with 2 (argparse's) before any command runs.
EXIT_OK = 0
#: An error, printed on stderr as ``error: ...``; or an outcome short of what was asked: a run
#: that failed, rows that were not copied, a store copy that is not complete.
EXIT_FAILED = 1
#: EX_SOFTWARE (sysexits.h): the actor system failed; a process manager should restart it.
EXIT_SYSTEM_FAILED = 70
#: 128 + SIGINT: stopped from the keyboard before the command finished.
EXIT_INTERRUPTED = 130

#: A command: the parsed arguments in, the exit code out.
Command: TypeAlias = Callable[[argparse.Namespace], int]
#: A command that works on the configured queue, whichever backend holds it.
QueueCommand: TypeAlias = Callable[[argparse.Namespace, "Queue"], Awaitable[int]]
#: An ``asyncpg.Connection``: asyncpg ships no type hints.
PgConnection: TypeAlias = Any
#: Work on one PostgreSQL connection: ``step(conn, where)`` returns the exit code; ``where``
#: names the schema for messages.
PgStep: TypeAlias = Callable[[PgConnection, str], Awaitable[int]]


def load_effective_config(args: argparse.Namespace) -> Config:
    """The config file and the environment, with ``--db`` overriding ``[queue].path``."""
    from actors.config import load_config  # imported here: only commands that need it pay

    config = load_config(args.config)
    if args.db:
        config = msgspec.structs.replace(
            config, queue=msgspec.structs.replace(config.queue, path=args.db)
        )
    return config


def with_queue(command: QueueCommand, *, create: bool = False) -> Command:
    """Run ``command`` with the configured queue open, on the configured async backend.

    Unless ``create``, the queue must exist already (a SQLite file, a PostgreSQL schema holding
    a queue): a command that reads (or changes what is there) reports a mistyped path instead of
    creating an empty queue.
    """

    def run(args: argparse.Namespace) -> int:
        from actors.queue.factory import open_queue

        config = load_effective_config(args)
        if not create:
            require_queue(config)

        async def open_and_run() -> int:
            # Whichever [queue].backend is configured: SQLite, PostgreSQL or a remote server.
            async with open_queue(config) as queue:
                return await command(args, queue)

        return anyio.run(open_and_run, backend=config.runtime.backend)

    return run


def require_queue(config: Config) -> None:
    """Raise StorageError if the configured queue does not exist: a SQLite file that is not
    there, or a PostgreSQL schema that holds no queue (opening either would create it)."""
    if config.queue.backend == "sqlite":
        from actors.queue.sqlite import _schema as sqlite_schema

        sqlite_schema.require_queue_file(config.queue.path)
    elif config.queue.backend == "postgres":
        from actors.queue.postgres import _schema as postgres_schema

        async def holds_a_queue(conn: PgConnection, where: str) -> int:
            if await postgres_schema.current_version(conn) == 0:
                raise StorageError(
                    f"no queue at {where}: the schema holds none; check [queue].dsn's "
                    "search_path (`submit`, `enqueue`, `run` and `migrate up` create one)"
                )
            return EXIT_OK

        run_on_postgres(config, holds_a_queue)


def run_on_postgres(config: Config, step: PgStep) -> int:
    """Run ``step(conn, where)`` on one connection to the configured PostgreSQL schema, which
    must exist; return its exit code."""
    dsn = config.queue.dsn
    if not dsn:
        raise InvalidArgument('[queue].backend = "postgres" needs [queue].dsn = "postgresql://..."')
    password = config.secrets.pg_password.reveal() if config.secrets.pg_password else None

    async def work() -> int:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

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

    return run_on_asyncio(work)


def run_on_asyncio(work: Callable[[], Awaitable[int]]) -> int:
    """Run ``work`` on asyncio whatever [runtime].backend says: asyncpg runs on asyncio only,
    and the commands that use it directly run no actor."""
    return anyio.run(work, backend="asyncio")


def emit(value: object) -> None:
    """Print ``value`` as indented JSON on stdout."""
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def print_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], next_cursor: str | None
) -> None:
    """Print rows in aligned columns, then how to get the next page if there is one."""
    cells = [list(map(str, header))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if next_cursor:
        print(f"more: --cursor {next_cursor}")
