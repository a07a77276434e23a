"""PostgreSQL for the tests: the server's DSN and a one-shot admin statement."""

from __future__ import annotations

import asyncio
import os

import asyncpg

# The local server CI starts (.ci/run); trust auth, database `test`.
PG_DSN = os.environ.get("ACTORS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def pg_admin(sql: str, *args: object) -> list[asyncpg.Record]:
    """Run one statement on a connection of its own (outside any test's event loop)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            return await conn.fetch(sql, *args)  # type: ignore[no-any-return]
        finally:
            await conn.close()

    return asyncio.run(run())


def pg_runs(schema: str) -> list[asyncpg.Record]:
    """Every run of the queue in ``schema`` as the queue reads it (its base row plus its count
    shards, `postgres_schema.RUN_STATE`), in creation order."""
    from actors.queue.postgres.schema import RUN_STATE

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(PG_DSN, timeout=5, server_settings={"search_path": schema})
        try:
            return await conn.fetch(f"SELECT * FROM ({RUN_STATE}) s ORDER BY seq")  # type: ignore[no-any-return]
        finally:
            await conn.close()

    return asyncio.run(run())


def pg_script(sql: str) -> None:
    """Run several statements (no parameters, no rows) on a connection of their own."""

    async def run() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())
