#!/usr/bin/env python3
"""A teaching kernel's own test suite: MIT's xv6-riscv ``usertests``, pyhv next to QEMU.

xv6 (https://github.com/mit-pdos/xv6-riscv) is not part of pyhv: build it yourself
(``git clone``, ``make kernel/kernel fs.img`` with ``gcc-riscv64-unknown-elf`` or
``gcc-riscv64-linux-gnu``) and pass its directory. Its user programs are many short
processes (fork, exec, pipes, a log-structured file system on virtio-blk, sbrk), linked
the default way (data on the pages of their code), and every ``exec`` brings fresh code
pages: the workload issue 13 names.

Each run boots ``kernel/kernel`` with QEMU's own command line from xv6's Makefile
(``-machine virt -bios none -m 128M -smp 3``, virtio-blk on a fresh copy of ``fs.img``)
on ``qemu-system-riscv64`` and on ``pyhv-qemu`` (default engine, an empty JIT code
cache each run), waits for the shell's ``$ ``, types the command (default
``usertests -q``) and times, on the host, until its last line (``ALL TESTS PASSED`` for
usertests, else the next prompt). Runs are interleaved (QEMU run i, then pyhv run i);
it prints the seconds to the prompt and for the command, the medians and the ratio.
Exit status 1 if a run failed (no prompt, a test failed, a timeout).

    python3 bench/xv6.py XV6_DIR [--runs 1] [--smp 3] [--command 'usertests -q']
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cpu import byte_compile
from forkexec import Console


def qemu_args(xv6: Path, disk: str, smp: int) -> list[str]:
    """xv6's Makefile's QEMUOPTS with this run's disk."""
    return ["-machine", "virt", "-bios", "none", "-kernel", str(xv6 / "kernel" / "kernel"),
            "-m", "128M", "-smp", str(smp), "-nographic",
            "-global", "virtio-mmio.force-legacy=false",
            "-drive", f"file={disk},if=none,format=raw,id=x0",
            "-device", "virtio-blk-device,drive=x0,bus=virtio-mmio-bus.0"]


def run_once(program: list[str], xv6: Path, smp: int, command: str, timeout: float,
             env: dict[str, str] | None) -> tuple[float, float]:
    """(seconds from launch to the prompt, seconds from typing ``command`` to its end)."""
    with tempfile.TemporaryDirectory(prefix="pyhv-xv6-") as tmp:
        disk = os.path.join(tmp, "fs.img")
        shutil.copyfile(xv6 / "fs.img", disk)
        start = time.monotonic()
        con = Console([*program, *qemu_args(xv6, disk, smp)], env)
        try:
            at = con.wait_for(b"$ ", 300)
            prompt = time.monotonic() - start
            typed = time.monotonic()
            con.send(command + "\n")
            if command.split()[0] == "usertests":
                end = con.wait_for(b"ALL TESTS PASSED", timeout, at)
            else:
                end = con.wait_for(b"$ ", timeout, at + len(command))
            took = time.monotonic() - typed
            if b"FAILED" in con.out[at:end]:
                raise RuntimeError(bytes(con.out[at:end][-500:]).decode(errors="replace"))
            return prompt, took
        finally:
            con.proc.kill()
            con.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("xv6", type=Path, help="a built xv6-riscv directory (kernel/kernel, fs.img)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--smp", type=int, default=3, help="harts (xv6's Makefile: 3)")
    ap.add_argument("--command", default="usertests -q", help="what to type at the prompt")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds for the command")
    args = ap.parse_args()
    for need in ("kernel/kernel", "fs.img"):
        if not (args.xv6 / need).is_file():
            print(f"xv6.py: {args.xv6 / need} not found: build xv6 first (make kernel/kernel "
                  "fs.img)", file=sys.stderr)
            return 2
    qemu = shutil.which("qemu-system-riscv64")
    if qemu is None:
        print("xv6.py: qemu-system-riscv64 not found (Debian: qemu-system-misc)", file=sys.stderr)
        return 2
    byte_compile()
    pyhv = [sys.executable, "-m", "pyhv.cli.qemu_compat"]
    results: dict[str, list[tuple[float, float]]] = {"qemu": [], "pyhv": []}
    failed = False
    for i in range(args.runs):
        for name, program in (("qemu", [qemu]), ("pyhv", pyhv)):
            env = None
            cache = None
            if name == "pyhv":
                cache = tempfile.mkdtemp(prefix="pyhv-xv6-cache-")
                env = {**os.environ, "PYHV_JIT_CACHE": cache}
            try:
                prompt, took = run_once(program, args.xv6, args.smp, args.command,
                                        args.timeout, env)
            except RuntimeError as e:
                print(f"  {name} run {i + 1}: failed: {e}", file=sys.stderr)
                failed = True
                continue
            finally:
                if cache:
                    shutil.rmtree(cache, ignore_errors=True)
            results[name].append((prompt, took))
            print(f"  {name} run {i + 1}/{args.runs}: prompt {prompt:.2f} s, "
                  f"{args.command!r} {took:.1f} s", file=sys.stderr)
    print(f"xv6-riscv ({args.xv6}), -smp {args.smp}, {args.command!r}, median of "
          f"{args.runs} interleaved run(s), wall seconds")
    print(f"{'runner':40s} {'to prompt':>10s} {'command':>10s} {'vs QEMU':>8s}")
    base = None
    for name, label in (("qemu", "qemu-system-riscv64 (TCG)"),
                        ("pyhv", "pyhv (default engine, empty code cache)")):
        rs = results[name]
        if not rs:
            print(f"{label:40s} {'failed':>10s}")
            continue
        p = statistics.median(r[0] for r in rs)
        t = statistics.median(r[1] for r in rs)
        if name == "qemu":
            base = t
        ratio = f"{t / base:.2f}x" if base else "-"
        print(f"{label:40s} {p:10.2f} {t:10.1f} {ratio:>8s}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
