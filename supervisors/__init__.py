"""A generic supervision runtime on anyio: actors, bounded mailboxes, OTP-style supervisors."""

from __future__ import annotations

from supervisors.clock import Clock, FakeClock, SystemClock

__all__ = ["Clock", "FakeClock", "SystemClock"]
