"""A worker process for the controls tests: ``python control_child.py BACKEND TARGET LOG HOLD``.

Pulls up to 4 jobs at a time from the SQLite file or the PostgreSQL schema TARGET, holds each
pulled batch HOLD seconds (renewing nothing: leases last 60 s), acks it done, and loops until
killed. Logs ``L job_id tenant_id leased_at`` per lease (``leased_at``: the lease's own time,
`Job.updated_at`) and ``A job_id`` per ack, each line flushed at once; ``ready`` once open.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import TextIO

import anyio

from actors.queue import Ack, Queue, SQLiteQueue


@contextlib.asynccontextmanager
async def opened(backend: str, target: str) -> AsyncIterator[Queue]:
    if backend == "sqlite":
        async with SQLiteQueue.open(target) as queue:
            yield queue
    else:
        from actors.queue.postgres import PostgresQueue

        async with PostgresQueue.open(os.environ["ACTORS_TEST_PG_DSN"], schema=target) as pg:
            yield pg


async def work(backend: str, target: str, log: TextIO, hold: float) -> None:
    async with opened(backend, target) as queue:
        log.write("ready\n")
        while True:
            jobs = await queue.pull(max=4, visibility_seconds=60, worker_id=str(os.getpid()))
            if not jobs:
                await anyio.sleep(0.02)
                continue
            for job in jobs:
                log.write(f"L {job.id} {job.tenant_id} {job.updated_at!r}\n")
            await anyio.sleep(hold)
            acks = [Ack(job_id=j.id, lease_token=j.lease_token or "") for j in jobs]
            for result in await queue.ack_many(acks):
                assert result.ok, result
                log.write(f"A {result.job_id}\n")


def main() -> None:
    backend, target, log_path, hold = sys.argv[1:5]
    with open(log_path, "a", buffering=1) as log:
        anyio.run(work, backend, target, log, float(hold))


if __name__ == "__main__":
    main()
