"""The package's public surface is exactly what ``__all__`` says."""

from __future__ import annotations

import actors


def test_the_public_names_are_the_ones_in_dunder_all() -> None:
    assert sorted(actors.__all__) == sorted(
        [
            "ActorSystem",
            "ActorsError",
            "Config",
            "ConfigError",
            "Job",
            "NewJob",
            "RunSummary",
            "RunUpdate",
            "SQLiteQueue",
            "Stats",
            "SystemFailed",
            "load_config",
        ]
    )
    for name in actors.__all__:
        assert getattr(actors, name).__name__ == name
