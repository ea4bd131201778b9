"""The host daemon driven as a user would: ``pyhv host serve`` in a private state
directory, VMs running the tiny guests of guests/tests (``spin``: CPU-bound, ``idle``:
waits in WFI and echoes its console), ``pyhv start|stop|...`` and the Python API."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_process import stop_daemon
from pyhv.host import Host
from pyhv.host.console import connect
from pyhv.host.errors import (
    Conflict,
    DefinitionError,
    DiskInUse,
    HostError,
    InsufficientResources,
    NotFound,
    Unavailable,
)

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
SPIN = ROOT / "guests" / "tests" / "spin.elf"
IDLE = ROOT / "guests" / "tests" / "idle.elf"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("PYHV_STATE_DIR", "XDG_DATA_HOME")}
    e["HOME"] = str(tmp_path / "home")
    e["PYTHONPATH"] = str(SRC)
    return e


def pyhv(env: dict[str, str], state: Path, *args: str, input: str | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), *args],
        capture_output=True, text=True, timeout=60, env=env, input=input, cwd=cwd,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pyhv: error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def define(host: Host, name: str, guest: Path = SPIN, **extra: object) -> None:
    doc: dict[str, object] = {
        "name": name, "memory": "32M", "engine": "interp",
        "boot": {"firmware": "none", "kernel": str(guest)},
    }
    doc.update(extra)
    host.create(doc)


class Daemon:
    def __init__(self, proc: subprocess.Popen[str], state: Path, log: Path) -> None:
        self.proc = proc
        self.state = state
        self.log = log

    def stop(self, timeout: float = 30) -> int:
        return stop_daemon(self.proc, timeout)


@pytest.fixture
def daemon(tmp_path: Path, env: dict[str, str]) -> Iterator[Daemon]:
    """A daemon (2 CPUs, 3 s shutdown timeout) on a fresh state directory."""
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host", "serve",
             "--cpus", "2", "--shutdown-timeout", "3", "--listen", "none"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, text=True,
        )
    d = Daemon(proc, state, log)
    deadline = time.monotonic() + 20
    while not (state / "daemon.sock").exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the daemon did not come up"
        time.sleep(0.05)
    try:
        yield d
    finally:
        d.stop()
        for pid_file in state.glob("vms/*/run/pid"):  # never leave a VM process behind
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    return time.clock_gettime(((~pid) << 3) | 2)


def wait_for(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    return buf


def console_until(sock: socket.socket, text: bytes, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    seen = b""
    while text not in seen:
        data = sock.recv(4096)
        assert data, f"console closed before {text!r}: {seen!r}"
        seen += data
    return seen


# ------------------------------------------------------------------------ lifecycle


def test_start_list_console_stop(daemon: Daemon, env: dict[str, str]) -> None:
    host = Host(daemon.state)
    define(host, "spin1")
    define(host, "idle1", IDLE)
    assert "started VM 'spin1'" in ok(pyhv(env, daemon.state, "start", "spin1"))
    vm = host.start("idle1")
    assert vm.state == "running" and vm.pid is not None
    table = ok(pyhv(env, daemon.state, "list"))
    assert [line.split()[:2] for line in table.splitlines()[1:]] == [
        ["idle1", "running"], ["spin1", "running"]]

    # the console: typed bytes come back from the guest's echo
    with connect(host.console_path("idle1")) as sock:
        sock.sendall(b"hello")
        console_until(sock, b"hello")
    out = pyhv(env, daemon.state, "console", "idle1", input="xyz")
    assert "xyz" in ok(out)
    wait_for(lambda: b"IDLE-READY" in (daemon.state / "vms/idle1/run/console.log").read_bytes(),
             what="console.log")

    # top and metrics
    metrics = host.metrics()
    by_name = {m["name"]: m for m in metrics["vms"]}
    assert by_name["spin1"]["state"] == "running" and by_name["idle1"]["pid"] == vm.pid
    assert metrics["host"]["cpus"] == 2 and metrics["host"]["policy"] == "shares"
    top = ok(pyhv(env, daemon.state, "top", "-n", "1", "-b"))
    assert "NAME" in top and "spin1" in top and "idle1" in top

    # stop: the guests power off when asked
    outcome = host.stop("idle1")
    assert outcome == {"name": "idle1", "state": "stopped", "reason": "poweroff", "exit_code": 0}
    assert "stopped (the guest powered off)" in ok(pyhv(env, daemon.state, "stop", "spin1"))
    assert [vm.state for vm in host.list()] == ["stopped", "stopped"]
    assert not (daemon.state / "vms/spin1/run").exists()
    error(pyhv(env, daemon.state, "stop", "spin1"), 2, "VM 'spin1' is not running")


def test_console_on_a_terminal_detaches_with_ctrl_close_bracket(
    daemon: Daemon, env: dict[str, str]
) -> None:
    host = Host(daemon.state)
    define(host, "tty1", IDLE)
    host.start("tty1")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(daemon.state), "console",
         "tty1"],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )
    os.close(slave)
    try:
        assert b"escape character is ^]" in read_until(master, b"^]", 20)
        os.write(master, b"typed")
        assert b"typed" in read_until(master, b"typed", 10)
        os.write(master, b"\x1d")  # Ctrl-]
        assert proc.wait(timeout=10) == 0
        assert host.get("tty1").state == "running"  # detaching leaves the VM running
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_sigkill_of_a_vm_process_is_a_crash_that_spares_the_others(
    daemon: Daemon, env: dict[str, str]
) -> None:
    host = Host(daemon.state)
    for name in ("a", "b"):
        define(host, name)
        host.start(name)
    victim = host.get("a").pid
    survivor = host.get("b").pid
    assert victim is not None and survivor is not None
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: host.get("a").state == "crashed", what="the crash to be seen")
    vm = host.get("a")
    assert vm.crash is not None and "killed by SIGKILL" in vm.crash["reason"]
    assert vm.to_dict()["crash"]["reason"] == vm.crash["reason"]
    info = ok(pyhv(env, daemon.state, "info", "a"))
    assert "State:" in info and "crashed" in info and "killed by SIGKILL" in info
    # the daemon and the other VM carry on
    assert daemon.proc.poll() is None
    assert host.get("b").state == "running" and host.get("b").pid == survivor
    before = cpu_seconds(survivor)
    time.sleep(0.5)
    assert cpu_seconds(survivor) > before
    # and the crashed VM starts again
    again = host.start("a")
    assert again.state == "running" and again.pid not in (None, victim)
    assert host.get("a").crash is None


def test_pause_resume_reboot_and_live_qos(daemon: Daemon, env: dict[str, str]) -> None:
    host = Host(daemon.state)
    define(host, "s")
    define(host, "t", IDLE)
    host.start("s")
    host.start("t")
    pid = host.get("s").pid
    assert pid is not None
    assert "paused VM 's'" in ok(pyhv(env, daemon.state, "pause", "s"))
    assert host.get("s").state == "paused"
    time.sleep(0.2)
    before = cpu_seconds(pid)
    time.sleep(0.5)
    assert cpu_seconds(pid) == before  # a paused VM gets no CPU at all
    error(pyhv(env, daemon.state, "reboot", "s"), 2, "paused")
    ok(pyhv(env, daemon.state, "resume", "s"))
    assert host.get("s").state == "running"
    time.sleep(0.3)
    assert cpu_seconds(pid) > before

    # live QoS: applied at once and kept in the definition
    out = ok(pyhv(env, daemon.state, "set", "s", "--limit", "20", "--shares", "high"))
    assert "qos.limit unlimited -> 20%" in out and "(applied now)" in out
    assert host.get("s").definition.qos.limit == 20
    time.sleep(0.3)
    start, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(1.5)
    assert (cpu_seconds(pid) - start) / (time.monotonic() - t0) < 0.20 * 1.05 + 0.01
    out = ok(pyhv(env, daemon.state, "set", "s", "--memory", "48M", "--limit", "none"))
    assert "QoS applied now; memory at its next start" in out
    # no balloon device: a clear error; with one, the target is set at once
    error(pyhv(env, daemon.state, "set", "t", "--balloon", "16M"), 2, "no balloon device")
    define(host, "b", IDLE, devices={"balloon": True})
    error(pyhv(env, daemon.state, "set", "b", "--balloon", "16M"), 2, "not running")
    host.start("b")
    out = ok(pyhv(env, daemon.state, "set", "b", "--balloon", "24M"))
    assert "balloon target 24M" in out
    assert host.metrics("b")["vms"][0]["balloon_target"] == 8 << 20  # 32M - 24M
    error(pyhv(env, daemon.state, "set", "b", "--balloon", "64M"), 2, "out of range")

    # reboot: the guest starts over (prints its banner again)
    log = daemon.state / "vms/t/run/console.log"
    wait_for(lambda: log.read_bytes().count(b"IDLE-READY") == 1, what="the banner")
    ok(pyhv(env, daemon.state, "reboot", "t"))
    wait_for(lambda: log.read_bytes().count(b"IDLE-READY") == 2, what="the reboot")


def test_bad_requests_fail_cleanly_and_change_nothing(daemon: Daemon, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    host = Host(daemon.state)
    error(pyhv(env, daemon.state, "start", "nosuch"), 2, "no VM named 'nosuch'")
    with pytest.raises(NotFound):
        host.start("nosuch")

    # reservations: 2 CPUs = 200%; a VM process can use at most one CPU
    define(host, "r1", qos={"reservation": 100})
    define(host, "r2", qos={"reservation": 80})
    define(host, "r3", qos={"reservation": 40})
    define(host, "r4", qos={"reservation": 20})
    host.start("r1")
    host.start("r2")
    line = error(pyhv(env, daemon.state, "start", "r3"), 2, "does not fit")
    assert "reserve 180%" in line
    assert host.get("r3").state == "stopped"
    assert not (daemon.state / "vms/r3/run").exists()
    host.start("r4")
    with pytest.raises(InsufficientResources, match="does not fit"):
        host.set("r2", reservation=81)  # live: 100 + 81 + 20 > 200
    error(pyhv(env, daemon.state, "set", "r2", "--reservation", "81"), 2, "does not fit")
    assert host.get("r2").definition.qos.reservation == 80
    define(host, "big", vcpus=2, qos={"reservation": 150})
    with pytest.raises(InsufficientResources, match="one host CPU"):
        host.start("big")
    for name in ("r1", "r2", "r4"):
        host.stop(name, force=True)

    # disks: a writable image is for one running VM at a time
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 65536)
    define(host, "d1", disk=[{"path": str(image)}])
    define(host, "d2", disk=[{"path": str(image), "readonly": True}])
    host.start("d1")
    with pytest.raises(DiskInUse, match="in use by running VM 'd1'"):
        host.start("d2")
    error(pyhv(env, daemon.state, "start", "d2"), 2, "in use by running VM 'd1'")
    assert host.get("d2").state == "stopped"

    # a VM whose kernel has gone
    gone = tmp_path / "gone.elf"
    gone.write_bytes(SPIN.read_bytes())
    define(host, "g", gone)
    gone.unlink()
    with pytest.raises(DefinitionError, match="no such file"):
        host.start("g")
    # a kernel that is no program: the VM process fails to build it, start says why
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"\x7fELF" + b"\0" * 60)
    define(host, "j", junk)
    with pytest.raises(HostError, match="VM 'j' failed to start: "):
        host.start("j")
    error(pyhv(env, daemon.state, "start", "j"), 2, "VM 'j' failed to start: ")
    assert host.get("j").state == "stopped" and not (daemon.state / "vms/j/run").exists()

    # running VMs cannot be destroyed; double starts are refused
    with pytest.raises(Conflict):
        host.destroy("d1")
    with pytest.raises(Conflict, match="already running"):
        host.start("d1")
    assert daemon.proc.poll() is None


def test_sigterm_stops_every_vm_then_the_daemon(daemon: Daemon) -> None:
    host = Host(daemon.state)
    define(host, "a")
    define(host, "b", IDLE)
    define(host, "stubborn", IDLE)
    for name in ("a", "b", "stubborn"):
        host.start(name)
    pids = [host.get(n).pid for n in ("a", "b", "stubborn")]
    os.kill(pids[2], signal.SIGSTOP)  # cannot power off: the daemon must force it
    t0 = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - t0 < 15
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert [vm.state for vm in host.list()] == ["stopped", "stopped", "stopped"]
    assert not list(daemon.state.glob("vms/*/run")) and not (daemon.state / "daemon.sock").exists()
    text = daemon.log.read_text()
    assert "VM 'a' stopped (poweroff" in text and "stubborn" in text


def test_autostart_vms_start_with_the_daemon_and_restart_after_a_crash(
    tmp_path: Path, env: dict[str, str]
) -> None:
    state = tmp_path / "state"
    host = Host(state)
    define(host, "auto", IDLE, autostart=True)
    define(host, "manual", IDLE)
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host", "serve",
             "--shutdown-timeout", "2"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    try:
        wait_for(lambda: host.get("auto").state == "running", 20, "autostart")
        assert host.get("manual").state == "stopped"
        pid = host.get("auto").pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: host.get("auto").pid not in (None, pid), 20, "the restart")
        assert "will be restarted" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_without_a_daemon(tmp_path: Path, env: dict[str, str]) -> None:
    state = tmp_path / "state"
    host = Host(state)
    define(host, "vm")
    error(pyhv(env, state, "start", "vm"), 1, "no pyhv host daemon serves")
    with pytest.raises(Unavailable):
        host.start("vm")
    error(pyhv(env, state, "start", "nosuch"), 2, "no VM named")
    # a second daemon on the same state directory is refused
    out = tmp_path / "d.log"
    with open(out, "w") as o:
        first = subprocess.Popen(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host", "serve"],
            stdout=o, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: (state / "daemon.sock").exists(), 20, "the daemon")
        error(pyhv(env, state, "host", "serve"), 1, "already serves")
        info = json.loads(ok(pyhv(env, state, "info", "vm", "--json")))
        assert info["state"] == "stopped"
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0


# ------------------------------------------------------------------------ snapshots


def echoes(host: Host, name: str, text: bytes) -> None:
    """What is typed on the VM's console comes back (idle.elf echoes it)."""
    with connect(host.console_path(name)) as sock:
        sock.sendall(text)
        console_until(sock, text)


def test_snapshot_restore_and_clone_through_the_cli(daemon: Daemon, env: dict[str, str],
                                                    tmp_path: Path) -> None:
    host = Host(daemon.state)
    define(host, "echo", IDLE, net=[{"switch": "lan"}])
    host.start("echo")
    echoes(host, "echo", b"before")
    mac = host.get("echo").definition.nets[0].mac

    # a relative FILE is the client's: written where the command runs
    out = ok(pyhv(env, daemon.state, "snapshot", "echo", "echo.snap", cwd=tmp_path))
    snap = tmp_path / "echo.snap"
    assert out.startswith(f"saved VM 'echo' to {snap} in ") and "(RAM 32.0MiB, " in out, out
    assert snap.is_file()
    echoes(host, "echo", b"still running")  # the guest runs on

    # a paused VM is saved as it is and stays paused
    ok(pyhv(env, daemon.state, "pause", "echo"))
    pid = host.get("echo").pid
    assert pid is not None
    ok(pyhv(env, daemon.state, "snapshot", "echo", str(tmp_path / "paused.snap")))
    assert host.get("echo").state == "paused"
    wait_for(lambda: _process_state(pid) == "T", what="the paused VM held again")
    time.sleep(0.2)
    before = cpu_seconds(pid)
    time.sleep(0.4)
    assert cpu_seconds(pid) == before
    ok(pyhv(env, daemon.state, "resume", "echo"))
    echoes(host, "echo", b"resumed")

    # restore under a new name: the guest goes on where it was saved (no new banner)
    out = ok(pyhv(env, daemon.state, "restore", str(snap), "--name", "again"))
    assert "restored VM 'again'" in out
    again = host.get("again")
    assert again.state == "running" and again.definition.memory == 32 << 20
    assert again.definition.nets[0].mac == mac  # the same machine come back
    echoes(host, "again", b"after")
    log = (daemon.state / "vms/again/run/console.log").read_bytes()
    assert b"IDLE-READY" not in log and b"after" in log
    # the paused one too, under the file's name
    assert "restored VM 'paused'" in ok(pyhv(env, daemon.state, "restore",
                                             str(tmp_path / "paused.snap")))
    echoes(host, "paused", b"woken")

    # clones: new machines, each with a MAC of its own
    out = ok(pyhv(env, daemon.state, "clone", str(snap), "--count", "3", "--name", "c"))
    assert out.splitlines() == [f"started VM 'c-{i}' (pid {host.get(f'c-{i}').pid})"
                                for i in (1, 2, 3)]
    clones = [host.get(f"c-{i}") for i in (1, 2, 3)]
    assert [vm.state for vm in clones] == ["running"] * 3
    macs = {vm.definition.nets[0].mac for vm in clones}
    assert len(macs) == 3 and mac not in macs
    for vm in clones:
        echoes(host, vm.name, f"hi {vm.name}".encode())
    rows = {r["name"]: r["state"] for r in json.loads(ok(pyhv(env, daemon.state, "list",
                                                                "--json")))}
    assert rows == {"echo": "running", "again": "running", "paused": "running",
                    "c-1": "running", "c-2": "running", "c-3": "running"}

    # a VM held after a snapshot taken while paused still powers off when stopped
    host.pause("echo")
    host.snapshot("echo", tmp_path / "paused.snap")  # replaces the earlier snapshot
    assert host.stop("echo", timeout=5)["reason"] == "poweroff"

    # a restored VM's definition boots afresh with a plain start
    host.stop("again")
    host.start("again")
    wait_for(lambda: b"IDLE-READY" in (daemon.state / "vms/again/run/console.log"
                                       ).read_bytes(), what="a fresh boot")


def _process_state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2]


def test_snapshot_restore_clone_bad_inputs(daemon: Daemon, env: dict[str, str],
                                           tmp_path: Path) -> None:
    host = Host(daemon.state)
    define(host, "v", IDLE)
    define(host, "off", IDLE)
    snap = tmp_path / "v.snap"

    # snapshot: an unknown VM, a stopped one, a path it cannot write
    error(pyhv(env, daemon.state, "snapshot", "ghost", str(snap)), 2, "no VM named 'ghost'")
    error(pyhv(env, daemon.state, "snapshot", "off", str(snap)), 2, "'off' is not running")
    host.start("v")
    error(pyhv(env, daemon.state, "snapshot", "v", str(tmp_path / "no/such/dir/x.snap")), 2,
          "does not exist")
    error(pyhv(env, daemon.state, "snapshot", "v", str(tmp_path)), 2, "is a directory")
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    error(pyhv(env, daemon.state, "snapshot", "v", str(precious)), 2, "not a pyhv snapshot")
    assert precious.read_text() == "keep me"
    # a directory the VM process cannot write in (even as root): its error, one line
    error(pyhv(env, daemon.state, "snapshot", "v", "/proc/pyhv-test.snap"), 2,
          "VM 'v': ")
    assert not snap.exists()
    ok(pyhv(env, daemon.state, "snapshot", "v", str(snap)))
    echoes(host, "v", b"alive")
    names = sorted(vm.name for vm in host.list())

    # restore: a missing file, a file that is no snapshot, a damaged one, a name clash
    error(pyhv(env, daemon.state, "restore", str(tmp_path / "gone.snap")), 2,
          "No such file")
    error(pyhv(env, daemon.state, "restore", str(precious), "--name", "x"), 2,
          "not a pyhv snapshot")
    data = bytearray(snap.read_bytes())
    cut = tmp_path / "cut.snap"
    cut.write_bytes(data[: len(data) // 2])
    error(pyhv(env, daemon.state, "restore", str(cut)), 2, "truncated or damaged")
    # RAM damaged, metadata intact: the VM process finds it; nothing stays defined
    from pyhv.vm.snapshot import HEADER
    ram_at = HEADER.unpack(bytes(data[: HEADER.size]))[5]
    first = next(i for i in range(ram_at, len(data)) if data[i])
    data[first] ^= 0xFF
    bad = tmp_path / "bad.snap"
    bad.write_bytes(data)
    error(pyhv(env, daemon.state, "restore", str(bad)), 2, "VM 'bad' failed to start")
    error(pyhv(env, daemon.state, "clone", str(bad), "--count", "2"), 2, "failed to start")
    error(pyhv(env, daemon.state, "restore", str(snap), "--name", "off"), 2,
          "a VM named 'off' already exists")
    odd = tmp_path / "Odd Name.snap"
    odd.write_bytes(snap.read_bytes())
    error(pyhv(env, daemon.state, "restore", str(odd)), 2, "is no VM name", "--name")

    # clone: the count, and all or nothing
    error(pyhv(env, daemon.state, "clone", str(snap), "--count", "0"), 2, "1 to 64")
    error(pyhv(env, daemon.state, "clone", str(snap), "--count", "65"), 2, "1 to 64")
    define(host, "k-2", IDLE)
    error(pyhv(env, daemon.state, "clone", str(snap), "--count", "3", "--name", "k"), 2,
          "a VM named 'k-2' already exists")
    assert sorted(vm.name for vm in host.list()) == sorted([*names, "k-2"])
    host.destroy("k-2")

    # a writable disk is for one running VM: two clones of it cannot both run
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 65536)
    define(host, "d", IDLE, disk=[{"path": str(image)}])
    host.start("d")
    dsnap = tmp_path / "d.snap"
    host.snapshot("d", dsnap)
    host.stop("d", force=True)
    with pytest.raises(DiskInUse):
        host.clone(dsnap, 2)
    with pytest.raises(Conflict):
        host.restore(dsnap, "d")
    assert sorted(vm.name for vm in host.list()) == sorted([*names, "d"])
    assert not list((daemon.state / "vms").glob(".*"))  # no leftovers
    assert host.restore(dsnap, "d2").state == "running"
    assert host.get("v").state == "running" and daemon.proc.poll() is None
