"""Bearer tokens with roles (admin, worker, producer), optionally scoped to one tenant."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

import msgspec

from actors.config import Config
from actors.errors import ConfigError

__all__ = ["ROLES", "Principal", "Role", "Tokens", "token_id"]

Role = Literal["admin", "worker", "producer"]
ROLES: tuple[Role, ...] = ("admin", "worker", "producer")


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
        return self.tenant is None or hmac.compare_digest(self.tenant, tenant_id)


def token_id(token: bytes) -> str:
    """A stable name for a token that does not reveal it: ``token:`` and 16 hex digits."""
    return "token:" + hashlib.sha256(token).hexdigest()[:16]


class Tokens:
    """The accepted tokens, read from the environment; never printed, never logged.

    Format of ``ACTORS_TOKENS``: ``token:role[:tenant]`` entries separated by commas, e.g.
    ``s3cret:admin,w0rker:worker,acme-key:producer:acme``. The seed's single secret
    (``JWT_SECRET``, or ``EDGE_API_TOKEN``) is one more token with full access.

    Every lookup compares the presented token with every known token in constant time, so the
    time taken says nothing about how much of a token was right.
    """

    def __init__(self, entries: list[tuple[bytes, Principal]]) -> None:
        self._entries = entries

    def __repr__(self) -> str:
        return f"<Tokens: {len(self._entries)} configured>"

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_config(cls, config: Config) -> Tokens:
        """The tokens of ``ACTORS_TOKENS`` and the seed's full-access secret, if set."""
        secrets = config.secrets
        spec = secrets.http_tokens.reveal() if secrets.http_tokens is not None else ""
        full = secrets.api_token.reveal() if secrets.api_token is not None else None
        return cls.parse(spec, full_access=full)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tokens:
        full = env.get("JWT_SECRET") or env.get("EDGE_API_TOKEN") or None
        return cls.parse(env.get("ACTORS_TOKENS", ""), full_access=full)

    @classmethod
    def parse(cls, spec: str, *, full_access: str | None = None) -> Tokens:
        """Parse ``token:role[:tenant],...``; raise ConfigError naming the entry's position."""
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
            token = parts[0].encode()
            entries.append((token, Principal(role=parts[1], tenant=tenant, id=token_id(token))))
        if full_access:
            token = full_access.encode()
            entries.append((token, Principal(role="admin", id=token_id(token))))
        return cls(entries)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer <token>`` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.lookup(token.strip())

    def lookup(self, token: str) -> Principal | None:
        """The principal of a bare token, or None; compares with every token in constant time."""
        presented = token.encode("utf-8", "surrogateescape")
        found: Principal | None = None
        for known, principal in self._entries:
            # No early exit: every entry is compared whatever matched before.
            if hmac.compare_digest(presented, known) and found is None:
                found = principal
        return found
