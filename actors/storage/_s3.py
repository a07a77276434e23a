"""The R2 / S3 object store on aioboto3: capped reads, retries, multipart, presigned PUTs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from actors._bridge import Bridge
from actors._retries import retrying
from actors.bounds import MAX_UPLOAD_URL_SECONDS
from actors.config import Config, StorageConfig
from actors.errors import (
    ConfigError,
    ObjectMissing,
    ObjectStoreError,
    ObjectStoreRefused,
    ObjectStoreUnavailable,
)
from actors.log import get_logger
from actors.storage.base import StoredObject, check_key, missing, too_large

__all__ = ["S3ObjectStore"]

log = get_logger("actors.r2_store")

T = TypeVar("T")

# Read the body in pieces of this size, counting, so an object that is longer than announced
# (or than the cap) is cut off at the cap instead of filling memory.
_READ_CHUNK = 256 * 1024

# Error codes that mean "try again later"; everything else under 500 is the caller's mistake.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
        "TooManyRequests",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


class S3ObjectStore:
    """Objects in an S3-compatible bucket (Cloudflare R2, AWS S3, MinIO, moto).

    One aioboto3 client serves the store's whole life. It is created on first use, on the
    event loop that runs the store's calls (`actors._bridge.Bridge`): the caller's loop on
    asyncio; on trio, where aiobotocore cannot run (its aiohttp and httpx sessions both need an
    asyncio loop), an asyncio loop on a helper thread that `aclose` stops. A call whose caller
    stops waiting runs on to its end or its ``timeout_seconds`` deadline, which runs on that
    loop too. The client is recreated if the loop changes; a broken connection is dropped
    from aiohttp's pool by aiohttp itself (closing the shared client after a failure would
    break the other fetchers' requests in flight).

    Error handling: `get` refuses an object larger than ``max_bytes`` before reading its body
    when the store announces its length, and stops reading at the cap otherwise
    (`ObjectTooLarge`). Timeouts, connection resets, 5xx and throttling are retried
    ``max_retries`` times with exponential backoff and jitter, then raise
    `ObjectStoreUnavailable` (the queue retries the job). A missing key raises `ObjectMissing`;
    access denied, a missing bucket, bad credentials and other 4xx raise `ObjectStoreRefused`
    at once (permanent). A body cut short is never returned: its length is checked against
    the announced length.
    """

    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str | None,
        access_key_id: str,
        secret_access_key: str,
        region: str = "auto",
        addressing_style: str = "auto",
        timeout_seconds: float = 30.0,
        max_retries: int = 3,
        retry_base_seconds: float = 0.2,
        retry_cap_seconds: float = 5.0,
        multipart_threshold_bytes: int = 16 * 1024 * 1024,
        multipart_part_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        try:
            import aioboto3
            from botocore.config import Config as BotoConfig
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigError(
                '[storage].kind = "r2"/"s3" needs aioboto3: pip install \'actors[s3]\''
            ) from None
        self.bucket = bucket
        self.endpoint = endpoint
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._boto_config = BotoConfig(
            connect_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
            # Retries are ours (below): botocore's cannot see a body cut short mid-read, and
            # two layers of retries multiply.
            retries={"total_max_attempts": 1},
            s3={"addressing_style": addressing_style},
            signature_version="s3v4",
        )
        self._timeout = timeout_seconds
        self._max_retries = max_retries
        self._retry_base = retry_base_seconds
        self._retry_cap = retry_cap_seconds
        self.multipart_threshold = multipart_threshold_bytes
        self.multipart_part_bytes = multipart_part_bytes
        # The client and the asyncio loop it belongs to.
        self._client: Any = None
        self._client_cm: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._client_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        # Runs the calls: on the caller's loop (asyncio) or a helper thread's (trio).
        self._bridge = Bridge("actors-s3-loop")

    @classmethod
    def from_config(cls, config: Config) -> S3ObjectStore:
        """Build the store from ``[storage]`` and the R2_* secrets; a missing one: `ConfigError`."""
        storage: StorageConfig = config.storage
        secrets = config.secrets
        if not storage.bucket:
            raise ConfigError(
                f"[storage].kind = {storage.kind!r} needs a bucket: set [storage].bucket or "
                "R2_BUCKET"
            )
        if storage.kind == "r2" and not storage.endpoint:
            raise ConfigError(
                '[storage].kind = "r2" needs an endpoint: set [storage].endpoint or R2_ENDPOINT '
                "to https://<account id>.r2.cloudflarestorage.com"
            )
        if secrets.r2_access_key_id is None or secrets.r2_secret_access_key is None:
            raise ConfigError(
                f"[storage].kind = {storage.kind!r} needs credentials in the environment: set "
                "R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY (never in the config file)"
            )
        return cls(
            bucket=storage.bucket,
            endpoint=storage.endpoint,
            access_key_id=secrets.r2_access_key_id.reveal(),
            secret_access_key=secrets.r2_secret_access_key.reveal(),
            region=storage.region,
            addressing_style=storage.addressing_style,
            timeout_seconds=storage.timeout_seconds,
            max_retries=storage.max_retries,
            retry_base_seconds=storage.retry_base_seconds,
            retry_cap_seconds=storage.retry_cap_seconds,
            multipart_threshold_bytes=storage.multipart_threshold_bytes,
            multipart_part_bytes=storage.multipart_part_bytes,
        )

    # -- the ObjectStore protocol ----------------------------------------------------------

    async def get(self, key: str, *, max_bytes: int) -> StoredObject:
        """Read the object under ``key`` whole, refusing it if it exceeds ``max_bytes``."""
        check_key(key)

        async def attempt(client: Any) -> StoredObject:
            response = await client.get_object(Bucket=self.bucket, Key=key)
            length = response.get("ContentLength")
            body = response["Body"]
            async with body:  # closes the connection, read or not
                if length is not None and length > max_bytes:
                    raise too_large(key, max_bytes, length)
                pieces: list[bytes] = []
                received = 0
                while piece := await body.read(_READ_CHUNK):
                    received += len(piece)
                    if received > max_bytes:
                        raise too_large(key, max_bytes)
                    pieces.append(piece)
            if length is not None and received != length:
                # Invariant: a partial object is never returned.
                raise _Truncated(f"the body of {key!r} ended after {received} of {length} bytes")
            return StoredObject(
                key=key, data=b"".join(pieces), content_type=response.get("ContentType")
            )

        return await self._retrying("get", key, attempt)

    async def head(self, key: str) -> int | None:
        """The size of the object under ``key`` (a HEAD request), or None if there is none."""
        check_key(key)

        async def attempt(client: Any) -> int:
            response = await client.head_object(Bucket=self.bucket, Key=key)
            return int(response.get("ContentLength") or 0)

        try:
            return await self._retrying("head", key, attempt)
        except ObjectMissing:
            return None

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store ``data`` under ``key``: one PUT, or a multipart upload over the threshold."""
        check_key(key)
        if len(data) > self.multipart_threshold:
            view = memoryview(data)
            step = self.multipart_part_bytes

            async def parts() -> Any:
                for start in range(0, len(data), step):
                    yield bytes(view[start : start + step])

            await self._multipart(key, parts(), content_type)
            return
        extra = {"ContentType": content_type} if content_type else {}

        async def attempt(client: Any) -> None:
            await client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)

        await self._retrying("put", key, attempt)

    async def put_file(self, path: Path, key: str, *, content_type: str | None = None) -> int:
        """Upload the file at ``path`` to ``key``, part by part when large; return its size.

        Memory holds one part at a time, so a file of any size can be submitted.
        """
        check_key(key)
        size = (await anyio.Path(path).stat()).st_size
        if size <= self.multipart_threshold:
            await self.put(key, await anyio.Path(path).read_bytes(), content_type=content_type)
            return size

        async def parts() -> Any:
            async with await anyio.open_file(path, "rb") as f:
                while piece := await f.read(self.multipart_part_bytes):
                    yield piece

        await self._multipart(key, parts(), content_type)
        return size

    async def presign_put(
        self,
        key: str,
        *,
        expires_seconds: int = 900,
        content_type: str | None = None,
        if_absent: bool = False,
    ) -> str:
        """A URL that lets its holder PUT ``key`` for ``expires_seconds``, without credentials.

        With ``content_type`` the upload must send exactly that Content-Type header. With
        ``if_absent`` it must send ``If-None-Match: *`` (a signed header), and the store refuses
        it (412) once an object exists under ``key``: the URL cannot overwrite what it uploaded.
        """
        check_key(key)
        if not 1 <= expires_seconds <= MAX_UPLOAD_URL_SECONDS:
            raise ValueError("expires_seconds must be within 1 s and 7 days (S3's limit)")
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if content_type:
            params["ContentType"] = content_type
        if if_absent:
            params["IfNoneMatch"] = "*"

        async def sign(client: Any) -> str:
            url = await client.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=expires_seconds
            )
            return str(url)

        return await self._call(sign)

    async def aclose(self) -> None:
        """Close the client, cancel the calls still running, and stop the helper loop."""
        loop, self._client_loop = self._client_loop, None
        cm, self._client_cm, self._client = self._client_cm, None, None
        with anyio.CancelScope(shield=True):
            if cm is not None and loop is not None and not loop.is_closed():
                closing = cm.__aexit__(None, None, None)
                if loop is self._bridge.loop():
                    await self._bridge.call(closing)
                else:  # the loop that made it is gone or elsewhere: nothing left to close
                    closing.close()
            await self._bridge.aclose()

    # -- multipart ---------------------------------------------------------------------------

    async def _multipart(self, key: str, parts: Any, content_type: str | None) -> None:
        extra = {"ContentType": content_type} if content_type else {}

        async def create(client: Any) -> str:
            response = await client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)
            return str(response["UploadId"])

        upload_id = await self._retrying("create_multipart_upload", key, create)
        done: list[dict[str, Any]] = []
        try:
            number = 0
            async for body in parts:
                number += 1

                async def upload(client: Any, body: bytes = body, number: int = number) -> str:
                    response = await client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body,
                    )
                    return str(response["ETag"])

                etag = await self._retrying(f"upload_part {number}", key, upload)
                done.append({"PartNumber": number, "ETag": etag})

            async def complete(client: Any) -> None:
                await client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": done},
                )

            await self._retrying("complete_multipart_upload", key, complete)
        except BaseException:
            # Abandoned parts cost storage until aborted; a failed abort is only logged.
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):

                async def abort(client: Any) -> None:
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )

                try:
                    await self._call(abort)
                except Exception as exc:
                    log.warning("store.abort_failed", key=key, upload_id=upload_id, error=str(exc))
            raise

    # -- retries and error translation -------------------------------------------------------

    async def _retrying(self, what: str, key: str, attempt: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``attempt(client)`` until it succeeds, a permanent error, or retries run out."""

        async def once() -> T:
            with anyio.fail_after(self._timeout):
                return await self._call(attempt)

        def transient(exc: Exception) -> bool:
            # A bug (not the store's failure) is not retried: the fetcher crashes, restarted.
            return _is_store_failure(exc) and not self._translate(exc, what, key).permanent

        try:
            return await retrying(
                once,
                on=transient,
                attempts=self._max_retries + 1,
                wait_initial=self._retry_base,
                wait_max=self._retry_cap,
                wait_jitter=self._retry_base,
                log=log,
                event="store.retrying",
                describe=lambda exc: str(self._translate(exc, what, key)),
                op=what,
                key=key,
            )
        except ObjectStoreError:
            raise
        except Exception as exc:
            if not _is_store_failure(exc):
                raise
            raise self._translate(exc, what, key) from None

    def _translate(self, exc: Exception, what: str, key: str) -> ObjectStoreError:
        from botocore.exceptions import ClientError, NoCredentialsError

        where = f"{self.endpoint or 'S3'} bucket {self.bucket!r}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            message = error.get("Message") or code or f"HTTP {status}"
            if code in _MISSING_CODES or (status == 404 and code != "NoSuchBucket"):
                return missing(key, where)
            if code == "NoSuchBucket":
                return ObjectStoreRefused(
                    f"{what} {key!r}: {where} does not exist; check [storage].bucket / R2_BUCKET "
                    "and [storage].endpoint"
                )
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                return ObjectStoreUnavailable(
                    f"{what} {key!r} in {where} failed after {self._max_retries} retries: "
                    f"{code or status}: {message}"
                )
            if status in (401, 403) or code in (
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
            ):
                return ObjectStoreRefused(
                    f"{what} {key!r}: {where} refused access ({code or status}: {message}); "
                    "check R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY and the token's permissions"
                )
            return ObjectStoreRefused(f"{what} {key!r} in {where} was refused: {code}: {message}")
        if isinstance(exc, NoCredentialsError):
            return ObjectStoreRefused(
                "no S3 credentials: set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY"
            )
        if isinstance(exc, TimeoutError):
            return ObjectStoreUnavailable(
                f"{what} {key!r} in {where} timed out after {self._timeout}s, "
                f"{self._max_retries} retries; raise [storage].timeout_seconds if objects are "
                "large or the link is slow"
            )
        return ObjectStoreUnavailable(
            f"{what} {key!r} in {where} failed after {self._max_retries} retries: "
            f"{type(exc).__name__}: {exc}"
        )

    # -- loops and the client ----------------------------------------------------------------

    async def _call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(client)`` once, on the loop that owns the client."""
        return await self._bridge.call(self._with_client(fn))

    async def _with_client(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        # The deadline is enforced on the loop that runs the call: a call whose caller stopped
        # waiting (cancelled, timed out) ends there too, at the latest this long after it began.
        async with asyncio.timeout(self._timeout):
            return await fn(await self._ensure_client())

    async def _ensure_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is loop:
            return self._client
        if self._client_lock is None or self._client_lock[0] is not loop:
            self._client_lock = (loop, asyncio.Lock())
        async with self._client_lock[1]:
            if self._client is not None and self._client_loop is loop:
                return self._client
            cm = self._session.client("s3", endpoint_url=self.endpoint, config=self._boto_config)
            client = await cm.__aenter__()
            self._client, self._client_cm, self._client_loop = client, cm, loop
            return client


class _Truncated(Exception):
    """The body ended before its announced length (a reset mid-download): transient."""


def _is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the store or the network rather than from a bug."""
    import aiohttp
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(
        exc, ClientError | BotoCoreError | aiohttp.ClientError | OSError | TimeoutError | _Truncated
    )
