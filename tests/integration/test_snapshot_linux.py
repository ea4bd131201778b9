"""A Linux guest at its shell, saved and restored (vm/snapshot.py): the restored shell
answers with the files and processes it had, under the engine it was saved under and
under another."""

from __future__ import annotations

import pytest

from pyhv import BufferConsole, Machine, MachineConfig
from pyhv.cpu.engines import jit_unavailable_reason
from pyhv.vm.config import DiskSpec, NetSpec

from .linux_guest import BOOT_TIMEOUT, IMAGE, INITRD, PROMPT, needs_linux, shell, writable_copy

pytestmark = [pytest.mark.slow, needs_linux]


@pytest.mark.parametrize("smp,then", [(1, "interp"), (4, "jit"), (1, "translate")])
def test_a_linux_shell_answers_after_a_restore(tmp_path, smp, then):
    if jit_unavailable_reason() is not None:
        pytest.skip(str(jit_unavailable_reason()))
    disk = writable_copy(tmp_path)
    devices = (DiskSpec(str(disk)), NetSpec(f"snap-{tmp_path.name}", "52:54:00:12:34:57"))
    cfg = MachineConfig(kernel=str(IMAGE), initrd=str(INITRD), smp=smp, memory=256 << 20,
                        append="console=ttyS0", devices=devices, engine="jit")
    console = BufferConsole()
    vm = Machine(cfg, console=console)
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        shell(vm, console, "echo saved-state > /tmp/marker; mkdir -p /mnt; "
                           "mount -t ext2 /dev/vda /mnt; echo on-disk > /mnt/written")
        shell(vm, console, "sleep 7777 &")
        ps_before = shell(vm, console, "ps -o pid,args | grep 'sleep 777[7]'")
        assert "sleep 7777" in ps_before
        info = vm.snapshot(str(tmp_path / "linux.snap"))
    finally:
        vm.close()
    assert info["stored_bytes"] < info["ram_bytes"] // 2
    console2 = BufferConsole()
    vm2 = Machine.restore(str(tmp_path / "linux.snap"), console=console2, engine=then)
    try:
        assert vm2.config.memory == 256 << 20 and len(vm2.harts) == smp
        out = shell(vm2, console2, "cat /tmp/marker /mnt/written; "
                                   "ps -o pid,args | grep 'sleep 777[7]'")
        assert "saved-state" in out and "on-disk" in out, out
        assert ps_before.split()[0] in out, (ps_before, out)  # the same process
        out = shell(vm2, console2, "cat /sys/class/net/eth0/address; nproc")
        assert "52:54:00:12:34:57" in out and str(smp) in out, out
    finally:
        vm2.close()


def test_a_linux_guest_migrates_live_with_its_disk_and_counter(tmp_path):
    """Live migration (vm/migration.py) of a Linux guest that prints a counter every
    10 ms, with a writable disk mounted: the destination (another machine, here on a
    thread) goes on counting from the next value, with the file the source wrote to
    the disk; the source released the disk to it."""
    import re
    import socket
    import threading

    from pyhv.vm.migration import receive

    if jit_unavailable_reason() is not None:
        pytest.skip(str(jit_unavailable_reason()))
    from pyhv.vm.migration import migrate

    disk = writable_copy(tmp_path)
    cfg = MachineConfig(kernel=str(IMAGE), initrd=str(INITRD), memory=256 << 20,
                        append="console=ttyS0", devices=(DiskSpec(str(disk)),), engine="jit")
    console = BufferConsole()
    src = Machine(cfg, console=console)
    a, b = socket.socketpair()
    box: dict = {}
    try:
        assert src.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        shell(src, console, "mkdir -p /mnt; mount -t ext2 /dev/vda /mnt; "
                            "echo before-move > /mnt/moved")
        console.send("i=0; while [ $i -lt 100000 ]; do echo C$i; i=$((i+1)); "
                     "usleep 10000; done &\n")
        assert src.run_until("C30\r\n", timeout=120)
        thread = threading.Thread(target=lambda: box.update(vm=receive(b, BufferConsole())))
        thread.start()
        result = migrate(src, a)
        thread.join(120)
        assert result.ok, result
        before = console.text
    finally:
        src.close()
        a.close()
        b.close()
    dst = box["vm"]
    try:
        out = shell(dst, dst.console, "cat /mnt/moved; umount /mnt && echo unmounted")
        assert "before-move" in out and "unmounted" in out, out
        seq = [int(n) for n in re.findall(r"(?m)C(\d+)\r?$", before + dst.console.text)]
        assert seq == list(range(len(seq))) and len(seq) > 31, seq[-10:]
    finally:
        dst.close()


def test_an_overlay_disk_is_captured_with_the_snapshot(tmp_path):
    """A disk written through an overlay: the snapshot keeps the overlay as it was (a
    write after the snapshot is not seen by a restore), and two restores from one
    snapshot do not see each other's writes."""
    if jit_unavailable_reason() is not None:
        pytest.skip(str(jit_unavailable_reason()))
    base = writable_copy(tmp_path)
    ovl = tmp_path / "vm.ovl"
    cfg = MachineConfig(kernel=str(IMAGE), initrd=str(INITRD), append="console=ttyS0",
                        devices=(DiskSpec(str(base), overlay=str(ovl)),), engine="jit")
    console = BufferConsole()
    vm = Machine(cfg, console=console)
    snap = tmp_path / "vm.snap"
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        shell(vm, console, "mkdir -p /mnt; mount -t ext2 /dev/vda /mnt; "
                           "echo at-snapshot > /mnt/f; sync")
        vm.snapshot(str(snap))
        shell(vm, console, "echo after-snapshot > /mnt/f; sync")
    finally:
        vm.close()
    assert (tmp_path / "vm.snap.disk0.ovl").exists()
    for round_ in range(2):
        c = BufferConsole()
        r = Machine.restore(str(snap), console=c)
        try:
            out = shell(r, c, "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/f; "
                              f"echo restore-{round_} > /mnt/f; sync; cat /mnt/f")
            assert "at-snapshot" in out and "after-snapshot" not in out, out
            assert f"restore-{round_}" in out and "restore-0" not in out.replace(
                f"restore-{round_}", ""), out
        finally:
            r.close()


def _guest_vmgenid(vm: Machine, console: BufferConsole) -> tuple[str, bytes]:
    """What the guest sees of the VM generation ID: its device tree node's compatible
    string, and the 16 bytes read through /dev/mem (busybox devmem, 64 bits at a time:
    the Linux 6.1 here has no driver for the devicetree device)."""
    import re

    out = shell(vm, console, "echo C=$(tr -d '\\000' < /proc/device-tree/soc/rng@102000/"
                             "compatible); devmem 0x102000 64; devmem 0x102008 64")
    compatible = re.findall(r"(?m)^C=(\S*?)\r?$", out)[0]
    lo, hi = (int(x, 16) for x in re.findall(r"(?m)^0x([0-9A-Fa-f]{16})\r?$", out))
    return compatible, lo.to_bytes(8, "little") + hi.to_bytes(8, "little")


def test_a_linux_guest_reads_a_new_generation_id_in_each_clone(tmp_path):
    """The guest finds the microsoft,vmgenid node in its device tree and reads the
    identifier the host holds; a plain restore reads the same one, each clone (restored
    as one) a fresh one, different from its sibling's and from the original's."""
    if jit_unavailable_reason() is not None:
        pytest.skip(str(jit_unavailable_reason()))
    cfg = MachineConfig(kernel=str(IMAGE), initrd=str(INITRD), append="console=ttyS0",
                        engine="jit", vmgenid="auto")
    console = BufferConsole()
    vm = Machine(cfg, console=console)
    snap = str(tmp_path / "vm.snap")
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        compatible, origin = _guest_vmgenid(vm, console)
        assert compatible == "microsoft,vmgenid"
        assert origin == vm.board.vmgenid.guid
        vm.snapshot(snap)
    finally:
        vm.close()
    seen = []
    for clone in (False, True, True):
        c = BufferConsole()
        r = Machine.restore(snap, console=c, clone=clone)
        try:
            compatible, guid = _guest_vmgenid(r, c)
            assert compatible == "microsoft,vmgenid" and guid == r.board.vmgenid.guid
            seen.append(guid)
        finally:
            r.close()
    same, first, second = seen
    assert same == origin
    assert len({origin, first, second}) == 3
