"""The guest's clock (mtime): host time, paced by how fast the guest really runs.

A software CPU is 100-1000x slower than the hardware the guest was written for. If mtime
simply followed the host clock, a busy guest would spend most of its instructions in
timer interrupts (Linux's 100 Hz tick on every hart, each one a trip through OpenSBI),
and with several harts the ticks alone can use up the CPU. So, like QEMU's icount mode,
guest time advances with the work done: at most ``max_ns_per_instruction`` per retired
instruction. It runs exactly with the host clock when the guest is idle (every hart in
WFI) or is waiting for time to pass by reading the ``time`` CSR in a loop (U-Boot's
autoboot countdown, Linux's udelay), so sleeps and timeouts still take real time.
"""

from __future__ import annotations

from ..clock import Clock

# A guest reading `time` at least once per this many instructions is polling for time.
POLL_INSTRUCTIONS = 500


class GuestTime(Clock):
    def __init__(self, host: Clock, max_ns_per_instruction: float = 10.0) -> None:
        self.host = host
        self.max_ns_per_instruction = max_ns_per_instruction
        self._last_host = host.monotonic_ns()
        self._now = self._last_host
        self.time_reads = 0  # guest reads of the time CSR since the last advance()

    def monotonic_ns(self) -> int:
        return self._now

    def wall_ns(self) -> int:
        return self.host.wall_ns()

    def advance(self, instructions: int, idle: bool = False) -> None:
        """Move guest time after ``instructions`` ran (or the machine idled)."""
        host = self.host.monotonic_ns()
        elapsed = host - self._last_host
        self._last_host = host
        reads, self.time_reads = self.time_reads, 0
        if idle or reads * POLL_INSTRUCTIONS >= instructions:
            step = elapsed
        else:
            step = min(elapsed, int(instructions * self.max_ns_per_instruction))
        self._now += max(0, step)

    def rebase(self) -> None:
        """Host time that passed with nothing run is not the guest's: after a hold (a
        debugger stopped the machine: timers must not fire in a burst), or in a process
        forked from the one that built the machine (a clone), its clock goes on from
        here."""
        self._last_host = self.host.monotonic_ns()
        self.time_reads = 0
