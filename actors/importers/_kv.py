"""Read the KV task queue from a ``wrangler kv`` bulk dump: a JSON array of ``{key, value}``
(``value`` a string, base64 when ``base64`` is true; an object is taken as it is).

Keys, in the current format and the one before it (the original's own migration moved the
second to the first; a task in both is taken from the first)::

    queue:task:{id}           orchestrator:queue:{id}    a task (JSON, below)
    queue:lease:{id}          orchestrator:lease:{id}    a lease {workerId, claimedAt, expiresAt}
    orchestrator:result:{id}                             a task's result (any JSON)
                              orchestrator:pending       the ids of the pending tasks

    task: {id, type, source, content, priority: low|medium|high|critical, metadata,
           queuedAt, status: pending|claimed|completed|failed, createdAt?}

A task becomes a job of origin ``kv:<id>`` whose payload is the task as stored (so the KV API
serves it back with every field); its status maps pending and claimed to pending (the lease is
the old system's and is dropped, counted), completed to done and failed to failed; its result
(if stored) becomes the job's result. A result whose task is gone (the original deletes a task
when its result is stored) becomes a done job of its own. Tenant, run and key come from the
task's ``metadata`` (``tenantId``, ``runId``, ``r2Key``) when it has them, else from the
import's options; a key defaults to ``{tenant}/kv/{id}`` (a task names no object).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import msgspec

from actors.errors import DumpUnreadable, InvalidArgument
from actors.importers._items import Item, Source, placed, seconds, text
from actors.queue.model import ImportedJob

__all__ = ["DEFAULT_RUN", "DEFAULT_TENANT", "PRIORITIES", "read_kv"]

#: The tenant and run of tasks whose metadata names none.
DEFAULT_TENANT = "kv"
DEFAULT_RUN = "kv-import"

#: A task's priority as a job's (higher is leased first), as the KV task API maps it.
PRIORITIES = {"low": -1, "medium": 0, "high": 1, "critical": 2}
_STATUSES: dict[str, Literal["pending", "done", "failed"]] = {
    "pending": "pending",
    "claimed": "pending",
    "completed": "done",
    "failed": "failed",
}

_TASK = ("queue:task:", "orchestrator:queue:")
_LEASE = ("queue:lease:", "orchestrator:lease:")
_RESULT = "orchestrator:result:"
_PENDING = "orchestrator:pending"


class _Entry(msgspec.Struct):
    """One key of the bulk format (its other fields, expiration and metadata, are not needed
    but ``expiration`` dates a result whose task is gone)."""

    key: str
    value: Any = None
    base64: bool = False
    expiration: float | None = None


def read_kv(
    data: bytes,
    *,
    tenant_id: str = DEFAULT_TENANT,
    run_id: str = DEFAULT_RUN,
    cross_tenant_keys: bool = False,
) -> Source:
    """Read a KV bulk dump into items: one per task (or result without a task)."""
    try:
        entries = msgspec.json.decode(data, type=list[_Entry])
    except msgspec.DecodeError as exc:
        raise DumpUnreadable(
            f"the KV dump is not a JSON array of {{key, value}} (as `wrangler kv bulk` reads "
            f"and writes): {exc}"
        ) from None
    source = Source(kind="kv")
    tasks: dict[str, tuple[str, Any]] = {}  # id -> (key, value), the new format winning
    results: dict[str, tuple[Any, float | None]] = {}
    pending: list[str] = []
    broken: list[Item] = []
    for entry in entries:
        try:
            value = _value(entry)
        except InvalidArgument as exc:
            broken.append(Item(origin=_origin_of(entry.key), error=f"{entry.key}: {exc}"))
            continue
        key = entry.key
        if key.startswith(_TASK):
            task_id = key.split(":", 2)[2]
            if task_id not in tasks or key.startswith(_TASK[0]):
                tasks[task_id] = (key, value)
        elif key.startswith(_LEASE):
            source.dropped_leases += 1
        elif key.startswith(_RESULT):
            results[key.removeprefix(_RESULT)] = (value, entry.expiration)
        elif key == _PENDING:
            if not isinstance(value, list):
                broken.append(Item(origin=key, error=f"{key} is not a list of task ids"))
            else:
                pending.extend(str(v) for v in value)
        else:
            source.ignored_keys += 1
    for task_id in pending:
        if task_id not in tasks:
            broken.append(
                Item(
                    origin=f"kv:{task_id}",
                    error=f"listed in {_PENDING}, but its task orchestrator:queue:{task_id} "
                    "is not in the dump",
                )
            )
    defaults = (tenant_id, run_id, cross_tenant_keys)
    for task_id, (key, task) in tasks.items():
        origin = f"kv:{task_id}"
        try:
            job = _task_job(origin, task_id, task, results.pop(task_id, None), *defaults)
        except InvalidArgument as exc:
            source.items.append(Item(origin=origin, error=f"{key}: {exc}"))
            continue
        source.items.append(Item(origin=origin, job=job))
    for task_id, (result, expiration) in results.items():
        origin = f"kv:{task_id}"
        try:
            job = _result_job(origin, task_id, result, expiration, *defaults)
        except InvalidArgument as exc:
            source.items.append(Item(origin=origin, error=f"{_RESULT}{task_id}: {exc}"))
            continue
        source.items.append(Item(origin=origin, job=job))
    source.items.extend(broken)
    return source


def _origin_of(key: str) -> str:
    for prefix in (*_TASK, _RESULT):
        if key.startswith(prefix):
            return f"kv:{key.removeprefix(prefix)}"
    return key


def _value(entry: _Entry) -> Any:
    value = entry.value
    if not isinstance(value, str):
        return value
    raw = value.encode()
    if entry.base64:
        try:
            raw = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise InvalidArgument(f"its value is not base64: {exc}") from None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        if entry.key.startswith(_RESULT):
            return raw.decode("utf-8", "replace")  # a result may be plain text
        raise InvalidArgument(f"its value is not JSON: {raw[:60]!r}") from None


def _placement(
    task_id: str, metadata: object, tenant_id: str, run_id: str, cross: bool
) -> tuple[str, str, str, bool]:
    meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
    tenant = text(meta.get("tenantId") or tenant_id, "metadata.tenantId")
    run = text(meta.get("runId") or run_id, "metadata.runId")
    key = text(meta.get("r2Key") or f"{tenant}/kv/{task_id}", "metadata.r2Key")
    return tenant, run, key, placed(tenant, key, cross_tenant_keys=cross)


def _task_job(
    origin: str,
    task_id: str,
    task: Any,
    stored: tuple[Any, float | None] | None,
    tenant_id: str,
    run_id: str,
    cross: bool,
) -> ImportedJob:
    if not isinstance(task, dict):
        raise InvalidArgument(f"a task is a JSON object, not {type(task).__name__}")
    status = task.get("status", "pending")
    if status not in _STATUSES:
        raise InvalidArgument(
            f"status {status!r} is not one of the KV queue's ({', '.join(_STATUSES)})"
        )
    priority = task.get("priority", "medium")
    if priority not in PRIORITIES:
        raise InvalidArgument(
            f"priority {priority!r} is not one of the KV queue's ({', '.join(PRIORITIES)})"
        )
    tenant, run, key, crosses = _placement(task_id, task.get("metadata"), tenant_id, run_id, cross)
    queued = task.get("queuedAt") or task.get("createdAt")
    created = seconds(queued, "queuedAt")
    state: Literal["pending", "done", "failed"] = "done" if stored else _STATUSES[status]
    finished = state != "pending"
    return ImportedJob(
        origin=origin,
        run_id=run,
        tenant_id=tenant,
        r2_key=key,
        status=state,
        attempts=1 if finished else 0,
        priority=PRIORITIES[priority],
        payload=task,
        result=None if stored is None else stored[0],
        last_error="failed in the KV queue before the import" if state == "failed" else None,
        created_at=created,
        updated_at=created,
        cross_tenant_key=crosses,
    )


def _result_job(
    origin: str,
    task_id: str,
    result: Any,
    expiration: float | None,
    tenant_id: str,
    run_id: str,
    cross: bool,
) -> ImportedJob:
    tenant, run, key, crosses = _placement(task_id, None, tenant_id, run_id, cross)
    when: object = None
    if isinstance(result, dict):
        when = result.get("completedAt") or result.get("timestamp") or result.get("createdAt")
    # The original stores a result for an hour: its expiration dates it.
    stamp = seconds(when, "completedAt") if when else max(0.0, (expiration or 3600) - 3600)
    return ImportedJob(
        origin=origin,
        run_id=run,
        tenant_id=tenant,
        r2_key=key,
        status="done",
        attempts=1,
        payload={"id": task_id},
        result=result,
        created_at=stamp,
        updated_at=stamp,
        cross_tenant_key=crosses,
    )
