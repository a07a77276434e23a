"""Processors for process tests: ``[processor] kind = "python"``, ``factory = "faulty:..."``."""

from __future__ import annotations

from typing import Any


class Crashing:
    """Raises an unexpected error on every document: a bug, not a document error (each job
    fails with it, the processor goes on)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    async def process(self, job: Any, data: bytes, content_type: str | None) -> Any:
        raise ZeroDivisionError(f"injected processor bug on job {job.id}")

    async def aclose(self) -> None:
        pass


def crash(settings: Any) -> Crashing:
    return Crashing(settings)


class Broken:
    """Breaks the Processor protocol on every document (returns None): the stage crashes."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    async def process(self, job: Any, data: bytes, content_type: str | None) -> Any:
        return None

    async def aclose(self) -> None:
        pass


def broken(settings: Any) -> Broken:
    return Broken(settings)


class Slow:
    """Takes a minute per document: long enough that only a second signal ends a drain."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    async def process(self, job: Any, data: bytes, content_type: str | None) -> Any:
        import anyio

        await anyio.sleep(60)
        raise AssertionError("a test should have stopped this processor long ago")

    async def aclose(self) -> None:
        pass


def slow(settings: Any) -> Slow:
    return Slow(settings)


class Leisurely:
    """Takes 50 ms per document, so that a run is long enough to be killed in the middle; a
    document that says POISON kills the whole process (SIGKILL) instead."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    async def process(self, job: Any, data: bytes, content_type: str | None) -> Any:
        import os
        import signal

        import anyio

        from actors.processors import ProcessorOutput

        if b"POISON" in data:
            os.kill(os.getpid(), signal.SIGKILL)
        await anyio.sleep(0.05)
        return ProcessorOutput(result={"size": len(data)}, metrics={"bytes": float(len(data))})

    async def aclose(self) -> None:
        pass


def leisurely(settings: Any) -> Leisurely:
    return Leisurely(settings)
