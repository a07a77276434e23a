"""Fixtures for the queue's tests: a fresh file per test and a clock that tests move."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.queue import Backoff, SQLiteQueue
from supervisors.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
async def queue(db: Path, clock: FakeClock) -> AsyncIterator[SQLiteQueue]:
    # jitter=0: retry delays are exact, so tests can step the clock to them.
    async with SQLiteQueue.open(db, clock=clock, backoff=Backoff(jitter=0.0)) as q:
        yield q
