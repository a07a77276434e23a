"""The process's banner: what it runs, in one line, with no secret in it."""

from __future__ import annotations

import msgspec

from actors.config import Config, HttpConfig, ProcessorConfig, QueueConfig
from actors.service import banner


def test_the_banner_names_queue_store_processor_concurrency_and_http() -> None:
    fields = banner(Config(), "w1")
    assert fields == {
        "queue": "sqlite data/actors.db",
        "store": "local data/objects",
        "processor": "local",
        "concurrency": "128 jobs, 4 fetchers, 4 processors",
        "worker_id": "w1",
    }
    config = msgspec.structs.replace(
        Config(),
        queue=QueueConfig(backend="postgres", dsn="postgresql://app:s3cret@db.example:5432/jobs"),
        processor=ProcessorConfig(kind="python", factory="wordcount:make", isolate=True),
        http=HttpConfig(enabled=True, port=9000),
    )
    fields = banner(config, "w1")
    assert fields["queue"] == "postgres postgresql://app:***@db.example:5432/jobs"
    assert "s3cret" not in str(fields)
    assert fields["processor"] == "python wordcount:make (isolated)"
    assert fields["http"] == "http://127.0.0.1:9000"
