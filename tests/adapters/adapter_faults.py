"""A loopback HTTP proxy for fault tests: resets, delays, 503s and bodies cut short, on demand."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque


class FaultProxy:
    """Forwards each HTTP request on 127.0.0.1 to ``upstream``, one request per connection.

    ``faults`` is a queue of what to do to the next requests, one entry each, consumed in order
    by requests whose path contains ``match`` (others pass): ``"reset"`` (RST before any
    answer), ``"503"`` (an S3-style ServiceUnavailable), ``"truncate"`` (forward, then send the
    headers and half the body, then RST), ``"delay:<seconds>"`` (wait, then forward). When the
    queue is empty requests pass untouched. ``seen`` counts requests per fault applied.
    """

    def __init__(self, upstream: tuple[str, int], match: str = "") -> None:
        self.upstream = upstream
        self.match = match
        self.faults: deque[str] = deque()
        self.applied: list[str] = []
        self.requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _next_fault(self, request_line: bytes) -> str | None:
        with self._lock:
            self.requests += 1
            if self.faults and self.match.encode() in request_line:
                fault = self.faults.popleft()
                self.applied.append(fault)
                return fault
            return None

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(30)
        try:
            request = _read_request(client)
            if request is None:
                return
            fault = self._next_fault(request.split(b"\r\n", 1)[0])
            if fault == "reset":
                _reset(client)
                return
            if fault == "503":
                body = (
                    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable"
                    b"</Code><Message>injected by the test proxy</Message></Error>"
                )
                client.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml"
                    b"\r\nConnection: close\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                client.close()
                return
            if fault is not None and fault.startswith("delay:"):
                time.sleep(float(fault.split(":", 1)[1]))
            response = _forward(self.upstream, request)
            if fault == "truncate":
                head, _, body = response.partition(b"\r\n\r\n")
                client.sendall(head + b"\r\n\r\n" + body[: max(1, len(body) // 2)])
                _reset(client)
                return
            client.sendall(response)
            client.close()
        except OSError:
            client.close()


def _read_request(client: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = client.recv(65536)
        if not piece:
            return None
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    lines = head.split(b"\r\n")
    kept = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        if name == b"expect" and value.strip().lower() == b"100-continue":
            # botocore asks before sending a part's body; answer for the upstream.
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            continue
        if name in (b"connection", b"keep-alive"):
            continue
        kept.append(line)
    while len(body) < length:
        piece = client.recv(65536)
        if not piece:
            return None
        body += piece
    # One request per upstream connection: the upstream closes after answering.
    kept.append(b"Connection: close")
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def _forward(upstream: tuple[str, int], request: bytes) -> bytes:
    with socket.create_connection(upstream, timeout=30) as conn:
        conn.sendall(request)
        chunks = []
        while piece := conn.recv(65536):
            chunks.append(piece)
    return b"".join(chunks)


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN: the peer sees 'connection reset by peer'."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
