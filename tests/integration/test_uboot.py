"""OpenSBI fw_dynamic hands over to U-Boot, whose prompt answers typed commands."""

from __future__ import annotations

import os

import pytest

from pyhv import BufferConsole, Machine, MachineConfig

OPENSBI = "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin"
UBOOT = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.exists(OPENSBI) and os.path.exists(UBOOT)),
        reason="needs Debian's qemu-system-data and u-boot-qemu (installed by .ci/run)",
    ),
]


def test_opensbi_boots_uboot_and_prompt_answers_commands() -> None:
    console = BufferConsole()
    vm = Machine(MachineConfig(bios=OPENSBI, kernel=UBOOT, memory=128 << 20), console=console)
    try:
        assert vm.run_until("Hit any key to stop autoboot", timeout=240), console.text[-2000:]
        console.send(" ")  # stop the countdown, as a user would
        assert vm.run_until("=> ", timeout=60), console.text[-2000:]
        text = console.text
        assert "OpenSBI v1" in text
        assert "Domain0 Next Address      : 0x0000000080200000" in text
        assert "U-Boot 2023.01" in text
        assert "DRAM:  128 MiB" in text

        console.send("version\r")
        assert vm.run_until("=> ", timeout=60)
        tail = console.text.split("version", 1)[-1]
        assert "U-Boot 2023.01" in tail

        console.send("bdinfo\r")
        assert vm.run_until("=> ", timeout=60)
        tail = console.text.rsplit("bdinfo", 1)[-1]
        assert "boot_params" in tail or "fdt_blob" in tail
        assert "0x0000000080000000" in tail  # DRAM bank start
        assert "0x0000000008000000" in tail  # DRAM bank size: 128 MiB
    finally:
        vm.close()
