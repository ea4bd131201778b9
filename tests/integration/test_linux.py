"""Unmodified Linux 6.1 (../shared/guests) on pyhv: boot, selftest, shell, virtio disk.

These boot a real kernel on the interpreter, so each takes minutes: marked slow.
"""

from __future__ import annotations

import pytest

from pyhv.vm.config import BalloonSpec, ConsoleSpec, DiskSpec, NetSpec, RngSpec

from .linux_guest import (
    BOOT_TIMEOUT,
    PROMPT,
    ROOTFS,
    SELFTEST_MD5,
    boot,
    needs_linux,
    shell,
    writable_copy,
)

pytestmark = [pytest.mark.slow, needs_linux]


def test_selftest_smp1_with_every_virtio_device(tmp_path) -> None:
    devices = (
        DiskSpec(str(ROOTFS), read_only=True),
        NetSpec(f"selftest-{tmp_path.name}", "52:54:00:12:34:56"),
        RngSpec(),
        BalloonSpec(),
        ConsoleSpec(),
    )
    vm, console = boot("pyhv.selftest=1", devices=devices)
    try:
        result = vm.run(timeout=BOOT_TIMEOUT)
        text = console.text
        assert result.reason == "poweroff" and result.exit_code == 0, text[-3000:]
        assert "PYHV-GUEST-READY" in text
        assert "SELFTEST-SMP 1" in text
        assert "SELFTEST-RNG virtio_rng.0" in text
        assert "SELFTEST-DISK Hello from pyhv rootfs.ext2 (virtio-blk test disk)" in text
        assert "SELFTEST-NET eth0 52:54:00:12:34:56" in text
        line = next(x for x in text.splitlines() if x.startswith("SELFTEST-VIRTIO"))
        for dev_id in ("0x0002/m", "0x0001/m", "0x0004/m", "0x0005/m", "0x0003/m"):
            assert dev_id in line, line
        assert f"SELFTEST-OK {SELFTEST_MD5}" in text
    finally:
        vm.close()


def test_selftest_smp4() -> None:
    vm, console = boot("pyhv.selftest=1", smp=4)
    try:
        result = vm.run(timeout=BOOT_TIMEOUT * 2)
        text = console.text
        assert result.reason == "poweroff" and result.exit_code == 0, text[-3000:]
        assert "harts online: 4" in text
        assert "SELFTEST-SMP 4" in text
        assert f"SELFTEST-OK {SELFTEST_MD5}" in text
    finally:
        vm.close()


def test_shell_disk_write_reaches_image_and_overlay_spares_base(tmp_path) -> None:
    raw = writable_copy(tmp_path, "raw.ext2")
    base = writable_copy(tmp_path, "base.ext2")
    base_bytes = base.read_bytes()
    overlay = tmp_path / "vm.ovl"
    devices = (DiskSpec(str(raw)), DiskSpec(str(base), overlay=str(overlay)), BalloonSpec())
    vm, console = boot("", devices=devices)
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        assert "ANSWER=42" in shell(vm, console, "echo ANSWER=$((6*7))")
        out = shell(vm, console, "mount -t ext2 /dev/vda /mnt && cat /mnt/hello.txt")
        assert "Hello from pyhv rootfs.ext2 (virtio-blk test disk)" in out
        shell(vm, console, "echo written-by-the-guest-vda > /mnt/new.txt; sync; umount /mnt")
        shell(vm, console, "mount -t ext2 /dev/vdb /mnt && "
                           "echo written-by-the-guest-vdb > /mnt/new.txt; sync; umount /mnt")
        # Balloon: ask for 32 MiB back and watch the guest give it.
        balloon = vm.board.virtio_devices[2]
        balloon.set_target(32 << 20)
        vm.run(timeout=120, stop_when=lambda: balloon.actual_bytes() >= 32 << 20)
        assert balloon.actual_bytes() == 32 << 20
        assert balloon.inflated_pages() == (32 << 20) // 4096
        console.send("poweroff -f\n")
        result = vm.run(timeout=300)
        assert result.reason == "poweroff"
    finally:
        vm.close()
    assert b"written-by-the-guest-vda" in raw.read_bytes()
    assert base.read_bytes() == base_bytes  # the base image is untouched
    assert b"written-by-the-guest-vdb" in overlay.read_bytes()
