"""The HTTP API: the edge worker's job protocol, run events, health and metrics (ASGI)."""

from __future__ import annotations

from actors.http.app import create_app
from actors.http.auth import Principal, Tokens
from actors.http.metrics import Metrics
from actors.http.server import HttpServer

__all__ = ["HttpServer", "Metrics", "Principal", "Tokens", "create_app"]
