"""Fixtures for the adapters' tests: a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("aioboto3")
moto_server = pytest.importorskip("moto.server")

# moto refuses CreateBucket in region "auto" (R2's); any fixed region does.
REGION = "us-east-1"
KEY_ID, SECRET = "test-key-id", "test-secret"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_sync(s3_endpoint: str) -> Any:
    """A plain boto3 client, to arrange and inspect the bucket from outside the store."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture
def bucket(s3_sync: Any) -> str:
    name = f"docs-{uuid.uuid4().hex[:12]}"
    s3_sync.create_bucket(Bucket=name)
    return name
