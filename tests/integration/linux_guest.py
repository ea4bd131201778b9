"""Shared helpers for tests that boot the Linux guest from ../shared/guests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pyhv import BufferConsole, Machine, MachineConfig

GUESTS = Path(__file__).resolve().parents[3] / "shared" / "guests"
IMAGE = GUESTS / "Image"
INITRD = GUESTS / "initramfs.cpio"  # uncompressed: saves the kernel ~29 M instructions
ROOTFS = GUESTS / "rootfs.ext2"
OPENSBI = "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin"
SELFTEST_MD5 = "3f494ae99ac3349138768a4b3ef8df36"
PROMPT = "pyhv:/# "
BOOT_TIMEOUT = float(os.environ.get("PYHV_TEST_BOOT_TIMEOUT", "900"))

needs_linux = pytest.mark.skipif(
    not (IMAGE.exists() and INITRD.exists() and os.path.exists(OPENSBI)),
    reason="needs ../shared/guests and OpenSBI (qemu-system-data)",
)


def writable_copy(tmp_path: Path, name: str = "rootfs.ext2") -> Path:
    dst = tmp_path / name
    shutil.copyfile(ROOTFS, dst)
    dst.chmod(0o644)
    return dst


def boot(append: str, *, smp: int = 1, devices: tuple = (), memory: int = 128 << 20,
         ) -> tuple[Machine, BufferConsole]:
    console = BufferConsole()
    cfg = MachineConfig(kernel=str(IMAGE), initrd=str(INITRD), smp=smp, memory=memory,
                        append=f"console=ttyS0 {append}".strip(), devices=devices)
    return Machine(cfg, console=console), console


def shell(vm: Machine, console: BufferConsole, command: str, timeout: float = 300) -> str:
    """Type a command at the busybox prompt and return what it printed."""
    start = len(console.output)
    console.send(command + "\n")
    assert vm.run_until(PROMPT, timeout=timeout), console.text[-3000:]
    out = console.output[start:].decode("utf-8", "replace")
    return out.split("\n", 1)[1] if "\n" in out else out  # drop the echoed command line
