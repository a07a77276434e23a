"""The upload routes: reserve a key and a signed URL, take the file, then enqueue its job."""

from __future__ import annotations

import re
import uuid
from typing import Any

import msgspec
from starlette.responses import Response

from actors import protocol as wire
from actors import tenancy
from actors.errors import InvalidArgument
from actors.http._auth import TURNSTILE_PENDING, Principal, Signer, check_tenant
from actors.http._call import Call, json_response, read_body
from actors.http._errors import ApiError, as_http, mapped
from actors.http._host import PresigningStore, UploadsHost
from actors.http._turnstile import Turnstile

__all__ = ["UploadCompleteIn", "Uploads"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UPLOAD = "upload"


class UploadGrant(msgspec.Struct, frozen=True, array_like=True):
    """What an upload URL allows: one object of one run of one tenant, until ``expires``."""

    tenant_id: str
    run_id: str
    r2_key: str
    content_type: str
    filename: str
    expires: float


class UploadCompleteIn(msgspec.Struct, kw_only=True, frozen=True):
    """The body of ``POST /uploads/complete``: the ``uploadToken`` of ``/uploads/create``."""

    token: str


def _segment(text: str, fallback: str) -> str:
    """``text`` as one safe object-key segment (no '/', no leading dots)."""
    cleaned = _SAFE.sub("_", text).lstrip(".")[:200]
    return cleaned or fallback


class Uploads:
    """Uploads without a bearer token on the PUT: the URL is a grant signed by ``signer``.

    The job does not exist until its object does, so no worker can lease it, fail to find its
    object and spend an attempt while the upload is in flight.
    """

    def __init__(
        self, host: UploadsHost, signer: Signer, turnstile: Turnstile | None = None
    ) -> None:
        self._host = host
        # With TURNSTILE_SECRET set: /uploads/create without a bearer token (TURNSTILE_PENDING)
        # carries a Turnstile token, verified here.
        self._turnstile = turnstile
        # Upload URLs are signed with a key of this process: like presigned URLs they need no
        # bearer token; a restart invalidates those not used yet.
        self._signer = signer
        # Keys whose upload this process is writing now: a second PUT of one grant waits for
        # nothing and is refused (the object is written once; see put_upload).
        self._uploading: set[str] = set()

    async def create_upload(self, call: Call[wire.UploadCreateIn]) -> Response:
        """Reserve an object key and hand out where to PUT it; the job is enqueued on upload.

        The key lies under the tenant's prefix (``tenant/run/xxxxxxxx-filename``), and a run
        of another tenant is refused here, before anything is stored.
        """
        body = await call.body()
        turnstile = call.principal is TURNSTILE_PENDING
        if not turnstile:
            check_tenant(call.principal, body.tenant_id)
        try:
            tenancy.check_tenant_id(body.tenant_id)
        except InvalidArgument as exc:
            raise ApiError(400, "invalid_field", str(exc), "tenantId") from None
        if turnstile:
            check_tenant(await self._turnstile_principal(call, body), body.tenant_id)
        run_id = body.run_id or f"run-{uuid.uuid4().hex[:12]}"
        await self._check_run_tenant(run_id, body.tenant_id)
        key = tenancy.tenant_prefix(body.tenant_id) + "/".join(
            (
                _segment(run_id, "run"),
                f"{uuid.uuid4().hex[:8]}-{_segment(body.filename.rsplit('/', 1)[-1], 'file')}",
            )
        )
        settings = self._host.config.http
        expires = self._host.clock.time() + settings.upload_url_seconds
        grant = UploadGrant(body.tenant_id, run_id, key, body.content_type, body.filename, expires)
        token = self._signer.sign(_UPLOAD, grant)
        store = self._host.store
        headers = {"Content-Type": body.content_type}
        if isinstance(store, PresigningStore):
            # An object store that signs its own PUTs (R2, S3): the client uploads there, then
            # calls completeUrl, which enqueues the job. If-None-Match makes the URL single use
            # there too: the store refuses a second PUT (412) instead of overwriting.
            url = await mapped(
                store.presign_put(
                    key,
                    content_type=body.content_type,
                    expires_seconds=max(1, int(settings.upload_url_seconds)),
                    if_absent=True,
                )
            )
            headers["If-None-Match"] = "*"
            complete = str(call.request.url_for("complete_upload"))
        else:
            url = str(call.request.url_for("put_upload", token=token))
            complete = None
        out = wire.UploadCreateOut(
            success=True,
            run_id=run_id,
            r2_key=key,
            upload_url=url,
            method="PUT",
            expires_at=expires,
            complete_url=complete,
            upload_token=token if complete is not None else None,
            upload_headers=headers,
        )
        return json_response(out, 201)

    async def _turnstile_principal(
        self, call: Call[wire.UploadCreateIn], body: wire.UploadCreateIn
    ) -> Principal:
        """A producer of the body's tenant alone, once siteverify accepts the request's
        Turnstile token (the tenant checked first: a refused tenant costs no siteverify call)."""
        turnstile = self._require_turnstile()
        turnstile.check_tenant(body.tenant_id)
        headers = call.request.headers
        token = (
            body.turnstile_token
            or body.cf_turnstile_response
            or headers.get("cf-turnstile-response")
        )
        # The visitor's address as Cloudflare's edge saw it, when the request came through it.
        await turnstile.verify(token, headers.get("cf-connecting-ip"))
        return Principal(role="producer", tenant=body.tenant_id, id="turnstile")

    def _require_turnstile(self) -> Turnstile:
        """The verifier; without one (a gate wired apart from it) a token-less call is a 401."""
        if self._turnstile is None:
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
        return self._turnstile

    async def _check_run_tenant(self, run_id: str, tenant_id: str) -> None:
        """409 if the run exists and belongs to another tenant (a run has one tenant)."""
        try:
            summary = await mapped(self._host.queue.run_summary(run_id))
        except ApiError as exc:
            if exc.code == "run_not_found":
                return
            raise
        if summary.tenant_id != tenant_id:
            raise as_http(
                InvalidArgument(f"run_id {run_id!r} belongs to tenant {summary.tenant_id!r}")
            )

    async def put_upload(self, call: Call[None]) -> Response:
        """Store the uploaded file, once, then enqueue its job.

        An upload URL is single use: once its object is stored, a second PUT (the URL found in
        a log, a replay) is refused with 409 and overwrites nothing, so the object a job was
        enqueued for is the object it processes.
        """
        grant = self._verify(call.request.path_params["token"])
        key = grant.r2_key
        if key in self._uploading:
            raise _upload_used(key)
        self._uploading.add(key)  # before any await: of two concurrent PUTs, one goes on
        store = self._host.store
        try:
            if await mapped(store.head(key)) is not None:
                raise _upload_used(key)
            await self._check_run_tenant(grant.run_id, grant.tenant_id)
            data = await read_body(call.request, self._host.config.pipeline.max_object_bytes)
            await mapped(store.put(key, data, content_type=grant.content_type))
        finally:
            self._uploading.discard(key)
        return await self._enqueue(grant, len(data))

    async def complete_upload(self, call: Call[UploadCompleteIn]) -> Response:
        """Enqueue the job of a presigned upload, once its object is in the store (409 if not)."""
        body = await call.body()
        grant = self._verify(body.token)
        if call.principal is TURNSTILE_PENDING:
            # The signed grant is the authority, as for the PUT to this server: it was made
            # after a verified challenge (or a producer's token), for its tenant alone.
            self._require_turnstile().check_tenant(grant.tenant_id)
        else:
            check_tenant(call.principal, grant.tenant_id)
        if await mapped(self._host.store.head(grant.r2_key)) is None:
            raise ApiError(
                409,
                "upload_missing",
                f"nothing is stored under {grant.r2_key!r} yet: PUT the file to the uploadUrl "
                "that /uploads/create returned, then call completeUrl again",
                "token",
            )
        return await self._enqueue(grant, None)

    async def _enqueue(self, grant: UploadGrant, size: int | None) -> Response:
        payload: dict[str, Any] = {"filename": grant.filename, "contentType": grant.content_type}
        if size is not None:
            payload["bytes"] = size
        # The key makes a repeated completion return the same job.
        job = await mapped(
            self._host.enqueue(
                grant.run_id,
                grant.tenant_id,
                grant.r2_key,
                payload=payload,
                idempotency_key=f"upload:{grant.r2_key}",
            )
        )
        return json_response(
            wire.UploadDoneOut(
                success=True, job_id=job.id, run_id=job.run_id, r2_key=job.r2_key, status=job.status
            ),
            201,
        )

    def _verify(self, token: str) -> UploadGrant:
        grant = self._signer.verify(_UPLOAD, token, UploadGrant)
        if grant is None or grant.expires < self._host.clock.time():
            raise ApiError(
                403,
                "invalid_upload_token",
                "this upload URL is invalid or expired; create another with /uploads/create",
            )
        return grant


def _upload_used(key: str) -> ApiError:
    return ApiError(
        409,
        "upload_used",
        f"this upload URL was used already: {key!r} is stored and is never overwritten, so its "
        "job processes what was uploaded first; create another upload for another file",
    )
