"""The tree `ActorSystem` runs: its children in drain order, and the facade outside `async with`."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from actors.config import Config, QueueConfig, StorageConfig
from actors.system import ActorSystem

pytestmark = pytest.mark.anyio


def config_in(tmp_path: Path) -> Config:
    return Config(
        queue=QueueConfig(path=str(tmp_path / "q.db")),
        storage=StorageConfig(root=str(tmp_path / "objects")),
    )


async def test_the_tree_starts_the_sinks_first_and_the_source_last(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with ActorSystem(config_in(tmp_path)) as system:
            children = [child.id for child in system.tree.which_children()]
    # Stopping runs in reverse start order, so the source stops first: a drain.
    assert children == [
        "sink",
        "run_rooms",
        "room_sweeper",
        "loop_watchdog",
        "maintenance",
        "processors",
        "fetchers",
        "source",
    ]


def test_the_tree_is_absent_outside_async_with(tmp_path: Path) -> None:
    system = ActorSystem(config_in(tmp_path))
    assert getattr(system, "rooms", None) is None
    assert getattr(system, "tree", None) is None
    assert system.drained is False
