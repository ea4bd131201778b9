#!/usr/bin/env python3
"""Snapshot and restore of a Linux guest at its shell, for several RAM sizes.

For each size: boot ``../shared/guests`` (JIT) to the shell prompt, type a command, then
save the machine (``Machine.snapshot``) and print the time, the file's length and what
it takes on disk (zero pages are holes); restore it (``Machine.restore``: RAM mapped
copy-on-write from the file) without and with the RAM checksum, and print the time to
a machine ready to run its first guest instruction and the time until the restored
shell has answered a typed ``echo``. Then ``--clones N`` processes each restore a clone
of the first size's snapshot (``Machine.restore(clone=True)``) and answer a typed
command: their host memory together (the sum of their proportional set sizes, PSS,
which splits a page shared by k processes k ways) against one restored VM's alone, and
their MACs. Targets (issue 17): restore under 50 ms, flat across sizes; the shell's
answer under 200 ms; 10 clones under 2x one VM's memory.

With ``--daemon`` the clone phase goes through a host daemon instead (``pyhv host
serve`` on a temporary state directory): ``pyhv restore`` of the snapshot alone, its
VM process's PSS once its shell has answered; then ``pyhv clone FILE --count N`` (one
clone group process that forks the N VM processes), every clone's shell answering,
and the sum of their PSS plus the group process's, and where a clone's private
memory (the pages it does not share) is, by kind of mapping.

With ``--one-process`` the N clones live in one process (``pyhv.vm.group.MachineGroup``,
run in turn on its thread), each answering: that process's PSS against one restored VM's
process.

With ``--stages``, a clone group's steps run in one process (restore as a clone, the
throwaway warm-up run, ``prepare_fork``, ``gc.freeze``) and a clone forked from it
takes the machine over and runs (0.2 s, an ``echo``, 2 s idle, a ``cat``, 3 s idle):
its private memory by kind of mapping after each step.

    python3 bench/snapshot.py [--sizes 128M,512M,2G] [--runs 3] [--clones 10] [--daemon]
                              [--one-process] [--stages]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
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


def clone_worker(path: str, clone: bool) -> int:
    """A VM process of the clone phase: restore, answer, report, wait for EOF."""
    console = BufferConsole()
    vm = Machine.restore(path, console=console, clone=clone, verify=False)
    try:
        answer(vm, console, "echo clone-up", b"clone-up\r\n")
        answer(vm, console, "cat /sys/class/net/eth0/address", b"\r\n")
        mac = vm.board.virtio_devices[0].mac.hex(":")
        print(f"READY {mac}", flush=True)
        sys.stdin.read()
    finally:
        vm.close()
    return 0


def group_worker(path: str, n: int) -> int:
    """The process of ``--one-process``: n clones in one MachineGroup, each answering."""
    from pyhv.vm.group import MachineGroup

    group, consoles = MachineGroup.clones(path, n)
    try:
        for i, console in enumerate(consoles):
            for command, want in ((f"echo clone-up{i}", f"clone-up{i}\r\n".encode()),
                                  ("cat /sys/class/net/eth0/address", b"\r\n")):
                start = len(console.output)
                console.send(command + "\n")

                def done(console: BufferConsole = console, start: int = start,
                         want: bytes = want) -> bool:
                    at = console.output.find(want, start)
                    return at >= 0 and console.output.find(PROMPT, at) >= 0

                if not group.run(timeout=120, stop_when=done):
                    raise SystemExit(f"clone {i}: no answer to {command!r}")
        group.run(timeout=0.5)  # all of them idle at their shells a while
        macs = [vm.board.virtio_devices[0].mac.hex(":") for vm in group.machines]
        print("READY " + " ".join(macs), flush=True)
        sys.stdin.read()
    finally:
        group.close()
    return 0


def one_process_clones(path: str, n: int) -> dict[str, object]:
    """One VM's process against one process holding n clones (MachineGroup)."""
    procs, _ = start_vms(path, 1, clone=False)
    one = pss_kib(procs[0].pid)
    stop_vms(procs)
    proc = subprocess.Popen([sys.executable, __file__, "--group-worker", path, str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        raise SystemExit(f"the group process did not come up: {line!r}")
    total = pss_kib(proc.pid)
    stop_vms([proc])
    return {"one": one, "total": total, "macs": line.split()[1:]}


def pss_kib(pid: int, mapping: str | None = None) -> int:
    """The process's PSS (KiB), or only that of its mappings of the file ``mapping``."""
    if mapping is None:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
        raise RuntimeError("no Pss")
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                inside = line.rstrip().endswith(mapping)
            elif inside and line.startswith("Pss:"):
                total += int(head[1])
    return total


def private_kib(pid: int, snapshot: str) -> dict[str, int]:
    """The process's private pages (KiB: Private_Dirty + Private_Clean, what no other
    process shares) by kind of mapping: the guest's RAM (the snapshot's mapping),
    ``[heap]`` (the C heap: CPython's objects over 512 bytes, LLVM's), anonymous
    mappings (CPython's object arenas, mmap'd malloc blocks, the JIT's tables), LLVM's
    library, the JIT's machine code (executable anonymous or memfd mappings), other
    libraries and the Python binary, the rest."""
    out: dict[str, int] = {}
    kind = "other"
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                name = head[5] if len(head) > 5 else ""
                perms = head[1]
                if name == snapshot:
                    kind = "guest RAM"
                elif name == "[heap]":
                    kind = "[heap]"
                elif "LLVM" in name or "llvmlite" in name:
                    kind = "LLVM library"
                elif "x" in perms and (not name or name.startswith("/memfd:")):
                    kind = "JIT code"
                elif not name:
                    kind = "anonymous"
                elif ".so" in name or "python" in name:
                    kind = "other libraries"
                else:
                    kind = "other"
            elif head and head[0] in ("Private_Dirty:", "Private_Clean:"):
                out[kind] = out.get(kind, 0) + int(head[1])
    return out


def largest_private(pid: int, most: int = 12) -> list[tuple[int, int, str]]:
    """The process's ``most`` mappings with the most private pages: (private KiB, the
    mapping's size in KiB, its address range, permissions and name)."""
    private: list[int] = []  # per mapping, in the order of smaps
    described: list[tuple[int, str]] = []
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                lo, hi = (int(v, 16) for v in head[0].split("-"))
                described.append(((hi - lo) >> 10, " ".join([head[0], head[1], *head[5:6]])))
                private.append(0)
            elif head and head[0] in ("Private_Dirty:", "Private_Clean:") and private:
                private[-1] += int(head[1])
    rows = [(kib, size, name) for kib, (size, name) in zip(private, described, strict=True)]
    return sorted(rows, reverse=True)[:most]


def print_maps(pid: int) -> None:
    """--maps: a clone's largest private mappings and where its threads' stacks are."""
    print(f"the largest private mappings of clone pid {pid} (KiB private, KiB mapped, "
          "mapping):")
    for kib, size, name in largest_private(pid):
        print(f"  {kib:7d} {size:9d}  {name}")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as fh:
                sp = int(fh.read().split()[-2], 16)
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                comm = fh.read().strip()
        except (OSError, ValueError, IndexError):
            continue
        print(f"  thread {tid} ({comm}): stack pointer {sp:#x}")


def start_vms(path: str, n: int, clone: bool) -> tuple[list[subprocess.Popen], list[str]]:
    procs, macs = [], []
    for _ in range(n):
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", path] + (["--clone"] if clone else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"a VM process did not come up: {line!r}")
        macs.append(line.split()[1])
    return procs, macs


def stop_vms(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    for p in procs:
        p.wait(timeout=60)


def clones(path: str, n: int) -> dict[str, object]:
    procs, _ = start_vms(path, 1, clone=False)
    one, one_ram = pss_kib(procs[0].pid), pss_kib(procs[0].pid, path)
    stop_vms(procs)
    procs, macs = start_vms(path, n, clone=True)
    total = sum(pss_kib(p.pid) for p in procs)
    ram = sum(pss_kib(p.pid, path) for p in procs)
    stop_vms(procs)
    return {"one": one, "total": total, "one_ram": one_ram, "ram": ram, "macs": macs}


def console_answer(sock_path: Path, command: str, want: bytes, timeout: float = 120) -> bytes:
    """Type ``command`` on a daemon VM's console socket; what came back once ``want``
    and the next prompt are out."""
    from pyhv.host.console import connect

    with connect(sock_path) as sock:
        sock.sendall(command.encode() + b"\n")
        seen = b""
        deadline = time.monotonic() + timeout
        while True:
            at = seen.find(want)
            if at >= 0 and seen.find(PROMPT, at) >= 0:
                return seen
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"no answer to {command!r} on {sock_path}: {seen[-300:]!r}")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise SystemExit(f"{sock_path} closed: {seen[-300:]!r}")
            seen += data


def daemon_clones(path: str, n: int, workdir: str, maps: bool = False
                  ) -> dict[str, object]:
    """The clone phase through a host daemon (module docstring)."""
    from pyhv.host import Host

    state = Path(workdir) / "state"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = open(Path(workdir) / "daemon.log", "w")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host", "serve",
         "--listen", "none"], stdout=log, stderr=subprocess.STDOUT, env=env)
    host = Host(state)
    try:
        deadline = time.monotonic() + 30
        while not (state / "daemon.sock").exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not come up: {Path(log.name).read_text()}")
            time.sleep(0.05)
        one_vm = host.restore(path, "one")
        console_answer(host.console_path("one"), "echo one-up", b"one-up\r\n")
        assert one_vm.pid is not None
        one = pss_kib(one_vm.pid)
        host.stop("one", force=True)
        vms = host.clone(path, n, "clone")
        macs, guest_macs = [], []
        for vm in vms:
            console_answer(host.console_path(vm.name), "echo clone-up", b"clone-up\r\n")
            seen = console_answer(host.console_path(vm.name),
                                  "cat /sys/class/net/eth0/address", b"\r\n")
            macs.append(host.get(vm.name).definition.nets[0].mac)  # its process's NIC
            found = re.findall(rb"[0-9a-f]{2}(?::[0-9a-f]{2}){5}", seen)
            guest_macs.append(found[-1].decode() if found else "?")
        pids = [vm.pid for vm in vms if vm.pid is not None]
        if len(pids) != n:  # every clone's process counts, or the sum means nothing
            raise SystemExit(f"{n - len(pids)} of the clones have no pid: {vms}")
        groups = {_ppid(pid) for pid in pids} - {daemon.pid}
        total = sum(pss_kib(pid) for pid in pids)
        group_pss = sum(pss_kib(pid) for pid in groups)
        private: dict[str, int] = {}
        for pid in pids:
            for kind, kib in private_kib(pid, path).items():
                private[kind] = private.get(kind, 0) + kib
        if maps:
            print_maps(pids[0])
        return {"one": one, "total": total + group_pss, "clones": total,
                "group": group_pss, "groups": len(groups), "macs": macs,
                "guest_macs": guest_macs,
                "private": {k: v / len(pids) for k, v in private.items()}}
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
        log.close()


CLONE_STAGES = """
import gc, json, os, sys, time
sys.path.insert(0, sys.argv[2])
import snapshot as bench
from pyhv import BufferConsole
from pyhv.cpu.engines import jit_unavailable_reason
from pyhv.host import worker
from pyhv.vm.machine import tune_gc_for_vm

snap = sys.argv[1]
jit_unavailable_reason()  # what a clone group does before it forks (host/worker.py)
shared = worker._WorkerMachine.restore(snap, BufferConsole(), clone=True, verify=True)
worker._warm_jit(snap, None)
shared.prepare_fork()
gc.collect()
gc.freeze()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    stages = []

    def stage(name):
        kib = bench.private_kib(os.getpid(), snap)
        stages.append((name, kib))

    stage("forked")
    tune_gc_for_vm()
    console = BufferConsole()
    shared.take_over_as_clone(console)
    stage("taken over")
    console.send("\\n")
    shared.run(timeout=0.2)
    stage("ran 0.2 s")
    bench.answer(shared, console, "echo clone-up", b"clone-up\\r\\n")
    stage("echo answered")
    shared.run(timeout=2)
    stage("idle 2 s")
    bench.answer(shared, console, "cat /sys/class/net/eth0/address", b"\\r\\n")
    stage("cat answered")
    shared.run(timeout=3)
    stage("idle 3 s")
    os.write(w, json.dumps(stages).encode())
    os._exit(0)
os.close(w)
with os.fdopen(r) as fh:
    print(fh.read())
os.waitpid(pid, 0)
"""


def clone_stages(path: str) -> list[tuple[str, dict[str, int]]]:
    """``--stages``: a clone group's steps in one process (host/worker.py: restore as a
    clone, the throwaway warm-up run, prepare_fork, gc.freeze), then a forked clone
    taking the machine over and running, its private memory by kind after each step."""
    import json

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, "-c", CLONE_STAGES, path, str(ROOT / "bench")],
                          capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:
        raise SystemExit(f"--stages failed: {done.stderr[-2000:]}")
    return [(name, kib) for name, kib in json.loads(done.stdout.strip().splitlines()[-1])]


def _ppid(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[1])


def one_size(size: str, runs: int, workdir: str, keep: bool = False) -> dict[str, float]:
    from pyhv.vm.config import NetSpec

    cfg = MachineConfig(kernel=str(GUESTS / "Image"), initrd=str(GUESTS / "initramfs.cpio"),
                        memory=parse_memory(size), append="console=ttyS0", engine="jit",
                        devices=(NetSpec(f"snap-bench-{os.getpid()}"),))
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
    if not keep:
        os.unlink(path)
    return fig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128M,512M,2G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clones", type=int, default=10, help="clone processes (0: none)")
    ap.add_argument("--daemon", action="store_true",
                    help="the clones through a host daemon (pyhv restore, pyhv clone)")
    ap.add_argument("--stages", action="store_true",
                    help="also: a forked clone's private memory step by step")
    ap.add_argument("--maps", action="store_true",
                    help="with --daemon: print a clone's largest private mappings")
    ap.add_argument("--one-process", action="store_true",
                    help="the clones in one process (pyhv.vm.group.MachineGroup)")
    ap.add_argument("--worker", metavar="FILE", help=argparse.SUPPRESS)
    ap.add_argument("--group-worker", nargs=2, metavar=("FILE", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--clone", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return clone_worker(args.worker, args.clone)
    if args.group_worker:
        return group_worker(args.group_worker[0], int(args.group_worker[1]))
    if args.daemon and args.one_process:
        ap.error("--daemon and --one-process: one or the other")
    if not (GUESTS / "Image").exists():
        print(f"needs {GUESTS}", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyhv-snap-bench-") as work:
        sizes = args.sizes.split(",")
        for i, size in enumerate(sizes):
            rows.append((size, one_size(size, args.runs, work, keep=i == 0)))
        first = os.path.join(work, f"linux-{sizes[0]}.snap")
        shared = None
        if args.clones:
            shared = daemon_clones(first, args.clones, work, args.maps) if args.daemon \
                else one_process_clones(first, args.clones) if args.one_process \
                else clones(first, args.clones)
        stages = clone_stages(first) if args.stages else []
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
    if shared is not None and args.daemon:
        one, total, macs = shared["one"], shared["total"], shared["macs"]
        assert isinstance(one, int) and isinstance(total, int) and isinstance(macs, list)
        print(f"through a daemon: {args.clones} clones of the {sizes[0]} snapshot (pyhv "
              f"clone), each at its shell: {total / 1024:.0f} MiB together (PSS: the "
              f"clones {shared['clones'] / 1024:.0f} MiB + {shared['groups']} clone group "
              f"process {shared['group'] / 1024:.0f} MiB), one restored VM alone (pyhv "
              f"restore) {one / 1024:.0f} MiB: {total / one:.2f}x; {len(set(macs))} "
              f"distinct MACs ({', '.join(macs[:3])}, ...); the guests' eth0 shows "
              f"{len(set(shared['guest_macs']))} distinct")  # type: ignore[arg-type]
        private = shared["private"]
        assert isinstance(private, dict)
        print("each clone's private memory (Private_Dirty + Private_Clean, mean of the "
              f"clones): {sum(private.values()) / 1024:.1f} MiB: " + ", ".join(
                  f"{kind} {kib / 1024:.1f}" for kind, kib in
                  sorted(private.items(), key=lambda kv: -kv[1])))
    elif shared is not None and args.one_process:
        one, total, macs = shared["one"], shared["total"], shared["macs"]
        assert isinstance(one, int) and isinstance(total, int) and isinstance(macs, list)
        print(f"{args.clones} clones of the {sizes[0]} snapshot in one process "
              f"(MachineGroup), each at its shell: {total / 1024:.0f} MiB (PSS), one "
              f"restored VM's process alone {one / 1024:.0f} MiB: {total / one:.2f}x; "
              f"{len(set(macs))} distinct MACs ({', '.join(macs[:3])}, ...)")
    elif shared is not None:
        one, total, macs = shared["one"], shared["total"], shared["macs"]
        one_ram, ram = shared["one_ram"], shared["ram"]
        assert isinstance(one, int) and isinstance(total, int) and isinstance(macs, list)
        assert isinstance(one_ram, int) and isinstance(ram, int)
        print(f"{args.clones} clones of the {sizes[0]} snapshot, each at its shell: "
              f"{total / 1024:.0f} MiB together (PSS), one restored VM alone "
              f"{one / 1024:.0f} MiB: {total / one:.2f}x; of it guest RAM (the snapshot's "
              f"mapping) {ram / 1024:.1f} MiB against {one_ram / 1024:.1f} MiB: "
              f"{ram / max(one_ram, 1):.2f}x; {len(set(macs))} distinct MACs "
              f"({', '.join(macs[:3])}, ...)")
    if stages:
        print("a clone forked from a clone group's process (its steps in one process), "
              "private memory after each step (MiB, Private_Dirty + Private_Clean):")
        for name, kib in stages:
            print(f"  {name:>14}: {sum(kib.values()) / 1024:5.1f}  " + ", ".join(
                f"{kind} {v / 1024:.2f}" for kind, v in sorted(kib.items(),
                                                             key=lambda kv: -kv[1])
                if v >= 50))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
