#!/usr/bin/env python3
"""How long gdb waits for a breakpoint in the Linux guest: pyhv's gdb stub against
QEMU's, the same gdb-multiarch commands in one run.

Starts the Linux guest (../shared/guests/Image, uncompressed initramfs, OpenSBI)
held for gdb (``pyhv run --gdb ... --wait-gdb``; ``qemu-system-riscv64 ... -S -gdb``),
then times, in gdb itself, ``hbreak start_kernel`` + ``continue`` until the stop, and
a second stretch with the breakpoint on ``kernel_init`` (all of the kernel's boot up to
its first process, which runs on the breakpoint interpreter while the breakpoint is
set). The kernel's symbols come from its kallsyms (vmlinux-to-elf, as docs/gdb.md).

    python bench/gdb_stub.py [--engine auto] [--repeat 1]

Prints seconds per stretch for pyhv and QEMU (TCG) and the ratio pyhv/QEMU.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUESTS = ROOT.parent / "shared" / "guests"
IMAGE, INITRD = GUESTS / "Image", GUESTS / "initramfs.cpio"
KERNEL_LINK_ADDR = "ffffffff80000000"
STOPS = ("start_kernel", "kernel_init")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def symbols(tmp: Path) -> Path:
    out = tmp / "vmlinux.elf"
    tool = shutil.which("vmlinux-to-elf")
    argv = [tool] if tool else [sys.executable, "-m", "vmlinux_to_elf.scripts.vmlinux_to_elf"]
    subprocess.run([*argv, "--e-machine", "243", "--bit-size", "64", "--base-address",
                    KERNEL_LINK_ADDR, str(IMAGE), str(out)], check=True,
                   capture_output=True)
    return out


def session(port: int, vmlinux: Path) -> list[float]:
    """gdb's own clock around each continue (python in gdb: time.monotonic)."""
    argv = ["gdb-multiarch", "-batch", "-nx", "-ex", "set architecture riscv:rv64",
            "-ex", f"file {vmlinux}", "-ex", f"target remote 127.0.0.1:{port}"]
    for name in STOPS:
        argv += ["-ex", "delete", "-ex", f"hbreak {name}",
                 "-ex", "python import time; t0 = time.monotonic()",
                 "-ex", "continue",
                 "-ex", f"python print('TOOK {name}', time.monotonic() - t0)"]
    argv += ["-ex", "kill"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900).stdout
    took = dict(re.findall(r"^TOOK (\w+) ([0-9.]+)$", out, re.M))
    if set(took) != set(STOPS):
        raise SystemExit(f"gdb did not reach every breakpoint:\n{out}")
    return [float(took[name]) for name in STOPS]


def run_pyhv(engine: str, vmlinux: Path) -> list[float]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.main", "run", "--kernel", str(IMAGE), "--initrd",
         str(INITRD), "--append", "console=ttyS0", "--engine", engine, "--gdb",
         f"tcp:127.0.0.1:{port}", "--wait-gdb"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stderr is not None
        proc.stderr.readline()  # listening
        return session(port, vmlinux)
    finally:
        proc.kill()
        proc.wait()


def run_qemu(vmlinux: Path) -> list[float]:
    port = free_port()
    proc = subprocess.Popen(
        ["qemu-system-riscv64", "-M", "virt", "-m", "128M", "-nographic", "-bios", "default",
         "-kernel", str(IMAGE), "-initrd", str(INITRD), "-append", "console=ttyS0",
         "-S", "-gdb", f"tcp:127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until QEMU listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        return session(port, vmlinux)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        vmlinux = symbols(Path(tmp))
        for _ in range(args.repeat):
            ours = run_pyhv(args.engine, vmlinux)
            qemu = run_qemu(vmlinux)
            for name, a, b in zip(STOPS, ours, qemu, strict=True):
                print(f"continue to {name:13s}: pyhv ({args.engine}) {a:7.2f} s   "
                      f"QEMU {b:6.2f} s   ratio {a / b:6.1f}x")


if __name__ == "__main__":
    main()
