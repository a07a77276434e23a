"""Runs: ``runs list|show|watch|export|search``, a run's progress and its results."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from actors.cli._common import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    emit,
    load_effective_config,
    print_table,
    require_queue,
    with_queue,
)
from actors.errors import InvalidArgument

if TYPE_CHECKING:
    from actors.cli._common import Commands
    from actors.queue.base import Queue

__all__ = ["add_runs"]


def add_runs(commands: Commands) -> None:
    """``runs list|show|watch|export|search``."""
    runs = commands.add_parser("runs", help="list runs or show one")
    actions = runs.add_subparsers(title="runs commands", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list run summaries, oldest first")
    listing.add_argument("--tenant-id")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor")
    listing.set_defaults(run=with_queue(cmd_runs_list))
    show = actions.add_parser("show", help="print one run's summary")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--limit", type=int, default=20, help="jobs listed at most (20)")
    show.set_defaults(run=with_queue(cmd_runs_show))
    watch = actions.add_parser(
        "watch",
        help="follow a run until it ends: a progress bar, or JSON lines when piped; "
        "exit code 2 if it ended with failed jobs (a cancelled run without any: 0)",
    )
    watch.add_argument("run_id")
    watch.set_defaults(run=cmd_runs_watch)
    export = actions.add_parser(
        "export", help="write one JSON line per job: analysis, chunks, embeddings, usage"
    )
    export.add_argument("run_id")
    export.add_argument("--output", "-o", type=Path, help="a file (default: stdout)")
    export.set_defaults(run=with_queue(cmd_runs_export))
    search = actions.add_parser(
        "search", help="the chunks of a run most similar to a text (embeds it with Gemini)"
    )
    search.add_argument("run_id")
    search.add_argument("text")
    search.add_argument("--top", type=int, default=5)
    search.set_defaults(run=with_queue(cmd_runs_search))


async def cmd_runs_list(args: argparse.Namespace, queue: Queue) -> int:
    from actors.queue.base import OwnedQueue

    if not isinstance(queue, OwnedQueue):
        raise InvalidArgument(
            "`runs list` reads the queue's own storage, and a queue reached over HTTP offers no "
            "run listing; run it where [queue].backend is sqlite or postgres, or ask for one "
            "run with `runs show RUN_ID`"
        )
    page = await queue.list_runs(args.tenant_id, args.limit, args.cursor)
    rows = [
        (r.run_id, r.tenant_id, r.status, r.done, r.failed, r.cancelled, r.total)
        for r in page.items
    ]
    headers = ("run", "tenant", "status", "done", "failed", "cancelled", "total")
    print_table(headers, rows, page.next_cursor)
    return EXIT_OK


async def cmd_runs_show(args: argparse.Namespace, queue: Queue) -> int:
    if args.json:
        emit(await queue.run_summary(args.run_id))
        return EXIT_OK
    from actors.cli._results import report_run

    await report_run(queue, args.run_id, sys.stdout, limit=args.limit)
    return EXIT_OK


def cmd_runs_watch(args: argparse.Namespace) -> int:
    from actors.service import watch

    config = load_effective_config(args)
    require_queue(config)
    summary = anyio.run(
        functools.partial(watch, config, args.run_id), backend=config.runtime.backend
    )
    # A run that ended with failed jobs: the same code as `run --until-idle` after one (a run
    # cancelled part-way without a failure ends 0, as there).
    return EXIT_RUN_FAILED if summary.failed else EXIT_OK


async def cmd_runs_export(args: argparse.Namespace, queue: Queue) -> int:
    from actors.cli._results import export_run

    if args.output is None:
        count = await export_run(queue, args.run_id, sys.stdout)
    else:
        # A one-task CLI: blocking writes here stall nobody (stdout blocks the same way).
        with open(args.output, "w", encoding="utf-8") as out:  # noqa: ASYNC230
            count = await export_run(queue, args.run_id, out)
        print(f"{count} jobs written to {args.output}", file=sys.stderr)
    return EXIT_OK


async def cmd_runs_search(args: argparse.Namespace, queue: Queue) -> int:
    from actors.cli._results import search_run
    from actors.processors import GeminiProcessor

    config = load_effective_config(args)
    processor = GeminiProcessor.from_settings(config.processor, config.secrets)
    try:
        (vector,) = await processor.client.embed([args.text], task_type="RETRIEVAL_QUERY")
    finally:
        await processor.aclose()
    for hit in await search_run(queue, args.run_id, vector, top=args.top):
        text = " ".join((hit.text or "(text not stored)").split())
        print(f"{hit.score:.3f}  #{hit.job_id} {hit.key} chunk {hit.chunk}: {text[:120]}")
    return EXIT_OK
