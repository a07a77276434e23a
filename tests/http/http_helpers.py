"""Starting a real `python -m actors run` that serves HTTP, and finding the port it bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ADMIN = "admin-token-0123456789"
WORKER = "worker-token-0123456789"
PRODUCER = "producer-token-0123456789"
ACME = "acme-producer-token-0123"
ACME_WORKER = "acme-worker-token-0123"
TOKENS = (
    f"{ADMIN}:admin,{WORKER}:worker,{PRODUCER}:producer,{ACME}:producer:acme,"
    f"{ACME_WORKER}:worker:acme"
)


def server_config(tmp_path: Path, *, queue_only: bool = True, extra: str = "") -> Path:
    path = tmp_path / "server.toml"
    path.write_text(
        f"""
[queue]
path = "{tmp_path / "q.db"}"
visibility_seconds = 5
poll_interval_seconds = 0.1
reap_interval_seconds = 0.2
retry_base_seconds = 0.05
[storage]
root = "{tmp_path / "objects"}"
[http]
enabled = true
port = 0
queue_only = {str(queue_only).lower()}
[log]
level = "info"
format = "json"
{extra}
"""
    )
    return path


def worker_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(
        f"""
[queue]
backend = "http"
url = "{url}"
visibility_seconds = 5
poll_interval_seconds = 0.1
[storage]
root = "{tmp_path / "objects"}"
[log]
level = "warning"
format = "json"
"""
    )
    return path


def env(**extra: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("JWT_SECRET", "EDGE_API_TOKEN", "ACTORS_TOKENS", "EDGE_BASE_URL")
    }
    return {**base, **extra}


def wait_for_port(log: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {log.read_text()}")
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if '"http.listening"' in line:
                    return int(json.loads(line)["port"])
        time.sleep(0.05)
    raise AssertionError(f"the server never listened: {log.read_text()}")


@contextmanager
def serving(
    config: Path, log: Path, **extra_env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `python -m actors run` with [http] enabled; yield its base URL; SIGTERM it after."""
    with open(log, "ab") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "actors", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env(ACTORS_TOKENS=TOKENS, **extra_env),
        )
    try:
        port = wait_for_port(log, process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
