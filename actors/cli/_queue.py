"""The queue's controls: ``queue pause|resume|controls|limits``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from actors.cli._common import EXIT_OK, emit, print_table, with_queue

if TYPE_CHECKING:
    from actors.cli._common import Commands
    from actors.queue.base import Queue
    from actors.queue.model import QueueControls

__all__ = ["add_queue"]


def add_queue(commands: Commands) -> None:
    """``queue pause|resume [--tenant T]``, ``queue controls``, ``queue limits T ...``."""
    queue = commands.add_parser(
        "queue", help="pause or resume the queue or a tenant; tenants' shares and limits"
    )
    actions = queue.add_subparsers(title="queue commands", required=True, metavar="ACTION")
    for name, verb in (("pause", "stop leasing new jobs of"), ("resume", "lease again from")):
        action = actions.add_parser(
            name,
            help=f"{verb} the whole queue, or one tenant (every process sharing the queue; "
            "leased jobs finish)",
        )
        action.add_argument("--tenant", metavar="TENANT", help="only this tenant")
        action.add_argument("--json", action="store_true", help="print the controls as JSON")
        action.set_defaults(run=with_queue(cmd_pause if name == "pause" else cmd_resume))
    show = actions.add_parser("controls", help="print what is paused and the tenants' limits")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=with_queue(cmd_controls))
    limits = actions.add_parser(
        "limits",
        help="set a tenant's weight in fair pulls and its limits (a limit left out is none)",
    )
    limits.add_argument("tenant", metavar="TENANT")
    limits.add_argument("--weight", type=int, default=1, help="jobs per turn (default 1)")
    limits.add_argument("--max-leased", type=int, metavar="N", help="live leases at most")
    limits.add_argument(
        "--max-per-second", type=float, metavar="R", help="jobs leased per second at most"
    )
    limits.add_argument("--json", action="store_true", help="print the controls as JSON")
    limits.set_defaults(run=with_queue(cmd_limits))


async def cmd_pause(args: argparse.Namespace, queue: Queue) -> int:
    return show_controls(args, await queue.pause(args.tenant))


async def cmd_resume(args: argparse.Namespace, queue: Queue) -> int:
    return show_controls(args, await queue.resume(args.tenant))


async def cmd_controls(args: argparse.Namespace, queue: Queue) -> int:
    return show_controls(args, await queue.controls())


async def cmd_limits(args: argparse.Namespace, queue: Queue) -> int:
    controls = await queue.set_tenant_limits(
        args.tenant,
        weight=args.weight,
        max_leased=args.max_leased,
        max_per_second=args.max_per_second,
    )
    return show_controls(args, controls)


def show_controls(args: argparse.Namespace, controls: QueueControls) -> int:
    if args.json:
        emit(controls)
        return EXIT_OK
    print(f"queue    {'paused' if controls.paused else 'running'}")
    rows = [
        (
            t.tenant_id,
            "paused" if t.paused else "running",
            t.weight,
            "-" if t.max_leased is None else t.max_leased,
            "-" if t.max_per_second is None else f"{t.max_per_second:g}",
        )
        for t in controls.tenants
    ]
    if rows:
        print_table(("tenant", "state", "weight", "max_leased", "max_per_second"), rows, None)
    return EXIT_OK
