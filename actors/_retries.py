"""Bounded retries of a call to a network peer (S3, PostgreSQL) on stamina, logged as ours.

`retrying` runs a call again while a predicate says its failure is transient, waiting an
exponentially growing, capped, jittered time between tries (stamina on tenacity; trio-aware
through sniffio; `stamina.set_testing` makes the waits zero in tests).

Instrumentation: stamina's default retry hooks log through structlog's *default* configuration
(stdout, if the host configured none) and count in prometheus_client's global registry. A
library must not write to its host's stdout, so on its first retry `retrying` installs one hook
in front of whatever hooks stamina has then: a retry of ours becomes one line on the caller's
own logger, at the caller's level and under the caller's event name (where `actors.log`
sends everything: stdlib `logging` unless the host configured structlog, never stdout); any other
retry of the process (the host's own stamina calls) goes on to the hooks it had before,
unchanged. Hooks a host sets later are wrapped the same way at our next retry.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import stamina
from stamina.instrumentation import (
    RetryDetails,
    RetryHook,
    get_on_retry_hooks,
    set_on_retry_hooks,
)

__all__ = ["retrying"]

T = TypeVar("T")


class _Ours:
    """How to log a retry of the `retrying` call running in this context."""

    __slots__ = ("describe", "event", "fields", "level", "log")

    def __init__(
        self,
        log: Any,
        level: str,
        event: str,
        fields: Mapping[str, object],
        describe: Callable[[Exception], str],
    ) -> None:
        self.log, self.level, self.event = log, level, event
        self.fields, self.describe = fields, describe


# Set while a `retrying` call runs: the hook runs in the retrying task's context.
_current: contextvars.ContextVar[_Ours | None] = contextvars.ContextVar(
    "actors_retrying", default=None
)
_installing = threading.Lock()  # the S3 store's and PostgreSQL's loops may be two threads


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    on: Callable[[Exception], bool],
    attempts: int | None,
    wait_initial: float,
    wait_max: float,
    wait_jitter: float,
    log: Any,
    event: str,
    level: str = "info",
    describe: Callable[[Exception], str] = str,
    **fields: object,
) -> T:
    """Await ``call()`` until it returns, raises what ``on`` does not retry, or has been tried
    ``attempts`` times (``None``: for ever); then its last exception propagates.

    The n-th wait is ``min(wait_max, wait_initial * 2 ** (n - 1) + uniform(0, wait_jitter))``.
    Each retry is one ``log.<level>(event, **fields, retry=n, delay_seconds=...,
    error=describe(exc))`` line.
    """

    def should_retry(exc: BaseException) -> bool:
        # stamina hands over whatever the attempt raised, cancellation included: never retried.
        if not isinstance(exc, Exception) or not on(exc):
            return False
        _install_hook()
        return True

    # The first try runs outside stamina, whose retry context costs about 75 µs of CPU to set
    # up: a call that succeeds at once (nearly every one) pays nothing for it. A first failure
    # worth retrying is raised again as the context's first try, so the waits, the attempts
    # and the log lines are stamina's, the same as when every try ran inside it.
    try:
        return await call()
    except Exception as exc:
        if not on(exc):
            raise
        first: Exception | None = exc
    token = _current.set(_Ours(log, level, event, fields, describe))
    try:
        async for attempt in stamina.retry_context(
            on=should_retry,
            attempts=attempts,
            timeout=None,  # bounded by attempts; each try has its own deadline, if any
            wait_initial=wait_initial,
            wait_max=wait_max,
            wait_jitter=wait_jitter,
        ):
            with attempt:
                if first is not None:
                    failed, first = first, None
                    raise failed
                return await call()
    finally:
        _current.reset(token)
    raise AssertionError("unreachable")  # pragma: no cover - stamina re-raises the last error


def _install_hook() -> None:
    """Put `_Hook` in front of stamina's hooks, unless it is there already."""
    with _installing:
        hooks = get_on_retry_hooks()  # stamina's defaults, unless the host set its own
        if not any(isinstance(hook, _Hook) for hook in hooks):
            set_on_retry_hooks([_Hook(hooks)])


class _Hook:
    """Logs a retry of ours on our logger; hands any other retry to the hooks it replaced."""

    def __init__(self, others: tuple[RetryHook, ...]) -> None:
        self._others = others

    def __call__(self, details: RetryDetails) -> contextlib.AbstractContextManager[None] | None:
        ours = _current.get()
        if ours is not None:
            getattr(ours.log, ours.level)(
                ours.event,
                **ours.fields,
                retry=details.retry_num,
                delay_seconds=round(details.wait_for, 3),
                error=ours.describe(details.caused_by),
            )
            return None
        # A hook may return a context manager, which stamina enters until the next try starts
        # (stamina 25.1): one for all of them.
        returned = [hook(details) for hook in self._others]
        managers = [cm for cm in returned if isinstance(cm, contextlib.AbstractContextManager)]
        return _together(managers) if managers else None


@contextlib.contextmanager
def _together(managers: list[contextlib.AbstractContextManager[None]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield
