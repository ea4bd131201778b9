"""The core-local interruptor: machine software interrupts and the machine timer.

Why it exists: every hart's M-mode timer interrupt (MTIP) and inter-processor software
interrupt (MSIP) on the QEMU ``virt`` board come from here (``riscv,clint0`` at
0x0200_0000). OpenSBI programs ``mtimecmp`` on behalf of Linux's SBI timer calls and
sends IPIs through ``msip``; the CPU's ``time`` CSR reads ``mtime``.

What it follows: the SiFive CLINT layout, which QEMU 7.2 builds from an ACLINT MSWI
(0x0000) and an ACLINT MTIMER (0x4000) device (hw/intc/riscv_aclint.c):

- ``msip[h]`` at 0x0000 + 4h: 32-bit, only bit 0 is kept; writing drives the hart's
  MSIP at once, reading returns it.
- ``mtimecmp[h]`` at 0x4000 + 8h: 64-bit; each 32-bit half may also be accessed.
- ``mtime`` at 0xBFF8: 64-bit (or two 32-bit halves), counting at ``timebase_hz``
  (10 MHz on ``virt``) from the host's monotonic clock; writes move it by adjusting an
  offset, as QEMU's ``time_delta`` does.

MTIP is level ``mtime >= mtimecmp`` and is re-evaluated when ``mtimecmp`` or ``mtime``
is written (which may raise or lower it) and on ``poll()`` (which can only raise it:
time moves forward). As in QEMU, a raised MTIP stays raised until the guest writes
``mtimecmp`` or ``mtime``. 1- and 2-byte accesses (bus errors in QEMU) read 0 and are
ignored. ``mtimecmp`` resets to all ones, so nothing fires before the firmware sets it
(QEMU leaves it 0 but only raises MTIP on a write or a timer expiry; OpenSBI writes all
ones first anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from ..clock import Clock
from ..cpu.trap import MIP_MSIP, MIP_MTIP
from ..records import U64, MaxLen, Record, StateError, record
from .base import Device

MSIP_BASE = 0x0000
MTIMECMP_BASE = 0x4000
MTIME = 0xBFF8

MASK64 = (1 << 64) - 1
MASK32 = 0xFFFF_FFFF
NS_PER_S = 1_000_000_000
_NEVER = 1 << 127  # a host deadline later than any real one
# Deadlines further than this (about 146 years) away count as "never": they are what an
# all-ones mtimecmp means, and no host sleeps that long.
_HORIZON_NS = 1 << 62


CLINT_TIMEBASE_HZ = 10_000_000  # mtime ticks per second, as QEMU virt (DT timebase)


class Clint(Device):
    """SiFive CLINT / ACLINT MSWI + MTIMER for ``num_harts`` harts."""

    name = "clint"
    size = 0x10000
    # From a hart's native code (the JIT's device callback) too: msip and mtimecmp
    # drive only interrupt wires; an IPI to another hart ends the sender's slice after
    # the store (the engine hands over, as for the Python path)
    native_access = True

    def native_store(self, offset: int) -> bool:
        return offset < MTIME  # mtime written: the engine syncs its native time reads

    def __init__(
        self,
        num_harts: int,
        clock: Clock,
        set_mip: Callable[[int, int, bool], None],
        timebase_hz: int = CLINT_TIMEBASE_HZ,
    ) -> None:
        if num_harts < 1:
            raise ValueError("num_harts must be at least 1")
        if timebase_hz <= 0:
            raise ValueError("timebase_hz must be positive")
        self.num_harts = num_harts
        self.clock = clock
        self.set_mip = set_mip
        self.timebase_hz = timebase_hz
        self._start_ns = clock.monotonic_ns()
        self._delta = 0  # mtime = ticks since _start_ns + _delta (mod 2**64)
        self.mtime_writes = 0  # how often the guest set mtime (engines cache its value)
        self.on_mtime_write: Callable[[], None] | None = None  # the board's time reads
        # what a guest's read of mtime returns: the board makes it the time CSR's
        # sequence (clock.next_time_read), so both read the same clock
        self.read_mtime: Callable[[], int] = self.mtime
        # Set when a write raised a hart's msip: the writer is likely to wait for that
        # hart (OpenSBI's remote fences spin until the target has run its handler), and
        # with every hart taking turns on one host thread it can only go on once the
        # target has had its turn. Engines end the writer's slice and clear it.
        self.ipi_sent = False
        self.msip = [False] * num_harts
        self.mtip = [False] * num_harts
        self.mtimecmp = [MASK64] * num_harts
        # Host monotonic ns before which poll() has nothing to do.
        self._poll_after = _NEVER

    # -- time ------------------------------------------------------------------------

    def _ticks(self, now_ns: int) -> int:
        return (now_ns - self._start_ns) * self.timebase_hz // NS_PER_S

    def mtime(self) -> int:
        """The current ``mtime`` (what the ``time`` CSR reads)."""
        return (
            (self.clock.monotonic_ns() - self._start_ns) * self.timebase_hz // NS_PER_S
            + self._delta
        ) & MASK64

    def _set_mtime(self, value: int, now_ns: int) -> None:
        self._delta = (value & MASK64) - self._ticks(now_ns)
        self.mtime_writes += 1
        if self.on_mtime_write is not None:
            self.on_mtime_write()

    def _deadline_ns(self, cmp: int, mtime: int, now_ns: int) -> int:
        """Host ns at which ``mtime`` (now ``mtime`` at ``now_ns``) reaches ``cmp``."""
        target_ticks = self._ticks(now_ns) + (cmp - mtime)
        # Smallest t with (t - start) * hz // 1e9 >= target_ticks.
        return self._start_ns - (-target_ticks * NS_PER_S // self.timebase_hz)

    # -- interrupt outputs -----------------------------------------------------------

    def _drive_mtip(self, hart: int, level: bool) -> None:
        if self.mtip[hart] != level:
            self.mtip[hart] = level
            self.set_mip(hart, MIP_MTIP, level)

    def _evaluate(self, now_ns: int, lower: bool) -> None:
        """Re-evaluate every hart's MTIP; ``lower`` allows dropping a raised one."""
        mtime = (self._ticks(now_ns) + self._delta) & MASK64
        soonest = _NEVER
        for hart in range(self.num_harts):
            cmp = self.mtimecmp[hart]
            if mtime >= cmp:
                self._drive_mtip(hart, True)
            else:
                if lower:
                    self._drive_mtip(hart, False)
                if not self.mtip[hart]:
                    deadline = self._deadline_ns(cmp, mtime, now_ns)
                    if deadline - now_ns < _HORIZON_NS and deadline < soonest:
                        soonest = deadline
        self._poll_after = soonest

    def poll(self) -> None:
        """Raise MTIP on harts whose ``mtimecmp`` has been reached; cheap when none has."""
        now = self.clock.monotonic_ns()
        if now >= self._poll_after:
            self._evaluate(now, lower=False)

    def next_deadline_ns(self) -> int | None:
        """Host monotonic ns at which the earliest pending ``mtimecmp`` fires, or None."""
        if self._poll_after >= _NEVER:
            return None
        return self._poll_after

    # -- MMIO ------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if (size != 4 and size != 8) or offset < 0:
            return 0
        if offset < MTIMECMP_BASE:
            hart = offset >> 2
            if size == 4 and (offset & 3) == 0 and hart < self.num_harts:
                return int(self.msip[hart])
            return 0
        if offset == MTIME:
            value = self.read_mtime()
            return value if size == 8 else value & MASK32
        if offset == MTIME + 4:
            return self.read_mtime() >> 32
        rel = offset - MTIMECMP_BASE
        hart = rel >> 3
        if hart < self.num_harts:
            cmp = self.mtimecmp[hart]
            if (rel & 7) == 0:
                return cmp if size == 8 else cmp & MASK32
            if (rel & 7) == 4:
                return cmp >> 32
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if (size != 4 and size != 8) or offset < 0:
            return
        value &= MASK64 if size == 8 else MASK32
        if offset < MTIMECMP_BASE:
            hart = offset >> 2
            if size == 4 and (offset & 3) == 0 and hart < self.num_harts:
                level = bool(value & 1)
                if self.msip[hart] != level:
                    self.msip[hart] = level
                    self.set_mip(hart, MIP_MSIP, level)
                    if level and self.num_harts > 1:
                        self.ipi_sent = True
            return
        if offset == MTIME or offset == MTIME + 4:
            now = self.clock.monotonic_ns()
            current = (self._ticks(now) + self._delta) & MASK64
            if offset == MTIME:
                new = value if size == 8 else (current & ~MASK32) | value
            elif size == 4:
                new = (value << 32) | (current & MASK32)
            else:
                return
            self._set_mtime(new, now)
            self._evaluate(now, lower=True)
            return
        rel = offset - MTIMECMP_BASE
        hart = rel >> 3
        if hart >= self.num_harts:
            return
        cmp = self.mtimecmp[hart]
        if (rel & 7) == 0:
            cmp = value if size == 8 else (cmp & ~MASK32) | value
        elif (rel & 7) == 4 and size == 4:
            cmp = (value << 32) | (cmp & MASK32)
        else:
            return
        self.mtimecmp[hart] = cmp
        self._evaluate(self.clock.monotonic_ns(), lower=True)

    # -- lifecycle -------------------------------------------------------------------

    def reset(self) -> None:
        """Machine reset: ``mtime`` back to 0, ``mtimecmp`` all ones, MSIP/MTIP low."""
        now = self.clock.monotonic_ns()
        self._set_mtime(0, now)
        for hart in range(self.num_harts):
            self.mtimecmp[hart] = MASK64
            if self.msip[hart]:
                self.msip[hart] = False
                self.set_mip(hart, MIP_MSIP, False)
        self._evaluate(now, lower=True)

    def save(self) -> ClintState:
        # mtime is saved as a value, not as host time: after a restore (maybe on
        # another host, maybe much later) the guest's clock continues from here.
        return ClintState(self.mtime(), list(self.mtimecmp), list(self.msip), list(self.mtip))

    def restore(self, state: ClintState) -> None:
        n = self.num_harts
        if not len(state.mtimecmp) == len(state.msip) == len(state.mtip) == n:
            raise StateError(f"clint: saved for another number of harts (this machine: {n})")
        now = self.clock.monotonic_ns()
        self._set_mtime(state.mtime, now)
        self.mtimecmp = list(state.mtimecmp)
        self.msip = list(state.msip)
        self.mtip = list(state.mtip)
        for hart in range(n):
            self.set_mip(hart, MIP_MSIP, self.msip[hart])
            self.set_mip(hart, MIP_MTIP, self.mtip[hart])
        self._evaluate(now, lower=False)


@record
class ClintState(Record):
    """mtime as a value (the guest's clock goes on from it), and per hart its timer
    compare, software interrupt and timer interrupt lines."""

    mtime: U64
    mtimecmp: Annotated[list[U64], MaxLen(4095)]
    msip: Annotated[list[bool], MaxLen(4095)]
    mtip: Annotated[list[bool], MaxLen(4095)]
