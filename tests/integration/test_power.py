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


# A hot loop (compiled by the JIT), then "B" on the UART and a reset, again and again.
HOT_REBOOTER = [
    0x00001337,  # lui  t1, 0x1         4096 iterations
    0xFFF30313,  # addi t1, t1, -1
    0xFE031EE3,  # bnez t1, -4
] + REBOOTER


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _settle_jit() -> None:
    """Wait until the process's JIT compiler (if this process started one) has
    compiled and loaded everything queued."""
    import sys

    jit = sys.modules.get("pyhv.cpu.jit.compiler")
    comp = getattr(jit, "_COMPILER", None)
    if comp is not None:
        comp.poll(wait=True)


def test_reboots_keep_memory_flat(tmp_path: Path) -> None:
    """100 reboots of one VM whose code the JIT compiles each time: nothing per-run
    accumulates (the code watch's registered caches, decoded code, RSS)."""
    import os

    if not os.path.exists("/proc/self/statm"):
        import pytest

        pytest.skip("needs /proc")
    path = tmp_path / "hot-reboot.bin"
    path.write_bytes(struct.pack(f"<{len(HOT_REBOOTER)}I", *HOT_REBOOTER))
    console = BufferConsole()
    vm = Machine(MachineConfig(bios="none", kernel=str(path)), console=console)
    per_boot = 2 * 4096 + len(REBOOTER) + 8
    try:
        vm.run(max_instructions=20 * per_boot)
        # The JIT's compiler may still be working on what the first boots made hot
        # (its thread runs at its own pace): let it finish, and the blocks be installed,
        # so that what it loads (machine code, LLVM's memory) is not counted as growth.
        _settle_jit()
        vm.run(max_instructions=vm.instructions + 5 * per_boot)
        code = vm.board.code
        before = (len(code.caches), len(code.pages), _rss_bytes(), console.text.count("B"))
        vm.run(max_instructions=vm.instructions + 100 * per_boot)
        after = (len(code.caches), len(code.pages), _rss_bytes(), console.text.count("B"))
    finally:
        vm.close()
    assert after[3] - before[3] >= 95, "it did not reboot"
    assert after[0] == before[0], "caches registered with the code watch grew"
    assert after[1] <= before[1] + 2
    assert after[2] - before[2] < 4 << 20, f"RSS grew by {(after[2] - before[2]) >> 10} KiB"
