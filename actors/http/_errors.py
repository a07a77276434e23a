"""HTTP errors as JSON: `ApiError`, and how queue and store errors map to status codes."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import TypeVar

import msgspec
from starlette.responses import Response

from actors.errors import (
    ForeignObjectKey,
    InvalidArgument,
    InvalidObjectKey,
    JobNotFound,
    LeaseLost,
    ObjectStoreError,
    PayloadTooLarge,
    QueueError,
    RunNotFound,
    ScheduleNotFound,
)

__all__ = [
    "ApiError",
    "as_http",
    "error_response",
    "from_decode_error",
    "from_domain_error",
    "kv_error_response",
    "mapped",
]

T = TypeVar("T")


class ApiError(Exception):
    """An HTTP error answered as ``{success: false, error: {code, message, field}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(exc: ApiError) -> Response:
    error = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        error["field"] = exc.field
    body = {"success": False, "error": error}
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return Response(
        msgspec.json.encode(body), exc.status, headers=headers, media_type="application/json"
    )


# The KV task API's own words for the errors its clients may compare.
_KV_WORDS = {
    "unauthorized": "Unauthorized",
    "invalid_field": "Validation failed",
    "invalid_json": "Invalid JSON body",
    "not_found": "Not found",
}


def kv_error_response(exc: ApiError) -> Response:
    """The error in the KV task API's shape: ``{error, code, message, details}``, ``error`` as
    its handlers worded it (``Unauthorized``, ``Task not found``...)."""
    error = _KV_WORDS.get(exc.code, exc.message)
    body: dict[str, object] = {"error": error, "code": exc.code}
    if error != exc.message:
        body["message"] = exc.message
    if exc.code == "invalid_field":
        body["details"] = [{"path": exc.field or "", "message": exc.message}]
    return Response(msgspec.json.encode(body), exc.status, media_type="application/json")


_MISSING = re.compile(r"^Object missing required field `([^`]+)`$")


def from_decode_error(exc: msgspec.DecodeError) -> ApiError:
    """A 400 naming the field: msgspec says ``... - at `$.jobs[0].runId```."""
    message, _, where = str(exc).partition(" - at ")
    field = where.strip("`").removeprefix("$").lstrip(".") or None if where else None
    missing = _MISSING.match(message)
    if missing is not None:  # the field is named in the message, its object in the path
        field = f"{field}.{missing[1]}" if field else missing[1]
    if isinstance(exc, msgspec.ValidationError):
        named = f"{field}: {message}" if field else message
        return ApiError(400, "invalid_field", named, field)
    return ApiError(400, "invalid_json", f"the body is not valid JSON: {message}")


# The queue's messages name snake_case arguments; the API's fields are camelCase.
_FIELD = re.compile(r"^(?:an? \w+'s )?(\w+)")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def from_domain_error(exc: Exception) -> ApiError | None:
    """The HTTP error for a queue or store error, or None for anything else."""
    message = str(exc)
    if isinstance(exc, PayloadTooLarge):
        return ApiError(413, "payload_too_large", message, _camel(message.split(" ")[0]))
    if isinstance(exc, InvalidArgument) and "belongs to tenant" in message:
        # Said without the owner's name: a tenant-scoped client must not learn other tenants.
        return ApiError(
            409,
            "run_of_another_tenant",
            "this run id belongs to another tenant; a run has one tenant, so use a new run id",
            "runId",
        )
    if isinstance(exc, InvalidArgument) and "in one request; a run has one tenant" in message:
        # The same rule within one request: it names only tenants the request itself gave.
        return ApiError(409, "run_of_another_tenant", message, "runId")
    if isinstance(exc, InvalidArgument):
        match = _FIELD.match(message)
        return ApiError(400, "invalid_argument", message, _camel(match[1]) if match else None)
    if isinstance(exc, JobNotFound):
        return ApiError(404, "job_not_found", message)
    if isinstance(exc, RunNotFound):
        return ApiError(404, "run_not_found", message)
    if isinstance(exc, ScheduleNotFound):
        return ApiError(404, "schedule_not_found", message, "name")
    if isinstance(exc, LeaseLost):
        return ApiError(409, "lease_lost", message)
    if isinstance(exc, ForeignObjectKey):
        return ApiError(403, "foreign_object_key", message, "r2Key")
    if isinstance(exc, InvalidObjectKey):
        return ApiError(400, "invalid_object_key", message)
    if isinstance(exc, ObjectStoreError):
        return ApiError(503, "object_store_unavailable", message)
    if isinstance(exc, QueueError):
        return ApiError(503, "queue_unavailable", message)
    return None


def as_http(exc: Exception) -> ApiError:
    """The answer a queue or store error gets (the same body as when the queue raises it)."""
    answer = from_domain_error(exc)
    assert answer is not None, f"{type(exc).__name__} has no HTTP answer"
    return answer


async def mapped(call: Awaitable[T]) -> T:
    """Await a queue or store call, turning its errors into HTTP errors (others pass)."""
    try:
        return await call
    except Exception as exc:
        answer = from_domain_error(exc)
        if answer is None:
            raise
        raise answer from None
