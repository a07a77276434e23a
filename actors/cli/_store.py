"""The queue's storage: ``migrate status|up|down`` (its schema) and ``store ...`` (copying it
between SQLite, PostgreSQL and JSON lines, with `actors.queue.migrate`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from actors.bounds import DEFAULT_MAX_PAYLOAD_BYTES
from actors.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    emit,
    load_effective_config,
    print_table,
    require_queue,
    run_on_asyncio,
)
from actors.cli._progress import REFRESH_SECONDS, Progress
from actors.errors import InvalidArgument, StorageError

if TYPE_CHECKING:
    from actors.cli._common import Commands
    from actors.importers import Report

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
    export = actions.add_parser("export", help="write every run, job and schedule as JSON lines")
    export.add_argument("--from", dest="source", required=True, metavar="STORE", help=STORE_HELP)
    export.add_argument("--out", required=True, type=Path, metavar="FILE.jsonl")
    export.set_defaults(run=cmd_store_export)
    load = actions.add_parser(
        "import",
        help="copy a JSON lines export into a store, or import a Cloudflare D1 or KV dump into "
        "the queue (status, run, rollback)",
    )
    load.add_argument(
        "step",
        nargs="?",
        default="run",
        choices=("status", "run", "rollback"),
        help="for --from-d1/--from-kv: compare (reads only; exits 1 until complete), import "
        "and verify (the default; safe to run again), or remove what the import created",
    )
    sources = load.add_mutually_exclusive_group(required=True)
    sources.add_argument("--in", dest="source", metavar="FILE.jsonl", help="a `store export`")
    sources.add_argument(
        "--from-d1",
        dest="d1",
        type=Path,
        metavar="FILE",
        help="the D1 jobs queue: `wrangler d1 export` SQL or `wrangler d1 execute --json` output",
    )
    sources.add_argument(
        "--from-kv",
        dest="kv",
        type=Path,
        metavar="FILE",
        help="the KV task queue: `wrangler kv` bulk JSON ([{key, value}, ...])",
    )
    load.add_argument("--to", dest="target", metavar="STORE", help=f"with --in: {STORE_HELP}")
    load.add_argument("--batch", type=int, default=500, help="rows per transaction")
    load.add_argument(
        "--force",
        action="store_true",
        help="also overwrite (with --in) or, on rollback, delete rows that changed after they "
        "were copied or imported",
    )
    load.add_argument("--json", action="store_true", help="print the report as JSON")
    load.add_argument(
        "--tenant-id",
        default=None,
        help="the tenant of KV tasks whose metadata names none (default: kv)",
    )
    load.add_argument(
        "--run-id", default=None, help="the run of KV tasks whose metadata names none"
    )
    load.add_argument(
        "--cross-tenant-keys",
        action="store_true",
        help="import jobs whose key lies outside their tenant's prefix (as an admin's "
        "cross-tenant jobs) instead of reporting them",
    )
    load.set_defaults(run=cmd_store_import, convert_leases=False)


def cmd_store_status(args: argparse.Namespace) -> int:
    from actors.queue import migrate

    async def work() -> int:
        # Reads only: a target that does not exist yet reads as empty and is not created.
        async with (
            migrate.open_store(args.source, read_only=True, must_exist=True) as source,
            migrate.open_store(args.target, read_only=True) as target,
        ):
            found = await migrate.status(source, target, now=_now(), batch=args.batch)
        statuses = ("pending", "leased", "done", "failed", "cancelled", "runs", "schedules")
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
        for kind in migrate.KINDS:
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
            total = sum(counts.values())  # runs, jobs and schedules: every row to copy
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
            f"jobs: {report.written['job']} written, {report.identical['job']} already there; "
            f"schedules: {report.written['schedule']} written, "
            f"{report.identical['schedule']} already there"
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
            f"deleted {report.written['job']} job(s), {report.written['run']} run(s) and "
            f"{report.written['schedule']} schedule(s) that were copied from {source}"
        )
        return EXIT_FAILED if report.errors or report.conflicts else EXIT_OK

    return run_on_asyncio(work)


def cmd_store_import(args: argparse.Namespace) -> int:
    """``store import``: a JSON lines export (a `store migrate run`), or a Cloudflare dump."""
    if args.source is not None:
        if args.step != "run" or args.target is None:
            raise InvalidArgument(
                "`store import --in FILE.jsonl` copies an export: it needs --to STORE and no "
                "step (status and rollback are `store migrate status|rollback --from FILE.jsonl`)"
            )
        return cmd_store_run(args)
    return import_dump(args)


def import_dump(args: argparse.Namespace) -> int:
    """Import a D1 or KV dump into the configured queue (`actors.importers`)."""
    from actors import importers
    from actors.queue.base import OwnedQueue
    from actors.queue.factory import open_queue

    kind: importers.Kind = "d1" if args.d1 is not None else "kv"
    path: Path = args.d1 if args.d1 is not None else args.kv
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the dump {str(path)!r}: {exc.strerror}") from None
    source = importers.read_dump(
        kind,
        data,
        tenant_id=args.tenant_id or importers.DEFAULT_TENANT,
        run_id=args.run_id or importers.DEFAULT_RUN,
        cross_tenant_keys=args.cross_tenant_keys,
    )
    config = load_effective_config(args)
    if config.queue.backend == "http":
        raise InvalidArgument(
            "`store import` writes into the queue's own database, and [queue].backend = "
            '"http" has none here: run it where the queue server runs, or POST the dump to '
            "the server's /api/migrate/run"
        )
    if args.step == "status":
        try:
            require_queue(config)
        except StorageError as exc:  # reads only: a queue not there yet holds none of it
            print(f"note: {exc}", file=sys.stderr)
            report = importers.status_of_nothing(
                source, max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES
            )
            return print_import(report, str(path), as_json=args.json)
    elif args.step == "rollback":
        require_queue(config)

    async def work() -> int:
        async with open_queue(config) as queue:
            assert isinstance(queue, OwnedQueue)  # SQLite or PostgreSQL: refused "http" above
            if args.step == "status":
                report = await importers.status(
                    queue, source, batch=args.batch, max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES
                )
            elif args.step == "rollback":
                report = await importers.rollback(queue, source, force=args.force, batch=args.batch)
            else:
                report = importers.new_report(source, "run")
                with Progress("import", unit="items") as progress:

                    async def show() -> None:
                        while True:
                            settled = report.done - len(report.errors)
                            progress.update(
                                settled, len(report.errors), max(0, report.items - report.done)
                            )
                            await anyio.sleep(REFRESH_SECONDS)

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(show)
                        await importers.run(
                            queue,
                            source,
                            batch=args.batch,
                            max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
                            report=report,
                        )
                        tg.cancel_scope.cancel()
        return print_import(report, str(path), as_json=args.json)

    return anyio.run(work, backend=config.runtime.backend)


def print_import(report: Report, name: str, *, as_json: bool) -> int:
    """Print an import's report (text, or JSON on stdout); the exit code it calls for."""
    failed = bool(report.errors or report.conflicts)
    if report.action == "status":
        failed = failed or bool(report.missing)
    if as_json:
        from actors.importers import report_json

        emit(report_json(report))
        return EXIT_FAILED if failed else EXIT_OK
    for problem in report.errors[:SHOWN_CONFLICTS]:
        print(f"error: {problem.item}: {problem.message}", file=sys.stderr)
    if len(report.errors) > SHOWN_CONFLICTS:
        print(f"error: ... and {len(report.errors) - SHOWN_CONFLICTS} more", file=sys.stderr)
    for problem in report.conflicts[:SHOWN_CONFLICTS]:
        print(f"conflict: {problem.item}: {problem.message}", file=sys.stderr)
    if len(report.conflicts) > SHOWN_CONFLICTS:
        print(f"conflict: ... and {len(report.conflicts) - SHOWN_CONFLICTS} more", file=sys.stderr)
    kind = report.source.upper()
    dropped = f"; {report.dropped_leases} lease(s) of the old system dropped" * bool(
        report.dropped_leases
    )
    if report.action == "status":
        print(
            f"{name}: {report.items} {kind} item(s): {report.imported} imported as the dump has "
            f"them, {report.missing} not imported yet, {len(report.conflicts)} different "
            f"(conflicts), {len(report.errors)} malformed{dropped}"
        )
        print("complete" if not failed else "incomplete: `store import ... run` imports the rest")
    elif report.action == "run":
        print(
            f"{name}: {report.migrated} job(s) imported and verified, {report.imported} already "
            f"there, {len(report.conflicts)} conflict(s) left alone, {len(report.errors)} "
            f"error(s){dropped}"
            + ("; every item verified" if not failed else "; fix the errors and run it again")
        )
    else:
        print(
            f"{name}: {report.removed} imported job(s) removed"
            + (f" ({report.forced} changed since, --force)" if report.forced else "")
            + f", {report.absent} not in the queue, {len(report.conflicts)} kept because they "
            "changed since the import" + (" (--force removes them)" if report.conflicts else "")
        )
    return EXIT_FAILED if failed else EXIT_OK


def cmd_store_export(args: argparse.Namespace) -> int:
    from actors.queue import migrate

    async def work() -> int:
        async with migrate.open_store(args.source, must_exist=True) as source:
            written = await migrate.export_jsonl(source, args.out)
        print(
            f"exported {written['run']} run(s), {written['job']} job(s) and "
            f"{written['schedule']} schedule(s) to {args.out}"
        )
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
