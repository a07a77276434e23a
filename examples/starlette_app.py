"""Embedding the pipeline in a Starlette app: the whole supervision tree lives in the lifespan.

Run it with ``uvicorn examples.starlette_app:app`` (config from ``ACTORS_CONFIG`` or
``config/actors.toml``), then::

    curl -X POST --data-binary @samples/community-solar.md localhost:8000/runs/r1/files/solar.md
    curl localhost:8000/runs/r1/wait
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors import ActorSystem, SystemFailed, load_config
from actors.log import configure_logging


def stop_the_server(failure: BaseException) -> None:
    """The pipeline gave up: stop the whole server, so that its manager sees and restarts it
    (a web server left running over a dead pipeline would accept jobs nobody processes)."""
    print(f"pipeline failed, stopping the server: {failure}", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    config = load_config()
    configure_logging(config.log.level, config.log.format)
    async with ActorSystem(config, on_failure=stop_the_server) as system:
        app.state.system = system
        yield


def as_json(value: object, status_code: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code, media_type="application/json")


async def put_file(request: Request) -> Response:
    system: ActorSystem = request.app.state.system
    run_id, name = request.path_params["run_id"], request.path_params["name"]
    key = f"web/{run_id}/{name}"
    await system.store.put(key, await request.body())
    job = await system.enqueue(run_id, "web", key, idempotency_key=key)
    return as_json({"jobId": job.id, "runId": run_id, "status": job.status}, 201)


async def get_run(request: Request) -> Response:
    system: ActorSystem = request.app.state.system
    return as_json(await system.run_summary(request.path_params["run_id"]))


async def wait_run(request: Request) -> Response:
    system: ActorSystem = request.app.state.system
    return as_json(await system.wait_run(request.path_params["run_id"]))


async def stats(request: Request) -> Response:
    system: ActorSystem = request.app.state.system
    return as_json(await system.stats())


app = Starlette(
    routes=[
        Route("/runs/{run_id}/files/{name}", put_file, methods=["POST"]),
        Route("/runs/{run_id}", get_run),
        Route("/runs/{run_id}/wait", wait_run),
        Route("/stats", stats),
    ],
    lifespan=lifespan,
)

__all__ = ["SystemFailed", "app"]
