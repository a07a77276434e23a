"""``run`` (also what no command does): the pipeline in this process until a signal or idle."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import TYPE_CHECKING

import anyio

from actors.cli._common import EXIT_SYSTEM_FAILED, load_effective_config

if TYPE_CHECKING:
    from actors.cli._common import Commands

__all__ = ["add_run", "cmd_run"]


def add_run(commands: Commands) -> None:
    """``run [--until-idle]``."""
    run = commands.add_parser("run", help="run the pipeline until SIGINT/SIGTERM (the default)")
    run.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once no job is pending or leased, printing each run's summary",
    )
    run.set_defaults(run=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from actors.cli._checks import check_before_start
    from actors.log import configure_logging
    from actors.service import serve
    from actors.system import SystemFailed

    config = load_effective_config(args)
    check_before_start(config)  # a missing secret, a busy port, a wrong token: one line, exit 1
    configure_logging(config.log.level, config.log.format)
    try:
        return anyio.run(
            functools.partial(serve, config, until_idle=args.until_idle),
            backend=config.runtime.backend,
        )
    except SystemFailed as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SYSTEM_FAILED  # a process manager should restart us
