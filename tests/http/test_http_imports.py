"""What importing the HTTP side loads: a remote worker's client never loads the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_http_queue_client_loads_neither_starlette_nor_the_http_server() -> None:
    check = (
        "import actors.queue.http, sys; "
        "assert 'starlette' not in sys.modules and 'actors.http' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('starlette', 'actors.http')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
