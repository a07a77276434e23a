"""The queue contract every backend keeps (SQLite, PostgreSQL, HTTP), and what they share.

`Queue` is the contract as a Protocol: the verbs every backend has, typed exactly; every user
of a queue holds one. `OwnedQueue` adds what only a queue this process opened itself offers
(SQLite, PostgreSQL): the maintenance claim and the run listing. `SingleItemVerbs` builds the
one-item verbs on a backend's batch verbs, once for all. The argument checks (against the
bounds of `actors.bounds`) and the retry jitter live here, and the row decoding and refusal
texts of the SQL backends in `_rows`, so that each backend refuses the same calls in the same
words.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator, Sequence
from itertools import count
from typing import Literal, Protocol, runtime_checkable

import msgspec

from actors.bounds import (
    DAY,
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_DELAY_SECONDS,
    MAX_ID_CHARS,
    MAX_MAINTENANCE_INTERVAL_SECONDS,
    MAX_PAGE,
    MAX_PAYLOAD_BYTES_LIMIT,
    MAX_PRIORITY,
    MAX_PULL,
    MAX_PULL_WAIT_SECONDS,
    MAX_TENANT_LEASED,
    MAX_TENANT_RATE,
    MAX_TICKS_PER_FIRE,
    MAX_TIMEOUT_SECONDS,
    MAX_VISIBILITY_SECONDS,
    MAX_WEIGHT,
    MIN_TENANT_RATE,
    MIN_TIMEOUT_SECONDS,
    SCHEDULE_NAME_PATTERN,
)
from actors.cron import Cadence, cadence, tick_text
from actors.errors import InvalidArgument, JobNotFound, LeaseLost, OutOfRange, PayloadTooLarge
from actors.queue.model import (
    Ack,
    AckResult,
    ImportedJob,
    ImportResult,
    ItemResult,
    Job,
    JobStatus,
    LeaseResult,
    MaintenanceClaim,
    NewJob,
    NewSchedule,
    Page,
    QueueControls,
    RunCancel,
    RunSummary,
    Schedule,
    ScheduleFiring,
    Stats,
)

__all__ = [
    "STATUSES",
    "OwnedQueue",
    "Queue",
    "SingleItemVerbs",
    "check_ack",
    "check_batch",
    "check_cancel",
    "check_delay",
    "check_imported",
    "check_json",
    "check_limits",
    "check_listing",
    "check_maintenance",
    "check_new_job",
    "check_open",
    "check_optional_text",
    "check_origins",
    "check_page",
    "check_pull",
    "check_range",
    "check_schedule",
    "check_schedule_key",
    "check_text",
    "check_visibility",
    "imported_max_attempts",
    "jitter_factors",
    "plan_ticks",
    "raise_if_refused",
    "tick_job",
]

STATUSES = ("pending", "leased", "done", "failed", "cancelled")


@runtime_checkable
class Queue(Protocol):
    """The durable job queue's contract: what every backend offers and every caller may use.

    Statuses, fencing (a stale lease token changes nothing), per-item results of the batch
    verbs, retries and errors are the same on every backend; tests/queue runs one suite on each.
    """

    async def aclose(self) -> None: ...

    # producers
    async def enqueue(
        self,
        run_id: str,
        tenant_id: str,
        r2_key: str,
        *,
        payload: object = None,
        idempotency_key: str | None = None,
        delay_seconds: float = 0,
        priority: int = 0,
        max_attempts: int | None = None,
        cross_tenant_key: bool = False,
        timeout_seconds: float | None = None,
    ) -> Job: ...

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]: ...

    def on_enqueue(self, callback: Callable[[], object]) -> Callable[[], None]: ...

    # consumers
    async def pull(
        self,
        max: int = 10,
        visibility_seconds: float = 60,
        worker_id: str | None = None,
        *,
        owner: str | None = None,
        started: bool = False,
        wait_seconds: float = 0,
    ) -> list[Job]: ...

    async def start_many(self, leases: Sequence[tuple[int, str]]) -> list[LeaseResult]: ...

    async def renew(self, job_id: int, lease_token: str, visibility_seconds: float) -> Job: ...

    async def renew_many(
        self, leases: Sequence[tuple[int, str]], visibility_seconds: float
    ) -> list[LeaseResult]: ...

    async def release(self, job_id: int, lease_token: str, delay_seconds: float = 0) -> Job: ...

    async def release_many(
        self, leases: Sequence[tuple[int, str]], delay_seconds: float = 0
    ) -> list[LeaseResult]: ...

    async def ack(
        self,
        job_id: int,
        lease_token: str,
        *,
        status: Literal["done", "failed"] = "done",
        result: object = None,
        error: str | None = None,
        permanent: bool = False,
        run_metrics: dict[str, float] | None = None,
    ) -> Job: ...

    async def ack_many(self, acks: Sequence[Ack]) -> list[AckResult]: ...

    async def ack_ids(
        self,
        ids: Sequence[int],
        status: Literal["done", "failed"],
        *,
        owner: str | None,
        error: str | None = None,
    ) -> list[AckResult]: ...

    # operators
    async def cancel_many(
        self, job_ids: Sequence[int], *, tenant_id: str | None = None
    ) -> list[ItemResult]: ...

    async def cancel_run(self, run_id: str, *, tenant_id: str | None = None) -> RunCancel: ...

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]: ...

    async def reap(self) -> int: ...

    async def requeue(
        self,
        job_ids: Sequence[int] | None = None,
        *,
        run_id: str | None = None,
        tenant_id: str | None = None,
    ) -> int: ...

    async def purge(self, older_than_seconds: float) -> int: ...

    # schedules (recurring jobs)
    async def create_schedule(self, schedule: NewSchedule) -> Schedule: ...

    async def delete_schedule(self, tenant_id: str, name: str) -> Schedule: ...

    async def list_schedules(self, tenant_id: str | None = None) -> list[Schedule]: ...

    async def pause(self, tenant_id: str | None = None) -> QueueControls: ...

    async def resume(self, tenant_id: str | None = None) -> QueueControls: ...

    async def set_tenant_limits(
        self,
        tenant_id: str,
        *,
        weight: int = 1,
        max_leased: int | None = None,
        max_per_second: float | None = None,
    ) -> QueueControls: ...

    async def controls(self) -> QueueControls: ...

    # readers
    async def get(self, job_id: int) -> Job: ...

    async def stats(self) -> Stats: ...

    async def run_summary(self, run_id: str) -> RunSummary: ...

    # Defined last: inside the class body, later annotations would see this `list`.
    async def list(
        self,
        status: JobStatus | None = None,
        run_id: str | None = None,
        tenant_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Job]: ...


@runtime_checkable
class OwnedQueue(Queue, Protocol):
    """A queue this process opened on its own storage (SQLite, PostgreSQL), not over HTTP: it
    also claims maintenance rounds (reap and purge run here), fires schedules' due ticks and
    lists runs."""

    async def claim_maintenance(
        self, task: str, interval_seconds: float, owner: str | None = None
    ) -> MaintenanceClaim: ...

    async def list_runs(
        self, tenant_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[RunSummary]: ...

    async def fire_schedules(self, limit: int = 100) -> ScheduleFiring: ...

    # importers (`actors.importers`): jobs brought over from another system, by origin
    async def import_jobs(self, jobs: Sequence[ImportedJob]) -> list[ImportResult]: ...

    async def find_by_origin(self, origins: Sequence[str]) -> list[Job]: ...

    async def delete_imported(
        self, imported: Sequence[tuple[str, float]], *, force: bool = False
    ) -> list[ImportResult]: ...


class SingleItemVerbs:
    """The one-item verbs (`enqueue`, `renew`, `release`, `ack`), each its batch verb on one
    item, for a backend that defines the batch verbs."""

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Job]:
        raise NotImplementedError

    async def renew_many(
        self, leases: Sequence[tuple[int, str]], visibility_seconds: float
    ) -> list[LeaseResult]:
        raise NotImplementedError

    async def release_many(
        self, leases: Sequence[tuple[int, str]], delay_seconds: float = 0
    ) -> list[LeaseResult]:
        raise NotImplementedError

    async def ack_many(self, acks: Sequence[Ack]) -> list[AckResult]:
        raise NotImplementedError

    async def enqueue(
        self,
        run_id: str,
        tenant_id: str,
        r2_key: str,
        *,
        payload: object = None,
        idempotency_key: str | None = None,
        delay_seconds: float = 0,
        priority: int = 0,
        max_attempts: int | None = None,
        cross_tenant_key: bool = False,
        timeout_seconds: float | None = None,
    ) -> Job:
        """Add one job (or return the tenant's job with this idempotency key) and commit it."""
        new = NewJob(
            run_id=run_id,
            tenant_id=tenant_id,
            r2_key=r2_key,
            payload=payload,
            idempotency_key=idempotency_key,
            delay_seconds=delay_seconds,
            priority=priority,
            max_attempts=max_attempts,
            cross_tenant_key=cross_tenant_key,
            timeout_seconds=timeout_seconds,
        )
        (job,) = await self.enqueue_many([new])
        return job

    async def renew(self, job_id: int, lease_token: str, visibility_seconds: float) -> Job:
        """Extend a live lease to ``visibility_seconds`` from now; raise LeaseLost if stale."""
        (result,) = await self.renew_many([(job_id, lease_token)], visibility_seconds)
        return raise_if_refused(result)

    async def release(self, job_id: int, lease_token: str, delay_seconds: float = 0) -> Job:
        """Give a live lease back without spending an attempt; raise LeaseLost if stale."""
        (result,) = await self.release_many([(job_id, lease_token)], delay_seconds)
        return raise_if_refused(result)

    async def ack(
        self,
        job_id: int,
        lease_token: str,
        *,
        status: Literal["done", "failed"] = "done",
        result: object = None,
        error: str | None = None,
        permanent: bool = False,
        run_metrics: dict[str, float] | None = None,
    ) -> Job:
        """Record a leased job's outcome and commit it; raise LeaseLost if the lease is stale."""
        (outcome,) = await self.ack_many(
            [
                Ack(
                    job_id=job_id,
                    lease_token=lease_token,
                    status=status,
                    result=result,
                    error=error,
                    permanent=permanent,
                    run_metrics=run_metrics,
                )
            ]
        )
        return raise_if_refused(outcome)


def raise_if_refused(result: ItemResult) -> Job:
    """Return the result's job, or raise the error that explains why the call was refused."""
    if result.ok and result.job is not None:
        return result.job
    if result.reason == "not_found":
        raise JobNotFound(result.job_id)
    raise LeaseLost(result.job_id, result.reason, result.message or result.reason)


def jitter_factors(rng: random.Random, jitter: float) -> Iterator[float]:
    """Retry-delay factors in ``[1 - jitter, 1]``: spreads retries of jobs that failed together."""
    return (1.0 - jitter * rng.random() for _ in count())


# --- argument checks: the same refusals, in the same words, on every backend ----------------


def check_new_job(new: NewJob, max_payload_bytes: int) -> bytes | None:
    """Refuse a bad job; return its payload as JSON (None for none)."""
    run_id, tenant_id, r2_key = new.run_id, new.tenant_id, new.r2_key
    delay, priority = new.delay_seconds, new.priority
    if not (  # the common case at a glance; any doubt and the checks below say what
        type(run_id) is str
        and type(tenant_id) is str
        and type(r2_key) is str
        and 0 < len(run_id) <= MAX_ID_CHARS
        and 0 < len(tenant_id) <= MAX_ID_CHARS
        and 0 < len(r2_key) <= MAX_ID_CHARS
        and new.idempotency_key is None
        and new.max_attempts is None
        and type(priority) is int
        and -MAX_PRIORITY <= priority <= MAX_PRIORITY
        and type(delay) in (int, float)
        and 0 <= delay <= MAX_DELAY_SECONDS
        and new.cross_tenant_key is False
        and new.timeout_seconds is None
    ):
        for name in ("run_id", "tenant_id", "r2_key"):
            check_text(name, getattr(new, name))
        check_optional_text("idempotency_key", new.idempotency_key)
        check_delay(new.delay_seconds)
        check_range("priority", new.priority, -MAX_PRIORITY, MAX_PRIORITY)
        if new.max_attempts is not None:
            check_range("max_attempts", new.max_attempts, 1, MAX_ATTEMPTS)
        if not isinstance(new.cross_tenant_key, bool):
            raise InvalidArgument(
                f"cross_tenant_key must be true or false, not {new.cross_tenant_key!r}"
            )
        if new.timeout_seconds is not None:
            check_range(
                "timeout_seconds", new.timeout_seconds, MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS
            )
    return check_json("payload", new.payload, max_payload_bytes)


def check_ack(a: Ack, max_payload_bytes: int) -> bytes | None:
    """Refuse a bad ack; return its result as JSON (None for none)."""
    if a.status not in ("done", "failed"):
        raise InvalidArgument(f"an ack's status must be 'done' or 'failed', not {a.status!r}")
    if not isinstance(a.job_id, int) or isinstance(a.job_id, bool):
        raise InvalidArgument(f"job ids are integers, not {a.job_id!r}")
    result = check_json("result", a.result, max_payload_bytes)
    if a.error is not None and not isinstance(a.error, str):
        raise InvalidArgument(f"an ack's error must be a string, not {type(a.error).__name__}")
    for key, value in (a.run_metrics or {}).items():
        if (
            not isinstance(key, str)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidArgument(
                f"run_metrics must map names to finite numbers; {key!r}: {value!r} is not"
            )
    return result


def check_json(name: str, value: object, max_payload_bytes: int) -> bytes | None:
    """Refuse a value that is not JSON or is too large; return it as JSON."""
    if value is None:
        return None
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidArgument(f"{name} must be JSON-serialisable: {exc}") from exc
    size = len(encoded)
    if size > max_payload_bytes:
        raise PayloadTooLarge(
            f"{name} is {size} bytes as JSON, over the limit of {max_payload_bytes}; "
            "store large data in the object store and put its key in the payload"
        )
    return encoded


def check_cancel(job_ids: Sequence[int], tenant_id: str | None) -> None:
    """Refuse a cancel of too many jobs, of ids that are not integers, or for a bad tenant."""
    check_batch("job_ids", job_ids)
    for job_id in job_ids:
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            raise InvalidArgument(f"job ids are integers, not {job_id!r}")
    check_optional_text("tenant_id", tenant_id)


def check_open(max_attempts: int, max_payload_bytes: int) -> None:
    """Refuse a backend's options out of bounds when it opens."""
    check_range("max_attempts", max_attempts, 1, MAX_ATTEMPTS)
    check_range("max_payload_bytes", max_payload_bytes, 1, MAX_PAYLOAD_BYTES_LIMIT)


def check_pull(
    max: int,
    visibility_seconds: float,
    worker_id: str | None,
    owner: str | None,
    wait_seconds: float = 0,
) -> None:
    """Refuse a pull of too few or too many jobs, for a bad lease length, by a bad name, or
    that would wait too long."""
    check_range("max", max, 1, MAX_PULL)
    check_visibility(visibility_seconds)
    check_optional_text("worker_id", worker_id)
    check_optional_text("owner", owner)
    check_range("wait_seconds", wait_seconds, 0, MAX_PULL_WAIT_SECONDS)


def check_page(limit: int) -> None:
    """Refuse a page size out of bounds."""
    check_range("limit", limit, 1, MAX_PAGE)


def check_listing(status: str | None, limit: int) -> None:
    """Refuse a status filter that is not a status, and a page size out of bounds."""
    if status is not None and status not in STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    check_page(limit)


def check_maintenance(task: str, interval_seconds: float, owner: str | None) -> None:
    """Refuse a maintenance claim without a task name or with an interval out of bounds."""
    check_text("task", task)
    check_optional_text("owner", owner)
    # 0 would let every process claim every round.
    check_range("interval_seconds", interval_seconds, 0, MAX_MAINTENANCE_INTERVAL_SECONDS)
    if interval_seconds == 0:
        raise OutOfRange("interval_seconds must be more than 0: a round is due once per interval")


def check_limits(
    tenant_id: str, weight: int, max_leased: int | None, max_per_second: float | None
) -> None:
    """Refuse a tenant's share or limits out of bounds."""
    check_text("tenant_id", tenant_id)
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise InvalidArgument(f"weight must be a whole number, not {weight!r}")
    check_range("weight", weight, 1, MAX_WEIGHT)
    if max_leased is not None:
        if isinstance(max_leased, bool) or not isinstance(max_leased, int):
            raise InvalidArgument(f"max_leased must be a whole number, not {max_leased!r}")
        check_range("max_leased", max_leased, 1, MAX_TENANT_LEASED)
    if max_per_second is not None:
        check_range("max_per_second", max_per_second, MIN_TENANT_RATE, MAX_TENANT_RATE)


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    """Refuse a value that is not a number (a bool is not one) or lies outside ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a number, not {value!r}")
    if not lo <= value <= hi:  # also refuses NaN
        raise OutOfRange(f"{name} must be between {lo:g} and {hi:g}, not {value!r}")


def check_visibility(seconds: float) -> None:
    """Refuse a lease length that is not more than 0 or is over an hour."""
    check_range("visibility_seconds", seconds, 0, MAX_VISIBILITY_SECONDS)
    if seconds == 0:
        raise OutOfRange(
            "visibility_seconds must be more than 0 (a lease that is already over protects "
            f"nothing), at most {MAX_VISIBILITY_SECONDS:g}; renew long jobs instead of leasing "
            "them for longer"
        )


def check_delay(seconds: float) -> None:
    """Refuse a delay below 0 or over a day."""
    check_range("delay_seconds", seconds, 0, MAX_DELAY_SECONDS)


def check_batch(name: str, items: Sequence[object]) -> None:
    """Refuse a batch call of more than `MAX_BATCH` items."""
    if len(items) > MAX_BATCH:
        raise OutOfRange(
            f"{name} has {len(items)} items, over the limit of {MAX_BATCH} per call; split it"
        )


def check_text(name: str, value: object) -> None:
    """Refuse a value that is not a non-empty string of at most `MAX_ID_CHARS` characters."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} must be a non-empty string, not {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise OutOfRange(
            f"{name} is {len(value)} characters long, over the limit of {MAX_ID_CHARS}"
        )


def check_optional_text(name: str, value: object) -> None:
    """Refuse a value that is neither None nor a valid `check_text`."""
    if value is not None:
        check_text(name, value)


# --- schedules: the checks and the tick arithmetic both SQL backends share --------------------


def check_schedule(schedule: NewSchedule, max_payload_bytes: int) -> tuple[Cadence, bytes | None]:
    """Refuse a bad schedule; return its cadence and its payload as JSON (None for none)."""
    name = schedule.name
    if not isinstance(name, str) or re.fullmatch(SCHEDULE_NAME_PATTERN, name) is None:
        raise InvalidArgument(
            f"name {name!r} is not a schedule name: 1 to 128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    check_text("tenant_id", schedule.tenant_id)
    check_text("r2_key", schedule.r2_key)
    # The longest run id of a tick (`tick_job`) must fit the bound of run ids.
    longest = len(_tick_run_id(schedule.tenant_id, name, 0.0))
    if longest > MAX_ID_CHARS:
        raise OutOfRange(
            f"tenant_id and name are too long together: a tick's run id would be {longest} "
            f"characters, over the limit of {MAX_ID_CHARS}"
        )
    if schedule.cron is not None and (
        not isinstance(schedule.cron, str) or not 0 < len(schedule.cron) <= 256
    ):
        raise InvalidArgument("cron must be a cron expression of 1 to 256 characters")
    if not isinstance(schedule.timezone, str) or not 0 < len(schedule.timezone) <= 64:
        raise InvalidArgument("timezone must be a time zone name of 1 to 64 characters")
    timing = cadence(schedule.cron, schedule.interval_seconds, schedule.timezone)
    check_range("priority", schedule.priority, -MAX_PRIORITY, MAX_PRIORITY)
    check_range("grace_seconds", schedule.grace_seconds, 0, DAY)
    if schedule.missed not in ("catch_up", "skip"):
        raise InvalidArgument(f"missed must be 'catch_up' or 'skip', not {schedule.missed!r}")
    return timing, check_json("payload", schedule.payload, max_payload_bytes)


def check_schedule_key(tenant_id: str, name: str) -> None:
    """Refuse a tenant id or schedule name that cannot name a schedule."""
    check_text("tenant_id", tenant_id)
    if not isinstance(name, str) or re.fullmatch(SCHEDULE_NAME_PATTERN, name) is None:
        raise InvalidArgument(f"name {name!r} is not a schedule name")


def plan_ticks(
    timing: Cadence, next_tick_at: float, now: float, schedule: NewSchedule
) -> tuple[list[float], float]:
    """The ticks due at ``now`` to enqueue, oldest first, and the schedule's next tick after.

    A tick at most ``grace_seconds`` old is on time: each enqueues its own job (at most
    `MAX_TICKS_PER_FIRE` in one round; the next round goes on from there). Older ticks were
    missed: with ``missed = "catch_up"`` the latest of them enqueues one job, with ``"skip"``
    none does. Ticks are found by stepping the cadence, never by adding a period, so daylight
    saving time is the cron parser's business.
    """
    ticks: list[float] = []
    first = next_tick_at
    if now - first > schedule.grace_seconds:
        # Jump over the missed ticks: the first on-time one is the first at or after the
        # grace's start (ticks are whole seconds; 1 ms below it finds one that is on it).
        first = timing.next_after(now - schedule.grace_seconds - 0.001)
        if schedule.missed == "catch_up":
            latest_missed = timing.previous_before(first)
            if latest_missed >= next_tick_at:
                ticks.append(latest_missed)
    tick = first
    while tick <= now and len(ticks) < MAX_TICKS_PER_FIRE:
        ticks.append(tick)
        tick = timing.next_after(tick)
    return ticks, tick


def tick_job(schedule: NewSchedule, tick: float) -> NewJob:
    """The job a schedule's tick enqueues: in a run of its own, keyed by name and tick.

    The idempotency key (``schedule:<name>:<tick>``, unique within the tenant) makes a tick
    enqueue one job even if it were claimed twice; the run id names the tenant too, since run
    ids are shared by every tenant.
    """
    return NewJob(
        run_id=_tick_run_id(schedule.tenant_id, schedule.name, tick),
        tenant_id=schedule.tenant_id,
        r2_key=schedule.r2_key,
        payload=schedule.payload,
        priority=schedule.priority,
        idempotency_key=f"schedule:{schedule.name}:{tick_text(tick)}",
    )


def _tick_run_id(tenant_id: str, name: str, tick: float) -> str:
    # Unambiguous: neither a name nor a tick's text holds ':', so the tenant is what lies
    # between the first ':' and the last two.
    return f"schedule:{tenant_id}:{name}:{tick_text(tick)}"


def check_imported(job: ImportedJob, max_payload_bytes: int) -> tuple[bytes | None, bytes | None]:
    """Refuse a bad imported job; return its payload and result as JSON (None for none)."""
    for name in ("origin", "run_id", "tenant_id", "r2_key"):
        check_text(name, getattr(job, name))
    if job.status not in ("pending", "done", "failed"):
        raise InvalidArgument(
            f"an imported job's status must be pending, done or failed, not {job.status!r}"
        )
    check_range("attempts", job.attempts, 0, MAX_ATTEMPTS)
    check_range("priority", job.priority, -MAX_PRIORITY, MAX_PRIORITY)
    for name in ("created_at", "updated_at"):
        check_range(name, getattr(job, name), 0, math.inf)
    if job.finished_at is not None:
        check_range("finished_at", job.finished_at, 0, math.inf)
    check_optional_text("last_error", job.last_error)
    if not isinstance(job.cross_tenant_key, bool):
        raise InvalidArgument(
            f"cross_tenant_key must be true or false, not {job.cross_tenant_key!r}"
        )
    return (
        check_json("payload", job.payload, max_payload_bytes),
        check_json("result", job.result, max_payload_bytes),
    )


def imported_max_attempts(job: ImportedJob, default: int) -> int:
    """An imported job's attempt limit: the queue's, raised so that attempts already spent
    elsewhere never exceed it (a pending job keeps one more to run here)."""
    return min(MAX_ATTEMPTS, max(default, job.attempts + (job.status == "pending")))


def check_origins(origins: Sequence[object]) -> None:
    """Refuse a lookup by origin of too many or of something not an origin."""
    check_batch("origins", origins)
    for origin in origins:
        check_text("origin", origin)
