"""A feature configured without its optional extra fails at start-up with one line naming the
extra, before any database or tree is opened."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Each case hides one package (an import of it raises ImportError, as when it is not installed)
# and opens what the configuration asks for.
_SCRIPT = """
import sys
sys.modules[{hidden!r}] = None
import anyio
from actors.config import load_config
from actors.errors import ConfigError
from actors.system import ActorSystem

async def main():
    async with ActorSystem(load_config({path!r}, env={{}})):
        pass

try:
    anyio.run(main)
except ConfigError as exc:
    print(exc)
"""


@pytest.mark.parametrize(
    ("toml", "hidden", "message"),
    [
        (
            '[queue]\npath = "{db}"\nbackend = "postgres"\ndsn = "postgresql://127.0.0.1:1/none"\n',
            "asyncpg",
            "[queue].backend = \"postgres\" needs asyncpg: pip install 'actors[postgres]'",
        ),
        (
            '[queue]\npath = "{db}"\nbackend = "http"\nurl = "http://127.0.0.1:1"\n',
            "httpx",
            "[queue].backend = \"http\" needs httpx: pip install 'actors[http]'",
        ),
        (
            '[queue]\npath = "{db}"\n[http]\nenabled = true\nport = 0\n',
            "starlette",
            "[http] enabled = true needs starlette: pip install 'actors[http]'",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    tmp_path: Path, toml: str, hidden: str, message: str
) -> None:
    config = tmp_path / "actors.toml"
    queue_path = tmp_path / "queue.db"
    config.write_text(f'[storage]\nroot = "{tmp_path}"\n' + toml.format(db=queue_path))
    script = textwrap.dedent(_SCRIPT).format(hidden=hidden, path=str(config))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == message, done.stderr
    assert not queue_path.exists()  # nothing was opened before the check
