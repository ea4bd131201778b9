#!/usr/bin/env python3
"""Snapshot and restore of a Linux guest at its shell, for several RAM sizes.

For each size: boot ``../shared/guests`` (JIT) to the shell prompt, type a command, then
save the machine (``Machine.snapshot``) and print the time, the file's length and what
it takes on disk (zero pages are holes); restore it (``Machine.restore``: RAM mapped
copy-on-write from the file) without and with the RAM checksum, and print the time to
a machine ready to run its first guest instruction and the time until the restored
shell has answered a typed ``echo``. Targets (issue 17): restore under 50 ms, flat
across sizes; the shell's answer under 200 ms.

    python3 bench/snapshot.py [--sizes 128M,512M,2G] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyhv import BufferConsole, Machine, MachineConfig  # noqa: E402
from pyhv.vm.config import parse_memory  # noqa: E402

GUESTS = ROOT.parent / "shared" / "guests"
PROMPT = b"pyhv:/# "


def answer(vm: Machine, console: BufferConsole, command: str, want: bytes) -> None:
    """Type ``command`` and run until its answer ``want`` and the next prompt are out."""
    start = len(console.output)
    console.send(command + "\n")

    def done() -> bool:
        at = console.output.find(want, start)
        return at >= 0 and console.output.find(PROMPT, at) >= 0

    deadline = time.monotonic() + 120
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"no answer to {command!r}: {console.text[-500:]}")
        vm.run(timeout=1, stop_when=done)


def one_size(size: str, runs: int, workdir: str) -> dict[str, float]:
    cfg = MachineConfig(kernel=str(GUESTS / "Image"), initrd=str(GUESTS / "initramfs.cpio"),
                        memory=parse_memory(size), append="console=ttyS0", engine="jit")
    console = BufferConsole()
    vm = Machine(cfg, console=console)
    path = os.path.join(workdir, f"linux-{size}.snap")
    try:
        if not vm.run_until(PROMPT, timeout=600):
            raise SystemExit(f"{size}: no shell prompt: {console.text[-500:]}")
        answer(vm, console, "echo booted", b"booted\r\n")
        saves = []
        for _ in range(runs):
            t0 = time.perf_counter()
            info = vm.snapshot(path)
            saves.append(time.perf_counter() - t0)
    finally:
        vm.close()
    st = os.stat(path)
    fig: dict[str, float] = {"save": statistics.median(saves), "file": st.st_size,
                             "disk": st.st_blocks * 512, "stored": info["stored_bytes"]}
    for verify in (False, True):
        ready, shell = [], []
        for i in range(runs):
            console = BufferConsole()
            t0 = time.perf_counter()
            vm = Machine.restore(path, console=console, verify=verify)
            ready.append(time.perf_counter() - t0)
            try:
                answer(vm, console, f"echo again{i}", f"again{i}\r\n".encode())
                shell.append(time.perf_counter() - t0)
            finally:
                vm.close()
        key = "checked" if verify else "mapped"
        fig[f"{key}_ready"] = statistics.median(ready)
        fig[f"{key}_shell"] = statistics.median(shell)
    os.unlink(path)
    return fig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128M,512M,2G")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not (GUESTS / "Image").exists():
        print(f"needs {GUESTS}", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyhv-snap-bench-") as work:
        for size in args.sizes.split(","):
            rows.append((size, one_size(size, args.runs, work)))
    print(f"Linux at its shell, snapshot and restore (median of {args.runs}; times in ms, "
          "sizes in MiB)")
    print(f"{'RAM':>5} {'save':>7} {'file':>7} {'on disk':>8} | {'restore':>8} "
          f"{'shell':>7} | {'+checksum':>9} {'shell':>7}")
    mib = 1 << 20
    for size, f in rows:
        print(f"{size:>5} {f['save'] * 1e3:7.1f} {f['file'] / mib:7.0f} {f['disk'] / mib:8.1f} | "
              f"{f['mapped_ready'] * 1e3:8.1f} {f['mapped_shell'] * 1e3:7.1f} | "
              f"{f['checked_ready'] * 1e3:9.1f} {f['checked_shell'] * 1e3:7.1f}")
    print("restore: Machine.restore() until the machine can run its first instruction "
          "(RAM mapped, every part's state checked and restored, engines built); shell: "
          "until the restored shell has answered a typed echo")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
