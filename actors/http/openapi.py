"""The OpenAPI 3.1 document of the HTTP API, generated from the wire Structs."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from actors import protocol as wire
from actors import tenancy
from actors.http.auth import STREAM_TOKEN_SECONDS

__all__ = ["openapi_document"]

_JSON = "application/json"
# Every operation may answer these; their body is always ErrorOut.
_ERRORS = {
    "400": "a field is malformed or out of range (error.field names it)",
    "401": "no valid bearer token (tokens go in the Authorization header; ?token= only takes "
    "a stream token, on a run's /events and /ws)",
    "403": "the token's role or tenant does not allow this, or r2Key lies outside the job "
    "tenant's prefix '{tenantId}/' (error.code foreign_object_key)",
    "404": "no such job, run or route (also another tenant's job or run, for a scoped token)",
    "405": "wrong method",
    "409": "the lease is no longer live; the run belongs to another tenant; the upload is "
    "missing or its URL was used already",
    "413": "the body is too large",
    "503": "the queue or the object store is unavailable",
}


def _op(
    summary: str,
    response: str | None,
    body: str | None = None,
    *,
    status: str = "200",
    params: list[dict[str, Any]] | None = None,
    auth: bool = True,
    media: str = _JSON,
    body_required: bool = True,
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "ok"}
    if response is not None:
        ok["content"] = {media: {"schema": {"$ref": f"#/components/schemas/{response}"}}}
    elif media != _JSON:
        ok["content"] = {media: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {status: ok}
    for code, text in _ERRORS.items():
        responses[code] = {
            "description": text,
            "content": {_JSON: {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {
            "required": body_required,
            "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if params:
        op["parameters"] = params
    op["security"] = [{"bearer": []}] if auth else []
    return op


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


@functools.cache
def openapi_document(*, metrics_open: bool = True) -> dict[str, Any]:
    """The whole document (computed once per setting of ``[http].metrics``)."""
    types = [
        wire.EnqueueIn,
        wire.EnqueueOut,
        wire.EnqueueManyIn,
        wire.EnqueueManyOut,
        wire.PullIn,
        wire.PullOut,
        wire.AckIn,
        wire.AckOut,
        wire.RenewIn,
        wire.StartIn,
        wire.ReleaseIn,
        wire.LeasesOut,
        wire.ResultIn,
        wire.RequeueIn,
        wire.PurgeIn,
        wire.CountOut,
        wire.JobOut,
        wire.JobsPage,
        wire.StatsOut,
        wire.RunOut,
        wire.UploadCreateIn,
        wire.UploadCreateOut,
        wire.UploadDoneOut,
        wire.StreamTokenOut,
        wire.ErrorOut,
    ]
    _, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    # The forms JSON Schema can say and msgspec cannot: ack by ids (with a status) or by acks,
    # requeue by at least one selector.
    ids = {"required": ["ids"], "properties": {"ids": {"type": "array"}}}
    acks = {"required": ["acks"], "properties": {"acks": {"type": "array"}}}
    components["AckIn"]["oneOf"] = [
        {
            "required": ["ids", "status"],
            "properties": {"ids": {"type": "array"}, "status": {"type": "string"}},
            "not": acks,
        },
        {**acks, "not": ids},
    ]
    components["RequeueIn"]["anyOf"] = [
        {"required": [name], "properties": {name: {"type": kind}}}
        for name, kind in (("ids", "array"), ("runId", "string"), ("tenantId", "string"))
    ]
    components["RunEvent"] = {
        "type": "object",
        "description": "One server-sent event: `update` carries the run's state and the events "
        "since the last one as JSON in `data`; `end` closes the stream.",
        "properties": {"event": {"enum": ["update", "end"]}, "data": {"type": "string"}},
    }
    components["UploadCompleteIn"] = {
        "type": "object",
        "required": ["token"],
        "properties": {"token": {"type": "string"}},
    }
    # The tenancy rule (actors/tenancy.py), as far as a schema can say it: keys and tenant ids
    # of plain segments. That a key starts with "{tenantId}/" is checked by the server (403).
    for name in ("EnqueueIn", "UploadCreateIn"):
        tenant = components[name]["properties"]["tenantId"]
        tenant["pattern"] = tenancy.TENANT_PATTERN
    components["EnqueueIn"]["properties"]["r2Key"]["pattern"] = tenancy.KEY_PATTERN
    components["EnqueueIn"]["properties"]["crossTenantKey"]["description"] = (
        "only an admin token limited to no tenant may send true; an admin's job whose r2Key "
        "lies outside '{tenantId}/' gets it anyway"
    )
    components["Health"] = {"type": "object"}
    job_id = _path_param("job_id", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1})
    run_id = _path_param("run_id", {"type": "string", "minLength": 1, "maxLength": 1024})
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("liveness", "Health", auth=False)},
        "/readyz": {
            "get": _op("readiness: database reachable and tree running", "Health", auth=False)
        },
        "/metrics": {
            "get": _op("Prometheus metrics", None, media="text/plain", auth=not metrics_open)
        },
        "/openapi.json": {"get": _op("this document", "Health", auth=False)},
        "/jobs/enqueue": {"post": _op("enqueue one job (producer)", "EnqueueOut", "EnqueueIn")},
        "/jobs/enqueue-many": {
            "post": _op(
                "enqueue jobs in one transaction (producer)", "EnqueueManyOut", "EnqueueManyIn"
            )
        },
        "/jobs/pull": {
            "post": _op("lease visible jobs (worker)", "PullOut", "PullIn", body_required=False)
        },
        "/jobs/ack": {
            "post": _op("record outcomes: {ids, status} or {acks} (worker)", "AckOut", "AckIn")
        },
        "/jobs/renew": {"post": _op("extend leases (worker)", "LeasesOut", "RenewIn")},
        "/jobs/start": {
            "post": _op(
                "mark leased jobs started: a crash now costs an attempt (worker)",
                "LeasesOut",
                "StartIn",
            )
        },
        "/jobs/release": {"post": _op("give leases back (worker)", "LeasesOut", "ReleaseIn")},
        "/jobs/requeue": {
            "post": _op("return failed jobs to pending (admin)", "CountOut", "RequeueIn")
        },
        "/jobs/purge": {"post": _op("delete old finished jobs (admin)", "CountOut", "PurgeIn")},
        "/jobs/stats": {"get": _op("count jobs by status", "StatsOut")},
        "/jobs": {
            "get": _op(
                "list jobs, paged",
                "JobsPage",
                params=[
                    _query(
                        "status",
                        {"type": "string", "enum": ["pending", "leased", "done", "failed"]},
                    ),
                    _query("runId", {"type": "string", "minLength": 1, "maxLength": 1024}),
                    _query("tenantId", {"type": "string", "minLength": 1, "maxLength": 1024}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _query("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
                ],
            )
        },
        "/jobs/{job_id}": {"get": _op("one job", "JobOut", params=[job_id])},
        "/jobs/{job_id}/result": {
            "post": _op(
                "store a leased job's result: acks it done (worker)",
                "AckOut",
                "ResultIn",
                params=[job_id],
            )
        },
        "/uploads/create": {
            "post": _op(
                "reserve an object key and an upload URL (producer)",
                "UploadCreateOut",
                "UploadCreateIn",
                status="201",
            )
        },
        "/uploads/complete": {
            "post": _op(
                "enqueue the job of a presigned upload (producer)",
                "UploadDoneOut",
                "UploadCompleteIn",
                status="201",
            )
        },
        "/uploads/{token}": {
            "put": _op(
                "upload the file; enqueues its job (signed URL)",
                "UploadDoneOut",
                status="201",
                auth=False,
                params=[_path_param("token", {"type": "string"})],
            )
        },
        "/runs/{run_id}": {"get": _op("a run's state", "RunOut", params=[run_id])},
        "/runs/{run_id}/stream-token": {
            "post": _op(
                "a token for ?token= on this run's /events and /ws, valid "
                f"{STREAM_TOKEN_SECONDS:g} s (for browsers, which cannot send a header); /ws "
                "takes the same ?token=",
                "StreamTokenOut",
                params=[run_id],
            )
        },
        "/runs/{run_id}/events": {
            "get": _op(
                "server-sent events of the run until it ends; authorised by a bearer header or "
                "by ?token= holding a stream token of this run (never an API token)",
                "RunEvent",
                params=[run_id, _query("token", {"type": "string"})],
                media="text/event-stream",
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "actors",
            "version": "1",
            "description": "The edge worker's job protocol, served by actors.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
