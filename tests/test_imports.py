"""What a process loads: the embedded default and the HTTP queue client import no optional
dependency (pyproject.toml's extras) and no more of the package than they use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The extras' modules (and what they bring): [postgres], [http], [s3], [gemini], [trio].
OPTIONAL = (
    "asyncpg",
    "starlette",
    "uvicorn",
    "hypercorn",
    "prometheus_client",
    "httpx",
    "aioboto3",
    "botocore",
    "stamina",
    "tenacity",
    "trio",
)

# Runs `python -m actors ARGV...` and writes the names of the modules loaded by the end.
PROBE = """
import atexit, json, runpy, sys
out, *argv = sys.argv[1:]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["actors", *argv]
runpy.run_module("actors", run_name="__main__", alter_sys=True)
"""


def run(tmp_path: Path, code: str, *argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / "modules.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ACTORS_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", code, str(out), *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, set(json.loads(out.read_text())) if out.exists() else set()


def optional(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in OPTIONAL)


def server_or_database(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(("actors.http", "actors.queue.postgres")))


def test_the_cli_loads_no_optional_dependency_to_print_its_help(tmp_path: Path) -> None:
    done, modules = run(tmp_path, PROBE, "--help")
    assert done.returncode == 0, done.stderr
    assert modules, done.stderr
    assert optional(modules) == []


def test_the_readme_first_command_loads_no_optional_dependency(tmp_path: Path) -> None:
    # The embedded defaults (tmp_path holds no config/actors.toml): a SQLite queue, local objects,
    # the offline processor, no HTTP server.
    samples = sorted(str(path) for path in (ROOT / "samples").iterdir())
    done, modules = run(tmp_path, PROBE, "submit", *samples)
    assert done.returncode == 0, done.stderr
    assert optional(modules) == []
    done, modules = run(tmp_path, PROBE, "run", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert f"{len(samples)} done" in done.stdout, done.stdout
    assert "actors.pipeline" in modules
    assert optional(modules) == []
    assert server_or_database(modules) == []


def test_the_http_queue_client_loads_neither_the_server_nor_a_database(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import actors.queue.http\n"
        "open(sys.argv[1], 'w').write(json.dumps(sorted(sys.modules)))\n"
    )
    done, modules = run(tmp_path, code)
    assert done.returncode == 0, done.stderr
    assert "httpx" in modules
    assert [m for m in optional(modules) if not m.startswith("httpx")] == []
    assert server_or_database(modules) == []
