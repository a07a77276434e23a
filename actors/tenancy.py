"""Which object keys a tenant's jobs may name: only those under the tenant's own prefix.

The rule, checked when a job is enqueued (HTTP, `ActorSystem`, the CLI) and again by the
fetcher before it reads anything: a job of tenant ``T`` names a key that starts with ``"T/"``
and has no empty, ``.`` or ``..`` segment. A tenant id therefore cannot contain ``/`` (nor be
``.`` or ``..``, nor hold a backslash or NUL, which no key may): otherwise tenant ``a`` would
own tenant ``a/b``'s keys. Only an unscoped admin may enqueue a key outside its job's tenant
prefix, and such a job carries ``cross_tenant_key``, which the fetcher lets through.
"""

from __future__ import annotations

from actors.errors import ForeignObjectKey, InvalidArgument
from actors.storage.base import check_key as check_key_form

__all__ = [
    "KEY_PATTERN",
    "TENANT_PATTERN",
    "check_key",
    "check_key_form",
    "check_run_id",
    "check_tenant_id",
    "key_in_tenant",
    "tenant_prefix",
]

# The rule as regular expressions without lookarounds, for the OpenAPI document (JSON Schema
# patterns): a segment has no '/', backslash or NUL and is neither '.' nor '..'.
_CHAR = r"[^/\\\x00]"
_SEGMENT = rf"(?:[^/\\\x00.]{_CHAR}*|\.[^/\\\x00.]{_CHAR}*|\.\.{_CHAR}+)"
KEY_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
TENANT_PATTERN = rf"^{_SEGMENT}$"


def check_tenant_id(tenant_id: str) -> str:
    """Return ``tenant_id`` if it can prefix object keys, else raise `InvalidArgument`."""
    if "/" in tenant_id or "\\" in tenant_id or "\x00" in tenant_id or tenant_id in (".", ".."):
        raise InvalidArgument(
            f"tenant_id {tenant_id!r} is not allowed: a tenant's objects live under "
            "'{tenant_id}/', so a tenant id cannot contain '/', a backslash or a NUL byte, "
            "nor be '.' or '..'; choose one without them (e.g. replace '/' by '-')"
        )
    return tenant_id


def tenant_prefix(tenant_id: str) -> str:
    """The prefix every object key of ``tenant_id``'s jobs starts with: ``"{tenant_id}/"``."""
    return f"{tenant_id}/"


def key_in_tenant(tenant_id: str, key: str) -> bool:
    """Whether ``key`` lies under the tenant's prefix (its form is not checked here)."""
    prefix = tenant_prefix(tenant_id)
    return len(key) > len(prefix) and key.startswith(prefix)


def check_key(tenant_id: str, key: str) -> str:
    """Return ``key`` if a job of ``tenant_id`` may name it, else raise.

    Raises `InvalidObjectKey` for a malformed key (empty, ``.`` or ``..`` segments, absolute)
    and `ForeignObjectKey` for one outside ``"{tenant_id}/"``.
    """
    check_key_form(key)
    if not key_in_tenant(tenant_id, key):
        raise ForeignObjectKey(
            f"object key {key!r} is outside the job's tenant prefix "
            f"{tenant_prefix(tenant_id)!r}: a tenant's jobs may only name objects under its own "
            "prefix; store the object there (submit and /uploads/create do) and use that key"
        )
    return key


def check_run_id(tenant_id: str, run_id: str) -> str:
    """Return ``run_id`` unless it is another tenant's schedule tick run, else raise.

    The runs of schedules' ticks are named ``schedule:{tenant}:{name}:{tick}``
    (`actors.queue.base.tick_job`); run ids are shared by every tenant, so a job of another
    tenant in such a run would make the tick's enqueue refuse it (a run has one tenant).
    """
    if run_id.startswith("schedule:") and not run_id.startswith(f"schedule:{tenant_id}:"):
        raise InvalidArgument(
            f"run_id {run_id!r}: run ids starting with 'schedule:' name the runs of a tenant's "
            f"schedule ticks, and only 'schedule:{tenant_id}:...' may hold this tenant's jobs; "
            "choose another run id"
        )
    return run_id
