"""The package's public surface is exactly what ``__all__`` says."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
            "NewSchedule",
            "RunSummary",
            "RunUpdate",
            "SQLiteQueue",
            "Schedule",
            "Stats",
            "SystemFailed",
            "load_config",
        ]
    )
    for name in actors.__all__:
        assert getattr(actors, name).__name__ == name


def test_every_public_name_has_a_home_and_loads_on_first_use() -> None:
    # __all__ and the lazy table agree, so no name is public without loading, or the reverse.
    assert sorted(actors._HOMES) == sorted(actors.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = actors.Nope  # type: ignore[attr-defined]


def test_importing_the_package_loads_no_part_of_the_system() -> None:
    code = "import sys, actors; print(sorted(m for m in sys.modules if m.startswith('actors.')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
