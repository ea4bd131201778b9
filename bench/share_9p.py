#!/usr/bin/env python3
"""Host directory share (virtio-9p) throughput: pyhv beside qemu-system-riscv64.

Both boot ``../shared/guests`` from the same QEMU command line (pyhv through
``pyhv.cli.qemu_compat``) with ``-fsdev local,id=fs0,path=DIR,security_model=none
-device virtio-9p-device,fsdev=fs0,mount_tag=share``; the guest mounts it with
``trans=virtio,version=9p2000.L`` (the kernel's default msize, 128 KiB, no page cache:
every byte crosses the device), then:

* guest -> host: ``dd if=/dev/zero of=/mnt/w.bin bs=1M count=32``;
* host -> guest: ``cat /mnt/r.bin > /dev/null`` of 32 MiB the host wrote;
* metadata: 200 files created with ``echo``, ``ls -l``, removed with ``rm -r``.

Each phase is timed on the host from sending the command to its end marker on the
console, less the same round trip of an empty command; the sha256 of what the guest
wrote is checked on the host. Prints MiB/s (files/s) and the ratio pyhv/QEMU
(above 1: pyhv is faster).

    python3 bench/share_9p.py [--size-mib 32] [--no-qemu]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUESTS = ROOT.parent / "shared" / "guests"
PROMPT = b"pyhv:/# "
MiB = 1 << 20


class Guest:
    """A VM process whose serial console is stdin/stdout pipes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
        self.out = bytearray()
        self.seen = b""  # what the console printed up to the last expect()

    def expect(self, needle: bytes, timeout: float) -> None:
        end = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while needle not in self.out:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise SystemExit(f"no {needle!r}: {self.out[-2000:].decode(errors='replace')}")
            if select.select([fd], [], [], min(left, 1.0))[0]:
                self.out += os.read(fd, 65536)
        cut = self.out.index(needle) + len(needle)
        self.seen = bytes(self.out[:cut])
        del self.out[:cut]

    def run(self, command: str, timeout: float = 600) -> float:
        """Seconds from sending ``command`` to its end marker."""
        assert self.proc.stdin is not None
        t0 = time.monotonic()
        self.proc.stdin.write(f"{command}; echo E''ND-MARK\n".encode())
        self.proc.stdin.flush()
        self.expect(b"END-MARK", timeout)
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def measure(name: str, program: list[str], size_mib: int) -> dict[str, float]:
    share = Path(tempfile.mkdtemp(prefix="pyhv-9p-bench-"))
    try:
        (share / "r.bin").write_bytes(os.urandom(size_mib * MiB))
        argv = [*program, "-M", "virt", "-m", "256M", "-smp", "1", "-nographic",
                "-bios", "default", "-kernel", str(GUESTS / "Image"),
                "-initrd", str(GUESTS / "initramfs.cpio"), "-append", "console=ttyS0",
                # (-virtfs would give QEMU's virt a virtio-9p-pci: the guest has no PCI)
                "-fsdev", f"local,id=fs0,path={share},security_model=none",
                "-device", "virtio-9p-device,fsdev=fs0,mount_tag=share"]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        g = Guest(argv, env)
        try:
            g.expect(PROMPT, 600)
            time.sleep(1)  # (busybox's line editor asks the terminal where its cursor is)
            g.run("mkdir -p /mnt && mount -t 9p -o trans=virtio,version=9p2000.L share /mnt "
                  "&& echo MOUNT''-OK")
            if b"MOUNT-OK" not in g.seen:
                raise SystemExit(f"{name}: mount failed: {g.seen[-1000:].decode(errors='replace')}")
            base = min(g.run("true") for _ in range(5))
            write = g.run(f"dd if=/dev/zero of=/mnt/w.bin bs=1M count={size_mib} "
                          "2>/dev/null") - base
            if (share / "w.bin").read_bytes() != bytes(size_mib * MiB):
                raise SystemExit(f"{name}: the file the guest wrote differs")
            read = g.run("cat /mnt/r.bin > /dev/null") - base
            meta = g.run("mkdir /mnt/m && i=0; while [ $i -lt 200 ]; do echo x > /mnt/m/f$i; "
                         "i=$((i+1)); done; ls -l /mnt/m > /dev/null; rm -r /mnt/m") - base
            got = hashlib.sha256((share / "w.bin").read_bytes()).hexdigest()[:12]
        finally:
            g.stop()
    finally:
        shutil.rmtree(share, ignore_errors=True)
    r = {"write": size_mib / write, "read": size_mib / read, "meta": 200 / meta}
    print(f"{name:<28} guest->host {r['write']:7.1f} MiB/s   host->guest {r['read']:7.1f} "
          f"MiB/s   metadata {r['meta']:6.1f} files/s   (w.bin sha256 {got}...)", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=32)
    ap.add_argument("--no-qemu", action="store_true")
    args = ap.parse_args()
    qemu = None if args.no_qemu else shutil.which("qemu-system-riscv64")
    ref = measure("qemu-system-riscv64 (TCG)", [qemu], args.size_mib) if qemu else None
    mine = measure("pyhv (qemu_compat, JIT)",
                   [sys.executable, "-m", "pyhv.cli.qemu_compat"], args.size_mib)
    if ref:
        print("pyhv/QEMU: " + ", ".join(f"{k} {mine[k] / ref[k]:.2f}x"
                                         for k in ("write", "read", "meta")))


if __name__ == "__main__":
    main()
