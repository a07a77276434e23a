"""Who calls and whether they may: bearer tokens, API keys, stream tokens; one `Gate` for all."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, TypeVar

import msgspec
from starlette.requests import HTTPConnection

from actors.config import Config
from actors.errors import ConfigError
from actors.http._errors import ApiError
from supervisors import Clock

__all__ = [
    "ROLES",
    "STREAM_TOKEN_SECONDS",
    "TURNSTILE_PENDING",
    "Gate",
    "Guard",
    "Principal",
    "Role",
    "Roles",
    "Signer",
    "Tokens",
    "check_tenant",
    "owner",
    "token_id",
]

Role = Literal["admin", "worker", "producer"]
ROLES: tuple[Role, ...] = ("admin", "worker", "producer")
# The roles a route admits besides admin (who may do everything); None: an open route.
Roles = tuple[Role, ...] | None


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who a valid token speaks for: a role, and the one tenant it is limited to (None: all).

    ``id`` names the token without revealing it (a SHA-256 prefix): the queue records it as the
    owner of the leases this principal takes, so an ids-only ack settles only its own leases.
    """

    role: Role
    tenant: str | None = None
    id: str = "anonymous"

    def may(self, *roles: Role) -> bool:
        """Whether this principal has one of ``roles``; admin may do everything."""
        return self.role == "admin" or self.role in roles

    def sees(self, tenant_id: str) -> bool:
        """Whether this principal may see and touch the tenant's jobs and runs."""
        # Bytes: compare_digest refuses str holding anything but ASCII (a tenant "zürich").
        return self.tenant is None or hmac.compare_digest(_utf8(self.tenant), _utf8(tenant_id))

    @property
    def unscoped_admin(self) -> bool:
        """Whether this is an admin limited to no tenant: the only one to cross tenants' keys."""
        return self.role == "admin" and self.tenant is None


def check_tenant(principal: Principal | None, tenant_id: str, field: str = "tenantId") -> None:
    """403 when a scoped principal names another tenant in what it sends.

    Not for reads: a job or run of another tenant is answered as missing, as if it did not
    exist (``GET /jobs/{id}``, ``GET /runs/{id}``).
    """
    if principal is not None and not principal.sees(tenant_id):
        raise ApiError(403, "wrong_tenant", "this token is limited to another tenant", field)


def owner(principal: Principal | None) -> str:
    """Who takes or settles a lease: the token's id (recorded as the lease's owner; an ids-only
    ack settles only its own leases), "anonymous" for a call without a token."""
    return "anonymous" if principal is None else principal.id


def _utf8(text: str) -> bytes:
    # surrogateescape: the environment's undecodable bytes (ACTORS_TOKENS) round-trip as given.
    return text.encode("utf-8", "surrogateescape")


def token_id(token: bytes) -> str:
    """A stable name for a token that does not reveal it: ``token:`` and 16 hex digits."""
    return "token:" + hashlib.sha256(token).hexdigest()[:16]


class Tokens:
    """The accepted tokens, read from the environment; never printed, never logged.

    Format of ``ACTORS_TOKENS``: ``token:role[:tenant]`` entries separated by commas, e.g.
    ``s3cret:admin,w0rker:worker,acme-key:producer:acme``. The seed's single secret
    (``JWT_SECRET``, or ``EDGE_API_TOKEN``) is one more token with full access. The KV task
    API's keys (``ADMIN_API_KEY``, ``QUEUE_API_KEY``) are taken in ``X-API-Key`` alone.

    Every lookup compares the presented token with every known token in constant time, so the
    time taken says nothing about how much of a token was right.
    """

    def __init__(
        self,
        entries: list[tuple[bytes, Principal]],
        api_keys: list[tuple[bytes, Principal]] | None = None,
    ) -> None:
        self._entries = entries
        # The KV task API's keys: accepted in X-API-Key only, never as a bearer token.
        self._api_keys = api_keys or []

    def __repr__(self) -> str:
        return f"<Tokens: {len(self._entries)} configured, {len(self._api_keys)} API keys>"

    def __len__(self) -> int:
        return len(self._entries) + len(self._api_keys)

    @classmethod
    def from_config(cls, config: Config) -> Tokens:
        """The tokens of ``ACTORS_TOKENS``, the seed's full-access secret, and the KV task
        API's ``ADMIN_API_KEY`` / ``QUEUE_API_KEY`` (limited to ``[http].api_key_tenant``)."""
        secrets = config.secrets
        spec = secrets.http_tokens.reveal() if secrets.http_tokens is not None else ""
        full = secrets.api_token.reveal() if secrets.api_token is not None else None
        return cls.parse(
            spec,
            full_access=full,
            admin_key=secrets.admin_api_key.reveal() if secrets.admin_api_key else None,
            queue_key=secrets.queue_api_key.reveal() if secrets.queue_api_key else None,
            api_key_tenant=config.http.api_key_tenant,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tokens:
        full = env.get("JWT_SECRET") or env.get("EDGE_API_TOKEN") or None
        return cls.parse(
            env.get("ACTORS_TOKENS", ""),
            full_access=full,
            admin_key=env.get("ADMIN_API_KEY") or None,
            queue_key=env.get("QUEUE_API_KEY") or None,
        )

    @classmethod
    def parse(
        cls,
        spec: str,
        *,
        full_access: str | None = None,
        admin_key: str | None = None,
        queue_key: str | None = None,
        api_key_tenant: str | None = None,
    ) -> Tokens:
        """Parse ``token:role[:tenant],...``; raise ConfigError naming the entry's position.

        ``admin_key`` and ``queue_key`` (``X-API-Key``) speak for an admin and a worker of
        every tenant, or of ``api_key_tenant`` alone.
        """
        entries: list[tuple[bytes, Principal]] = []
        for position, raw in enumerate(spec.split(","), start=1):
            entry = raw.strip()
            if not entry:
                continue
            parts = entry.split(":")
            # The error never repeats the entry: it holds a secret.
            if len(parts) not in (2, 3) or not parts[0] or parts[1] not in ROLES:
                raise ConfigError(
                    f"ACTORS_TOKENS entry {position} is malformed; write token:role or "
                    "token:role:tenant, with role admin, worker or producer, entries separated "
                    "by commas (tokens cannot contain ':' or ',')"
                )
            if len(parts[0]) < 8:
                raise ConfigError(
                    f"ACTORS_TOKENS entry {position} has a token shorter than 8 characters; "
                    "use a long random one: python -c 'import secrets; "
                    "print(secrets.token_urlsafe())'"
                )
            tenant = parts[2] if len(parts) == 3 and parts[2] else None
            if tenant is not None and ("/" in tenant or tenant in (".", "..")):
                raise ConfigError(
                    f"ACTORS_TOKENS entry {position} names a tenant with '/' (or '.', '..'): a "
                    "tenant's objects live under '{tenant}/', so tenant ids cannot contain '/'; "
                    "rename the tenant"
                )
            token = _utf8(parts[0])
            entries.append((token, Principal(role=parts[1], tenant=tenant, id=token_id(token))))
        if full_access:
            token = _utf8(full_access)
            entries.append((token, Principal(role="admin", id=token_id(token))))
        if api_key_tenant is not None and ("/" in api_key_tenant or api_key_tenant in (".", "..")):
            raise ConfigError(
                "[http].api_key_tenant names a tenant with '/' (or is '.', '..'): a tenant's "
                "objects live under '{tenant}/'; name a tenant id"
            )
        api_keys: list[tuple[bytes, Principal]] = []
        role: Role
        for name, value, role in (
            ("ADMIN_API_KEY", admin_key, "admin"),
            ("QUEUE_API_KEY", queue_key, "worker"),
        ):
            if not value:
                continue
            if len(value) < 8:
                raise ConfigError(
                    f"{name} is shorter than 8 characters; use a long random key: python -c "
                    "'import secrets; print(secrets.token_urlsafe())'"
                )
            key = _utf8(value)
            principal = Principal(role=role, tenant=api_key_tenant, id=token_id(key))
            api_keys.append((key, principal))
        return cls(entries, api_keys)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer <token>`` header, or None.

        ``authorization`` is the header as ASGI servers decode it (Latin-1); its bytes are
        compared, so a token of UTF-8 characters sent as UTF-8 matches.
        """
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            raw = token.strip().encode("latin-1")
        except UnicodeEncodeError:  # not from a socket: a caller's own str
            raw = _utf8(token.strip())
        return self.lookup_bytes(raw)

    def by_id(self, token_id: str) -> Principal | None:
        """The principal of the configured token named ``token_id`` (`token_id`), or None
        once that token is no longer configured (a dashboard session ends with its token)."""
        found: Principal | None = None
        for _, principal in self._entries:
            if hmac.compare_digest(principal.id.encode(), token_id.encode()) and found is None:
                found = principal
        return found

    def lookup(self, token: str) -> Principal | None:
        """The principal of a bare token, or None; compares with every token in constant time."""
        return self.lookup_bytes(_utf8(token))

    def lookup_bytes(self, presented: bytes) -> Principal | None:
        """The principal of a token's bytes (UTF-8), or None; in constant time per token."""
        return _lookup(self._entries, presented)

    def api_key(self, header: str | None) -> Principal | None:
        """The principal of an ``X-API-Key`` header (ADMIN_API_KEY, QUEUE_API_KEY), or None;
        compared with every key in constant time, like bearer tokens."""
        if not header or not header.strip():
            return None
        try:
            raw = header.strip().encode("latin-1")
        except UnicodeEncodeError:  # not from a socket: a caller's own str
            raw = _utf8(header.strip())
        return _lookup(self._api_keys, raw)


def _lookup(entries: list[tuple[bytes, Principal]], presented: bytes) -> Principal | None:
    found: Principal | None = None
    for known, principal in entries:
        # No early exit: every entry is compared whatever matched before.
        if hmac.compare_digest(presented, known) and found is None:
            found = principal
    return found


G = TypeVar("G", bound=msgspec.Struct)

# A stream token opens one run's events for this long: enough to connect (and for EventSource
# to reconnect a little later); a leaked one is soon worthless.
STREAM_TOKEN_SECONDS = 300.0


class Signer:
    """Grants handed out in URLs (upload URLs, stream tokens), signed with HMAC-SHA256.

    A token is the grant (msgpack, base64url) and a truncated MAC over the grant's purpose and
    bytes, so a grant made for one purpose never passes for another. The key is this process's
    own unless given: a restart invalidates the grants not used yet (clients ask again).
    Whether a grant has expired is its reader's check: the grant carries its own time.
    """

    def __init__(self, key: bytes | None = None, *, old_keys: Sequence[bytes] = ()) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        # Rotation: grants are signed with the first key and accepted under any of them, so a
        # new key can be put first while grants signed with the old one run out.
        self._keys = (self._key, *old_keys)

    def sign(self, purpose: str, grant: msgspec.Struct) -> str:
        data = base64.urlsafe_b64encode(msgspec.msgpack.encode(grant)).rstrip(b"=")
        mac = self._mac(self._key, purpose, data)
        return f"{data.decode()}.{base64.urlsafe_b64encode(mac).decode()}"

    def verify(self, purpose: str, token: str, type: type[G]) -> G | None:
        """The grant ``token`` carries if one of these keys signed it for ``purpose``, else
        None."""
        data, _, sig = token.partition(".")
        if len(token) > 4096 or not data or not sig:
            return None
        try:
            given = base64.urlsafe_b64decode(sig)
            valid = False
            for key in self._keys:  # every key, whichever matched: no timing by key
                valid |= hmac.compare_digest(given, self._mac(key, purpose, data.encode()))
            if not valid:
                return None
            return msgspec.msgpack.decode(
                base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)), type=type
            )
        except (ValueError, msgspec.DecodeError):
            return None

    @staticmethod
    def _mac(key: bytes, purpose: str, data: bytes) -> bytes:
        # 18 bytes (144 bits): unforgeable, and a multiple of 3 so base64 needs no padding.
        return hmac.new(key, purpose.encode() + b"\x00" + data, hashlib.sha256).digest()[:18]


class StreamGrant(msgspec.Struct, frozen=True, array_like=True):
    """What a stream token allows: reading one run's events (its tenant's), until ``expires``."""

    run_id: str
    tenant_id: str
    expires: float


_STREAM = "stream"


class Guard(Protocol):
    """What a route says about who may call it (a `Route` of the table is one)."""

    @property
    def name(self) -> str: ...

    @property
    def roles(self) -> Roles: ...

    @property
    def url_token(self) -> bool:
        """Whether ``?token=`` may carry a stream token for the run in the path."""
        ...

    @property
    def tenant_wide(self) -> str | None:
        """What the route does across tenants, if it does ("pull"): refused to scoped tokens."""
        ...

    @property
    def turnstile(self) -> bool:
        """Whether a Turnstile challenge may stand in for a token (with TURNSTILE_SECRET set)."""
        ...


#: Who calls a Turnstile route without a token, until its handler has verified the challenge:
#: limited to a tenant no job can have (a tenant id cannot hold NUL), so a handler that forgot
#: the check refuses every tenant instead of admitting them all.
TURNSTILE_PENDING = Principal(role="producer", tenant="\x00turnstile", id="turnstile")


class Gate:
    """The one authentication path of every route, HTTP and WebSocket alike.

    ``?token=`` is refused (URLs end up in access and proxy logs) except where a browser cannot
    send a header (``url_token``: a run's SSE and WebSocket routes), and there it must be a
    stream token for that run, never an API token. A token in the URL of an open route is
    refused too: a client that puts one there learns it at once, not from a leaked log.
    """

    def __init__(
        self,
        tokens: Tokens,
        clock: Clock,
        signer: Signer | None = None,
        *,
        turnstile: bool = False,
    ) -> None:
        self.tokens = tokens
        self._clock = clock
        # TURNSTILE_SECRET is set: a Turnstile route admits a call without a token as
        # TURNSTILE_PENDING, for its handler to verify.
        self._turnstile = turnstile
        # Stream tokens are signed with a key of this process: a restart invalidates them.
        self._signer = signer if signer is not None else Signer()

    def admit(self, conn: HTTPConnection, route: Guard) -> Principal | None:
        """The caller's principal (None on an open route) if ``route`` lets it in; else raise
        `ApiError`: 401 without a valid token, 403 for a role or tenant scope that may not."""
        if route.roles is None:
            if _has_query(conn) and "token" in conn.query_params:
                raise _token_in_url()
            return None
        principal = self._principal(conn, url_token=route.url_token)
        if principal is None:
            if not (route.turnstile and self._turnstile):
                raise _unauthorized()
            principal = TURNSTILE_PENDING
        self.check(principal, route)
        return principal

    def check(self, principal: Principal, route: Guard) -> None:
        """Raise `ApiError` (403) unless ``principal`` may call ``route``: its role, and its
        tenant scope for a route that spans every tenant. The dashboard asks the same."""
        if route.roles is None:
            return
        if not principal.may(*route.roles):
            raise ApiError(
                403,
                "forbidden",
                f"a {principal.role} token may not call {route.name}; it needs the "
                f"{' or '.join(('admin', *route.roles))} role",
            )
        if route.tenant_wide is not None and principal.tenant is not None:
            raise ApiError(
                403,
                "tenant_scoped",
                f"a tenant-scoped token cannot {route.tenant_wide}: it spans every tenant; "
                "use an unscoped token",
            )

    def permits(self, principal: Principal, route: Guard) -> bool:
        """Whether ``principal`` may call ``route`` (`check` without the error)."""
        try:
            self.check(principal, route)
        except ApiError:
            return False
        return True

    def stream_token(self, run_id: str, tenant_id: str) -> tuple[str, float]:
        """A stream token for ``?token=`` on the run's ``/events`` and ``/ws``, and its expiry."""
        expires = self._clock.time() + STREAM_TOKEN_SECONDS
        return self._signer.sign(_STREAM, StreamGrant(run_id, tenant_id, expires)), expires

    def _principal(self, conn: HTTPConnection, *, url_token: bool) -> Principal | None:
        """Who the call's credentials speak for; None when it sends none; 401 for a wrong one.

        ``Authorization`` decides when present; else ``X-API-Key`` (the KV task API's keys).
        """
        header = conn.headers.get("authorization")
        api_key = conn.headers.get("x-api-key")
        query = conn.query_params.get("token") if _has_query(conn) else None
        if query is not None:
            if not url_token:
                raise _token_in_url()
            if header is None and api_key is None:
                return self._stream_principal(query, conn.path_params.get("run_id", ""))
        if header is None and api_key is not None:
            principal = self.tokens.api_key(api_key)
            if principal is None:
                raise ApiError(
                    401,
                    "unauthorized",
                    "X-API-Key is not a valid key: send ADMIN_API_KEY or QUEUE_API_KEY as this "
                    "server's environment sets them, or 'Authorization: Bearer <token>'",
                )
            return principal
        if header is None:
            return None
        principal = self.tokens.authenticate(header)
        if principal is None:
            raise _unauthorized()
        return principal

    def _stream_principal(self, token: str, run_id: str) -> Principal:
        """Who a stream token speaks for: a reader of that one run; else 401."""
        grant = self._signer.verify(_STREAM, token, StreamGrant)
        if grant is None or grant.run_id != run_id or grant.expires < self._clock.time():
            raise ApiError(
                401,
                "invalid_stream_token",
                "?token= must be a stream token for this run, not expired: get one with POST "
                f"/runs/{{runId}}/stream-token (valid {STREAM_TOKEN_SECONDS:g}s), or send "
                "'Authorization: Bearer <token>' (API tokens are not accepted in URLs)",
            )
        return Principal(role="producer", tenant=grant.tenant_id, id=f"stream:{grant.run_id}")


def _has_query(conn: HTTPConnection) -> bool:
    """Whether the URL has a query string at all (most calls have none: not parsing one saves
    a little on every request)."""
    return bool(conn.scope.get("query_string"))


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "a valid bearer token is required: send 'Authorization: Bearer <token>' with a token "
        "from ACTORS_TOKENS (or JWT_SECRET / EDGE_API_TOKEN), or 'X-API-Key: <key>' with "
        "ADMIN_API_KEY or QUEUE_API_KEY",
    )


def _token_in_url() -> ApiError:
    return ApiError(
        401,
        "token_in_url",
        "tokens are not accepted in the URL here (URLs end up in access logs); send "
        "'Authorization: Bearer <token>' instead",
    )
