"""Logging: quiet when embedded, one stream in one format when configured.

The library's loggers go to stdlib ``logging`` while structlog is unconfigured (a host sees
warnings on stderr and nothing on stdout), and through structlog once it is configured;
`configure_logging` renders structlog events and stdlib records alike, JSON by msgspec or
the console renderer on a terminal.
"""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import structlog
from structlog.testing import capture_logs

from actors.log import configure_logging, get_logger

# A host program: one run of two jobs (one object exists, one does not, so one job fails
# and the library logs a warning), with logging left as the host set it up (or not).
_HOST = """
import logging, sys
from pathlib import Path

import anyio
from actors.config import load_config
from actors.system import ActorSystem

root = Path(sys.argv[1])
{setup}
(root / "objects" / "t1" / "r1").mkdir(parents=True)
(root / "objects" / "t1" / "r1" / "a.txt").write_text("A short document about bees.")
config = root / "actors.toml"
config.write_text(
    f'[queue]\\npath = "{{root / "q.db"}}"\\nretry_base_seconds = 0.01\\n'
    f'[storage]\\nroot = "{{root / "objects"}}"\\n'
)

async def main():
    async with ActorSystem(load_config(config, env={{}})) as system:
        await system.enqueue("r1", "t1", "t1/r1/a.txt")
        await system.enqueue("r1", "t1", "t1/r1/missing.txt", max_attempts=1)
        summary = await system.wait_run("r1")
    print(f"host: done={{summary.done}} failed={{summary.failed}}")

anyio.run(main)
"""


def run_host(tmp_path: Path, setup: str = "") -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(_HOST).format(setup=setup)
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_embedding_host_that_configures_nothing_sees_only_warnings_on_stderr(
    tmp_path: Path,
) -> None:
    done = run_host(tmp_path)
    assert done.returncode == 0, done.stderr
    # stdout is the host's own: not one library line.
    assert done.stdout == "host: done=1 failed=1\n"
    # stderr holds what logging.lastResort lets through: warnings and errors, one line each.
    lines = done.stderr.splitlines()
    assert lines, "the failed job's warning reaches stderr"
    assert all(not line.startswith("{") for line in lines)  # stdlib's plain messages, no JSON
    failed = [line for line in lines if line.startswith("job.failed ")]
    assert len(failed) == 1 and "run_id='r1'" in failed[0] and "permanent=True" in failed[0]
    for quiet in ("job.done", "supervisor.child_started", "system.started"):
        assert quiet not in done.stderr


def test_a_host_that_configured_stdlib_logging_gets_the_library_lines_in_its_format(
    tmp_path: Path,
) -> None:
    setup = (
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout,"
        " format='%(levelname)s %(name)s: %(message)s')"
    )
    done = run_host(tmp_path, setup)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "host: done=1 failed=1"
    assert any(line.startswith("DEBUG actors.ack_reporter: job.done ") for line in lines)
    assert any(line.startswith("WARNING actors.ack_reporter: job.failed ") for line in lines)
    assert any(line.startswith("DEBUG supervisors: supervisor.child_started ") for line in lines)
    assert done.stderr == ""  # everything went where the host's configuration sends it


_CONFIGURED = """
import logging
from actors.log import configure_logging, get_logger

configure_logging("info", {fmt!r})
log = get_logger("actors.test")
log.info("job.done", job_id=3, run_id="r1")
log.debug("job.leased", job_id=3)
logging.getLogger("hypercorn.error").warning("x")
logging.getLogger("httpx").info("HTTP Request: GET http://h/ 200")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("job.crashed", job_id=4)
    logging.getLogger("asyncpg").exception("connection lost")
"""


def test_configured_json_lines_carry_structlog_events_and_stdlib_records_alike() -> None:
    script = textwrap.dedent(_CONFIGURED).format(fmt="auto")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout == "", done.stderr
    lines = [msgspec.json.decode(line) for line in done.stderr.splitlines()]
    assert [(line["event"], line["level"], line["logger"]) for line in lines] == [
        ("job.done", "info", "actors.test"),
        ("x", "warning", "hypercorn.error"),  # a stdlib logger, in the same stream and format
        ("job.crashed", "error", "actors.test"),
        ("connection lost", "error", "asyncpg"),
    ]
    assert lines[0]["job_id"] == 3 and lines[0]["run_id"] == "r1"
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"]) for line in lines
    )
    for crashed in lines[2:]:
        assert crashed["exception"].startswith("Traceback (most recent call last):")
        assert crashed["exception"].endswith("ZeroDivisionError: division by zero")


def test_on_a_terminal_lines_are_for_a_person_with_short_timestamps() -> None:
    script = textwrap.dedent(_CONFIGURED).format(fmt="auto")
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=terminal,
        stdin=subprocess.DEVNULL,
    ) as process:
        os.close(terminal)
        out = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert process.wait(timeout=60) == 0
    os.close(controller)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.decode()).replace("\r\n", "\n")
    lines = [line for line in text.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d \[info\s*\] job\.done\s+\[actors\.test\] job_id=3 run_id=r1", lines[0]
    ), lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d \[warning\s*\] x\s+\[hypercorn\.error\]", lines[1]), lines
    assert "ZeroDivisionError: division by zero" in text  # tracebacks printed after their line
    assert "HTTP Request" not in text and "job.leased" not in text


def test_a_library_logger_used_before_follows_capture_logs_and_a_new_configuration() -> None:
    log = get_logger("actors.test")
    log.info("first.use")  # resolved and cached under the test configuration
    with capture_logs() as logs:
        log.debug("captured", job_id=1)
    assert logs == [{"event": "captured", "job_id": 1, "log_level": "debug"}]

    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)  # conftest restores its own afterwards
    log.info("dropped")
    log.bind(run_id="r1").warning("kept")
    logging.getLogger("botocore").warning("retrying")
    lines: list[dict[str, Any]] = [msgspec.json.decode(x) for x in stream.getvalue().splitlines()]
    assert [(x["event"], x["logger"]) for x in lines] == [
        ("kept", "actors.test"),
        ("retrying", "botocore"),
    ]
    assert lines[0]["run_id"] == "r1"


def test_json_renders_what_msgspec_cannot_encode_by_repr() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    structlog.get_logger("host").info("host.event", thing=Opaque(), path=Path("/a/b"))
    line = msgspec.json.decode(stream.getvalue())
    assert line["thing"] == "<opaque>" and line["logger"] == "host"
    assert line["path"] == repr(Path("/a/b"))


def test_a_structlog_logger_cached_before_a_reconfiguration_follows_it() -> None:
    # A host's own logger, straight from structlog, cached by its first use.
    host = structlog.get_logger("host")
    host.info("first.use")
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    host.info("after")
    with capture_logs() as logs:
        host.info("captured")
    assert [msgspec.json.decode(x)["event"] for x in stream.getvalue().splitlines()] == ["after"]
    assert [entry["event"] for entry in logs] == ["captured"]


def test_library_modules_log_through_get_logger() -> None:
    # A module-level structlog.get_logger() would print to an embedding host's stdout.
    root = Path(__file__).resolve().parents[1]
    sources = [*(root / "actors").rglob("*.py"), *(root / "supervisors").rglob("*.py")]
    direct = {
        str(path.relative_to(root))
        for path in sources
        if "structlog.get_logger(" in path.read_text() and path.name != "log.py"
    }
    assert direct == set()


def test_a_group_of_one_exception_is_logged_as_that_exception() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = get_logger("actors.test")
    try:
        raise ExceptionGroup("unhandled errors in a TaskGroup", [KeyError("job 7")])
    except ExceptionGroup:
        log.exception("child.crashed")
    try:
        raise ExceptionGroup("two", [KeyError("a"), ValueError("b")])
    except ExceptionGroup:
        logging.getLogger("hypercorn.error").exception("both")
    one, two = (msgspec.json.decode(line) for line in stream.getvalue().splitlines())
    assert one["exception"].endswith("KeyError: 'job 7'")
    assert "ExceptionGroup" not in one["exception"]
    assert "ExceptionGroup: two (2 sub-exceptions)" in two["exception"]
