"""Aggregate progress on stderr: a live bar on a terminal (rich), else a status line now and then.

Commands that work through many items (``run --until-idle``, ``submit``, ``store migrate run``)
report counts, never one line per item. `Progress.update` may be called as often as the caller
likes; it renders at most `REFRESH_SECONDS` apart, so a display costs nothing per item. With
``rich`` installed (the ``tui`` extra) and stderr a terminal, the display is rich's progress
bar, cleared when it closes so that what the command prints last stays last. Otherwise one
plain line is written every ``ACTORS_PROGRESS_SECONDS`` (10 s by default), and none at all for
work shorter than that.

A ``run`` that goes on until stopped has no end to show a bar towards: `Progress.for_service`
writes the plain line on a terminal (its rate that of the last interval, and no line while
nothing changes), logs it at debug level elsewhere, and is ``None`` when neither would show.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["REFRESH_SECONDS", "Progress", "log_stream"]

#: At most four renders a second: smooth to the eye, and nothing per item.
REFRESH_SECONDS = 0.25
_PLAIN_SECONDS = 10.0


def _rich_console(stream: TextIO) -> Any | None:
    """A rich console on ``stream`` if rich is installed and ``stream`` is a terminal."""
    if not stream.isatty() or os.environ.get("TERM") == "dumb":
        return None
    try:
        from rich.console import Console
    except ImportError:  # the `tui` extra is not installed: plain lines
        return None
    # soft_wrap: log lines are left for the terminal to wrap, not broken with newlines.
    return Console(file=stream, stderr=stream is sys.stderr, soft_wrap=True)


_consoles: dict[int, Any] = {}


def _console(stream: TextIO) -> Any | None:
    """One rich console per stream, shared by the log stream and the progress display."""
    key = id(stream)
    if key not in _consoles:
        _consoles[key] = _rich_console(stream)
    return _consoles[key]


def log_stream(stream: TextIO | None = None) -> TextIO:
    """Where log lines should go so that a live display keeps below them.

    On a terminal with rich, a proxy that prints each line above the progress bar; otherwise
    ``stream`` (stderr) itself.
    """
    stream = sys.stderr if stream is None else stream
    console = _console(stream)
    if console is None:
        return stream
    from rich.file_proxy import FileProxy

    proxy: TextIO = FileProxy(console, stream)  # type: ignore[assignment]  # file-like
    return proxy


def _plain_seconds_from_env() -> float:
    """``ACTORS_PROGRESS_SECONDS``, or the default; a value that is not a number of seconds
    (finite, at least 0) is a ConfigError naming it."""
    text = os.environ.get("ACTORS_PROGRESS_SECONDS")
    if text is None:
        return _PLAIN_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        from actors.errors import ConfigError

        raise ConfigError(f"ACTORS_PROGRESS_SECONDS must be a number of seconds >= 0, not {text!r}")
    return seconds


def _duration(seconds: float) -> str:
    """``seconds`` rounded up (an ETA of work still pending is never "0s")."""
    seconds = math.ceil(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Done, failed and pending counts of one piece of work, with its rate and ETA.

    Use as a context manager; `update` with the latest counts whenever they are known.
    """

    def __init__(
        self,
        label: str,
        *,
        unit: str = "jobs",
        stream: TextIO | None = None,
        plain_seconds: float | None = None,
        bar: bool = True,
        log: Any = None,
    ) -> None:
        self.label = label
        self.unit = unit
        self._stream = sys.stderr if stream is None else stream
        if plain_seconds is None:
            plain_seconds = _plain_seconds_from_env()
        self._plain_seconds = plain_seconds
        # A service's status (`for_service`): plain lines only, each with the rate of the
        # interval before it and only when a count changed; with ``log``, debug events instead.
        self._bar_wanted = bar
        self._log = log
        self._started = time.monotonic()
        self._rendered_at = self._started
        self._plain_at = self._started
        self._counts: tuple[int, int, int] = (0, 0, 0)
        self._cancelled = 0
        self._since: tuple[float, int] = (self._started, 0)  # when the rate is counted from
        self._shown: tuple[int, int, int] | None = None if bar else (0, 0, 0)
        self._bar: Any = None
        self._task: Any = None
        self.lines = 0  # plain lines written

    @classmethod
    def for_service(
        cls, label: str, *, debug: bool, stream: TextIO | None = None
    ) -> Progress | None:
        """The status of a process that runs until stopped: a plain line every
        ``ACTORS_PROGRESS_SECONDS`` while its counts change, on ``stream`` (stderr) if that is a
        terminal, else a debug event if ``debug``, else nothing (``None``)."""
        stream = sys.stderr if stream is None else stream
        if stream.isatty():
            return cls(label, stream=stream, bar=False)
        if debug:
            from actors.log import get_logger

            return cls(label, stream=stream, bar=False, log=get_logger("actors.service"))
        return None

    @property
    def live(self) -> bool:
        """Whether the display is rich's live bar (else plain lines)."""
        return self._bar is not None

    def __enter__(self) -> Progress:
        console = _console(self._stream) if self._bar_wanted else None
        if console is not None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=console,
                transient=True,  # cleared on close: the summary printed after it stays last
                auto_refresh=False,  # rendered from update(), at most every REFRESH_SECONDS
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None, detail="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Clear the live bar (a plain display has nothing to clear)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def update(
        self, done: int, failed: int, pending: int, cancelled: int = 0, *, force: bool = False
    ) -> None:
        """Record the counts; render them if the last render is `REFRESH_SECONDS` old."""
        self._counts = (done, failed, pending)
        self._cancelled = cancelled
        now = time.monotonic()
        if not force and now - self._rendered_at < REFRESH_SECONDS:
            return
        self._rendered_at = now
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=done + failed + cancelled,
                total=done + failed + cancelled + pending,
                detail=self._detail(now),
            )
            self._bar.refresh()
        elif now - self._plain_at >= self._plain_seconds:
            self._plain_at = now
            if self._shown is not None:  # a service's status: a line only when a count moved
                if self._counts == self._shown:
                    self._since = (now, done + failed)
                    return
                self._shown = self._counts
            if self._log is not None:
                self._log.debug(
                    "system.progress", done=done, failed=failed, pending=pending,
                    cancelled=cancelled, rate=round(self._rate(now), 1),
                )  # fmt: skip
            else:
                self._stream.write(self.status(now) + "\n")
                self._stream.flush()
                self.lines += 1
            if self._shown is not None:
                self._since = (now, done + failed)

    def _rate(self, now: float) -> float:
        done, failed, _ = self._counts
        since, finished = self._since
        elapsed = now - since
        return (done + failed - finished) / elapsed if elapsed > 0 else 0.0

    def _detail(self, now: float) -> str:
        done, failed, pending = self._counts
        rate = self._rate(now)
        cancelled = f"{self._cancelled} cancelled, " if self._cancelled else ""
        return (
            f"{done} done, {failed} failed, {cancelled}{pending} pending, {rate:.1f} {self.unit}/s"
        )

    def status(self, now: float | None = None) -> str:
        """The counts, rate and ETA in one line."""
        now = time.monotonic() if now is None else now
        _, _, pending = self._counts
        rate = self._rate(now)
        eta = f", ETA {_duration(pending / rate)}" if rate > 0 and pending else ""
        return f"{self.label}: {self._detail(now)}{eta}"
