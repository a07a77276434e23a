"""A child process for the process tests: ``python queue_child.py MODE DB LOG BACKEND``.

``work``: pull and ack until nothing is pending or leased; forget ~5% of its leases (as a crashed
worker would) so they expire and come back. Logs ``L id token leased_at expires_at`` per lease and
``A id ok reason`` per ack. ``crash``: enqueue, pull and ack in a loop until killed; logs ``E id``
after an enqueue returned and ``A id`` after an ack returned. Every line is flushed at once, so
a line in the log means the call had returned before the process died.
"""

from __future__ import annotations

import os
import random
import sys

import anyio

from actors.queue import Ack, SQLiteQueue


async def work(db: str, log: Log) -> None:
    rng = random.Random(os.getpid())
    async with SQLiteQueue.open(db) as queue:
        while True:
            jobs = await queue.pull(max=5, visibility_seconds=1.0, worker_id=str(os.getpid()))
            if not jobs:
                stats = await queue.stats()
                if stats.pending + stats.leased == 0:
                    return
                await anyio.sleep(0.05)
                continue
            for job in jobs:
                log.line("L", job.id, job.lease_token, job.updated_at, job.lease_expires_at)
            for job in jobs:
                if rng.random() < 0.05:
                    continue  # forgotten: the lease expires and another worker gets the job
                (result,) = await queue.ack_many(
                    [Ack(job_id=job.id, lease_token=job.lease_token or "")]
                )
                log.line("A", job.id, result.ok, result.reason)


async def crash(db: str, log: Log) -> None:
    generation = os.getpid()
    async with SQLiteQueue.open(db) as queue:
        log.line("ready")
        for i in range(1_000_000):
            job = await queue.enqueue("run", "tenant", f"k{i}", idempotency_key=f"{generation}-{i}")
            log.line("E", job.id)
            for leased in await queue.pull(max=3, visibility_seconds=600):
                await queue.ack(leased.id, leased.lease_token or "", result={"i": i})
                log.line("A", leased.id)


class Log:
    def __init__(self, path: str) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115  # lives as long as the process

    def line(self, *fields: object) -> None:
        self.file.write(" ".join(map(str, fields)) + "\n")


def main() -> None:
    mode, db, log_path, backend = sys.argv[1:5]
    log = Log(log_path)
    anyio.run({"work": work, "crash": crash}[mode], db, log, backend=backend)


if __name__ == "__main__":
    main()
