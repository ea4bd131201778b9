#!/usr/bin/env python3
"""The host scheduler against its targets: shares, reservation, limit, console latency,
idle cost, on one ``pyhv host serve`` daemon.

Starts a daemon on a temporary state directory (``--cpus`` host CPUs, default 2) and
runs VMs of the tiny guests in guests/tests: ``spin.elf`` (CPU-bound forever) and
``idle.elf`` (waits in WFI, wakes for a timer tick every ``--idle-tick-ms``, echoes
its console). What
each VM received is measured from outside, from its process's CPU clock (the precise
run time of all its threads, ``clock_gettime`` of the process), over ``--window``
seconds after a warm-up. Phases:

1. **shares**: ``--vms`` CPU-bound VMs (default 6, more than the CPUs) with shares
   1:2:4 (1000, 2000, 4000, repeated). Target: the policy's entitlements; for
   ``shares``, ESXi's split (water fill: in proportion to shares, at most one CPU per
   VM), for ``round-robin`` equal parts. Prints target and delivered CPU %, and the error
   of each VM's part of what the VMs got together (the split the scheduler controls;
   the absolute figures also move with whatever else runs on the host).
2. **reservation**: a VM with low shares (500) and a reservation of 80% next to three
   normal ones. Target: it gets at least 80% (within 2%).
3. **limit**: a VM with high shares (4000) and a limit of 30% next to three normal ones.
   Its CPU time is sampled every 10 ms; the most it got in any 1-second window must
   not exceed the limit by more than 1% (of one CPU).
4. **latency**: an idle VM next to ``--vms`` CPU-bound ones; a byte is typed on its
   console every 10-50 ms and the echo's round trip timed. Target: p99 < 50 ms.
5. **idle**: ``--idle-vms`` idle VMs (default 20) whose guests wake every
   ``--idle-tick-ms`` (default 250 ms). Target: they and the daemon use less than 10% of
   one host CPU together. Also prints the host CPU each guest wake-up costs.
6. **outside**: phases 1 to 3 again with ``--outside`` CPU-bound processes of the host
   that are not pyhv's (``python -c 'while True: pass'``, started by the bench for each
   sub-phase, bounded in time and killed at its end), once per CPU backend of
   ``--outside-backends`` (default ``feedback,cgroup``; a daemon is started for each, a
   backend the host cannot give is reported and skipped). Same targets: the shares
   split within 2%, the reservation delivered within 2% (at least 78.4%), the limit
   never more than 1 point over in any 1-second window, all out of what the VMs get
   while the outside load takes its part.

    python3 bench/scheduler.py [--engine interp] [--cpus 2] [--window 20]
                               [--cpu-backend auto|feedback|cgroup]
                               [--phases shares,reservation,limit,latency,idle,outside]
                               [--outside 1] [--outside-backends feedback,cgroup]

Exit status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyhv.host import Host  # noqa: E402
from pyhv.host.ipc import StatusPage  # noqa: E402
from pyhv.host.scheduler import Demand, Terms, make_policy  # noqa: E402

SPIN = ROOT / "guests" / "tests" / "spin.elf"
IDLE = ROOT / "guests" / "tests" / "idle.elf"
PHASES = ("shares", "reservation", "limit", "latency", "idle", "outside")


def cpu_clock(pid: int) -> int:
    return ((~pid) << 3) | 2


def cpu_seconds(pid: int) -> float:
    return time.clock_gettime(cpu_clock(pid))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="pyhv-sched-bench-"))
        self.state = self.tmp / "state"
        self.host = Host(self.state)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.failures: list[str] = []
        self.outside_pids: list[int] = []
        self.label = ""  # the outside phase's backend, in failure names

    # ----------------------------------------------------------------- plumbing

    def start_daemon(self, backend: str | None = None) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.log = open(self.tmp / "daemon.log", "ab")  # noqa: SIM115
        backend = backend or self.args.cpu_backend
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(self.state), "host",
             "serve", "--cpus", str(self.args.cpus), "--policy", self.args.policy,
             "--shutdown-timeout", "5",
             *(["--cpu-backend", backend] if backend else [])],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        deadline = time.monotonic() + 30
        while not (self.state / "daemon.sock").exists():
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the daemon did not start:\n"
                                 + (self.tmp / "daemon.log").read_text())
            time.sleep(0.05)

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(60)
        self.daemon = None

    def backend(self) -> str:
        """The CPU backend the daemon uses, and why."""
        info = self.host.daemon_info()
        return f"{info.get('cpu_backend', '?')} ({info.get('cpu_backend_reason', '')})"

    @contextlib.contextmanager
    def outside_load(self, seconds: float) -> Iterator[list[int]]:
        """``--outside`` CPU-bound processes that are not pyhv's, for at most ``seconds``."""
        code = f"import time\nend = time.monotonic() + {seconds:.0f}\n" \
               "while time.monotonic() < end: pass\n"
        procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in
                 range(self.args.outside)]
        try:
            yield [p.pid for p in procs]
        finally:
            for p in procs:
                p.kill()
                p.wait()

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        for pid_file in self.state.glob("vms/*/run/pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        if self.args.keep:
            print(f"(kept {self.tmp})")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def vm(self, name: str, guest: Path, shares: int = 1000, reservation: float = 0,
           limit: float | None = None) -> int:
        """Define and start a VM; its pid."""
        qos: dict[str, object] = {"shares": shares, "reservation": reservation}
        if limit is not None:
            qos["limit"] = limit
        if name not in {v.name for v in self.host.list()}:
            boot = {"firmware": "none", "kernel": str(guest)}
            if guest == IDLE:
                boot["cmdline"] = f"tick_ms={self.args.idle_tick_ms}"
            self.host.create({"name": name, "memory": "32M", "engine": self.args.engine,
                              "boot": boot, "qos": qos})
        else:
            self.host.set(name, shares=shares, reservation=reservation, limit=limit)
        pid = self.host.start(name).pid
        assert pid is not None
        return pid

    def stop_all(self) -> None:
        for vm in self.host.list():
            if vm.pid is not None:
                self.host.stop(vm.name, force=True)

    def daemon_pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.pid

    def measure(self, pids: dict[str, int], window: float, sample: float | None = None
                ) -> tuple[dict[str, float], dict[str, list[tuple[float, float]]], float]:
        """CPU % of one CPU each process got over ``window`` seconds (after the warm-up),
        the samples (time, CPU seconds) taken every ``sample`` seconds, and the daemon's
        CPU %."""
        time.sleep(self.args.warmup)
        series: dict[str, list[tuple[float, float]]] = {n: [] for n in pids}
        dpid = self.daemon_pid()
        t0 = time.monotonic()
        start = {n: cpu_seconds(p) for n, p in pids.items()}
        o0 = {p: cpu_seconds(p) for p in self.outside_pids}
        d0 = cpu_seconds(dpid)
        end = t0 + window
        while True:
            now = time.monotonic()
            if sample is not None:
                for n, p in pids.items():
                    series[n].append((now, cpu_seconds(p)))
            if now >= end:
                break
            time.sleep(min(sample or window, end - now))
        t1 = time.monotonic()
        got = {n: (cpu_seconds(p) - start[n]) / (t1 - t0) * 100 for n, p in pids.items()}
        if self.outside_pids:
            outside = sum(cpu_seconds(p) - o0[p] for p in o0) / (t1 - t0) * 100
            print(f"(the outside processes got {outside:.1f}% meanwhile)")
        return got, series, (cpu_seconds(dpid) - d0) / (t1 - t0) * 100

    def check(self, ok: bool, what: str) -> str:
        if not ok:
            self.failures.append(what + self.label)
        return "PASS" if ok else "FAIL"

    # ----------------------------------------------------------------- phases

    def split_table(self, title: str, terms: dict[str, Terms], got: dict[str, float],
                    daemon_pct: float) -> dict[str, float]:
        target = make_policy(self.args.policy).entitlements(
            [Demand(n, t) for n, t in terms.items()], self.args.cpus)
        total_t, total_g = sum(target.values()), sum(got.values())
        print(f"\n{title}  (window {self.args.window:g} s; VMs got {total_g:.1f}% of "
              f"{100 * self.args.cpus}%, the daemon {daemon_pct:.2f}%)")
        print(f"{'VM':8} {'SHARES':>6} {'RSV%':>5} {'LIMIT%':>6} {'TARGET%':>8} {'GOT%':>7} "
              f"{'ERROR':>7} {'SPLIT-TGT':>9} {'SPLIT-GOT':>9} {'SPLIT-ERR':>9}")
        errors = {}
        for name, t in terms.items():
            st, sg = target[name] / total_t, got[name] / total_g
            errors[name] = (sg - st) / st
            limit = "-" if t.limit is None else f"{t.limit:g}"
            print(f"{name:8} {t.shares:>6} {t.reservation:>5g} {limit:>6} {target[name]:>8.2f} "
                  f"{got[name]:>7.2f} {100 * (got[name] - target[name]) / target[name]:>+6.2f}% "
                  f"{100 * st:>8.2f}% {100 * sg:>8.2f}% {100 * errors[name]:>+8.2f}%")
        return target

    def phase_shares(self) -> None:
        terms = {}
        pids = {}
        for i in range(self.args.vms):
            shares = (1000, 2000, 4000)[i % 3]
            name = f"s{i + 1}-{shares // 1000}x"
            terms[name] = Terms(shares)
            pids[name] = self.vm(name, SPIN, shares)
        got, _, dcpu = self.measure(pids, self.args.window)
        target = self.split_table(f"[shares] {len(pids)} CPU-bound VMs, shares 1:2:4, "
                                  f"{self.args.cpus} CPUs", terms, got, dcpu)
        total_t, total_g = sum(target.values()), sum(got.values())
        worst = max(abs(got[n] / total_g - target[n] / total_t) / (target[n] / total_t)
                    for n in terms)
        worst_abs = max(abs(got[n] - target[n]) / target[n] for n in terms)
        print(f"proportional-share error: worst {100 * worst:.2f}% of a VM's part of the "
              f"split (target < 2%): {self.check(worst < 0.02, 'shares split')}; "
              f"worst error against the absolute target {100 * worst_abs:.2f}%")
        self.stop_all()

    def phase_reservation(self) -> None:
        terms = {"rsv80": Terms(500, reservation=80)}
        pids = {"rsv80": self.vm("rsv80", SPIN, 500, reservation=80)}
        for i in range(3):
            terms[f"n{i + 1}"] = Terms(1000)
            pids[f"n{i + 1}"] = self.vm(f"n{i + 1}", SPIN)
        got, _, dcpu = self.measure(pids, self.args.window)
        self.split_table("[reservation] low shares (500) + reservation 80% next to 3 normal "
                         "VMs", terms, got, dcpu)
        ok = got["rsv80"] >= 80 * 0.98
        print(f"reservation: delivered {got['rsv80']:.2f}% of the 80% reserved "
              f"(target >= 78.4%): {self.check(ok, 'reservation')}")
        self.stop_all()

    def phase_limit(self) -> None:
        terms = {"lim30": Terms(4000, limit=30)}
        pids = {"lim30": self.vm("lim30", SPIN, 4000, limit=30)}
        for i in range(3):
            terms[f"n{i + 1}"] = Terms(1000)
            pids[f"n{i + 1}"] = self.vm(f"n{i + 1}", SPIN)
        got, series, dcpu = self.measure(pids, self.args.window, sample=0.01)
        self.split_table("[limit] high shares (4000) + limit 30% next to 3 normal VMs",
                         terms, got, dcpu)
        samples = series["lim30"]
        worst = 0.0
        j = 0
        windows = 0
        for t, c in samples:
            if t - samples[0][0] < 1.0:
                continue
            while samples[j + 1][0] <= t - 1.0:
                j += 1
            t0, c0 = samples[j]
            worst = max(worst, (c - c0) / (t - t0) * 100)
            windows += 1
        ok = worst <= 31.0
        print(f"limit: over {windows} 1-s windows (10 ms steps) the most was {worst:.2f}% "
              f"(limit 30%, +{worst - 30:.2f} points, {100 * (worst - 30) / 30:+.1f}% of it; "
              f"target: at most 1 point over): {self.check(ok, 'limit')}")
        self.stop_all()

    def phase_latency(self) -> None:
        pids = {"echo": self.vm("echo", IDLE)}
        for i in range(self.args.vms):
            pids[f"busy{i + 1}"] = self.vm(f"busy{i + 1}", SPIN)
        time.sleep(self.args.warmup)
        busy0 = {n: cpu_seconds(p) for n, p in pids.items()}
        t0 = time.monotonic()
        rtts = []
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.host.console_path("echo")))
            sock.settimeout(5.0)
            rng = random.Random(1)
            for i in range(self.args.probes):
                time.sleep(rng.uniform(0.01, 0.05))
                key = bytes([ord("a") + i % 26])
                sent = time.perf_counter()
                sock.sendall(key)
                seen = b""
                while key not in seen:
                    seen += sock.recv(64)
                rtts.append((time.perf_counter() - sent) * 1000)
        t1 = time.monotonic()
        busy = sum(cpu_seconds(p) - busy0[n] for n, p in pids.items() if n != "echo")
        rtts.sort()
        p50 = statistics.median(rtts)
        p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
        print(f"\n[latency] console echo of an idle VM next to {self.args.vms} CPU-bound VMs "
              f"(they used {busy / (t1 - t0) * 100:.1f}% of {100 * self.args.cpus}% meanwhile)")
        print(f"{len(rtts)} probes: median {p50:.2f} ms, p90 {rtts[int(len(rtts) * 0.9)]:.2f} "
              f"ms, p99 {p99:.2f} ms, max {rtts[-1]:.2f} ms (target p99 < 50 ms): "
              f"{self.check(p99 < 50, 'latency')}")
        self.stop_all()

    def phase_idle(self) -> None:
        pids = {}
        for i in range(self.args.idle_vms):
            pids[f"idle{i + 1}"] = self.vm(f"idle{i + 1}", IDLE)
        pages = {n: StatusPage(self.state / "vms" / n / "run" / "status") for n in pids}
        time.sleep(self.args.warmup)
        wakeups0 = sum(p.wakeups for p in pages.values())
        self.args.warmup, warmup = 0.0, self.args.warmup
        try:
            got, _, dcpu = self.measure(pids, self.args.window)
        finally:
            self.args.warmup = warmup
        wakeups = sum(p.wakeups for p in pages.values()) - wakeups0
        total = sum(got.values())
        per_wake = total / 100 * self.args.window / max(wakeups, 1) * 1000
        print(f"\n[idle] {len(pids)} idle VMs (a timer tick every {self.args.idle_tick_ms} ms "
              f"each), window {self.args.window:g} s")
        print(f"VM processes together {total:.2f}% of one CPU (per VM: min "
              f"{min(got.values()):.3f}%, max {max(got.values()):.3f}%; "
              f"{wakeups / self.args.window:.0f} guest wake-ups/s, {per_wake:.2f} ms of host "
              f"CPU each), the daemon {dcpu:.2f}%; all {total + dcpu:.2f}% (target < 10%): "
              f"{self.check(total + dcpu < 10, 'idle')}")
        self.stop_all()

    def phase_outside(self) -> None:
        seconds = self.args.warmup + self.args.window + 30
        for backend in [b for b in self.args.outside_backends.split(",") if b]:
            self.stop_daemon()
            self.start_daemon(backend)
            try:
                using = self.backend()
            except Exception as exc:  # noqa: BLE001
                print(f"\n[outside] backend {backend}: the daemon did not start ({exc})")
                continue
            print(f"\n[outside] backend {backend}: {using}; {self.args.outside} outside "
                  f"CPU-bound process(es) next to the VMs")
            if not using.startswith(backend):
                print(f"(backend {backend} is not usable here: skipped)")
                continue
            self.label = f" ({backend}, outside load)"
            try:
                for phase in (self.phase_shares, self.phase_reservation, self.phase_limit):
                    with self.outside_load(seconds) as pids:
                        self.outside_pids = pids
                        phase()
                    self.outside_pids = []
            finally:
                self.label = ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="interp", help="engine of the VMs (default interp)")
    parser.add_argument("--cpus", type=int, default=2, help="host CPUs the daemon grants")
    parser.add_argument("--policy", default="shares", choices=["shares", "round-robin"])
    parser.add_argument("--vms", type=int, default=6, help="CPU-bound VMs (default 6)")
    parser.add_argument("--idle-vms", type=int, default=20)
    parser.add_argument("--idle-tick-ms", type=int, default=250,
                        help="timer tick of the idle guests (default 250 ms: an idle "
                        "tickless kernel wakes a few times a second)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--probes", type=int, default=300, help="console echo probes")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--cpu-backend", choices=["auto", "feedback", "cgroup"],
                        help="the daemon's CPU backend for phases 1-5 (default: its own)")
    parser.add_argument("--outside", type=int, default=1,
                        help="outside CPU-bound processes in the outside phase (default 1)")
    parser.add_argument("--outside-backends", default="feedback,cgroup",
                        help="CPU backends the outside phase runs with (default "
                        "feedback,cgroup)")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    bench = Bench(args)
    load = os.getloadavg()
    print(f"pyhv scheduler benchmark: engine {args.engine}, {args.cpus} CPUs granted, policy "
          f"{args.policy}; host has {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before the start")
    try:
        bench.start_daemon()
        for phase in phases:
            getattr(bench, f"phase_{phase}")()
    finally:
        bench.close()
    print("\n" + ("all targets met" if not bench.failures
                  else f"targets missed: {', '.join(bench.failures)}"))
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
