"""Fixtures for the document tests: the committed sample set."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="session")
def samples() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(SAMPLES.iterdir())}


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLES
