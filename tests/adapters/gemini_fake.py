"""A local server that speaks Gemini's REST protocol and fails when told to."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "test-google-key"


def fake_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit-ish vector for ``text`` (the same text, the same vector)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [((digest[i % 32] + i) % 256) / 255.0 - 0.5 for i in range(dims)]


class FakeGemini:
    """``POST /{version}/models/{model}:generateContent`` and ``:batchEmbedContents`` on loopback.

    ``faults`` is a queue of what the next matching requests get (``match`` is a substring of
    the path, "" for all): ``("429", seconds)`` with Retry-After, ``("429-info", "7s")`` with a
    RetryInfo detail, ``("500",)``, ``("503",)``, ``("400", message)``, ``("slow", seconds)``,
    ``("malformed",)`` (HTTP 200, not JSON), ``("body", payload)`` (HTTP 200, that JSON),
    ``("not-schema",)`` (a candidate whose text is not JSON), ``("blocked",)``.
    ``requests`` records (path, body) of every request.
    """

    def __init__(self, *, dims: int = 16, prefix: str = "") -> None:
        self.dims = dims
        self.prefix = prefix
        self.faults: deque[tuple[str, tuple[Any, ...]]] = deque()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{prefix}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def fail(self, match: str, kind: str, *args: Any) -> None:
        self.faults.append((match, (kind, *args)))

    def calls(self, method: str) -> int:
        return sum(1 for path, _ in self.requests if path.endswith(":" + method))

    def __enter__(self) -> FakeGemini:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self, path: str) -> tuple[Any, ...] | None:
        with self.lock:
            for i, (match, fault) in enumerate(self.faults):
                if match in path:
                    del self.faults[i]
                    return fault
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        path = h.path
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        with self.lock:
            self.requests.append((path, body))
        if h.headers.get("x-goog-api-key") != API_KEY:
            return _error(
                h, 403, "PERMISSION_DENIED", "API key not valid. Please pass a valid API key."
            )
        if not path.startswith(self.prefix + "/v1beta/models/"):
            return _error(h, 404, "NOT_FOUND", f"no route {path}")
        fault = self._next_fault(path)
        kind = fault[0] if fault else None
        if kind == "slow":
            time.sleep(fault[1])  # type: ignore[index]
        elif kind == "429":
            return _error(
                h,
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                headers={"Retry-After": str(fault[1])},
            )  # type: ignore[index]
        elif kind == "429-info":
            return _error(
                h,
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for metric.",
                details=[
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": fault[1]},  # type: ignore[index]
                ],
            )
        elif kind in ("500", "503"):
            return _error(
                h,
                int(kind),
                "INTERNAL" if kind == "500" else "UNAVAILABLE",
                "An internal error has occurred."
                if kind == "500"
                else "The model is overloaded. Please try again later.",
            )
        elif kind == "400":
            return _error(h, 400, "INVALID_ARGUMENT", fault[1])  # type: ignore[index]
        elif kind == "malformed":
            return _send(h, 200, b'{"candidates": [{"content": ', "application/json")
        elif kind == "body":
            return _json(h, 200, fault[1])  # type: ignore[index]
        model, _, method = path.rsplit("/", 1)[1].partition(":")
        if method == "batchEmbedContents":
            embeddings = []
            for request in body.get("requests", []):
                text = "".join(p.get("text", "") for p in request["content"]["parts"])
                dims = request.get("outputDimensionality") or self.dims
                embeddings.append({"values": fake_vector(text, dims)})
            return _json(h, 200, {"embeddings": embeddings})
        if method == "generateContent":
            if kind == "blocked":
                return _json(
                    h,
                    200,
                    {
                        "promptFeedback": {"blockReason": "SAFETY"},
                        "usageMetadata": {"promptTokenCount": 10},
                    },
                )
            parts = body["contents"][0]["parts"]
            text = " ".join(p.get("text", "") for p in parts)
            inline = [p for p in parts if "inlineData" in p]
            analysis = {
                "summary": text.split("\n")[-1][:80] if not inline else "a PDF",
                "topics": ["lichens"],
                "entities": [{"name": "Oslo", "type": "place"}],
                "language": "en",
            }
            answer_text = "not json at all" if kind == "not-schema" else json.dumps(analysis)
            prompt_tokens = len(text) // 4 + 258 * len(inline)
            return _json(
                h,
                200,
                {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": [{"text": answer_text}]},
                            "finishReason": "STOP",
                            "index": 0,
                        }
                    ],
                    "usageMetadata": {
                        "promptTokenCount": prompt_tokens,
                        "candidatesTokenCount": 20,
                        "totalTokenCount": prompt_tokens + 20,
                    },
                    "modelVersion": model,
                },
            )
        return _error(h, 404, "NOT_FOUND", f"unknown method {method}")


def _send(
    h: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.end_headers()
    h.wfile.write(body)


def _json(
    h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    _send(h, status, json.dumps(payload).encode(), "application/json; charset=UTF-8", headers)


def _error(
    h: BaseHTTPRequestHandler,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: list[Any] | None = None,
) -> None:
    error: dict[str, Any] = {"code": status, "message": message, "status": code}
    if details:
        error["details"] = details
    _json(h, status, {"error": error}, headers)
