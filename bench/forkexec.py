#!/usr/bin/env python3
"""Many short processes inside Linux: a fork/exec-heavy shell loop, pyhv next to QEMU.

Boots ../shared/guests/Image with the initramfs to its busybox shell on QEMU and on pyhv
(default engine; the JIT starts from an empty code cache each run), types one command
line at the console and times, on the host, from the marker the guest prints before the
workload to the one it prints after each part:

* ``exec``: 500 runs of a busybox applet through ``/bin/busybox`` (fork + exec + exit +
  wait each: a new address space whose code pages the JIT must check again);
* ``pipes``: 100 runs of a shell pipeline of four processes (echo | sed | tr | wc).

Runs are interleaved (QEMU run i, then pyhv run i); it prints the medians, the ratio to
QEMU, and pyhv's JIT counters from its last run. The boot itself is not in the figures
(bench/boot.py measures it).

    python3 bench/forkexec.py [--runs 3] [--execs 500] [--pipes 100]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

from cpu import ROOT, byte_compile

GUESTS = ROOT.parent / "shared" / "guests"
FW = "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin"
PROMPT = b"pyhv:/# "
MARKS = (b"FORKBENCH-BEGIN", b"FORKBENCH-EXECS", b"FORKBENCH-PIPES")


class Console:
    """The guest's serial console over the runner's stdin/stdout, with the host time at
    which each marker first appeared."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None) -> None:
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
        self.out = bytearray()
        self.seen: dict[bytes, float] = {}
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(4096):
            now = time.monotonic()
            with self.changed:
                self.out.extend(chunk)
                for mark in MARKS:
                    if mark not in self.seen and mark in self.out:
                        self.seen[mark] = now
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, what: bytes, timeout: float, start: int = 0) -> int:
        deadline = time.monotonic() + timeout
        with self.changed:
            while (at := self.out.find(what, start)) < 0:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self.reader.is_alive():
                    tail = bytes(self.out[-300:]).decode(errors="replace")
                    raise RuntimeError(f"no {what!r} within {timeout:.0f} s; last output:\n{tail}")
                self.changed.wait(min(left, 1.0))
        return at + len(what)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()


@contextlib.contextmanager
def fresh_jit_cache(env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """``env`` (default: this process's) with an empty JIT code cache of its own,
    removed afterwards: every pyhv run of a bench compiles afresh, as a first run does."""
    cache = tempfile.mkdtemp(prefix="pyhv-bench-cache-")
    try:
        yield dict(os.environ if env is None else env, PYHV_JIT_CACHE=cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def workload(execs: int, pipes: int) -> str:
    # The markers are printed split (FORK""BENCH) so that the console's echo of this very
    # line does not contain them.
    return (
        f'echo FORK""BENCH-BEGIN; i=0; while [ $i -lt {execs} ]; do /bin/busybox true; '
        f'i=$((i+1)); done; echo FORK""BENCH-EXECS; j=0; while [ $j -lt {pipes} ]; do '
        'echo hello world $j | sed s/world/pyhv/ | tr a-z A-Z | wc -c > /dev/null; '
        'j=$((j+1)); done; echo FORK""BENCH-PIPES\n'
    )


def one_run(cmd: list[str], env: dict[str, str] | None, execs: int, pipes: int,
            timeout: float) -> tuple[float, float, str]:
    """(seconds for the exec loop, seconds for the pipelines, the runner's output)."""
    con = Console(cmd, env)
    try:
        at = con.wait_for(PROMPT, timeout)
        con.send(workload(execs, pipes))
        at = con.wait_for(b"FORKBENCH-PIPES", timeout, at)
        con.wait_for(PROMPT, timeout, at)
        con.send("poweroff -f\n")
        con.proc.wait(timeout=timeout)
    finally:
        if con.proc.poll() is None:
            con.proc.kill()
            con.proc.wait()
    s = con.seen
    return (s[MARKS[1]] - s[MARKS[0]], s[MARKS[2]] - s[MARKS[1]],
            bytes(con.out).decode(errors="replace"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--execs", type=int, default=500)
    ap.add_argument("--pipes", type=int, default=100)
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    if args.runs < 1 or args.execs < 1 or args.pipes < 1:
        sys.exit("--runs, --execs and --pipes must be at least 1")
    if not (GUESTS / "Image").exists():
        sys.exit(f"{GUESTS}: no Linux guest there (see ../shared/guests/README.md)")
    byte_compile()
    common = ["-M", "virt", "-m", "128M", "-smp", str(args.smp), "-nographic", "-no-reboot",
              "-bios", FW, "-kernel", str(GUESTS / "Image"),
              "-initrd", str(GUESTS / "initramfs.cpio"), "-append", "console=ttyS0"]
    runners: dict[str, list[str]] = {}
    qemu = shutil.which("qemu-system-riscv64")
    if qemu:
        runners["qemu-system-riscv64 (TCG)"] = [qemu, *common]
    pyhv_env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYHV_JIT_STATS="1")
    runners["pyhv (default engine)"] = [sys.executable, "-m", "pyhv.cli.qemu_compat", *common]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    stats = ""
    for _ in range(args.runs):
        for name, cmd in runners.items():
            with fresh_jit_cache(pyhv_env) as env:
                try:
                    execs, pipes, out = one_run(cmd, env if name.startswith("pyhv") else None,
                                                args.execs, args.pipes, args.timeout)
                except RuntimeError as e:
                    print(f"{name}: {e}", file=sys.stderr)
                    return 1
            times[name].append((execs, pipes))
            print(f"  {name}: exec loop {execs:.2f} s, pipelines {pipes:.2f} s",
                  file=sys.stderr, flush=True)
            if name.startswith("pyhv"):
                stats = "\n".join(line for line in out.splitlines() if "pyhv jit:" in line)
    print(f"Linux 6.1 busybox shell, -smp {args.smp}: {args.execs} x '/bin/busybox true', "
          f"{args.pipes} x a 4-process pipeline; host seconds, median of {args.runs}")
    print(f"{'runner':28} {'exec loop':>10} {'pipelines':>10} {'vs QEMU':>16}")
    ref = None
    for name, runs in times.items():
        e = statistics.median(r[0] for r in runs)
        p = statistics.median(r[1] for r in runs)
        if ref is None and name.startswith("qemu"):
            ref = (e, p)
        ratio = f"{e / ref[0]:.1f}x / {p / ref[1]:.1f}x" if ref else "-"
        print(f"{name:28} {e:10.2f} {p:10.2f} {ratio:>16}")
    if stats:
        print(stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
