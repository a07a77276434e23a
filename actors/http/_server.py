"""``HttpServer``: the ASGI app served by hypercorn as a child of the supervision tree."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import anyio
import sniffio
from anyio.abc import TaskStatus

from actors.http._app import create_app
from actors.http._auth import Tokens
from actors.http._host import Host
from actors.http._metrics import Metrics
from actors.log import get_logger
from supervisors import Context

__all__ = ["HttpServer", "bind_socket"]

log = get_logger("actors.http")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # 1024: the 200-concurrent-clients test and load generators connect all at once.
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpServer:
    """Serves the API on ``[http].host:port`` until its supervisor stops it.

    Hypercorn runs on asyncio and on trio (uvicorn is asyncio-only), so the server follows
    ``[runtime].backend``. The socket is bound before ``started()``, so "started" means
    connections are accepted; ``port`` says which port was bound (useful with port 0).

    Error handling: no job passes through the server's hands: a request in progress when it
    crashes is lost to its client, who retries (enqueue with an idempotency key, and acks under
    the same lease, are safe to repeat). The supervisor restarts it like any actor; the
    socket is bound again on restart.
    """

    name = "http"

    def __init__(
        self,
        host: Host,
        *,
        ctx: Context | None = None,
        tokens: Tokens | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._host = host
        self._ctx = ctx
        self.metrics = metrics if metrics is not None else Metrics()
        self.app = create_app(host, tokens=tokens, metrics=self.metrics)
        self.port: int | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config as HypercornConfig

        settings = self._host.config.http
        sock = bind_socket(settings.host, settings.port)
        try:
            self.port = sock.getsockname()[1]
            config = HypercornConfig()
            # Hypercorn takes ownership of the descriptor it is given and closes it.
            config.bind = [f"fd://{os.dup(sock.fileno())}"]
            config.accesslog = None
            config.errorlog = logging.getLogger("hypercorn.error")
            config.graceful_timeout = 2.0
            config.keep_alive_timeout = 30.0
            stop = anyio.Event()

            async def shutdown_trigger() -> None:
                await stop.wait()

            serve = _serve_function()
            self._done = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._serve, serve, config, shutdown_trigger, stop)
                if self._ctx is not None:
                    tg.start_soon(self.metrics.count_restarts, self._ctx.events)
                log.info("http.listening", host=settings.host, port=self.port)
                task_status.started()
                if self._ctx is not None:
                    await self._ctx.wait_stop_requested()
                else:
                    await anyio.sleep_forever()
                # Pulls that wait for a job answer now, with none: the grace is for the rest.
                self.app.state.stop_waiting()
                stop.set()
                # Hypercorn waits for open requests up to graceful_timeout, then returns;
                # the restart counter is cancelled with it.
                with anyio.move_on_after(config.graceful_timeout + 1.0):
                    await self._done.wait()
                tg.cancel_scope.cancel()
        finally:
            sock.close()

    async def _serve(self, serve: Any, config: Any, trigger: Any, stop: anyio.Event) -> None:
        try:
            await serve(self.app, config, shutdown_trigger=trigger)
            if not stop.is_set():
                raise RuntimeError("the HTTP server stopped on its own; restarting it")
        finally:
            self._done.set()

    _done: anyio.Event


def _serve_function() -> Any:
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as serve_trio

        return serve_trio
    from hypercorn.asyncio import serve as serve_asyncio

    return serve_asyncio
