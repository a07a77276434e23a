"""Jobs: ``submit`` files, ``enqueue`` one job, ``stats``, and
``jobs list|show|cancel|requeue|purge``."""

from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec

from actors import tenancy
from actors.cli._common import (
    EXIT_OK,
    emit,
    load_effective_config,
    print_table,
    with_queue,
)
from actors.cli._progress import Progress
from actors.errors import ForeignObjectKey, InvalidArgument, JobNotFound

if TYPE_CHECKING:
    from actors.cli._common import Commands
    from actors.queue.base import Queue
    from actors.queue.model import ItemResult, Job

__all__ = ["add_enqueue", "add_jobs", "add_stats", "add_submit", "duration"]


def add_submit(commands: Commands) -> None:
    """``submit FILE... [--tenant-id] [--run-id]``."""
    submit = commands.add_parser(
        "submit",
        help="store files and enqueue one job per file under a new run; print its id",
        description="Store each file as the object TENANT/RUN/NAME and enqueue one job for it. "
        "NAME is the file's base name; files that share a base name are named by as much of "
        "their path as tells them apart (a/report.txt, b/report.txt). A file given twice is "
        "submitted once. A directory stands for the files under it (hidden ones left out).",
    )
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE|DIR")
    submit.add_argument("--tenant-id", default="default")
    submit.add_argument("--run-id", help="default: a new run-... id")
    submit.set_defaults(run=cmd_submit)


def add_enqueue(commands: Commands) -> None:
    """``enqueue --run-id --tenant-id --r2-key ...``."""
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


def add_stats(commands: Commands) -> None:
    """``stats [--json]``."""
    stats = commands.add_parser("stats", help="count jobs by status")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(run=with_queue(cmd_stats))


def add_jobs(commands: Commands) -> None:
    """``jobs list|show|cancel|requeue|purge``."""
    jobs = commands.add_parser("jobs", help="list, show, cancel, requeue or purge jobs")
    actions = jobs.add_subparsers(title="jobs commands", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list jobs, oldest first")
    listing.add_argument("--status", choices=["pending", "leased", "done", "failed", "cancelled"])
    listing.add_argument("--run-id")
    listing.add_argument("--tenant-id")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", help="the next_cursor printed by the previous page")
    listing.add_argument("--json", action="store_true", help="print one JSON page")
    listing.set_defaults(run=with_queue(cmd_jobs_list))
    show = actions.add_parser("show", help="print one job as JSON")
    show.add_argument(
        "id", metavar="ID", help="a job id, or an imported job's origin (d1:ID, kv:TASK-ID)"
    )
    show.set_defaults(run=with_queue(cmd_jobs_show))
    cancel = actions.add_parser(
        "cancel",
        help="cancel jobs: a pending one now, a leased one when its worker stops",
        description="Cancel jobs by id, or every unfinished job of a run. A pending job is "
        "cancelled at once; a leased one is marked, and its worker stops processing it at its "
        "next lease renewal (at once in the same process) or the job ends cancelled when its "
        "lease expires. A cancelled job is never marked done.",
    )
    cancel.add_argument("ids", type=int, nargs="*", metavar="ID")
    cancel.add_argument(
        "--run", dest="run_id", metavar="RUN", help="every unfinished job of this run"
    )
    cancel.add_argument("--json", action="store_true", help="print JSON")
    cancel.set_defaults(run=with_queue(cmd_jobs_cancel))
    requeue = actions.add_parser("requeue", help="return terminally failed jobs to pending")
    requeue.add_argument("ids", type=int, nargs="*", metavar="ID")
    requeue.add_argument("--all", action="store_true", help="every failed job")
    requeue.add_argument("--run-id")
    requeue.add_argument("--tenant-id")
    requeue.set_defaults(run=with_queue(cmd_jobs_requeue))
    purge = actions.add_parser("purge", help="delete finished jobs older than a retention")
    purge.add_argument(
        "--older-than", required=True, type=duration, metavar="AGE", help="e.g. 3600, 90m, 12h, 7d"
    )
    purge.set_defaults(run=with_queue(cmd_jobs_purge))


def duration(text: str) -> float:
    """Parse ``3600``, ``90s``, ``90m``, ``12h`` or ``7d`` into seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write e.g. 3600, 90m, 12h, 7d"
        )
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def cmd_submit(args: argparse.Namespace) -> int:
    from actors.service import files_under, object_names, submit_files

    config = load_effective_config(args)
    files = files_under(args.files)
    if all(path.is_file() for path in files):  # else submit_files names the missing one
        for path in object_names(files)[1]:
            print(f"note: {path} repeats a file given before; submitted once", file=sys.stderr)
    with Progress("submit", unit="files") as progress:
        run_id, count = anyio.run(
            functools.partial(
                submit_files,
                config,
                files,
                tenant_id=args.tenant_id,
                run_id=args.run_id,
                progress=progress.update,
            ),
            backend=config.runtime.backend,
        )
    print(run_id)
    print(
        f"submitted {count} file(s) as run {run_id}; process them with "
        "`python -m actors run --until-idle`",
        file=sys.stderr,
    )
    return EXIT_OK


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
    return EXIT_OK


async def cmd_stats(args: argparse.Namespace, queue: Queue) -> int:
    stats = await queue.stats()
    if args.json:
        emit({**msgspec.structs.asdict(stats), "total": stats.total})
        return EXIT_OK
    for name in ("pending", "leased", "done", "failed", "cancelled", "total"):
        print(f"{name:<9}{getattr(stats, name):>10}")
    # `pending` counts the scheduled jobs too; the age is the oldest available job's.
    print(f"{stats.scheduled} of the pending jobs are scheduled for later (delayed or retrying)")
    age = stats.oldest_pending_age_seconds
    print(
        f"oldest available job has waited {age:.1f}s since it became available"
        if age is not None
        else "no job is available to lease now"
    )
    if stats.paused:
        print("the queue is paused: nothing is leased until `queue resume`")
    if stats.paused_tenants:
        print(f"paused tenants: {', '.join(stats.paused_tenants)}")
    return EXIT_OK


def _shown(job: Job) -> Job:
    """The job as printed: without its lease token, the lease's credential, which only the
    worker that took the lease needs (a pasted listing must not let anyone act on it)."""
    if job.lease_token is None:
        return job
    return msgspec.structs.replace(job, lease_token=None)


def _shown_result(result: ItemResult) -> ItemResult:
    if result.job is None:
        return result
    return msgspec.structs.replace(result, job=_shown(result.job))


async def cmd_jobs_list(args: argparse.Namespace, queue: Queue) -> int:
    page = await queue.list(args.status, args.run_id, args.tenant_id, args.limit, args.cursor)
    if args.json:
        emit(msgspec.structs.replace(page, items=[_shown(j) for j in page.items]))
        return EXIT_OK
    rows: list[tuple[object, ...]] = [
        (j.id, j.status, f"{j.attempts}/{j.max_attempts}", j.run_id, j.tenant_id, j.r2_key)
        for j in page.items
    ]
    header: tuple[str, ...] = ("id", "status", "tries", "run", "tenant", "r2_key")
    if any(j.origin for j in page.items):  # imported jobs: where each came from
        header = (*header, "origin")
        rows = [(*row, j.origin or "") for row, j in zip(rows, page.items, strict=True)]
    print_table(header, rows, page.next_cursor)
    return EXIT_OK


async def cmd_jobs_show(args: argparse.Namespace, queue: Queue) -> int:
    text: str = args.id
    if text.isascii() and text.isdigit():
        emit(_shown(await queue.get(int(text))))
        return EXIT_OK
    from actors.queue.base import OwnedQueue

    if ":" not in text or not isinstance(queue, OwnedQueue):
        raise InvalidArgument(
            f"{text!r} is not a job id (digits) nor, on the queue's own database, an imported "
            "job's origin (d1:ID or kv:TASK-ID)"
        )
    found = await queue.find_by_origin([text])
    if not found:
        raise InvalidArgument(f"no job was imported with origin {text!r}")
    emit(_shown(found[0]))
    return EXIT_OK


async def cmd_jobs_cancel(args: argparse.Namespace, queue: Queue) -> int:
    if bool(args.ids) == (args.run_id is not None):
        raise InvalidArgument("name the jobs to cancel: IDs, or --run RUN (not both)")
    if args.run_id is not None:
        outcome = await queue.cancel_run(args.run_id)
        if args.json:
            emit(outcome)
        else:
            print(
                f"run {outcome.run_id}: cancelled {outcome.cancelled} pending job(s); "
                f"{outcome.cancel_requested} leased job(s) end cancelled when their workers stop"
            )
        return EXIT_OK
    results = await queue.cancel_many(args.ids)
    if args.json:
        emit([_shown_result(r) for r in results])
    else:
        # A missing job's message is the error line below.
        rows = [
            (r.job_id, _cancel_outcome(r), "" if r.reason == "not_found" else r.message or "")
            for r in results
        ]
        print_table(("id", "outcome", "note"), rows, None)
    missing = [r.job_id for r in results if r.reason == "not_found"]
    if missing:
        raise JobNotFound(missing[0])
    return EXIT_OK


def _cancel_outcome(result: ItemResult) -> str:
    if result.reason == "not_found":
        return "not found"
    if result.reason == "duplicate":
        return "already cancelled"
    if not result.ok or result.job is None:
        return f"already {result.job.status if result.job else 'finished'}"
    return "cancelled" if result.job.status == "cancelled" else "cancel requested"


async def cmd_jobs_requeue(args: argparse.Namespace, queue: Queue) -> int:
    if not (args.ids or args.all or args.run_id or args.tenant_id):
        raise InvalidArgument("name the jobs to requeue: IDs, --run-id, --tenant-id, or --all")
    count = await queue.requeue(args.ids or None, run_id=args.run_id, tenant_id=args.tenant_id)
    print(f"requeued {count} failed job(s)")
    return EXIT_OK


async def cmd_jobs_purge(args: argparse.Namespace, queue: Queue) -> int:
    count = await queue.purge(args.older_than)
    print(f"purged {count} finished job(s)")
    return EXIT_OK
