"""What a dump holds once read (`Source`: items, each a job to import or a reason it cannot be),
the report of a status, run or rollback (`Report`), and the field conversions both readers share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import msgspec

from actors import tenancy
from actors.bounds import MAX_ID_CHARS
from actors.errors import InvalidArgument, InvalidObjectKey
from actors.queue.model import ImportedJob, Job

__all__ = [
    "Action",
    "Item",
    "Kind",
    "Problem",
    "Report",
    "Source",
    "differences",
    "placed",
    "report_json",
    "seconds",
    "text",
]

Kind = Literal["d1", "kv"]
Action = Literal["status", "run", "rollback"]

# Above this an epoch time is in milliseconds (JavaScript's Date.now()), not seconds: 1e11 s is
# the year 5138, 1e11 ms early 1973.
_MILLISECONDS = 1e11


@dataclass(frozen=True)
class Item:
    """One thing of the dump to import: a job (``job``), or why it cannot be one (``error``).

    ``origin`` names it in the old system (``d1:<id>``, ``kv:<task id>``), or where it is in
    the dump (``line 12``, ``row 3``) when it has no id.
    """

    origin: str
    job: ImportedJob | None = None
    error: str | None = None


@dataclass
class Source:
    """A dump, read: its items in the dump's order and what was left out on purpose."""

    kind: Kind
    items: list[Item] = field(default_factory=list)
    # Leases of the old system, not carried over (their jobs come over as pending).
    dropped_leases: int = 0
    # Keys of a KV dump that are neither tasks, leases, results nor the pending list.
    ignored_keys: int = 0

    @property
    def jobs(self) -> list[ImportedJob]:
        return [item.job for item in self.items if item.job is not None]


class Problem(msgspec.Struct, frozen=True, rename="camel"):
    """One item not imported (or not rolled back), and why."""

    item: str
    message: str


class Report(msgspec.Struct, kw_only=True, rename="camel"):
    """What a status, run or rollback found or did, item by item; the CLI prints it, ``--json``
    and ``/api/migrate/*`` send it as it is. It fills while the action runs (progress)."""

    source: Kind
    action: Action
    # Items of the dump: jobs to import, and malformed ones (in `errors`).
    items: int = 0
    # run: written now, then read back and found as the dump has them.
    migrated: int = 0
    # Already in the queue as the dump has them (a run skips them).
    imported: int = 0
    # status: not in the queue yet.
    missing: int = 0
    # rollback: deleted; absent: not in the queue (never imported, or purged since).
    removed: int = 0
    absent: int = 0
    # rollback --force: deleted although they changed after the import.
    forced: int = 0
    dropped_leases: int = 0
    ignored_keys: int = 0
    # In the queue but not as the dump has them (workers ran them since the import, or the
    # dump changed): left alone.
    conflicts: list[Problem] = msgspec.field(default_factory=list)
    # Malformed items and items that could not be written or verified.
    errors: list[Problem] = msgspec.field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def done(self) -> int:
        """Items settled so far (for progress): whatever happened to them."""
        return (
            self.migrated
            + self.imported
            + self.missing
            + self.removed
            + self.absent
            + len(self.conflicts)
            + len(self.errors)
        )

    @property
    def complete(self) -> bool:
        """Every job of the dump is in the queue as the dump has it (status and run)."""
        return self.missing == 0 and not self.conflicts and self.imported + self.migrated > 0


def report_json(report: Report) -> dict[str, object]:
    """The report as sent (``--json``, ``/api/migrate/*``): its fields in camelCase, with
    ``failed`` (how many errors) and ``complete`` (status and run: nothing left to import)."""
    out: dict[str, object] = msgspec.to_builtins(report)
    out["failed"] = report.failed
    out["complete"] = report.complete if report.action != "rollback" else None
    return out


def differences(job: ImportedJob, there: Job) -> list[str]:
    """The fields in which the queue's job differs from the dump's (as an import writes it)."""
    finished = None if job.status == "pending" else (job.finished_at or job.updated_at)
    pairs = (
        ("origin", job.origin, there.origin),
        ("run_id", job.run_id, there.run_id),
        ("tenant_id", job.tenant_id, there.tenant_id),
        ("r2_key", job.r2_key, there.r2_key),
        ("status", job.status, there.status),
        ("attempts", job.attempts, there.attempts),
        ("priority", job.priority, there.priority),
        ("payload", job.payload, there.payload),
        ("result", job.result, there.result),
        ("last_error", job.last_error, there.last_error),
        ("created_at", job.created_at, there.created_at),
        ("updated_at", job.updated_at, there.updated_at),
        ("finished_at", finished, there.finished_at),
        ("cross_tenant_key", job.cross_tenant_key, there.cross_tenant_key),
    )
    return [name for name, want, have in pairs if want != have]


def text(value: object, name: str) -> str:
    """A non-empty string of at most `MAX_ID_CHARS` (a number is written as one)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} is missing (got {value!r})")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(f"{name} is {len(value)} characters, over {MAX_ID_CHARS}")
    if "\x00" in value:  # PostgreSQL's text cannot hold it
        raise InvalidArgument(f"{name} holds a NUL character")
    return value


def seconds(value: object, name: str) -> float:
    """A time as epoch seconds: a number (milliseconds when that large), digits, or ISO 8601."""
    if isinstance(value, str):
        stripped = value.strip()
        try:
            value = float(stripped)
        except ValueError:
            try:
                moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidArgument(f"{name} {value!r} is not a time") from None
            if moment.tzinfo is None:  # SQLite's CURRENT_TIMESTAMP: UTC, without a zone
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{name} {value!r} is not a time")
    if value < 0:
        raise InvalidArgument(f"{name} {value!r} is before 1970")
    return value / 1000 if value > _MILLISECONDS else float(value)


def placed(tenant_id: str, r2_key: str, *, cross_tenant_keys: bool) -> bool:
    """Check the tenancy rule for an imported job; return its ``cross_tenant_key``."""
    try:
        tenancy.check_tenant_id(tenant_id)
        tenancy.check_key_form(r2_key)
    except (InvalidArgument, InvalidObjectKey) as exc:
        raise InvalidArgument(str(exc)) from None
    if tenancy.key_in_tenant(tenant_id, r2_key):
        return False
    if cross_tenant_keys:
        return True
    prefix = tenancy.tenant_prefix(tenant_id)
    raise InvalidArgument(
        f"its key {r2_key!r} lies outside its tenant's prefix {prefix!r}, "
        "and a job reads only its tenant's objects; import with --cross-tenant-keys to let it "
        "(as an admin's cross-tenant job)"
    )
