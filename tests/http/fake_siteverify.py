"""A local stand-in for Cloudflare Turnstile's siteverify, answering in its JSON.

The answer depends on the token sent (``response``): ``good`` passes (hostname
``uploads.example.com``, action ``upload``); ``other-host`` and ``other-action`` pass for another
hostname or action; ``bad`` and ``used`` fail with ``invalid-input-response`` and
``timeout-or-duplicate``; ``slow`` answers after ``SLOW_SECONDS``; ``boom`` is a 500;
``garbled`` is not JSON. A secret other than ``SECRET`` fails with ``invalid-input-secret``.
Every request's form is kept in ``requests``. Runs in a thread: usable by in-process and
subprocess servers alike.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

SECRET = "0x4AAAAAAA-test-secret"
SLOW_SECONDS = 6.0


@dataclass
class FakeSiteverify:
    url: str
    requests: list[dict[str, str]] = field(default_factory=list)


def _answer(form: dict[str, str]) -> tuple[int, bytes]:
    token = form.get("response", "")
    if form.get("secret") != SECRET:
        body: dict[str, object] = {"success": False, "error-codes": ["invalid-input-secret"]}
        return 200, json.dumps(body).encode()
    if token == "boom":
        return 500, b"internal error"
    if token == "garbled":
        return 200, b"<html>not json</html>"
    if token == "slow":
        time.sleep(SLOW_SECONDS)
    ok = {
        "success": True,
        "challenge_ts": "2026-12-02T04:00:00.000Z",
        "hostname": "uploads.example.com",
        "error-codes": [],
        "action": "upload",
        "cdata": "",
    }
    if token in ("good", "slow"):
        body = ok
    elif token == "other-host":
        body = {**ok, "hostname": "evil.example.net"}
    elif token == "other-action":
        body = {**ok, "action": "login"}
    elif token == "used":
        body = {"success": False, "error-codes": ["timeout-or-duplicate"]}
    else:
        body = {"success": False, "error-codes": ["invalid-input-response"]}
    return 200, json.dumps(body).encode()


@contextmanager
def fake_siteverify() -> Iterator[FakeSiteverify]:
    """Serve the fake on a free loopback port until the block ends."""
    state = FakeSiteverify(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length).decode()
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            state.requests.append(form)
            status, body = _answer(form)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/turnstile/v0/siteverify"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
