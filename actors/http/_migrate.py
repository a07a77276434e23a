"""The move off Cloudflare over HTTP: ``/api/migrate/status|run|rollback`` (admin), the dump in
the request body, the same engine and report as ``store import`` (`actors.importers`)."""

from __future__ import annotations

from starlette.responses import Response

from actors import importers
from actors.bounds import DEFAULT_MAX_PAYLOAD_BYTES, MAX_ID_CHARS, MAX_IMPORT_BYTES
from actors.errors import DumpUnreadable
from actors.http._call import Call, json_response, read_body
from actors.http._errors import ApiError, mapped
from actors.http._host import JobsHost
from actors.queue.base import OwnedQueue

__all__ = ["DUMP_MEDIA", "Migrations"]

#: What a dump may be sent as: a D1 export (SQL), or JSON (D1's `execute --json`, KV bulk).
DUMP_MEDIA = ("application/sql", "application/json", "text/plain", "application/octet-stream")

_TRUE = ("true", "1")
_FLAGS = ("true", "false", "1", "0")


class Migrations:
    """Compare, import or un-import a dump of the D1 jobs queue or the KV task queue (query
    ``source=d1|kv``), through the queue this process opened itself.

    Error handling: a dump that cannot be read as a whole answers 400 (nothing written); each
    item's failure is in the report's ``errors`` and the rest goes on, as on the command line.
    """

    def __init__(self, host: JobsHost) -> None:
        self._host = host

    async def migrate_status(self, call: Call[None]) -> Response:
        queue, source = await self._open(call)
        report = await mapped(
            importers.status(queue, source, max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES)
        )
        return json_response(importers.report_json(report))

    async def migrate_run(self, call: Call[None]) -> Response:
        queue, source = await self._open(call)
        report = await mapped(
            importers.run(queue, source, max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES)
        )
        return json_response(importers.report_json(report))

    async def migrate_rollback(self, call: Call[None]) -> Response:
        force = _flag(call, "force")
        queue, source = await self._open(call)
        report = await mapped(importers.rollback(queue, source, force=force))
        return json_response(importers.report_json(report))

    async def _open(self, call: Call[None]) -> tuple[OwnedQueue, importers.Source]:
        query = call.request.query_params
        text = query.get("source")
        kind: importers.Kind = "d1" if text == "d1" else "kv"
        if text not in ("d1", "kv"):
            raise ApiError(
                400,
                "invalid_field",
                "source must be d1 (a `wrangler d1 export` SQL file or `d1 execute --json` "
                "output) or kv (`wrangler kv` bulk JSON)",
                "source",
            )
        options: dict[str, str] = {}
        for name in ("tenantId", "runId"):
            value = query.get(name)
            if value is not None:
                if not 1 <= len(value) <= MAX_ID_CHARS:
                    raise ApiError(
                        400, "invalid_field", f"{name} must be 1 to {MAX_ID_CHARS} characters", name
                    )
                options[name] = value
        cross = _flag(call, "crossTenantKeys")
        queue = self._host.queue
        if not isinstance(queue, OwnedQueue):
            raise ApiError(
                409,
                "no_database",
                "this server reaches its queue over HTTP: import where the queue's database is "
                "opened (its own server, or `python -m actors store import` there)",
            )
        data = await read_body(call.request, MAX_IMPORT_BYTES)
        if not data.strip():
            raise ApiError(400, "invalid_field", "send the dump as the request body", "body")
        try:
            source = importers.read_dump(
                kind,
                data,
                tenant_id=options.get("tenantId", importers.DEFAULT_TENANT),
                run_id=options.get("runId", importers.DEFAULT_RUN),
                cross_tenant_keys=cross,
            )
        except DumpUnreadable as exc:
            raise ApiError(400, "invalid_dump", str(exc), "body") from None
        return queue, source


def _flag(call: Call[None], name: str) -> bool:
    value = call.request.query_params.get(name, "false").lower()
    if value not in _FLAGS:
        raise ApiError(400, "invalid_field", f"{name} must be true or false", name)
    return value in _TRUE
