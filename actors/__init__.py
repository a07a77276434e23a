"""Durable document-processing jobs through supervised actors over a SQLite-backed queue."""

from __future__ import annotations

from actors.config import Config, load_config
from actors.errors import ActorsError, ConfigError
from actors.pipeline._run_room import RunUpdate
from actors.queue import Job, NewJob, RunSummary, SQLiteQueue, Stats
from actors.system import ActorSystem, SystemFailed

__all__ = [
    "ActorSystem",
    "ActorsError",
    "Config",
    "ConfigError",
    "Job",
    "NewJob",
    "RunSummary",
    "RunUpdate",
    "SQLiteQueue",
    "Stats",
    "SystemFailed",
    "load_config",
]
