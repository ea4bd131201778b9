#!/usr/bin/env python3
"""pyhv against QEMU on ordinary small C programs, each linked two ways.

The programs in guests/bench/programs (sort, hash, bytecode, strings, fp, fp32,
unaligned, memcpy, codegen, clock: picolibc, -O2, one kernel each; fp32 is fp's work in
single precision, an FIR filter added; unaligned reads words at byte offsets, as hashes
and parsers do; codegen writes machine code and runs it after fence.i; clock times each
operation of a priority queue with the CLINT's mtime, as a bare-metal harness does;
recursion: naive Fibonacci, Ackermann, N-queens and recursive tree walks, every return
an indirect jump)
are built twice:
``X.elf``, linked the default way (code, data and bss packed, so data shares a 4 KiB
page with code), and ``X-aligned.elf``, the same objects with
.data onwards on a fresh page. For each program, in the same run and interleaved (run i
of every runner before run i+1 of any, so machine noise hits them alike), whole
processes from spawn to exit:

* ``qemu-system-riscv64 -M virt -bios none -nographic -kernel X.elf`` (and X-aligned.elf);
* ``pyhv run --bios none --kernel X.elf --stats`` with pyhv's default engine and an
  empty JIT code cache per run (as bench/cpu.py does), and the same for X-aligned.elf.

It prints one table: instructions (pyhv's --stats, X.elf), median wall seconds of each
runner, pyhv's run loop (from --stats, the run nearest the median), guest MIPS over
pyhv's wall time, pyhv/QEMU, pyhv's X.elf / X-aligned.elf, QEMU's X-aligned.elf for
reference, and whether every run of every runner printed the same BENCH-CHECKSUM; then
the geometric means of the ratios. Exit status 1 if any run failed or a checksum
differs.

    python3 bench/programs.py [--runs 3] [--only sort,strings] [--timeout 1800]
    python3 bench/cpu.py --suite [same options]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
from dataclasses import dataclass, field

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

PROGRAM_DIR = ROOT / "guests" / "bench" / "programs"
PROGRAMS = ("sort", "hash", "bytecode", "strings", "fp", "fp32", "unaligned", "memcpy",
            "codegen", "clock", "recursion")
RUNNERS = ("qemu", "pyhv", "pyhv-aligned", "qemu-aligned")


@dataclass
class Runs:
    """The runs of one runner on one program."""

    walls: list[float] = field(default_factory=list)
    loops: list[float] = field(default_factory=list)  # pyhv's run loop (--stats)
    instructions: set[int] = field(default_factory=set)
    checksums: set[str] = field(default_factory=set)
    error: str | None = None

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def loop(self) -> float:
        """Run-loop seconds of the run whose wall time is nearest the median."""
        return min(zip(self.walls, self.loops, strict=True), key=lambda p: abs(p[0] - self.wall))[1]


def commands(qemu: str, program: str) -> dict[str, list[str]]:
    default = PROGRAM_DIR / f"{program}.elf"
    aligned = PROGRAM_DIR / f"{program}-aligned.elf"
    return {"qemu": qemu_command(qemu, default), "pyhv": pyhv_command(default),
            "pyhv-aligned": pyhv_command(aligned), "qemu-aligned": qemu_command(qemu, aligned)}


def measure_program(qemu: str, program: str, runs: int, timeout: float) -> dict[str, Runs]:
    cmds = commands(qemu, program)
    results = {name: Runs() for name in RUNNERS}
    for i in range(runs):
        for name in RUNNERS:
            r = results[name]
            if r.error:
                continue
            try:
                wall, _, out, err = run_once(cmds[name], timeout)
                r.checksums.add(checksum_of(out))
                if name.startswith("pyhv"):
                    count, loop, _ = parse_stats(err)
                    r.instructions.add(count)
                    r.loops.append(loop)
            except RunFailed as e:
                r.error = str(e)
                print(f"  {program} {name}: run {i + 1}/{runs}: FAILED: {e}", file=sys.stderr,
                      flush=True)
                continue
            r.walls.append(wall)
            print(f"  {program} {name}: run {i + 1}/{runs}: {wall:.2f} s wall",
                  file=sys.stderr, flush=True)
    return results


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def table(measured: dict[str, dict[str, Runs]], runs: int) -> tuple[str, bool]:
    """The printed table, and whether everything ran and agreed."""
    fmt = "{:9} {:>13} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>10} {:>9}  {}"
    lines = [f"guests: {PROGRAM_DIR.relative_to(ROOT)}/X.elf (default link) and "
             f"X-aligned.elf; whole process, median of {runs} interleaved run(s); "
             "pyhv: default engine, empty JIT code cache",
             fmt.format("program", "instructions", "QEMU s", "pyhv s", "run s", "MIPS",
                        "pyhv/QEMU", "aligned s", "def/align", "QEMU al s", "checksum")]
    ratios, penalties, ok = [], [], True
    for program, res in measured.items():
        q, p, pa, qa = (res[n] for n in RUNNERS)
        failed = [f"{n}: {r.error}" for n, r in res.items() if r.error]
        sums = set().union(*(r.checksums for r in res.values()))
        if len(sums) == 1 and not failed:
            verdict = f"ok {next(iter(sums))}"
        else:
            verdict = "MISMATCH " + " ".join(
                f"{n}={','.join(sorted(r.checksums)) or '-'}" for n, r in res.items())
        if failed:
            verdict = "FAILED " + "; ".join(failed)
        ok = ok and verdict.startswith("ok")
        if len(p.instructions) > 1:
            verdict += f" (instruction counts differ between runs: {sorted(p.instructions)})"
            ok = False

        def secs(r: Runs) -> str:
            return f"{r.wall:.2f}" if r.walls else "-"

        count = min(p.instructions) if p.instructions else None
        ratio = p.wall / q.wall if p.walls and q.walls else None
        penalty = p.wall / pa.wall if p.walls and pa.walls else None
        if ratio:
            ratios.append(ratio)
        if penalty:
            penalties.append(penalty)
        lines.append(fmt.format(
            program, f"{count:,}" if count else "-", secs(q), secs(p),
            f"{p.loop:.2f}" if p.walls else "-",
            f"{count / p.wall / 1e6:.1f}" if count and p.walls else "-",
            f"{ratio:.2f}x" if ratio else "-", secs(pa),
            f"{penalty:.2f}x" if penalty else "-", secs(qa), verdict))
    if ratios:
        lines.append(f"geometric mean pyhv/QEMU: {geomean(ratios):.2f}x over {len(ratios)} "
                     f"program(s); pyhv default/aligned link: {geomean(penalties):.2f}x")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1,
                    help="interleaved runs per runner; the median counts")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated programs (default: {','.join(PROGRAMS)})")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = ap.parse_args(argv)
    if args.runs < 1:
        sys.exit("--runs must be at least 1")
    programs = args.only.split(",") if args.only else list(PROGRAMS)
    for program in programs:
        for elf in (f"{program}.elf", f"{program}-aligned.elf"):
            if not (PROGRAM_DIR / elf).exists():
                sys.exit(f"{PROGRAM_DIR / elf}: no such file "
                         "(build it with make -C guests/bench/programs)")
    qemu = shutil.which("qemu-system-riscv64")
    if not qemu:
        sys.exit("qemu-system-riscv64 not found: this comparison needs it")
    byte_compile()
    measured = {p: measure_program(qemu, p, args.runs, args.timeout) for p in programs}
    text, ok = table(measured, args.runs)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
