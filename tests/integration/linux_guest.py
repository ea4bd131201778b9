"""Shared helpers for tests that boot the Linux guest from ../shared/guests."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
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


class GuestProcess:
    """A `pyhv run` child (or any command ending in one) whose serial console is driven
    through pipes."""

    def __init__(self, argv: list[str], run_timeout: float = 120,
                 stop_timeout: float = 60) -> None:
        self.run_timeout, self.stop_timeout = run_timeout, stop_timeout
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.out = bytearray()
        self.seen = 0

    def expect(self, text: str, timeout: float) -> str:
        needle = text.encode()
        end = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while needle not in self.out[self.seen:]:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                tail = self.out[-3000:].decode(errors="replace")
                raise AssertionError(f"no {text!r} in:\n{tail}")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                self.out += os.read(fd, 65536)
        pos = self.out.index(needle, self.seen) + len(needle)
        chunk = self.out[self.seen:pos].decode(errors="replace")
        self.seen = pos
        return chunk

    def run(self, command: str, timeout: float | None = None) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self.expect(PROMPT, self.run_timeout if timeout is None else timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"poweroff -f\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=self.stop_timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
