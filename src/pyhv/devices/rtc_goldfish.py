"""The real-time clock: Google's goldfish RTC, as on QEMU ``virt`` (hw/rtc/goldfish_rtc.c).

Why it exists: it is the board's only source of calendar time. Linux's rtc-goldfish
driver reads it at boot to set the system clock (``/dev/rtc0``, ``hwclock``) and can arm
its alarm (PLIC source 11) for wakeups.

What it follows: QEMU's model, register for register (32-bit accesses; others read 0
and are ignored):

======  ===============  ====================================================
0x00    TIME_LOW         reads the low 32 bits of the time in ns and latches the
                         high half into TIME_HIGH; writing sets the low half
0x04    TIME_HIGH        the latched high half; writing sets the high half
0x08    ALARM_LOW        writing sets the alarm's low half and arms it (with the
                         ALARM_HIGH written before); an alarm in the past fires now
0x0c    ALARM_HIGH       high half of the alarm
0x10    IRQ_ENABLED      bit 0 gates the interrupt line
0x14    CLEAR_ALARM      writing disarms the alarm
0x18    ALARM_STATUS     1 while an alarm is armed
0x1c    CLEAR_INTERRUPT  writing clears the pending interrupt
======  ===============  ====================================================

Time is the host's wall clock (``clock.wall_ns()``, ns since the Unix epoch, QEMU's
default ``-rtc clock=host``) plus an offset: guest writes to TIME_LOW/TIME_HIGH move the
offset, the host clock itself is never touched. The IRQ line is high while an alarm
interrupt is pending and IRQ_ENABLED is set. Alarms are checked by ``poll()``, which the
run loop calls; ``next_deadline_ns()`` tells it when the armed alarm falls due.
"""

from __future__ import annotations

from typing import Annotated

from ..clock import Clock
from ..records import U32, U64, Range, Record, record
from .base import Device, IrqLine

TIME_LOW = 0x00
TIME_HIGH = 0x04
ALARM_LOW = 0x08
ALARM_HIGH = 0x0C
IRQ_ENABLED = 0x10
CLEAR_ALARM = 0x14
ALARM_STATUS = 0x18
CLEAR_INTERRUPT = 0x1C

MASK32 = 0xFFFF_FFFF
MASK64 = (1 << 64) - 1


class GoldfishRtc(Device):
    """google,goldfish-rtc: a 64-bit ns counter with one alarm."""

    name = "rtc"
    native_access = True  # (see Device)
    size = 0x1000

    def __init__(self, irq: IrqLine, clock: Clock) -> None:
        self.irq = irq
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """QEMU goldfish_rtc_reset: time follows the host clock, alarm off, irq low."""
        self.tick_offset = 0
        self.time_high = 0
        self.alarm_next = 0
        self.alarm_running = False
        self.irq_pending = False
        self.irq_enabled = False
        self._update()

    # -- internals -------------------------------------------------------------------

    def count(self) -> int:
        """The RTC's current time in ns since the epoch, as the guest sees it."""
        return (self.clock.wall_ns() + self.tick_offset) & MASK64

    def _update(self) -> None:
        self.irq.set(self.irq_pending and self.irq_enabled)

    def _raise_alarm(self) -> None:
        self.alarm_running = False
        self.irq_pending = True
        self._update()

    def _set_alarm(self) -> None:
        if self.alarm_next <= self.count():
            self._raise_alarm()
        else:
            self.alarm_running = True

    def poll(self) -> None:
        """Fire the alarm if it is armed and due."""
        if self.alarm_running and self.alarm_next <= self.count():
            self._raise_alarm()

    def next_deadline_ns(self) -> int | None:
        """Host monotonic ns at which the armed alarm falls due, or None."""
        if not self.alarm_running:
            return None
        remaining = max(0, self.alarm_next - self.count())
        return self.clock.monotonic_ns() + remaining

    # -- MMIO ------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if size != 4:
            return 0
        if offset == TIME_LOW:
            now = self.count()
            self.time_high = now >> 32
            return now & MASK32
        if offset == TIME_HIGH:
            return self.time_high
        if offset == ALARM_LOW:
            return self.alarm_next & MASK32
        if offset == ALARM_HIGH:
            return self.alarm_next >> 32
        if offset == IRQ_ENABLED:
            return int(self.irq_enabled)
        if offset == ALARM_STATUS:
            return int(self.alarm_running)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 4:
            return
        value &= MASK32
        if offset == TIME_LOW or offset == TIME_HIGH:
            current = self.count()
            if offset == TIME_LOW:
                new = (current & ~MASK32) | value
            else:
                new = (value << 32) | (current & MASK32)
            self.tick_offset += new - current
        elif offset == ALARM_LOW:
            self.alarm_next = (self.alarm_next & ~MASK32) | value
            self._set_alarm()
        elif offset == ALARM_HIGH:
            self.alarm_next = (value << 32) | (self.alarm_next & MASK32)
        elif offset == IRQ_ENABLED:
            self.irq_enabled = bool(value & 1)
            self._update()
        elif offset == CLEAR_ALARM:
            self.alarm_running = False
        elif offset == CLEAR_INTERRUPT:
            self.irq_pending = False
            self._update()

    # -- snapshot ------------------------------------------------------------------

    def save(self) -> RtcState:
        # The offset is relative to the host's wall clock, so a restored guest sees
        # real time (plus whatever offset it set), as a real RTC would after a pause.
        return RtcState(self.tick_offset, self.time_high, self.alarm_next,
                        self.alarm_running, self.irq_pending, self.irq_enabled)

    def restore(self, state: RtcState) -> None:
        self.tick_offset = state.tick_offset
        self.time_high = state.time_high
        self.alarm_next = state.alarm_next
        self.alarm_running = state.alarm_running
        self.irq_pending = state.irq_pending
        self.irq_enabled = state.irq_enabled
        self._update()


@record
class RtcState(Record):
    """The RTC's offset from the host's wall clock, its alarm and interrupt."""

    tick_offset: Annotated[int, Range(-(1 << 64), 1 << 64)]
    time_high: U32
    alarm_next: U64
    alarm_running: bool
    irq_pending: bool
    irq_enabled: bool
