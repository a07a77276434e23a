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
