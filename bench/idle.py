#!/usr/bin/env python3
"""Host CPU used by idle Linux guests (shell prompt, nothing running) on pyhv.

Boots ../shared/guests/Image with the uncompressed initramfs in interactive mode
(``console=ttyS0``, no ``pyhv.selftest``) in ``pyhv run`` subprocesses, each with its
console on its own pty. Once every guest shows the busybox prompt (and a short settle
time has passed), it reads each pyhv process's CPU time (utime + stime from
/proc/PID/stat, all threads) and its voluntary context switches (its wake-ups: those of
the main thread, which runs the run loop, and those of all threads) over a window,
prints the CPU time as % of one host CPU, then types ``poweroff -f`` at every prompt
(and kills what has not exited 30 s later).

    python bench/idle.py [--window 30] [--vms 1] [--boot-jobs 1] [--settle 5]
                         [--engine NAME] [--append "console=ttyS0 ..."]

The JIT engine compiles a block only once it ran often enough, and an idle guest's
code runs only a few times a second: give it a long ``--settle`` (minutes) to measure
its steady state.

Goals (from the issues): one idle guest < 2 % of one host CPU; 20 idle guests < 10 %
together. Guests boot ``--boot-jobs`` at a time (default one after another: 1.5-3 min
each on this 2-core machine); those already at the prompt idle meanwhile.
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUESTS = ROOT.parent / "shared" / "guests"
FW = "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin"
READY = b"PYHV-GUEST-READY"
PROMPT = b"pyhv:/# "
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Guest:
    index: int
    proc: subprocess.Popen
    master: int
    launched: float
    out: bytearray = field(default_factory=bytearray)
    prompt_at: float | None = None
    exited: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def boot_seconds(self) -> float:
        return float("nan") if self.prompt_at is None else self.prompt_at - self.launched

    def pump(self) -> None:
        """Read whatever the guest printed (never let the pty fill up and block pyhv)."""
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the pyhv process closed the slave (it exited)
            data = b""
        if not data:
            self.exited = True
            return
        self.out += data
        if self.prompt_at is None:
            ready = self.out.find(READY)
            if ready >= 0 and self.out.find(PROMPT, ready) >= 0:
                self.prompt_at = time.monotonic()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def wakeups(pid: int) -> tuple[int, int]:
    """Voluntary context switches (each one a sleep) of the main thread, which runs the
    run loop, and of all the process's threads together (a JIT compiler thread, ...)."""
    main = total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                for line in fh:
                    if line.startswith("voluntary_ctxt_switches:"):
                        n = int(line.split()[1])
                        total += n
                        if tid == str(pid):
                            main = n
        except FileNotFoundError:  # the thread just ended
            pass
    return main, total


def launch(index: int, args: argparse.Namespace) -> Guest:
    cmd = [sys.executable, "-m", "pyhv.cli.main", "run", "--bios", FW,
           "--kernel", str(GUESTS / "Image"), "--initrd", str(GUESTS / "initramfs.cpio"),
           "--append", args.append, "--memory", args.memory, "--smp", str(args.smp),
           "--no-reboot"]
    if args.engine:
        cmd += ["--engine", args.engine]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env=env, start_new_session=True)
    os.close(slave)
    return Guest(index, proc, master, time.monotonic())


def pump_all(guests: list[Guest], seconds: float) -> None:
    """Drain every guest's console for ``seconds`` (at least one select round)."""
    end = time.monotonic() + seconds
    while True:
        live = {g.master: g for g in guests if not g.exited}
        left = end - time.monotonic()
        if not live:
            if left > 0:
                time.sleep(left)
            return
        ready, _, _ = select.select(list(live), [], [], max(0.0, min(left, 1.0)))
        for fd in ready:
            live[fd].pump()
        if time.monotonic() >= end:
            return


def fail(guests: list[Guest], message: str) -> int:
    print(f"idle.py: {message}", file=sys.stderr)
    for g in guests:
        if g.prompt_at is None:
            tail = g.out[-1500:].decode("utf-8", "replace")
            print(f"--- VM {g.index} (pid {g.pid}) console tail ---\n{tail}", file=sys.stderr)
    shutdown(guests, grace=0)
    return 1


def shutdown(guests: list[Guest], grace: float = 30) -> list[str]:
    """``poweroff -f`` at each prompt; kill what is still running after ``grace`` s."""
    for g in guests:
        if g.proc.poll() is None and not g.exited and grace > 0:
            try:
                os.write(g.master, b"poweroff -f\n")
            except OSError:
                pass
    end = time.monotonic() + grace
    while any(g.proc.poll() is None for g in guests) and time.monotonic() < end:
        pump_all(guests, 0.2)
    how = []
    for g in guests:
        if g.proc.poll() is None:
            os.killpg(g.pid, signal.SIGKILL)  # its own session: only that pyhv process
            g.proc.wait()
            how.append("killed")
        else:
            how.append(f"exit {g.proc.returncode}")
        os.close(g.master)
    return how


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=30.0,
                    help="measuring window in seconds (default 30)")
    ap.add_argument("--vms", type=int, default=1, help="idle guests to run at once (default 1)")
    ap.add_argument("--boot-jobs", type=int, default=1,
                    help="guests booting at the same time (default 1: one after another)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds to wait at the prompt before measuring (default 5)")
    ap.add_argument("--boot-timeout", type=float, default=900.0,
                    help="seconds a guest may take to reach the prompt (default 900)")
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--memory", default="128M")
    ap.add_argument("--append", default="console=ttyS0", help="kernel command line")
    ap.add_argument("--engine", help="pyhv CPU engine (default: pyhv's own default)")
    args = ap.parse_args()
    if args.vms < 1 or args.boot_jobs < 1 or args.window <= 0:
        ap.error("--vms, --boot-jobs and --window must be positive")

    guests: list[Guest] = []
    booting: list[Guest] = []
    t0 = time.monotonic()
    try:
        while len(guests) < args.vms or booting:
            while len(guests) < args.vms and len(booting) < args.boot_jobs:
                g = launch(len(guests), args)
                guests.append(g)
                booting.append(g)
            pump_all(guests, 0.5)
            now = time.monotonic()
            for g in list(booting):
                if g.prompt_at is not None:
                    booting.remove(g)
                    print(f"VM {g.index}: prompt after {g.boot_seconds:.1f} s "
                          f"(pid {g.pid})", file=sys.stderr, flush=True)
                elif g.exited or g.proc.poll() is not None:
                    return fail(guests, f"VM {g.index} exited before the prompt")
                elif now - g.launched > args.boot_timeout:
                    return fail(guests, f"VM {g.index}: no prompt in {args.boot_timeout} s")
        pump_all(guests, args.settle)
        if any(g.proc.poll() is not None for g in guests):
            return fail(guests, "a guest exited at the prompt")

        before = [(cpu_seconds(g.pid), wakeups(g.pid)) for g in guests]
        w0 = time.monotonic()
        pump_all(guests, args.window)
        wall = time.monotonic() - w0
        after = [(cpu_seconds(g.pid), wakeups(g.pid)) for g in guests]
    except KeyboardInterrupt:
        shutdown(guests, grace=0)
        raise
    how = shutdown(guests)

    rows = []
    total_cpu = total_loop = total_all = 0.0
    for g, (c0, w0_), (c1, w1_), end in zip(guests, before, after, how, strict=True):
        cpu, loop, every = c1 - c0, w1_[0] - w0_[0], w1_[1] - w0_[1]
        total_cpu, total_loop, total_all = total_cpu + cpu, total_loop + loop, total_all + every
        rows.append((f"VM {g.index}", f"{g.boot_seconds:.1f}", f"{cpu:.2f}",
                     f"{100 * cpu / wall:.2f}", f"{loop / wall:.1f}", f"{every / wall:.1f}", end))
    rows.append(("total", "", f"{total_cpu:.2f}", f"{100 * total_cpu / wall:.2f}",
                 f"{total_loop / wall:.1f}", f"{total_all / wall:.1f}", ""))

    goal = "< 2 % (1 VM)" if args.vms == 1 else "< 10 % (20 VMs)"
    print(f"\nIdle Linux guests on pyhv: {args.vms} VM(s), -smp {args.smp}, "
          f"window {wall:.1f} s after a {args.settle:g} s settle, "
          f"all booted in {max(g.prompt_at or t0 for g in guests) - t0:.0f} s")
    head = ("guest", "boot s", "CPU s", "% of 1 CPU", "loop wake-ups/s", "all threads", "end")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for i, r in enumerate([head, *rows]):
        if i == len(rows):
            print(line)
        print("  ".join(c.ljust(w) if j in (0, 6) else c.rjust(w)
                        for j, (c, w) in enumerate(zip(r, widths, strict=True))))
    print(line)
    print(f"goal: {goal} of one host CPU; CPU = utime+stime of each pyhv process "
          f"({1000 // CLK_TCK} ms resolution); wake-ups = voluntary context switches of "
          f"the run loop's thread and of all threads, per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
