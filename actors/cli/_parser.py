"""The argument parser: the global options, then each command group's commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from actors.cli import _config, _jobs, _run, _runs, _store

if TYPE_CHECKING:
    from actors.cli._common import Commands

__all__ = ["build_parser"]

#: Each adds one top-level command (and its actions), in the order ``--help`` lists them.
ADD_COMMANDS: tuple[Callable[[Commands], None], ...] = (
    _run.add_run,
    _jobs.add_submit,
    _config.add_config,
    _jobs.add_enqueue,
    _jobs.add_stats,
    _jobs.add_jobs,
    _runs.add_runs,
    _store.add_migrate,
    _store.add_store,
)


def build_parser() -> argparse.ArgumentParser:
    """Describe every command and its options; each sets ``run``, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="python -m actors",
        description="Durable document-processing jobs over a SQLite queue.",
    )
    parser.add_argument("--config", metavar="PATH", help="the TOML config file (default: found)")
    parser.add_argument(
        "--db", metavar="PATH", help="the queue's SQLite file (overrides the config)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.set_defaults(run=_run.cmd_run, until_idle=False)  # no command: run the system
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in ADD_COMMANDS:
        add(commands)
    return parser
