"""Poison processors: ``[processor] kind = "python"``, ``factory = "processors:poison"``.

A document whose first line names a poison gets it; any other document is processed by the
offline processor. The poisons: ``ALLOCATE`` allocates without bound; ``HANG-ASYNC`` awaits
for ever; ``HANG-THREAD`` waits for ever on a blocking call in a worker thread (nothing can
interrupt it); ``BLOCK-LOOP-SLEEP`` and ``BLOCK-LOOP-BUSY`` hold the event loop's thread (a
``time.sleep``, a busy loop). Each logs ``poison.started`` first, so a test knows it runs.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import structlog

from actors.processors import ProcessorOutput, process_locally

log = structlog.get_logger("poison")


class Poison:
    def __init__(self, settings: Any) -> None:
        self.settings = settings

    async def process(self, job: Any, data: bytes, content_type: str | None) -> ProcessorOutput:
        poison = data.split(b"\n", 1)[0].strip().decode("ascii", "replace")
        if poison in _POISONS:
            log.warning("poison.started", poison=poison, job_id=job.id)
            await _POISONS[poison]()
            raise AssertionError(f"{poison} should never end on its own")
        return process_locally(self.settings, data, job.key, content_type)

    async def aclose(self) -> None:
        pass


async def _allocate() -> None:
    hoard = []
    size = 16 * 1024 * 1024
    while True:  # doubling: the cap is reached after touching less than the cap
        hoard.append(bytearray(size))
        size *= 2


async def _hang_async() -> None:
    await anyio.sleep_forever()


async def _hang_thread() -> None:
    await anyio.to_thread.run_sync(time.sleep, 3600)


async def _block_loop_sleep() -> None:
    time.sleep(3600)  # noqa: ASYNC251 - the poison: it holds the event loop's thread


async def _block_loop_busy() -> None:
    while True:
        pass


_POISONS = {
    "ALLOCATE": _allocate,
    "HANG-ASYNC": _hang_async,
    "HANG-THREAD": _hang_thread,
    "BLOCK-LOOP-SLEEP": _block_loop_sleep,
    "BLOCK-LOOP-BUSY": _block_loop_busy,
}


def poison(settings: Any) -> Poison:
    return Poison(settings)
