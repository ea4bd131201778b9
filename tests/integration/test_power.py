"""Guest power control through the sifive,test device: power-off codes and reboot."""

from __future__ import annotations

import struct
from pathlib import Path

from pyhv import BufferConsole, Machine, MachineConfig

# Prints "B" on the UART, then asks the test device for a reset (0x7777).
REBOOTER = [
    0x100002B7,  # lui  t0, 0x10000      UART
    0x04200313,  # li   t1, 'B'
    0x00628023,  # sb   t1, 0(t0)
    0x001002B7,  # lui  t0, 0x100        test device
    0x00007337,  # lui  t1, 0x7
    0x77730313,  # addi t1, t1, 0x777    0x7777 = reset
    0x0062A023,  # sw   t1, 0(t0)
    0x0000006F,  # j .
]


def program(tmp_path: Path) -> str:
    path = tmp_path / "reboot.bin"
    path.write_bytes(struct.pack(f"<{len(REBOOTER)}I", *REBOOTER))
    return str(path)


def test_reset_reboots_the_machine(tmp_path: Path) -> None:
    console = BufferConsole()
    vm = Machine(MachineConfig(bios="none", kernel=program(tmp_path)), console=console)
    try:
        result = vm.run(max_instructions=200)
    finally:
        vm.close()
    assert result.reason == "limit"
    assert console.text.count("B") >= 5  # it came back up, again and again


def test_reset_with_no_reboot_exits(tmp_path: Path) -> None:
    console = BufferConsole()
    vm = Machine(MachineConfig(bios="none", kernel=program(tmp_path), no_reboot=True),
                 console=console)
    try:
        result = vm.run(timeout=30)
    finally:
        vm.close()
    assert (result.reason, result.exit_code, console.text) == ("poweroff", 0, "B")
