"""Logging: the library's loggers, and the setup a program opts into.

The library never configures logging. Its modules log through :func:`get_logger`
(``supervisors.log``'s proxy): structlog when the host configured structlog, else the stdlib
logger of the same name, so an unconfigured host sees only warnings and errors, on stderr.

:func:`configure_logging` is what ``python -m actors`` calls, and what a host may call to
get the same output: one stream, one format, for structlog events and for every stdlib
logger (hypercorn, asyncpg, botocore, httpx ...), rendered by the same processors. It is the
only function here that calls ``structlog.configure``.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Literal, TextIO

import msgspec

from supervisors.log import get_logger, reset_loggers

if TYPE_CHECKING:
    from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# The root handler configure_logging installed, replaced when it is called again.
_handler: logging.StreamHandler[TextIO] | None = None


def configure_logging(
    level: Literal["debug", "info", "warning", "error"] = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    stream: TextIO | None = None,
) -> None:
    """Send structlog events and stdlib records to ``stream`` (stderr), one line each.

    ``fmt="auto"`` renders for a person on a terminal (structlog's console renderer, local
    ``HH:MM:SS`` timestamps) and JSON lines otherwise (UTC ISO timestamps, encoded by
    msgspec). ``level`` filters structlog events; stdlib loggers of other libraries pass at
    warning and above (or ``level`` if higher) unless the host sets their level itself, so
    per-request INFO lines of httpx or hypercorn stay out of the stream.

    Call it once, before the first log line: loggers cache the configuration on first use
    (``cache_logger_on_first_use``); a later call resets the library's loggers.
    """
    import structlog  # only a program that configures logging pays for its import

    global _handler
    stream = sys.stderr if stream is None else stream
    json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        _unwrap_single_exception_groups,
        structlog.processors.TimeStamper(fmt="iso", utc=True)
        if json
        else structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_json_dumps)
        if json
        # Plain tracebacks: rich's (structlog's default when rich is installed) take ~0.3 s
        # each, which a crash-looping actor would turn into a stalled event loop.
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    exc_info: Processor = (
        structlog.processors.format_exc_info if json else structlog.dev.set_exc_info
    )

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if json else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, _LEVELS[level]))
    _handler = handler

    processors: list[Processor] = [*shared, exc_info, renderer]
    if structlog.is_configured():
        # In place, as structlog.testing.capture_logs does: a logger another module cached
        # before this call renders with these processors (and is captured by capture_logs).
        structlog.get_config()["processors"][:] = processors
        processors = structlog.get_config()["processors"]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_LineLogger,
        cache_logger_on_first_use=True,
    )
    reset_loggers()


def _add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``logger``: the stdlib record's name, or the name given to ``get_logger``."""
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _unwrap_single_exception_groups(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Log the one exception a group of one wraps (a task group's), not the group around it."""
    exc_info = event_dict.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        event_dict["exc_info"] = exc
    return event_dict


def _json_fallback(value: Any) -> Any:
    """Encode what msgspec cannot as structlog's JSONRenderer does: ``__structlog__`` or repr."""
    structlog_repr = getattr(value, "__structlog__", None)
    return structlog_repr() if structlog_repr is not None else repr(value)


def _json_dumps(event_dict: EventDict, **_: Any) -> str:
    """JSONRenderer's serializer: msgspec, about twice as fast as ``json.dumps``."""
    return _ENCODER.encode(event_dict).decode()


class _LineLogger:
    """structlog's output end: writes rendered lines to the root handler's stream, under its lock.

    structlog events skip stdlib's record machinery but share the stream and lock of the
    handler `configure_logging` installed last, so lines from threads (botocore, the asyncio
    bridge) never interleave, and a logger cached before a reconfiguration writes where the
    new one does.
    """

    def __init__(self, *args: Any) -> None:
        self.name = args[0] if args and isinstance(args[0], str) else None

    def msg(self, message: str) -> None:
        handler = _handler
        if handler is None:
            return
        handler.acquire()
        try:
            handler.stream.write(message + "\n")
            handler.stream.flush()
        finally:
            handler.release()

    debug = info = warning = warn = error = exception = critical = fatal = msg


_ENCODER = msgspec.json.Encoder(enc_hook=_json_fallback)
