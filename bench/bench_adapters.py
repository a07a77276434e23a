"""Adapters: S3 get latency on asyncio (direct) and trio (helper loop), and result sizes.

Run: ``.venv/bin/python bench/bench_adapters.py`` (needs the test extra: moto, aioboto3).
Starts moto's server on loopback; prints Markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time

import anyio
import boto3
import msgspec
from moto.server import ThreadedMotoServer

from actors.processors import encode_vector
from actors.storage import S3ObjectStore

GETS = 300
CONCURRENT = 8


async def measure(endpoint: str, size: int) -> tuple[float, float, float]:
    store = S3ObjectStore(
        bucket="bench-bucket",
        endpoint=endpoint,
        access_key_id="a",
        secret_access_key="b",
        region="us-east-1",
        addressing_style="path",
    )
    try:
        await store.get(f"obj-{size}", max_bytes=size)  # the client's creation is not measured
        latencies = []
        for _ in range(GETS):
            start = time.perf_counter()
            await store.get(f"obj-{size}", max_bytes=size)
            latencies.append(time.perf_counter() - start)
        start = time.perf_counter()

        async def worker() -> None:
            for _ in range(GETS // CONCURRENT):
                await store.get(f"obj-{size}", max_bytes=size)

        async with anyio.create_task_group() as tg:
            for _ in range(CONCURRENT):
                tg.start_soon(worker)
        rate = (GETS // CONCURRENT * CONCURRENT) / (time.perf_counter() - start)
    finally:
        await store.aclose()
    latencies.sort()
    return statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000, rate


def main() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )
    s3.create_bucket(Bucket="bench-bucket")
    print("| object | backend | get p50 ms | get p99 ms | gets/s, 8 tasks |")
    print("|---|---|---:|---:|---:|")
    for size in (10_000, 1_000_000):
        s3.put_object(Bucket="bench-bucket", Key=f"obj-{size}", Body=os.urandom(size))
        for backend in ("asyncio", "trio"):
            p50, p99, rate = anyio.run(measure, endpoint, size, backend=backend)
            print(f"| {size // 1000} KB | {backend} | {p50:.2f} | {p99:.2f} | {rate:,.0f} |")
    server.stop()

    rng = random.Random(1)
    print("\n| dims | JSON floats, bytes/vector | float16 base64, bytes/vector |")
    print("|---:|---:|---:|")
    for dims in (768, 3072):
        vector = [rng.uniform(-0.1, 0.1) for _ in range(dims)]
        as_json = len(json.dumps(vector))
        as_f16 = len(msgspec.json.encode(encode_vector(vector)))
        print(f"| {dims} | {as_json:,} | {as_f16:,} |")


if __name__ == "__main__":
    main()
