#!/usr/bin/env python3
"""Memory terms under a host daemon: four Linux guests on a budget smaller than their RAM.

A ``pyhv host serve`` with ``memory = "640M"`` in host.toml (``memory_overcommit = 2`` so
four VMs of 256 MiB are admitted) runs four guests from ``../shared/guests`` (JIT, a
balloon each) with ``memory.shares`` 1:1:2:4 and, on the first, ``memory.reservation``
160M. Phases:

1. **Boot**: the guests hold what Linux touched while booting (no reclaim: the budget is
   not short).
2. **Readers**: each guest reads its disk (a 320 MiB image, the same read-only file for
   all) in a loop, as a file server would: its page cache takes all the memory it has
   and keeps it active, so the VMs want more than the budget and the daemon reclaims
   through the balloons. Once settled, 20 one-second samples of what each VM holds
   (guest RAM resident in host memory, the kernel's figure) against the split its
   shares give (the budget divided by shares, within what each VM wants and above its
   reservation), the reservation, and a shell answering in each.
3. **KSM** (``--ksm``, needs write access to /sys/kernel/mm/ksm): the bench turns the
   host's KSM on for this run (and restores the settings after), waits while it scans,
   and reports each VM's merged memory, the host's pages_sharing and how far the VM
   processes' PSS fell.

Target (issue 18): what each VM holds within 10% of its share, the reservation held,
every shell answering.

    python3 bench/memory.py [--ksm] [--idle-tax 0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyhv.host import Host  # noqa: E402
from pyhv.host.console import connect  # noqa: E402

GUESTS = ROOT.parent / "shared" / "guests"
PROMPT = b"pyhv:/# "
MiB = 1 << 20
BUDGET = 640 * MiB
SIZE = 256 * MiB
VMS = (("a", 1000, "160M"), ("b", 1000, None), ("c", 2000, None), ("d", 4000, None))
KSM = Path("/sys/kernel/mm/ksm")
DISK = 320 * MiB  # more than a guest's RAM: its page cache never holds all of it


def answer(host: Host, name: str, command: str, want: bytes, timeout: float = 300,
           again: float | None = None) -> bytes:
    """Type ``command`` on the VM's console; what came back once ``want`` and a prompt
    after it are out. ``again``: type it again after that many seconds without an answer
    (a shell that is still starting drops what it was sent)."""
    with connect(host.console_path(name)) as sock:
        sock.sendall(command.encode() + b"\n")
        seen = b""
        deadline = time.monotonic() + timeout
        resend = time.monotonic() + again if again else deadline
        while True:
            if time.monotonic() > resend:
                sock.sendall(command.encode() + b"\n")
                resend = time.monotonic() + (again or 0)
            at = seen.find(want)
            if at >= 0 and seen.find(PROMPT, at) >= 0:
                return seen
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"{name}: no answer to {command!r}: {seen[-300:]!r}")
            sock.settimeout(min(left, again or left))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise SystemExit(f"{name}: console closed: {seen[-300:]!r}")
            seen += data


def expected_split(budget: int, demand: dict[str, int]) -> dict[str, int]:
    """What the shares give each VM when all want more than they get, within what it
    wants (the most it held: a guest never holds all its RAM) and above its reservation:
    the split a user computes by hand."""
    floors = {n: (int(r[:-1]) * MiB if r else 0) for n, _, r in VMS}
    shares = {n: s for n, s, _ in VMS}
    fixed: dict[str, int] = {}
    while True:
        free = [n for n in shares if n not in fixed]
        left = budget - sum(fixed.values())
        total = sum(shares[n] for n in free)
        split = {n: left * shares[n] / total for n in free}
        clamp = {n: min(SIZE, demand[n], max(floors[n], v)) for n, v in split.items()}
        moved = [n for n in free if clamp[n] != split[n]]
        if not moved:
            return {**fixed, **{n: int(v) for n, v in split.items()}}
        # fix the most constrained one first (the biggest change), then split again
        worst = max(moved, key=lambda n: abs(clamp[n] - split[n]))
        fixed[worst] = int(clamp[worst])


def figures(host: Host) -> dict[str, dict[str, Any]]:
    return {vm["name"]: vm for vm in host.metrics()["vms"]}


def pss(pid: int) -> int:
    """Proportional set size of a process: a page shared by n processes counts 1/n."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def used_memory() -> int:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) * 1024


def table(host: Host, want: dict[str, int] | None = None,
          held: dict[str, int] | None = None) -> list[str]:
    """Each VM's figures; with ``want``, what it held (``held``: the median of the
    samples) against its share."""
    f = figures(host)
    lines = [f"{'vm':3} {'shares':>6} {'resv':>5} {'balloon':>8} {'granted':>8} {'held':>8} "
             f"{'active':>7} {'shared':>7}" + (f" {'share':>7} {'error':>7}" if want else "")]
    for name, shares, resv in VMS:
        vm = f[name]
        h = held[name] if held else vm["memory_held"]
        line = (f"{name:3} {shares:6} {resv or '-':>5} {vm['balloon_actual'] / MiB:7.0f}M "
                f"{vm['memory_granted'] / MiB:7.0f}M {h / MiB:7.0f}M "
                f"{vm['memory_active'] / MiB:6.0f}M {vm['memory_shared'] / MiB:6.0f}M")
        if want:
            line += f" {want[name] / MiB:6.0f}M {(h / want[name] - 1) * 100:+6.1f}%"
        lines.append(line)
    return lines


def settle(host: Host, timeout: float = 180) -> float:
    """Wait until memory is short and the VMs hold at most the budget (plus 3%), five
    samples in a row; seconds it took."""
    start = time.monotonic()
    steady = 0
    while time.monotonic() - start < timeout:
        metrics = host.metrics()
        f = metrics["vms"]
        held = sum(vm["memory_held"] for vm in f)
        done = metrics["host"]["memory_short"] and held <= BUDGET * 1.03
        steady = steady + 1 if done else 0
        if steady == 5:
            return time.monotonic() - start
        time.sleep(1)
    raise SystemExit("the balloons did not settle:\n" + "\n".join(table(host)))


def ksm_phase(host: Host) -> list[str]:
    keys = ("run", "pages_to_scan", "sleep_millisecs")
    before = {k: (KSM / k).read_text().strip() for k in keys}
    pids = [host.get(n).pid for n, _, _ in VMS]
    used0, pss0 = used_memory(), sum(pss(p) for p in pids if p)
    lines = []
    try:
        (KSM / "pages_to_scan").write_text("5000")
        (KSM / "sleep_millisecs").write_text("20")
        (KSM / "run").write_text("1")
        last, steady = -1, 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and steady < 5:
            time.sleep(2)
            sharing = int((KSM / "pages_sharing").read_text())
            steady = steady + 1 if abs(sharing - last) < 256 else 0
            last = sharing
        shared = {n: vm["memory_shared"] for n, vm in figures(host).items()}
        used1, pss1 = used_memory(), sum(pss(p) for p in pids if p)
        lines.append(f"KSM: pages_sharing {last} ({last * 4096 / MiB:.0f} MiB saved), "
                     f"pages_shared {int((KSM / 'pages_shared').read_text())}; merged per VM: "
                     + ", ".join(f"{n} {v / MiB:.0f}M" for n, v in shared.items()))
        lines.append(f"the four VM processes' PSS {pss0 / MiB:.0f} MiB -> {pss1 / MiB:.0f} MiB "
                     f"(fell {(pss0 - pss1) / MiB:.0f} MiB); host used memory (MemTotal - "
                     f"MemAvailable, the whole machine) {used0 / MiB:.0f} -> "
                     f"{used1 / MiB:.0f} MiB")
    finally:
        for k in ("pages_to_scan", "sleep_millisecs", "run"):
            with contextlib.suppress(OSError):
                (KSM / k).write_text(before[k])
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ksm", action="store_true", help="also turn KSM on for this run")
    ap.add_argument("--idle-tax", type=float, default=None, metavar="TAX",
                    help="host.toml memory_idle_tax for this run (default: the daemon's, "
                    "0.75); 0 splits by shares alone")
    ns = ap.parse_args()
    # a SIGTERM (or timeout) stops the daemon and restores KSM's settings too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if ns.ksm and not os.access(KSM / "run", os.W_OK):
        raise SystemExit(f"--ksm: {KSM}/run is not writable here (run as root)")
    work = Path(tempfile.mkdtemp(prefix="pyhv-membench-"))
    state = work / "state"
    state.mkdir()
    (state / "host.toml").write_text(
        'memory = "640M"\nmemory_overcommit = 2\n'
        + (f"memory_idle_tax = {ns.idle_tax}\n" if ns.idle_tax is not None else ""))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = open(work / "daemon.log", "w")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host", "serve",
         "--listen", "none"], stdout=log, stderr=subprocess.STDOUT, env=env)
    host = Host(state)
    ok = True
    try:
        deadline = time.monotonic() + 30
        while not (state / "daemon.sock").exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not come up: {(work / 'daemon.log').read_text()}")
            time.sleep(0.05)
        image = work / "data.img"
        with open(image, "wb") as fh:
            for _ in range(DISK // MiB):
                fh.write(os.urandom(MiB))
        for name, shares, resv in VMS:
            terms = f'shares = {shares}\n' + (f'reservation = "{resv}"\n' if resv else "")
            (work / f"{name}.toml").write_text(
                f'name = "{name}"\nengine = "jit"\n[memory]\nsize = "256M"\n{terms}'
                f'[boot]\nkernel = "{GUESTS / "Image"}"\ninitrd = "{GUESTS / "initramfs.cpio"}"\n'
                f'cmdline = "console=ttyS0"\n[[disk]]\npath = "{image}"\nreadonly = true\n'
                '[devices]\nballoon = true\n')
            host.create(work / f"{name}.toml")
        t0 = time.monotonic()
        for name, _, _ in VMS:
            host.start(name)
        for name, _, _ in VMS:
            answer(host, name, "echo up", b"up\r\n", again=3)
        tax = host.settings.memory_idle_tax
        print(f"budget {BUDGET / MiB:.0f} MiB, four VMs of {SIZE / MiB:.0f} MiB, memory.shares "
              f"1:1:2:4, a reserves 160M, idle tax {tax:g}; at their shells after "
              f"{time.monotonic() - t0:.1f} s")
        time.sleep(6)  # a window of active memory
        print("\n1. booted (no reclaim):")
        print("\n".join(table(host)))

        # A file server's demand in each guest: it reads a disk larger than its memory
        # over and over, so its page cache takes whatever memory it has and keeps it
        # active (reclaimable: a balloon that grows takes pages from the cache).
        reader = "(while :; do cat /dev/vda > /dev/null; done) & echo reader-started"
        for name, _, _ in VMS:
            answer(host, name, reader, b"reader-started")
        print(f"\n2. each guest reads its disk ({DISK >> 20} MiB, read-only, the same image) "
              "in a loop:")
        took = settle(host)
        print(f"memory short and balloons settled after {took:.1f} s; sampling 20 s")
        samples: dict[str, list[int]] = {n: [] for n, _, _ in VMS}
        for _ in range(20):
            time.sleep(1)
            for name, vm in figures(host).items():
                samples[name].append(vm["memory_held"])
        peak = {n: max(v) for n, v in samples.items()}
        held = {n: sorted(v)[len(v) // 2] for n, v in samples.items()}
        want = expected_split(BUDGET, peak)
        print("\n".join(table(host, want, held)))
        err = max(abs(held[n] / want[n] - 1) for n, _, _ in VMS)
        if tax:
            print(f"(the idle tax {tax:g} takes idle memory first: a VM with more idle memory, "
                  "the guest kernel's own, holds less than its share; --idle-tax 0 splits by "
                  "shares alone)")
        resv_ok = min(samples["a"]) >= 160 * MiB - 2 * MiB
        for name, _, _ in VMS:
            answer(host, name, "kill %1; echo reader-stopped", b"reader-stopped")
        shells = all(b"still-here" in answer(host, n, "echo still-here", b"still-here\r\n")
                     for n, _, _ in VMS)
        print(f"largest error {err * 100:.1f}% (target <= 10%); reservation of a "
              f"{'held' if resv_ok else 'NOT held'} (it held at least "
              f"{min(samples['a']) / MiB:.0f} MiB, reserves 160); shells "
              f"{'answer' if shells else 'DO NOT answer'}")
        ok = err <= 0.10 and resv_ok and shells
        if ns.ksm:
            print("\n3. KSM on for this run:")
            print("\n".join(ksm_phase(host)))
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
        log.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
