"""Durable document-processing jobs through supervised actors over a SQLite-backed queue.

The names below load on first use (PEP 562), so that ``python -m actors --help`` and a remote
worker importing one submodule do not pay for the whole system.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors.config import Config, load_config
    from actors.errors import ActorsError, ConfigError
    from actors.pipeline import RunUpdate
    from actors.queue import Job, NewJob, NewSchedule, RunSummary, Schedule, SQLiteQueue, Stats
    from actors.system import ActorSystem, SystemFailed

__all__ = [
    "ActorSystem",
    "ActorsError",
    "Config",
    "ConfigError",
    "Job",
    "NewJob",
    "NewSchedule",
    "RunSummary",
    "RunUpdate",
    "SQLiteQueue",
    "Schedule",
    "Stats",
    "SystemFailed",
    "load_config",
]

_HOMES = {
    "ActorSystem": "actors.system",
    "SystemFailed": "actors.system",
    "ActorsError": "actors.errors",
    "ConfigError": "actors.errors",
    "Config": "actors.config",
    "load_config": "actors.config",
    "Job": "actors.queue",
    "NewJob": "actors.queue",
    "NewSchedule": "actors.queue",
    "Schedule": "actors.queue",
    "RunSummary": "actors.queue",
    "SQLiteQueue": "actors.queue",
    "Stats": "actors.queue",
    "RunUpdate": "actors.pipeline",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
