"""The loop watchdog: measures how late the event loop wakes a sleeper; warns when it is blocked."""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from actors.log import get_logger

__all__ = ["LoopWatchdog"]

log = get_logger("actors.watchdog")


class LoopWatchdog:
    """Sleeps ``interval`` seconds again and again; how much later than asked it wakes is the lag.

    A lag is time during which nothing else on the loop ran: no lease was renewed, no request
    answered, no signal handled. Some code held the loop's thread (a processor that blocks, a
    long computation on the loop) or the machine is starved of CPU. A lag of ``warn_seconds``
    or more logs ``loop.blocked`` once the loop is back; `take_max` gives ``/metrics`` the
    largest lag since the previous scrape. It reads the event loop's own clock (what a
    deadline on the loop sees), not the system's injectable clock.
    """

    def __init__(self, *, interval: float = 0.25, warn_seconds: float = 1.0) -> None:
        self.interval = interval
        self.warn_seconds = warn_seconds
        self.last_lag = 0.0
        self.blocked = 0  # lags of warn_seconds or more so far
        self._max_lag = 0.0

    def take_max(self) -> float:
        """The largest lag since the previous call (or the start), and start a new window."""
        lag, self._max_lag = self._max_lag, 0.0
        return lag

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            start = anyio.current_time()
            await anyio.sleep(self.interval)
            lag = max(0.0, anyio.current_time() - start - self.interval)
            self.last_lag = lag
            self._max_lag = max(self._max_lag, lag)
            if lag >= self.warn_seconds:
                self.blocked += 1
                log.warning(
                    "loop.blocked",
                    lag_seconds=round(lag, 3),
                    hint="something held the event loop's thread: a processor that blocks "
                    '(set [processor] isolate = true for kind = "python"), or a starved CPU',
                )
