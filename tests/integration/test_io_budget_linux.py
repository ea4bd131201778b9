"""I/O budgets on a real guest: Linux reading its virtio disk as fast as it can gets no
more than the disk's bytes/s and requests/s (after the burst), and a snapshot taken
while a request is held back by the budget restores with that request served."""

from __future__ import annotations

import re
import time

import pytest

from pyhv import BufferConsole, Machine, MachineConfig
from pyhv.vm.config import DiskSpec

from .linux_guest import BOOT_TIMEOUT, IMAGE, INITRD, PROMPT, ROOTFS, needs_linux, shell

pytestmark = [pytest.mark.slow, needs_linux]


def test_a_disk_budget_holds_its_rate_and_ops():
    spec = DiskSpec(str(ROOTFS), read_only=True, bps=2 << 20, iops=200)
    console = BufferConsole()
    vm = Machine(MachineConfig(kernel=str(IMAGE), initrd=str(INITRD), append="console=ttyS0",
                               devices=(spec,)), console=console)
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        disk = vm.board.virtio_devices[0]
        t0 = time.monotonic()
        out = shell(vm, console, "dd if=/dev/vda of=/dev/null bs=64k count=160 iflag=direct")
        took = time.monotonic() - t0
        assert "160+0 records" in out, out
        # 10 MiB at 2 MiB/s after a 2 MiB burst: 4 s at least (never faster than the
        # budget; a slow host may take longer)
        assert took >= 4.0 * 0.95, took
        t0 = time.monotonic()
        out = shell(vm, console, "dd if=/dev/vda of=/dev/null bs=4k count=600 iflag=direct")
        took = time.monotonic() - t0
        assert "600+0 records" in out, out
        # the op budget binds (4 KiB x 200/s): 200 at once (its burst), 400 at 200/s
        assert took >= (600 - 200) / 200 * 0.95, took
        assert disk.stats["throttled"] > 0 and disk.stats["throttled_ms"] > 3000
    finally:
        vm.close()


def test_a_request_held_by_the_budget_survives_a_snapshot(tmp_path):
    spec = DiskSpec(str(ROOTFS), read_only=True, bps=256 << 10)
    console = BufferConsole()
    cfg = MachineConfig(kernel=str(IMAGE), initrd=str(INITRD), append="console=ttyS0",
                        devices=(spec,))
    vm = Machine(cfg, console=console)
    snap = tmp_path / "held.snap"
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        console.send("dd if=/dev/vda of=/dev/null bs=64k count=16 iflag=direct; "
                     "echo dd-done\n")
        disk = vm.board.virtio_devices[0]
        deadline = time.monotonic() + 60
        while disk._held is None and time.monotonic() < deadline:
            vm.run(timeout=0.01)
        assert disk._held is not None, "no request was held back"
        vm.snapshot(str(snap))
    finally:
        vm.close()
    c2 = BufferConsole()
    vm2 = Machine.restore(str(snap), console=c2)
    try:
        assert vm2.run_until("dd-done", timeout=120), c2.text[-2000:]
        assert re.search(r"16\+0 records in", console.text + c2.text)
    finally:
        vm2.close()
