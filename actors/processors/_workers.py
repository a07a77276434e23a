"""The worker pool: CPU-bound processing in child processes that a job's time limit can kill."""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import math
import os
import pickle
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import anyio
from anyio.abc import ByteSendStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream

from actors.errors import OutOfMemory, WorkerCrashed

__all__ = ["TimeLimit", "WorkerPool", "current_time_limit", "default_pool", "serve_worker"]

T = TypeVar("T")

# A worker may take this long to start (an interpreter, then the preloaded modules).
_START_SECONDS = 60.0
# A worker's command line: `python -c _ENTRY MEMORY_BYTES [MODULE...]`.
_ENTRY = "from actors.processors._workers import serve_worker; serve_worker()"
# A worker's answer: "OK <length>\n" or "ERR <length>\n", then the pickled value or exception.
_HEADER_MAX = 64


class TimeLimit:
    """The time limit of the job this task processes, as a cancel scope the pool can hold.

    The processor stage sets it (`current_time_limit`) around a call that honours
    cancellation; the pool holds it (`held`) while the job waits for a worker process (a free
    slot, a fresh interpreter and its imports), so the limit counts the job's processing only.
    ``on_extend`` hears of each new deadline: the job's lease is renewed until it passes.
    """

    def __init__(self, scope: anyio.CancelScope, on_extend: Callable[[float], None]) -> None:
        self.scope = scope
        self._on_extend = on_extend

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Stop the limit's clock inside: the time is not counted, and the lease is renewed
        all along (a worker that starts slower than the lease's window keeps the lease)."""
        remaining = self.scope.deadline - anyio.current_time()
        self._set(math.inf)
        try:
            yield
        finally:
            self._set(anyio.current_time() + remaining)

    def _set(self, deadline: float) -> None:
        self.scope.deadline = deadline
        self._on_extend(deadline)


current_time_limit: contextvars.ContextVar[TimeLimit | None] = contextvars.ContextVar(
    "actors_time_limit", default=None
)


class _Worker:
    """A child process running `serve_worker`: pickled calls in on its stdin, answers out."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self._stdin: ByteSendStream = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)

    @classmethod
    async def start(cls, memory_bytes: int | None, preload: tuple[str, ...]) -> _Worker:
        process = await anyio.open_process(
            [sys.executable, "-c", _ENTRY, str(memory_bytes or 0), *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the worker's own output (a processor's logs) joins ours
        )
        worker = cls(process)
        try:
            with anyio.fail_after(_START_SECONDS):
                ready = await worker._stdout.receive_until(b"\n", _HEADER_MAX)
            if ready != b"READY":
                raise WorkerCrashed(f"a worker process started with {ready!r} instead of READY")
        except BaseException:
            await worker.kill()
            raise
        return worker

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def call(self, func: Callable[..., Any], args: tuple[object, ...]) -> tuple[bool, Any]:
        """(True, the result) or (False, the exception ``func`` raised)."""
        request = pickle.dumps((func, args), protocol=pickle.HIGHEST_PROTOCOL)
        await self._stdin.send(b"%d\n" % len(request) + request)
        header = await self._stdout.receive_until(b"\n", _HEADER_MAX)
        status, _, length = header.partition(b" ")
        value = pickle.loads(await self._stdout.receive_exactly(int(length)))
        return status == b"OK", value

    async def kill(self) -> None:
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            await self.process.aclose()


class WorkerPool:
    """At most ``size`` calls at once, each in a worker process of its own; a slot per processor.

    A worker is started when a call finds none idle (`serve_worker` in a fresh
    interpreter that imports ``preload`` and applies the memory cap) and reused while it lives.
    A call that is cancelled (its job's time limit, a shutdown) kills its worker with SIGKILL;
    the next call starts a fresh one. `aclose` kills the idle workers; a worker whose parent
    dies is killed by the kernel (``PR_SET_PDEATHSIG``), and one whose stdin closes exits.
    Waiting for a slot or for a worker to start does not count against a job's time limit
    (`TimeLimit`).

    Error handling: an exception the call raises comes back as it is (pickled), except
    ``MemoryError``, which becomes `OutOfMemory` (permanent: the same document would exhaust
    the same cap again). A worker that dies under a call (the OOM killer, a signal, a crash in
    native code) raises `WorkerCrashed` (transient: the job is retried with backoff).
    """

    def __init__(
        self, size: int, *, memory_mib: int = 0, preload: tuple[str, ...] = ("actors.documents",)
    ) -> None:
        self.size = size
        self.memory_bytes = memory_mib * 1024 * 1024 if memory_mib > 0 else None
        self.preload = preload
        self.started = 0  # workers started so far (a killed one is replaced by a new one)
        self._idle: list[_Worker] = []
        # Created on first use: a limiter belongs to the event loop it was made in.
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, func: Callable[..., T], *args: object) -> T:
        """Call ``func(*args)`` in a worker process; cancelling the caller kills the worker."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.size)
        limiter = self._limiter
        limit = current_time_limit.get()
        # Waiting for a slot and a worker: the job's limit is held (not counted, lease renewed).
        with limit.held() if limit is not None else contextlib.nullcontext():
            await limiter.acquire()
            try:
                worker = await self._take()
            except BaseException:
                limiter.release()
                raise
        try:
            try:
                ok, value = await worker.call(func, args)
            except BaseException as exc:
                await worker.kill()
                if isinstance(exc, Exception):
                    raise WorkerCrashed(
                        "the worker process running this job died before it answered (killed "
                        "by the OOM killer or a signal, or a crash in native code); the attempt "
                        f"is retried. If it keeps happening, the document crashes it: {exc!r}"
                    ) from None
                raise  # cancelled: the worker is killed, a fresh one serves the next call
            self._idle.append(worker)
        finally:
            limiter.release()
        if ok:
            return cast(T, value)  # unpickled: what ``func`` returned
        raise value

    async def _take(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
            await worker.kill()  # died while idle (killed from outside): reap it
        # Shielded: a worker half-started would be lost; a start takes well under a second.
        with anyio.CancelScope(shield=True):
            worker = await _Worker.start(self.memory_bytes, self.preload)
            self.started += 1
        try:
            await anyio.lowlevel.checkpoint()
        except BaseException:
            self._idle.append(worker)  # a cancelled caller leaves the fresh worker idle
            raise
        return worker

    async def aclose(self) -> None:
        """Kill the idle workers (busy ones are killed by their callers' cancellation)."""
        idle, self._idle = self._idle, []
        for worker in idle:
            await worker.kill()


def default_pool(
    memory_mib: int, *, preload: tuple[str, ...] = ("actors.documents",)
) -> WorkerPool:
    """A worker per CPU, for a processor built without a shared pool."""
    return WorkerPool(os.cpu_count() or 2, memory_mib=memory_mib, preload=preload)


def serve_worker() -> None:
    """A worker's main loop (its arguments: MEMORY_BYTES [MODULE...]); see `WorkerPool`."""
    # The protocol keeps the original stdout; anything else written to fd 1 (print, C code)
    # goes to stderr instead, so that no stray output corrupts an answer.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    sys.stdin = open(os.devnull)  # noqa: SIM115 - for the worker's whole life
    _guard_against_orphaning()
    memory_bytes = int(sys.argv[1])
    if memory_bytes > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    for module in sys.argv[2:]:
        # One that cannot be imported here is imported again by the first job that needs it,
        # which then fails with the error (a worker that died here would only say it died).
        with contextlib.suppress(ImportError):
            __import__(module)
    answers.write(b"READY\n")
    answers.flush()
    while True:
        header = requests.readline()
        if not header:
            return  # the parent closed our stdin: it is done with us
        ok, value = True, None
        try:
            func, args = pickle.loads(requests.read(int(header)))
            value = func(*args)
        except MemoryError:
            ok, value = False, _out_of_memory(memory_bytes)
        except BaseException as exc:  # the job's error, reported to the parent
            ok, value = False, exc
        try:
            payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            ok = False
            payload = pickle.dumps(
                TypeError(f"the worker's answer cannot be pickled: {type(exc).__name__}: {exc}")
            )
        answers.write(b"%s %d\n" % (b"OK" if ok else b"ERR", len(payload)))
        answers.write(payload)
        answers.flush()


def _out_of_memory(memory_bytes: int) -> OutOfMemory:
    limit = f"{memory_bytes // 2**20} MiB" if memory_bytes else "the host's memory"
    return OutOfMemory(
        f"processing needed more memory than its worker process may use ({limit}, "
        "[processor].worker_memory_mib); the document is too large or built to exhaust memory "
        "(a decompression bomb). Split it, or raise the limit if it is legitimate"
    )


def _guard_against_orphaning() -> None:
    """Have the kernel kill this worker when its parent dies (Linux).

    A worker busy with a runaway job never reads its stdin, so it would not notice a parent
    killed with SIGKILL and would burn a core until the job ended on its own.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):  # no libc symbol: run unguarded
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
