"""Dashboard sign-ins: a bearer token exchanged once for a signed session cookie, and CSRF checks.

The cookie is a `Signer` grant naming the token (by `token_id`, never the token itself), a
random CSRF secret and an expiry; it is HttpOnly, SameSite=Strict and scoped to the dashboard's
path. Every request looks the token up again (`Tokens.by_id`), so a session ends with its
token's removal from ``ACTORS_TOKENS``. Keys come from ``ACTORS_SESSION_KEYS`` (comma-separated;
the first signs, every one verifies: rotate by putting a new key first) or are this process's
own (a restart then signs everyone out).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

import msgspec
from starlette.requests import HTTPConnection
from starlette.responses import Response

from actors.config import Config
from actors.errors import ConfigError
from actors.http._auth import Principal, Signer, Tokens
from actors.http._errors import ApiError
from supervisors import Clock

__all__ = ["COOKIE", "Session", "Sessions"]

COOKIE = "actors_session"
_PURPOSE = "session"


class SessionGrant(msgspec.Struct, frozen=True, array_like=True):
    """What a session cookie holds: whose token, the CSRF secret, and when it ends."""

    token_id: str
    csrf: str
    expires: float


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A signed-in browser: the token's principal and the secret its forms must carry."""

    principal: Principal
    csrf: str
    expires: float


class Sessions:
    """Opens, reads and ends sessions; checks a form's CSRF token and the request's origin.

    Error handling: a missing, forged, expired or ended session reads as None (the page asks
    to sign in again); a refused action raises `ApiError` 403 and changes nothing.
    """

    def __init__(self, tokens: Tokens, clock: Clock, config: Config) -> None:
        self._tokens = tokens
        self._clock = clock
        self._seconds = config.http.session_seconds
        keys = _keys(config)
        self._signer = Signer(keys[0], old_keys=keys[1:]) if keys else Signer()
        # Signed-out sessions (CSRF secret -> expiry), refused until they would have expired:
        # a copy of the cookie taken before sign-out opens nothing in this process.
        self._ended: dict[str, float] = {}

    def open(self, principal: Principal, response: Response, path: str, secure: bool) -> None:
        """Start a session for ``principal``: set its cookie on ``response``."""
        expires = self._clock.time() + self._seconds
        grant = SessionGrant(principal.id, secrets.token_urlsafe(24), expires)
        response.set_cookie(
            COOKIE,
            self._signer.sign(_PURPOSE, grant),
            max_age=int(self._seconds),
            path=path,
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    def read(self, conn: HTTPConnection) -> Session | None:
        """The request's live session, or None."""
        raw = conn.cookies.get(COOKIE)
        if not raw:
            return None
        grant = self._signer.verify(_PURPOSE, raw, SessionGrant)
        now = self._clock.time()
        if grant is None or grant.expires <= now or grant.csrf in self._ended:
            return None
        principal = self._tokens.by_id(grant.token_id)
        if principal is None:
            return None
        return Session(principal=principal, csrf=grant.csrf, expires=grant.expires)

    def end(self, session: Session, response: Response, path: str) -> None:
        """Sign out: refuse this session from now on and delete its cookie."""
        now = self._clock.time()
        self._ended = {k: t for k, t in self._ended.items() if t > now}
        self._ended[session.csrf] = session.expires
        response.delete_cookie(COOKIE, path=path, httponly=True, samesite="strict")

    @staticmethod
    def check_origin(conn: HTTPConnection) -> None:
        """403 unless the request comes from a page of this origin (``Origin``, else
        ``Referer``, names this host): another site's form cannot post here."""
        source = conn.headers.get("origin") or conn.headers.get("referer") or ""
        host = conn.headers.get("host", "")
        _, _, rest = source.partition("://")
        netloc = rest.split("/", 1)[0]
        if not host or not hmac.compare_digest(netloc.encode(), host.encode()):
            raise ApiError(
                403,
                "cross_origin",
                "this action must come from a page of the dashboard itself (the request's "
                "Origin names another site, or none); reload the page and try again",
            )

    @staticmethod
    def check_csrf(session: Session, form: Mapping[str, object]) -> None:
        """403 unless the form carries this session's CSRF token."""
        given = form.get("csrf")
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode(), session.csrf.encode()
        ):
            raise ApiError(
                403,
                "csrf",
                "this form has no valid CSRF token (it is older than your sign-in, or did not "
                "come from the dashboard); reload the page and try again",
            )


def _keys(config: Config) -> list[bytes]:
    secret = config.secrets.session_keys
    if secret is None:
        return []
    keys = [k.strip().encode() for k in secret.reveal().split(",") if k.strip()]
    if any(len(k) < 32 for k in keys):
        raise ConfigError(
            "ACTORS_SESSION_KEYS holds a key shorter than 32 characters; use long random ones: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return keys
