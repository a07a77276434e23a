"""The command line, ``python -m actors``: run, submit, jobs, runs, config, migrate, store."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actors import tenancy
from actors.errors import ActorsError, ForeignObjectKey, InvalidArgument
from actors.queue.sqlite import _schema as schema

if TYPE_CHECKING:
    from actors.config import Config
    from actors.queue.base import Queue

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, "Queue"], Awaitable[int]]  # any queue backend


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ActorsError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error; keep Python from complaining.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    """Describe every command and its options."""
    parser = argparse.ArgumentParser(
        prog="python -m actors",
        description="Durable document-processing jobs over a SQLite queue.",
    )
    parser.add_argument("--config", metavar="PATH", help="the TOML config file (default: found)")
    parser.add_argument(
        "--db", metavar="PATH", help="the queue's SQLite file (overrides the config)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.set_defaults(run=cmd_run, until_idle=False)  # no command: run the system
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", help="run the pipeline until SIGINT/SIGTERM (the default)")
    run.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once no job is pending or leased, printing each run's summary",
    )
    run.set_defaults(run=cmd_run)

    submit = commands.add_parser(
        "submit",
        help="store files and enqueue one job per file under a new run; print its id",
        description="Store each file as the object TENANT/RUN/NAME and enqueue one job for it. "
        "NAME is the file's base name; files that share a base name are named by as much of "
        "their path as tells them apart (a/report.txt, b/report.txt). A file given twice is "
        "submitted once.",
    )
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit.add_argument("--tenant-id", default="default")
    submit.add_argument("--run-id", help="default: a new run-... id")
    submit.set_defaults(run=cmd_submit)

    config = commands.add_parser("config", help="check the config file or show it (secrets masked)")
    config_commands = config.add_subparsers(
        title="config commands", required=True, metavar="ACTION"
    )
    config_commands.add_parser(
        "check", help="load the config and report the first mistake"
    ).set_defaults(run=cmd_config_check)
    config_commands.add_parser("show", help="print the effective config as TOML").set_defaults(
        run=cmd_config_show
    )

    enqueue = commands.add_parser("enqueue", help="add one job and print it as JSON")
    enqueue.add_argument("--run-id", required=True)
    enqueue.add_argument("--tenant-id", required=True)
    enqueue.add_argument("--r2-key", required=True)
    enqueue.add_argument("--payload", metavar="JSON", help="a JSON value stored with the job")
    enqueue.add_argument("--idempotency-key", metavar="KEY")
    enqueue.add_argument("--delay", type=float, default=0.0, metavar="SECONDS")
    enqueue.add_argument("--priority", type=int, default=0)
    enqueue.add_argument("--max-attempts", type=int)
    enqueue.add_argument(
        "--cross-tenant-key",
        action="store_true",
        help="allow a --r2-key outside the tenant's prefix '{tenant}/' (an operator's decision)",
    )
    enqueue.set_defaults(run=with_queue(cmd_enqueue, create=True))

    stats = commands.add_parser("stats", help="count jobs by status")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(run=with_queue(cmd_stats))

    jobs = commands.add_parser("jobs", help="list, show, requeue or purge jobs")
    job_commands = jobs.add_subparsers(title="jobs commands", required=True, metavar="ACTION")
    listing = job_commands.add_parser("list", help="list jobs, oldest first")
    listing.add_argument("--status", choices=["pending", "leased", "done", "failed"])
    listing.add_argument("--run-id")
    listing.add_argument("--tenant-id")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", help="the next_cursor printed by the previous page")
    listing.add_argument("--json", action="store_true", help="print one JSON page")
    listing.set_defaults(run=with_queue(cmd_jobs_list))
    show = job_commands.add_parser("show", help="print one job as JSON")
    show.add_argument("id", type=int)
    show.set_defaults(run=with_queue(cmd_jobs_show))
    requeue = job_commands.add_parser("requeue", help="return terminally failed jobs to pending")
    requeue.add_argument("ids", type=int, nargs="*", metavar="ID")
    requeue.add_argument("--all", action="store_true", help="every failed job")
    requeue.add_argument("--run-id")
    requeue.add_argument("--tenant-id")
    requeue.set_defaults(run=with_queue(cmd_jobs_requeue))
    purge = job_commands.add_parser("purge", help="delete finished jobs older than a retention")
    purge.add_argument(
        "--older-than", required=True, type=duration, metavar="AGE", help="e.g. 3600, 90m, 12h, 7d"
    )
    purge.set_defaults(run=with_queue(cmd_jobs_purge))

    runs = commands.add_parser("runs", help="list runs or show one")
    run_commands = runs.add_subparsers(title="runs commands", required=True, metavar="ACTION")
    run_list = run_commands.add_parser("list", help="list run summaries, oldest first")
    run_list.add_argument("--tenant-id")
    run_list.add_argument("--limit", type=int, default=50)
    run_list.add_argument("--cursor")
    run_list.set_defaults(run=with_queue(cmd_runs_list))
    run_show = run_commands.add_parser("show", help="print one run's summary")
    run_show.add_argument("run_id")
    run_show.add_argument("--json", action="store_true", help="print JSON")
    run_show.add_argument("--limit", type=int, default=20, help="jobs listed at most (20)")
    run_show.set_defaults(run=with_queue(cmd_runs_show))
    run_watch = run_commands.add_parser(
        "watch", help="follow a run until it ends: a progress bar, or JSON lines when piped"
    )
    run_watch.add_argument("run_id")
    run_watch.set_defaults(run=cmd_runs_watch)
    # -- results (actors/results.py) --
    run_export = run_commands.add_parser(
        "export", help="write one JSON line per job: analysis, chunks, embeddings, usage"
    )
    run_export.add_argument("run_id")
    run_export.add_argument("--output", "-o", type=Path, help="a file (default: stdout)")
    run_export.set_defaults(run=with_queue(cmd_runs_export))
    run_search = run_commands.add_parser(
        "search", help="the chunks of a run most similar to a text (embeds it with Gemini)"
    )
    run_search.add_argument("run_id")
    run_search.add_argument("text")
    run_search.add_argument("--top", type=int, default=5)
    run_search.set_defaults(run=with_queue(cmd_runs_search))

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
    add_store_commands(commands)
    return parser


def duration(text: str) -> float:
    """Parse ``3600``, ``90s``, ``90m``, ``12h`` or ``7d`` into seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write e.g. 3600, 90m, 12h, 7d"
        )
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


# --- plumbing --------------------------------------------------------------------------------


class QueueSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the CLI takes from the config file: where the queue is and how to open it."""

    path: Path
    durability: schema.Durability
    max_attempts: int
    backend: str


def queue_settings(args: argparse.Namespace) -> QueueSettings:
    """Read the config file (and the environment), then let ``--db`` override the path."""
    from actors.config import load_config  # imported here: only commands that need it pay

    config = load_config(args.config)
    return QueueSettings(
        path=Path(args.db or config.queue.path),
        durability=config.queue.durability,
        max_attempts=config.queue.max_attempts,
        backend=config.runtime.backend,
    )


def with_queue(handler: Handler, *, create: bool = False) -> Callable[[argparse.Namespace], int]:
    """Run ``handler`` with the configured queue open, on the configured async backend.

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
                return await handler(args, queue)

        return anyio.run(open_and_run, backend=config.runtime.backend)

    return run


def emit(value: Any) -> None:
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


# --- commands --------------------------------------------------------------------------------


async def cmd_enqueue(args: argparse.Namespace, queue: Queue) -> int:
    payload = None
    if args.payload is not None:
        try:
            payload = msgspec.json.decode(args.payload)
        except msgspec.DecodeError as exc:
            raise InvalidArgument(
                f"--payload is not valid JSON ({exc}); quote it, e.g. '{{\"a\": 1}}'"
            ) from exc
    tenancy.check_tenant_id(args.tenant_id)
    if not args.cross_tenant_key:
        try:
            tenancy.check_key(args.tenant_id, args.r2_key)
        except ForeignObjectKey as exc:
            raise ForeignObjectKey(f"{exc}; or pass --cross-tenant-key to allow it") from None
    job = await queue.enqueue(
        args.run_id,
        args.tenant_id,
        args.r2_key,
        payload=payload,
        idempotency_key=args.idempotency_key,
        delay_seconds=args.delay,
        priority=args.priority,
        max_attempts=args.max_attempts,
        cross_tenant_key=args.cross_tenant_key,
    )
    emit(job)
    return 0


async def cmd_stats(args: argparse.Namespace, queue: Queue) -> int:
    stats = await queue.stats()
    if args.json:
        emit({**msgspec.structs.asdict(stats), "total": stats.total})
        return 0
    for name in ("pending", "leased", "done", "failed", "total"):
        print(f"{name:<8} {getattr(stats, name):>10}")
    # `pending` counts the scheduled jobs too; the age is the oldest available job's.
    print(f"{stats.scheduled} of the pending jobs are scheduled for later (delayed or retrying)")
    age = stats.oldest_pending_age_seconds
    print(
        f"oldest available job has waited {age:.1f}s since it became available"
        if age is not None
        else "no job is available to lease now"
    )
    return 0


async def cmd_jobs_list(args: argparse.Namespace, queue: Queue) -> int:
    page = await queue.list(args.status, args.run_id, args.tenant_id, args.limit, args.cursor)
    if args.json:
        emit(page)
        return 0
    rows = [
        (j.id, j.status, f"{j.attempts}/{j.max_attempts}", j.run_id, j.tenant_id, j.r2_key)
        for j in page.items
    ]
    print_table(("id", "status", "tries", "run", "tenant", "r2_key"), rows, page.next_cursor)
    return 0


async def cmd_jobs_show(args: argparse.Namespace, queue: Queue) -> int:
    emit(await queue.get(args.id))
    return 0


async def cmd_jobs_requeue(args: argparse.Namespace, queue: Queue) -> int:
    if not (args.ids or args.all or args.run_id or args.tenant_id):
        raise InvalidArgument("name the jobs to requeue: IDs, --run-id, --tenant-id, or --all")
    count = await queue.requeue(args.ids or None, run_id=args.run_id, tenant_id=args.tenant_id)
    print(f"requeued {count} failed job(s)")
    return 0


async def cmd_jobs_purge(args: argparse.Namespace, queue: Queue) -> int:
    count = await queue.purge(args.older_than)
    print(f"purged {count} finished job(s)")
    return 0


async def cmd_runs_list(args: argparse.Namespace, queue: Queue) -> int:
    from actors.queue.base import OwnedQueue

    if not isinstance(queue, OwnedQueue):
        raise InvalidArgument(
            "`runs list` reads the queue's own storage, and a queue reached over HTTP offers no "
            "run listing; run it where [queue].backend is sqlite or postgres, or ask for one "
            "run with `runs show RUN_ID`"
        )
    page = await queue.list_runs(args.tenant_id, args.limit, args.cursor)
    rows = [(r.run_id, r.tenant_id, r.status, r.done, r.failed, r.total) for r in page.items]
    print_table(("run", "tenant", "status", "done", "failed", "total"), rows, page.next_cursor)
    return 0


async def cmd_runs_show(args: argparse.Namespace, queue: Queue) -> int:
    if args.json:
        emit(await queue.run_summary(args.run_id))
        return 0
    from actors.cli._results import report_run

    await report_run(queue, args.run_id, sys.stdout, limit=args.limit)
    return 0


async def cmd_runs_export(args: argparse.Namespace, queue: Queue) -> int:
    from actors.cli._results import export_run

    if args.output is None:
        count = await export_run(queue, args.run_id, sys.stdout)
    else:
        # A one-task CLI: blocking writes here stall nobody (stdout blocks the same way).
        with open(args.output, "w", encoding="utf-8") as out:  # noqa: ASYNC230
            count = await export_run(queue, args.run_id, out)
        print(f"{count} jobs written to {args.output}", file=sys.stderr)
    return 0


async def cmd_runs_search(args: argparse.Namespace, queue: Queue) -> int:
    from actors.cli._results import search_run
    from actors.processors._gemini import GeminiProcessor

    config = load_effective_config(args)
    processor = GeminiProcessor.from_settings(config.processor, config.secrets)
    try:
        (vector,) = await processor.client.embed([args.text], task_type="RETRIEVAL_QUERY")
    finally:
        await processor.aclose()
    for hit in await search_run(queue, args.run_id, vector, top=args.top):
        text = " ".join((hit["text"] or "(text not stored)").split())
        print(
            f"{hit['score']:.3f}  #{hit['job_id']} {hit['key']} chunk {hit['chunk']}: {text[:120]}"
        )
    return 0


# --- the pipeline ------------------------------------------------------------------------------


def require_queue(config: Config) -> None:
    """Raise StorageError if the configured queue does not exist: a SQLite file that is not
    there, or a PostgreSQL schema that holds no queue (opening either would create it)."""
    if config.queue.backend == "sqlite":
        schema.require_queue_file(config.queue.path)
    elif config.queue.backend == "postgres":
        from actors.errors import StorageError
        from actors.queue.postgres import _schema as postgres_schema

        async def holds_a_queue(conn: Any, where: str) -> int:
            if await postgres_schema.current_version(conn) == 0:
                raise StorageError(
                    f"no queue at {where}: the schema holds none; check [queue].dsn's "
                    "search_path (`submit`, `enqueue`, `run` and `migrate up` create one)"
                )
            return 0

        run_on_postgres(config, holds_a_queue)


def load_effective_config(args: argparse.Namespace) -> Config:
    """The config file and the environment, with ``--db`` overriding ``[queue].path``."""
    from actors.config import load_config

    config = load_config(args.config)
    if args.db:
        config = msgspec.structs.replace(
            config, queue=msgspec.structs.replace(config.queue, path=args.db)
        )
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from actors.log import configure_logging
    from actors.service import serve
    from actors.system import SystemFailed

    config = load_effective_config(args)
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
        return 70  # EX_SOFTWARE: a process manager should restart us


def cmd_submit(args: argparse.Namespace) -> int:
    from actors.service import object_names, submit_files

    config = load_effective_config(args)
    if all(path.is_file() for path in args.files):  # else submit_files names the missing one
        for path in object_names(args.files)[1]:
            print(f"note: {path} repeats a file given before; submitted once", file=sys.stderr)
    run_id, count = anyio.run(
        functools.partial(
            submit_files, config, args.files, tenant_id=args.tenant_id, run_id=args.run_id
        ),
        backend=config.runtime.backend,
    )
    print(run_id)
    print(
        f"submitted {count} file(s) as run {run_id}; process them with "
        "`python -m actors run --until-idle`",
        file=sys.stderr,
    )
    return 0


def cmd_runs_watch(args: argparse.Namespace) -> int:
    from actors.service import watch

    config = load_effective_config(args)
    require_queue(config)
    summary = anyio.run(
        functools.partial(watch, config, args.run_id), backend=config.runtime.backend
    )
    return 0 if summary.status == "done" else 1


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_effective_config(args)
    print(f"{config.source or 'embedded defaults'}: ok")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from actors.config import dump_config

    print(dump_config(load_effective_config(args)), end="")
    return 0


@contextlib.contextmanager
def raw_connection(
    args: argparse.Namespace, *, create: bool = False
) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """Open the configured file without migrating it (the migrate commands do that themselves);
    unless ``create``, only a file that exists."""
    settings = queue_settings(args)
    opener = schema.connect if create else schema.open_existing
    conn = opener(settings.path, durability=settings.durability)
    try:
        yield settings.path, conn
    finally:
        conn.close()


PgStep = Callable[[Any, str], Awaitable[int]]


def on_postgres(args: argparse.Namespace, step: PgStep) -> int | None:
    """Run ``step(conn, where)`` on the configured PostgreSQL schema and return its exit code,
    if ``[queue].backend`` is not SQLite; None if it is (the caller works on the file)."""
    config = load_effective_config(args)
    if config.queue.backend == "sqlite":
        return None
    if config.queue.backend != "postgres":
        raise InvalidArgument(
            f"`migrate` changes the queue's own database, and [queue].backend = "
            f"{config.queue.backend!r} has none here: run it where the queue server runs"
        )
    return run_on_postgres(config, step)


def run_on_postgres(config: Config, step: PgStep) -> int:
    """Run ``step(conn, where)`` on one connection to the configured PostgreSQL schema, which
    must exist; return its exit code."""
    dsn = config.queue.dsn
    if not dsn:
        raise InvalidArgument('[queue].backend = "postgres" needs [queue].dsn = "postgresql://..."')
    password = config.secrets.pg_password.reveal() if config.secrets.pg_password else None

    async def work() -> int:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

        from actors.errors import StorageError
        from actors.queue.migrate import store_name

        where = store_name(dsn)
        kwargs: dict[str, Any] = {"timeout": 10}
        if password is not None:
            kwargs["password"] = password
        try:
            conn = await asyncpg.connect(dsn, **kwargs)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StorageError(
                f"cannot connect to PostgreSQL at {where}: {exc}. Check [queue].dsn, that the "
                "server runs, and PGPASSWORD"
            ) from exc
        try:
            if await conn.fetchval("SELECT current_schema()") is None:
                raise StorageError(
                    f"{where}: the search_path names no schema that exists. Create it, or name "
                    "an existing one in [queue].dsn (?search_path=...)"
                )
            return await step(conn, where)
        finally:
            await conn.close()

    return _run_store(work)


def print_migrations(where: object, version: int, migrations: Sequence[schema.Migration]) -> None:
    """The schema's version, then each migration this actors knows, applied or pending."""
    print(f"{where}: schema version {version} (this actors knows up to {migrations[-1].version})")
    for migration in migrations:
        mark = "applied" if migration.version <= version else "pending"
        print(f"  {migration.version:>3}  {migration.name:<12} {mark}")


def cmd_migrate_status(args: argparse.Namespace) -> int:
    from actors.queue.postgres import _schema as postgres_schema

    async def on_pg(conn: Any, where: str) -> int:
        version = await postgres_schema.current_version(conn)
        print_migrations(where, version, postgres_schema.MIGRATIONS)
        return 0

    code = on_postgres(args, on_pg)
    if code is not None:
        return code
    with raw_connection(args) as (path, conn):
        version = schema.current_version(conn)
    print_migrations(path, version, schema.MIGRATIONS)
    return 0


def cmd_migrate_up(args: argparse.Namespace) -> int:
    from actors.queue.postgres import _schema as postgres_schema

    async def on_pg(conn: Any, where: str) -> int:
        return report_steps("applied", await postgres_schema.migrate_up(conn, where, args.to))

    code = on_postgres(args, on_pg)
    if code is not None:
        return code
    with raw_connection(args, create=True) as (path, conn):
        applied = schema.migrate_up(conn, path, args.to)
    return report_steps("applied", applied)


def cmd_migrate_down(args: argparse.Namespace) -> int:
    from actors.queue.postgres import _schema as postgres_schema

    async def on_pg(conn: Any, where: str) -> int:
        version = await postgres_schema.current_version(conn)
        target = version - 1 if args.to is None else args.to
        undone = await postgres_schema.migrate_down(conn, where, max(target, 0), force=args.force)
        return report_steps("undid", undone)

    code = on_postgres(args, on_pg)
    if code is not None:
        return code
    with raw_connection(args) as (path, conn):
        target = schema.current_version(conn) - 1 if args.to is None else args.to
        undone = schema.migrate_down(conn, path, max(target, 0), force=args.force)
    return report_steps("undid", undone)


def report_steps(verb: str, versions: Sequence[int]) -> int:
    """Print the migrations applied or undone ("applied [1, 2]"), or that there were none."""
    print(f"{verb} {list(versions)}" if versions else f"nothing to {STEP_NOUNS[verb]}")
    return 0


STEP_NOUNS = {"applied": "apply", "undid": "undo"}


# --- store: copy a queue between SQLite, PostgreSQL and JSON lines (actors/queue/migrate.py) ---

STORE_HELP = "a SQLite file path, or postgresql://user@host/db?search_path=SCHEMA"


def add_store_commands(commands: Any) -> None:
    """`store migrate status|run|rollback`, `store export`, `store import`."""
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


def _run_store(work: Callable[[], Awaitable[int]]) -> int:
    # asyncio whatever [runtime].backend says: asyncpg runs on asyncio only, and this command
    # runs no actor.
    return anyio.run(work, backend="asyncio")


def _now() -> float:
    from supervisors.clock import SystemClock

    return SystemClock().time()


# Conflicts printed one per line at most; the rest are counted.
SHOWN_CONFLICTS = 20


def print_conflicts(conflicts: Sequence[Any], flag: str) -> None:
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


def cmd_store_status(args: argparse.Namespace) -> int:
    from actors.queue import migrate

    async def work() -> int:
        # Reads only: a target that does not exist yet reads as empty and is not created.
        async with (
            migrate.open_store(args.source, read_only=True, must_exist=True) as source,
            migrate.open_store(args.target, read_only=True) as target,
        ):
            found = await migrate.status(source, target, now=_now(), batch=args.batch)
        statuses = ("pending", "leased", "done", "failed", "runs")
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
            return 0
        if any(found.conflicts.values()):
            print(
                "conflicts: the target changed rows after they were copied; `store migrate "
                "run` leaves them alone, `store migrate run --force` replaces them"
            )
        print("incomplete: `store migrate run` copies what is missing or changed in the source")
        return 1

    return _run_store(work)


def cmd_store_run(args: argparse.Namespace) -> int:
    from actors.queue import migrate

    async def work() -> int:
        async with (
            migrate.open_store(args.source, must_exist=True) as source,
            migrate.open_store(args.target) as target,
        ):
            report = await migrate.run(
                source,
                target,
                now=_now(),
                batch=args.batch,
                convert_leases=args.convert_leases,
                force=args.force,
            )
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
        return 1 if report.errors or report.conflicts else 0

    return _run_store(work)


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
        return 1 if report.errors or report.conflicts else 0

    return _run_store(work)


def cmd_store_export(args: argparse.Namespace) -> int:
    from actors.queue import migrate

    async def work() -> int:
        async with migrate.open_store(args.source, must_exist=True) as source:
            written = await migrate.export_jsonl(source, args.out)
        print(f"exported {written['run']} run(s) and {written['job']} job(s) to {args.out}")
        return 0

    return _run_store(work)
