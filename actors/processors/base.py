"""The processor contract: what a processor is given (`JobInput`), returns and may raise."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

__all__ = ["JobInput", "Processor", "ProcessorOutput"]


class JobInput(msgspec.Struct, frozen=True, kw_only=True):
    """What a processor knows of the job whose object it processes (plain data; picklable).

    ``key`` is the object's key in the store (``TENANT/RUN/NAME`` for ``submit``); its last
    segment is the document's file name. ``payload`` is what the job was enqueued with.
    """

    id: int
    run_id: str
    tenant_id: str
    key: str
    payload: Any = None

    @property
    def r2_key(self) -> str:
        """``key``, under the name a job's object key has in the queue and on the wire."""
        return self.key


class ProcessorOutput(msgspec.Struct, frozen=True, kw_only=True):
    """A job's result and the numbers added to its run's aggregates."""

    result: Any
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


class Processor(Protocol):
    """What the processor stage needs from a processor (offline, Gemini, your own...).

    ``process`` turns a job's object (``data``, whole, with the type the store knows of it)
    into the job's `ProcessorOutput`, whose ``result`` the queue stores as JSON (256 KiB at
    most by default).

    Error handling: raise `DocumentError` when retrying cannot help (the job fails at once);
    any other exception fails the attempt, which the queue retries with backoff.

    Optional: ``honours_cancellation = True`` tells the stage that ``process`` returns at once
    when cancelled (it is then cancelled in place at the job's time limit, not run in a task
    that can be abandoned); ``process_now(job, data, content_type)`` returns a result computed
    at once on the loop's thread, in a bounded time, or None to have ``process`` called.
    """

    async def process(
        self, job: JobInput, data: bytes, content_type: str | None
    ) -> ProcessorOutput: ...

    async def aclose(self) -> None: ...
