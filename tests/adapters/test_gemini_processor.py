"""The Gemini processor's real HTTP path against a local server speaking Gemini's REST protocol."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from gemini_fake import API_KEY, FakeGemini, fake_vector

from actors.config import ProcessorConfig, Secret, Secrets
from actors.errors import (
    ConfigError,
    DocumentError,
    ModelRejected,
    ModelResponseInvalid,
    ModelUnavailable,
)
from actors.processors import GeminiProcessor, JobInput, decode_vector, make_processor
from actors.processors._rate_limit import RateLimiter

# How answers are read and retried is the same on both runtimes: asyncio only (see
# tests/conftest.py); the whole call and its time limit keep their trio leg.
pytestmark = [pytest.mark.anyio, pytest.mark.runtimes("asyncio")]

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
TEXT = (
    "Lichens grow slowly on old stone walls. They record how clean the air has been. "
    "Surveys in Oslo count them every year.\n\n"
) * 12


class RecordingClock:
    """Real time, but sleeps are recorded and skipped: retries are checked, not waited for."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return anyio.current_time()

    def time(self) -> float:
        import time

        return time.time()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(dims=16) as server:
        yield server


def job(key: str = "t1/run/notes.txt") -> JobInput:
    return JobInput(id=1, run_id="run", tenant_id="t1", key=key)


def processor(url: str, clock: RecordingClock | None = None, **settings: Any) -> GeminiProcessor:
    options: dict[str, Any] = {
        "kind": "gemini",
        "base_url": url,
        "max_chunk_chars": 300,
        "embed_batch_size": 3,
        "retry_base_seconds": 0.5,
        "retry_cap_seconds": 30,
        "max_retries": 3,
        "timeout_seconds": 5,
    }
    options.update(settings)
    config = ProcessorConfig(**options)
    limiter = RateLimiter(concurrency=4, requests_per_minute=1000, tokens_per_minute=10**7)
    return GeminiProcessor(
        config, api_key=API_KEY, limiter=limiter, clock=clock or RecordingClock()
    )  # type: ignore[arg-type]


async def process(
    p: GeminiProcessor,
    data: bytes = TEXT.encode(),
    key: str = "t1/run/notes.txt",
    content_type: str | None = "text/plain",
) -> Any:
    try:
        with anyio.fail_after(30):
            return await p.process(job(key), data, content_type)
    finally:
        await p.aclose()


@pytest.mark.runtimes("asyncio", "trio")
async def test_a_document_gets_an_analysis_embedded_chunks_and_token_usage(
    fake: FakeGemini,
) -> None:
    output = await process(processor(fake.url))
    result = output.result
    chunks = result["chunks"]
    assert len(chunks) > 3
    assert result["analysis"]["topics"] == ["lichens"]
    assert result["analysis"]["language"] == "en"
    # Embedded in batches of 3: one batchEmbedContents call per batch, one generateContent.
    assert fake.calls("batchEmbedContents") == math.ceil(len(chunks) / 3)
    assert fake.calls("generateContent") == 1
    assert result["embeddings"]["dims"] == 16
    for chunk, vector in zip(chunks, result["embeddings"]["vectors"], strict=True):
        assert TEXT[chunk["start"] : chunk["end"]].strip() == chunk["text"].strip()
        expected = fake_vector(chunk["text"], 16)
        assert decode_vector(vector) == pytest.approx(expected, abs=1e-3)  # float16
    generate = next(body for path, body in fake.requests if path.endswith(":generateContent"))
    assert generate["generationConfig"]["responseMimeType"] == "application/json"
    assert generate["generationConfig"]["responseSchema"]["required"][0] == "summary"
    assert generate["contents"][0]["parts"][0]["text"].startswith("Analyse the document")
    assert output.metrics["prompt_tokens"] > 0
    assert output.metrics["output_tokens"] == 20
    assert output.metrics["embed_tokens"] > 0
    assert output.metrics["chunks"] == len(chunks)
    assert result["usage"]["output_tokens"] == 20


async def test_a_429_waits_what_retry_after_says_then_succeeds(fake: FakeGemini) -> None:
    clock = RecordingClock()
    fake.fail(":generateContent", "429", 7)
    output = await process(processor(fake.url, clock))
    assert output.result["analysis"]["language"] == "en"
    assert len(clock.sleeps) == 1 and 7 <= clock.sleeps[0] <= 7.7
    assert fake.calls("generateContent") == 2


async def test_a_429_with_retry_info_waits_the_retry_delay(fake: FakeGemini) -> None:
    clock = RecordingClock()
    fake.fail(":batchEmbedContents", "429-info", "3s")
    await process(processor(fake.url, clock))
    assert len(clock.sleeps) == 1 and 3 <= clock.sleeps[0] <= 3.3


async def test_5xx_are_retried_with_growing_jittered_backoff(fake: FakeGemini) -> None:
    clock = RecordingClock()
    fake.fail(":generateContent", "500")
    fake.fail(":generateContent", "503")
    fake.fail(":generateContent", "500")
    output = await process(processor(fake.url, clock))
    assert output.result["analysis"]
    # base 0.5 s doubling, each less up to half at random (the 503 has no Retry-After).
    assert 0.25 <= clock.sleeps[0] <= 0.5
    assert 0.5 <= clock.sleeps[1] <= 1.0
    assert 1.0 <= clock.sleeps[2] <= 2.0


async def test_failures_outlasting_the_retries_fail_the_attempt_not_the_job(
    fake: FakeGemini,
) -> None:
    for _ in range(3):
        fake.fail(":generateContent", "500")
    with pytest.raises(ModelUnavailable, match="after 2 retries: HTTP 500: INTERNAL") as info:
        await process(processor(fake.url, max_retries=2))
    assert not isinstance(info.value, DocumentError)


async def test_a_retry_after_beyond_the_cap_gives_the_job_back_at_once(fake: FakeGemini) -> None:
    clock = RecordingClock()
    fake.fail(":generateContent", "429", 3600)
    with pytest.raises(ModelUnavailable, match="asks to wait 3600s"):
        await process(processor(fake.url, clock))
    assert clock.sleeps == []


@pytest.mark.runtimes("asyncio", "trio")
async def test_a_slow_answer_times_out_and_is_retried(fake: FakeGemini) -> None:
    fake.fail(":generateContent", "slow", 1.5)
    output = await process(processor(fake.url, timeout_seconds=0.5))
    assert output.result["analysis"]
    assert fake.calls("generateContent") == 2


async def test_a_400_fails_the_job_permanently_with_the_api_message(fake: FakeGemini) -> None:
    fake.fail(":generateContent", "400", "Request payload size exceeds the limit: 20971520 bytes.")
    with pytest.raises(ModelRejected, match="payload size exceeds the limit") as info:
        await process(processor(fake.url))
    assert isinstance(info.value, DocumentError)
    assert fake.calls("generateContent") == 1


async def test_a_wrong_api_key_is_a_permanent_failure_naming_the_key(fake: FakeGemini) -> None:
    config = ProcessorConfig(kind="gemini", base_url=fake.url)
    p = GeminiProcessor(
        config,
        api_key="wrong",
        limiter=RateLimiter(concurrency=1, requests_per_minute=100, tokens_per_minute=10**6),
    )
    with pytest.raises(ModelRejected, match=r"HTTP 403.*API key not valid.*GOOGLE_API_KEY"):
        await process(p)


async def test_a_malformed_body_is_a_clear_error_not_a_crash(fake: FakeGemini) -> None:
    fake.fail(":generateContent", "malformed")
    with pytest.raises(ModelResponseInvalid, match="not JSON"):
        await process(processor(fake.url))


async def test_an_answer_that_breaks_the_schema_is_a_clear_error(fake: FakeGemini) -> None:
    fake.fail(":generateContent", "not-schema")
    with pytest.raises(ModelResponseInvalid, match="not the JSON its response schema asks for"):
        await process(processor(fake.url))


@pytest.mark.parametrize(
    "body",
    [
        {"candidates": "none"},
        {"candidates": [{"content": ["not", "an", "object"]}]},
        {"candidates": [{"content": {"parts": [{"text": 7}]}}]},
        {"candidates": [{"content": {"parts": "text"}}], "promptFeedback": []},
        {"promptFeedback": "blocked"},
        {
            "candidates": [{"content": {"parts": [{"text": '{"summary": "x"}'}]}}],
            "usageMetadata": ["not", "an", "object"],
        },
        {
            "candidates": [{"content": {"parts": [{"text": '{"summary": "x"}'}]}}],
            "usageMetadata": {"promptTokenCount": "many"},
        },
    ],
)
async def test_an_answer_of_the_wrong_shape_is_a_clear_error_or_read_not_a_crash(
    fake: FakeGemini, body: dict[str, Any]
) -> None:
    fake.fail(":generateContent", "body", body)
    try:
        output = await process(processor(fake.url))
    except ModelResponseInvalid as error:
        assert "generateContent" in str(error)
    else:  # only the usage numbers were odd: they count as unknown
        assert output.result["analysis"] == {"summary": "x"}
        assert output.metrics["prompt_tokens"] == 0


async def test_a_blocked_document_fails_permanently(fake: FakeGemini) -> None:
    fake.fail(":generateContent", "blocked")
    with pytest.raises(ModelRejected, match="blockReason SAFETY"):
        await process(processor(fake.url))


async def test_a_gateway_base_url_keeps_its_path_prefix() -> None:
    with FakeGemini(prefix="/v1/account/gateway/google-ai-studio") as fake:
        await process(processor(fake.url))
    assert {path.split("/models/")[0] for path, _ in fake.requests} == {
        "/v1/account/gateway/google-ai-studio/v1beta"
    }


async def test_a_pdf_goes_inline_when_configured(fake: FakeGemini) -> None:
    data = (SAMPLES / "harbour-report.pdf").read_bytes()
    output = await process(
        processor(fake.url, send_pdf_inline=True),
        data,
        "t1/run/harbour-report.pdf",
        "application/pdf",
    )
    generate = next(body for path, body in fake.requests if path.endswith(":generateContent"))
    inline = generate["contents"][0]["parts"][1]["inlineData"]
    assert inline["mimeType"] == "application/pdf"
    assert output.result["kind"] == "pdf"
    assert output.result["chunks"]


async def test_a_result_that_would_not_fit_the_queue_drops_chunk_texts_then_refuses() -> None:
    long_text = ("Moss and lichen surveys across the northern coast. " * 40 + "\n\n") * 60
    with FakeGemini(dims=768) as fake:
        output = await process(
            processor(fake.url, max_chunk_chars=2000, max_chunks=64), long_text.encode()
        )
    result = output.result
    assert result["chunk_texts_dropped"] is True
    assert all(c["text"] is None for c in result["chunks"])
    assert len(result["embeddings"]["vectors"]) == len(result["chunks"]) == 64

    with FakeGemini(dims=4096) as fake, pytest.raises(DocumentError, match="max_chunks"):
        await process(processor(fake.url, max_chunk_chars=2000, max_chunks=64), long_text.encode())


def test_make_processor_needs_the_key_from_the_environment(fake: FakeGemini) -> None:
    settings = ProcessorConfig(kind="gemini", base_url=fake.url)
    with pytest.raises(ConfigError, match="GOOGLE_API_KEY"):
        make_processor(settings, Secrets())
    p = make_processor(settings, Secrets(google_api_key=Secret(API_KEY)))
    assert isinstance(p, GeminiProcessor)
    assert p.client.url("gemini-2.0-flash", "generateContent") == (
        f"{fake.url}/v1beta/models/gemini-2.0-flash:generateContent"
    )
