#!/usr/bin/env python3
"""I/O budgets on Linux guests: a disk and a NIC held to their terms.

Each phase boots ``../shared/guests`` (JIT) with a budgeted device, makes the guest
push as fast as it can for 12 s, and samples from the host what the device moved:

* disk, bytes: ``bps=2M``; the guest reads its disk with ``dd bs=64k iflag=direct``
  in a loop; after 6 s the budget is raised to 4 MiB/s live (``set_limits``, what
  ``pyhv set`` does): the rate before and after, and how long the change took to show;
* disk, requests: ``iops=200``; ``dd bs=4k iflag=direct``;
* NIC, transmit: ``tx_bps=1M``; the guest floods ICMP (``ping -s 1400 -i 0.0002``,
  restarted when the kernel says ENOBUFS) to a fixed MAC; the bench's own switch port
  counts the bytes;
* the first second of each: the burst (one second's worth by default) on top;
* beside a throttled VM: an unlimited one reads its disk, alone and then while a VM
  throttled to 1 MiB/s (another pyhv process) reads as fast as it can.

Rates are taken over seconds 3 to 11 (after the burst and start-up). Target (issue
18): within 5% of the budget.

    python3 bench/io_budget.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyhv import BufferConsole, Machine, MachineConfig  # noqa: E402
from pyhv.devices.io_budget import Limits  # noqa: E402
from pyhv.net import SwitchPort  # noqa: E402
from pyhv.vm.config import DiskSpec, NetSpec  # noqa: E402

GUESTS = ROOT.parent / "shared" / "guests"
PROMPT = "pyhv:/# "
MiB = 1 << 20


def boot(device: DiskSpec | NetSpec) -> tuple[Machine, BufferConsole]:
    console = BufferConsole()
    vm = Machine(MachineConfig(kernel=str(GUESTS / "Image"),
                               initrd=str(GUESTS / "initramfs.cpio"),
                               append="console=ttyS0", engine="jit", devices=(device,)),
                 console=console)
    if not vm.run_until(PROMPT, timeout=600):
        raise SystemExit(f"no shell prompt: {console.text[-500:]}")
    return vm, console


def sample(vm: Machine, seconds: float, count: Callable[[], int],
           at: Callable[[float], None] | None = None) -> list[tuple[float, int]]:
    """Run ``vm`` for ``seconds``, recording (time since start, ``count()``) every 50 ms;
    ``at(t)`` is called on the way (a live change)."""
    out: list[tuple[float, int]] = []
    t0 = time.monotonic()
    while (t := time.monotonic() - t0) < seconds:
        vm.run(timeout=0.05)
        if at is not None:
            at(t)
        out.append((t, count()))
    return out


def rate(points: list[tuple[float, int]], lo: float, hi: float) -> float:
    inside = [(t, n) for t, n in points if lo <= t <= hi]
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0)


def disk_bytes() -> None:
    spec = DiskSpec(str(GUESTS / "rootfs.ext2"), read_only=True, bps=2 * MiB)
    vm, console = boot(spec)
    disk = vm.board.virtio_devices[0]
    changed: list[float] = []

    def raise_at_6(t: float) -> None:
        if t >= 6.0 and not changed:
            disk.set_limits(Limits(bps=4 * MiB))  # type: ignore[attr-defined]
            changed.append(t)

    try:
        console.send("timeout 12 sh -c 'while :; do dd if=/dev/vda of=/dev/null bs=64k "
                     "iflag=direct 2>/dev/null; done'\n")
        pts = sample(vm, 12.0, lambda: disk.stats["read_bytes"], raise_at_6)  # type: ignore[attr-defined]
    finally:
        vm.close()
    first = rate(pts, 0.0, 1.0)
    before = rate(pts, 3.0, 6.0)
    after = rate(pts, changed[0] + 1.0, 11.5)
    # how long until the new rate shows: the first 200 ms window after the change
    # whose rate is above the old budget by half the difference
    shown = next((t - changed[0] for t, _ in pts if t > changed[0] + 0.2
                  and rate(pts, t - 0.2, t) > 3 * MiB), float("nan"))
    print(f"disk bps=2M: {before / MiB:.3f} MiB/s ({(before / (2 * MiB) - 1) * 100:+.1f}%), "
          f"first second {first / MiB:.2f} MiB (burst 2 MiB + 2 MiB/s); live change to 4M "
          f"at {changed[0]:.1f} s: {after / MiB:.3f} MiB/s "
          f"({(after / (4 * MiB) - 1) * 100:+.1f}%), shown within {shown:.2f} s")


def disk_ops() -> None:
    spec = DiskSpec(str(GUESTS / "rootfs.ext2"), read_only=True, iops=200)
    vm, console = boot(spec)
    disk = vm.board.virtio_devices[0]
    try:
        console.send("timeout 12 sh -c 'while :; do dd if=/dev/vda of=/dev/null bs=4k "
                     "iflag=direct 2>/dev/null; done'\n")
        pts = sample(vm, 12.0, lambda: disk.stats["reads"])  # type: ignore[attr-defined]
    finally:
        vm.close()
    ops = rate(pts, 3.0, 11.0)
    print(f"disk iops=200: {ops:.1f} requests/s ({(ops / 200 - 1) * 100:+.1f}%), "
          f"first second {rate(pts, 0.0, 1.0):.0f} (burst 200 + 200/s)")


def nic_tx() -> None:
    switch = f"io-bench-{time.monotonic_ns()}"
    vm, console = boot(NetSpec(switch, tx_bps=MiB))
    sink = SwitchPort(switch)
    got = [0]

    def count() -> int:
        got[0] += sum(len(f) for f in sink.receive(10000))
        return got[0]

    try:
        console.send("ifconfig eth0 10.0.0.1 up; arp -s 10.0.0.2 52:54:00:00:00:02; "
                     "timeout 12 sh -c 'while :; do ping -q -s 1400 -i 0.0002 -w 12 "
                     "10.0.0.2 >/dev/null 2>&1; done'\n")
        pts = sample(vm, 12.0, count)
    finally:
        vm.close()
        sink.close()
    bps = rate(pts, 3.0, 11.0)
    print(f"NIC tx_bps=1M: {bps / MiB:.3f} MiB/s ({(bps / MiB - 1) * 100:+.1f}%)")


def neighbour() -> None:
    """An unlimited VM's disk reads, alone and beside a VM throttled to 1 MiB/s that
    reads as fast as it can (another pyhv process, as the host daemon runs each VM)."""
    free, fc = boot(DiskSpec(str(GUESTS / "rootfs.ext2"), read_only=True))
    cmd = "dd if=/dev/vda of=/dev/null bs=64k count=256 iflag=direct 2>&1 | tail -1"

    def timed() -> float:
        start = len(fc.output)
        fc.send(cmd + "\n")
        t0 = time.monotonic()
        while fc.output.find(b"records out", start) < 0:
            free.run(timeout=0.01)
        return time.monotonic() - t0

    other = None
    try:
        alone = min(timed() for _ in range(5))
        other = subprocess.Popen(
            [sys.executable, "-m", "pyhv.cli.main", "run", "--kernel", str(GUESTS / "Image"),
             "--initrd", str(GUESTS / "initramfs.cpio"), "--append", "console=ttyS0",
             "--disk", f"{GUESTS / 'rootfs.ext2'},ro,bps=1M"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert other.stdin is not None and other.stdout is not None
        seen = b""
        while PROMPT.encode() not in seen:
            chunk = other.stdout.read1(4096)
            if not chunk:
                raise SystemExit("the throttled VM did not reach its shell")
            seen += chunk
        other.stdin.write(b"while :; do dd if=/dev/vda of=/dev/null bs=64k iflag=direct "
                          b"2>/dev/null; done\n")
        other.stdin.flush()
        time.sleep(2.0)  # reading, throttled
        beside = min(timed() for _ in range(5))
    finally:
        free.close()
        if other is not None:
            other.kill()
            other.wait()
    print(f"unlimited VM reading 16 MiB: alone {alone:.3f} s, beside a VM throttled to "
          f"1 MiB/s {beside:.3f} s ({beside / alone:.2f}x; best of 5 each)")


def main() -> int:
    if not (GUESTS / "Image").exists():
        print(f"needs {GUESTS}", file=sys.stderr)
        return 1
    print("I/O budgets, Linux guests pushing as fast as they can (rates over seconds "
          "3-11 of 12)")
    disk_bytes()
    disk_ops()
    nic_tx()
    neighbour()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
