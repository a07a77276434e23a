"""Your own processors (``[processor] kind = "python"``): built by import path, optionally in
worker processes."""

from __future__ import annotations

import importlib
from types import ModuleType

import anyio
import msgspec

from actors.config import ProcessorConfig
from actors.errors import ConfigError
from actors.processors._workers import WorkerPool, default_pool
from actors.processors.base import JobInput, Processor, ProcessorOutput

__all__ = ["IsolatedProcessor", "check_factory", "from_factory", "worker_modules"]

# In a worker process: the processors `IsolatedProcessor` built there, by their settings.
_built: dict[bytes, Processor] = {}


def _process_isolated(
    settings: ProcessorConfig, job: JobInput, data: bytes, content_type: str | None
) -> ProcessorOutput:
    """In a worker process: build the factory's processor once, run one job on a fresh loop."""
    key = msgspec.json.encode(settings)
    processor = _built.get(key)
    if processor is None:
        processor = _built[key] = from_factory(settings)
    return anyio.run(processor.process, job, data, content_type)


class IsolatedProcessor:
    """A ``[processor] kind = "python"`` processor with ``isolate = true``.

    The factory is called in each worker process (not in this one) and each job runs there on
    an event loop of its own (asyncio), so a job that blocks its loop, runs away or allocates
    without bound harms only its worker, which is killed at the job's time limit. Arguments
    and results cross the process boundary pickled.
    """

    honours_cancellation = True

    def __init__(self, settings: ProcessorConfig, pool: WorkerPool | None = None) -> None:
        self._settings = settings
        self._own_pool = pool is None
        self._pool = pool or default_pool(
            settings.worker_memory_mib, preload=worker_modules(settings)
        )

    async def process(
        self, job: JobInput, data: bytes, content_type: str | None
    ) -> ProcessorOutput:
        return await self._pool.run(_process_isolated, self._settings, job, data, content_type)

    async def aclose(self) -> None:
        """Stop the worker processes, if the pool is this processor's own."""
        if self._own_pool:
            await self._pool.aclose()


def worker_modules(settings: ProcessorConfig) -> tuple[str, ...]:
    """The modules a worker process imports before it is ready: the offline processor's and,
    for an isolated processor, this module and its factory's. A job's time limit leaves out a
    worker's start (`TimeLimit`), so it counts the job's processing, not these imports (a
    second or more on a loaded machine)."""
    modules: tuple[str, ...] = ("actors.documents",)
    if settings.kind == "python" and settings.isolate and ":" in (settings.factory or ""):
        modules += (__name__, (settings.factory or "").partition(":")[0])
    return modules


def from_factory(settings: ProcessorConfig) -> Processor:
    """The processor that ``[processor].factory`` ("package.module:callable") returns."""
    module, attribute = _import(settings)
    try:
        factory = getattr(module, attribute)
    except AttributeError as exc:
        raise ConfigError(_unimportable(settings, exc)) from None
    processor: Processor = factory(settings)  # a user's callable: the protocol is its contract
    return processor


def check_factory(settings: ProcessorConfig) -> None:
    """Raise the `ConfigError` of a malformed factory or a missing module here, at start-up,
    rather than in every worker process; the factory itself is not called."""
    _import(settings)


def _import(settings: ProcessorConfig) -> tuple[ModuleType, str]:
    """The factory's module, imported, and the name of the callable in it."""
    if not settings.factory or ":" not in settings.factory:
        raise ConfigError(
            '[processor].kind = "python" needs [processor].factory = '
            '"package.module:callable", a callable that takes the [processor] table '
            "and returns a processor"
        )
    module_name, _, attribute = settings.factory.partition(":")
    try:
        return importlib.import_module(module_name), attribute
    except ImportError as exc:
        raise ConfigError(_unimportable(settings, exc)) from None


def _unimportable(settings: ProcessorConfig, exc: Exception) -> str:
    return (
        f"[processor].factory = {settings.factory!r} cannot be imported: {exc}. Check the name "
        "and that its package is on PYTHONPATH"
    )
