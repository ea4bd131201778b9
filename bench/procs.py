#!/usr/bin/env python3
"""pyhv against QEMU on an exec-heavy guest: a tiny multi-process kernel.

The guest, guests/bench/procs/procs.elf (``make -C guests/bench/procs``), is a small
bare-metal kernel (M-mode set-up, then S-mode with Sv39) that runs about 2,000 short
processes: init forks, the children exec small user programs (strings, sort, sieve,
forker), each exec copying the program's code into freshly freed physical pages under
a fresh page table, with system calls, fork-only copies, and batches of concurrent
processes preempted by a timer. Code pages keep changing contents, and the programs
write .data in the same page as their code. It prints ``BENCH-CHECKSUM`` and powers off.

In the same run and interleaved (run i of each runner before run i+1 of either), whole
processes from spawn to exit:

* ``qemu-system-riscv64 -M virt -bios none -nographic -kernel procs.elf``;
* ``pyhv run --bios none --kernel procs.elf --stats`` with pyhv's default engine and an
  empty JIT code cache per run (as bench/cpu.py does).

Prints the median wall time of each, pyhv/QEMU, pyhv's retired instructions and MIPS
(wall time) from ``--stats``, the guest's own summary, and pyhv's ``pyhv: jit:``
counters line from the run nearest the median. Exit status 1 if a run failed or the
checksums differ. (pyhv's instruction count varies a little between runs: the guest's
timer ticks follow the host clock.)

    python3 bench/procs.py [--runs 3] [--guest guests/bench/procs/procs.elf] [--timeout 600]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cpu import (
    ROOT,
    RunFailed,
    byte_compile,
    checksum_of,
    parse_stats,
    pyhv_command,
    qemu_command,
    run_once,
)

DEFAULT_GUEST = ROOT / "guests" / "bench" / "procs" / "procs.elf"
RUNNERS = ("qemu", "pyhv")


@dataclass
class Run:
    wall: float
    checksum: str
    out: str
    err: str


@dataclass
class Runs:
    """The runs of one runner."""

    runs: list[Run] = field(default_factory=list)
    error: str | None = None

    @property
    def wall(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def median_run(self) -> Run:
        """The run whose wall time is nearest the median."""
        return min(self.runs, key=lambda r: abs(r.wall - self.wall))


def measure(cmds: dict[str, list[str]], runs: int, timeout: float) -> dict[str, Runs]:
    results = {name: Runs() for name in RUNNERS}
    for i in range(runs):
        for name in RUNNERS:
            r = results[name]
            if r.error:
                continue
            try:
                wall, _, out, err = run_once(cmds[name], timeout)
                run = Run(wall, checksum_of(out), out, err)
                if name == "pyhv":
                    parse_stats(err)  # fails the run if there is no --stats line
            except RunFailed as e:
                r.error = str(e)
                print(f"  {name}: run {i + 1}/{runs}: FAILED: {e}", file=sys.stderr, flush=True)
                continue
            r.runs.append(run)
            print(f"  {name}: run {i + 1}/{runs}: {wall:.2f} s wall, {run.checksum}",
                  file=sys.stderr, flush=True)
    return results


def guest_summary(out: str) -> list[str]:
    """The guest's own summary lines (procs: ...)."""
    return [line.strip() for line in out.splitlines() if line.startswith("procs:")]


def report(results: dict[str, Runs], guest: str, runs: int) -> tuple[str, bool]:
    """The printed report, and whether everything ran and agreed."""
    q, p = results["qemu"], results["pyhv"]
    lines = [f"guest: {guest}  (whole process, median of {runs} interleaved run(s); "
             "pyhv: default engine, empty JIT code cache)"]
    ok = True
    if q.runs:
        walls = ", ".join(f"{r.wall:.2f}" for r in q.runs)
        lines.append(f"QEMU (TCG):      {q.wall:6.2f} s   (runs: {walls})")
    if p.runs:
        walls = ", ".join(f"{r.wall:.2f}" for r in p.runs)
        lines.append(f"pyhv:            {p.wall:6.2f} s   (runs: {walls})")
    if q.runs and p.runs:
        lines.append(f"pyhv/QEMU:       {p.wall / q.wall:6.2f}x")
    if p.runs:
        med = p.median_run
        count, loop, engine = parse_stats(med.err)
        counts = sorted(parse_stats(r.err)[0] for r in p.runs)
        spread = (f" (runs: {counts[0]:,} .. {counts[-1]:,})" if counts[0] != counts[-1]
                  else "")
        lines.append(f"pyhv instructions: {count:,}{spread}, engine {engine}")
        lines.append(f"pyhv MIPS:       {count / med.wall / 1e6:6.2f} over the wall time "
                     f"({count / loop / 1e6:.2f} over the run loop's {loop:.2f} s)")
        jit = [line.strip() for line in med.err.splitlines() if line.startswith("pyhv: jit:")]
        lines.append(jit[0] if jit else "pyhv: jit: (no jit line: the JIT did not run)")
    summary = guest_summary((p.runs or q.runs)[0].out) if (p.runs or q.runs) else []
    lines.extend(f"guest: {s}" for s in summary)
    for name, r in results.items():
        if r.error:
            lines.append(f"{name}: FAILED: {r.error}")
            ok = False
    sums = {run.checksum for r in results.values() for run in r.runs}
    if len(sums) > 1:
        detail = " ".join(f"{n}={','.join(sorted({x.checksum for x in r.runs})) or '-'}"
                          for n, r in results.items())
        lines.append(f"checksums: MISMATCH {detail}")
        ok = False
    elif sums:
        lines.append(f"checksums: {'ok' if ok else 'agree'} {next(iter(sums))} "
                     "(every run that finished)")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3,
                    help="interleaved runs per runner; the median counts")
    ap.add_argument("--guest", type=Path, default=DEFAULT_GUEST,
                    help="the guest ELF (default: guests/bench/procs/procs.elf)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    args = ap.parse_args(argv)
    if args.runs < 1:
        sys.exit("--runs must be at least 1")
    if not args.guest.exists():
        sys.exit(f"{args.guest}: no such file (build it with make -C guests/bench/procs)")
    qemu = shutil.which("qemu-system-riscv64")
    if not qemu:
        sys.exit("qemu-system-riscv64 not found: this comparison needs it")
    byte_compile()
    guest = args.guest.resolve()
    cmds = {"qemu": qemu_command(qemu, guest), "pyhv": pyhv_command(guest)}
    results = measure(cmds, args.runs, args.timeout)
    shown = guest.relative_to(ROOT) if guest.is_relative_to(ROOT) else guest
    text, ok = report(results, str(shown), args.runs)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
