"""A processor for cancel tests (``[processor] kind = "python"``, ``factory = "patient:make"``):
a document that says QUICK is done at once, any other takes ``SECONDS``; a processing call that
is cancelled appends its job's id to the file ``$ACTORS_TEST_CANCEL_LOG`` (then lets the
cancellation go on), so the test sees which processors observed it. A slow document's process
id goes to ``$ACTORS_TEST_PIDS`` first (with ``isolate = true``: the worker process's)."""

from __future__ import annotations

import os
from typing import Any

SECONDS = 30.0


class Patient:
    def __init__(self, settings: Any) -> None:
        self.settings = settings

    async def process(self, job: Any, data: bytes, content_type: str | None) -> Any:
        import anyio

        from actors.processors import ProcessorOutput

        if b"QUICK" not in data:
            _append(os.environ["ACTORS_TEST_PIDS"], os.getpid())
            try:
                await anyio.sleep(SECONDS)
            except anyio.get_cancelled_exc_class():
                _append(os.environ["ACTORS_TEST_CANCEL_LOG"], job.id)
                raise
        return ProcessorOutput(result={"size": len(data)})

    async def aclose(self) -> None:
        pass


def _append(path: str, value: int) -> None:
    # One short line to a local file: too brief to be worth a thread.
    with open(path, "a") as file:
        file.write(f"{value}\n")


def make(settings: Any) -> Patient:
    return Patient(settings)
