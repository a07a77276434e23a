"""``run`` (also what no command does): the pipeline in this process until a signal or idle."""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from typing import TYPE_CHECKING

import anyio

from actors.cli._common import EXIT_SYSTEM_FAILED, load_effective_config
from actors.cli._progress import Progress, log_stream

if TYPE_CHECKING:
    from actors.cli._common import Commands

__all__ = ["add_run", "cmd_run"]


def add_run(commands: Commands) -> None:
    """``run [--until-idle]``."""
    run = commands.add_parser(
        "run",
        help="run the pipeline until SIGINT/SIGTERM (the default); on a terminal, a status line "
        "(done, failed, pending, rate) every ACTORS_PROGRESS_SECONDS while jobs move",
    )
    run.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once no job is runnable (retries in their backoff are waited for), printing "
        "each run's summary; exit code 2 if a run has failed jobs",
    )
    run.add_argument(
        "--wait-scheduled",
        action="store_true",
        help="with --until-idle, also wait for jobs enqueued with a delay (default: count them)",
    )
    run.set_defaults(run=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from actors.cli._checks import check_before_start
    from actors.log import configure_logging
    from actors.service import serve
    from actors.system import SystemFailed

    config = load_effective_config(args)
    check_before_start(config)  # a missing secret, a busy port, a wrong token: one line, exit 1
    wait_scheduled = getattr(args, "wait_scheduled", False)
    try:
        if not args.until_idle:
            configure_logging(config.log.level, config.log.format)
            # A status line now and then on a terminal; at debug level a log event elsewhere.
            status = Progress.for_service("run", debug=config.log.level == "debug")
            with status or contextlib.nullcontext():
                return anyio.run(
                    functools.partial(serve, config, progress=status.update if status else None),
                    backend=config.runtime.backend,
                )
        # On a terminal with rich, log lines are printed above the progress bar, not through it.
        configure_logging(config.log.level, config.log.format, stream=log_stream())
        with Progress("run") as progress:
            return anyio.run(
                functools.partial(
                    serve,
                    config,
                    until_idle=True,
                    wait_scheduled=wait_scheduled,
                    progress=progress.update,
                    on_idle=progress.close,
                ),
                backend=config.runtime.backend,
            )
    except SystemFailed as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SYSTEM_FAILED  # a process manager should restart us
