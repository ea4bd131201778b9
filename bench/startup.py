#!/usr/bin/env python3
"""Fixed cost: a guest that powers off at once, pyhv against QEMU, whole processes.

guests/tests/exit_pass.elf prints two lines and powers off (~500 instructions), so its
whole-process time is what a run costs before and after the guest: Python's own start,
pyhv's imports, building the board, and teardown. Runs are interleaved (QEMU run i,
then pyhv run i), each pyhv run with an empty JIT code cache and the default engine
(``auto``: the JIT where it works). It prints the medians, the ratio, and pyhv's own
breakdown (``--stats``: imports, building the machine, running, stopping) from the run
nearest the median. For reference it also times the same Python interpreter starting and
doing nothing (``python3 -c pass``, with the same site-packages): the floor under any
Python program on the machine (on this workplace's machines ~0.04 s, most of it a
``.pth`` file of the sandbox that imports ``certifi``).

    python3 bench/startup.py [--runs 15] [--guest guests/tests/exit_pass.elf]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
from pathlib import Path

from cpu import ROOT, RunFailed, byte_compile, pyhv_command, qemu_command, run_once

DEFAULT_GUEST = ROOT / "guests" / "tests" / "exit_pass.elf"
TIMES = re.compile(r"pyhv: time: .*")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="interleaved runs of each runner")
    ap.add_argument("--guest", type=Path, default=DEFAULT_GUEST)
    args = ap.parse_args(argv)
    if args.runs < 1:
        sys.exit("--runs must be at least 1")
    if not args.guest.exists():
        sys.exit(f"{args.guest}: no such file")
    byte_compile()
    qemu = shutil.which("qemu-system-riscv64")
    cmds = {"pyhv": pyhv_command(args.guest.resolve()), "python": [sys.executable, "-c", "pass"]}
    if qemu:
        cmds["qemu"] = qemu_command(qemu, args.guest.resolve())
    else:
        print("qemu-system-riscv64 not found: no QEMU column", file=sys.stderr)
    walls: dict[str, list[float]] = {name: [] for name in cmds}
    breakdown: list[tuple[float, str]] = []
    try:
        run_once(cmds["pyhv"], 60)  # page cache, byte-compiled files: not counted
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                wall, _cpu, _out, err = run_once(cmd, 60)
                walls[name].append(wall)
                if name == "pyhv":
                    found = TIMES.search(err)
                    breakdown.append((wall, found.group(0) if found else "?"))
    except RunFailed as e:
        print(f"a run failed: {e}", file=sys.stderr)
        return 1
    med = {name: statistics.median(w) for name, w in walls.items()}
    shown = args.guest.relative_to(ROOT) if args.guest.is_relative_to(ROOT) else args.guest
    print(f"guest: {shown}; whole process, median of {args.runs} interleaved runs")
    print(f"{'runner':28} {'median s':>9} {'min s':>7} {'max s':>7} {'vs QEMU':>8}")
    labels = {"qemu": "qemu-system-riscv64 (TCG)", "pyhv": "pyhv (default engine)",
              "python": "python3 -c pass (the floor)"}
    for name in ("qemu", "pyhv", "python"):
        if name not in med:
            continue
        label = labels[name]
        ratio = f"{med[name] / med['qemu']:.1f}x" if "qemu" in med else "-"
        print(f"{label:28} {med[name]:9.3f} {min(walls[name]):7.3f} {max(walls[name]):7.3f} "
              f"{ratio:>8}")
    nearest = min(breakdown, key=lambda b: abs(b[0] - med["pyhv"]))[1]
    print(nearest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
