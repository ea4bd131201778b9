"""I/O budgets: token buckets that pace a device's requests (bytes/s and ops/s).

Why: the CPU scheduler protects a VM's CPU, but without I/O terms one VM's disk or
network traffic can take the host's disk or the switch from its neighbours. Like QEMU's
``throttling.*`` and Firecracker's rate limiters, each budget is a token bucket: it
refills at ``rate`` per second up to ``burst`` (the bucket's size, default one second's
worth), and a request of n units goes when the bucket holds at least min(n, burst)
(the rest is taken as debt: a large request is never stuck, and the long-run rate
stays exact). A device asks ``IoBudget.admit`` before it serves a request: 0.0 means
go (the tokens are taken), otherwise the seconds to wait, during which the request
stays in the guest's queue (nothing is dropped or failed; the guest just sees a slower
device) and the machine may sleep until then (``next_deadline_ns``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import ConfigError
from ..lightdata import dataclass


@dataclass(frozen=True)
class Limits:
    """A device's (or one direction's) terms: None = unlimited."""

    bps: int | None = None  # bytes a second
    ops: int | None = None  # requests (or frames) a second
    bps_burst: int | None = None  # the byte bucket's size (default: one second's worth)
    ops_burst: int | None = None

    def __post_init__(self) -> None:
        for name in ("bps", "ops", "bps_burst", "ops_burst"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ConfigError(f"I/O budget {name}={v!r}: must be a positive integer "
                                  "(leave it out for no limit)")
        if self.bps_burst is not None and self.bps is None:
            raise ConfigError("I/O budget bps_burst needs bps")
        if self.ops_burst is not None and self.ops is None:
            raise ConfigError("I/O budget ops_burst needs ops")

    @property
    def unlimited(self) -> bool:
        return self.bps is None and self.ops is None


class TokenBucket:
    def __init__(self, rate: int, burst: int | None, now: float) -> None:
        self.rate = float(rate)
        self.size = float(burst if burst is not None else rate)
        self.tokens = self.size
        self.at = now

    def refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait(self, n: float) -> float:
        """Seconds until ``n`` units may go (0: now; else at least a microsecond: float
        rounding must not make a waiter spin)."""
        need = min(n, self.size)
        if self.tokens >= need - 1e-6:
            return 0.0
        return max(1e-6, (need - self.tokens) / self.rate)


class IoBudget:
    """The byte and op buckets of one device (or direction), and what they held back."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.limits = limits
        self._waited = 0.0  # time requests waited for their budget (finished waits)
        self.throttled = 0  # requests that had to wait
        self.throttled_bytes = 0  # what those requests moved
        self._waiting_since: float | None = None
        self._until: float | None = None
        self._set(limits, clock())

    def _set(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self._bytes = TokenBucket(limits.bps, limits.bps_burst, now) if limits.bps else None
        self._ops = TokenBucket(limits.ops, limits.ops_burst, now) if limits.ops else None

    def change(self, limits: Limits) -> None:
        """New terms, at once (``pyhv set``): the buckets start full."""
        self._set(limits, self.clock())
        self._until = None

    def admit(self, nbytes: int, take: bool = True) -> float:
        """Take the tokens for one request of ``nbytes``, or say how long to wait
        (``take=False``: only say, a request that may not be there to go after all)."""
        if self._bytes is None and self._ops is None:
            return 0.0
        now = self.clock()
        wait = 0.0
        for bucket, n in ((self._bytes, nbytes), (self._ops, 1)):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait(n))
        if wait > 0:
            if self._waiting_since is None:
                self._waiting_since = now
                self.throttled += 1
            self._until = now + wait
            return wait
        if not take:
            return 0.0
        if self._waiting_since is not None:
            self._waited += now - self._waiting_since
            self._waiting_since = None
            self.throttled_bytes += nbytes
        self._until = None
        if self._bytes is not None:
            self._bytes.tokens -= nbytes
        if self._ops is not None:
            self._ops.tokens -= 1
        return 0.0

    @property
    def throttled_seconds(self) -> float:
        """Time requests have waited for their budget, the one waiting now included."""
        if self._waiting_since is None:
            return self._waited
        return self._waited + max(0.0, self.clock() - self._waiting_since)

    def due(self) -> bool:
        """Whether a request held back may be tried again now."""
        return self._until is not None and self.clock() >= self._until

    def next_deadline(self) -> float | None:
        """When a request held back may go (monotonic seconds), if one is waiting."""
        return self._until
