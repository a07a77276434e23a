"""Cloudflare Turnstile: a challenge token checked at siteverify, standing in for a token."""

from __future__ import annotations

import anyio
import httpx
import msgspec

from actors.config import Config
from actors.http._errors import ApiError

__all__ = ["Turnstile"]

#: A Turnstile token is at most 2048 characters (Cloudflare's documentation).
MAX_TOKEN_CHARS = 2048


class SiteVerify(msgspec.Struct, frozen=True):
    """The answer of siteverify; unknown fields (``challenge_ts``, ``cdata``...) are ignored."""

    success: bool
    error_codes: list[str] = msgspec.field(default_factory=list, name="error-codes")
    hostname: str | None = None
    action: str | None = None


class Turnstile:
    """Verifies Turnstile tokens at ``[http].turnstile_verify_url`` with ``TURNSTILE_SECRET``.

    Error handling: no token is a 401; a token siteverify refuses, or one issued for another
    hostname or action than configured, is a 403 naming the reason; a tenant not listed in
    ``[http].turnstile_tenants`` is a 403. A siteverify that cannot be reached, answers late
    (past ``turnstile_timeout_seconds``), answers other than 200 with JSON, or refuses this
    server's secret is a 503: the upload is refused, never let through unverified.
    """

    def __init__(self, secret: str, config: Config) -> None:
        http = config.http
        self._secret = secret
        self._url = http.turnstile_verify_url
        self._timeout = http.turnstile_timeout_seconds
        self._tenants = frozenset(http.turnstile_tenants)
        self._hostnames = frozenset(http.turnstile_hostnames)
        self._action = http.turnstile_action

    def __repr__(self) -> str:  # never the secret
        return f"<Turnstile {self._url} tenants={sorted(self._tenants)}>"

    @classmethod
    def from_config(cls, config: Config) -> Turnstile | None:
        """The verifier when ``TURNSTILE_SECRET`` is set, else None (bearer tokens only)."""
        secret = config.secrets.turnstile_secret
        return cls(secret.reveal(), config) if secret is not None else None

    def check_tenant(self, tenant_id: str) -> None:
        """403 unless ``[http].turnstile_tenants`` lets ``tenant_id`` upload with Turnstile."""
        if "*" not in self._tenants and tenant_id not in self._tenants:
            raise ApiError(
                403,
                "turnstile_tenant",
                f"tenant {tenant_id!r} may not upload with a Turnstile token; send "
                "'Authorization: Bearer <token>' with a producer token, or have the operator "
                "add the tenant to [http].turnstile_tenants",
                "tenantId",
            )

    async def verify(self, token: str | None, remote_ip: str | None = None) -> None:
        """Return if siteverify accepts ``token``; else raise `ApiError` (see the class)."""
        if not token:
            raise ApiError(
                401,
                "turnstile_required",
                "a Turnstile token or a bearer token is required: send the widget's token as "
                "turnstileToken (or cf-turnstile-response) in the body, or in the "
                "CF-Turnstile-Response header; or send 'Authorization: Bearer <token>'",
                "turnstileToken",
            )
        if len(token) > MAX_TOKEN_CHARS:
            raise ApiError(
                400,
                "invalid_field",
                f"a Turnstile token is at most {MAX_TOKEN_CHARS} characters",
                "turnstileToken",
            )
        form = {"secret": self._secret, "response": token}
        if remote_ip:
            form["remoteip"] = remote_ip
        answer = await self._ask(form)
        if not answer.success:
            codes = ", ".join(answer.error_codes) or "no error code given"
            if {"missing-input-secret", "invalid-input-secret"} & set(answer.error_codes):
                raise ApiError(
                    503,
                    "turnstile_misconfigured",
                    f"siteverify refused this server's TURNSTILE_SECRET ({codes}); the operator "
                    "must set the widget's secret key",
                )
            raise ApiError(
                403,
                "turnstile_failed",
                f"the Turnstile token was refused ({codes}): each token is valid once and for "
                "300 s; solve the challenge again and send the new token",
                "turnstileToken",
            )
        if self._hostnames and answer.hostname not in self._hostnames:
            raise ApiError(
                403,
                "turnstile_hostname",
                f"the Turnstile token was issued on hostname {answer.hostname!r}, not one this "
                "server accepts ([http].turnstile_hostnames)",
                "turnstileToken",
            )
        if self._action is not None and answer.action != self._action:
            raise ApiError(
                403,
                "turnstile_action",
                f"the Turnstile token was issued for action {answer.action!r}, not "
                f"{self._action!r} ([http].turnstile_action)",
                "turnstileToken",
            )

    async def _ask(self, form: dict[str, str]) -> SiteVerify:
        """POST the form to siteverify within the timeout; 503 for anything but a JSON answer."""
        try:
            # The whole exchange within the timeout: httpx's own bounds each read, not the sum.
            with anyio.fail_after(self._timeout):
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.post(self._url, data=form)
        except (httpx.HTTPError, TimeoutError) as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise _unavailable(why) from None
        if response.status_code != 200:
            raise _unavailable(f"it answered {response.status_code}")
        try:
            return msgspec.json.decode(response.content, type=SiteVerify)
        except msgspec.DecodeError as exc:
            raise _unavailable(f"its answer is not siteverify's JSON: {exc}") from None


def _unavailable(why: str) -> ApiError:
    return ApiError(
        503,
        "turnstile_unavailable",
        f"the Turnstile token could not be verified ({why}); nothing was created: try again later",
    )
