"""Processors: turn a fetched object into a job's result (offline, in worker processes, or with
Gemini).

The front door: the `Processor` contract (from `actors.processors.base`), the offline and
isolated processors, the worker pool they run in, and `make_processor`, the registry of
``[processor].kind``. The Gemini module (``GeminiProcessor``, ``encode_vector``,
``decode_vector``) is imported on first use, so that the default path never loads it or httpx.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from actors.config import ProcessorConfig, Secrets
from actors.errors import ConfigError
from actors.processors._isolated import (
    IsolatedProcessor,
    check_factory,
    from_factory,
    worker_modules,
)
from actors.processors._local import LocalProcessor, process_locally
from actors.processors._workers import TimeLimit, WorkerPool, current_time_limit
from actors.processors.base import JobInput, Processor, ProcessorOutput

if TYPE_CHECKING:
    from actors.processors._gemini import GeminiProcessor, decode_vector, encode_vector

__all__ = [
    "GeminiProcessor",
    "IsolatedProcessor",
    "JobInput",
    "LocalProcessor",
    "Processor",
    "ProcessorOutput",
    "TimeLimit",
    "WorkerPool",
    "check_factory",
    "current_time_limit",
    "decode_vector",
    "encode_vector",
    "make_processor",
    "process_locally",
    "worker_modules",
]


def make_processor(
    settings: ProcessorConfig, secrets: Secrets | None = None, *, pool: WorkerPool | None = None
) -> Processor:
    """The processor that ``[processor].kind`` names (``python``: your own, by import path).

    ``secrets`` default to the environment's (``GOOGLE_API_KEY`` for ``gemini``); ``pool`` runs
    the offline processor's large documents and isolated processors (without one, such a
    processor has a pool of its own, a worker per CPU, stopped by its ``aclose``).
    """
    if settings.kind == "local":
        return LocalProcessor(settings, pool)
    if settings.kind == "gemini":
        from actors.processors._gemini import GeminiProcessor  # with httpx: only when used

        if secrets is None:
            secrets = Secrets.from_env(os.environ)
        return GeminiProcessor.from_settings(settings, secrets)
    if settings.kind == "python":
        if settings.isolate:
            check_factory(settings)  # a typo fails at start-up, not in every worker
            return IsolatedProcessor(settings, pool)
        return from_factory(settings)
    raise ConfigError(
        f"[processor].kind = {settings.kind!r} is not available in this version; "
        'use "local", "gemini" or "python"'
    )


_GEMINI = frozenset({"GeminiProcessor", "decode_vector", "encode_vector"})


def __getattr__(name: str) -> object:
    if name in _GEMINI:
        from actors.processors import _gemini

        return getattr(_gemini, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
