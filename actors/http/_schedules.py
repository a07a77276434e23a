"""The schedule routes: create (or replace), list and delete a tenant's recurring jobs."""

from __future__ import annotations

import re

from starlette.responses import Response

from actors import protocol as wire
from actors import tenancy
from actors.bounds import SCHEDULE_NAME_PATTERN
from actors.errors import InvalidArgument, InvalidObjectKey, ScheduleNotFound
from actors.http._auth import Principal, check_tenant
from actors.http._call import Call, json_response
from actors.http._errors import ApiError, as_http, mapped
from actors.http._host import SchedulesHost
from actors.queue.model import NewSchedule

__all__ = ["Schedules"]


def _tenant_query(call: Call[None]) -> str | None:
    tenant = call.request.query_params.get("tenantId")
    if tenant is not None and not 1 <= len(tenant) <= 1024:
        raise ApiError(400, "invalid_field", "tenantId must be 1 to 1024 characters", "tenantId")
    return tenant


class Schedules:
    """Schedules over the queue; every verb is one queue call.

    Tenancy: a schedule's tenant is in its body (a tenant-scoped token may name only its own:
    403); its key must lie under ``"{tenantId}/"`` for every principal, admins included (its
    jobs are enqueued by no one in particular, so none may cross tenants). A scoped token
    lists and deletes only its tenant's schedules; another tenant's answers as a missing one.

    Error handling: as for the job routes (`mapped`).
    """

    def __init__(self, host: SchedulesHost) -> None:
        self._host = host

    async def create_schedule(self, call: Call[wire.ScheduleIn]) -> Response:
        body = await call.body()
        check_tenant(call.principal, body.tenant_id)
        try:
            tenancy.check_tenant_id(body.tenant_id)
        except InvalidArgument as exc:
            raise ApiError(400, "invalid_field", str(exc), "tenantId") from None
        try:
            tenancy.check_key_form(body.r2_key)
        except InvalidObjectKey as exc:
            raise ApiError(400, "invalid_object_key", str(exc), "r2Key") from None
        if not tenancy.key_in_tenant(body.tenant_id, body.r2_key):
            raise ApiError(
                403,
                "foreign_object_key",
                f"r2Key {body.r2_key!r} is outside the schedule's tenant prefix: its jobs may "
                f"only name keys under {tenancy.tenant_prefix(body.tenant_id)!r}",
                "r2Key",
            )
        schedule = NewSchedule(
            name=body.name,
            tenant_id=body.tenant_id,
            r2_key=body.r2_key,
            cron=body.cron,
            interval_seconds=body.interval_seconds,
            timezone=body.timezone,
            payload=body.payload,
            priority=body.priority,
            missed=body.missed,
            grace_seconds=body.grace_seconds,
        )
        return json_response(wire.schedule_out(await mapped(self._host.create_schedule(schedule))))

    async def list_schedules(self, call: Call[None]) -> Response:
        tenant = _tenant_query(call)
        principal = call.principal
        if principal is not None and principal.tenant is not None:
            if tenant is not None:
                check_tenant(principal, tenant)
            tenant = principal.tenant
        schedules = await mapped(self._host.queue.list_schedules(tenant))
        return json_response(wire.SchedulesOut(schedules=[wire.schedule_out(s) for s in schedules]))

    async def delete_schedule(self, call: Call[None]) -> Response:
        name = call.request.path_params["name"]
        if re.fullmatch(SCHEDULE_NAME_PATTERN, name) is None:
            raise ApiError(
                400,
                "invalid_field",
                "a schedule name is 1 to 128 letters, digits, '_', '.' or '-'",
                "name",
            )
        tenant = self._tenant_of(call.principal, _tenant_query(call), name)
        return json_response(
            wire.schedule_out(await mapped(self._host.queue.delete_schedule(tenant, name)))
        )

    @staticmethod
    def _tenant_of(principal: Principal | None, tenant: str | None, name: str) -> str:
        """The tenant whose schedule a delete names: a scoped token's own (another tenant's
        schedule answers as missing), else ``tenantId``, which an unscoped token must give."""
        if principal is not None and principal.tenant is not None:
            if tenant is not None and not principal.sees(tenant):
                raise as_http(ScheduleNotFound(tenant, name))
            return principal.tenant
        if tenant is None:
            raise ApiError(
                400,
                "invalid_field",
                "tenantId is required: schedule names are unique within a tenant",
                "tenantId",
            )
        return tenant
