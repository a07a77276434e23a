"""Open the queue backend that ``[queue].backend`` names."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from actors.config import Config, require_package
from actors.errors import ConfigError
from actors.queue.base import Queue
from actors.queue.model import Backoff
from actors.queue.sqlite import SQLiteQueue
from supervisors.clock import Clock

__all__ = ["open_queue"]


@contextlib.asynccontextmanager
async def open_queue(config: Config, *, clock: Clock | None = None) -> AsyncIterator[Queue]:
    """Open the configured queue for the block; every backend keeps the contract `Queue`."""
    settings = config.queue
    backoff = Backoff(
        base_seconds=settings.retry_base_seconds, cap_seconds=settings.retry_cap_seconds
    )
    if settings.backend == "sqlite":
        Path(settings.path).parent.mkdir(parents=True, exist_ok=True)
        async with SQLiteQueue.open(
            settings.path,
            durability=settings.durability,
            clock=clock,
            max_attempts=settings.max_attempts,
            backoff=backoff,
            fair=settings.fair,
            poll_interval_seconds=settings.poll_interval_seconds,
        ) as queue:
            yield queue
        return
    if settings.backend == "postgres":
        if not settings.dsn:
            raise ConfigError('[queue].backend = "postgres" needs [queue].dsn = "postgresql://..."')
        require_package("asyncpg", "postgres", '[queue].backend = "postgres"')
        from actors.queue.postgres import PostgresQueue  # asyncpg is imported only if used

        password = config.secrets.pg_password.reveal() if config.secrets.pg_password else None
        async with PostgresQueue.open(
            settings.dsn,
            password=password,
            clock=clock,
            max_attempts=settings.max_attempts,
            backoff=backoff,
            fair=settings.fair,
            poll_interval_seconds=settings.poll_interval_seconds,
        ) as queue:
            yield queue
        return
    if settings.backend == "http":
        if not settings.url:
            raise ConfigError(
                '[queue].backend = "http" needs [queue].url (or EDGE_BASE_URL), the queue '
                "server's address, e.g. http://127.0.0.1:8787"
            )
        require_package("httpx", "http", '[queue].backend = "http"')
        from actors.queue.http import HttpQueue  # httpx is imported only if used

        token = config.secrets.api_token.reveal() if config.secrets.api_token else None
        async with HttpQueue.open(settings.url, token) as queue:
            yield queue
        return
    raise ConfigError(
        f'[queue].backend = {settings.backend!r} is not available in this version; use "sqlite"'
    )
