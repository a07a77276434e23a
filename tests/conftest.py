"""Shared fixtures and the suite's two speeds.

Runtimes: every async test runs on asyncio and on trio, unless its module or the test itself
says otherwise with ``@pytest.mark.runtimes("asyncio")`` (the closest marker wins). The rule:
keep the trio leg where the code under test takes a different path on each runtime (the
SQLite writer thread waking the loop, the asyncio-on-a-thread bridge for asyncpg and
aiobotocore, the HTTP server and clients, supervisors and the pipeline's actors, cancellation
and time limits, real processes); run on asyncio only what is pure logic behind a
runtime-neutral call, such as the queue verbs' semantics (the pipeline's tests drive the same
verbs on trio), parsing, and budgets on a fake clock.

Speeds: the development loop (plain ``pytest``) leaves out tests marked ``slow`` (about 2 s or
more: real processes, wall-clock limits) and runs Hypothesis with the ``dev`` profile (a tenth
of the examples). CI runs everything with the full counts:
``pytest -m "slow or not slow" --hypothesis-profile=ci -n 3 --dist worksteal``, in three
worker processes (the README's test command).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from hypothesis import settings

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


# Property tests take their count from the profile (``settings().max_examples``), scaled by
# their cost per example. pyproject's addopts loads "dev"; CI passes --hypothesis-profile=ci.
settings.register_profile("ci", max_examples=150, print_blob=True)
settings.register_profile("dev", max_examples=15)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.hookimpl(tryfirst=True)  # before the fixture's own two runtimes are applied
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A runtimes marker replaces the fixture's two runtimes with the ones it names.
    marker = metafunc.definition.get_closest_marker("runtimes")
    if marker is not None and "anyio_backend" in metafunc.fixturenames:
        metafunc.parametrize("anyio_backend", marker.args)
