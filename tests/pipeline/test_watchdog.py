"""The loop watchdog: a blocked event loop shows in the logs and in `/metrics`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from actors.config import Config, HttpConfig, PipelineConfig, QueueConfig, StorageConfig
from actors.system import ActorSystem

# The loop is blocked for 1.5 s of wall-clock time: what the watchdog exists to see.
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def lag(metrics: str) -> float:
    match = re.search(r"^actors_event_loop_lag_seconds (\S+)$", metrics, re.M)
    assert match is not None, metrics
    return float(match[1])


async def test_a_blocked_loop_is_logged_and_its_lag_scraped_once(tmp_path: Path) -> None:
    config = Config(
        queue=QueueConfig(path=str(tmp_path / "q.db")),
        storage=StorageConfig(root=str(tmp_path / "objects")),
        pipeline=PipelineConfig(shutdown_grace_seconds=1),
        # No token is configured: /metrics is opened on loopback to be scraped.
        http=HttpConfig(enabled=True, port=0, queue_only=True, metrics="open"),
    )
    with capture_logs() as logs:
        async with (
            ActorSystem(config) as system,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{system.http.port}", timeout=10
            ) as client,
        ):
            await anyio.sleep(0.3)  # the watchdog is asleep on the loop now
            # On a starved CPU the start itself (importing the HTTP stack on the loop) may
            # already have been a block: only what follows the one made here is counted.
            before = system.watchdog.blocked
            earlier = sum(1 for entry in logs if entry["event"] == "loop.blocked")
            time.sleep(1.5)  # noqa: ASYNC251 - what a processor that blocks the loop does
            with anyio.fail_after(5):
                while system.watchdog.blocked == before:
                    await anyio.sleep(0.05)
            assert lag((await client.get("/metrics")).text) >= 1.0
            # The gauge is the largest lag since the previous scrape, not since the start.
            await anyio.sleep(0.6)
            assert lag((await client.get("/metrics")).text) < 1.0
    blocked = [entry for entry in logs if entry["event"] == "loop.blocked"][earlier:]
    assert len(blocked) == 1 and blocked[0]["lag_seconds"] >= 1.0, blocked
