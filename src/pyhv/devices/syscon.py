"""Power-off and reboot: the SiFive test finisher (QEMU hw/misc/sifive_test.c).

Why it exists: the QEMU ``virt`` board has no power controller; guests switch the
machine off or reset it by writing a magic value to this register at 0x0010_0000.
The device tree describes it as ``sifive,test1`` together with ``syscon-poweroff`` and
``syscon-reboot`` nodes, so OpenSBI's system-reset driver and Linux's syscon drivers use
it, and bare-metal test programs report pass/fail through it.

What it follows: QEMU's finisher. A write at offset 0 looks at the low 16 bits:
0x5555 (FINISHER_PASS) powers off with exit code 0, 0x3333 (FINISHER_FAIL) powers off
with exit code ``value >> 16`` (16 bits), 0x7777 (FINISHER_RESET) resets the machine;
anything else is ignored. Accesses are 16 or 32 bits wide as in QEMU (other sizes are
ignored); reads return 0. What "power off" and "reset" mean is up to the host, which
receives ``on_power("poweroff", code)`` or ``on_power("reset", 0)``.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import Device

FINISHER_FAIL = 0x3333
FINISHER_PASS = 0x5555
FINISHER_RESET = 0x7777


class SifiveTest(Device):
    """sifive,test1 finisher; ``on_power(action, code)`` acts on power-off/reset."""

    name = "test"
    size = 0x1000

    def __init__(self, on_power: Callable[[str, int], None]) -> None:
        self.on_power = on_power

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset != 0 or (size != 2 and size != 4):
            return
        status = value & 0xFFFF
        code = (value >> 16) & 0xFFFF
        if status == FINISHER_PASS:
            self.on_power("poweroff", 0)
        elif status == FINISHER_FAIL:
            self.on_power("poweroff", code)
        elif status == FINISHER_RESET:
            self.on_power("reset", 0)
