"""Injected time.

Devices that tell time (CLINT mtime, the goldfish RTC) and the run loop read a clock
object instead of calling :mod:`time` directly, so tests can drive a :class:`FakeClock`
and get fast, deterministic results.
"""

from __future__ import annotations

import time


class Clock:
    """Host time: a monotonic counter for timers and the wall clock for the RTC."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ns(self) -> int:
        return time.time_ns()


class FakeClock(Clock):
    """A clock that only moves when told to (``advance``)."""

    def __init__(self, start_ns: int = 0, wall_start_ns: int = 1_700_000_000 * 10**9) -> None:
        self.now = start_ns
        self.wall_start = wall_start_ns

    def monotonic_ns(self) -> int:
        return self.now

    def wall_ns(self) -> int:
        return self.wall_start + self.now

    def advance(self, ns: int) -> None:
        self.now += ns
