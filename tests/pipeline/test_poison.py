"""No document can stop a worker: the poison corpus through the real `python -m actors run`.

Each run mixes poison with good documents and polls ``/healthz`` throughout; every good job
must end done, every poison job as its row of the tables below says, and the process must exit
0. The time limits are small (``job_timeout_seconds = 2``) so the module stays short.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import anyio
import pytest

from actors.config import Config, QueueConfig, StorageConfig
from actors.queue import NewJob
from actors.queue.factory import open_queue
from actors.service import SHUTDOWN_MARGIN_SECONDS
from actors.storage import LocalObjectStore

pytestmark = pytest.mark.slow

POISON = Path(__file__).resolve().parent.parent / "poison"
LIMIT = 2.0  # [pipeline].job_timeout_seconds in these runs
ATTEMPTS = 2
GOOD = [
    ("good-1.txt", b"Harbour traffic rose in spring. Ferries ran late twice.\n"),
    ("good-2.md", b"# Notes\n\nThe pier needs *repair* soon. Two cranes arrived.\n"),
    ("good-3.json", b'{"title": "ledger", "items": [{"name": "rope", "count": 3}]}\n'),
    ("good-4.html", b"<html><body><h1>Tide</h1><p>High water at noon.</p></body></html>\n"),
    # Over the in-process threshold: processed in a worker process.
    ("good-5.txt", b"A longer report on the harbour and its ferries. " * 200 + b"\n"),
]
TIMEOUT = r"^timeout: processing took longer than the job's time limit of 2s"
# The good documents' own time limit (a job's `timeout_seconds`): they must end done however
# starved the machine is (beside the poisons, a fresh worker process on a loaded CPU takes
# seconds for a job that needs milliseconds); the poisons keep LIMIT, what the tests assert.
GOOD_LIMIT = 120.0

# The offline processor ([processor] kind = "local") on the committed corpus (make_corpus.py).
# Each row: the statuses the job may end in, and what its error must say if it fails.
LOCAL_EXPECTED: dict[str, tuple[set[str], str]] = {
    # 60,000 tabs on one line: minutes for a quadratic regex; the Markdown extractor is linear.
    "long-tab-line.md": ({"done"}, ""),
    # 5,000 levels of arrays: the JSON decoder reads about a thousand, then fails it for good.
    "deep.json": ({"failed"}, r"deeper than the decoder reads"),
    # 5,000 nested elements: past the HTML parser's 2,048 levels, failed for good.
    "deep.html": ({"failed"}, r"nested more than 2048 levels"),
    # 7 KB that inflate to 2.8 GB of content: stopped by the PDF library's bounds, or else by
    # the time limit or the worker's memory cap, whichever comes first.
    "bomb.pdf": ({"failed"}, r"(?i)^timeout|memory|bound|bomb"),
}
# A `python` processor (tests/poison/processors.py) in the worker processes (isolate = true);
# an async hang there is the busy loop's case: the worker is killed either way.
ISOLATED_EXPECTED: dict[str, tuple[set[str], str]] = {
    "allocate.txt": ({"failed"}, r"more memory than its worker process may use \(256 MiB"),
    "hang-thread.txt": ({"failed"}, TIMEOUT),
    "block-loop-sleep.txt": ({"failed"}, TIMEOUT),
    "block-loop-busy.txt": ({"failed"}, TIMEOUT),
}
# The same processor in this process: what a time limit can stop without a process boundary.
IN_PROCESS_EXPECTED: dict[str, tuple[set[str], str]] = {
    "hang-async.txt": ({"failed"}, TIMEOUT),
    "hang-thread.txt": ({"failed"}, TIMEOUT),
}
POISON_LINES = {
    "allocate.txt": b"ALLOCATE\n",
    "hang-async.txt": b"HANG-ASYNC\n",
    "hang-thread.txt": b"HANG-THREAD\n",
    "block-loop-sleep.txt": b"BLOCK-LOOP-SLEEP\n",
    "block-loop-busy.txt": b"BLOCK-LOOP-BUSY\n",
}


def write_config(tmp_path: Path, backend: str, extra: str = "", grace: float = 2.0) -> Path:
    path = tmp_path / "actors.toml"
    path.write_text(
        f"""
[runtime]
backend = "{backend}"
[queue]
path = "{tmp_path / "q.db"}"
visibility_seconds = 4
poll_interval_seconds = 0.1
reap_interval_seconds = 0.5
retry_base_seconds = 0.05
retry_cap_seconds = 0.1
max_attempts = {ATTEMPTS}
[pipeline]
job_timeout_seconds = {LIMIT}
shutdown_grace_seconds = {grace}
[storage]
root = "{tmp_path / "objects"}"
[http]
enabled = true
port = 0
[log]
level = "info"
format = "json"
{extra}
"""
    )
    return path


def enqueue(tmp_path: Path, files: dict[str, bytes]) -> None:
    config = Config(
        queue=QueueConfig(path=str(tmp_path / "q.db"), max_attempts=ATTEMPTS),
        storage=StorageConfig(root=str(tmp_path / "objects")),
    )

    async def main() -> None:
        store = LocalObjectStore(config.storage.root)
        for name, data in files.items():
            await store.put(f"t/run/{name}", data)
        async with open_queue(config) as queue:
            await queue.enqueue_many(
                [
                    NewJob(
                        run_id="run",
                        tenant_id="t",
                        r2_key=f"t/run/{name}",
                        timeout_seconds=GOOD_LIMIT if name in dict(GOOD) else None,
                    )
                    for name in files
                ]
            )

    anyio.run(main)


class HealthPoller:
    """Polls ``/healthz`` every 0.1 s with a three-second timeout while the process runs.

    A document worked on the event loop's thread would hold it for the whole of its work (the
    poison runs for seconds, up to its limit, or for ever); three seconds leaves a loaded machine
    (CI on two cores, a dozen processes runnable) its scheduling delays, which reached a second.
    """

    def __init__(self, log: Path, process: subprocess.Popen[bytes]) -> None:
        self.log, self.process = log, process
        self.answers = 0
        self.failures: list[str] = []
        # Connections reset: the server closing as the process ends, unless it answers again.
        self._resets: list[str] = []
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _port(self) -> int | None:
        for line in self.log.read_text(errors="replace").splitlines():
            if '"http.listening"' in line:
                return int(json.loads(line)["port"])
        return None

    def _poll(self) -> None:
        port = None
        while self.process.poll() is None:
            time.sleep(0.1)
            port = port or self._port()
            if port is None:
                continue
            started = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3.0) as r:
                    assert r.status == 200
                self.answers += 1
                self.failures += self._resets  # the server was not stopping: they count
                self._resets.clear()
            except Exception as exc:
                # A refused connection: the server has stopped (the process is ending); so has
                # one that resets the connection and never answers again. A loop that does not
                # answer still has its socket listening: the request times out.
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ConnectionRefusedError):
                    continue
                elapsed = time.monotonic() - started
                line = f"{type(exc).__name__} after {elapsed:.2f}s: {exc}"
                reset = isinstance(reason, ConnectionResetError)
                (self._resets if reset else self.failures).append(line)

    def join(self) -> None:
        self._thread.join(timeout=5)


def run_until_idle(tmp_path: Path, config: Path, timeout: float) -> tuple[int, str, HealthPoller]:
    log = tmp_path / "err.log"
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "actors", "--config", str(config), "run", "--until-idle"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(),
        )
    poller = HealthPoller(log, process)
    try:
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        poller.join()
    return code, log.read_text(errors="replace"), poller


def _env() -> dict[str, str]:
    import os

    # The poison processors' module, and this tree (already on PYTHONPATH when run as told).
    path = [str(POISON), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def outcomes(db: Path) -> dict[str, tuple[str, int, str | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT r2_key, status, attempts, last_error FROM jobs").fetchall()
    return {
        key.rsplit("/", 1)[1]: (status, attempts, error) for key, status, attempts, error in rows
    }


def check(
    tmp_path: Path, config: Path, expected: dict[str, tuple[set[str], str]], files: dict[str, bytes]
) -> None:
    enqueue(tmp_path, {**files, **dict(GOOD)})
    # Worst case: every poison job spends all its attempts at the limit, one after another.
    code, log, poller = run_until_idle(tmp_path, config, timeout=60 + len(files) * ATTEMPTS * LIMIT)
    ended = outcomes(tmp_path / "q.db")
    # 2: the run has failed jobs (`run --until-idle`'s code for that); never a crash (70).
    failed = any(status == "failed" for status, _, _ in ended.values())
    assert code == (2 if failed else 0), log[-3000:]
    assert poller.answers > 0, "the test never reached /healthz"
    assert poller.failures == [], f"/healthz stopped answering: {poller.failures}"
    for name, _ in GOOD:
        assert ended[name][0] == "done", (name, ended[name])
    for name, (statuses, reason) in expected.items():
        status, attempts, error = ended[name]
        assert status in statuses, (name, ended[name])
        if status == "failed":
            assert error is not None and re.search(reason, error), (name, error)
            if error.startswith("timeout"):
                assert attempts == ATTEMPTS, (name, ended[name])  # transient: retried


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_offline_processor_survives_the_poison_corpus(tmp_path: Path, backend: str) -> None:
    files = {name: (POISON / name).read_bytes() for name in LOCAL_EXPECTED}
    check(tmp_path, write_config(tmp_path, backend), LOCAL_EXPECTED, files)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_isolated_python_processor_is_killed_at_its_limits(tmp_path: Path, backend: str) -> None:
    config = write_config(
        tmp_path,
        backend,
        '[processor]\nkind = "python"\nfactory = "processors:poison"\nisolate = true\n'
        "worker_memory_mib = 256\n",
    )
    files = {name: POISON_LINES[name] for name in ISOLATED_EXPECTED}
    check(tmp_path, config, ISOLATED_EXPECTED, files)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_in_process_python_processor_that_hangs_is_failed_at_its_limit(
    tmp_path: Path, backend: str
) -> None:
    config = write_config(
        tmp_path, backend, '[processor]\nkind = "python"\nfactory = "processors:poison"\n'
    )
    files = {name: POISON_LINES[name] for name in IN_PROCESS_EXPECTED}
    check(tmp_path, config, IN_PROCESS_EXPECTED, files)


def sigterm_while(tmp_path: Path, backend: str, poison: bytes) -> tuple[int, float, str]:
    """Start a run on one poison job, SIGTERM it once the poison runs; (code, seconds, log)."""
    grace = 1.0
    config = write_config(
        tmp_path,
        backend,
        '[processor]\nkind = "python"\nfactory = "processors:poison"\n',
        grace=grace,
    )
    enqueue(tmp_path, {"poison.txt": poison})
    # A long limit: only the signal can end this run.
    text = config.read_text().replace(f"job_timeout_seconds = {LIMIT}", "job_timeout_seconds = 600")
    config.write_text(text)
    log = tmp_path / "err.log"
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "actors", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(),
        )
    try:
        deadline = time.monotonic() + 30
        while '"poison.started"' not in log.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(0.3)  # the poison holds its thread now
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=grace + SHUTDOWN_MARGIN_SECONDS + 10)
        return code, time.monotonic() - sent, log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_with_a_processor_hung_in_a_thread_exits_within_the_grace_and_margin(
    tmp_path: Path, backend: str
) -> None:
    code, seconds, log = sigterm_while(tmp_path, backend, b"HANG-THREAD\n")
    # The drain gave the job back and only the abandoned thread was left: a clean exit.
    assert code == 0, log[-3000:]
    assert seconds < 1.0 + SHUTDOWN_MARGIN_SECONDS + 1.0, seconds  # grace + margin + start-up
    assert outcomes(tmp_path / "q.db")["poison.txt"][:2] == ("pending", 0)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_with_a_processor_blocking_the_loop_exits_by_force_within_the_grace_and_margin(
    tmp_path: Path, backend: str
) -> None:
    code, seconds, log = sigterm_while(tmp_path, backend, b"BLOCK-LOOP-SLEEP\n")
    # Nothing on the loop could run: no drain, so the exit is forced and says so.
    assert code == 1, log[-3000:]
    assert seconds < 1.0 + SHUTDOWN_MARGIN_SECONDS + 1.0, seconds
    assert '"system.exit_forced"' in log
