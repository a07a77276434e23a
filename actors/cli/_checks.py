"""Start-up checks: what ``run`` verifies before the supervision tree starts.

Inside the tree, a missing secret, a busy port or a wrong token is a crash, restarts and at last
a give-up with a long chained message; checked here first, each is one line on stderr and exit
code 1 (`EXIT_FAILED`), with nothing started. ``config check`` runs the checks that change
nothing (`check_config`, and `check_queue` for a PostgreSQL or remote queue); ``run`` runs them
all (`check_before_start`).
"""

from __future__ import annotations

import errno
import shutil
import socket
from pathlib import Path

import anyio

from actors.config import Config, require_package
from actors.errors import ConfigError, DiskFull, SchemaTooNew

__all__ = [
    "MIN_FREE_BYTES",
    "check_before_start",
    "check_config",
    "check_free_space",
    "check_port",
    "check_queue",
]


def check_config(config: Config) -> None:
    """Raise `ConfigError` for what the chosen kinds need and lack (a secret, a bucket, an
    extra, an importable factory, a well-formed ``ACTORS_TOKENS``, API keys, Turnstile's
    tenants), opening no file and no connection."""
    from actors.pipeline import schedules_from_config
    from actors.storage import make_store

    schedules_from_config(config)  # each [[schedules]] key under its tenant's prefix
    make_store(config)  # r2/s3: bucket, endpoint, R2_* credentials; builds no client yet
    processor = config.processor
    if processor.kind == "gemini":
        from actors.processors import make_processor

        make_processor(processor, config.secrets)  # GOOGLE_API_KEY, httpx; no request made
    elif processor.kind == "python":
        from actors.processors import check_factory

        check_factory(processor)  # imports its module; the factory itself is not called
    if config.http.enabled:
        require_package("starlette", "http", "[http].enabled = true")
        require_package("prometheus_client", "http", "[http].enabled = true")
        from actors.http import Tokens

        Tokens.from_config(config)  # ACTORS_TOKENS' form, each token's and API key's length
        if config.secrets.turnstile_secret is not None and not config.http.turnstile_tenants:
            raise ConfigError(
                "TURNSTILE_SECRET is set but [http].turnstile_tenants names no tenant, so no "
                'upload could use Turnstile; name the tenants that may (["*"]: all), or unset '
                "TURNSTILE_SECRET"
            )


def check_port(host: str, port: int) -> None:
    """Raise `ConfigError` if ``host:port`` cannot be listened on now (the server binds it
    the same way, with SO_REUSEADDR, once the tree starts)."""
    if port == 0:
        return  # any free port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = "address already in use; stop the other process or change [http].port"
            else:
                reason = f"{exc.strerror or exc}; check [http].host and [http].port"
            raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None


#: Less free space than this where the SQLite queue lives, and ``run`` does not start: every
#: lease and ack is a write, and on a full disk each fails and is retried for as long as it lasts.
MIN_FREE_BYTES = 1024 * 1024


def check_free_space(path: str | Path) -> None:
    """Raise `DiskFull` if the disk that holds (or will hold) ``path`` is nearly full."""
    where = Path(path).absolute().parent
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < MIN_FREE_BYTES:
        raise DiskFull(
            f"disk full at {str(path)!r}: {free // 1024} KiB free; free space on its disk (or "
            "raise its quota) and run again"
        )


def check_before_start(config: Config) -> None:
    """Everything ``run`` needs, before the tree starts: `check_config`, the HTTP port, a SQLite
    queue's free space, and the queue itself, opened once (a damaged SQLite file, a PostgreSQL
    server that refuses, a remote queue server that refuses the token)."""
    check_config(config)
    if config.http.enabled:
        check_port(config.http.host, config.http.port)
    if config.queue.backend == "sqlite":
        check_free_space(config.queue.path)
    anyio.run(_check_queue, config, backend=config.runtime.backend)


def check_queue(config: Config) -> str:
    """Reach a PostgreSQL or remote queue without changing it; return what was found.

    PostgreSQL: connect and read the schema's version (a newer one than this actors knows is
    `SchemaTooNew`; none yet or an older one is fine: ``run`` creates or migrates it). A remote
    queue (``backend = "http"``): the calls a worker makes first, with nothing in them (an
    unreachable server is `QueueUnavailable`, a refused token `ConfigError`). A SQLite queue is
    not opened (opening creates it): ``""``.
    """
    if config.queue.backend == "postgres":
        from actors.queue import admin

        status = admin.status(config)
        if status.version > status.latest:
            raise SchemaTooNew(
                f"{status.where} has schema version {status.version}, but this version of "
                f"actors knows versions up to {status.latest}: upgrade actors first"
            )
        if status.version == 0:
            return f"{status.where}: no queue yet (`run` creates it)"
        if status.version < status.latest:
            return f"{status.where}: schema {status.version} of {status.latest} (`run` migrates)"
        return f"{status.where}: schema {status.version}"
    if config.queue.backend == "http":
        anyio.run(_check_queue, config, backend=config.runtime.backend)
        return f"{config.queue.url}: the token is accepted"
    return ""


async def _check_queue(config: Config) -> None:
    from actors.queue.factory import open_queue

    async with open_queue(config) as queue:
        # The first read the tree would make: a SQLite file damaged past its header fails here.
        await queue.stats()
        if config.queue.backend == "http":
            from actors.queue.http import HttpQueue

            assert isinstance(queue, HttpQueue)
            # A worker's first call, with nothing in it: a wrong token (401) or a role that may
            # not lease (403) is refused here, as `ConfigError` naming EDGE_API_TOKEN.
            await queue.start_many([])
