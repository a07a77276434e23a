"""The Gemini processor: local text extraction, chunk embeddings, a structured analysis (REST)."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import math
import random
import re
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actors.bounds import DEFAULT_MAX_PAYLOAD_BYTES
from actors.config import ProcessorConfig, Secrets
from actors.errors import (
    ConfigError,
    DocumentError,
    EmptyDocument,
    ModelRejected,
    ModelResponseInvalid,
    ModelUnavailable,
)
from actors.log import get_logger
from actors.processors._rate_limit import RateLimiter
from actors.processors.base import JobInput, ProcessorOutput
from supervisors.clock import Clock, SystemClock

if TYPE_CHECKING:
    import httpx

    from actors.documents import Chunk, ExtractedText

__all__ = [
    "DEFAULT_RESPONSE_SCHEMA",
    "GeminiClient",
    "GeminiProcessor",
    "decode_vector",
    "encode_vector",
    "shared_limiter",
]

log = get_logger("actors.gemini")

GOOGLE_BASE_URL = "https://generativelanguage.googleapis.com"

#: What the chat model is asked to return unless ``[processor].response_schema`` says otherwise.
DEFAULT_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "summary": {"type": "STRING"},
        "topics": {"type": "ARRAY", "items": {"type": "STRING"}},
        "entities": {
            "type": "ARRAY",
            "items": {
                "type": "OBJECT",
                "properties": {"name": {"type": "STRING"}, "type": {"type": "STRING"}},
                "required": ["name", "type"],
            },
        },
        "language": {"type": "STRING"},
    },
    "required": ["summary", "topics", "entities", "language"],
}

# ~4 characters per token for English text: what the limiter reserves before a call; the
# usage the API reports replaces it afterwards.
_CHARS_PER_TOKEN = 4
# Reserved for the answer of a generateContent call until its usage is known.
_OUTPUT_TOKENS_ESTIMATE = 1024
# text-embedding-004 reads 2,048 tokens per text; ~8,000 characters stay under it.
_MAX_EMBED_CHARS = 8000
# The queue refuses a result over 256 KiB of JSON; keep room for the envelope.
_RESULT_BUDGET = DEFAULT_MAX_PAYLOAD_BYTES - 8 * 1024
# Documents this small are extracted on the loop's thread.
_INLINE_BYTES = 32 * 1024
# Finish reasons that mean "this content will not be answered": retrying cannot help.
_REFUSED_FINISH = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"})

# One limiter per API key and endpoint in the process: quotas are per key, and every processor
# instance (one per ActorSystem) spends the same quota. A process-wide table is the point here.
_LIMITERS: dict[tuple[str, str], RateLimiter] = {}


def shared_limiter(
    settings: ProcessorConfig, api_key: str, *, clock: Clock | None = None
) -> RateLimiter:
    """The process's limiter for this key and endpoint, created with ``settings``' limits."""
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    key = (settings.base_url or GOOGLE_BASE_URL, fingerprint)
    limiter = _LIMITERS.get(key)
    if limiter is None:
        limiter = _LIMITERS[key] = RateLimiter(
            concurrency=settings.concurrency,
            requests_per_minute=settings.requests_per_minute,
            tokens_per_minute=settings.tokens_per_minute,
            clock=clock,
        )
    return limiter


def encode_vector(values: list[float]) -> str:
    """An embedding as base64 of little-endian float16: 2 bytes a dimension instead of ~20."""
    return base64.b64encode(struct.pack(f"<{len(values)}e", *values)).decode("ascii")


def decode_vector(text: str) -> list[float]:
    """The inverse of `encode_vector` (to float16 precision, ~3 significant digits)."""
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 2}e", raw))


class GeminiClient:
    """Gemini's REST API (``:generateContent``, ``:batchEmbedContents``) on httpx.

    The base URL can be Google's or a gateway's (``AI_GATEWAY_URL``, e.g. Cloudflare AI
    Gateway's ``.../google-ai-studio``); the path ``/{api_version}/models/{model}:{method}``
    is appended to it. The httpx client is created on first use and kept for the client's
    life; httpx drops broken connections from its pool itself.

    Error handling: every call goes through the shared `RateLimiter`. 429 and 503 wait what
    the server asks (``Retry-After``, or the ``RetryInfo`` detail's ``retryDelay``), other 5xx,
    408 and timeouts back off exponentially with jitter; after ``max_retries`` retries, or when
    the server asks for a wait longer than ``retry_cap_seconds``, `ModelUnavailable` fails the
    attempt (the queue retries the job later). Other 4xx raise `ModelRejected` with the API's
    message (the job fails permanently). A body that is not the JSON the API promises raises
    `ModelResponseInvalid`.
    """

    def __init__(
        self,
        settings: ProcessorConfig,
        *,
        api_key: str,
        limiter: RateLimiter,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._api_key = api_key
        self._limiter = limiter
        self._clock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.Random()
        self._transport = transport
        self._base = (settings.base_url or GOOGLE_BASE_URL).rstrip("/")
        self._http: httpx.AsyncClient | None = None

    def url(self, model: str, method: str) -> str:
        model = model.removeprefix("models/")
        return f"{self._base}/{self._settings.api_version}/models/{model}:{method}"

    async def generate(self, body: dict[str, Any], *, estimate_tokens: int) -> dict[str, Any]:
        """POST ``:generateContent`` for the chat model; return the decoded answer."""
        return await self._post(
            self._settings.chat_model,
            "generateContent",
            body,
            estimate_tokens=estimate_tokens,
            usage_key="totalTokenCount",
        )

    async def embed(
        self, texts: list[str], *, task_type: str = "RETRIEVAL_DOCUMENT"
    ) -> list[list[float]]:
        """Embed ``texts`` with the embedding model, in batches; one vector per text."""
        model = self._settings.embed_model.removeprefix("models/")
        vectors: list[list[float]] = []
        size = self._settings.embed_batch_size
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            requests = []
            for text in batch:
                request: dict[str, Any] = {
                    "model": f"models/{model}",
                    "content": {"parts": [{"text": text}]},
                    "taskType": task_type,
                }
                if self._settings.embed_dimensions:
                    request["outputDimensionality"] = self._settings.embed_dimensions
                requests.append(request)
            estimate = sum(len(t) for t in batch) // _CHARS_PER_TOKEN + 1
            answer = await self._post(
                model,
                "batchEmbedContents",
                {"requests": requests},
                estimate_tokens=estimate,
                usage_key=None,
            )
            embeddings = answer.get("embeddings")
            if not isinstance(embeddings, list) or len(embeddings) != len(batch):
                raise ModelResponseInvalid(
                    f"batchEmbedContents of {model} returned "
                    f"{len(embeddings) if isinstance(embeddings, list) else 'no'} embeddings for "
                    f"{len(batch)} texts"
                )
            for item in embeddings:
                values = item.get("values") if isinstance(item, dict) else None
                if (
                    not isinstance(values, list)
                    or not values
                    or not all(isinstance(v, int | float) for v in values)
                ):
                    raise ModelResponseInvalid(
                        f"batchEmbedContents of {model} returned an embedding without numeric "
                        "'values'"
                    )
                vectors.append([float(v) for v in values])
        return vectors

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            with anyio.CancelScope(shield=True):
                await http.aclose()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self._settings.timeout_seconds),
                headers={"x-goog-api-key": self._api_key},
                transport=self._transport,
            )
        return self._http

    async def _post(
        self,
        model: str,
        method: str,
        body: dict[str, Any],
        *,
        estimate_tokens: int,
        usage_key: str | None,
    ) -> dict[str, Any]:
        import httpx

        url = self.url(model, method)
        settings = self._settings
        what = f"{method} of {model.removeprefix('models/')}"
        for retry in range(settings.max_retries + 1):
            asked: float | None = None
            async with self._limiter.acquire(estimate_tokens) as permit:
                try:
                    with anyio.fail_after(settings.timeout_seconds):
                        response = await self._client().post(url, json=body)
                    content = response.content
                except (httpx.TimeoutException, TimeoutError):
                    problem = f"timed out after {settings.timeout_seconds}s"
                    status = 0
                except httpx.TransportError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    status = 0
                else:
                    status = response.status_code
                    if status == 200:
                        answer = _decode_json(content, what)
                        if usage_key is not None:
                            used = _usage(answer, usage_key)
                            if used is not None:
                                permit.settle(used)
                        return answer
                    message = _error_message(content)
                    problem = f"HTTP {status}: {message}"
                    if status in (429, 503):
                        asked = _retry_after(response.headers, content, self._clock.time())
                    elif status < 500 and status != 408:
                        raise ModelRejected(
                            f"{what} was refused with HTTP {status}: {message}. Retrying will "
                            "not help; check the document, [processor] models and GOOGLE_API_KEY"
                        )
            if asked is not None and asked > settings.retry_cap_seconds:
                raise ModelUnavailable(
                    f"{what}: {problem}; the server asks to wait {asked:g}s, over "
                    f"[processor].retry_cap_seconds={settings.retry_cap_seconds:g}; the job "
                    "will be retried later"
                )
            if retry == settings.max_retries:
                raise ModelUnavailable(
                    f"{what} failed after {settings.max_retries} retries: {problem}; the job "
                    "will be retried later. If this is a quota, lower [processor]."
                    "requests_per_minute / tokens_per_minute"
                )
            backoff = min(settings.retry_cap_seconds, settings.retry_base_seconds * 2**retry)
            delay = backoff * self._rng.uniform(0.5, 1.0)
            if asked is not None:
                # Honour the server's word, plus a little jitter so waiters do not return as one.
                delay = asked + self._rng.uniform(0.0, 0.1 * max(asked, backoff))
            log.info(
                "model.retrying",
                call=what,
                status=status,
                retry=retry + 1,
                delay_seconds=round(delay, 3),
                error=problem,
            )
            await self._clock.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


class GeminiProcessor:
    """Extracts a document's text locally, embeds its chunks and asks the chat model about it.

    The result (a dict, the job's result in the queue) holds ``analysis`` (the chat model's
    JSON answer, shaped by the response schema), ``chunks`` (index, start, end and, when it
    fits, text), ``embeddings`` (one base64 float16 vector per chunk, see `encode_vector`),
    ``usage`` and a few facts about the document. The metrics (``prompt_tokens``,
    ``output_tokens``, ``embed_tokens``, ``model_calls``, ``chunks``, ``bytes``) are summed
    per run by the queue.

    Error handling: extraction errors are `DocumentError` (permanent); the client's errors are
    described in `GeminiClient`. A result over the queue's 256 KiB first loses its chunk texts
    (the offsets stay), then, if still too large, fails the job permanently naming the knobs.
    """

    def __init__(
        self,
        settings: ProcessorConfig,
        *,
        api_key: str,
        limiter: RateLimiter | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._schema = DEFAULT_RESPONSE_SCHEMA
        if settings.response_schema:
            try:
                self._schema = json.loads(settings.response_schema)
            except ValueError as exc:
                raise ConfigError(f"[processor].response_schema is not valid JSON: {exc}") from None
        limiter = limiter if limiter is not None else shared_limiter(settings, api_key, clock=clock)
        self.client = GeminiClient(
            settings, api_key=api_key, limiter=limiter, clock=clock, rng=rng, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: ProcessorConfig, secrets: Secrets) -> GeminiProcessor:
        if secrets.google_api_key is None:
            raise ConfigError(
                '[processor].kind = "gemini" needs GOOGLE_API_KEY in the environment (never '
                "in the config file)"
            )
        try:
            import httpx  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigError(
                "[processor].kind = \"gemini\" needs httpx: pip install 'actors[gemini]'"
            ) from None
        return cls(settings, api_key=secrets.google_api_key.reveal())

    async def process(
        self, job: JobInput, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        settings = self._settings
        extracted = None
        inline_pdf = settings.send_pdf_inline and data[:1024].find(b"%PDF-") >= 0
        try:
            if len(data) <= _INLINE_BYTES:
                extracted = _extract(data, job.key, content_type)
            else:
                extracted = await anyio.to_thread.run_sync(_extract, data, job.key, content_type)
        except EmptyDocument:
            if not inline_pdf:  # a scanned PDF: the chat model can still read it inline
                raise
        text = extracted.text if extracted is not None else ""
        chunks, truncated = _chunks(text, settings)
        vectors = await self.client.embed([c.text for c in chunks]) if chunks else []
        embed_tokens = sum(math.ceil(len(c.text) / _CHARS_PER_TOKEN) for c in chunks)

        if inline_pdf:
            document_part: dict[str, Any] = {
                "inlineData": {
                    "mimeType": "application/pdf",
                    "data": base64.b64encode(data).decode("ascii"),
                }
            }
            estimate = len(data) // 100  # ~258 tokens a page, pages of ~25 KB
        else:
            document_part = {"text": text[: settings.max_prompt_chars]}
            estimate = len(document_part["text"]) // _CHARS_PER_TOKEN
        body = {
            "contents": [{"role": "user", "parts": [{"text": settings.prompt}, document_part]}],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": self._schema,
            },
        }
        answer = await self.client.generate(
            body,
            estimate_tokens=estimate
            + len(settings.prompt) // _CHARS_PER_TOKEN
            + _OUTPUT_TOKENS_ESTIMATE,
        )
        analysis = _analysis(answer, settings.chat_model)
        # Usage the answer does not state (or states oddly) counts as none.
        prompt_tokens = _usage(answer, "promptTokenCount") or 0
        output_tokens = _usage(answer, "candidatesTokenCount") or 0

        result: dict[str, Any] = {
            "processor": "gemini",
            "chat_model": settings.chat_model,
            "embed_model": settings.embed_model,
            "kind": extracted.kind if extracted is not None else "pdf",
            "title": extracted.title if extracted is not None else None,
            "pages": extracted.pages if extracted is not None else None,
            "chars": len(text),
            "bytes": len(data),
            "analysis": analysis,
            "chunks": [
                {"index": c.index, "start": c.start, "end": c.end, "text": c.text} for c in chunks
            ],
            "chunks_truncated": truncated,
            "embeddings": {
                "dtype": "float16",
                "encoding": "base64",
                "dims": len(vectors[0]) if vectors else 0,
                "vectors": [encode_vector(v) for v in vectors],
            },
            "usage": {
                "prompt_tokens": prompt_tokens,
                "output_tokens": output_tokens,
                "embed_tokens": embed_tokens,
                "embed_tokens_estimated": True,
            },
        }
        result = _fit(result, job.key)
        metrics = {
            "bytes": float(len(data)),
            "chunks": float(len(chunks)),
            "prompt_tokens": float(prompt_tokens),
            "output_tokens": float(output_tokens),
            "embed_tokens": float(embed_tokens),
            "model_calls": float(1 + math.ceil(len(chunks) / settings.embed_batch_size)),
        }
        return ProcessorOutput(result=result, metrics=metrics)

    async def aclose(self) -> None:
        await self.client.aclose()


def _extract(data: bytes, name: str, content_type: str | None) -> ExtractedText:
    from actors.documents import extract_text

    return extract_text(data, filename=name, content_type=content_type)


def _chunks(text: str, settings: ProcessorConfig) -> tuple[list[Chunk], bool]:
    """Chunks for embedding: at most ``max_chunks``, larger ones if the text needs it."""
    from actors.documents import chunk_text

    if not text:
        return [], False
    size = settings.max_chunk_chars
    if len(text) > size * settings.max_chunks:
        # Grow the chunks (up to the embedding model's input) before dropping any text.
        size = min(_MAX_EMBED_CHARS, math.ceil(len(text) / settings.max_chunks * 1.15))
    chunks = chunk_text(text, max_chars=size, overlap_chars=min(200, size // 10))
    if len(chunks) > settings.max_chunks:
        return chunks[: settings.max_chunks], True
    return chunks, False


def _fit(result: dict[str, Any], name: str) -> dict[str, Any]:
    """Keep the result under the queue's limit: drop chunk texts first, then refuse."""
    size = len(msgspec.json.encode(result))
    if size <= _RESULT_BUDGET:
        return result
    for chunk in result["chunks"]:
        chunk["text"] = None  # the offsets still locate it in the document's text
    result["chunk_texts_dropped"] = True
    size = len(msgspec.json.encode(result))
    if size <= _RESULT_BUDGET:
        return result
    raise DocumentError(
        f"the result for {name} is {size} bytes of JSON, over the queue's "
        f"{DEFAULT_MAX_PAYLOAD_BYTES} even without chunk texts; lower [processor].max_chunks "
        "or set [processor].embed_dimensions"
    )


def _analysis(answer: dict[str, Any], model: str) -> Any:
    """The JSON the chat model wrote, or a clear error saying why there is none.

    Every field is checked for its type: an answer of another shape is `ModelResponseInvalid`
    (retried), never an AttributeError or TypeError from reading it.
    """
    candidates = answer.get("candidates")
    if not candidates or not isinstance(candidates, list):
        feedback = _object(answer.get("promptFeedback"))
        if feedback.get("blockReason"):
            raise ModelRejected(
                f"{model} refused the document: blockReason {feedback['blockReason']}"
            )
        raise ModelResponseInvalid(f"generateContent of {model} returned no candidates")
    candidate = _object(candidates[0])
    finish = candidate.get("finishReason")
    if isinstance(finish, str) and finish in _REFUSED_FINISH:
        raise ModelRejected(f"{model} stopped answering: finishReason {finish}")
    parts = _object(candidate.get("content")).get("parts")
    parts = parts if isinstance(parts, list) else []
    text = "".join(
        p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
    )
    if not text:
        raise ModelResponseInvalid(
            f"generateContent of {model} returned a candidate without text (finishReason {finish})"
        )
    try:
        return json.loads(text)
    except ValueError as exc:
        cut = " (cut at the output token limit)" if finish == "MAX_TOKENS" else ""
        raise ModelResponseInvalid(
            f"{model} answered text that is not the JSON its response schema asks for{cut}: "
            f"{exc}; starts with {text[:80]!r}"
        ) from None


def _object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (a field of an unexpected shape)."""
    return value if isinstance(value, dict) else {}


def _usage(answer: dict[str, Any], key: str) -> int | None:
    """A token count from the answer's ``usageMetadata``, or None if it states none."""
    value = _object(answer.get("usageMetadata")).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _decode_json(content: bytes, what: str) -> dict[str, Any]:
    try:
        answer = json.loads(content)
    except ValueError:
        raise ModelResponseInvalid(
            f"{what} answered HTTP 200 with a body that is not JSON (starts with "
            f"{content[:80]!r}); a gateway or proxy in between may be misconfigured"
        ) from None
    if not isinstance(answer, dict):
        raise ModelResponseInvalid(f"{what} answered JSON that is not an object")
    return answer


def _error_message(content: bytes) -> str:
    """The API's own words: ``error.message`` of a Google error body, else the body's start."""
    try:
        error = json.loads(content).get("error") or {}
        message = error.get("message")
        status = error.get("status")
        if message:
            return f"{status}: {message}" if status else str(message)
    except (ValueError, AttributeError):
        pass
    return content[:200].decode("utf-8", "replace") or "(empty body)"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _retry_after(headers: Mapping[str, str], content: bytes, now: float) -> float | None:
    """Seconds the server asks us to wait: ``Retry-After`` (seconds or a date), or RetryInfo.

    ``now`` is the wall-clock time (epoch seconds), for a ``Retry-After`` given as a date.
    """
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - now)
    try:
        details = (json.loads(content).get("error") or {}).get("details") or []
    except (ValueError, AttributeError):
        return None
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None
