"""One HTTP call as handlers see it: the request, who made it, and its body decoded lazily."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from actors.http._auth import Principal
from actors.http._errors import ApiError, from_decode_error

__all__ = ["Call", "json_response", "read_body"]

B = TypeVar("B")


class Call(Generic[B]):
    """A request admitted by its route's `Gate` check, with the body type the route declares.

    ``body()`` is awaited by the handler where it wants the body decoded, so its checks that
    come first (a path parameter, the tenant) answer before a malformed body would.
    """

    __slots__ = ("_limit", "_type", "principal", "request")

    def __init__(
        self, request: Request, principal: Principal | None, body: type[B] | None, limit: int
    ) -> None:
        self.request = request
        self.principal = principal
        self._type = body
        self._limit = limit

    async def body(self) -> B:
        """Read the body within the limit (413); decode it as the route's type (400 naming the
        field). An empty body is ``{}``, so a body of defaults can be left out."""
        assert self._type is not None, "this route declares no body"
        data = await read_body(self.request, self._limit)
        if not data.strip():
            data = b"{}"
        try:
            # One typed pass, which accepts a subset of what the general way below accepts and
            # decodes it to the same value (`_integral` changes only whole floats, which the
            # typed pass refuses for an int and keeps for a float or a client's own data).
            return _decoder(self._type).decode(data)
        except msgspec.DecodeError:
            pass  # the general way decides, and words the error
        try:
            return msgspec.convert(_integral(msgspec.json.decode(data)), self._type, strict=True)
        except msgspec.DecodeError as exc:
            raise from_decode_error(exc) from None


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _decoder(type: type[B]) -> msgspec.json.Decoder[B]:
    """A typed decoder per body type (the route table's few), made once."""
    decoder = _DECODERS.get(type)
    if decoder is None:
        decoder = _DECODERS[type] = msgspec.json.Decoder(type)
    return decoder


def json_response(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 past ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, "body_too_large", f"the body is {declared} bytes, over the limit of {limit}"
        )
    chunks: list[bytes] = []
    size = 0
    # The ASGI messages themselves (what `Request.stream` reads, without its generator).
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _integral(value: Any, key: str | None = None) -> Any:
    """JSON numbers like ``3.0`` as ints, as JSON Schema's "integer" allows; user data untouched.

    msgspec's strict decoding refuses ``3.0`` for an int field. Only whole, finite numbers
    within int64 change; ``payload``, ``result`` and ``output`` (a KV result) are the client's own
    data and stay as sent.
    """
    if key in ("payload", "result", "output"):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**63 else value
    if isinstance(value, dict):
        return {k: _integral(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value
