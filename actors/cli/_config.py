"""``config check`` and ``config show``: the effective config, checked or printed."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from actors.cli._common import EXIT_OK, load_effective_config

if TYPE_CHECKING:
    from actors.cli._common import Commands

__all__ = ["add_config"]


def add_config(commands: Commands) -> None:
    """``config check|show``."""
    config = commands.add_parser("config", help="check the config file or show it (secrets masked)")
    actions = config.add_subparsers(title="config commands", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="load the config, check what its kinds need (secrets); report a mistake"
    )
    check.set_defaults(run=cmd_config_check)
    actions.add_parser("show", help="print the effective config as TOML").set_defaults(
        run=cmd_config_show
    )


def cmd_config_check(args: argparse.Namespace) -> int:
    from actors.cli._checks import check_config

    config = load_effective_config(args)
    check_config(config)  # what the chosen kinds need: secrets, extras, tokens
    print(f"{config.source or 'embedded defaults'}: ok")
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    from actors.config import dump_config

    print(dump_config(load_effective_config(args)), end="")
    return EXIT_OK
