"""Retries of calls to a peer (`actors._retries`, on stamina): bounded, logged on our logger at our
level, never through stamina's default output, and without taking a host's own retries over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import stamina
import structlog
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from actors._retries import retrying
from actors.log import get_logger

ROOT = Path(__file__).resolve().parent.parent
log = get_logger("tests.retries")


@pytest.fixture(autouse=True)
def stamina_default_hooks() -> Iterator[None]:
    """Each test starts from stamina's defaults, and leaves them so."""
    set_on_retry_hooks(None)
    yield
    set_on_retry_hooks(None)


def failing(times: int, error: Exception) -> tuple[list[int], Any]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= times:
            raise error
        return "ok"

    return calls, call


@pytest.mark.anyio
async def test_a_retry_is_one_line_on_the_callers_logger_with_its_wait() -> None:
    calls, call = failing(2, ConnectionResetError("reset by peer"))
    with structlog.testing.capture_logs() as logs, anyio.fail_after(10):
        result = await retrying(
            call,
            on=lambda exc: isinstance(exc, OSError),
            attempts=5,
            wait_initial=0.01,
            wait_max=0.02,
            wait_jitter=0.005,
            log=log,
            event="peer.retrying",
            level="warning",
            op="get",
        )
    assert (result, calls) == ("ok", [1, 2, 3])
    assert [(e["event"], e["log_level"], e["op"], e["retry"]) for e in logs] == [
        ("peer.retrying", "warning", "get", 1),
        ("peer.retrying", "warning", "get", 2),
    ]
    assert all(e["error"] == "reset by peer" for e in logs)
    # The first wait is at least the initial wait; no wait passes the cap.
    assert 0.01 <= logs[0]["delay_seconds"] <= 0.015
    assert all(e["delay_seconds"] <= 0.02 for e in logs)


@pytest.mark.anyio
async def test_what_on_refuses_is_raised_at_once_and_the_last_error_after_the_attempts() -> None:
    calls, call = failing(9, ValueError("a bug"))
    with structlog.testing.capture_logs() as logs, pytest.raises(ValueError, match="a bug"):
        await retrying(
            call, on=lambda exc: isinstance(exc, OSError), attempts=5,
            wait_initial=0, wait_max=0, wait_jitter=0, log=log, event="peer.retrying",
        )  # fmt: skip
    assert (calls, logs) == ([1], [])

    calls, call = failing(9, TimeoutError("slow"))
    with structlog.testing.capture_logs() as logs, pytest.raises(TimeoutError, match="slow"):
        await retrying(
            call, on=lambda exc: isinstance(exc, OSError), attempts=3,
            wait_initial=0, wait_max=0, wait_jitter=0, log=log, event="peer.retrying",
        )  # fmt: skip
    assert calls == [1, 2, 3]
    assert [e["retry"] for e in logs] == [1, 2]


@pytest.mark.anyio
async def test_a_hosts_own_retries_still_reach_the_hooks_it_set() -> None:
    seen: list[str] = []

    def host_hook(details: RetryDetails) -> None:
        seen.append(str(details.caused_by))

    set_on_retry_hooks([host_hook])
    _, ours = failing(1, OSError("ours"))
    with structlog.testing.capture_logs() as logs:
        await retrying(
            ours, on=lambda exc: True, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0,
            log=log, event="peer.retrying",
        )  # fmt: skip
    _, theirs = failing(1, OSError("theirs"))
    async for attempt in stamina.retry_context(on=OSError, attempts=3, wait_initial=0):
        with attempt:
            await theirs()
    assert [e["error"] for e in logs] == ["ours"]
    assert seen == ["theirs"]


# A host program that configured no logging, but has structlog imported (as many have): stamina's
# default hooks would print through structlog's default configuration, on stdout.
HOST = """
import sys, anyio, structlog, stamina
from actors._retries import retrying
from actors.log import get_logger

async def refused():
    raise ConnectionRefusedError("refused")

async def main(how):
    if how == "actors":
        await retrying(refused, on=lambda e: True, attempts=3, wait_initial=0.01, wait_max=0.01,
                       wait_jitter=0, log=get_logger("actors.x"), event="peer.retrying")
    else:
        async for attempt in stamina.retry_context(on=OSError, attempts=3, wait_initial=0.01):
            with attempt:
                await refused()

try:
    anyio.run(main, sys.argv[1], backend=sys.argv[2])
except ConnectionRefusedError:
    pass
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_embedding_host_that_configured_no_logging_gets_nothing_on_stdout(
    backend: str,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def host(how: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", HOST, how, backend],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip

    assert "stamina.retry_scheduled" in host("stamina").stdout  # what stamina alone does
    done = host("actors")
    assert (done.stdout, done.stderr) == ("", "")


def test_an_s3_store_that_is_down_is_retried_quietly_then_unavailable_on_trio() -> None:
    # Through the bridge on trio: the store's retries sleep on the caller's loop (trio), each
    # attempt runs on the helper thread's asyncio loop.
    code = """
import sys, anyio
from actors.errors import ObjectStoreUnavailable
from actors.storage import S3ObjectStore

async def main():
    store = S3ObjectStore(bucket="b-1", endpoint=sys.argv[1], access_key_id="k",
                          secret_access_key="s", region="us-east-1", max_retries=2,
                          retry_base_seconds=0.01, retry_cap_seconds=0.02, timeout_seconds=5)
    try:
        await store.get("t/a", max_bytes=10)
    except ObjectStoreUnavailable as exc:
        print("unavailable:", exc, file=sys.stderr)
    finally:
        await store.aclose()

anyio.run(main, backend="trio")
"""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-c", code, f"http://127.0.0.1:{port}"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("unavailable: get 't/a'") and "after 2 retries" in done.stderr
