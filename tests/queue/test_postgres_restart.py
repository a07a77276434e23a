"""A PostgreSQL restart mid-run loses nothing (a private server; the shared one stays up)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import structlog

from actors.queue import Ack, NewJob
from actors.queue.postgres._queue import PostgresQueue

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@pytest.fixture
def private_server() -> Iterator[tuple[str, list[str]]]:
    """A throwaway cluster on a free port: its DSN and the command that restarts it."""
    if os.geteuid() != 0 or not BINDIRS or not shutil.which("runuser"):
        pytest.skip("needs root, runuser and PostgreSQL's server binaries to run a private server")
    bindir = BINDIRS[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Not under pytest's tmp_path: the postgres user cannot enter root's private directory.
    home = Path(tempfile.mkdtemp(prefix="actors-pg-"))
    shutil.chown(home, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, f"{bindir}/initdb", "-D", str(home / "data"), "-A", "trust", "-U",
         "postgres", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*as_postgres, f"{bindir}/pg_ctl", "-D", str(home / "data"), "-w", "-l",
           str(home / "log"), "-o", options]  # fmt: skip
    subprocess.run([*ctl, "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", [*ctl, "-m", "fast", "restart"]
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


async def test_a_server_restart_mid_run_loses_nothing(
    private_server: tuple[str, list[str]],
) -> None:
    dsn, restart = private_server
    async with (
        PostgresQueue.open(dsn, schema="q", pool_size=3) as queue,
        PostgresQueue.open(dsn, schema="q") as other,
    ):
        await queue.enqueue_many(
            [NewJob(run_id="r", tenant_id="t", r2_key=str(i)) for i in range(400)]
        )
        acked = 0

        async def work() -> None:
            nonlocal acked
            while (await queue.stats()).done < 400:
                # A pull whose reply died with the server leaves leases that expire in 2 s.
                batch = await queue.pull(max=10, visibility_seconds=2)
                if not batch:
                    await anyio.sleep(0.1)
                    continue
                results = await queue.ack_many(
                    [Ack(job_id=j.id, lease_token=j.lease_token or "", run_metrics={"n": 1})
                     for j in batch]
                )  # fmt: skip
                acked += sum(r.ok for r in results)

        async def restart_once() -> None:
            while acked < 100:
                await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(
                lambda: subprocess.run(restart, check=True, capture_output=True)
            )

        with structlog.testing.capture_logs() as logs, anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(restart_once)
                for _ in range(3):
                    tg.start_soon(work)
        assert any(e["event"] == "queue.pg_retry" for e in logs)  # calls did cross the restart
        summary = await queue.run_summary("r")
        assert (summary.done, summary.total, summary.status) == (400, 400, "done")
        assert summary.metrics == {"n": 400.0}  # every job's ack counted once

        # The listening connection came back too: another process's enqueue wakes us.
        woken = anyio.Event()
        queue.on_enqueue(woken.set)
        with anyio.fail_after(10):
            while not woken.is_set():
                await other.enqueue("r2", "t", "after")
                with anyio.move_on_after(0.5):
                    await woken.wait()
