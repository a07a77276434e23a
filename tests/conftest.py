"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import pytest

from actors.log import configure_logging

# Plain JSON lines with plain tracebacks. Left unconfigured, structlog renders every logged
# exception through rich when it is installed (~0.3 s each), which turns a test that crashes
# an actor a thousand times into minutes. Debug level, so capture_logs() sees every event.
configure_logging("debug", "json")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
