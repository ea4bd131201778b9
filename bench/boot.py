#!/usr/bin/env python3
"""Linux boot time on pyhv next to QEMU, measured in the same run.

Boots ../shared/guests/Image with the uncompressed initramfs and
``pyhv.bootonly=1`` (prints the banner, then powers off) on qemu-system-riscv64 and on
pyhv, as whole processes, and prints the seconds from launch to ``PYHV-GUEST-READY`` and
to exit, and the ratio to QEMU. The JIT is measured twice: a first boot with an empty
code cache (a fresh ``PYHV_JIT_CACHE`` directory) and a second boot that finds the
first one's machine code there.

    python bench/boot.py [--smp 1] [--runs 1] [--selftest] [--engines jit,interp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUESTS = ROOT.parent / "shared" / "guests"
FW = "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin"
MARK = b"PYHV-GUEST-READY"


def timed(cmd: list[str], timeout: float, env: dict | None = None
          ) -> tuple[float, float, int]:
    """(seconds to the READY marker, seconds to exit, exit status)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env)
    ready = [float("nan")]
    buf = bytearray()

    def reader() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(4096):
            buf.extend(chunk)
            if ready[0] != ready[0] and MARK in buf:
                ready[0] = time.monotonic() - start

    t = threading.Thread(target=reader)
    t.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = -9
    t.join()
    return ready[0], time.monotonic() - start, code



def byte_compile() -> None:
    """Measure pyhv as installed (pip byte-compiles a package): with
    PYTHONDONTWRITEBYTECODE set, every process would otherwise recompile the
    sources it imports (~0.2 s of start-up)."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "src" / "pyhv"), quiet=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--selftest", action="store_true", help="full selftest instead of bootonly")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--engines", default="jit",
                    help="comma-separated pyhv engines (default jit; interp takes ~70 s)")
    args = ap.parse_args()
    byte_compile()
    mode = "pyhv.selftest=1" if args.selftest else "pyhv.bootonly=1"
    common = ["-m", "128M", "-smp", str(args.smp), "-bios", FW, "-kernel", str(GUESTS / "Image"),
              "-initrd", str(GUESTS / "initramfs.cpio"), "-append", f"console=ttyS0 {mode}"]
    # (name, command, environment, empty the code cache before each run)
    runners: list[tuple[str, list[str], dict | None, bool]] = []
    qemu = shutil.which("qemu-system-riscv64")
    if qemu:
        runners.append(("qemu-system-riscv64 (TCG)",
                        [qemu, "-M", "virt", "-nographic", "-no-reboot", *common], None, False))
    pyhv = [sys.executable, "-m", "pyhv.cli.qemu_compat", "-M", "virt", "-nographic",
            "-no-reboot", *common]
    cache = tempfile.mkdtemp(prefix="pyhv-boot-cache-")
    for engine in args.engines.split(","):
        cmd = [*pyhv, "-accel", f"pyhv,engine={engine}"]
        if engine in ("jit", "auto"):
            # First boot with an empty code cache, then a second boot that finds it warm.
            # (The cache is emptied before every first boot; second boots run after.)
            env = dict(os.environ, PYHV_JIT_CACHE=cache)
            runners.append((f"pyhv {engine}, first boot", cmd, env, True))
            runners.append((f"pyhv {engine}, second boot", cmd, env, False))
        else:
            runners.append((f"pyhv {engine}", cmd, None, False))
    results = []
    for name, cmd, env, fresh in runners:
        runs = []
        for _ in range(args.runs):
            if fresh:
                shutil.rmtree(cache, ignore_errors=True)
            runs.append(timed(cmd, args.timeout, env))
        if any(code != 0 for _, _, code in runs):
            print(f"{name}: exit status {[c for _, _, c in runs]}", file=sys.stderr)
        results.append((name, statistics.median(r[0] for r in runs),
                        statistics.median(r[1] for r in runs)))
    shutil.rmtree(cache, ignore_errors=True)
    print(f"Linux 6.1 {mode}, -smp {args.smp}, median of {args.runs} run(s), wall seconds")
    head = ("runner", "to READY", "to exit", "READY vs QEMU", "exit vs QEMU")
    print(f"{head[0]:28} {head[1]:>9} {head[2]:>9} {head[3]:>14} {head[4]:>13}")
    ref = results[0] if qemu else None
    for name, ready, total in results:
        r1 = f"{ready / ref[1]:.1f}x" if ref else "-"
        r2 = f"{total / ref[2]:.1f}x" if ref else "-"
        print(f"{name:28} {ready:9.2f} {total:9.2f} {r1:>14} {r2:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
