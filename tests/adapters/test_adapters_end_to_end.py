"""The real pipeline with both adapters: S3 (moto, through a faulty proxy) and Gemini (a fake)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from adapter_faults import FaultProxy
from conftest import KEY_ID, REGION, SECRET
from gemini_fake import API_KEY, FakeGemini

from actors.__main__ import main
from actors.cli._results import export_run
from actors.config import (
    Config,
    PipelineConfig,
    ProcessorConfig,
    QueueConfig,
    Secret,
    Secrets,
    StorageConfig,
    SupervisionConfig,
)
from actors.service import submit_files
from actors.system import ActorSystem

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
FILES = ["lichen-field-notes.txt", "community-solar.md", "harbour-report.pdf"]


def adapters_config(tmp_path: Path, endpoint: str, bucket: str, gemini_url: str) -> Config:
    return Config(
        queue=QueueConfig(
            path=str(tmp_path / "q.db"), retry_base_seconds=0.01, poll_interval_seconds=0.05
        ),
        pipeline=PipelineConfig(concurrency=8, fetchers=2, processors=2),
        # No retries inside the store or the processor: every fault costs the job an attempt,
        # so the queue's retries are what the test sees.
        storage=StorageConfig(
            kind="s3",
            endpoint=endpoint,
            bucket=bucket,
            region=REGION,
            addressing_style="path",
            timeout_seconds=5,
            max_retries=0,
        ),
        processor=ProcessorConfig(
            kind="gemini",
            base_url=gemini_url,
            max_chunk_chars=400,
            max_retries=0,
            timeout_seconds=5,
        ),
        supervision=SupervisionConfig(backoff_min_seconds=0.0, backoff_max_seconds=0.0),
        secrets=Secrets(
            r2_access_key_id=Secret(KEY_ID),
            r2_secret_access_key=Secret(SECRET),
            google_api_key=Secret(API_KEY),
        ),
    )


@pytest.mark.anyio
async def test_the_pipeline_retries_store_and_model_faults_and_never_processes_a_partial_object(
    tmp_path: Path, s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", API_KEY)  # make_processor reads the environment
    paths = [SAMPLES / name for name in FILES]
    host, port = s3_endpoint.removeprefix("http://").split(":")
    with FaultProxy((host, int(port)), match="GET /") as proxy, FakeGemini() as gemini:
        config = adapters_config(tmp_path, proxy.url, bucket, gemini.url)
        with anyio.fail_after(60):
            run_id, count = await submit_files(config, paths, tenant_id="t1")
            proxy.match = f"GET /{bucket}/t1/{run_id}/lichen-field-notes.txt"
            proxy.faults.extend(["truncate", "reset", "503"])
            gemini.fail(":generateContent", "500")
            async with ActorSystem(config) as system:
                summary = await system.wait_run(run_id)
                page = await system.queue.list(run_id=run_id, limit=10)
                out = io.StringIO()
                await export_run(system.queue, run_id, out)
    assert count == 3
    assert (summary.status, summary.done, summary.failed) == ("done", 3, 0)
    assert proxy.applied == ["truncate", "reset", "503"]
    jobs = {Path(job.r2_key).name: job for job in page.items}
    # The body cut short and the 503 each cost the lichen notes an attempt (a reset before
    # any answer may be retried inside aiohttp, unseen); the model's 500 cost some job one.
    assert jobs["lichen-field-notes.txt"].attempts >= 3
    assert sum(job.attempts for job in jobs.values()) >= 3 + 2 + 1
    for name, job in jobs.items():
        size = (SAMPLES / name).stat().st_size
        # Never a partial object: every processed document has its whole size.
        assert job.result["bytes"] == size
        assert job.result["analysis"]["language"] == "en"
        assert len(job.result["embeddings"]["vectors"]) == len(job.result["chunks"]) > 0
    assert summary.metrics["prompt_tokens"] > 0
    assert summary.metrics["output_tokens"] == 3 * 20
    assert summary.metrics["embed_tokens"] > 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3
    assert all(len(line["embeddings"][0]) == 16 for line in lines)
    assert {Path(line["key"]).name for line in lines} == set(FILES)


def test_submit_run_show_export_and_search_from_the_command_line(
    tmp_path: Path,
    s3_endpoint: str,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in {
        "R2_ACCESS_KEY_ID": KEY_ID,
        "R2_SECRET_ACCESS_KEY": SECRET,
        "GOOGLE_API_KEY": API_KEY,
        "R2_BUCKET": bucket,
        "R2_ENDPOINT": s3_endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    with FakeGemini() as gemini:
        config_file = tmp_path / "actors.toml"
        config_file.write_text(
            f'[queue]\npath = "{tmp_path / "q.db"}"\nretry_base_seconds = 0.01\n'
            '[storage]\nkind = "s3"\nregion = "us-east-1"\naddressing_style = "path"\n'
            f'[processor]\nkind = "gemini"\nbase_url = "{gemini.url}"\nmax_chunk_chars = 400\n'
            '[log]\nlevel = "warning"\n'
        )
        base = ["--config", str(config_file)]
        assert main([*base, "submit", *(str(SAMPLES / name) for name in FILES[:2])]) == 0
        run_id = capsys.readouterr().out.strip()
        assert main([*base, "run", "--until-idle"]) == 0
        capsys.readouterr()
        assert main([*base, "runs", "show", run_id]) == 0
        shown = capsys.readouterr().out
        assert main([*base, "runs", "export", run_id]) == 0
        exported = [msgspec.json.decode(line) for line in capsys.readouterr().out.splitlines()]
        assert main([*base, "runs", "search", run_id, "lichens on old stone", "--top", "2"]) == 0
        found = capsys.readouterr().out.splitlines()
    assert "2 done" in shown and "prompt_tokens=" in shown
    assert "lichen-field-notes.txt" in shown and "community-solar.md" in shown
    assert [Path(record["key"]).name for record in exported] == FILES[:2]
    record: dict[str, Any] = exported[0]
    assert record["status"] == "done" and record["analysis"]["topics"] == ["lichens"]
    assert len(record["embeddings"]) == len(record["chunks"])
    assert record["usage"]["output_tokens"] == 20
    assert len(found) == 2 and all(" chunk " in line for line in found)
