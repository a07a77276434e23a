"""Schedules: ``schedules list|add|delete``, a tenant's recurring jobs in the queue."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from actors import tenancy
from actors.cli._common import EXIT_OK, emit, print_table, with_queue
from actors.errors import InvalidArgument

if TYPE_CHECKING:
    from actors.cli._common import Commands
    from actors.queue.base import Queue

__all__ = ["add_schedules"]


def add_schedules(commands: Commands) -> None:
    """``schedules list|add|delete``."""
    schedules = commands.add_parser("schedules", help="list, add or delete recurring jobs")
    actions = schedules.add_subparsers(title="schedules commands", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list schedules by tenant and name")
    listing.add_argument("--tenant-id")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=with_queue(cmd_schedules_list))
    add = actions.add_parser(
        "add",
        help="add a schedule, or replace the tenant's one of that name (the same timing keeps "
        "its next tick); prints it as JSON",
    )
    add.add_argument("name")
    add.add_argument("--tenant-id", required=True)
    add.add_argument("--r2-key", required=True, help="the object each tick's job reads")
    timing = add.add_mutually_exclusive_group(required=True)
    timing.add_argument("--cron", metavar="EXPR", help="e.g. '*/10 * * * *' (six fields: seconds)")
    timing.add_argument("--every", type=int, metavar="SECONDS", help="an interval instead")
    add.add_argument("--timezone", default="UTC", help="the cron expression's (default UTC)")
    add.add_argument("--payload", metavar="JSON", help="a JSON value stored with each job")
    add.add_argument("--priority", type=int, default=0)
    add.add_argument(
        "--missed",
        choices=("catch_up", "skip"),
        default="catch_up",
        help="ticks missed while everything was down: one job for the latest (catch_up), "
        "or none (skip)",
    )
    add.add_argument(
        "--grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how late a tick may be and still run on its own (default 60)",
    )
    add.set_defaults(run=with_queue(cmd_schedules_add, create=True))
    delete = actions.add_parser("delete", help="delete a tenant's schedule; prints it as JSON")
    delete.add_argument("name")
    delete.add_argument("--tenant-id", required=True)
    delete.set_defaults(run=with_queue(cmd_schedules_delete))


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def cmd_schedules_list(args: argparse.Namespace, queue: Queue) -> int:
    schedules = await queue.list_schedules(args.tenant_id)
    if args.json:
        emit(schedules)
        return EXIT_OK
    rows = [
        (
            s.tenant_id,
            s.name,
            s.cron if s.cron is not None else f"every {s.interval_seconds}s",
            s.timezone,
            s.missed,
            _when(s.next_tick_at),
            _when(s.last_tick_at),
        )
        for s in schedules
    ]
    header = ("tenant", "name", "when", "zone", "missed", "next", "last")
    print_table(header, rows, None)
    return EXIT_OK


async def cmd_schedules_add(args: argparse.Namespace, queue: Queue) -> int:
    from actors.queue.model import NewSchedule

    payload = None
    if args.payload is not None:
        try:
            payload = msgspec.json.decode(args.payload)
        except msgspec.DecodeError as exc:
            raise InvalidArgument(
                f"--payload is not valid JSON ({exc}); quote it, e.g. '{{\"a\": 1}}'"
            ) from exc
    tenancy.check_tenant_id(args.tenant_id)
    tenancy.check_key(args.tenant_id, args.r2_key)
    schedule = await queue.create_schedule(
        NewSchedule(
            name=args.name,
            tenant_id=args.tenant_id,
            r2_key=args.r2_key,
            cron=args.cron,
            interval_seconds=args.every,
            timezone=args.timezone,
            payload=payload,
            priority=args.priority,
            missed=args.missed,
            grace_seconds=args.grace,
        )
    )
    emit(schedule)
    return EXIT_OK


async def cmd_schedules_delete(args: argparse.Namespace, queue: Queue) -> int:
    emit(await queue.delete_schedule(args.tenant_id, args.name))
    return EXIT_OK
