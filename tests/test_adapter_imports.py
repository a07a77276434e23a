"""The adapters' front doors: every name resolves; the default path loads no aioboto3, no httpx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OPTIONAL = ["aioboto3", "aiobotocore", "botocore", "aiohttp", "httpx"]


def loaded_after(code: str, **env: str) -> list[str]:
    """The optional modules that a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    return [name for name in OPTIONAL if name in modules]


def test_importing_the_storage_and_processor_packages_loads_neither_aioboto3_nor_httpx() -> None:
    assert loaded_after("import actors.storage, actors.processors") == []


def test_the_default_store_and_processor_load_neither_aioboto3_nor_httpx(tmp_path: Path) -> None:
    code = f"""
from actors.config import Config, ProcessorConfig, StorageConfig
from actors.processors import make_processor
from actors.storage import make_store
config = Config(storage=StorageConfig(root={str(tmp_path)!r}))
make_store(config)
make_processor(ProcessorConfig())
"""
    assert loaded_after(code) == []


def test_a_gemini_processor_loads_httpx_when_configured() -> None:
    code = """
from actors.config import ProcessorConfig
from actors.processors import make_processor
make_processor(ProcessorConfig(kind="gemini"))
"""
    assert "httpx" in loaded_after(code, GOOGLE_API_KEY="test-key")


def test_every_name_the_front_doors_export_resolves() -> None:
    import actors.processors
    import actors.storage

    for package in (actors.storage, actors.processors):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
