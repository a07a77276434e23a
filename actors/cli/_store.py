"""The queue's storage: ``migrate status|up|down`` (its schema) and ``store ...`` (copying it
between SQLite, PostgreSQL and JSON lines, with `actors.queue.migrate`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from actors.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    load_effective_config,
    print_table,
    run_on_asyncio,
)
from actors.cli._progress import REFRESH_SECONDS, Progress

if TYPE_CHECKING:
    from actors.cli._common import Commands

__all__ = ["add_migrate", "add_store"]

STORE_HELP = "a SQLite file path, or postgresql://user@host/db?search_path=SCHEMA"

# Conflicts printed one per line at most; the rest are counted.
SHOWN_CONFLICTS = 20


# --- migrate: the schema of the configured queue ------------------------------------------------


def add_migrate(commands: Commands) -> None:
    """``migrate status|up|down``."""
    migrate = commands.add_parser(
        "migrate", help="show or change the queue's schema version ([queue].backend's database)"
    )
    steps = migrate.add_subparsers(title="migrate commands", required=True, metavar="ACTION")
    steps.add_parser("status", help="print the schema's version and each migration").set_defaults(
        run=cmd_migrate_status
    )
    up = steps.add_parser("up", help="apply migrations (to the latest by default)")
    up.add_argument("--to", type=int, metavar="VERSION", help="default: the latest")
    up.set_defaults(run=cmd_migrate_up)
    down = steps.add_parser("down", help="undo migrations (one by default); refuses to drop rows")
    down.add_argument("--to", type=int, metavar="VERSION", help="default: one below the current")
    down.add_argument("--force", action="store_true", help="drop rows if a migration must")
    down.set_defaults(run=cmd_migrate_down)


def cmd_migrate_status(args: argparse.Namespace) -> int:
    from actors.queue import admin

    schema = admin.status(load_effective_config(args))
    print(
        f"{schema.where}: schema version {schema.version} (this actors knows up to {schema.latest})"
    )
    for migration in schema.migrations:
        mark = "applied" if migration.version <= schema.version else "pending"
        print(f"  {migration.version:>3}  {migration.name:<12} {mark}")
    return EXIT_OK


def cmd_migrate_up(args: argparse.Namespace) -> int:
    from actors.queue import admin

    return report_steps("applied", admin.migrate_up(load_effective_config(args), args.to))


def cmd_migrate_down(args: argparse.Namespace) -> int:
    from actors.queue import admin

    undone = admin.migrate_down(load_effective_config(args), args.to, force=args.force)
    return report_steps("undid", undone)


def report_steps(verb: str, versions: Sequence[int]) -> int:
    """Print the migrations applied or undone ("applied [1, 2]"), or that there were none."""
    print(f"{verb} {list(versions)}" if versions else f"nothing to {STEP_NOUNS[verb]}")
    return EXIT_OK


STEP_NOUNS = {"applied": "apply", "undid": "undo"}


# --- store: copy a queue between SQLite, PostgreSQL and JSON lines ------------------------------


def add_store(commands: Commands) -> None:
    """``store migrate status|run|rollback``, ``store export``, ``store import``."""
    stores = commands.add_parser("store", help="copy the queue between stores, verified")
    actions = stores.add_subparsers(title="store commands", required=True, metavar="ACTION")
    migrate = actions.add_parser("migrate", help="compare, copy or un-copy one store into another")
    steps = migrate.add_subparsers(title="migrate actions", required=True, metavar="STEP")
    for name, help_text, handler in (
        (
            "status",
            "what is in each store and what differs (reads only); exits 1 unless complete",
            cmd_store_status,
        ),
        ("run", "copy every run and job; verify each row; safe to run again", cmd_store_run),
        (
            "rollback",
            "delete from the target what runs from this source copied",
            cmd_store_rollback,
        ),
    ):
        step = steps.add_parser(name, help=help_text)
        step.add_argument("--from", dest="source", required=True, metavar="STORE", help=STORE_HELP)
        step.add_argument("--to", dest="target", required=True, metavar="STORE", help=STORE_HELP)
        step.add_argument("--batch", type=int, default=500, help="rows per transaction")
        if name == "run":
            step.add_argument(
                "--convert-leases",
                action="store_true",
                help="copy jobs under a live lease as pending instead of refusing",
            )
        if name in ("run", "rollback"):
            step.add_argument(
                "--force",
                action="store_true",
                help="also "
                + ("overwrite" if name == "run" else "delete")
                + " rows that changed in the target after they were copied (its workers' "
                "progress is lost); without it they are reported as conflicts and left alone",
            )
        step.set_defaults(run=handler)
    export = actions.add_parser("export", help="write every run and job as JSON lines")
    export.add_argument("--from", dest="source", required=True, metavar="STORE", help=STORE_HELP)
    export.add_argument("--out", required=True, type=Path, metavar="FILE.jsonl")
    export.set_defaults(run=cmd_store_export)
    load = actions.add_parser("import", help="copy a JSON lines export into a store (a run)")
    load.add_argument("--in", dest="source", required=True, metavar="FILE.jsonl")
    load.add_argument("--to", dest="target", required=True, metavar="STORE", help=STORE_HELP)
    load.add_argument("--batch", type=int, default=500, help="rows per transaction")
    load.add_argument(
        "--force",
        action="store_true",
        help="also overwrite rows that changed in the target after they were copied",
    )
    load.set_defaults(run=cmd_store_run, convert_leases=False)


def cmd_store_status(args: argparse.Namespace) -> int:
    from actors.queue import migrate

    async def work() -> int:
        # Reads only: a target that does not exist yet reads as empty and is not created.
        async with (
            migrate.open_store(args.source, read_only=True, must_exist=True) as source,
            migrate.open_store(args.target, read_only=True) as target,
        ):
            found = await migrate.status(source, target, now=_now(), batch=args.batch)
        statuses = ("pending", "leased", "done", "failed", "cancelled", "runs")
        print_table(
            ("store", *statuses),
            [
                (side, *(counts.get(s, 0) for s in statuses))
                for side, counts in (("from", found.source), ("to", found.target))
            ],
            None,
        )
        if not target.exists:
            print(f"the target {target.name} does not exist yet: nothing was copied")
        for kind in ("run", "job"):
            print(
                f"{kind}s: {found.identical[kind]} identical, {found.missing[kind]} missing, "
                f"{found.different[kind]} changed in the source since copied, "
                f"{found.conflicts[kind]} changed in the target since copied (conflicts), "
                f"{found.foreign[kind]} different and not copied from this source; "
                f"{found.copied[kind]} copied by runs from this source"
            )
        if found.live_leases:
            print(f"{found.live_leases} job(s) of the source are under a live lease")
        if found.complete:
            print("complete: the target holds every row of the source")
            return EXIT_OK
        if any(found.conflicts.values()):
            print(
                "conflicts: the target changed rows after they were copied; `store migrate "
                "run` leaves them alone, `store migrate run --force` replaces them"
            )
        print("incomplete: `store migrate run` copies what is missing or changed in the source")
        return EXIT_FAILED

    return run_on_asyncio(work)


def cmd_store_run(args: argparse.Namespace) -> int:
    from actors.queue import migrate

    async def work() -> int:
        async with (
            migrate.open_store(args.source, must_exist=True) as source,
            migrate.open_store(args.target) as target,
        ):
            counts = await source.counts()
            total = sum(counts.values())  # runs and jobs: every row to copy
            report = migrate.Report()
            with Progress("copy", unit="rows") as progress:

                async def show() -> None:
                    while True:
                        copied = sum(report.written.values()) + sum(report.identical.values())
                        failed = len(report.errors) + len(report.conflicts)
                        progress.update(copied, failed, max(0, total - copied - failed))
                        await anyio.sleep(REFRESH_SECONDS)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(show)
                    await migrate.run(
                        source,
                        target,
                        now=_now(),
                        batch=args.batch,
                        convert_leases=args.convert_leases,
                        force=args.force,
                        report=report,
                    )
                    tg.cancel_scope.cancel()
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
        if report.conflicts:
            print_conflicts(report.conflicts, "store migrate run --force")
        print(
            f"runs: {report.written['run']} written, {report.identical['run']} already there; "
            f"jobs: {report.written['job']} written, {report.identical['job']} already there"
            + (
                f"; {report.converted_leases} live lease(s) copied as pending"
                if report.converted_leases
                else ""
            )
            + (
                f"; {report.forced} row(s) that changed in the target replaced (--force)"
                if report.forced
                else ""
            )
            + (f"; {len(report.conflicts)} conflict(s) left alone" if report.conflicts else "")
            + (
                f"; {len(report.errors)} row(s) failed (above); run it again after fixing"
                if report.errors
                else "; every row verified"
            )
        )
        return EXIT_FAILED if report.errors or report.conflicts else EXIT_OK

    return run_on_asyncio(work)


def cmd_store_rollback(args: argparse.Namespace) -> int:
    from actors.queue import migrate

    async def work() -> int:
        source = migrate.store_name(args.source)  # only its name: it need not exist any more
        async with migrate.open_store(args.target, must_exist=True) as target:
            report = await migrate.rollback(source, target, force=args.force)
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
        if report.conflicts:
            print_conflicts(report.conflicts, "store migrate rollback --force")
        print(
            f"deleted {report.written['job']} job(s) and {report.written['run']} run(s) "
            f"that were copied from {source}"
        )
        return EXIT_FAILED if report.errors or report.conflicts else EXIT_OK

    return run_on_asyncio(work)


def cmd_store_export(args: argparse.Namespace) -> int:
    from actors.queue import migrate

    async def work() -> int:
        async with migrate.open_store(args.source, must_exist=True) as source:
            written = await migrate.export_jsonl(source, args.out)
        print(f"exported {written['run']} run(s) and {written['job']} job(s) to {args.out}")
        return EXIT_OK

    return run_on_asyncio(work)


def print_conflicts(conflicts: Sequence[object], flag: str) -> None:
    """Name the first conflicts on stderr, then how many there are and what ``flag`` does."""
    for conflict in conflicts[:SHOWN_CONFLICTS]:
        print(f"conflict: {conflict}", file=sys.stderr)
    if len(conflicts) > SHOWN_CONFLICTS:
        print(f"conflict: ... and {len(conflicts) - SHOWN_CONFLICTS} more", file=sys.stderr)
    print(
        f"{len(conflicts)} row(s) changed in the target after they were copied (above) and were "
        f"left alone: the target has moved on since. `{flag}` overrides this, losing what "
        "changed there",
        file=sys.stderr,
    )


def _now() -> float:
    from supervisors.clock import SystemClock

    return SystemClock().time()
