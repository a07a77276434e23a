"""What a person sees of ``run --until-idle``, ``submit`` and ``runs watch`` through the real
CLI: the lines, the exit codes, the progress display and when the command stops."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.cli import _progress

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
ROOT = Path(__file__).resolve().parents[2]

# First line FAIL: refused (a DocumentError, never retried). FLAKY: fails its first attempt.
# SLOW: takes a second (so that a run lasts long enough to show its progress).
PROCESSOR = """
import anyio

from actors.errors import DocumentError
from actors.processors import process_locally

_failed_once = set()


class UxProcessor:
    def __init__(self, settings):
        self.settings = settings

    async def process(self, job, data, content_type):
        first = data.split(b"\\n", 1)[0]
        if first == b"FAIL":
            raise DocumentError(f"refused on purpose: job {job.id}")
        if first == b"FLAKY" and job.id not in _failed_once:
            _failed_once.add(job.id)
            raise RuntimeError("flaky on its first attempt")
        if first == b"SLOW":
            await anyio.sleep(1.0)
        return process_locally(self.settings, data, job.key, content_type)

    async def aclose(self):
        pass


def make(settings):
    return UxProcessor(settings)
"""

CONFIG = """
[queue]
retry_base_seconds = 0.2
retry_cap_seconds = 0.4
poll_interval_seconds = 0.1
[processor]
kind = "python"
factory = "uxproc:make"
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    path = [str(tmp_path), str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACTORS_")}
    return {**base, "PYTHONPATH": ":".join(path), **extra}


def actors(
    tmp_path: Path, *argv: str, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors", *argv],
        cwd=tmp_path,
        env=env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def with_processor(tmp_path: Path) -> Path:
    (tmp_path / "uxproc.py").write_text(PROCESSOR)
    config = tmp_path / "actors.toml"
    config.write_text(CONFIG)
    return config


def write_docs(tmp_path: Path, **docs: str) -> list[str]:
    (tmp_path / "in").mkdir(exist_ok=True)
    for name, text in docs.items():
        (tmp_path / "in" / name).write_text(text)
    return [f"in/{name}" for name in docs]


def lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return (done.stdout + done.stderr).splitlines()


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_the_readmes_first_command_fits_on_one_screen(tmp_path: Path) -> None:
    shutil.copytree(SAMPLES, tmp_path / "samples")
    files = sorted(f"samples/{p.name}" for p in SAMPLES.iterdir())
    submitted = actors(tmp_path, "submit", *files)
    assert submitted.returncode == 0, submitted.stderr
    done = actors(tmp_path, "run", "--until-idle")
    assert done.returncode == 0, done.stderr
    shown = lines(submitted) + lines(done)
    assert len(shown) <= 12, "\n".join(shown)
    logged = events(done.stderr)
    assert [e["event"] for e in logged] == ["system.started", "system.stopped"], done.stderr
    banner = logged[0]
    assert banner["queue"] == "sqlite data/actors.db"
    assert banner["store"] == "local data/objects"
    assert banner["processor"] == "local"
    assert banner["concurrency"] == "128 jobs, 4 fetchers, 4 processors"
    # The summary is last, after the tree stopped.
    out = done.stdout.splitlines()
    assert out[0].endswith(": done") and out[1].startswith("  jobs: 7 total, 7 done, 0 failed")


def test_a_failed_job_exits_2_and_is_one_warning_with_its_id_and_error(tmp_path: Path) -> None:
    config = str(with_processor(tmp_path))
    files = write_docs(tmp_path, **{"bad.txt": "FAIL\n", "good.txt": "fine words here\n"})
    submitted = actors(tmp_path, "submit", "--run-id", "r1", *files, ACTORS_CONFIG=config)
    assert submitted.returncode == 0, submitted.stderr
    done = actors(tmp_path, "run", "--until-idle", ACTORS_CONFIG=config)
    assert done.returncode == 2, done.stderr
    failures = [e for e in events(done.stderr) if e["event"] == "job.failed"]
    assert len(failures) == 1, done.stderr
    assert failures[0]["level"] == "warning"
    assert failures[0]["job_id"] == 1
    assert "refused on purpose: job 1" in str(failures[0]["error"])
    assert "job.done" not in done.stderr
    assert done.stdout.splitlines()[:2] == [
        "run r1 (tenant default): failed",
        "  jobs: 2 total, 1 done, 1 failed, 0 pending, 0 leased",
    ]
    # `runs watch` agrees: a run with failed jobs is exit code 2 too.
    watched = actors(tmp_path, "runs", "watch", "r1", ACTORS_CONFIG=config)
    assert watched.returncode == 2, watched.stderr
    # Success is 0.
    files = write_docs(tmp_path, **{"ok.txt": "more fine words\n"})
    actors(tmp_path, "submit", "--run-id", "r2", *files, ACTORS_CONFIG=config)
    assert actors(tmp_path, "run", "--until-idle", ACTORS_CONFIG=config).returncode == 0
    assert actors(tmp_path, "runs", "watch", "r2", ACTORS_CONFIG=config).returncode == 0


def test_a_delayed_job_is_reported_as_scheduled_and_not_waited_for(tmp_path: Path) -> None:
    write_docs(tmp_path, **{"later.txt": "an hour from now\n", "now.txt": "right away\n"})
    objects = tmp_path / "data" / "objects" / "t" / "r"
    objects.mkdir(parents=True)
    for name in ("later.txt", "now.txt"):
        shutil.copy(tmp_path / "in" / name, objects / name)
    base = ("enqueue", "--run-id", "r", "--tenant-id", "t")
    assert actors(tmp_path, *base, "--r2-key", "t/r/later.txt", "--delay", "3600").returncode == 0
    assert actors(tmp_path, *base, "--r2-key", "t/r/now.txt").returncode == 0
    started = time.monotonic()
    done = actors(tmp_path, "run", "--until-idle", timeout=30)
    assert time.monotonic() - started < 20, "it waited for the delayed job"
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[1] == "  jobs: 2 total, 1 done, 0 failed, 1 pending, 0 leased"
    assert out[-1] == "1 job(s) scheduled for later; not waited for (--wait-scheduled to wait)"


def test_wait_scheduled_waits_for_a_delayed_job(tmp_path: Path) -> None:
    objects = tmp_path / "data" / "objects" / "t" / "r"
    objects.mkdir(parents=True)
    (objects / "soon.txt").write_text("in two seconds\n")
    enqueued = actors(
        tmp_path, "enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "t/r/soon.txt",
        "--delay", "2",
    )  # fmt: skip
    assert enqueued.returncode == 0, enqueued.stderr
    done = actors(tmp_path, "run", "--until-idle", "--wait-scheduled", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == "  jobs: 1 total, 1 done, 0 failed, 0 pending, 0 leased"
    assert "scheduled for later" not in done.stdout


def test_a_retry_waiting_out_its_backoff_is_waited_for(tmp_path: Path) -> None:
    config = str(with_processor(tmp_path))
    files = write_docs(tmp_path, **{"flaky.txt": "FLAKY\nsecond time lucky\n"})
    actors(tmp_path, "submit", "--run-id", "r", *files, ACTORS_CONFIG=config)
    done = actors(tmp_path, "run", "--until-idle", ACTORS_CONFIG=config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == [
        "run r (tenant default): done",
        "  jobs: 1 total, 1 done, 0 failed, 0 pending, 0 leased",
    ]
    assert [e["event"] for e in events(done.stderr)].count("job.retrying") == 1


SUBMIT_STATUS = r"submit: \d+ done, 0 failed, \d+ pending, [\d.]+ files/s(, ETA \d+s)?"


def test_a_plain_status_line_is_written_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(_progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    with _progress.Progress("submit", unit="files", stream=out, plain_seconds=2.0) as progress:
        now[0] += 1.0
        progress.update(10, 0, 20)  # sooner than the interval: nothing
        now[0] += 1.5
        progress.update(25, 0, 50)
        now[0] += 0.1
        progress.update(26, 0, 4)  # within the refresh period: nothing
    assert out.getvalue().splitlines() == [
        "submit: 25 done, 0 failed, 50 pending, 10.0 files/s, ETA 5s"
    ]
    assert re.fullmatch(SUBMIT_STATUS, out.getvalue().strip())


@pytest.mark.parametrize("value", ["abc", "-1", "inf", "nan", ""])
def test_a_bad_progress_interval_is_one_line_naming_it(tmp_path: Path, value: str) -> None:
    write_docs(tmp_path, **{"a.txt": "text\n"})
    done = actors(tmp_path, "submit", str(tmp_path / "in"), ACTORS_PROGRESS_SECONDS=value)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: ACTORS_PROGRESS_SECONDS must be a number of seconds >= 0, not {value!r}"
    ]
    assert not (tmp_path / "data").exists()  # refused before any object or job was written


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.2, "1s"), (5.0, "5s"), (59.5, "1m00s"), (3599.1, "1h00m")]
)
def test_an_eta_is_rounded_up(seconds: float, shown: str) -> None:
    assert _progress._duration(seconds) == shown


def test_progress_is_a_plain_status_line_now_and_then_when_not_a_terminal(
    tmp_path: Path,
) -> None:
    config = str(with_processor(tmp_path))
    docs = {f"{n}.txt": f"document number {n}\n" * 50 for n in range(299)}
    files = write_docs(tmp_path, **docs, **{"slow.txt": "SLOW\n"})
    submitted = actors(tmp_path, "submit", *files, ACTORS_PROGRESS_SECONDS="0.01")
    assert submitted.returncode == 0, submitted.stderr
    # A submit done within the first refresh period prints no status line (on a quiet machine
    # this one is); any it prints is a plain one. The line itself is checked below.
    status = [line for line in submitted.stderr.splitlines() if line.startswith("submit: ")]
    assert all(re.fullmatch(SUBMIT_STATUS, line) for line in status), status
    done = actors(
        tmp_path, "run", "--until-idle", ACTORS_PROGRESS_SECONDS="0.2", ACTORS_CONFIG=config
    )
    assert done.returncode == 0, done.stderr
    status = [line for line in done.stderr.splitlines() if line.startswith("run: ")]
    assert status, done.stderr
    assert all(re.match(r"run: \d+ done, \d+ failed, \d+ pending, ", s) for s in status), status
    assert "\x1b[" not in done.stderr + done.stdout and "\r" not in done.stderr
    # Never one line per job: 300 jobs, a handful of lines.
    assert len(lines(done)) < 40, len(lines(done))
    assert done.stdout.splitlines()[1].startswith("  jobs: 300 total, 300 done")


def read_pty(
    argv: list[str],
    cwd: Path,
    environ: dict[str, str],
    timeout: float,
    terminate_on: re.Pattern[str] | None = None,
) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; return its code and output.
    With ``terminate_on``, send it SIGTERM once its output matches that pattern."""
    master, slave = pty.openpty()
    process = subprocess.Popen(argv, cwd=cwd, env=environ, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
                seen = b"".join(chunks).decode(errors="replace")
                if terminate_on is not None and terminate_on.search(seen):
                    terminate_on = None
                    process.terminate()
            elif process.poll() is not None:
                break
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def test_on_a_terminal_the_progress_is_a_live_bar_and_the_summary_is_last(
    tmp_path: Path,
) -> None:
    pytest.importorskip("rich")
    config = str(with_processor(tmp_path))
    docs = {f"{n}.txt": f"document number {n}\n" * 50 for n in range(199)}
    files = write_docs(tmp_path, **docs, **{"slow.txt": "SLOW\n"})
    assert actors(tmp_path, "submit", "--run-id", "r", *files).returncode == 0
    environ = env(tmp_path, TERM="xterm", COLUMNS="200", LINES="50", ACTORS_CONFIG=config)
    code, output = read_pty(
        [sys.executable, "-m", "actors", "run", "--until-idle"], tmp_path, environ, timeout=60
    )
    assert code == 0, output
    assert "━" in output, output  # rich's bar was drawn
    assert "pending" in output
    text = [line.strip() for line in ANSI.sub("", output).replace("\r", "\n").splitlines()]
    text = [line for line in text if line]
    assert text[-3:] == [
        "run r (tenant default): done",
        "jobs: 200 total, 200 done, 0 failed, 0 pending, 0 leased",
        text[-1],
    ], text[-8:]
    assert text[-1].startswith("bytes="), text[-8:]
    assert sum("system.started" in line for line in text) == 1


def test_on_a_terminal_without_rich_the_progress_is_plain_lines(tmp_path: Path) -> None:
    config = str(with_processor(tmp_path))
    docs = {f"{n}.txt": f"document number {n}\n" * 50 for n in range(199)}
    files = write_docs(tmp_path, **docs, **{"slow.txt": "SLOW\n"})
    assert actors(tmp_path, "submit", "--run-id", "r", *files).returncode == 0
    hide_rich = (
        "import sys; sys.modules['rich'] = None; from actors.cli import main; sys.exit(main())"
    )
    environ = env(tmp_path, TERM="xterm", ACTORS_PROGRESS_SECONDS="0.2", ACTORS_CONFIG=config)
    code, output = read_pty(
        [sys.executable, "-c", hide_rich, "run", "--until-idle"], tmp_path, environ, timeout=60
    )
    assert code == 0, output
    assert "━" not in output
    text = [line.strip() for line in ANSI.sub("", output).splitlines() if line.strip()]
    assert any(re.match(r"run: \d+ done, 0 failed, \d+ pending, ", line) for line in text), text
    assert text[-3] == "run r (tenant default): done", text[-8:]


def test_a_services_status_is_a_line_per_interval_while_its_counts_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(_progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    with _progress.Progress("run", stream=out, plain_seconds=10.0, bar=False) as progress:
        assert not progress.live  # no bar, even where rich could draw one
        now[0] += 10.0
        progress.update(0, 0, 0)  # idle: no line
        now[0] += 10.0
        progress.update(30, 0, 70)
        now[0] += 10.0
        progress.update(30, 0, 70)  # nothing moved: no line
        now[0] += 10.0
        progress.update(40, 1, 5)
    # The rate is that of the interval before each line, not the average since the start.
    assert out.getvalue().splitlines() == [
        "run: 30 done, 0 failed, 70 pending, 3.0 jobs/s, ETA 24s",
        "run: 40 done, 1 failed, 5 pending, 1.1 jobs/s, ETA 5s",
    ]


def test_a_service_off_a_terminal_shows_no_status_but_logs_it_at_debug_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import structlog

    now = [100.0]
    monkeypatch.setattr(_progress.time, "monotonic", lambda: now[0])
    monkeypatch.setenv("ACTORS_PROGRESS_SECONDS", "5")
    out = io.StringIO()  # not a terminal
    assert _progress.Progress.for_service("run", debug=False, stream=out) is None
    status = _progress.Progress.for_service("run", debug=True, stream=out)
    assert status is not None
    with structlog.testing.capture_logs() as logs, status:
        now[0] += 5.0
        status.update(12, 1, 3)
    assert out.getvalue() == ""
    assert [(e["event"], e["log_level"], e["done"], e["failed"], e["pending"]) for e in logs] == [
        ("system.progress", "debug", 12, 1, 3)
    ]
    assert logs[0]["rate"] == 2.6


@pytest.mark.slow
def test_on_a_terminal_a_run_until_stopped_shows_a_status_line_while_jobs_move(
    tmp_path: Path,
) -> None:
    config = str(with_processor(tmp_path))
    docs = {f"{n}.txt": f"document number {n}\n" * 50 for n in range(99)}
    files = write_docs(tmp_path, **docs, **{"slow.txt": "SLOW\n"})
    assert actors(tmp_path, "submit", "--run-id", "r", *files).returncode == 0
    environ = env(tmp_path, TERM="xterm", ACTORS_PROGRESS_SECONDS="0.2", ACTORS_CONFIG=config)
    status = re.compile(r"run: 100 done, 0 failed, 0 pending, [\d.]+ jobs/s")
    code, output = read_pty(
        [sys.executable, "-m", "actors", "run"], tmp_path, environ, timeout=60, terminate_on=status
    )
    assert code == 0, output
    text = [line.strip() for line in ANSI.sub("", output).splitlines() if line.strip()]
    shown = [line for line in text if line.startswith("run: ")]
    assert status.match(shown[-1]), text  # then SIGTERM: a clean stop, exit 0
    assert all(re.match(r"run: \d+ done, 0 failed, \d+ pending, ", line) for line in shown)


def test_store_migrate_run_reports_progress_in_rows(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for n in range(2000):
        (tmp_path / "in" / f"{n}.txt").write_text("a document\n")
    submitted = actors(tmp_path, "submit", "in", ACTORS_PROGRESS_SECONDS="0")
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted 2000 file(s)" in submitted.stderr
    copied = actors(
        tmp_path, "store", "migrate", "run", "--from", "data/actors.db", "--to", "copy.db",
        "--batch", "1", ACTORS_PROGRESS_SECONDS="0",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    status = [line for line in copied.stderr.splitlines() if line.startswith("copy: ")]
    assert status, copied.stderr
    assert all(re.match(r"copy: \d+ done, 0 failed, \d+ pending, [\d.]+ rows/s", s) for s in status)
    assert "jobs: 2000 written" in copied.stdout
