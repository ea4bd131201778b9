"""Clones that share their host memory: ``pyhv clone FILE --count N`` through a daemon
starts one clone group process (``python -m pyhv.host.worker --clone-group FILE``) that
warms up once and forks one VM process per clone. Each clone must still be a VM of its
own to the daemon and to the user: its pid, console, stop, crash, pause and resume, and
the daemon's shutdown. The guest is ``guests/tests/idle.elf`` (waits in WFI, echoes its
console)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyhv.host import Host
from pyhv.host.console import connect

from . import test_host_daemon as daemon_tests
from .test_host_daemon import Daemon, ok, pyhv, wait_for

# the daemon tests' fixtures: an environment of its own, a daemon on a fresh state dir
env = daemon_tests.env
daemon = daemon_tests.daemon

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
IDLE = ROOT / "guests" / "tests" / "idle.elf"


def echoes(host: Host, name: str, text: bytes, timeout: float = 10.0) -> None:
    """What is typed on the VM's console comes back (idle.elf echoes it)."""
    with connect(host.console_path(name)) as sock:
        sock.sendall(text)
        sock.settimeout(timeout)
        seen = b""
        while text not in seen:
            data = sock.recv(4096)
            assert data, f"console closed before {text!r}: {seen!r}"
            seen += data


def ppid(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[1])


def process_state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return process_state(pid) == "Z"


def cpu_seconds(pid: int) -> float:
    return time.clock_gettime(((~pid) << 3) | 2)


def snapshot_of_idle(host: Host, tmp_path: Path) -> Path:
    host.create({"name": "orig", "memory": "32M", "engine": "interp",
                 "boot": {"firmware": "none", "kernel": str(IDLE)},
                 "net": [{"switch": "lan"}]})
    host.start("orig")
    echoes(host, "orig", b"up")
    snap = tmp_path / "orig.snap"
    host.snapshot("orig", snap)
    host.stop("orig", force=True)
    return snap


def test_clones_are_forked_from_one_group_process(daemon: Daemon, env: dict[str, str],
                                                  tmp_path: Path) -> None:
    host = Host(daemon.state)
    snap = snapshot_of_idle(host, tmp_path)
    out = ok(pyhv(env, daemon.state, "clone", str(snap), "--count", "3", "--name", "c"))
    names = ["c-1", "c-2", "c-3"]
    vms = {n: host.get(n) for n in names}
    pids = {n: vm.pid for n, vm in vms.items()}
    assert out.splitlines() == [f"started VM '{n}' (pid {pids[n]})" for n in names]
    assert all(vm.state == "running" for vm in vms.values())
    assert len(set(pids.values())) == 3 and None not in pids.values()
    # one parent for the three, not the daemon: the clone group's process
    parents = {ppid(pid) for pid in pids.values() if pid is not None}
    assert len(parents) == 1 and daemon.proc.pid not in parents
    group = parents.pop()
    assert ppid(group) == daemon.proc.pid
    cmdline = Path(f"/proc/{group}/cmdline").read_bytes().split(b"\0")
    assert b"--clone-group" in cmdline
    for pid in pids.values():  # forked, not exec'd: the same program, the same heap
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") == cmdline
    assert "could not fork" not in daemon.log.read_text()
    # each its own pid file, MAC, console
    for n in names:
        text = (daemon.state / "vms" / n / "run" / "pid").read_text()
        assert int(text.split()[0]) == pids[n]
    macs = {vm.definition.nets[0].mac for vm in vms.values()}
    assert len(macs) == 3
    # ... and its own VM generation ID (the one its guest reads), shown by pyhv info
    gens = {n: vm.generation_id for n, vm in vms.items()}
    assert None not in gens.values() and len(set(gens.values())) == 3, gens
    assert f"Generation ID: {gens['c-1']}" in ok(pyhv(env, daemon.state, "info", "c-1"))
    assert json.loads(ok(pyhv(env, daemon.state, "info", "c-2", "--json")))[
        "generation_id"] == gens["c-2"]
    for n in names:
        echoes(host, n, f"hello {n}".encode())
    rows = {r["name"]: r for r in json.loads(ok(pyhv(env, daemon.state, "list", "--json")))}
    assert {n: rows[n]["state"] for n in names} == {n: "running" for n in names}

    # pause and resume one: its process is held, the others run on
    host.pause("c-2")
    assert host.get("c-2").state == "paused"
    c2 = pids["c-2"]
    assert c2 is not None
    wait_for(lambda: process_state(c2) == "T", what="the paused clone stopped")
    echoes(host, "c-1", b"c-1 while c-2 is paused")
    host.resume("c-2")
    assert host.get("c-2").state == "running"
    echoes(host, "c-2", b"resumed")

    # pyhv stop of one: it powers off, the others run on
    assert "VM 'c-1' stopped (the guest powered off)" in ok(pyhv(env, daemon.state, "stop", "c-1"))
    c1 = pids["c-1"]
    assert c1 is not None
    wait_for(lambda: gone(c1), what="c-1's process gone")
    assert host.get("c-1").state == "stopped" and host.get("c-1").crash is None
    assert host.get("c-2").state == "running" and host.get("c-3").state == "running"
    echoes(host, "c-3", b"still here")

    # SIGKILL of one: that VM alone is crashed (its status from the group's process)
    victim = pids["c-3"]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: host.get("c-3").state == "crashed", what="the crash to be seen")
    crash = host.get("c-3").crash
    assert crash is not None and "killed by SIGKILL" in crash["reason"], crash
    assert host.get("c-2").state == "running"
    echoes(host, "c-2", b"survivor")
    # a crashed clone starts again (a fresh boot of its definition, its own process)
    again = host.start("c-3")
    assert again.state == "running" and again.pid not in (None, victim)

    # daemon shutdown stops the clone left, and the group's process ends with it
    assert daemon_tests.stop_daemon(daemon.proc) == 0
    for pid in (c2, group):
        assert gone(pid), pid
    assert not list(daemon.state.glob("vms/*/run"))
    assert [vm.state for vm in host.list()] == ["stopped"] * 4
    text = daemon.log.read_text()
    assert "VM 'c-2' stopped (poweroff" in text, text


def test_clone_group_children_stop_when_the_daemon_dies(daemon: Daemon, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG's part for forked clones: the daemon SIGKILLed while it holds a
    clone stopped; the group's process continues it, and every clone stops its machine
    (its channel closed)."""
    host = Host(daemon.state)
    snap = snapshot_of_idle(host, tmp_path)
    host.clone(snap, 2, "k")
    pids = [host.get(n).pid for n in ("k-1", "k-2")]
    assert None not in pids
    host.pause("k-1")
    wait_for(lambda: process_state(pids[0]) == "T", what="k-1 held")  # type: ignore[arg-type]
    group = ppid(pids[0])  # type: ignore[arg-type]
    daemon.proc.kill()
    daemon.proc.wait()
    for pid in [*pids, group]:
        assert pid is not None
        wait_for(lambda pid=pid: gone(pid), what=f"process {pid} to end")


def test_a_group_that_cannot_start_undoes_every_clone(daemon: Daemon, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    host = Host(daemon.state)
    snap = snapshot_of_idle(host, tmp_path)
    from pyhv.vm.snapshot import HEADER

    data = bytearray(snap.read_bytes())
    ram_at = HEADER.unpack(bytes(data[: HEADER.size]))[5]
    first = next(i for i in range(ram_at, len(data)) if data[i])
    data[first] ^= 0xFF
    bad = tmp_path / "bad.snap"
    bad.write_bytes(data)
    proc = pyhv(env, daemon.state, "clone", str(bad), "--count", "3")
    assert proc.returncode == 2 and "failed to start" in proc.stderr, proc.stderr
    assert "checksum" in proc.stderr, proc.stderr
    assert [vm.name for vm in host.list()] == ["orig"]
    assert daemon.proc.poll() is None
    # and the daemon goes on cloning
    assert [vm.state for vm in host.clone(snap, 2)] == ["running", "running"]


def test_clones_of_a_machine_with_a_disk_restore_their_own(daemon: Daemon, env: dict[str, str],
                                                           tmp_path: Path) -> None:
    """A machine with a disk is not shared through the fork (its overlay and files are
    each machine's own: Machine.forkable): the group still forks the clones, and each
    restores its own machine from the file, with a MAC of its own."""
    host = Host(daemon.state)
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(65536))
    host.create({"name": "orig", "memory": "32M", "engine": "interp",
                 "boot": {"firmware": "none", "kernel": str(IDLE)},
                 "net": [{"switch": "lan"}], "disk": [{"path": str(disk), "readonly": True}]})
    host.start("orig")
    echoes(host, "orig", b"up")
    snap = tmp_path / "orig.snap"
    host.snapshot("orig", snap)
    host.stop("orig", force=True)
    vms = host.clone(snap, 2, "d")
    pids = [vm.pid for vm in vms]
    assert None not in pids and len(set(pids)) == 2
    parents = {ppid(pid) for pid in pids if pid is not None}
    assert len(parents) == 1 and daemon.proc.pid not in parents  # forked by the group
    assert len({host.get(vm.name).definition.nets[0].mac for vm in vms}) == 2
    for vm in vms:
        echoes(host, vm.name, f"disk clone {vm.name}".encode())


def test_fork_clones_off_starts_separate_processes(tmp_path: Path,
                                                    env: dict[str, str]) -> None:
    """PYHV_FORK_CLONES=0: every clone a VM process of the daemon's own, as before."""
    env = dict(env, PYHV_FORK_CLONES="0")
    state = tmp_path / "state"
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host", "serve",
             "--cpus", "2", "--shutdown-timeout", "3", "--listen", "none"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, text=True)
    try:
        wait_for(lambda: (state / "daemon.sock").exists(), 20, "the daemon")
        host = Host(state)
        snap = snapshot_of_idle(host, tmp_path)
        vms = host.clone(snap, 2, "s")
        for vm in vms:
            assert vm.pid is not None and ppid(vm.pid) == proc.pid
            echoes(host, vm.name, b"separate")
    finally:
        assert daemon_tests.stop_daemon(proc) == 0
