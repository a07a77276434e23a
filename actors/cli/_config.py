"""``config check`` and ``config show``: the effective config, checked or printed."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from actors.cli._common import EXIT_FAILED, EXIT_OK, load_effective_config

if TYPE_CHECKING:
    from actors.cli._common import Commands

__all__ = ["add_config"]


def add_config(commands: Commands) -> None:
    """``config check|show``."""
    config = commands.add_parser("config", help="check the config file or show it (secrets masked)")
    actions = config.add_subparsers(title="config commands", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="load the config, check what its kinds need (secrets) and reach a PostgreSQL or "
        "remote queue (its schema, the token), changing nothing; one line per problem",
    )
    check.set_defaults(run=cmd_config_check)
    actions.add_parser("show", help="print the effective config as TOML").set_defaults(
        run=cmd_config_show
    )


def cmd_config_check(args: argparse.Namespace) -> int:
    from actors.cli._checks import check_config, check_queue
    from actors.errors import ActorsError

    config = load_effective_config(args)
    problems: list[str] = []
    found = ""
    # Each check on its own: every problem is reported, one line each, in one go.
    for check in (check_config, check_queue):  # the kinds' needs; then the queue, changed not
        try:
            found = check(config) or found
        except ActorsError as exc:
            problems.append(str(exc))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_FAILED
    print(f"{config.source or 'embedded defaults'}: ok" + (f"; queue {found}" if found else ""))
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    from actors.config import dump_config

    print(dump_config(load_effective_config(args)), end="")
    return EXIT_OK
