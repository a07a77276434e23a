"""Fixtures for the importers' tests: a fresh queue of each backend (SQLite file, PostgreSQL
schema) that owns its storage, and a clock the tests move."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

# The PostgreSQL helpers live with the queue's tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "queue"))

from pg_helpers import PG_DSN, pg_admin

from actors.queue import OwnedQueue, SQLiteQueue
from supervisors.clock import FakeClock

OpenOwned = Callable[[], contextlib.AbstractAsyncContextManager[OwnedQueue]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_800_000_000.0)


@pytest.fixture(scope="session")
def postgres_available() -> None:
    try:
        pg_admin("SELECT 1")
    except Exception as exc:  # any failure to reach the server
        if os.environ.get("CI"):
            raise  # CI starts PostgreSQL (.ci/run): a missing server is a failure there
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN}: {exc}")


@pytest.fixture
def pg_schema(postgres_available: None) -> Iterator[str]:
    """A new, empty PostgreSQL schema for one test, dropped after it."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    pg_admin(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_owned(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> OpenOwned:
    """How to open the test's queue (again, for a second look)."""
    if backend == "sqlite":
        return lambda: SQLiteQueue.open(tmp_path / "queue.db", clock=clock)
    from actors.queue.postgres._queue import PostgresQueue

    schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresQueue.open(PG_DSN, schema=schema, clock=clock)


@pytest.fixture
async def owned(open_owned: OpenOwned) -> AsyncIterator[OwnedQueue]:
    async with open_owned() as queue:
        yield queue
