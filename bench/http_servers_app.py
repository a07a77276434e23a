"""The ASGI app that bench_http_servers.py serves under each server: the project's API
(`actors.http.create_app`) over an `ActorSystem` opened in the app's lifespan, the same app
`HttpServer` serves. ``[http] queue_only``: this process leases nothing itself.

Environment: ``BENCH_DIR`` (the queue file and objects go there), ``BENCH_TOKEN`` (an admin
token).
"""

from __future__ import annotations

import os
from typing import Any

from actors.config import Config, HttpConfig, QueueConfig, Secret, Secrets, StorageConfig
from actors.http import create_app
from actors.system import ActorSystem

Scope = dict[str, Any]


def _config() -> Config:
    where = os.environ["BENCH_DIR"]
    return Config(
        queue=QueueConfig(path=f"{where}/q.db"),
        storage=StorageConfig(root=f"{where}/objects"),
        http=HttpConfig(enabled=False, queue_only=True),
        secrets=Secrets(http_tokens=Secret(f"{os.environ['BENCH_TOKEN']}:admin")),
    )


class App:
    """Opens the system at lifespan startup and closes it at shutdown; serves the API between."""

    def __init__(self) -> None:
        self._api: Any = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self._api(scope, receive, send)
            return
        await receive()  # lifespan.startup
        async with ActorSystem(_config()) as system:
            self._api = create_app(system)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


app = App()
