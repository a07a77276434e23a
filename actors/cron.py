"""`Cadence`: when a schedule's ticks fall (a cron expression in a time zone, or an interval).

The cron expressions are cronsim's (five fields, or six with seconds last; docs/decisions.md,
"Schedules: the cron parser"): it reads them the way Debian's cron does, daylight saving time
included. A tick that falls in the hour skipped in spring runs when the clocks have moved on
(02:30 becomes 03:00), and one in the hour repeated in autumn runs once. An interval ticks at
the multiples of its seconds since the Unix epoch, whatever the time zone, so every process
agrees on its ticks without sharing anything. Ticks are whole seconds since the epoch.

This module imports nothing of ours but the errors; cronsim and zoneinfo load on first use.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING

from actors.errors import InvalidArgument

if TYPE_CHECKING:
    from cronsim import CronSim

__all__ = ["Cadence", "cadence", "tick_text"]

# cronsim gives up when nothing matches within 50 years ("0 0 31 2 *" is refused earlier).
_NEVER = "never matches a date (within 50 years)"


class Cadence:
    """A schedule's timing: ``cron`` in ``timezone``, or every ``interval_seconds``."""

    __slots__ = ("_zone", "cron", "interval_seconds", "timezone")

    def __init__(self, cron: str | None, interval_seconds: int | None, timezone: str) -> None:
        """Refuse (`InvalidArgument`, naming the field) a bad expression, zone or interval."""
        if (cron is None) == (interval_seconds is None):
            raise InvalidArgument(
                "cron or interval_seconds: a schedule has either cron (e.g. '*/10 * * * *') or "
                f"interval_seconds, not {'both' if cron is not None else 'neither'}"
            )
        self.cron = cron
        self.interval_seconds = interval_seconds
        self.timezone = timezone
        self._zone = zone(timezone)
        if interval_seconds is not None:
            if isinstance(interval_seconds, bool) or not isinstance(interval_seconds, int):
                raise InvalidArgument(
                    f"interval_seconds must be a whole number of seconds, not {interval_seconds!r}"
                )
            if not 1 <= interval_seconds <= 366 * 86_400:
                raise InvalidArgument(
                    f"interval_seconds must be between 1 and {366 * 86_400}, not {interval_seconds}"
                )
            return
        assert cron is not None
        try:
            self._iterator(0.0, reverse=False)
        except InvalidArgument:
            raise
        except Exception as exc:  # cronsim's CronSimError: "Bad minute", ...
            raise InvalidArgument(
                f"cron {cron!r} is not a cron expression: {exc}. Write five fields (minute hour "
                "day-of-month month day-of-week, e.g. '30 2 * * *'), or six with seconds last"
            ) from None
        if not math.isfinite(self.next_after(0.0)):
            raise InvalidArgument(f"cron {cron!r} {_NEVER}; check its day and month fields")

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t`` (``inf`` if there is none within 50 years)."""
        if self.interval_seconds is not None:
            step = self.interval_seconds
            return float((math.floor(t / step) + 1) * step)
        return self._step(t, reverse=False)

    def previous_before(self, t: float) -> float:
        """The last tick strictly before ``t`` (``-inf`` if there is none within 50 years)."""
        if self.interval_seconds is not None:
            step = self.interval_seconds
            return float((math.ceil(t / step) - 1) * step)
        return self._step(t, reverse=True)

    def _step(self, t: float, *, reverse: bool) -> float:
        try:
            return next(self._iterator(t, reverse=reverse)).timestamp()
        except StopIteration:
            return -math.inf if reverse else math.inf

    def _iterator(self, t: float, *, reverse: bool) -> CronSim:
        from cronsim import CronSim  # only a process with cron schedules loads it

        assert self.cron is not None
        return CronSim(self.cron, datetime.fromtimestamp(t, self._zone), reverse=reverse)

    def __repr__(self) -> str:
        if self.cron is not None:
            return f"Cadence(cron={self.cron!r}, timezone={self.timezone!r})"
        return f"Cadence(interval_seconds={self.interval_seconds})"


@functools.lru_cache(maxsize=1024)
def cadence(cron: str | None, interval_seconds: int | None, timezone: str) -> Cadence:
    """The `Cadence` of these fields (cached: the firing round builds one per due schedule)."""
    return Cadence(cron, interval_seconds, timezone)


@functools.lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    """The time zone called ``name`` in the IANA database, or `InvalidArgument`."""
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgument(
            f"timezone {name!r} is not a time zone of the IANA database; write a name such "
            "as 'UTC', 'Europe/Berlin' or 'America/New_York' (on a host without "
            "/usr/share/zoneinfo, pip install tzdata)"
        ) from None


def tick_text(tick: float) -> str:
    """A tick as compact UTC text, ``20261202T044500Z``: a part of its job's keys."""
    return datetime.fromtimestamp(tick, UTC).strftime("%Y%m%dT%H%M%SZ")
