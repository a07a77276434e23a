"""``HttpServer``: the ASGI app served by uvicorn (asyncio) or hypercorn (trio) as a child of the
supervision tree."""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any, Protocol

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


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a ``[http].host``) binds the loopback interface alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port), without Nagle's delay.

    The protocol is named (``IPPROTO_TCP``, not 0): asyncio turns Nagle off (``TCP_NODELAY``)
    only on accepted sockets whose ``proto`` says TCP, and an accepted socket takes its
    listener's. Left at 0, every response uvicorn writes in two parts (head, then body) waited
    for the client's delayed ACK of the first: 40 ms a request (docs/decisions.md, "The HTTP
    hot path"). ``TCP_NODELAY`` on the listener too: Linux hands it down to accepted sockets.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        # 1024: the 200-concurrent-clients test and load generators connect all at once.
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


# How long open requests may finish once the server stops, before they are cut off.
GRACE_SECONDS = 2.0
# How long an idle keep-alive connection stays open.
KEEP_ALIVE_SECONDS = 30.0


class HttpServer:
    """Serves the API on ``[http].host:port`` until its supervisor stops it.

    The server follows ``[runtime].backend``, each the fastest that runs there (measured:
    docs/decisions.md, "The ASGI server"): uvicorn with httptools on asyncio, hypercorn on trio
    (uvicorn is asyncio-only). The socket is bound before ``started()``, so "started" means
    connections are accepted; ``port`` says which port was bound (useful with port 0). On stop,
    pulls that wait for a job answer at once and open requests get `GRACE_SECONDS` to finish.

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
        #: Which server serves, once running: "uvicorn (httptools)" on asyncio, "hypercorn"
        #: on trio.
        self.served_by: str | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        settings = self._host.config.http
        sock = bind_socket(settings.host, settings.port)
        try:
            self.port = sock.getsockname()[1]
            server = _make_server(self.app, sock)
            self.served_by = server.name
            stop = anyio.Event()
            done = anyio.Event()

            async def serve() -> None:
                try:
                    await server.serve()
                    if not stop.is_set():
                        raise RuntimeError("the HTTP server stopped on its own; restarting it")
                finally:
                    done.set()

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(serve)
                    if self._ctx is not None:
                        tg.start_soon(self.metrics.count_restarts, self._ctx.events)
                    log.info(
                        "http.listening", host=settings.host, port=self.port, server=server.name
                    )
                    if settings.metrics == "open" and not is_loopback(settings.host):
                        log.warning(
                            "http.metrics_public",
                            host=settings.host,
                            port=self.port,
                            hint=(
                                "anyone who reaches this address reads /metrics (the counts "
                                'of every tenant); remove [http] metrics = "open" to require '
                                "a token, or bind to 127.0.0.1"
                            ),
                        )
                    task_status.started()
                    if self._ctx is not None:
                        await self._ctx.wait_stop_requested()
                    else:
                        await anyio.sleep_forever()
                    # Pulls that wait for a job answer now, with none: the grace is for the
                    # rest.
                    self.app.state.stop_waiting()
                    stop.set()
                    server.stop()
                    # The server waits for open requests up to GRACE_SECONDS, then returns;
                    # the restart counter is cancelled with it.
                    with anyio.move_on_after(GRACE_SECONDS + 1.0):
                        await done.wait()
                    tg.cancel_scope.cancel()
            finally:
                server.close_now()
        finally:
            sock.close()


def _make_server(app: Any, sock: socket.socket) -> _Server:
    """The fastest server that runs on this event loop (docs/decisions.md, "The ASGI server")."""
    if sniffio.current_async_library() == "trio":
        return _Hypercorn(app, sock)
    return _Uvicorn(app, sock)


class _Server(Protocol):
    name: str

    async def serve(self) -> None: ...

    def stop(self) -> None:
        """Stop accepting; let open requests finish within GRACE_SECONDS; then return."""

    def close_now(self) -> None:
        """Close whatever is still open (after a cancelled `serve`)."""


class _Uvicorn:
    """uvicorn on the running asyncio loop, on our socket, with httptools' parser (h11's
    without it); no signal handlers, logging configuration, lifespan or proxy headers of its
    own: the process and the app have theirs."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        # httptools' parser is the fast one (docs/benchmarks.md); the http extra installs it.
        http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
        self.name = f"uvicorn ({http})"

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                # The service handles SIGTERM and SIGINT (actors/service.py).
                yield

        config = uvicorn.Config(
            app,
            http=http,
            ws="wsproto",  # hypercorn's (installed with it); uvicorn's default would need another
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=int(KEEP_ALIVE_SECONDS),
            timeout_graceful_shutdown=int(GRACE_SECONDS),
        )
        self._server = Server(config)
        self._sock = sock

    async def serve(self) -> None:
        await self._server.serve(sockets=[self._sock])

    def stop(self) -> None:
        self._server.should_exit = True

    def close_now(self) -> None:
        for listener in getattr(self._server, "servers", ()):
            listener.close()
        for connection in list(self._server.server_state.connections):
            connection.transport.close()


class _Hypercorn:
    """hypercorn on trio (it serves asyncio too), on a duplicate of our socket's descriptor."""

    name = "hypercorn"

    def __init__(self, app: Any, sock: socket.socket) -> None:
        from hypercorn.config import Config as HypercornConfig

        config = HypercornConfig()
        # Hypercorn takes ownership of the descriptor it is given and closes it.
        config.bind = [f"fd://{os.dup(sock.fileno())}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = GRACE_SECONDS
        config.keep_alive_timeout = KEEP_ALIVE_SECONDS
        self._config = config
        self._app = app
        self._stop = anyio.Event()

    async def serve(self) -> None:
        if sniffio.current_async_library() == "trio":
            from hypercorn.trio import serve
        else:
            from hypercorn.asyncio import serve  # type: ignore[assignment]
        await serve(self._app, self._config, shutdown_trigger=self._stop.wait)

    def stop(self) -> None:
        self._stop.set()

    def close_now(self) -> None:
        pass  # hypercorn closes its own when cancelled
