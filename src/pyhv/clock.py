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


#: Ticks a read of the time CSR may run ahead of mtime (100 us at 10 MHz): see next_time_read.
TIME_READ_SLACK = 1000


def next_time_read(last: int, mtime: int) -> int:
    """What a read of the time CSR returns, ``last`` being what the previous read (by any
    hart) returned: ``mtime``, but one tick past ``last`` while that stays within
    :data:`TIME_READ_SLACK` ticks of ``mtime``. Guest time moves between slices only
    (vm/guest_time.py), so without this two reads in one slice would return the same
    value: a guest taking IDs or intervals from the clock (busybox nslookup's query IDs)
    would see no time pass. The slack bounds how far reads in a tight loop can get ahead
    of the clock; reads never go back, on one hart or across harts. (The JIT's native
    interpreter does the same: cpu/jit/native_interp.py.)"""
    cand = last + 1
    if cand > mtime + TIME_READ_SLACK:
        cand = last
    return mtime if mtime > cand else cand
