"""What the command groups share: exit codes, the effective config, opening the queue, printing."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

import anyio
import msgspec

if TYPE_CHECKING:
    from actors.config import Config
    from actors.queue.base import Queue

    #: What ``add_subparsers`` returns: each group adds its commands to it.
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUN_FAILED",
    "EXIT_SYSTEM_FAILED",
    "EXIT_USAGE",
    "Command",
    "QueueCommand",
    "emit",
    "load_effective_config",
    "print_table",
    "require_queue",
    "run_on_asyncio",
    "with_queue",
]

# Exit codes: one scheme for every command, listed in ``--help`` and the README.
EXIT_OK = 0
#: A usage or config error, or any other error printed on stderr as ``error: ...`` (a missing
#: secret, a busy port, a wrong token, a corrupt database): fix it and run again. Also an
#: operation short of complete that is no run (`store migrate status`, `store migrate run`).
EXIT_FAILED = 1
#: The same code under the name a usage error goes by: argparse's own 2 is replaced by it, so
#: that 2 means one thing.
EXIT_USAGE = EXIT_FAILED
#: A run with failed jobs (``run --until-idle``, ``runs watch``): the command did its work.
EXIT_RUN_FAILED = 2
#: EX_SOFTWARE (sysexits.h): the actor system gave up; a process manager should restart it.
EXIT_SYSTEM_FAILED = 70
#: 128 + SIGINT: stopped from the keyboard before the command finished.
EXIT_INTERRUPTED = 130

#: A command: the parsed arguments in, the exit code out.
Command: TypeAlias = Callable[[argparse.Namespace], int]
#: A command that works on the configured queue, whichever backend holds it.
QueueCommand: TypeAlias = Callable[[argparse.Namespace, "Queue"], Awaitable[int]]


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
    """Raise StorageError if the configured queue does not exist (`actors.queue.admin`)."""
    from actors.queue import admin

    admin.require_queue(config)


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
