"""Fixtures for the queue's tests: a fresh store per test on each backend, and a clock tests move.

``queue`` is parametrized over ``backend``: the same contract tests run against a new SQLite file
and against a new PostgreSQL schema (dropped after the test). ``open_queue(**options)`` opens
the same store again, for tests that need their own options or a second handle.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import PG_DSN, pg_admin

from actors.queue import Backoff, SQLiteQueue
from supervisors.clock import FakeClock

OpenQueue = Callable[..., contextlib.AbstractAsyncContextManager[Any]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


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


@pytest.fixture(scope="session")
def pg_session_schema(postgres_available: None) -> Iterator[str]:
    """One schema for the session's contract tests, dropped at the end."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    pg_admin(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def pg_empty_schema(pg_session_schema: str) -> str:
    """The session's schema, emptied: cheaper than migrating a new schema for every test."""
    pg_admin(
        "DO $$ BEGIN IF to_regclass($q$" + pg_session_schema + ".jobs$q$) IS NOT NULL THEN "
        f"TRUNCATE {pg_session_schema}.jobs, {pg_session_schema}.runs, "
        f"{pg_session_schema}.run_counts, {pg_session_schema}.maintenance, "
        f"{pg_session_schema}.queue_controls, {pg_session_schema}.schedules RESTART IDENTITY; "
        "END IF; END $$"
    )
    return pg_session_schema


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_queue(backend: str, request: pytest.FixtureRequest, clock: FakeClock) -> OpenQueue:
    """Open the test's store (its SQLite file or its PostgreSQL schema) with these options."""
    if backend == "sqlite":
        path = request.getfixturevalue("db")

        def open_sqlite(**options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
            return SQLiteQueue.open(path, **{"clock": clock, **options})

        return open_sqlite
    from actors.queue.postgres._queue import PostgresQueue

    schema = request.getfixturevalue("pg_empty_schema")

    def open_postgres(**options: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        return PostgresQueue.open(PG_DSN, schema=schema, **{"clock": clock, **options})

    return open_postgres


@pytest.fixture
async def queue(open_queue: OpenQueue) -> AsyncIterator[SQLiteQueue]:
    # jitter=0: retry delays are exact, so tests can step the clock to them.
    async with open_queue(backoff=Backoff(jitter=0.0)) as q:
        yield q
