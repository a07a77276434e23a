"""The long-running process: signals, ``--until-idle``, ``submit`` and ``runs watch``."""

from __future__ import annotations

import contextlib
import mimetypes
import os
import signal
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TextIO

import anyio
import msgspec

from actors import tenancy
from actors.bounds import MAX_PAGE
from actors.config import Config
from actors.errors import ActorsError, InvalidArgument
from actors.log import get_logger
from actors.pipeline import TERMINAL_RUN_STATUSES
from actors.queue import NewJob, RunSummary, Stats
from actors.queue.base import Queue
from actors.queue.factory import open_queue
from actors.storage import make_store
from actors.system import ActorSystem, raise_system_failed
from supervisors import SystemClock

__all__ = [
    "RUN_FAILED",
    "SHUTDOWN_MARGIN_SECONDS",
    "ProgressCallback",
    "banner",
    "files_under",
    "format_summary",
    "object_names",
    "serve",
    "submit_files",
    "watch",
]

log = get_logger("actors.service")

#: After the first SIGTERM/SIGINT the process ends within ``shutdown_grace_seconds`` plus this,
#: whatever its processors do; after a second signal, within this. It covers what follows the
#: grace period: the tree's stop (each child's shutdown timeout), giving back the leases of
#: unfinished jobs and the last ack commit. Past it the process exits by force (`_ExitDeadline`).
SHUTDOWN_MARGIN_SECONDS = 5.0
# Once the drain is complete (every job settled or given back), how long the event loop may
# take to close; longer means a processor call stuck in a thread, abandoned at its time limit.
_AFTER_DRAIN_SECONDS = 2.0


class _ExitDeadline:
    """A thread that ends the process when its stop overruns, since nothing on the loop can.

    A processor stuck in a worker thread keeps the event loop (and the interpreter, which joins
    its threads) from ever closing, and one that blocks the loop keeps the signal from being
    handled at all. So the deadline is armed from the signal handler itself (Python runs it on
    the main thread between bytecodes, even while the loop is blocked), and this thread, not
    the loop, acts on it: it exits with 0 once the drain is complete and only the loop's close
    hangs, and otherwise with 1 (70 after a failure of the tree) at the deadline.
    """

    def __init__(self, system: ActorSystem, grace_seconds: float) -> None:
        self._system = system
        self._grace = grace_seconds
        self._clock = SystemClock()
        self._at: float | None = None  # plain float writes: safe from a signal handler
        self._signals = 0
        self._drained_at: float | None = None
        self.failed = False
        #: ``run --until-idle``'s summary and exit code, once known: printed by whichever end
        #: of the process comes first, the loop's own or a forced one (`take_outcome`).
        self.outcome: tuple[str, int] | None = None
        self._outcome_taken = threading.Lock()
        self.out: TextIO = sys.stdout  # where the outcome is printed
        self._closed = threading.Event()
        thread = threading.Thread(target=self._watch, name="actors-exit-deadline", daemon=True)
        thread.start()

    def arm(self, seconds: float) -> None:
        """Exit by force ``seconds`` from now unless the process has ended (or sooner if armed)."""
        at = self._clock.monotonic() + seconds
        if self._at is None or at < self._at:
            self._at = at

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        first = self._signals == 1
        self.arm(self._grace + SHUTDOWN_MARGIN_SECONDS if first else SHUTDOWN_MARGIN_SECONDS)

    def take_outcome(self) -> tuple[str, int] | None:
        """The outcome, to the first caller only (None to the second: it is printed once)."""
        return self.outcome if self._outcome_taken.acquire(blocking=False) else None

    def close(self) -> None:
        """Disarm for good: the process's stop has ended without help."""
        self._closed.set()

    def _watch(self) -> None:
        while not self._closed.wait(0.05):
            now = self._clock.monotonic()
            if self._system.drained and not self.failed:
                if self._drained_at is None:
                    self._drained_at = now
                elif now - self._drained_at >= _AFTER_DRAIN_SECONDS:
                    self._exit(0, "the drain is complete but the event loop does not close")
            if self._at is not None and now >= self._at:
                code = 70 if self.failed else 0 if self._system.drained else 1
                self._exit(code, "the stop outlasted its deadline")

    def _exit(self, code: int, why: str) -> None:
        if self._closed.is_set():
            return
        stuck = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        outcome = self.take_outcome()
        if outcome is not None and code == 0:
            code = outcome[1]  # drained: the run's own code
        log.warning("system.exit_forced", reason=why, exit_code=code, threads=stuck)
        with contextlib.suppress(Exception):
            if outcome is not None and outcome[0]:
                print(outcome[0], file=self.out)
                self.out.flush()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


@contextlib.contextmanager
def _arm_on_signals(deadline: _ExitDeadline, signums: Sequence[int]) -> Iterator[None]:
    """Chain ``deadline.on_signal`` before the handlers installed for ``signums``."""
    previous = {signum: signal.getsignal(signum) for signum in signums}

    def handler(signum: int, frame: FrameType | None) -> None:
        deadline.on_signal(signum, frame)
        chained = previous[signum]
        if callable(chained):
            chained(signum, frame)

    for signum in signums:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, chained in previous.items():
            if chained is not None:
                signal.signal(signum, chained)


#: What `serve` returns after ``until_idle`` when a run it worked on has failed jobs (the CLI's
#: ``EXIT_RUN_FAILED``; ``runs watch`` exits with it too).
RUN_FAILED = 2


class ProgressCallback(Protocol):
    """``progress(done, failed, pending, cancelled)``: jobs done and failed by this process, jobs
    left to work on (leased, or available now; with ``wait_scheduled`` the scheduled ones too),
    and jobs whose cancellation this process saw through."""

    def __call__(self, done: int, failed: int, pending: int, cancelled: int = 0) -> None: ...


async def serve(
    config: Config,
    *,
    until_idle: bool = False,
    wait_scheduled: bool = False,
    out: TextIO | None = None,
    progress: ProgressCallback | None = None,
    on_idle: Callable[[], None] | None = None,
) -> int:
    """Run the system until SIGINT/SIGTERM (or, with ``until_idle``, until no job is runnable).

    The first signal drains (stop leasing, finish in-flight jobs within
    ``shutdown_grace_seconds``, give back the rest); a second one skips what is left of the
    grace period. The process ends within the grace period plus `SHUTDOWN_MARGIN_SECONDS`
    whatever its processors do (after a second signal, within the margin).

    With ``until_idle`` it stops once no job is leased or available and none is waiting out a
    retry's backoff; jobs enqueued with a delay that have not run yet are not waited for (unless
    ``wait_scheduled``), only counted. After the tree has stopped it prints each run that had a
    job finish here, then the count of jobs left scheduled, on ``out`` (stdout): nothing is
    logged after them. ``progress`` is called with the counts while it waits (about 20 times a
    second; throttle in the callback), and ``on_idle`` when the wait ends (to clear a display).
    Without ``until_idle``, ``progress`` is called once a second until the process stops, with
    the jobs runnable now (leased or available) as its pending count.

    Returns the exit code: 0 after a clean stop; `RUN_FAILED` after ``until_idle`` when one of
    those runs has failed jobs.
    """
    out = sys.stdout if out is None else out
    system = ActorSystem(
        config, track_runs=until_idle, on_failure=lambda exc: setattr(deadline, "failed", True)
    )
    deadline = _ExitDeadline(system, config.pipeline.shutdown_grace_seconds)
    deadline.out = out
    try:
        await _serve(system, config, until_idle, wait_scheduled, deadline, progress, on_idle)
    except BaseExceptionGroup as group:
        raise_system_failed(group)
        raise
    finally:
        deadline.close()  # the stop ended on its own: nothing to force (serve may be called again)
    outcome = deadline.take_outcome()
    if outcome is None:
        return 0
    text, code = outcome
    if text:
        print(text, file=out)
    return code


def _outcome(summaries: Sequence[RunSummary], scheduled: int) -> tuple[str, int]:
    """What ``run --until-idle`` prints last, and its exit code."""
    lines = [format_summary(summary) for summary in summaries]
    if scheduled:
        lines.append(
            f"{scheduled} job(s) scheduled for later; not waited for (--wait-scheduled to wait)"
        )
    return "\n".join(lines), RUN_FAILED if any(s.failed for s in summaries) else 0


def banner(config: Config, worker_id: str) -> dict[str, object]:
    """What this process runs, for its one ``system.started`` line; no secret is in it."""
    queue = config.queue
    if queue.backend == "postgres":
        where = _without_password(queue.dsn or "")
    elif queue.backend == "http":
        where = _without_password(queue.url or "")
    else:
        where = queue.path
    storage = config.storage
    store = (
        f"local {storage.root}"
        if storage.kind == "local"
        else f"{storage.kind} {storage.bucket or '(R2_BUCKET)'}"
    )
    processor: str = config.processor.kind
    if config.processor.kind == "python":
        processor += f" {config.processor.factory}" + (
            " (isolated)" if config.processor.isolate else ""
        )
    elif config.processor.kind == "gemini":
        processor += f" {config.processor.chat_model}"
    pipeline = config.pipeline
    fields: dict[str, object] = {
        "queue": f"{queue.backend} {where}",
        "store": store,
        "processor": processor,
        "concurrency": (
            f"{pipeline.concurrency} jobs, {pipeline.fetchers} fetchers, "
            f"{pipeline.processors} processors"
        ),
    }
    if config.http.enabled:
        fields["http"] = f"http://{config.http.host}:{config.http.port}"
    fields["worker_id"] = worker_id
    return fields


def _without_password(url: str) -> str:
    """``url`` with any password in it replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + netloc))


async def _serve(
    system: ActorSystem,
    config: Config,
    until_idle: bool,
    wait_scheduled: bool,
    deadline: _ExitDeadline,
    progress: ProgressCallback | None,
    on_idle: Callable[[], None] | None,
) -> None:
    signums = (signal.SIGINT, signal.SIGTERM)
    with anyio.open_signal_receiver(*signums) as signals, _arm_on_signals(deadline, signums):
        async with anyio.create_task_group() as tg:
            body = anyio.CancelScope()

            async def on_signals() -> None:
                received = 0
                async for signum in signals:
                    received += 1
                    name = signal.Signals(signum).name
                    if received == 1:
                        log.info(
                            "system.stopping",
                            signal=name,
                            grace_seconds=config.pipeline.shutdown_grace_seconds,
                        )
                        body.cancel()
                    else:
                        log.warning("system.stopping_now", signal=name)
                        system.skip_grace()

            tg.start_soon(on_signals)
            async with system:
                log.info("system.started", **banner(config, system.worker_id))
                with body:
                    if until_idle:
                        try:
                            stats = await _wait_idle(system, wait_scheduled, progress)
                        finally:
                            if on_idle is not None:
                                on_idle()
                        summaries = [
                            await system.run_summary(run_id) for run_id in sorted(system.runs_seen)
                        ]
                        deadline.outcome = _outcome(summaries, stats.scheduled)
                    elif progress is not None:
                        await _report_forever(system, progress)
                    else:
                        await anyio.sleep_forever()
                # Idle or signalled: the drain below ends within the same bound as after a signal.
                deadline.arm(config.pipeline.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS)
            log.info(
                "system.stopped",
                jobs_done=system.ack_stats.done,
                jobs_failed=system.ack_stats.failed,
                released=system.ack_stats.released,
            )
            tg.cancel_scope.cancel()


async def _wait_idle(
    system: ActorSystem,
    wait_scheduled: bool,
    progress: ProgressCallback | None,
    poll_seconds: float = 0.05,
) -> Stats:
    """Wait until no job is leased, in flight here or available; return the queue's stats then.

    Jobs waiting out a retry's backoff are waited for: they are work already under way. Jobs
    that have never run and are not available yet (enqueued with a delay) are waited for only
    with ``wait_scheduled``.
    """
    rescan_at = 0.0  # on the queue's clock: when the scheduled jobs are listed again
    retrying = 0  # scheduled jobs that are retries, as last listed
    while True:
        stats = await system.stats()
        runnable = stats.pending - stats.scheduled
        if progress is not None:
            waited = stats.scheduled if wait_scheduled else min(retrying, stats.scheduled)
            left = stats.leased + runnable + waited
            acks = system.ack_stats
            progress(acks.done, acks.failed, left, acks.cancelled)
        if stats.leased == 0 and runnable == 0 and len(system.inflight) == 0:
            if stats.scheduled == 0:
                return stats
            now = system.clock.time()
            if not wait_scheduled and now >= rescan_at:
                # Only scheduled jobs are left: listed only then, and again when a retry is due.
                due, retrying = await _retries(system.queue)
                if due is None:
                    return stats
                rescan_at = due
        await anyio.sleep(poll_seconds)


async def _report_forever(
    system: ActorSystem, progress: ProgressCallback, poll_seconds: float = 1.0
) -> None:
    """Call ``progress`` with this process's counts and the jobs runnable now, once a second
    (one `stats` read each: cheap on every backend), until cancelled."""
    while True:
        await anyio.sleep(poll_seconds)
        try:
            stats = await system.stats()
        except ActorsError:
            continue  # the queue's trouble is the pipeline's to report, not the status line's
        runnable = stats.leased + stats.pending - stats.scheduled
        progress(system.ack_stats.done, system.ack_stats.failed, runnable)


async def _retries(queue: Queue) -> tuple[float | None, int]:
    """The pending jobs that have run before (retries): when the first becomes due (None:
    there is none), and how many there are. A retry that became due since the stats were read
    counts too (its due time is past, so the caller looks again at once), else a retry with a
    short backoff could be reported as scheduled and left behind."""
    due: float | None = None
    count = 0
    cursor: str | None = None
    while True:
        page = await queue.list("pending", limit=MAX_PAGE, cursor=cursor)
        for job in page.items:
            if job.attempts > 0:
                count += 1
                due = job.available_at if due is None else min(due, job.available_at)
        cursor = page.next_cursor
        if cursor is None:
            return due, count


async def submit_files(
    config: Config,
    paths: Sequence[Path],
    *,
    tenant_id: str,
    run_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[str, int]:
    """Put each file into the object store and enqueue one job per file under one run.

    Each distinct file gets its own object, ``{tenant_id}/{run_id}/{name}``, where ``name`` is
    given by `object_names` (its base name, or more of its path where base names clash); a file
    given twice is submitted once. Objects are stored before their jobs are enqueued, so no job
    ever points at an object that is still being written. Returns the run id and the number of
    jobs enqueued. Uploads go to the configured store (``[storage].kind``); on R2/S3 a large file
    goes up in parts, one part in memory at a time. ``progress`` is called after each file
    with the files stored, 0 and the files left. A directory stands for the files under it
    (`files_under`).
    """
    paths = files_under(paths)
    for path in paths:
        if not path.is_file():
            raise ActorsError(f"cannot submit {path}: no such file")
    tenancy.check_tenant_id(tenant_id)
    named, _ = object_names(paths)  # refuses a clash before anything is written
    run_id = run_id or f"run-{uuid.uuid4().hex[:12]}"
    store = make_store(config)
    jobs = []
    try:
        for path, name in named:
            key = tenancy.check_key(tenant_id, f"{tenant_id}/{run_id}/{name}")
            content_type = mimetypes.guess_type(path.name)[0]
            put_file = getattr(store, "put_file", None)
            if put_file is not None:
                size = await put_file(path, key, content_type=content_type)
            else:
                data = await anyio.Path(path).read_bytes()
                await store.put(key, data, content_type=content_type)
                size = len(data)
            # The key makes a retried submit of the same run idempotent.
            jobs.append(
                NewJob(
                    run_id=run_id,
                    tenant_id=tenant_id,
                    r2_key=key,
                    idempotency_key=key,
                    payload={"filename": path.name, "bytes": size},
                )
            )
            if progress is not None:
                progress(len(jobs), 0, len(named) - len(jobs))
    finally:
        await store.aclose()
    async with open_queue(config) as queue:
        await queue.enqueue_many(jobs)
    return run_id, len(jobs)


def files_under(paths: Sequence[Path]) -> list[Path]:
    """``paths`` with each directory replaced by the files under it, in name order (hidden
    files and directories, whose names start with a dot, left out)."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        for file in sorted(path.rglob("*")):
            hidden = any(part.startswith(".") for part in file.relative_to(path).parts)
            if file.is_file() and not hidden:
                found.append(file)
    return found


def object_names(paths: Sequence[Path]) -> tuple[list[tuple[Path, str]], list[Path]]:
    """Name each distinct file of ``paths`` for its object key; return the files with their
    names, and the paths that repeat a file already named (dropped).

    A file's name is its base name; files that share a base name are each named by the
    shortest tail of their absolute path (``a/report.txt``, ``b/report.txt``) that no other of
    them ends with, so names are unique and never hold an empty, ``.`` or ``..`` segment. The
    same file given twice, by any path (a symlink too), is named once. Raises `InvalidArgument`
    naming both files when one's whole path is the tail of another's (nothing is written then).
    """
    seen: set[tuple[int, int]] = set()
    files: list[tuple[Path, tuple[str, ...]]] = []
    repeats: list[Path] = []
    for path in paths:
        stat = path.stat()
        if (stat.st_dev, stat.st_ino) in seen:
            repeats.append(path)
            continue
        seen.add((stat.st_dev, stat.st_ino))
        # abspath, not resolve(): the name follows the path the user gave, not a symlink's target.
        files.append((path, Path(os.path.abspath(path)).parts[1:]))
    by_base: dict[str, list[tuple[str, ...]]] = {}
    for _, parts in files:
        by_base.setdefault(parts[-1], []).append(parts)
    named: list[tuple[Path, str]] = []
    for path, parts in files:
        clashing = by_base[parts[-1]]
        for n in range(1, len(parts) + 1):
            tail = parts[-n:]
            if sum(other[-n:] == tail for other in clashing if len(other) >= n) == 1:
                named.append((path, "/".join(tail)))
                break
        else:
            other = next(o for o in clashing if o != parts and o[-len(parts) :] == parts)
            raise InvalidArgument(
                f"cannot submit both /{'/'.join(parts)} and /{'/'.join(other)}: no part of the "
                "first path tells their objects apart; submit them in separate runs"
            )
    return named, repeats


def format_summary(summary: RunSummary) -> str:
    """A run's state in a few readable lines."""
    metrics = ", ".join(f"{k}={v:g}" for k, v in sorted(summary.metrics.items()))
    return (
        f"run {summary.run_id} (tenant {summary.tenant_id}): {summary.status}\n"
        f"  jobs: {summary.total} total, {summary.done} done, {summary.failed} failed, "
        + (f"{summary.cancelled} cancelled, " if summary.cancelled else "")
        + f"{summary.pending} pending, {summary.leased} leased\n"
        + (f"  {metrics}\n" if metrics else "")
    ).rstrip("\n")


async def watch(
    config: Config, run_id: str, *, out: TextIO | None = None, poll_seconds: float = 0.5
) -> RunSummary:
    """Show a run's progress until it ends: a bar on a terminal, JSON lines otherwise.

    It reads the database, so it works beside any number of worker processes.
    """
    out = sys.stdout if out is None else out
    tty = out.isatty()
    last: Any = None
    async with open_queue(config) as queue:
        while True:
            summary: RunSummary = await queue.run_summary(run_id)
            if summary != last:
                if tty:
                    finished = summary.done + summary.failed + summary.cancelled
                    width = 30
                    filled = width * finished // max(1, summary.total)
                    bar = "#" * filled + "-" * (width - filled)
                    out.write(
                        f"\r{run_id} [{bar}] {finished}/{summary.total} "
                        f"({summary.failed} failed, {summary.cancelled} cancelled) "
                        f"{summary.status}   "
                    )
                else:
                    out.write(msgspec.json.encode(summary).decode() + "\n")
                out.flush()
                last = summary
            if summary.status in TERMINAL_RUN_STATUSES:
                if tty:
                    out.write("\n")
                return summary
            await anyio.sleep(poll_seconds)
