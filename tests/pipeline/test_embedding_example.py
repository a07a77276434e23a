"""examples/starlette_app.py under a real uvicorn: the pipeline lives in a web app's lifespan."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(tmp_path: Path, extra: str = "") -> tuple[subprocess.Popen[bytes], str, Path]:
    config = tmp_path / "actors.toml"
    config.write_text(
        f'[queue]\npath = "{tmp_path / "q.db"}"\npoll_interval_seconds = 0.1\n'
        f'[storage]\nroot = "{tmp_path / "objects"}"\n[log]\nlevel = "warning"\n{extra}'
    )
    port = free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "ACTORS_CONFIG": str(config),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "examples.starlette_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, base, log
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the example app did not start: {log.read_text()}")


def call(method: str, url: str, data: bytes | None = None) -> dict[str, object]:
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_the_example_app_processes_uploads_in_its_lifespan_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    process, base, log = serve(tmp_path)
    try:
        for sample in sorted((ROOT / "samples").iterdir()):
            created = call("POST", f"{base}/runs/web-1/files/{sample.name}", sample.read_bytes())
            assert created["runId"] == "web-1"
        summary = call("GET", f"{base}/runs/web-1/wait")
        assert summary["status"] == "done"
        assert summary["done"] == len(list((ROOT / "samples").iterdir()))
        assert call("GET", f"{base}/stats")["pending"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    # uvicorn re-raises the signal once its graceful shutdown (our lifespan's exit) is done.
    assert code in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()


def test_the_example_app_stops_when_its_pipeline_gives_up(tmp_path: Path) -> None:
    process, base, log = serve(
        tmp_path,
        '[processor]\nkind = "python"\nfactory = "faulty:broken"\n'
        "[supervision]\nmax_restarts = 0\n",
    )
    try:
        call("POST", f"{base}/runs/web-2/files/a.txt", b"A sentence. Another one.")
        process.wait(timeout=30)  # the server goes down by itself, never silently dead
    finally:
        if process.poll() is None:
            process.kill()
    assert "pipeline failed, stopping the server" in log.read_text()
    assert "kept crashing" in log.read_text()
