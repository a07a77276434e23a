"""Another process that enqueues one job: ``python long_poll_producer.py http URL TOKEN`` (through
the server) or ``python long_poll_producer.py postgres DSN SCHEMA`` (straight into the database,
which NOTIFYs). Prints ``before after id``: `time.monotonic()` (one clock for every process of
the machine) just before the enqueue and once it returned, and the job's id."""

from __future__ import annotations

import sys
import time

import anyio
import httpx


async def main(kind: str, where: str, detail: str) -> None:
    body = {"runId": "late", "tenantId": "t1", "r2Key": "t1/late/a.txt"}
    if kind == "http":
        async with httpx.AsyncClient(base_url=where, timeout=30) as client:
            await client.get("/healthz")  # connected before the clock starts
            before = time.monotonic()
            response = await client.post(
                "/jobs/enqueue", json=body, headers={"authorization": f"Bearer {detail}"}
            )
            after = time.monotonic()
            response.raise_for_status()
            job_id = response.json()["jobId"]
    else:
        from actors.queue.postgres import PostgresQueue

        async with PostgresQueue.open(where, schema=detail) as queue:
            before = time.monotonic()
            job = await queue.enqueue(body["runId"], body["tenantId"], body["r2Key"])
            after = time.monotonic()
            job_id = job.id
    print(before, after, job_id, flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
