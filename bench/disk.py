#!/usr/bin/env python3
"""Small and large reads from a virtio disk inside Linux, pyhv next to QEMU.

Boots ../shared/guests/Image with the initramfs and ``rootfs.ext2`` as a read-only
virtio-blk disk on QEMU and on pyhv (QEMU's flags, default engine, an empty JIT code
cache each run), types one command line at the shell and times, on the host, between
the markers the guest prints around each part:

* ``small``: ``dd`` of 4 KiB blocks with ``iflag=direct`` (every block one request to
  the device: the guest's block layer, a queue notify, an interrupt: the per-request
  cost of the I/O path, as a database's random reads see it);
* ``large``: ``dd`` of the whole disk in 1 MiB blocks, direct, ``--passes`` times
  (throughput).

Runs are interleaved (QEMU run i, then pyhv run i); it prints the medians and the
ratio to QEMU.

    python3 bench/disk.py [--runs 3] [--small 4000] [--passes 4]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time

from cpu import byte_compile
from forkexec import FW, GUESTS, PROMPT, Console, fresh_jit_cache

MARKS = (b"DISKBENCH-BEGIN", b"DISKBENCH-SMALL", b"DISKBENCH-LARGE")


def workload(small: int, passes: int) -> str:
    # markers printed split (DISK""BENCH) so that the echo of this line does not match
    return (f'echo DISK""BENCH-BEGIN; dd if=/dev/vda of=/dev/null bs=4k count={small} '
            f'iflag=direct 2>/dev/null; echo DISK""BENCH-SMALL; for i in $(seq {passes}); '
            'do dd if=/dev/vda of=/dev/null bs=1M iflag=direct 2>/dev/null; done; '
            'echo DISK""BENCH-LARGE\n')


def one_run(cmd: list[str], env: dict[str, str] | None, small: int, passes: int,
            timeout: float) -> tuple[float, float]:
    """(seconds for the small reads, seconds for the large ones)."""
    con = Console(cmd, env)
    try:
        at = con.wait_for(PROMPT, timeout)
        con.send(workload(small, passes))
        times = []
        for mark in MARKS:  # (the reader thread wakes wait_for as each chunk comes)
            at = con.wait_for(mark + b"\r\n", timeout, at)
            times.append(time.monotonic())
        con.send("poweroff -f\n")
        con.proc.wait(timeout=timeout)
    finally:
        if con.proc.poll() is None:
            con.proc.kill()
            con.proc.wait()
    return times[1] - times[0], times[2] - times[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", type=int, default=4000, help="4 KiB direct reads")
    ap.add_argument("--passes", type=int, default=4, help="whole-disk reads in 1 MiB blocks")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    if args.runs < 1 or args.small < 1 or args.passes < 1:
        sys.exit("--runs, --small and --passes must be at least 1")
    disk = GUESTS / "rootfs.ext2"
    if not (GUESTS / "Image").exists() or not disk.exists():
        sys.exit(f"{GUESTS}: no Linux guest and rootfs.ext2 there (see ../shared/guests)")
    mib = disk.stat().st_size >> 20
    if args.small > disk.stat().st_size >> 12:
        sys.exit(f"{disk} has fewer than {args.small} blocks of 4 KiB")
    byte_compile()
    common = ["-M", "virt", "-m", "128M", "-smp", "1", "-nographic", "-no-reboot",
              "-bios", FW, "-kernel", str(GUESTS / "Image"),
              "-initrd", str(GUESTS / "initramfs.cpio"), "-append", "console=ttyS0",
              "-drive", f"file={disk},format=raw,if=none,id=d0,readonly=on",
              "-device", "virtio-blk-device,drive=d0"]
    runners: dict[str, list[str]] = {}
    qemu = shutil.which("qemu-system-riscv64")
    if qemu:
        runners["qemu-system-riscv64 (TCG)"] = [qemu, *common]
    runners["pyhv (default engine)"] = [sys.executable, "-m", "pyhv.cli.qemu_compat", *common]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for _ in range(args.runs):
        for name, cmd in runners.items():
            with fresh_jit_cache() as env:
                try:
                    small, large = one_run(cmd, env if name.startswith("pyhv") else None,
                                           args.small, args.passes, args.timeout)
                except RuntimeError as e:
                    print(f"{name}: {e}", file=sys.stderr)
                    return 1
            times[name].append((small, large))
            print(f"  {name}: small reads {small:.2f} s, large reads {large:.2f} s",
                  file=sys.stderr, flush=True)
    print(f"Linux 6.1, virtio-blk (read-only raw image of {mib} MiB): {args.small} x 4 KiB "
          f"direct reads, then {args.passes} whole-disk direct reads in 1 MiB blocks; "
          f"median of {args.runs}")
    print(f"{'runner':28} {'us/4K read':>11} {'MiB/s 1M':>9} {'vs QEMU':>16}")
    ref = None
    for name, runs in times.items():
        s = statistics.median(r[0] for r in runs)
        big = statistics.median(r[1] for r in runs)
        per, rate = s / args.small * 1e6, args.passes * mib / big
        if ref is None and name.startswith("qemu"):
            ref = (per, rate)
        ratio = f"{per / ref[0]:.2f}x / {ref[1] / rate:.2f}x" if ref else "-"
        print(f"{name:28} {per:11.0f} {rate:9.1f} {ratio:>16}")
    if ref:
        print("(vs QEMU: time per small read, and time for the large reads; lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
