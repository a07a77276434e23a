"""The run routes: a run's state, and its updates as server-sent events or over a WebSocket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import msgspec
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from actors import protocol as wire
from actors.errors import RunNotFound
from actors.http._auth import Gate, Principal
from actors.http._call import Call, json_response
from actors.http._errors import ApiError, as_http, mapped
from actors.http._host import RunsHost
from actors.queue.model import RunCancel, RunSummary

if TYPE_CHECKING:
    from actors.pipeline._run_room import RunUpdate

__all__ = ["Runs"]


class EventOut(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    kind: str
    job_ids: tuple[int, ...]
    at: float
    error: str | None = None


class UpdateOut(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    """One server-sent event or WebSocket message: the run's state and the events since the last."""

    run: wire.RunOut | None
    events: list[EventOut]
    missed: int = 0


def _update_out(update: RunUpdate) -> bytes:
    run = wire.run_out(update.summary) if update.summary is not None else None
    events = [
        EventOut(kind=e.kind, job_ids=e.job_ids, at=e.at, error=e.error) for e in update.events
    ]
    return msgspec.json.encode(UpdateOut(run=run, events=events, missed=update.missed))


class Runs:
    """A run's summary from the queue, and its updates from the host's subscription
    (`RunsHost.watch_run`: the run's room), streamed until the run ends."""

    def __init__(self, host: RunsHost, gate: Gate) -> None:
        self._host = host
        self._gate = gate

    async def read(self, run_id: str, principal: Principal | None) -> RunSummary:
        """The run's summary, if ``principal`` may see it; else the 404 of a missing run."""
        if not 1 <= len(run_id) <= 1024:
            raise ApiError(400, "invalid_field", "a run id is 1 to 1024 characters", "runId")
        summary = await mapped(self._host.queue.run_summary(run_id))
        if principal is not None and not principal.sees(summary.tenant_id):
            # Exactly what a run that does not exist answers: no probing for others' runs.
            raise as_http(RunNotFound(run_id))
        return summary

    async def get_run(self, call: Call[None]) -> Response:
        summary = await self.read(call.request.path_params["run_id"], call.principal)
        return json_response(wire.run_out(summary))

    async def cancel_run(self, call: Call[None]) -> Response:
        """Cancel every unfinished job of the run; 404 for a run that does not exist or
        belongs to another tenant than the token's."""
        outcome = await self.cancel(call.request.path_params["run_id"], call.principal)
        return json_response(
            wire.RunCancelOut(
                success=True,
                run_id=outcome.run_id,
                cancelled=outcome.cancelled,
                cancel_requested=outcome.cancel_requested,
            )
        )

    async def cancel(self, run_id: str, principal: Principal | None) -> RunCancel:
        """Cancel every unfinished job of the run, within the principal's tenant if it has one
        (another tenant's run is a run that does not exist). The API's route and the
        dashboard's action."""
        if not 1 <= len(run_id) <= 1024:
            raise ApiError(400, "invalid_field", "a run id is 1 to 1024 characters", "runId")
        tenant = principal.tenant if principal is not None else None
        return await mapped(self._host.queue.cancel_run(run_id, tenant_id=tenant))

    async def stream_token(self, call: Call[None]) -> Response:
        """A token that opens this run's ``/events`` and ``/ws`` in ``?token=``, for a while.

        For browsers, which cannot send a header with EventSource or a WebSocket: the token
        names one run and expires after `STREAM_TOKEN_SECONDS`, so one found in a log later
        opens nothing else and soon nothing at all.
        """
        request = call.request
        run_id = request.path_params["run_id"]
        summary = await self.read(run_id, call.principal)
        token, expires = self._gate.stream_token(run_id, summary.tenant_id)
        query = f"?token={token}"
        return json_response(
            wire.StreamTokenOut(
                token=token,
                expires_at=expires,
                events_url=str(request.url_for("run_events", run_id=run_id)) + query,
                ws_url=str(request.url_for("run_ws", run_id=run_id)).replace("http", "ws", 1)
                + query,
            )
        )

    async def run_events(self, call: Call[None]) -> Response:
        """Server-sent events: the run's state now, then after every change, until it ends."""
        run_id = call.request.path_params["run_id"]
        await self.read(run_id, call.principal)

        async def stream() -> AsyncIterator[bytes]:
            async with contextlib.aclosing(self._host.watch_run(run_id)) as updates:
                async for update in updates:
                    yield b"event: update\ndata: " + _update_out(update) + b"\n\n"
            yield b"event: end\ndata: {}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def run_ws(self, websocket: WebSocket, principal: Principal | None) -> None:
        """The same updates as ``/events`` over a WebSocket; closes when the run ends.

        An `ApiError` raised before the socket is accepted closes it with 1008 and the error's
        code as the reason (the endpoint in ``_app.py`` does).
        """
        run_id = websocket.path_params["run_id"]
        await self.read(run_id, principal)  # another tenant's: run_not_found
        await websocket.accept()
        async with anyio.create_task_group() as tg:

            async def until_disconnect() -> None:
                with contextlib.suppress(WebSocketDisconnect):
                    while True:
                        await websocket.receive_text()
                tg.cancel_scope.cancel()

            tg.start_soon(until_disconnect)
            try:
                async with contextlib.aclosing(self._host.watch_run(run_id)) as updates:
                    async for update in updates:
                        await websocket.send_bytes(_update_out(update))
                await websocket.close()
            except (WebSocketDisconnect, OSError, RuntimeError):
                pass  # the client went away mid-send
            tg.cancel_scope.cancel()
