"""Moving off Cloudflare: the D1 jobs queue and the KV task queue imported, verified, undone.

`read_dump` reads a dump (`read_d1`: ``wrangler d1 export`` SQL or ``d1 execute --json``;
`read_kv`: ``wrangler kv`` bulk JSON) into a `Source` of items; `status`, `run` and `rollback`
compare it with a queue, import it, or remove what it imported, through the queue's import
verbs (`actors.queue.base.OwnedQueue`), and return a `Report`. The CLI (``store import``) and
the HTTP API (``/api/migrate/*``) both drive this package and send the same report.
"""

from __future__ import annotations

from typing import Literal

from actors.errors import InvalidArgument
from actors.importers._d1 import read_d1
from actors.importers._engine import (
    BATCH,
    new_report,
    rollback,
    run,
    status,
    status_of_nothing,
)
from actors.importers._items import Item, Kind, Problem, Report, Source, report_json
from actors.importers._kv import DEFAULT_RUN, DEFAULT_TENANT, read_kv

__all__ = [
    "BATCH",
    "DEFAULT_RUN",
    "DEFAULT_TENANT",
    "Item",
    "Kind",
    "Problem",
    "Report",
    "Source",
    "new_report",
    "read_d1",
    "read_dump",
    "read_kv",
    "report_json",
    "rollback",
    "run",
    "status",
    "status_of_nothing",
]


def read_dump(
    kind: Literal["d1", "kv"],
    data: bytes,
    *,
    tenant_id: str = DEFAULT_TENANT,
    run_id: str = DEFAULT_RUN,
    cross_tenant_keys: bool = False,
) -> Source:
    """Read a dump of ``kind``; ``tenant_id`` and ``run_id`` place KV tasks that name none."""
    if kind == "d1":
        return read_d1(data, cross_tenant_keys=cross_tenant_keys)
    if kind == "kv":
        return read_kv(
            data, tenant_id=tenant_id, run_id=run_id, cross_tenant_keys=cross_tenant_keys
        )
    raise InvalidArgument(f"a dump is of D1 or KV, not {kind!r}")
