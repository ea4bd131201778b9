#!/usr/bin/env python3
"""Guest MIPS of pyhv's engines on a CPU-bound bare-metal guest, next to QEMU's.

Runs guests/bench/bench.elf (integer, memory, branchy and floating-point work; it prints
its own retired-instruction count from minstret and a checksum) on each pyhv engine and
on qemu-system-riscv64 (TCG) in the same run, as whole processes, and prints wall time,
guest MIPS and the ratio to QEMU. All runners must print the same checksum.

The instruction count is the one pyhv's minstret reports: exact, and equal to what QEMU
counts with ``-icount shift=0`` (5,621,503 for bench-small.elf on both). QEMU without
icount backs minstret with host ticks, so its own figure is not used.

    python bench/cpu_mips.py [--program guests/bench/bench-small.elf] [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "guests" / "bench" / "bench.elf"


def run(cmd: list[str], timeout: float) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(
            f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return elapsed, proc.stdout


def parse(out: str) -> tuple[str, int]:
    checksum = re.search(r"BENCH-CHECKSUM (\S+)", out)
    instret = re.search(r"BENCH-INSTRET (\d+)", out)
    if not checksum or not instret:
        sys.exit(f"benchmark output not recognised:\n{out[-2000:]}")
    return checksum.group(1), int(instret.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--program", type=Path, default=DEFAULT)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engines", default="interp")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    if not args.program.exists():
        sys.exit(f"{args.program}: no such file (build it with make -C guests/bench)")

    rows = []
    qemu = shutil.which("qemu-system-riscv64")
    qemu_time = None
    if qemu:
        cmd = [
            qemu,
            "-M",
            "virt",
            "-m",
            "128M",
            "-nographic",
            "-bios",
            "none",
            "-kernel",
            str(args.program),
        ]
        times, outs = zip(*(run(cmd, args.timeout) for _ in range(args.runs)), strict=False)
        qemu_time = statistics.median(times)
        rows.append(("qemu-system-riscv64 (TCG)", qemu_time, *parse(outs[0])))
    else:
        print("qemu-system-riscv64 not found: no reference column", file=sys.stderr)

    for engine in args.engines.split(","):
        cmd = [
            sys.executable,
            "-m",
            "pyhv.cli.main",
            "run",
            "--bios",
            "none",
            "--engine",
            engine,
            "--kernel",
            str(args.program),
        ]
        times, outs = zip(*(run(cmd, args.timeout) for _ in range(args.runs)), strict=False)
        rows.append((f"pyhv --engine {engine}", statistics.median(times), *parse(outs[0])))

    prog = args.program
    shown = prog.relative_to(ROOT) if prog.is_relative_to(ROOT) else prog
    print(f"program: {shown}  (median of {args.runs} runs, whole-process wall time)")
    head = ("runner", "seconds", "guest instr", "MIPS", "time vs QEMU", "checksum")
    print(f"{head[0]:32} {head[1]:>9} {head[2]:>12} {head[3]:>9} {head[4]:>13}  {head[5]}")
    exact = rows[-1][3]  # pyhv's minstret: the true instruction count of the program
    for name, secs, checksum, _instret in rows:
        ratio = f"{secs / qemu_time:.1f}x" if qemu_time else "-"
        instret = exact
        mips = instret / secs / 1e6
        print(f"{name:32} {secs:9.2f} {instret:12,} {mips:9.2f} {ratio:>13}  {checksum}")
    sums = {r[2] for r in rows}
    if len(sums) != 1:
        print("CHECKSUM MISMATCH between runners", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
