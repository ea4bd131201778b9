#!/usr/bin/env python3
"""CPU speed of each pyhv engine on a CPU-bound bare-metal guest, next to QEMU's.

Runs a benchmark guest (default guests/bench/bench.elf: CRC32, copy + quicksort, a sieve
and a bytecode interpreter, double-precision Mandelbrot and a sqrt/divide series; it
prints a checksum and powers off through the sifive test device) as whole processes, in
the same run:

* ``pyhv run --bios none --kernel GUEST --engine E --stats`` for each engine E (by
  default interp, translate, and jit where ``resolve_engine("jit")`` works here);
* ``qemu-system-riscv64 -M virt -bios none -nographic -kernel GUEST`` (TCG), if installed.

A runner that fails is reported and the others are still measured (exit status 1).

Per runner it prints the guest instructions (pyhv's exact retired count from
``--stats``, the whole run from reset to power-off; QEMU's row shows the same program's
count), the wall time of the whole process from spawn to exit (median of ``--runs``),
the process's CPU time (user + system: steadier than wall time on a shared machine),
the run loop's own time from ``--stats`` (so start-up cost shows), guest MIPS over the
wall time, the time relative to QEMU, and the speed-up over the interpreter. Every
runner must print the same checksum, and every pyhv engine the same instruction count
over the kernels (the guest's BENCH-INSTRET, where it prints one: the whole run also
counts the printing of BENCH-TICKS, a time).

    python3 bench/cpu.py [--guest guests/bench/bench-small.elf] [--engines interp,translate]
                         [--runs 3] [--no-qemu]
    python3 bench/cpu.py --suite [--runs 3] [--only sort,strings]   (bench/programs.py:
        ordinary C programs, default link and page-aligned data, pyhv against QEMU)
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DEFAULT_GUEST = ROOT / "guests" / "bench" / "bench.elf"
STATS = re.compile(
    r"pyhv: (\w+): (\d+) instructions in ([\d.]+) s \([\d.]+ MIPS(?:, engine (\w+))?\)"
)


@dataclass
class Row:
    name: str
    wall: float  # whole process, median of the runs
    cpu: float  # user + system CPU time of the process, median of the runs
    run: float | None  # pyhv's run loop (--stats), same run as the median wall time
    instructions: int | None  # pyhv: exact retired count; QEMU: None
    checksum: str
    engine: str | None = None
    kernels: int | None = None  # the guest's own minstret count over its kernels


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return env


class RunFailed(Exception):
    """A runner exited non-zero, timed out or printed no result."""


def run_once(cmd: list[str], timeout: float, cache: str | None = None,
             ) -> tuple[float, float, str, str]:
    """(wall seconds from spawn to exit, CPU seconds of the process, stdout, stderr).

    ``cache``: the JIT's code-cache directory; None gives each run a new, empty one
    (so the JIT's time includes compiling everything it runs)."""
    env = _env()
    fresh = None
    if cache is None:
        fresh = tempfile.mkdtemp(prefix="pyhv-cpu-bench-")
    env["PYHV_JIT_CACHE"] = cache or fresh
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"no exit within {timeout:.0f} s") from None
    finally:
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        raise RunFailed(f"exit status {proc.returncode}: {tail[0][:200]}")
    return wall, cpu, proc.stdout, proc.stderr


def checksum_of(out: str) -> str:
    found = re.search(r"BENCH-CHECKSUM (\S+)", out)
    if not found:
        raise RunFailed("no BENCH-CHECKSUM line in the guest's output")
    return found.group(1)


def kernel_instret_of(out: str) -> int | None:
    """The guest's BENCH-INSTRET (minstret over its kernels), if it prints one."""
    found = re.search(r"BENCH-INSTRET (\d+)", out)
    return int(found.group(1)) if found else None


def parse_stats(err: str) -> tuple[int, float, str | None]:
    """(retired instructions, run-loop seconds, engine) from pyhv's --stats line."""
    stats = STATS.search(err)
    if not stats:
        raise RunFailed("no --stats line on stderr")
    return int(stats.group(2)), float(stats.group(3)), stats.group(4)


def qemu_command(qemu: str, guest: Path) -> list[str]:
    return [qemu, "-M", "virt", "-m", "128M", "-bios", "none", "-nographic",
            "-kernel", str(guest)]


def pyhv_command(guest: Path, engine: str | None = None) -> list[str]:
    """``pyhv run`` of a bare-metal guest with --stats; engine None: pyhv's default."""
    cmd = [sys.executable, "-m", "pyhv.cli.main", "run", "--bios", "none", "--kernel",
           str(guest), "--stats"]
    return cmd + ["--engine", engine] if engine else cmd


def measure(name: str, cmd: list[str], runs: int, timeout: float, pyhv: bool,
            cache: str | None = None) -> Row:
    results = []
    for i in range(runs):
        wall, cpu, out, err = run_once(cmd, timeout, cache)
        print(f"  {name}: run {i + 1}/{runs}: {wall:.2f} s wall, {cpu:.2f} s CPU",
              file=sys.stderr, flush=True)
        results.append((wall, cpu, out, err))
    wall = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[1] for r in results)
    _, _, out, err = min(results, key=lambda r: abs(r[0] - wall))  # the run nearest the median
    run = instructions = engine = None
    if pyhv:
        instructions, run, engine = parse_stats(err)
    return Row(name, wall, cpu, run, instructions, checksum_of(out), engine,
               kernel_instret_of(out))


def available_engines() -> list[str]:
    """interp and translate, plus jit when it works on this host."""
    sys.path.insert(0, str(SRC))
    from pyhv.cpu.engines import jit_unavailable_reason

    names = ["interp", "translate"]
    reason = jit_unavailable_reason()
    if reason is None:
        names.append("jit")
    else:
        print(f"jit: not measured ({reason})", file=sys.stderr)
    return names


def table(rows: list[Row], qemu: Row | None, guest: str, runs: int) -> str:
    exact = next((r.instructions for r in rows if r.instructions), None)
    interp = next((r for r in rows if r.engine == "interp"), None)
    lines = [f"guest: {guest}  (whole-process wall time, median of {runs} run(s))"]
    head = ("runner", "instructions", "wall s", "CPU s", "run s", "MIPS", "vs QEMU",
            "vs interp", "checksum")
    fmt = "{:34} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}  {}"
    lines.append(fmt.format(*head))
    for r in ([qemu] if qemu else []) + rows:
        count = r.instructions or exact
        mips = f"{count / r.wall / 1e6:.2f}" if count else "-"
        ratio = f"{r.wall / qemu.wall:.1f}x" if qemu else "-"
        speedup = f"{interp.wall / r.wall:.2f}x" if interp and r.instructions else "-"
        lines.append(fmt.format(
            r.name, f"{count:,}" if count else "-", f"{r.wall:.2f}", f"{r.cpu:.2f}",
            f"{r.run:.2f}" if r.run is not None else "-", mips, ratio, speedup, r.checksum))
    return "\n".join(lines)



def byte_compile() -> None:
    """Measure pyhv as installed (scripts/setup.sh): sources byte-compiled, as pip does
    (with PYTHONDONTWRITEBYTECODE set every process would otherwise recompile what it
    imports, ~0.2 s), and pyhv's own native code (the JIT's dispatcher and native
    interpreter, ~/.cache/pyhv/runtime) built. The guest code cache stays as each run
    asks (empty, or warm). Forced: compileall trusts a byte-compiled file whose source
    has the same mtime second, and a source rewritten within that second (a checkout)
    was compiled again by every process (~15 ms of the JIT's start-up, unseen)."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "src" / "pyhv"), quiet=1,
                           force=True)
    subprocess.run([sys.executable, "-c", "from pyhv.cpu.engines import jit_unavailable_reason"
                    " as r; r()"], env=_env(), check=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--suite" in argv:
        import programs

        return programs.main([a for a in argv if a != "--suite"])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", action="store_true",
                    help="the program suite instead (bench/programs.py; its options follow)")
    ap.add_argument("--guest", type=Path, default=DEFAULT_GUEST,
                    help="bare-metal benchmark ELF (default: guests/bench/bench.elf)")
    ap.add_argument("--engines", default=None,
                    help="comma-separated pyhv engines (default: interp,translate and jit "
                    "when available; 'auto' is allowed too)")
    ap.add_argument("--runs", type=int, default=1, help="runs per runner; the median counts")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    ap.add_argument("--no-qemu", action="store_true", help="skip qemu-system-riscv64")
    args = ap.parse_args(argv)
    byte_compile()
    if not args.guest.exists():
        sys.exit(f"{args.guest}: no such file (build it with make -C guests/bench)")
    if args.runs < 1:
        sys.exit("--runs must be at least 1")
    guest = args.guest.resolve()
    names = args.engines.split(",") if args.engines else available_engines()

    qemu_row = None
    failed: list[tuple[str, str]] = []
    qemu = None if args.no_qemu else shutil.which("qemu-system-riscv64")
    if qemu:
        cmd = qemu_command(qemu, guest)
        try:
            qemu_row = measure("qemu-system-riscv64 (TCG)", cmd, args.runs, args.timeout, False)
        except RunFailed as e:
            print(f"qemu-system-riscv64 failed: {e}", file=sys.stderr)
            failed.append(("qemu-system-riscv64 (TCG)", str(e)))
    elif not args.no_qemu:
        print("qemu-system-riscv64 not found: no QEMU column", file=sys.stderr)

    rows = []
    for name in names:
        cmd = pyhv_command(guest, name)
        try:
            row = measure(f"pyhv --engine {name}", cmd, args.runs, args.timeout, True)
        except RunFailed as e:
            print(f"pyhv --engine {name} failed: {e}", file=sys.stderr)
            failed.append((f"pyhv --engine {name}", str(e)))
            continue
        if row.engine and row.engine != name:
            row.name += f" ({row.engine})"
        rows.append(row)
        if row.engine == "jit":
            # Second run of the same guest: machine code from the first run's cache.
            warm = tempfile.mkdtemp(prefix="pyhv-cpu-bench-warm-")
            try:
                run_once(cmd, args.timeout, warm)  # fills the cache (not counted)
                rows.append(measure(f"pyhv --engine {name}, warm cache", cmd, args.runs,
                                    args.timeout, True, warm))
            except RunFailed as e:
                failed.append((f"pyhv --engine {name}, warm cache", str(e)))
            finally:
                shutil.rmtree(warm, ignore_errors=True)

    shown = guest.relative_to(ROOT) if guest.is_relative_to(ROOT) else guest
    print(table(rows, qemu_row, str(shown), args.runs))
    for name, why in failed:
        print(f"{name:34} FAILED: {why}")
    status = 1 if failed else 0
    if len({r.checksum for r in rows + ([qemu_row] if qemu_row else [])}) != 1:
        print("CHECKSUM MISMATCH between runners", file=sys.stderr)
        status = 1
    # (the whole run's count varies by a few instructions with what the guest prints
    # after its kernels, such as BENCH-TICKS, a time; the kernels' own count may not)
    if len({r.kernels if r.kernels is not None else r.instructions for r in rows}) > 1:
        print("INSTRUCTION COUNT MISMATCH between pyhv engines", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
