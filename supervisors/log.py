"""Library loggers: structlog when the host configured it, stdlib ``logging`` otherwise.

A library must not decide where its host's logs go. Unconfigured structlog prints every
event to stdout, so a module-level ``get_logger()`` in a library writes into a
host program's output. :func:`get_logger` returns a proxy that decides at each first use:

- structlog configured (``structlog.configure``, ``actors.configure_logging``, or
  ``structlog.testing.capture_logs``): the event goes through structlog's configured
  pipeline, with the configured level filter. When the configuration asks for
  ``cache_logger_on_first_use``, the proxy keeps the configured logger's methods as its
  own attributes, so a filtered-out ``log.debug(...)`` is one attribute lookup and an
  empty call; :func:`reset_loggers` drops them after a reconfiguration.
- otherwise: the event goes to the stdlib logger of the same name as one line,
  ``event key=value ...``, so an unconfigured host sees warnings and errors on stderr
  (through ``logging.lastResort``) and nothing else, as with httpx or asyncpg; a host that
  configured ``logging`` gets the records where it sends everything else.

structlog itself is imported only when the host has imported it: a short-lived command
that logs nothing does not pay for it.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Mapping
from typing import Any

__all__ = ["Logger", "get_logger", "reset_loggers"]

# The methods a proxy copies from a cached structlog logger onto itself.
_CACHED = ("debug", "info", "warning", "warn", "error", "exception", "critical", "log", "bind")

_PROXIES: weakref.WeakSet[Logger] = weakref.WeakSet()


def get_logger(name: str) -> Any:
    """Return the library logger ``name`` (a :class:`Logger`); use it like a structlog logger."""
    return Logger(name)


def reset_loggers() -> None:
    """Forget the structlog loggers proxies cached, so they follow a new configuration."""
    for proxy in list(_PROXIES):
        for method in _CACHED:
            proxy.__dict__.pop(method, None)


class Logger:
    """A structlog-shaped logger that picks structlog or stdlib ``logging`` when used.

    Its methods resolve the target on each call until structlog's configuration allows
    caching; then the target's methods, stored on the instance, shadow them.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._stdlib = _StdlibLogger(logging.getLogger(name), {})
        _PROXIES.add(self)

    def __repr__(self) -> str:
        return f"<Logger {self.name}>"

    def _target(self) -> Any:
        structlog = sys.modules.get("structlog")
        if structlog is None or not structlog.is_configured():
            return self._stdlib
        bound = structlog.get_logger(self.name).bind()
        if structlog.get_config()["cache_logger_on_first_use"]:
            for method in _CACHED:
                setattr(self, method, getattr(bound, method))
        return bound

    def debug(self, event: str, *args: Any, **fields: Any) -> Any:
        return self._target().debug(event, *args, **fields)

    def info(self, event: str, *args: Any, **fields: Any) -> Any:
        return self._target().info(event, *args, **fields)

    def warning(self, event: str, *args: Any, **fields: Any) -> Any:
        return self._target().warning(event, *args, **fields)

    warn = warning

    def error(self, event: str, *args: Any, **fields: Any) -> Any:
        return self._target().error(event, *args, **fields)

    def exception(self, event: str, *args: Any, **fields: Any) -> Any:
        return self._target().exception(event, *args, **fields)

    def critical(self, event: str, *args: Any, **fields: Any) -> Any:
        return self._target().critical(event, *args, **fields)

    def log(self, level: int, event: str, *args: Any, **fields: Any) -> Any:
        return self._target().log(level, event, *args, **fields)

    def bind(self, **values: Any) -> Any:
        """Return a logger that adds ``values`` to every event, resolved now."""
        return self._target().bind(**values)


class _StdlibLogger:
    """structlog's calling convention on a stdlib logger: ``log.info("event", key=value)``."""

    __slots__ = ("_context", "_logger")

    def __init__(self, logger: logging.Logger, context: Mapping[str, Any]) -> None:
        self._logger = logger
        self._context = context

    def bind(self, **values: Any) -> _StdlibLogger:
        return _StdlibLogger(self._logger, {**self._context, **values})

    def debug(self, event: str, *args: Any, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.DEBUG):
            self._emit(logging.DEBUG, event, args, fields)

    def info(self, event: str, *args: Any, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, event, args, fields)

    def warning(self, event: str, *args: Any, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, event, args, fields)

    warn = warning

    def error(self, event: str, *args: Any, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.ERROR):
            self._emit(logging.ERROR, event, args, fields)

    def exception(self, event: str, *args: Any, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self.error(event, *args, **fields)

    def critical(self, event: str, *args: Any, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.CRITICAL):
            self._emit(logging.CRITICAL, event, args, fields)

    def log(self, level: int, event: str, *args: Any, **fields: Any) -> None:
        if self._logger.isEnabledFor(level):
            self._emit(level, event, args, fields)

    def _emit(self, level: int, event: str, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
        exc_info = fields.pop("exc_info", None)
        pairs = {**self._context, **fields}
        head = event % args if args else event  # structlog's positional interpolation
        message = " ".join([head, *(f"{key}={value!r}" for key, value in pairs.items())])
        # The record names the line that logged, above this module's frames.
        stacklevel, frame = 2, sys._getframe(1)
        while frame.f_code.co_filename == __file__ and frame.f_back is not None:
            stacklevel, frame = stacklevel + 1, frame.f_back
        self._logger.log(level, message, exc_info=exc_info, stacklevel=stacklevel)
