"""The OpenAPI 3.1 document of the HTTP API, generated from the route table and its Structs."""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec

from actors import importers, tenancy
from actors import protocol as wire
from actors.bounds import MAX_PULL_WAIT_SECONDS
from actors.http._routes import Route, route_table

__all__ = ["openapi_document"]

_JSON = "application/json"
# Every operation may answer these; their body is always ErrorOut.
_ERRORS = {
    "400": "a field is malformed or out of range (error.field names it)",
    "401": "no valid bearer token or X-API-Key (tokens go in the Authorization header; ?token= "
    "only takes a stream token, on a run's /events and /ws)",
    "403": "the token's role or tenant does not allow this, or r2Key lies outside the job "
    "tenant's prefix '{tenantId}/' (error.code foreign_object_key)",
    "404": "no such job, run, schedule or route (also another tenant's, for a scoped token)",
    "405": "wrong method",
    "409": "the lease is no longer live; the run belongs to another tenant; the upload is "
    "missing or its URL was used already",
    "413": "the body is too large",
    "503": "the queue or the object store is unavailable",
}


@functools.cache
def openapi_document(*, metrics_open: bool = False) -> dict[str, Any]:
    """The whole document (computed once per setting of ``[http].metrics``)."""
    routes = [r for r in route_table(metrics_open=metrics_open) if isinstance(r, Route)]
    types: list[type[msgspec.Struct]] = []
    for route in routes:
        for kind in (route.body, route.response):
            if isinstance(kind, type) and issubclass(kind, msgspec.Struct) and kind not in types:
                types.append(kind)
    types.extend((wire.ErrorOut, wire.TaskErrorOut))
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
    # The tenancy rule (actors/tenancy.py), as far as a schema can say it: keys and tenant ids
    # of plain segments. That a key starts with "{tenantId}/" is checked by the server (403).
    for name in ("EnqueueIn", "UploadCreateIn", "ScheduleIn"):
        tenant = components[name]["properties"]["tenantId"]
        tenant["pattern"] = tenancy.TENANT_PATTERN
    for name in ("EnqueueIn", "ScheduleIn"):
        components[name]["properties"]["r2Key"]["pattern"] = tenancy.KEY_PATTERN
    # A schedule has a cron expression or an interval, not both (whether the expression and
    # the time zone are valid, a schema cannot say: the server answers 400 naming the field).
    components["ScheduleIn"]["oneOf"] = [
        {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
        {"required": ["intervalSeconds"], "properties": {"intervalSeconds": {"type": "integer"}}},
    ]
    components["EnqueueIn"]["properties"]["crossTenantKey"]["description"] = (
        "only an admin token limited to no tenant may send true; an admin's job whose r2Key "
        "lies outside '{tenantId}/' gets it anyway"
    )
    components["PullIn"]["properties"]["waitSeconds"]["description"] = (
        "a long poll: with no job to lease, the server holds the request until a job is "
        "enqueued and answers with it at once, or answers with no jobs when the time is up or "
        f"it shuts down; 0 answers at once; at most {MAX_PULL_WAIT_SECONDS:g} s. A pull waits "
        "holding no lease; closing the connection ends its wait"
    )
    components["Health"] = {"type": "object"}
    components["Task"] = {
        "type": "object",
        "description": "A job as a KV task: the fields of its payload (when an object) and "
        "id, status (pending, claimed, completed, failed), runId, tenantId, r2Key, attempts, "
        "workerId (README, 'The KV task API').",
        "required": ["id", "status"],
        "properties": {"id": {"type": "string"}, "status": {"type": "string"}},
    }
    components["TaskResult"] = {
        "type": "object",
        "description": "What POST /api/result stored ({success, output, error}), or "
        "{success: false, error} for a failed task.",
    }
    # /api/migrate/*'s answer: `actors.importers.Report`, plus what `report_json` adds.
    _, report = msgspec.json.schema_components(
        [importers.Report], ref_template="#/components/schemas/{name}"
    )
    migration = report.pop("Report")
    migration["properties"]["failed"] = {"type": "integer", "description": "len(errors)"}
    migration["properties"]["complete"] = {
        "type": ["boolean", "null"],
        "description": "status and run: every job of the dump is in the queue as it has it",
    }
    components["MigrationReport"] = migration
    components.update(report)
    paths: dict[str, Any] = {}
    for route in routes:
        path = _CONVERTOR.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route)
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
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


# Starlette's "{job_id:int}" is OpenAPI's "{job_id}".
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")


def _operation(route: Route[Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "ok"}
    if route.response is not None:
        name = route.response if isinstance(route.response, str) else route.response.__name__
        ok["content"] = {route.media: {"schema": {"$ref": f"#/components/schemas/{name}"}}}
    elif route.media != _JSON:
        ok["content"] = {route.media: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(route.status): ok}
    error = "TaskErrorOut" if route.error_style == "kv" else "ErrorOut"
    for code, text in _ERRORS.items():
        responses[code] = {
            "description": text,
            "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{error}"}}},
        }
    op: dict[str, Any] = {"summary": route.summary, "responses": responses}
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body_required,
            "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}},
        }
    if route.raw_body:
        op["requestBody"] = {
            "required": True,
            "content": {
                # JSON: an array or an object (a dump's own shape is checked by the handler).
                media: {
                    "schema": {"type": ["array", "object"]}
                    if media == _JSON
                    else {"type": "string"}
                }
                for media in route.raw_body
            },
        }
    if route.params:
        op["parameters"] = [param.openapi() for param in route.params]
    # Every route that needs a role takes a bearer token or an X-API-Key (the Gate's rule).
    op["security"] = [{"bearer": []}, {"apiKey": []}] if route.roles is not None else []
    return op
