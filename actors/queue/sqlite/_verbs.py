"""The queue's SQL: every verb as a synchronous function of a connection and ``now``.

Callers own the transaction: the writer runs a group of requests in one transaction, each in
its own SAVEPOINT (requests merged into one call, `_writer.Batch`, in one), and a request
alone (a group of one, or the fast path) directly in the transaction, with no SAVEPOINT, since
its failure rolls the whole transaction back. Either way a verb that raises leaves nothing
behind; a verb that must undo part of its work and go on takes a SAVEPOINT of its own
(`fire_schedules`, per schedule). These functions only read and write rows. ``now`` is always
a parameter, so tests and the Hypothesis model control time.
"""

from __future__ import annotations

import functools
import math
import operator
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from actors.bounds import MAX_SCHEDULES_PER_TENANT
from actors.cron import Cadence, cadence
from actors.errors import (
    InvalidArgument,
    JobNotFound,
    OutOfRange,
    QueueError,
    RunNotFound,
    ScheduleNotFound,
)
from actors.log import get_logger
from actors.queue._rows import (
    COLUMNS,
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    ByOwner,
    cancel_refusal,
    cancelled,
    changed_since,
    foreign_run,
    job_from_row,
    origin_not_found,
    parse_cursor,
    refusal,
    schedule_from_row,
    summary_from_row,
)
from actors.queue._rows import encode as _encode
from actors.queue._rows import metrics_decoder as _metrics_decoder
from actors.queue.base import plan_ticks, tick_job
from actors.queue.model import (
    Ack,
    Backoff,
    ImportedJob,
    ImportResult,
    ItemResult,
    Job,
    JobStatus,
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
    TenantControl,
    Throughput,
)

__all__ = [
    "Rotation",
    "ack",
    "cancel",
    "cancel_run",
    "claim_maintenance",
    "controls",
    "create_schedule",
    "delete_imported",
    "delete_schedule",
    "enqueue",
    "find_by_origin",
    "fire_schedules",
    "get",
    "import_jobs",
    "list_jobs",
    "list_runs",
    "list_schedules",
    "pull",
    "purge",
    "reap",
    "release",
    "release_many",
    "renew",
    "renew_many",
    "requeue",
    "run_summary",
    "set_paused",
    "set_tenant_limits",
    "start",
    "start_many",
    "stats",
    "throughput",
]

log = get_logger("actors.queue")

# A lease is live while the job is leased under this token and has not run out.
LIVE_LEASE = "status = 'leased' AND lease_token = :token AND lease_expires_at > :now"
# A live lease whose job nobody asked to cancel: only such a lease is renewed or started.
LIVE_UNCANCELLED = f"{LIVE_LEASE} AND cancel_requested_at IS NULL"
# The ids-only ack's fence: a live lease that this principal (`lease_owner`) took.
LIVE_OWNED = "status = 'leased' AND lease_owner IS :owner AND lease_expires_at > :now"


def encode_json(value: object) -> str | None:
    """Encode a payload or result as JSON text (None stays NULL)."""
    return None if value is None else _encode(value).decode()


# --- producers -----------------------------------------------------------------------------


def enqueue(
    conn: sqlite3.Connection, now: float, jobs: Sequence[NewJob], default_max_attempts: int
) -> list[Job]:
    """Insert ``jobs`` (or find them by idempotency key) and create or touch their runs.

    One ``INSERT`` per `ROWS_PER_STATEMENT` jobs; a job whose idempotency key is taken (by an
    earlier job, or one earlier in this batch) returns the job that holds it.
    """
    out: list[Job | None] = []
    runs: dict[str, str] = {}
    added: Counter[str] = Counter()
    taken: list[tuple[int, NewJob]] = []  # (position, job) of those whose key was taken
    # Invariant: a run belongs to exactly one tenant, within one call too (the writer merges
    # concurrent callers' enqueues into one call: this makes the merged call fail, and each
    # caller's request then runs alone and meets the check against the stored run below).
    owners: dict[str, str] = {}
    for new in jobs:
        if owners.setdefault(new.run_id, new.tenant_id) != new.tenant_id:
            raise InvalidArgument(
                f"run {new.run_id!r} is given to tenants {owners[new.run_id]!r} and "
                f"{new.tenant_id!r} in one request; a run has one tenant. Use a run id per tenant"
            )
    for first in range(0, len(jobs), ROWS_PER_STATEMENT):
        chunk = jobs[first : first + ROWS_PER_STATEMENT]
        params: list[object] = []
        for new in chunk:
            params += (
                new.run_id,
                new.tenant_id,
                new.r2_key,
                encode_json(new.payload),
                new.max_attempts or default_max_attempts,
                new.priority,
                now + new.delay_seconds,
                new.idempotency_key,
                now,
                now,
                new.cross_tenant_key,
                new.timeout_seconds,
            )
        rows = conn.execute(_insert_sql(len(chunk)), params).fetchall()
        # The rows come back in no promised order; ids grow in the VALUES' order, and a job
        # is missing exactly when its key was taken (before, or earlier in this statement).
        rows.sort(key=_first)
        inserted = iter(rows)
        row = next(inserted, None)
        for new in chunk:
            # A key is inserted once: a later job with the same key finds the next row not its.
            if row is not None and (
                new.idempotency_key is None
                or (row[2] == new.tenant_id and row[15] == new.idempotency_key)
            ):
                runs[new.run_id] = new.tenant_id
                added[new.run_id] += 1
                out.append(job_from_row(row))
                row = next(inserted, None)
            else:
                taken.append((len(out), new))
                out.append(None)
        if row is not None:  # every inserted row belongs to a job of the chunk
            raise QueueError("enqueue: an inserted row matched no job of the batch")
    for position, new in taken:  # the idempotency key is taken: return the job that holds it
        row = conn.execute(
            f"SELECT {COLUMNS} FROM jobs WHERE tenant_id = ? AND idempotency_key = ?",
            (new.tenant_id, new.idempotency_key),
        ).fetchone()
        out[position] = job_from_row(row)
    for run_id, tenant_id in runs.items():
        # A new job reopens a finished run. Invariant: a run belongs to exactly one tenant.
        touched = conn.execute(
            """
            INSERT INTO runs (run_id, tenant_id, created_at, updated_at, pending)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (run_id) DO UPDATE SET updated_at = excluded.updated_at, finished_at = NULL,
                                               pending = runs.pending + excluded.pending
            WHERE runs.tenant_id = excluded.tenant_id
            RETURNING run_id
            """,
            (run_id, tenant_id, now, now, added[run_id]),
        ).fetchone()
        if touched is None:
            (owner,) = conn.execute(
                "SELECT tenant_id FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            raise InvalidArgument(
                f"run {run_id!r} belongs to tenant {owner!r}, not {tenant_id!r}; a run has one "
                "tenant. Use a new run id for this tenant"
            )
    return [job for job in out if job is not None]


# Rows per multi-row statement: SQLite binds at most 32,766 parameters to one statement.
ROWS_PER_STATEMENT = 500
_first = operator.itemgetter(0)


def _numbered(rows: int, width: int, *, after: int = 0) -> str:
    """``rows`` rows of ``width`` parameters for a multi-row statement, numbered from
    ``after + 1`` (the statement's own parameters, ``?1`` to ``?after``, come first)."""
    return ", ".join(
        "(" + ", ".join(f"?{after + r * width + c}" for c in range(1, width + 1)) + ")"
        for r in range(rows)
    )


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    """The INSERT of ``rows`` new jobs (`enqueue`)."""
    return f"""
        INSERT INTO jobs (run_id, tenant_id, r2_key, payload, max_attempts, priority,
                          available_at, idempotency_key, created_at, updated_at,
                          cross_tenant_key, timeout_seconds)
        VALUES {_numbered(rows, 12)}
        ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING {COLUMNS}
    """


# --- consumers -----------------------------------------------------------------------------


class Rotation:
    """A fair claimer's place in the round of tenants: the last tenant its previous claim served,
    and whether that claim was one tenant's whole claim (``alone``: no other tenant pending, no
    control stored).

    Each queue object keeps its own, so the round is per claimer; both are hints, not
    guarantees (``alone`` only orders a pull's statements), and neither is stored.
    """

    __slots__ = ("alone", "cursor")

    def __init__(self) -> None:
        self.cursor: str | None = None
        self.alone = False


# The claim in the global order: highest priority first, then the longest available.
_CLAIM = f"""
    UPDATE jobs
    SET status = 'leased', attempts = attempts + 1,
        lease_token = lower(hex(randomblob(16))), lease_expires_at = :expires,
        worker_id = :worker, lease_owner = :owner,
        started_at = CASE WHEN :started THEN :now END, updated_at = :now
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'pending' AND available_at <= :now {{skip}}
        ORDER BY priority DESC, available_at
        LIMIT :max
    )
    RETURNING {COLUMNS}
"""
_CLAIM_ALL = _CLAIM.format(skip="")
# Uncorrelated: checked once per claim, not per row.
_CLAIM_UNCONTROLLED = _CLAIM.format(skip="AND NOT EXISTS (SELECT 1 FROM queue_controls)")
_CLAIM_ONE_TENANT = _CLAIM.format(
    skip="""AND NOT EXISTS (SELECT 1 FROM queue_controls)
        AND (SELECT min(tenant_id) FROM jobs INDEXED BY jobs_tenant_claim WHERE status = 'pending')
            = (SELECT max(tenant_id) FROM jobs INDEXED BY jobs_tenant_claim
               WHERE status = 'pending')"""
)
_CLAIM_UNPAUSED = _CLAIM.format(skip="AND tenant_id NOT IN (SELECT value FROM json_each(:paused))")
# The claim of jobs already chosen (a fair or limited claim), by id (`+status`: found by
# rowid, not through an index on status).
_CLAIM_IDS = f"""
    UPDATE jobs
    SET status = 'leased', attempts = attempts + 1,
        lease_token = lower(hex(randomblob(16))), lease_expires_at = :expires,
        worker_id = :worker, lease_owner = :owner,
        started_at = CASE WHEN :started THEN :now END, updated_at = :now
    WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'pending'
    RETURNING {COLUMNS}
"""
# The next tenant with a pending job after a tenant id: one seek of `jobs_tenant_claim` (a
# loose scan, step by step), never a scan of the backlog.
_NEXT_TENANT = """
    SELECT min(tenant_id) FROM jobs INDEXED BY jobs_tenant_claim
    WHERE status = 'pending' AND tenant_id > ?
"""
# Whether any control is stored, and the first two tenants with pending jobs: one statement
# that tells the common cases (nothing pending; one tenant and no control) from the rest.
_PROBE = """
    SELECT EXISTS (SELECT 1 FROM queue_controls), t.first,
           (SELECT min(tenant_id) FROM jobs INDEXED BY jobs_tenant_claim
            WHERE status = 'pending' AND tenant_id > t.first)
    FROM (SELECT min(tenant_id) AS first FROM jobs INDEXED BY jobs_tenant_claim
          WHERE status = 'pending') t
"""
# A tenant's first available jobs in the claim's order (`jobs_tenant_claim`).
_TENANT_FIRST = """
    SELECT id, priority, available_at FROM jobs INDEXED BY jobs_tenant_claim
    WHERE status = 'pending' AND tenant_id = :tenant AND available_at <= :now
    ORDER BY priority DESC, available_at
    LIMIT :limit
"""
# A tenant's live leases, counted over the leased jobs only (`jobs_lease_expiry`).
_TENANT_LEASED = """
    SELECT count(*) FROM jobs INDEXED BY jobs_lease_expiry
    WHERE status = 'leased' AND lease_expires_at > :now AND tenant_id = :tenant
"""
_CONTROL_COLUMNS = "tenant_id, paused, weight, max_leased, max_per_second, rate_tokens, rate_at"


def pull(
    conn: sqlite3.Connection,
    now: float,
    max: int,
    visibility_seconds: float,
    worker_id: str | None,
    owner: str | None = None,
    started: bool = False,
    rotation: Rotation | None = None,
) -> list[Job]:
    """Lease up to ``max`` visible jobs for ``visibility_seconds``.

    Nothing of a paused tenant, nothing at all while the queue is paused, and no more of a
    tenant than its limits allow (`set_tenant_limits`). With a ``rotation`` the claim is fair:
    tenants with available jobs take turns, ``weight`` jobs each per round, starting after the
    rotation's cursor; priority orders each tenant's own jobs. Without one, the highest
    priority goes first across tenants. ``owner`` (the principal that asked, over HTTP) is
    recorded as each lease's ``lease_owner``; ``started`` marks the jobs started at once.
    """
    reap(conn, now)
    params: dict[str, object] = {
        "now": now,
        "expires": now + visibility_seconds,
        "worker": worker_id,
        "owner": owner,
        "started": started,
        "max": max,
    }
    if rotation is None:
        # The common case in one statement: no control stored (else it leases nothing).
        jobs = _claim_ordered(conn, params, _CLAIM_UNCONTROLLED)
        if jobs:
            return jobs
    else:
        common = _fair_common_case(conn, params, rotation)
        rotation.alone = bool(common)
        if common is not None:
            if common:
                rotation.cursor = common[0].tenant_id
            return common
    controls = {
        row[0]: row for row in conn.execute(f"SELECT {_CONTROL_COLUMNS} FROM queue_controls")
    }
    if not controls and rotation is None:
        return []  # the claim above found nothing available
    whole = controls.pop("", None)
    if whole is not None and whole[1]:
        return []  # the queue is paused
    limited = any(row[3] is not None or row[4] is not None for row in controls.values())
    if rotation is None and not limited:
        paused = [tenant for tenant, row in controls.items() if row[1]]
        if paused:
            params["paused"] = _encode(paused).decode()
        return _claim_ordered(conn, params, _CLAIM_UNPAUSED if paused else _CLAIM_ALL)
    buckets: dict[str, float] = {}

    def shares() -> Iterator[tuple[str, int, int]]:
        """Each tenant's share, in turn order: how many it may take now (its limits), its
        weight; paused tenants and those at a limit left out."""
        for tenant in _tenants_in_turn(conn, None if rotation is None else rotation.cursor):
            row = controls.get(tenant)
            quota, weight = max, 1
            if row is not None:
                _, paused_, weight, max_leased, rate, tokens, rate_at = row
                if paused_:
                    continue
                if max_leased is not None:
                    (live,) = conn.execute(
                        _TENANT_LEASED, {"now": now, "tenant": tenant}
                    ).fetchone()
                    quota = min(quota, max_leased - live)
                if rate is not None:
                    # A bucket of max(1, rate) leases, refilled at `rate` per second.
                    tokens = min(_max(1.0, rate), tokens + (now - rate_at) * rate)
                    buckets[tenant] = tokens
                    quota = min(quota, math.floor(tokens))
            if quota > 0:
                yield tenant, quota, weight if rotation is not None else 1

    chosen, seen = _choose(conn, now, max, shares(), fair=rotation is not None)
    if not chosen:
        return []
    rows = conn.execute(_CLAIM_IDS, {**params, "ids": _encode(chosen).decode()}).fetchall()
    jobs = [job_from_row(row) for row in rows]
    jobs.sort(key=lambda j: (-j.priority, j.available_at, j.id))
    taken = Counter(job.tenant_id for job in jobs)
    for tenant, tokens in buckets.items():
        conn.execute(
            "UPDATE queue_controls SET rate_tokens = ?, rate_at = ? WHERE tenant_id = ?",
            (tokens - taken[tenant], now, tenant),
        )
    if rotation is not None and jobs:
        order = {tenant: i for i, (tenant, _, _) in enumerate(seen)}
        rotation.cursor = _max(taken, key=order.__getitem__)
    return jobs


def _fair_common_case(
    conn: sqlite3.Connection, params: dict[str, object], rotation: Rotation
) -> list[Job] | None:
    """A fair claim's common cases, else None (controls stored or several tenants pending: the
    turns decide): nothing pending (``[]``), or one tenant with pending jobs and no control
    stored (its turn is the whole claim, in the global order).

    Each in one statement after the reap, as before fairness: a claimer whose last claim was
    one tenant's whole claim claims first (`_CLAIM_ONE_TENANT` asks the question inside the
    claim; the probe follows only when that leased nothing); any other asks first (`_PROBE`),
    so an idle queue's pull is the probe alone, and claims after if one tenant has jobs.
    """
    if rotation.alone:
        jobs = _claim_ordered(conn, params, _CLAIM_ONE_TENANT)
        if jobs:
            return jobs
    controlled, first, second = conn.execute(_PROBE).fetchone()
    if controlled or second is not None:
        return None
    if first is None or rotation.alone:
        return []  # nothing pending, or the claim above found none of that tenant's available
    # The probe's answer holds: both statements run in the writer's one transaction.
    return _claim_ordered(conn, params, _CLAIM_ALL)


def _tenants_in_turn(conn: sqlite3.Connection, cursor: str | None) -> Iterator[str]:
    """The tenants with pending jobs, from the first after ``cursor`` round to ``cursor``
    itself: one index seek each, taken only as far as the caller reads."""
    tenant = cursor or ""  # tenant ids are never empty
    while (tenant := conn.execute(_NEXT_TENANT, (tenant,)).fetchone()[0]) is not None:
        yield tenant
    if cursor:
        tenant = ""
        while (tenant := conn.execute(_NEXT_TENANT, (tenant,)).fetchone()[0]) is not None:
            if tenant > cursor:
                return
            yield tenant


_max = max  # `pull`'s parameter `max` hides the builtin


def _claim_ordered(conn: sqlite3.Connection, params: dict[str, object], sql: str) -> list[Job]:
    rows = conn.execute(sql, params).fetchall()
    # RETURNING does not keep the subquery's order; restore it.
    jobs = [job_from_row(row) for row in rows]
    jobs.sort(key=lambda j: (-j.priority, j.available_at, j.id))
    return jobs


def _choose(
    conn: sqlite3.Connection,
    now: float,
    max: int,
    shares: Iterator[tuple[str, int, int]],
    *,
    fair: bool,
) -> tuple[list[int], list[tuple[str, int, int]]]:
    """Pick up to ``max`` job ids from the tenants' ``(tenant, quota, weight)`` shares; return
    them and the shares read.

    Fair: round-robin in the shares' order, ``weight`` of a tenant's jobs per round, each
    tenant's in the claim's order; the shares are read only until the first round is full.
    Else: the global order over every tenant's first jobs.
    """
    if not fair:
        every = list(shares)
        firsts = [
            row
            for tenant, quota, _ in every
            for row in conn.execute(
                _TENANT_FIRST, {"tenant": tenant, "now": now, "limit": min(quota, max)}
            )
        ]
        firsts.sort(key=lambda r: (-r[1], r[2], r[0]))
        return [row[0] for row in firsts[:max]], every
    seen: list[tuple[str, int, int]] = []
    firsts_of: dict[str, list[int]] = {}
    served = 0
    for tenant, quota, weight in shares:
        seen.append((tenant, quota, weight))
        firsts_of[tenant] = _firsts(conn, now, tenant, min(quota, weight))
        served += len(firsts_of[tenant])
        if served >= max:
            # The first round is full without the tenants after this one.
            return _round_robin(max, seen, firsts_of), seen
    # Every tenant is known and the first round did not fill the claim: more rounds.
    rounds = -(-max // _max(1, sum(weight for _, _, weight in seen)))
    wanted = {tenant: min(quota, weight * rounds) for tenant, quota, weight in seen}
    for tenant, _, weight in seen:
        if len(firsts_of[tenant]) == weight and wanted[tenant] > weight:
            firsts_of[tenant] = _firsts(conn, now, tenant, wanted[tenant])
    chosen = _round_robin(max, seen, firsts_of)
    if len(chosen) < max:
        # Some tenants had fewer jobs than their share: the rest of the claim goes to those
        # that may have more, still in turns.
        for tenant, quota, _ in seen:
            if len(firsts_of[tenant]) == wanted[tenant] < quota:
                firsts_of[tenant] = _firsts(conn, now, tenant, min(quota, max))
        chosen = _round_robin(max, seen, firsts_of)
    return chosen, seen


def _firsts(conn: sqlite3.Connection, now: float, tenant: str, limit: int) -> list[int]:
    rows = conn.execute(_TENANT_FIRST, {"tenant": tenant, "now": now, "limit": limit})
    return [row[0] for row in rows]


def _round_robin(
    max: int, shares: Sequence[tuple[str, int, int]], firsts_of: dict[str, list[int]]
) -> list[int]:
    chosen: list[int] = []
    position = 0
    while len(chosen) < max:
        before = len(chosen)
        for tenant, _, weight in shares:
            ids = firsts_of.get(tenant, [])
            chosen.extend(ids[position * weight : (position + 1) * weight][: max - len(chosen)])
            if len(chosen) >= max:
                break
        if len(chosen) == before:
            break
        position += 1
    return chosen


def reap(conn: sqlite3.Connection, now: float) -> int:
    """Return every expired lease's job to pending, or fail it when its attempts are used up.

    A job never started under the lease (`start`) gets its attempt back: the worker died, or
    lost the lease, before the job could have caused it. A started one spends it, so a job
    that kills its worker still runs out of attempts. A job whose cancellation was requested
    ends `cancelled`, never pending again.
    """
    # INDEXED BY: left alone, the planner walks every leased row through jobs_claim(status),
    # which makes each pull O(leased jobs) instead of O(expired leases).
    rows = conn.execute(
        """
        UPDATE jobs INDEXED BY jobs_lease_expiry
        SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                WHEN started_at IS NOT NULL AND attempts >= max_attempts
                THEN 'failed' ELSE 'pending' END,
            attempts = CASE WHEN started_at IS NULL THEN attempts - 1 ELSE attempts END,
            last_error = CASE WHEN cancel_requested_at IS NOT NULL THEN last_error
                WHEN started_at IS NOT NULL AND attempts >= max_attempts
                THEN 'lease expired on the last attempt (' || attempts || ' of ' || max_attempts
                     || ') held by worker ' || coalesce(worker_id, '?')
                     || ', which started the job and then stopped renewing it'
                ELSE last_error END,
            finished_at = CASE WHEN cancel_requested_at IS NOT NULL
                OR (started_at IS NOT NULL AND attempts >= max_attempts) THEN :now END,
            lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, lease_owner = NULL,
            started_at = NULL, updated_at = :now
        WHERE status = 'leased' AND lease_expires_at <= :now
        RETURNING run_id, status
        """,
        {"now": now},
    ).fetchall()
    return len(rows)


def start(conn: sqlite3.Connection, now: float, job_id: int, token: str) -> ItemResult:
    """Mark a live lease's job started: from now on, the lease expiring spends its attempt."""
    row = conn.execute(
        f"""
        UPDATE jobs SET started_at = coalesce(started_at, :now), updated_at = :now
        WHERE id = :id AND {LIVE_UNCANCELLED}
        RETURNING {COLUMNS}
        """,
        {"id": job_id, "token": token, "now": now},
    ).fetchone()
    return _applied(row) if row else _refused(conn, now, job_id, token, "started")


def renew(
    conn: sqlite3.Connection, now: float, job_id: int, token: str, visibility_seconds: float
) -> ItemResult:
    """Extend a live lease to ``now + visibility_seconds``."""
    row = conn.execute(
        f"""
        UPDATE jobs SET lease_expires_at = :now + :visibility, updated_at = :now
        WHERE id = :id AND {LIVE_UNCANCELLED}
        RETURNING {COLUMNS}
        """,
        {"id": job_id, "token": token, "now": now, "visibility": visibility_seconds},
    ).fetchone()
    return _applied(row) if row else _refused(conn, now, job_id, token, "renewed")


def release(
    conn: sqlite3.Connection, now: float, job_id: int, token: str, delay_seconds: float
) -> ItemResult:
    """Give a live lease back: the job is pending again after ``delay_seconds``, attempt unspent.

    A job whose cancellation was requested ends `cancelled` instead (refused as ``cancelled``).
    """
    row = conn.execute(
        f"""
        UPDATE jobs
        SET status = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
            attempts = attempts - 1, available_at = :now + :delay,
            finished_at = CASE WHEN cancel_requested_at IS NOT NULL THEN :now END,
            lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, lease_owner = NULL,
            started_at = NULL, updated_at = :now
        WHERE id = :id AND {LIVE_LEASE}
        RETURNING {COLUMNS}
        """,
        {"id": job_id, "token": token, "now": now, "delay": delay_seconds},
    ).fetchone()
    if row is None:
        return _refused(conn, now, job_id, token, "released")
    job = job_from_row(row)
    if job.status == "cancelled":
        return cancelled(job, "released")
    return ItemResult(job_id=job.id, ok=True, reason="ok", job=job)


def start_many(
    conn: sqlite3.Connection, now: float, leases: Sequence[tuple[int, str]]
) -> list[ItemResult]:
    """`start` each lease; one statement per `ROWS_PER_STATEMENT` leases."""
    return _leases(
        conn,
        now,
        leases,
        "started",
        "started_at = coalesce(started_at, ?1), updated_at = ?1",
        live=_BATCH_LIVE_UNCANCELLED,
        one=lambda i, t: start(conn, now, i, t),
    )


def renew_many(
    conn: sqlite3.Connection,
    now: float,
    leases: Sequence[tuple[int, str]],
    visibility_seconds: float,
) -> list[ItemResult]:
    """`renew` each lease; one statement per `ROWS_PER_STATEMENT` leases."""
    return _leases(
        conn,
        now,
        leases,
        "renewed",
        "lease_expires_at = ?1 + ?2, updated_at = ?1",
        live=_BATCH_LIVE_UNCANCELLED,
        one=lambda i, t: renew(conn, now, i, t, visibility_seconds),
        param=visibility_seconds,
    )


def release_many(
    conn: sqlite3.Connection, now: float, leases: Sequence[tuple[int, str]], delay_seconds: float
) -> list[ItemResult]:
    """`release` each lease; one statement per `ROWS_PER_STATEMENT` leases."""
    return _leases(
        conn,
        now,
        leases,
        "released",
        _RELEASE_SET,
        live=_BATCH_LIVE,
        one=lambda i, t: release(conn, now, i, t, delay_seconds),
        param=delay_seconds,
    )


# A batch's fences (`LIVE_LEASE`, `LIVE_UNCANCELLED`) against its row `a`, ``?1`` now.
_BATCH_LIVE = "status = 'leased' AND lease_token = a.token AND lease_expires_at > ?1"
_BATCH_LIVE_UNCANCELLED = f"{_BATCH_LIVE} AND cancel_requested_at IS NULL"
# `release`'s SET with ``?1`` now and ``?2`` the delay.
_RELEASE_SET = """
    status = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
    attempts = attempts - 1, available_at = ?1 + ?2,
    finished_at = CASE WHEN cancel_requested_at IS NOT NULL THEN ?1 END,
    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, lease_owner = NULL,
    started_at = NULL, updated_at = ?1
"""


def _leases(
    conn: sqlite3.Connection,
    now: float,
    leases: Sequence[tuple[int, str]],
    verb: str,
    set_sql: str,
    *,
    live: str,
    one: Callable[[int, str], ItemResult],
    param: float = 0.0,
) -> list[ItemResult]:
    """One fenced change (``SET set_sql`` where ``live``) to each lease, in one statement per
    chunk; one at a time (``one``) when a batch names a lease twice, so each sees the one
    before it, or holds a single lease (a shorter statement)."""
    if len(leases) < 2 or len({job_id for job_id, _ in leases}) != len(leases):
        return [one(job_id, token) for job_id, token in leases]
    rows: dict[int, Sequence[Any]] = {}
    for first in range(0, len(leases), ROWS_PER_STATEMENT):
        chunk = leases[first : first + ROWS_PER_STATEMENT]
        params: list[object] = [now, param]
        for job_id, token in chunk:
            params += (job_id, token)
        sql = _lease_sql(len(chunk), set_sql, live)
        rows.update((row[0], row) for row in conn.execute(sql, params))
    results: list[ItemResult] = []
    for job_id, token in leases:
        row = rows.get(job_id)
        if row is None:
            results.append(_refused(conn, now, job_id, token, verb))
            continue
        job = job_from_row(row)
        if job.status == "cancelled":
            results.append(cancelled(job, verb))
        else:
            results.append(ItemResult(job_id=job.id, ok=True, reason="ok", job=job))
    return results


@functools.lru_cache(maxsize=64)
def _lease_sql(rows: int, set_sql: str, live: str) -> str:
    return f"""
        WITH a (job, token) AS (VALUES {_numbered(rows, 2, after=2)})
        UPDATE jobs SET {set_sql}
        FROM a
        WHERE jobs.id = a.job AND {live}
        RETURNING {COLUMNS}
    """


def ack(
    conn: sqlite3.Connection,
    now: float,
    acks: Iterable[Ack],
    backoff: Backoff,
    jitter_factors: Iterable[float],
    *,
    owned: ByOwner | None = None,
) -> list[ItemResult]:
    """Record each ack's outcome under its live lease; refuse (per item) those whose lease is not.

    ``done`` stores the result. A job whose cancellation was requested ends ``cancelled``
    whatever the ack says (refused as ``cancelled``, its result discarded). ``failed`` returns
    the job to pending after a backoff while attempts remain, else (or when ``permanent``)
    makes it terminally failed. Accepted acks add their ``run_metrics`` to the run, and a run
    whose last job finished gets ``finished_at``.
    With ``owned`` (the seed's ``ack(ids, status)``, whose acks carry no token) a lease is live
    when ``owned.owner`` took it and it has not run out.
    """
    items = list(zip(acks, jitter_factors, strict=False))
    # Each item's row (applied) or refusal, in the items' order.
    outcomes: list[Sequence[Any] | ItemResult] = []
    if len(items) > 1 and len({a.job_id for a, _ in items}) == len(items):
        rows: dict[int, Sequence[Any]] = {}
        for first in range(0, len(items), ROWS_PER_STATEMENT):
            chunk = items[first : first + ROWS_PER_STATEMENT]
            params: list[object] = [now, None if owned is None else owned.owner]
            params += (backoff.cap_seconds, backoff.base_seconds)
            for a, factor in chunk:
                done = a.status == "done"
                params += (
                    a.job_id,
                    a.lease_token,
                    done,
                    encode_json(a.result) if done else None,
                    a.error,
                    a.permanent,
                    factor,
                )
            sql = _ack_sql(len(chunk), owned is not None)
            rows.update((row[0], row) for row in conn.execute(sql, params))
        for a, _ in items:
            row = rows.get(a.job_id)
            outcomes.append(
                row
                if row is not None
                else _refused(conn, now, a.job_id, a.lease_token, "acked", a.status, owned=owned)
            )
    else:
        # One ack (a shorter statement), or the same job more than once (two callers' acks
        # merged by the writer: a stale holder's and the live one's): each item is applied and
        # judged in its turn, so it sees the ones before it and gets its own outcome.
        for a, factor in items:
            row = _ack_one(conn, now, a, backoff, factor, owned)
            outcomes.append(
                row
                if row is not None
                else _refused(conn, now, a.job_id, a.lease_token, "acked", a.status, owned=owned)
            )
    results: list[ItemResult] = []
    metrics: dict[str, dict[str, float]] = {}
    for (a, _), outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, ItemResult):
            results.append(outcome)
            continue
        job = job_from_row(outcome)
        if job.status == "cancelled":
            # Invariant: nothing cancelled is ever marked done; its outcome is discarded.
            results.append(cancelled(job, "acked"))
            continue
        results.append(ItemResult(job_id=job.id, ok=True, reason="ok", job=job))
        if a.run_metrics:
            into = metrics.setdefault(job.run_id, {})
            for key, value in a.run_metrics.items():
                into[key] = into.get(key, 0.0) + value
    _add_run_metrics(conn, now, metrics)
    return results


@functools.lru_cache(maxsize=64)
def _ack_sql(rows: int, owned: bool) -> str:
    """The ack of ``rows`` jobs in one statement (`ack`); ``?1`` now, ``?2`` the owner of an
    ids-only ack, ``?3`` and ``?4`` the backoff's cap and base, then per ack its job id,
    token, whether done, result, error, whether permanent and jitter factor."""
    final = "(a.permanent OR attempts >= max_attempts OR cancel_requested_at IS NOT NULL)"
    # done, or a failure that ends the job: it keeps its lease's marks
    ends = f"(a.done OR {final})"
    fence = "lease_owner IS ?2" if owned else "lease_token = a.token"
    return f"""
        WITH a (job, token, done, outcome, error, permanent, factor) AS (
            VALUES {_numbered(rows, 7, after=4)}
        )
        UPDATE jobs
        SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                WHEN a.done THEN 'done' WHEN {final} THEN 'failed' ELSE 'pending' END,
            result = CASE WHEN NOT a.done THEN jobs.result
                WHEN cancel_requested_at IS NULL THEN a.outcome END,
            available_at = CASE WHEN {ends} THEN available_at
                ELSE ?1 + min(?3, ?4 * (1 << min(attempts - 1, 40))) * a.factor END,
            finished_at = CASE WHEN {ends} THEN ?1 END,
            lease_token = CASE WHEN {ends} THEN lease_token END,
            worker_id = CASE WHEN {ends} THEN worker_id END,
            lease_owner = CASE WHEN {ends} THEN lease_owner END,
            started_at = CASE WHEN {ends} THEN started_at END,
            last_error = CASE WHEN a.done THEN last_error ELSE a.error END,
            lease_expires_at = NULL, updated_at = ?1
        FROM a
        WHERE jobs.id = a.job AND status = 'leased' AND {fence} AND lease_expires_at > ?1
        RETURNING {COLUMNS}
    """


def _ack_one(
    conn: sqlite3.Connection,
    now: float,
    a: Ack,
    backoff: Backoff,
    factor: float,
    owned: ByOwner | None,
) -> Sequence[Any] | None:
    """One ack's statement (`ack` of a batch that names a job twice); its row if applied."""
    params = {
        "id": a.job_id,
        "token": a.lease_token,
        "owner": None if owned is None else owned.owner,
        "now": now,
        "error": a.error,
    }
    fence = LIVE_LEASE if owned is None else LIVE_OWNED
    if a.status == "done":
        row: Sequence[Any] | None = conn.execute(
            f"""
            UPDATE jobs
            SET status = CASE WHEN cancel_requested_at IS NULL THEN 'done'
                    ELSE 'cancelled' END,
                result = CASE WHEN cancel_requested_at IS NULL THEN :result END,
                lease_expires_at = NULL, finished_at = :now, updated_at = :now
            WHERE id = :id AND {fence}
            RETURNING {COLUMNS}
            """,
            {**params, "result": encode_json(a.result)},
        ).fetchone()
        return row
    # Terminal when permanent or out of attempts (or cancelled); else pending again after a
    # backoff.
    row = conn.execute(
        f"""
        UPDATE jobs
        SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                WHEN {_FINAL} THEN 'failed' ELSE 'pending' END,
            available_at = CASE WHEN {_FINAL}
                THEN available_at
                ELSE :now + min(:cap, :base * (1 << min(attempts - 1, 40))) * :factor END,
            finished_at = CASE WHEN {_FINAL} THEN :now END,
            lease_token = CASE WHEN {_FINAL} THEN lease_token END,
            worker_id = CASE WHEN {_FINAL} THEN worker_id END,
            lease_owner = CASE WHEN {_FINAL} THEN lease_owner END,
            started_at = CASE WHEN {_FINAL} THEN started_at END,
            lease_expires_at = NULL, last_error = :error, updated_at = :now
        WHERE id = :id AND {fence}
        RETURNING {COLUMNS}
        """,
        {
            **params,
            "permanent": a.permanent,
            "cap": backoff.cap_seconds,
            "base": backoff.base_seconds,
            "factor": factor,
        },
    ).fetchone()
    return row


# An ack that fails the job ends it (a failure for good, or the job's last attempt).
_FINAL = "(:permanent OR attempts >= max_attempts OR cancel_requested_at IS NOT NULL)"


def _add_run_metrics(
    conn: sqlite3.Connection, now: float, metrics: dict[str, dict[str, float]]
) -> None:
    for run_id, added in metrics.items():
        (stored,) = conn.execute("SELECT metrics FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        total = _metrics_decoder.decode(stored)
        for key, value in added.items():
            total[key] = total.get(key, 0.0) + value
        conn.execute(
            "UPDATE runs SET metrics = ?, updated_at = ? WHERE run_id = ?",
            (_encode(total).decode(), now, run_id),
        )


def _close_runs(conn: sqlite3.Connection, now: float, run_ids: Iterable[str]) -> None:
    # Invariant: runs.finished_at is set exactly while none of the run's jobs is unfinished.
    # A status change closes its run in its own statement (migration 11's trigger); jobs
    # inserted (imported) or deleted pass no such trigger, so their verbs close runs here, by
    # the stored counts.
    for run_id in run_ids:
        conn.execute(
            """
            UPDATE runs SET finished_at = ?1, updated_at = ?1
            WHERE run_id = ?2 AND finished_at IS NULL AND pending = 0 AND leased = 0
            """,
            (now, run_id),
        )


def _applied(row: Sequence[Any]) -> ItemResult:
    job = job_from_row(row)
    return ItemResult(job_id=job.id, ok=True, reason="ok", job=job)


def _refused(
    conn: sqlite3.Connection,
    now: float,
    job_id: int,
    token: str,
    verb: str,
    ack_status: JobStatus | None = None,
    *,
    owned: ByOwner | None = None,
) -> ItemResult:
    """Read the job and say why a fenced call changed nothing (`refusal`)."""
    row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return refusal(row, now, job_id, token, verb, ack_status, owned=owned)


# --- operators -----------------------------------------------------------------------------


# Cancel a job that is not finished: a pending one ends `cancelled` now; a leased one is marked
# (`cancel_requested_at`) and ends `cancelled` at its holder's next call or its lease's expiry.
_CANCEL = """
    UPDATE jobs
    SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
        finished_at = CASE WHEN status = 'pending' THEN :now ELSE finished_at END,
        cancel_requested_at = :now, updated_at = :now
    WHERE {where} AND status IN ('pending', 'leased') AND cancel_requested_at IS NULL
      AND (:tenant IS NULL OR tenant_id = :tenant)
    RETURNING {returning}
"""
_CANCEL_ONE = _CANCEL.format(where="id = :id", returning=COLUMNS)
_CANCEL_RUN = _CANCEL.format(where="run_id = :run", returning="id, status")


def cancel(
    conn: sqlite3.Connection, now: float, job_ids: Sequence[int], tenant_id: str | None
) -> tuple[list[ItemResult], list[int]]:
    """Cancel each job (of ``tenant_id`` only, when given); return the per-item results and the
    ids of the leased jobs now marked for cancellation (their holders are to be told).

    A job of another tenant answers as a missing one (``not_found``); one already cancelled or
    marked is a ``duplicate``; a done or failed one is refused as ``finished``.
    """
    results: list[ItemResult] = []
    marked: list[int] = []
    for job_id in job_ids:
        params = {"id": job_id, "now": now, "tenant": tenant_id}
        row = conn.execute(_CANCEL_ONE, params).fetchone()
        if row is not None:
            job = job_from_row(row)
            if job.status == "leased":
                marked.append(job.id)
            results.append(ItemResult(job_id=job_id, ok=True, reason="ok", job=job))
            continue
        row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        results.append(
            cancel_refusal(None if row is None else job_from_row(row), job_id, tenant_id)
        )
    return results, marked


def cancel_run(
    conn: sqlite3.Connection, now: float, run_id: str, tenant_id: str | None
) -> tuple[RunCancel, list[int]]:
    """Cancel every unfinished job of the run; return the counts and the leased jobs' ids."""
    owner = conn.execute("SELECT tenant_id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if owner is None or (tenant_id is not None and owner[0] != tenant_id):
        raise RunNotFound(run_id)
    rows = conn.execute(_CANCEL_RUN, {"run": run_id, "now": now, "tenant": None}).fetchall()
    marked = [job_id for job_id, status in rows if status == "leased"]
    return (
        RunCancel(run_id=run_id, cancelled=len(rows) - len(marked), cancel_requested=len(marked)),
        marked,
    )


def requeue(
    conn: sqlite3.Connection,
    now: float,
    job_ids: Sequence[int] | None,
    run_id: str | None,
    tenant_id: str | None,
) -> int:
    """Return terminally failed jobs (all, or those named or filtered) to pending, attempts 0."""
    where, params = _filters(run_id=run_id, tenant_id=tenant_id, job_ids=job_ids)
    rows = conn.execute(
        f"""
        UPDATE jobs
        SET status = 'pending', attempts = 0, available_at = :now, finished_at = NULL,
            lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, lease_owner = NULL,
            started_at = NULL, updated_at = :now
        WHERE status = 'failed' {where}
        RETURNING run_id
        """,
        {**params, "now": now},
    ).fetchall()
    for run_id_ in {r[0] for r in rows}:
        conn.execute(
            "UPDATE runs SET finished_at = NULL, updated_at = ? WHERE run_id = ?", (now, run_id_)
        )
    return len(rows)


def purge(conn: sqlite3.Connection, now: float, older_than_seconds: float) -> int:
    """Delete finished (done, failed, cancelled) jobs older than ``older_than_seconds``, and
    empty runs."""
    cutoff = now - older_than_seconds
    deleted = conn.execute(
        "DELETE FROM jobs WHERE finished_at <= ? AND status IN ('done', 'failed', 'cancelled')",
        (cutoff,),
    ).rowcount
    conn.execute(
        """
        DELETE FROM runs WHERE finished_at <= ?
        AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.run_id = runs.run_id)
        """,
        (cutoff,),
    )
    return int(deleted)


def claim_maintenance(
    conn: sqlite3.Connection, now: float, task: str, interval_seconds: float, owner: str | None
) -> MaintenanceClaim:
    """Claim ``task``'s round if it is due, setting the next one ``interval_seconds`` away."""
    # Invariant: one round of a task is claimed once, by whichever process gets here first:
    # the claim is this one conditional UPDATE, and the row's next due time moves with it.
    params = {"task": task, "now": now, "interval": interval_seconds, "owner": owner}
    row = conn.execute(
        """
        UPDATE maintenance
        SET due_at = :now + :interval, rounds = rounds + 1, claimed_by = :owner, claimed_at = :now
        WHERE task = :task AND due_at <= :now
        RETURNING rounds, due_at
        """,
        params,
    ).fetchone()
    if row is None:
        # A task's row is created by its first claim, which that claimer wins.
        row = conn.execute(
            """
            INSERT INTO maintenance (task, due_at, rounds, claimed_by, claimed_at)
            VALUES (:task, :now + :interval, 1, :owner, :now)
            ON CONFLICT (task) DO NOTHING
            RETURNING rounds, due_at
            """,
            params,
        ).fetchone()
    if row is not None:
        return MaintenanceClaim(task=task, claimed=True, round=row[0], due_at=row[1])
    rounds, due_at = conn.execute(
        "SELECT rounds, due_at FROM maintenance WHERE task = ?", (task,)
    ).fetchone()
    return MaintenanceClaim(task=task, claimed=False, round=rounds, due_at=due_at)


# --- schedules -----------------------------------------------------------------------------


def create_schedule(
    conn: sqlite3.Connection, now: float, schedule: NewSchedule, timing: Cadence
) -> Schedule:
    """Add the schedule, or replace the tenant's schedule of that name.

    A replacement that keeps the timing (cron, interval, time zone) keeps the next tick, so
    a process that restarts with the same ``[[schedules]]`` misses and repeats no tick; a new
    timing starts at its first tick after ``now``.
    """
    (others,) = conn.execute(
        "SELECT count(*) FROM schedules WHERE tenant_id = ? AND name != ?",
        (schedule.tenant_id, schedule.name),
    ).fetchone()
    if others >= MAX_SCHEDULES_PER_TENANT:
        raise OutOfRange(
            f"tenant {schedule.tenant_id!r} has {others} schedules, the most a tenant may "
            "have; delete some first"
        )
    row = conn.execute(
        f"""
        INSERT INTO schedules (tenant_id, name, cron, interval_seconds, timezone, r2_key,
                               payload, priority, missed, grace_seconds, next_tick_at,
                               created_at, updated_at)
        VALUES (:tenant_id, :name, :cron, :interval_seconds, :timezone, :r2_key, :payload,
                :priority, :missed, :grace_seconds, :next_tick_at, :now, :now)
        ON CONFLICT (tenant_id, name) DO UPDATE SET
            next_tick_at = CASE
                WHEN schedules.cron IS excluded.cron
                 AND schedules.interval_seconds IS excluded.interval_seconds
                 AND schedules.timezone = excluded.timezone
                THEN schedules.next_tick_at ELSE excluded.next_tick_at END,
            cron = excluded.cron, interval_seconds = excluded.interval_seconds,
            timezone = excluded.timezone, r2_key = excluded.r2_key,
            payload = excluded.payload, priority = excluded.priority,
            missed = excluded.missed, grace_seconds = excluded.grace_seconds,
            updated_at = excluded.updated_at
        RETURNING {SCHEDULE_COLUMNS}
        """,
        {
            "tenant_id": schedule.tenant_id,
            "name": schedule.name,
            "cron": schedule.cron,
            "interval_seconds": schedule.interval_seconds,
            "timezone": schedule.timezone,
            "r2_key": schedule.r2_key,
            "payload": encode_json(schedule.payload),
            "priority": schedule.priority,
            "missed": schedule.missed,
            "grace_seconds": schedule.grace_seconds,
            "next_tick_at": timing.next_after(now),
            "now": now,
        },
    ).fetchone()
    return schedule_from_row(row)


def delete_schedule(conn: sqlite3.Connection, tenant_id: str, name: str) -> Schedule:
    """Delete the tenant's schedule of this name and return it; raise ScheduleNotFound."""
    row = conn.execute(
        f"DELETE FROM schedules WHERE tenant_id = ? AND name = ? RETURNING {SCHEDULE_COLUMNS}",
        (tenant_id, name),
    ).fetchone()
    if row is None:
        raise ScheduleNotFound(tenant_id, name)
    return schedule_from_row(row)


def list_schedules(conn: sqlite3.Connection, tenant_id: str | None) -> list[Schedule]:
    """Every schedule (of one tenant), by tenant and name."""
    where, params = _filters(tenant_id=tenant_id)
    rows = conn.execute(
        f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE 1 = 1 {where} ORDER BY tenant_id, name",
        params,
    ).fetchall()
    return [schedule_from_row(row) for row in rows]


def fire_schedules(
    conn: sqlite3.Connection, now: float, limit: int, default_max_attempts: int
) -> ScheduleFiring:
    """Enqueue the due ticks of up to ``limit`` due schedules, earliest first.

    Invariant: a tick enqueues one job. Each schedule's ticks are claimed by one conditional
    UPDATE that moves `next_tick_at` past them, in the transaction that enqueues their jobs
    (the writer's; the file's write lock serialises processes), so no two rounds claim a tick
    and a claimed tick always has its job; the job's idempotency key says the same again.
    """
    rows = conn.execute(
        f"""
        SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE next_tick_at <= ?
        ORDER BY next_tick_at LIMIT ?
        """,
        (now, limit),
    ).fetchall()
    jobs: list[Job] = []
    for row in rows:
        schedule = schedule_from_row(row)
        try:
            timing = cadence(schedule.cron, schedule.interval_seconds, schedule.timezone)
        except QueueError as exc:  # e.g. a time zone this host's database lacks
            log.warning("schedule.unusable", name=schedule.name, error=str(exc))
            continue
        ticks, following = plan_ticks(timing, schedule.next_tick_at, now, schedule)
        # A savepoint per schedule: a tick whose job is refused (its run id taken by another
        # tenant's run) is skipped with a warning instead of stopping every schedule.
        conn.execute("SAVEPOINT fire")
        try:
            if _claim_ticks(conn, now, schedule, ticks, following) and ticks:
                news = [tick_job(schedule, t) for t in ticks]
                jobs += enqueue(conn, now, news, default_max_attempts)
        except QueueError as exc:
            conn.execute("ROLLBACK TO fire")
            log.warning("schedule.tick_refused", name=schedule.name, error=str(exc))
            _claim_ticks(conn, now, schedule, [], following)
        finally:
            conn.execute("RELEASE fire")
    (next_due,) = conn.execute("SELECT min(next_tick_at) FROM schedules").fetchone()
    return ScheduleFiring(jobs=jobs, next_due_at=next_due)


def _claim_ticks(
    conn: sqlite3.Connection, now: float, schedule: Schedule, ticks: list[float], following: float
) -> bool:
    """Move the schedule's next tick to ``following`` if no one else moved it; say whether."""
    claimed = conn.execute(
        """
        UPDATE schedules SET next_tick_at = ?, updated_at = ?,
                             last_tick_at = coalesce(?, last_tick_at)
        WHERE tenant_id = ? AND name = ? AND next_tick_at = ?
        """,
        (
            following,
            now,
            ticks[-1] if ticks else None,
            schedule.tenant_id,
            schedule.name,
            schedule.next_tick_at,
        ),
    ).rowcount
    return bool(claimed)


# --- importers -----------------------------------------------------------------------------


def import_jobs(
    conn: sqlite3.Connection,
    now: float,
    jobs: Sequence[tuple[ImportedJob, bytes | None, bytes | None, int]],
) -> list[ImportResult]:
    """Insert each imported job (with its payload, result and attempt limit) unless its origin
    is taken; create its run (with the job's tenant) or add to it; refuse a job whose run
    belongs to another tenant."""
    out: list[ImportResult] = []
    owners: dict[str, str | None] = {}
    for job, payload, result, max_attempts in jobs:
        if job.run_id not in owners:
            found = conn.execute(
                "SELECT tenant_id FROM runs WHERE run_id = ?", (job.run_id,)
            ).fetchone()
            owners[job.run_id] = None if found is None else found[0]
        owner = owners[job.run_id]
        if owner is not None and owner != job.tenant_id:
            out.append(foreign_run(job, owner))
            continue
        finished = None if job.status == "pending" else (job.finished_at or job.updated_at)
        row = conn.execute(
            f"""
            INSERT INTO jobs (run_id, tenant_id, r2_key, payload, status, attempts, max_attempts,
                              priority, available_at, last_error, result, created_at, updated_at,
                              finished_at, cross_tenant_key, origin)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (origin) WHERE origin IS NOT NULL DO NOTHING
            RETURNING {COLUMNS}
            """,
            (
                job.run_id,
                job.tenant_id,
                job.r2_key,
                None if payload is None else payload.decode(),
                job.status,
                job.attempts,
                max_attempts,
                job.priority,
                now,
                job.last_error,
                None if result is None else result.decode(),
                job.created_at,
                job.updated_at,
                finished,
                job.cross_tenant_key,
                job.origin,
            ),
        ).fetchone()
        if row is None:
            there = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE origin = ?", (job.origin,)
            ).fetchone()
            out.append(
                ImportResult(origin=job.origin, ok=False, reason="exists", job=job_from_row(there))
            )
            continue
        # A new run keeps its first job's times; its stored counts follow below.
        conn.execute(
            """
            INSERT INTO runs (run_id, tenant_id, created_at, updated_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (run_id) DO UPDATE SET updated_at = excluded.updated_at
            """,
            (job.run_id, job.tenant_id, job.created_at, now),
        )
        owners[job.run_id] = job.tenant_id
        # Inserted rows pass no trigger (they count status changes and deletions): counted here.
        conn.execute(
            """
            UPDATE runs SET pending = pending + (:status = 'pending'),
                done = done + (:status = 'done'), failed = failed + (:status = 'failed'),
                created_at = min(created_at, :created),
                finished_at = CASE WHEN :status = 'pending' THEN NULL ELSE finished_at END
            WHERE run_id = :run
            """,
            {"created": job.created_at, "status": job.status, "run": job.run_id},
        )
        out.append(ImportResult(origin=job.origin, ok=True, reason="ok", job=job_from_row(row)))
    _close_runs(conn, now, {r.job.run_id for r in out if r.ok and r.job is not None})
    return out


def find_by_origin(conn: sqlite3.Connection, origins: Sequence[str]) -> list[Job]:
    """Return the jobs with these origins (those that exist), in the order asked."""
    rows = conn.execute(
        f"""
        SELECT {COLUMNS} FROM jobs WHERE origin IN (SELECT value FROM json_each(:origins))
        """,
        {"origins": _encode(list(origins)).decode()},
    ).fetchall()
    found = {job.origin: job for job in map(job_from_row, rows)}
    return [found[o] for o in dict.fromkeys(origins) if o in found]


def delete_imported(
    conn: sqlite3.Connection, now: float, imported: Sequence[tuple[str, float]], force: bool
) -> list[ImportResult]:
    """Delete each imported job (by origin) still as the import wrote it: its ``updated_at``
    unchanged (every verb that changes a job sets it); any, with ``force``. Delete the runs
    this leaves without a job."""
    out: list[ImportResult] = []
    runs: set[str] = set()
    for origin, updated_at in imported:
        row = conn.execute(
            f"""
            DELETE FROM jobs WHERE origin = :origin AND (:force OR updated_at = :updated)
            RETURNING {COLUMNS}
            """,
            {"origin": origin, "force": force, "updated": updated_at},
        ).fetchone()
        if row is not None:
            job = job_from_row(row)
            runs.add(job.run_id)
            out.append(ImportResult(origin=origin, ok=True, reason="ok", job=job))
            continue
        there = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE origin = ?", (origin,)).fetchone()
        if there is None:
            out.append(origin_not_found(origin))
        else:
            job = job_from_row(there)
            out.append(changed_since(origin, job))
    # The trigger took the deleted jobs off their runs' counts; a run left empty goes.
    for run_id in sorted(runs):
        conn.execute(
            """
            DELETE FROM runs WHERE run_id = ? AND pending + leased + done + failed = 0
            AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.run_id = runs.run_id)
            """,
            (run_id,),
        )
    _close_runs(conn, now, runs)
    return out


def set_paused(
    conn: sqlite3.Connection, now: float, tenant_id: str | None, paused: bool
) -> QueueControls:
    """Pause (or resume) the whole queue (``tenant_id`` None) or one tenant; return the controls."""
    conn.execute(
        """
        INSERT INTO queue_controls (tenant_id, paused, updated_at) VALUES (:tenant, :paused, :now)
        ON CONFLICT (tenant_id) DO UPDATE SET paused = excluded.paused, updated_at = :now
        """,
        {"tenant": tenant_id or "", "paused": paused, "now": now},
    )
    _drop_defaults(conn)
    return controls(conn)


def set_tenant_limits(
    conn: sqlite3.Connection,
    now: float,
    tenant_id: str,
    weight: int,
    max_leased: int | None,
    max_per_second: float | None,
) -> QueueControls:
    """Set a tenant's weight and limits (None: no limit); its rate bucket starts full."""
    conn.execute(
        """
        INSERT INTO queue_controls (tenant_id, weight, max_leased, max_per_second, rate_tokens,
                                    rate_at, updated_at)
        VALUES (:tenant, :weight, :leased, :rate, :tokens, :now, :now)
        ON CONFLICT (tenant_id) DO UPDATE SET
            weight = excluded.weight, max_leased = excluded.max_leased,
            max_per_second = excluded.max_per_second, rate_tokens = excluded.rate_tokens,
            rate_at = excluded.rate_at, updated_at = :now
        """,
        {
            "tenant": tenant_id,
            "weight": weight,
            "leased": max_leased,
            "rate": max_per_second,
            "tokens": None if max_per_second is None else max(1.0, max_per_second),
            "now": now,
        },
    )
    _drop_defaults(conn)
    return controls(conn)


def _drop_defaults(conn: sqlite3.Connection) -> None:
    # Invariant: a row exists only while it controls something, so an unused table is empty
    # and a claim takes the plain path.
    conn.execute(
        """
        DELETE FROM queue_controls
        WHERE paused = 0 AND weight = 1 AND max_leased IS NULL AND max_per_second IS NULL
        """
    )


def controls(conn: sqlite3.Connection) -> QueueControls:
    """Return what is paused and every tenant's stored weight and limits."""
    rows = conn.execute(
        f"SELECT {_CONTROL_COLUMNS} FROM queue_controls ORDER BY tenant_id"
    ).fetchall()
    return _controls_from_rows(rows)


def _controls_from_rows(rows: Sequence[Sequence[Any]]) -> QueueControls:
    paused = False
    tenants: list[TenantControl] = []
    for tenant, paused_, weight, max_leased, rate, _, _ in rows:
        if tenant == "":
            paused = bool(paused_)
            continue
        tenants.append(
            TenantControl(
                tenant_id=tenant,
                paused=bool(paused_),
                weight=weight,
                max_leased=max_leased,
                max_per_second=rate,
            )
        )
    return QueueControls(paused=paused, tenants=tenants)


# --- readers -------------------------------------------------------------------------------


def get(conn: sqlite3.Connection, job_id: int) -> Job:
    """Return the job with this id."""
    row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return job_from_row(row)


# One statement, so one snapshot. The counts by status are the runs' stored counts (kept by
# migration 3's triggers in the transactions that change the jobs): O(runs), not a count of
# every job. The pending jobs not yet available and the earliest `available_at` of those
# available are read through `jobs_claim (status, priority DESC, available_at)` without a scan
# of the backlog: a loose index scan visits each distinct priority (a max() seek each), then per
# priority counts the index range after `now` (the scheduled jobs only) and seeks the first
# entry up to `now`: O(priorities + scheduled jobs), where a filter over the pending jobs is
# O(backlog).
_STATS = """
    WITH RECURSIVE levels(priority) AS (
        SELECT max(priority) FROM jobs WHERE status = 'pending'
        UNION ALL
        SELECT (SELECT max(priority) FROM jobs WHERE status = 'pending' AND priority < l.priority)
        FROM levels l WHERE l.priority IS NOT NULL
    ),
    backlog AS (
        SELECT coalesce(sum((SELECT count(*) FROM jobs WHERE status = 'pending'
                             AND priority = l.priority AND available_at > :now)), 0) AS scheduled,
               min((SELECT min(available_at) FROM jobs WHERE status = 'pending'
                    AND priority = l.priority AND available_at <= :now)) AS oldest
        FROM levels l WHERE l.priority IS NOT NULL
    )
    SELECT coalesce(sum(pending), 0), coalesce(sum(leased), 0), coalesce(sum(done), 0),
           coalesce(sum(failed), 0), (SELECT scheduled FROM backlog), (SELECT oldest FROM backlog),
           coalesce(sum(cancelled), 0)
    FROM runs
"""


def stats(conn: sqlite3.Connection, now: float) -> Stats:
    """Count jobs by status and measure how long the oldest available job has waited."""
    row = conn.execute(_STATS, {"now": now}).fetchone()
    pending, leased, done, failed, scheduled, oldest, cancelled_ = row
    paused = controls(conn)
    return Stats(
        cancelled=cancelled_,
        pending=pending,
        scheduled=scheduled,
        leased=leased,
        done=done,
        failed=failed,
        oldest_pending_age_seconds=None if oldest is None else max(0.0, now - oldest),
        paused=paused.paused,
        paused_tenants=[t.tenant_id for t in paused.tenants if t.paused],
    )


def list_jobs(
    conn: sqlite3.Connection,
    status: JobStatus | None,
    run_id: str | None,
    tenant_id: str | None,
    limit: int,
    cursor: str | None,
) -> Page[Job]:
    """Return one page of jobs in id order, filtered by status, run and tenant."""
    where, params = _filters(status=status, run_id=run_id, tenant_id=tenant_id)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE id > :after {where} ORDER BY id LIMIT :limit",
        {**params, "after": parse_cursor(cursor), "limit": limit + 1},
    ).fetchall()
    items = [job_from_row(row) for row in rows[:limit]]
    more = len(rows) > limit
    return Page(items=items, next_cursor=str(items[-1].id) if more else None)


def run_summary(conn: sqlite3.Connection, run_id: str) -> RunSummary:
    """Return the run's counts (from the jobs table), metrics, times and derived status."""
    row = conn.execute(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    return summary_from_row(row)


def list_runs(
    conn: sqlite3.Connection,
    tenant_id: str | None,
    limit: int,
    cursor: str | None,
    newest_first: bool = False,
) -> Page[RunSummary]:
    """Return one page of run summaries in creation order (or newest first), optionally for
    one tenant."""
    where, params = _filters(tenant_id=tenant_id)
    if newest_first:
        before = parse_cursor(cursor) if cursor is not None else 2**63 - 1
        sql = f"""
            SELECT {RUN_COLUMNS}, rowid FROM runs
            WHERE rowid < :before {where} ORDER BY rowid DESC LIMIT :limit
            """
        bound: dict[str, object] = {"before": before}
    else:
        sql = f"""
            SELECT {RUN_COLUMNS}, rowid FROM runs
            WHERE rowid > :after {where} ORDER BY rowid LIMIT :limit
            """
        bound = {"after": parse_cursor(cursor)}
    rows = conn.execute(sql, {**params, **bound, "limit": limit + 1}).fetchall()
    items = [summary_from_row(row) for row in rows[:limit]]
    more = len(rows) > limit
    return Page(items=items, next_cursor=str(rows[limit - 1][11]) if more else None)


def throughput(conn: sqlite3.Connection, since: float) -> list[Throughput]:
    """Count the jobs done and failed per minute since ``since`` (minutes with none left out)."""
    # A range of jobs_finished (partial on finished_at IS NOT NULL, which >= implies).
    rows = conn.execute(
        """
        SELECT CAST(finished_at / 60 AS INTEGER) AS minute,
               sum(status = 'done'), sum(status = 'failed')
        FROM jobs WHERE finished_at >= :since
        GROUP BY minute ORDER BY minute
        """,
        {"since": since},
    ).fetchall()
    return [
        Throughput(minute=minute * 60.0, done=done, failed=failed)
        for minute, done, failed in rows
        if done or failed
    ]


def _filters(
    *,
    status: str | None = None,
    run_id: str | None = None,
    tenant_id: str | None = None,
    job_ids: Sequence[int] | None = None,
) -> tuple[str, dict[str, object]]:
    """Build ``AND`` clauses (fixed SQL, values as parameters) for the filters that are set."""
    clauses: list[str] = []
    params: dict[str, object] = {}
    if status is not None:
        clauses.append("status = :status")
        params["status"] = status
    if run_id is not None:
        clauses.append("run_id = :run_id")
        params["run_id"] = run_id
    if tenant_id is not None:
        clauses.append("tenant_id = :tenant_id")
        params["tenant_id"] = tenant_id
    if job_ids is not None:
        clauses.append("id IN (SELECT value FROM json_each(:job_ids))")
        params["job_ids"] = _encode(list(job_ids)).decode()
    return "".join(f" AND {c}" for c in clauses), params
