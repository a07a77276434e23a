"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest

from actors.log import configure_logging

# Plain JSON lines with plain tracebacks. Left unconfigured, structlog renders every logged
# exception through rich when it is installed (~0.3 s each), which turns a test that crashes
# an actor a thousand times into minutes. Debug level, so capture_logs() sees every event.
_STDERR = sys.stderr
configure_logging("debug", "json", stream=_STDERR)
_HANDLER = logging.getLogger().handlers[-1]  # the root handler configure_logging installed


@pytest.fixture(autouse=True)
def _logging_configured_here() -> Iterator[None]:
    """Put this file's logging back after a test that configured its own (`run` does)."""
    global _HANDLER
    yield
    if _HANDLER not in logging.getLogger().handlers:  # configure_logging replaced it
        configure_logging("debug", "json", stream=_STDERR)
        _HANDLER = logging.getLogger().handlers[-1]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
