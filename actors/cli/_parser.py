"""The argument parser: the global options, then each command group's commands.

The global options (``--config``, ``--db``, ``--debug``) are accepted before or after the
command: every command's parser inherits them from one parent parser whose defaults are
``SUPPRESS``, so a command's copy sets the option only when it is given there and never
overwrites a value given before the command. A usage error is one line on stderr and exits
with 1 (`EXIT_USAGE`), with a "did you mean" for a mistyped command.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, cast

from actors.cli import _config, _jobs, _queue, _run, _runs, _schedules, _store
from actors.cli._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_SYSTEM_FAILED,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    from actors.cli._common import Commands

__all__ = ["build_parser", "did_you_mean"]

PROG = "python -m actors"

#: Each adds one top-level command (and its actions), in the order ``--help`` lists them.
ADD_COMMANDS: tuple[Callable[[Commands], None], ...] = (
    _run.add_run,
    _jobs.add_submit,
    _config.add_config,
    _jobs.add_enqueue,
    _jobs.add_stats,
    _jobs.add_jobs,
    _queue.add_queue,
    _runs.add_runs,
    _schedules.add_schedules,
    _store.add_migrate,
    _store.add_store,
)

EPILOG = f"""\
global options go before or after the command:
  {PROG} run --config actors.toml   and   {PROG} --config actors.toml run

exit codes:
  {EXIT_OK:<4} ok
  {EXIT_FAILED:<4} an error, printed as one line "error: ...": usage, config, a start-up check
       (a missing secret, a busy port, a wrong token, a full disk, a damaged database) or
       another; also `store migrate status` while the target is incomplete
  {EXIT_RUN_FAILED:<4} a run failed: the command worked, but jobs of its runs failed
  {EXIT_SYSTEM_FAILED:<4} the actor system gave up (restarts exhausted), or stopped at once on an
       error no restart can fix (a token refused mid-run, a full disk), printed as one line
  {EXIT_INTERRUPTED:<4} interrupted (Ctrl-C)
"""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when one of ``choices`` is close to ``word``, else ``""``."""
    import difflib  # imported here: only a mistake pays for it

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """The options every command accepts; ``default`` is the value when none is given."""
    parser.add_argument(
        "--config", metavar="PATH", default=default, help="the TOML config file (default: found)"
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=default,
        help="the queue's SQLite file (overrides the config)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="show tracebacks on errors",
    )


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line, exit code 1 and "did you mean"."""

    def error(self, message: str) -> NoReturn:
        unrecognized = "unrecognized arguments: "
        if message.startswith(unrecognized):
            first = message.removeprefix(unrecognized).split()[0].partition("=")[0]
            if first.startswith("--"):
                message += did_you_mean(first, self._all_options())
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")

    def _all_options(self) -> set[str]:
        """The long options of this parser and of every command under it."""
        options: set[str] = set()
        for action in self._actions:
            options.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    options |= parser._all_options() if isinstance(parser, Parser) else set()
        return options

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse (before 3.14) names the choices but suggests none.
        if action.choices is not None and value not in action.choices:
            choices = [str(choice) for choice in action.choices]
            raise argparse.ArgumentError(
                action,
                f"invalid choice: {value!r}{did_you_mean(str(value), choices)} "
                f"(choose from {', '.join(map(repr, choices))})",
            )


class CommandParser(Parser):
    """A command's parser: the global options too, set only when given after the command."""

    _global_options: argparse.ArgumentParser | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if CommandParser._global_options is None:
            parent = argparse.ArgumentParser(add_help=False)
            add_global_options(parent, argparse.SUPPRESS)
            CommandParser._global_options = parent
        kwargs["parents"] = [*kwargs.get("parents", ()), CommandParser._global_options]
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """Describe every command and its options; each sets ``run``, the function that runs it."""
    parser = Parser(
        prog=PROG,
        description="Durable document-processing jobs over a SQLite queue.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_options(parser, None)
    parser.set_defaults(run=_run.cmd_run, until_idle=False)  # no command: run the system
    # Nested commands (``jobs list``) get the same class: add_subparsers defaults to type(self).
    # A CommandParser is an ArgumentParser; the groups need no more than that.
    commands = cast(
        "Commands",
        parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=CommandParser),
    )
    for add in ADD_COMMANDS:
        add(commands)
    return parser
