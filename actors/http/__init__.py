"""The HTTP API: the edge worker's job protocol, run events, health and metrics (ASGI).

Its front door: `create_app` (the Starlette app over a `Host`, such as an `ActorSystem`),
`HttpServer` (that app under uvicorn, or hypercorn on trio, as a supervised child), `Tokens`
and `Principal` (who may call what), `Metrics`, and `openapi_document`. The routes are listed
once, in ``_routes.py``; the handlers live by resource in ``_jobs.py``, ``_uploads.py``,
``_runs.py`` and ``_operations.py``.
"""

from __future__ import annotations

from actors.http._app import create_app
from actors.http._auth import Principal, Tokens, token_id
from actors.http._host import Host
from actors.http._metrics import Metrics
from actors.http._openapi import openapi_document
from actors.http._server import HttpServer

__all__ = [
    "Host",
    "HttpServer",
    "Metrics",
    "Principal",
    "Tokens",
    "create_app",
    "openapi_document",
    "token_id",
]
