"""The command line, ``python -m actors``: run, submit, jobs, runs, config, migrate, store.

`_parser` builds the parser from the command groups, one module each: `_run` (``run``),
`_jobs` (``submit``, ``enqueue``, ``stats``, ``jobs``), `_runs` (``runs``, with `_results`),
`_config` (``config``) and `_store` (``migrate``, ``store``); `_common` holds what they share.
A command imports what only it needs inside its function, so ``--help`` and the light
commands start without loading the pipeline, PostgreSQL's driver or Gemini's client.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from actors.cli._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from actors.cli._parser import build_parser
from actors.errors import ActorsError, unwrap

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code (see ``--help``'s epilog)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BaseException as exc:
        # A task group wraps even one failure in a group: report the failure, not the group.
        error = unwrap(exc)
        if isinstance(error, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if isinstance(error, BrokenPipeError):
            # The reader went away (`... | head`): not an error; keep Python from complaining.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        if isinstance(error, ActorsError) and not args.debug:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILED
        raise
