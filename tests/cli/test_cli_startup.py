"""The command line as a person meets it, through ``python -m actors`` in a process of its own:
options after the command, suggestions for typos, and start-up failures that are one line on
stderr with the documented exit code (1), never a traceback or a restart loop."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.cli import main
from actors.cli._checks import MIN_FREE_BYTES
from actors.cli._common import EXIT_FAILED, EXIT_OK, EXIT_SYSTEM_FAILED
from actors.errors import StorageError, unwrap
from actors.queue.sqlite.schema import sqlite_failure

SECRETS = (
    "GOOGLE_API_KEY", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "EDGE_API_TOKEN", "JWT_SECRET",
    "ACTORS_TOKENS", "ACTORS_CONFIG", "EDGE_BASE_URL", "ADMIN_API_KEY", "QUEUE_API_KEY",
    "TURNSTILE_SECRET", "TURNSTILE_VERIFY_URL",
)  # fmt: skip


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return {**env, **extra}


def actors(
    cwd: Path, *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors", *argv],
        cwd=cwd,
        env=environment() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The run's stderr, asserted to be exactly one ``error: ...`` line, with exit code 1."""
    assert done.returncode == EXIT_FAILED, (done.returncode, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def write_config(path: Path, text: str) -> Path:
    path.write_text(text + '\n[log]\nlevel = "warning"\n')
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- options before or after the command ---------------------------------------------------------


def test_global_options_are_accepted_after_the_command(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    config = write_config(tmp_path / "x.toml", f'[queue]\npath = "{db}"')
    assert actors(tmp_path, "migrate", "up", "--db", str(db)).returncode == 0
    done = actors(tmp_path, "migrate", "status", "--db", str(db))
    assert done.returncode == 0 and "schema version" in done.stdout, done.stderr
    done = actors(tmp_path, "run", "--config", str(config), "--until-idle")
    assert done.returncode == 0, done.stderr
    done = actors(tmp_path, "jobs", "list", "--json", "--config", str(config), "--debug")
    assert done.returncode == 0 and '"items": []' in done.stdout, done.stderr


def test_an_option_given_before_the_command_is_not_reset_by_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    assert main(["--db", str(db), "migrate", "up"]) == EXIT_OK
    # `stats` has its own copy of --db (default SUPPRESS): not given there, the first one holds.
    assert main(["--db", str(db), "stats", "--json"]) == EXIT_OK
    assert '"pending": 0' in capsys.readouterr().out
    # Given after, it wins.
    missing = tmp_path / "missing.db"
    assert main(["--db", str(db), "stats", "--db", str(missing)]) == EXIT_FAILED
    assert f"the queue database '{missing}' does not exist" in capsys.readouterr().err


# --- usage errors: exit 1, one line, "did you mean" ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stat"], "invalid choice: 'stat'; did you mean 'stats'?"),
        (["jobs", "lst"], "invalid choice: 'lst'; did you mean 'list'?"),
        (["migrate", "stauts"], "invalid choice: 'stauts'; did you mean 'status'?"),
        (["stats", "--jsn"], "unrecognized arguments: --jsn; did you mean '--json'?"),
        (["jobs", "list", "--stauts=failed"], "did you mean '--status'?"),
    ],
    ids=" ".join,
)
def test_a_mistyped_command_or_option_gets_a_suggestion(
    tmp_path: Path, argv: list[str], expected: str
) -> None:
    line = one_error_line(actors(tmp_path, *argv))
    assert expected in line


def test_usage_errors_exit_with_1_not_argparse_2(tmp_path: Path) -> None:
    for argv in (["jobs"], ["--bogus"], ["jobs", "show", "not-a-number"]):
        one_error_line(actors(tmp_path, *argv))


def test_help_documents_the_exit_codes(tmp_path: Path) -> None:
    done = actors(tmp_path, "--help")
    assert done.returncode == 0
    codes = done.stdout.split("exit codes:")[1]
    for code, meaning in (("0", "ok"), ("1", "usage, config"), ("2", "a run failed"),
                          ("70", "gave up"), ("130", "interrupted")):  # fmt: skip
        assert f"  {code}" in codes and meaning in codes


def test_a_mistyped_config_key_gets_a_suggestion(tmp_path: Path) -> None:
    config = write_config(tmp_path / "x.toml", '[queue]\npaht = "q.db"')
    line = one_error_line(actors(tmp_path, "config", "check", "--config", str(config)))
    assert "[queue] has no key `paht`; did you mean 'path'?" in line


# --- secrets the chosen kinds need ----------------------------------------------------------------


def test_gemini_without_its_key_fails_config_check_and_run_with_one_line(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "x.toml", f'[queue]\npath = "{tmp_path / "q.db"}"\n[processor]\nkind = "gemini"'
    )
    for argv in (["config", "check"], ["run", "--until-idle"]):
        line = one_error_line(actors(tmp_path, *argv, "--config", str(config)))
        assert "needs GOOGLE_API_KEY" in line
    assert not (tmp_path / "q.db").exists()  # nothing was started


def test_turnstile_without_tenants_or_a_short_api_key_fails_config_check(tmp_path: Path) -> None:
    config = write_config(tmp_path / "x.toml", "[http]\nenabled = true")
    for env, named in (
        (environment(TURNSTILE_SECRET="0x4AAA-secret"), "[http].turnstile_tenants"),
        (environment(QUEUE_API_KEY="abc"), "QUEUE_API_KEY is shorter than 8"),
    ):
        line = one_error_line(actors(tmp_path, "config", "check", "--config", str(config), env=env))
        assert named in line and "0x4AAA-secret" not in line
    fine = write_config(tmp_path / "y.toml", '[http]\nenabled = true\nturnstile_tenants = ["*"]')
    done = actors(
        tmp_path, "config", "check", "--config", str(fine), env=environment(TURNSTILE_SECRET="s")
    )
    assert done.returncode == EXIT_OK, done.stderr


def test_r2_with_an_empty_secret_fails_config_check(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "x.toml",
        '[storage]\nkind = "r2"\nbucket = "b"\nendpoint = "https://a.r2.cloudflarestorage.com"',
    )
    env = environment(R2_ACCESS_KEY_ID="key", R2_SECRET_ACCESS_KEY="")
    line = one_error_line(actors(tmp_path, "config", "check", "--config", str(config), env=env))
    assert "R2_SECRET_ACCESS_KEY" in line


def test_an_unimportable_processor_factory_fails_config_check(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "x.toml", '[processor]\nkind = "python"\nfactory = "no_such_mod:make"'
    )
    line = one_error_line(actors(tmp_path, "config", "check", "--config", str(config)))
    assert "[processor].factory = 'no_such_mod:make' cannot be imported" in line


# --- the HTTP port and the remote queue's token ---------------------------------------------------


def test_a_busy_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(
            tmp_path / "x.toml",
            f'[queue]\npath = "{tmp_path / "q.db"}"\n[http]\nenabled = true\nport = {port}',
        )
        done = actors(tmp_path, "run", "--config", str(config), env=environment(ACTORS_TOKENS=""))
    assert one_error_line(done) == (
        f"error: cannot listen on 127.0.0.1:{port}: address already in use; stop the other "
        "process or change [http].port\n"
    )


@contextlib.contextmanager
def queue_server(tmp_path: Path, token: str, port: int | None = None) -> Iterator[str]:
    """``python -m actors run`` serving its queue over HTTP to workers holding ``token``."""
    port = free_port() if port is None else port
    config = write_config(
        tmp_path / "server.toml",
        f'[queue]\npath = "{tmp_path / "q.db"}"\n'
        f"[http]\nenabled = true\nport = {port}\nqueue_only = true",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "actors", "run", "--config", str(config)],
        cwd=tmp_path,
        env=environment(ACTORS_TOKENS=f"{token}:worker"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a guard against a hang, not a timing
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    break
            except OSError:
                assert server.poll() is None, "the queue server exited"
                assert time.monotonic() < deadline, "the queue server did not come up"
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_wrong_worker_token_is_one_line_naming_edge_api_token(tmp_path: Path) -> None:
    good = "the-right-token-123"
    with queue_server(tmp_path, good) as url:
        config = write_config(tmp_path / "worker.toml", f'[queue]\nbackend = "http"\nurl = "{url}"')
        # `config check` reaches the server and says whether it accepts the token, as `run` does.
        for token, ok in ((good, True), ("a-wrong-token-456", False)):
            checked = actors(tmp_path, "config", "check", "--config", str(config),
                             env=environment(EDGE_API_TOKEN=token))  # fmt: skip
            if ok:
                assert checked.returncode == EXIT_OK, checked.stderr
                assert checked.stdout == f"{config}: ok; queue {url}: the token is accepted\n"
            else:
                assert "401" in one_error_line(checked)
        done = actors(
            tmp_path, "run", "--config", str(config),
            env=environment(EDGE_API_TOKEN="a-wrong-token-456"),
        )  # fmt: skip
        # Refused at once, not after restarts or retries: each of those logs a warning line
        # (the level here), and stderr holds this one line alone. (Not timed: a loaded machine
        # takes seconds to start Python; `actors` gives up after 60 s, should it hang.)
        line = one_error_line(done)
        assert "401" in line and "EDGE_API_TOKEN" in line
        # The right token passes the same check (and then runs until stopped): once its banner
        # is out (not after a fixed sleep, which a busy machine outlasts), SIGTERM drains it.
        config.write_text(config.read_text().replace('level = "warning"', 'level = "info"'))
        worker = subprocess.Popen(
            [sys.executable, "-m", "actors", "run", "--config", str(config)],
            cwd=tmp_path,
            env=environment(EDGE_API_TOKEN=good),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stderr is not None
        # Its first line, but for warnings a starved CPU may print first (`loop.blocked`).
        seen = []
        while '"event":"system.started"' not in (line := worker.stderr.readline()):
            assert line, "".join(seen) + worker.communicate()[1]  # it ended without starting
            assert '"level":"warning"' in line, "".join([*seen, line])
            seen.append(line)
        worker.terminate()
        assert worker.wait(timeout=30) == 0
    # The server is gone: `config check` says it is unreachable, in one line.
    line = one_error_line(
        actors(tmp_path, "config", "check", "--config", str(config),
               env=environment(EDGE_API_TOKEN=good))
    )  # fmt: skip
    assert f"GET {url}/jobs/stats failed: ConnectError" in line and "EDGE_BASE_URL" in line


@pytest.mark.slow
def test_a_token_refused_mid_run_stops_the_worker_with_one_line_and_exit_70(
    tmp_path: Path,
) -> None:
    # The worker starts with a token the server accepts; the server then restarts with other
    # tokens (rotated), so the worker's next pull is refused: no retry or restart can fix that.
    port = free_port()
    config = write_config(
        tmp_path / "worker.toml", f'[queue]\nbackend = "http"\nurl = "http://127.0.0.1:{port}"'
    )
    config.write_text(config.read_text().replace('level = "warning"', 'level = "info"'))
    with queue_server(tmp_path, "the-first-token-123", port):
        worker = subprocess.Popen(
            [sys.executable, "-m", "actors", "run", "--config", str(config)],
            cwd=tmp_path,
            env=environment(EDGE_API_TOKEN="the-first-token-123"),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stderr is not None
        banner = worker.stderr.readline()  # the start-up checks passed: the tree runs
        assert '"event":"system.started"' in banner, banner
    try:
        with queue_server(tmp_path, "the-rotated-token-456", port):
            code = worker.wait(timeout=60)
            rest = worker.stderr.read()
    finally:
        worker.kill()
    assert code == EXIT_SYSTEM_FAILED, rest
    # While the server restarted, pulls failed and were retried (the server may come back);
    # once it answers 401, the worker stops: one line logged, one printed, nothing restarted.
    lines = rest.splitlines()
    assert no_retry_or_restart(lines, but="lease.pull_failed"), rest
    assert '"event":"system.failed"' in lines[-2]
    assert lines[-1].startswith("error: the system stopped: POST http://127.0.0.1:")
    assert "refused (401" in lines[-1] and "EDGE_API_TOKEN" in lines[-1]


def no_retry_or_restart(lines: list[str], *, but: str = "") -> bool:
    """No restart, crash, traceback or retried failure among ``lines``, but for events ``but``
    names (pulls that failed while the queue server restarted)."""
    return not any(
        marker in line
        for line in lines
        if not (but and f'"event":"{but}"' in line)
        for marker in ("supervisor.", "Traceback", "_failed", "retry")
    )


# --- the database -----------------------------------------------------------------------------


def damage_pages(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A queue of 30 jobs whose header is intact and whose pages past the third are garbage."""
    for n in range(30):
        argv = ["--db", str(db), "enqueue", "--run-id", "r", "--tenant-id", "t"]
        assert main([*argv, "--r2-key", f"t/r/{n}", "--payload", f'"{"y" * 500}"']) == 0
    capsys.readouterr()
    with db.open("r+b") as file:
        file.seek(3 * 4096)
        file.write(os.urandom(4 * 4096))


@pytest.mark.parametrize("damage", ["header", "pages"])
@pytest.mark.parametrize("argv", [["stats"], ["run", "--until-idle"]], ids=" ".join)
def test_a_corrupt_database_is_one_line(
    tmp_path: Path, argv: list[str], damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "q.db"
    if damage == "header":
        db.write_bytes(os.urandom(8192))
    else:
        damage_pages(db, capsys)
    line = one_error_line(actors(tmp_path, "--db", str(db), *argv))
    assert f"'{db}' is not a usable SQLite database" in line and "move this file away" in line


def test_sqlite_full_is_reported_as_a_full_disk_not_as_a_damaged_file(tmp_path: Path) -> None:
    # SQLite's own SQLITE_FULL, from a database capped at a few pages.
    conn = sqlite3.connect(tmp_path / "capped.db", isolation_level=None)
    conn.execute("PRAGMA max_page_count = 4")
    with pytest.raises(sqlite3.OperationalError) as info:
        conn.execute("CREATE TABLE t (x)")
        for _ in range(100):
            conn.execute("INSERT INTO t VALUES (?)", (os.urandom(1000),))
    conn.close()
    assert info.value.sqlite_errorname == "SQLITE_FULL"
    message = str(sqlite_failure(info.value, "/data/q.db"))
    assert message.startswith("disk full at '/data/q.db': free space")
    assert "move this file away" not in message


def test_a_file_size_limit_is_reported_as_an_io_error(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes write() fail with EFBIG, which SQLite reports as SQLITE_IOERR_WRITE.
    code = (
        "import os, resource, signal, sqlite3, sys\n"
        "from actors.queue.sqlite.schema import sqlite_failure\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "try:\n"
        "    conn.execute('CREATE TABLE t (x)')\n"
        "    for _ in range(100): conn.execute('INSERT INTO t VALUES (?)', (os.urandom(1000),))\n"
        "except sqlite3.Error as exc:\n"
        "    print(exc.sqlite_errorname, sqlite_failure(exc, sys.argv[1]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "q.db")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.startswith("SQLITE_IOERR_WRITE disk I/O error on"), done.stdout + done.stderr
    assert "ulimit -f" in done.stdout and "move this file away" not in done.stdout


@contextlib.contextmanager
def small_disk(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mount`` (needs root; skips the test without it)."""
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root; skipped without it): room for a new queue, all migrations
    applied, and little more."""
    with small_disk(tmp_path / "disk", "1m") as mount:
        yield mount


def test_a_full_disk_is_one_line_saying_so(tiny_disk: Path, tmp_path: Path) -> None:
    db = tiny_disk / "q.db"
    enqueue = ["enqueue", "--run-id", "r", "--tenant-id", "t", "--r2-key", "t/r/a.txt"]
    assert actors(tmp_path, "--db", str(db), *enqueue).returncode == 0
    # A reader keeps the WAL's shared-memory file in place, so the next write fails on the WAL
    # itself (SQLITE_FULL) rather than on re-creating that file (SQLITE_IOERR_SHMSIZE).
    reader = sqlite3.connect(db)
    try:
        reader.execute("SELECT count(*) FROM jobs").fetchone()
        with contextlib.suppress(OSError), (tiny_disk / "filler").open("ab") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        big = '"' + "x" * 20000 + '"'
        line = one_error_line(actors(tmp_path, "--db", str(db), *enqueue, "--payload", big))
        assert line.startswith(f"error: disk full at '{db}': free space on its disk"), line
    finally:
        reader.close()
    # `run` checks the free space before it starts anything.
    line = one_error_line(actors(tmp_path, "--db", str(db), "run", "--until-idle"))
    assert line.startswith(f"error: disk full at '{db}': ") and " KiB free; free space" in line


@pytest.mark.slow
def test_a_disk_that_fills_up_mid_run_stops_it_with_one_line_and_exit_70(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "3m") as disk:
        config = write_config(
            tmp_path / "x.toml",
            f'[queue]\npath = "{disk / "q.db"}"\n[storage]\nroot = "{tmp_path / "objects"}"',
        )
        config.write_text(config.read_text().replace('level = "warning"', 'level = "info"'))
        docs = tmp_path / "docs"
        docs.mkdir()
        for n in range(60):  # about 1.7 MB of text: their results do not fit in what is left
            words = (f"word{(n * 7 + i) % 997}" for i in range(4000))
            (docs / f"{n}.txt").write_text(" ".join(words) + ".\n")
        assert actors(tmp_path, "submit", "--config", str(config), str(docs)).returncode == 0
        # Leave a little more than the start-up check asks for (MIN_FREE_BYTES).
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * (free - MIN_FREE_BYTES - 64 * 1024))
        done = actors(tmp_path, "run", "--until-idle", "--config", str(config))
    assert done.returncode == EXIT_SYSTEM_FAILED, done.stderr
    lines = done.stderr.splitlines()
    # The banner, the failure logged, the failure printed last; perhaps the jobs given back
    # (when that write fits) or the event loop's lag on a busy machine, but no restart, no
    # retried write, no traceback.
    assert no_retry_or_restart(lines) and len(lines) < 10, done.stderr
    assert '"event":"system.started"' in lines[0]
    assert sum('"event":"system.failed"' in line for line in lines) == 1
    assert lines[-1].startswith(f"error: the system stopped: disk full at '{disk / 'q.db'}': ")
    assert "move this file away" not in done.stderr


def test_unwrap_reports_a_group_of_one_as_its_error() -> None:
    error = StorageError("disk full")
    assert unwrap(ExceptionGroup("a", [ExceptionGroup("b", [error])])) is error
    several = ExceptionGroup("c", [error, ValueError()])
    assert unwrap(several) is several
    assert unwrap(error) is error
