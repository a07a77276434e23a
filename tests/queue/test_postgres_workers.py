"""Many `python -m actors run` processes share one PostgreSQL queue; some are SIGKILLed."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import anyio
import pytest
from pg_helpers import PG_DSN, pg_admin, pg_runs, pg_script

from actors.queue import NewJob
from actors.queue.postgres._queue import PostgresQueue

pytestmark = pytest.mark.slow

JOBS = 2000
WORKERS = 4
KILLED = 2

# Test-only audit, in the test's own schema: every lease with its worker, start, (renewed)
# expiry and end (ack, release or reap), kept by a row trigger on the jobs table. Starts and
# ends are the server's clock when the row changes, not the `now` a client read before its
# statement ran: a claim whose client read the clock just before another process's reap or
# release committed would otherwise seem to start a few milliseconds before that lease ended.
AUDIT = """
CREATE TABLE {s}.lease_log (
    job_id bigint, token text, worker_id text,
    started double precision, expires double precision, ended double precision,
    PRIMARY KEY (job_id, token)
);
CREATE FUNCTION {s}.log_leases() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'leased' AND (OLD.status <> 'leased'
                                  OR OLD.lease_token IS DISTINCT FROM NEW.lease_token) THEN
        INSERT INTO {s}.lease_log VALUES (NEW.id, NEW.lease_token, NEW.worker_id,
                                          extract(epoch FROM clock_timestamp()),
                                          NEW.lease_expires_at, NULL);
    ELSIF NEW.status = 'leased' THEN
        UPDATE {s}.lease_log SET expires = NEW.lease_expires_at
        WHERE job_id = NEW.id AND token = NEW.lease_token;
    ELSIF OLD.status = 'leased' THEN
        UPDATE {s}.lease_log SET ended = extract(epoch FROM clock_timestamp())
        WHERE job_id = OLD.id AND token = OLD.lease_token;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER log_leases AFTER UPDATE ON {s}.jobs
FOR EACH ROW EXECUTE FUNCTION {s}.log_leases();
"""

CONFIG = """
[runtime]
backend = "{runtime}"

[queue]
backend = "postgres"
dsn = "{dsn}?search_path={schema}"
visibility_seconds = 2
batch_size = 16
poll_interval_seconds = 0.1
reap_interval_seconds = 0.3

[pipeline]
concurrency = 32
shutdown_grace_seconds = 2

[storage]
kind = "local"
root = "{root}"

[log]
level = "warning"
format = "json"
"""


def test_worker_processes_finish_every_job_once_while_some_are_killed(
    tmp_path: Path, pg_schema: str
) -> None:
    root = tmp_path / "objects"
    sizes = {}
    for i in range(JOBS):
        key = f"t/r/doc-{i}.txt"
        data = f"Document {i}. " * (1 + i % 9) + "\n"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(data)
        sizes[key] = len(data.encode())

    async def fill() -> None:
        async with PostgresQueue.open(PG_DSN, schema=pg_schema) as queue:
            await queue.enqueue_many(
                [NewJob(run_id="r", tenant_id="t", r2_key=key) for key in sizes]
            )

    anyio.run(fill)
    pg_script(AUDIT.format(s=pg_schema))

    workers = []
    for n in range(WORKERS):
        config = tmp_path / f"worker-{n}.toml"
        runtime = ("asyncio", "trio")[n % 2]
        config.write_text(CONFIG.format(runtime=runtime, dsn=PG_DSN, schema=pg_schema, root=root))
        log = (tmp_path / f"worker-{n}.log").open("w")
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "actors", "--config", str(config), "run", "--until-idle"],
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    # SIGKILL two workers (one per runtime) once the run is well under way and while each of
    # them holds leases.
    killed = workers[:KILLED]
    deadline = time.monotonic() + 60
    while True:
        (row,) = pg_admin(
            f"""
            SELECT count(*) FILTER (WHERE status = 'done'),
                   array_agg(DISTINCT split_part(worker_id, ':', 2))
                       FILTER (WHERE status = 'leased')
            FROM {pg_schema}.jobs
            """
        )
        holding = set(row[1] or ())
        if row[0] >= 300 and all(str(w.pid) in holding for w in killed):
            break
        assert time.monotonic() < deadline, "the workers did not get going"
        assert all(w.poll() is None for w in workers), "a worker exited early"
        time.sleep(0.02)
    for worker in killed:
        os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.time()
    for worker in workers[KILLED:]:
        assert worker.wait(timeout=120) == 0, (tmp_path / "worker-2.log").read_text()[-2000:]
    for worker in killed:
        worker.wait(timeout=10)

    # Every job ended done, exactly once: the acks add each object's size to the run's metrics
    # in their own transaction, so a second accepted ack of any job would show in the total.
    statuses = pg_admin(f"SELECT status, count(*) FROM {pg_schema}.jobs GROUP BY status")
    assert [tuple(r) for r in statuses] == [("done", JOBS)]
    (run,) = pg_runs(pg_schema)
    assert json.loads(run["metrics"])["bytes"] == sum(sizes.values())
    assert (run["done"], run["total"]) == (JOBS, JOBS)
    assert run["finished_at"] is not None

    leases = defaultdict(list)
    for row in pg_admin(f"SELECT * FROM {pg_schema}.lease_log"):
        leases[row["job_id"]].append(row)
    assert sorted(leases) == list(range(1, JOBS + 1))
    # No job was ever held by two live leases: each lease starts after the one before it
    # ended (acked, released or reaped) or ran out.
    for held in leases.values():
        held.sort(key=lambda r: r["started"])
        for before, after in itertools.pairwise(held):
            assert after["started"] >= min(before["expires"], before["ended"] or float("inf"))
    # The survivors took over the leases the dead workers held when they died, once those
    # leases expired. (A lease a killed worker held earlier may have run out while it was still
    # alive, on a loaded machine, and been taken again by that same worker: not an orphan.)
    dead = {f":{w.pid}:" for w in killed}
    orphaned = [
        (held[i], held[i + 1])
        for held in leases.values()
        for i in range(len(held) - 1)
        if any(d in (held[i]["worker_id"] or "") for d in dead)
        and held[i]["started"] < killed_at
        and (held[i]["ended"] is None or held[i]["ended"] >= killed_at)
        and held[i + 1]["started"] >= killed_at
    ]
    assert orphaned, "the killed workers held no lease when they died"
    for theirs, next_lease in orphaned:
        assert next_lease["started"] >= theirs["expires"]
        assert not any(d in (next_lease["worker_id"] or "") for d in dead)


def test_worker_processes_sharing_a_postgres_queue_do_each_maintenance_round_once(
    tmp_path: Path, pg_schema: str
) -> None:
    # Three workers (both runtimes) reaping every 0.3 s: each round is claimed in the schema's
    # `maintenance` table, and the round numbers they log never repeat.
    async def create() -> None:
        async with PostgresQueue.open(PG_DSN, schema=pg_schema):
            pass

    anyio.run(create)
    workers, logs = [], []
    for n in range(3):
        config = tmp_path / f"worker-{n}.toml"
        text = CONFIG.format(
            runtime=("asyncio", "trio")[n % 2], dsn=PG_DSN, schema=pg_schema, root=tmp_path
        )
        config.write_text(text.replace('level = "warning"', 'level = "debug"'))
        logs.append(tmp_path / f"worker-{n}.log")
        with logs[-1].open("w") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "actors", "--config", str(config), "run"],
                    cwd=tmp_path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def reap_rounds() -> int:
        try:
            found = pg_admin(f"SELECT rounds FROM {pg_schema}.maintenance WHERE task = 'reap'")
        except Exception:  # the schema is not migrated yet
            return 0
        return int(found[0]["rounds"]) if found else 0

    try:
        deadline = time.monotonic() + 60
        while reap_rounds() < 15:
            assert time.monotonic() < deadline, f"{reap_rounds()} reap rounds in 60 s"
            assert all(w.poll() is None for w in workers), [p.read_text() for p in logs]
            time.sleep(0.1)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=30) for worker in workers]
    assert codes == [0, 0, 0]
    claimed = [
        (event["task"], event["round"])
        for path in logs
        for event in (
            json.loads(line)
            for line in path.read_text().splitlines()
            if '"maintenance.round"' in line
        )
    ]
    reaps = [n for task, n in claimed if task == "reap"]
    assert len(reaps) == len(set(reaps)), sorted(reaps)  # no round done twice
    # Every claimed round was done and logged, but for one cut short per worker by SIGTERM.
    assert reap_rounds() - 3 <= len(reaps) <= reap_rounds()
    assert claimed.count(("purge", 1)) == 1
