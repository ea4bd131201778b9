"""The gdb stub as a user drives it: Debian's gdb-multiarch in batch mode against
``pyhv run --gdb ... --wait-gdb`` (and ``pyhv-qemu -s -S``), on the bare-metal program
guests/tests/debugme.c, under every engine; and the refusals (a port in use, a second
client, malformed packets, a breakpoint where there is no memory)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import test_host_daemon as daemon_tests
from .linux_guest import IMAGE, INITRD, needs_linux
from .test_host_daemon import Daemon, define, ok
from .test_host_daemon import error as daemon_error
from .test_host_daemon import pyhv as daemon_pyhv

ROOT = Path(__file__).resolve().parents[2]
DEBUGME = ROOT / "guests" / "tests" / "debugme.elf"
SPIN = ROOT / "guests" / "tests" / "spin.elf"
GDB = shutil.which("gdb-multiarch")
needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed "
                               "(scripts/setup.sh installs it)")
STEPS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_stub(kernel: Path, engine: str, port: int, *, qemu: bool = False,
               extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """pyhv held at its first instruction with the stub on ``port``; returns once it
    listens (its stderr says so)."""
    if qemu:
        args = ["-m", "pyhv.cli.qemu_compat", "-M", "virt", "-nographic", "-bios", "none",
                "-kernel", str(kernel), "-accel", f"pyhv,engine={engine}", "-S",
                "-gdb", f"tcp::{port},server,nowait", *extra]
    else:
        args = ["-m", "pyhv.cli.main", "run", "--bios", "none", "--kernel", str(kernel),
                "--engine", engine, "--gdb", f"tcp:127.0.0.1:{port}", "--wait-gdb", *extra]
    proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert f"listening on 127.0.0.1:{port}" in line, line
    return proc


def run_gdb(port: int, *commands: str, elf: Path = DEBUGME,
            timeout: float = 120) -> str:
    argv = [GDB or "gdb-multiarch", "-batch", "-nx", "-ex", "set architecture riscv:rv64",
            "-ex", "set pagination off", "-ex", f"file {elf}",
            "-ex", f"target remote 127.0.0.1:{port}"]
    for command in commands:
        argv += ["-ex", command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def symbol(name: str) -> int:
    out = subprocess.run(["riscv64-unknown-elf-nm", str(DEBUGME)], capture_output=True,
                         text=True).stdout if shutil.which("riscv64-unknown-elf-nm") else ""
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    from elftools.elf.elffile import ELFFile  # (pyhv's loader uses pyelftools)

    with open(DEBUGME, "rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return int(table.get_symbol_by_name(name)[0]["st_value"])


def interpreter_pcs(start: int, count: int) -> list[int]:
    """The reference: the pcs of ``count`` instructions from the first time the
    interpreter's own run loop reaches ``start`` (one instruction per slice)."""
    from pyhv.cpu.interp import Interpreter
    from pyhv.vm.config import MachineConfig
    from pyhv.vm.machine import Machine

    machine = Machine(MachineConfig(kernel=str(DEBUGME), bios="none", engine="interp"))
    try:
        hart = machine.harts[0]
        engine = Interpreter(hart, machine.board.code)
        for _ in range(1_000_000):
            if hart.pc == start:
                break
            engine.run(1)
        assert hart.pc == start
        pcs = []
        for _ in range(count):
            engine.run(1)
            pcs.append(hart.pc)
        return pcs
    finally:
        machine.close()


@needs_gdb
@pytest.mark.parametrize("engine", ["interp", "translate", "jit"])
def test_gdb_session_on_a_bare_metal_program(engine: str) -> None:
    """Break on ``compute`` by symbol, read pc and the argument/local, stepi 10 times
    (the interpreter's pc sequence), watch the global ``result`` (stops at its store,
    old and new value), then run to power-off: exit status 0."""
    if engine == "jit":
        from pyhv.cpu.engines import jit_unavailable_reason

        if jit_unavailable_reason() is not None:
            pytest.skip(f"no JIT here: {jit_unavailable_reason()}")
    port = free_port()
    proc = start_stub(DEBUGME, engine, port)
    steps: list[str] = []
    for _ in range(STEPS):
        steps += ["stepi", "printf \"PC=%lx\\n\", $pc"]
    out = run_gdb(port, "break compute", "continue", "info registers pc", "print n",
                  "print total", *steps, "print total", "print i",
                  "delete", "watch result", "continue", "printf \"AT=%lx\\n\", $pc",
                  "x/i $pc-2", "delete", "continue")
    code = proc.wait(timeout=60)
    assert proc.stdout is not None
    console = proc.stdout.read()
    bp = re.search(r"Breakpoint 1 at (0x[0-9a-f]+): file debugme.c", out)
    assert bp, out
    bp_addr = int(bp.group(1), 16)
    assert symbol("compute") < bp_addr < symbol("compute") + 32  # after the prologue
    assert "Breakpoint 1, compute (n=10) at debugme.c" in out, out
    pc_line = re.search(r"^pc\s+(0x[0-9a-f]+)", out, re.M)
    assert pc_line and int(pc_line.group(1), 16) == bp_addr, out
    assert re.search(r"^\$1 = 10$", out, re.M), out  # the argument n
    pcs = [int(x, 16) for x in re.findall(r"^PC=([0-9a-f]+)$", out, re.M)]
    assert pcs == interpreter_pcs(bp_addr, STEPS), out
    # 10 instructions into compute: total and i initialised, the first round's i * i
    # not yet added (the locals read from the stack frame, as gdb's DWARF says)
    assert re.search(r"^\$3 = 0$", out, re.M) and re.search(r"^\$4 = 1$", out, re.M), out
    assert "atchpoint 2: result" in out and "Old value = 0" in out and \
        "New value = 385" in out, out
    # stopped right after the (compressed) store to result: gdb stepped over it
    store = re.search(r"^AT=([0-9a-f]+)\n.*<main\+\d+>:\s+sd\s", out, re.M)
    assert store, out
    assert "exited normally" in out, out
    assert code == 0 and "PASS debugme" in console, (code, console)


@needs_gdb
def test_pyhv_qemu_s_S_holds_until_gdb_attaches() -> None:
    """``pyhv-qemu -S -gdb tcp::PORT``: nothing runs before gdb attaches (no console
    output), then gdb sees the reset vector and continues to the end."""
    port = free_port()
    proc = start_stub(DEBUGME, "interp", port, qemu=True)
    time.sleep(0.5)
    out = run_gdb(port, "printf \"PC=%lx\\n\", $pc", "continue")
    code = proc.wait(timeout=60)
    assert "PC=1000" in out, out  # QEMU virt's reset vector, in the boot ROM
    assert "exited normally" in out and code == 0, out


@needs_gdb
def test_gdb_sees_the_guests_exit_code() -> None:
    port = free_port()
    proc = start_stub(DEBUGME.parent / "exit_code.elf", "auto", port)
    out = run_gdb(port, "continue", elf=DEBUGME.parent / "exit_code.elf")
    assert "[Inferior 1 (Remote target) exited with code 03]" in out, out
    assert proc.wait(timeout=60) == 3


@needs_gdb
def test_gdb_attaches_to_a_running_guest() -> None:
    """Without --wait-gdb the guest runs at once; gdb attaching stops it where it is."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.main", "run", "--bios", "none", "--kernel",
         str(SPIN), "--engine", "auto", "--gdb", f"tcp::{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        while "SPIN-READY" not in (line := proc.stdout.readline()):
            assert line, "the guest did not start"
        out = run_gdb(port, "printf \"PC=%lx\\n\", $pc", "kill", elf=SPIN)
        pc = re.search(r"^PC=([0-9a-f]+)$", out, re.M)
        assert pc and 0x80000000 <= int(pc.group(1), 16) < 0x80100000, out
        assert proc.wait(timeout=60) == 0  # gdb's kill ends pyhv
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@needs_gdb
@pytest.mark.parametrize("engine", ["translate", "jit"])
def test_a_breakpoint_in_hot_compiled_code_is_honoured(engine: str) -> None:
    """spin.elf's loop runs for a second (compiled into blocks or native code), then
    gdb attaches, puts a breakpoint where the guest is and continues twice: the guest
    comes round to it each time instead of running through the compiled loop."""
    if engine == "jit":
        from pyhv.cpu.engines import jit_unavailable_reason

        if jit_unavailable_reason() is not None:
            pytest.skip(f"no JIT here: {jit_unavailable_reason()}")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.main", "run", "--bios", "none", "--kernel",
         str(SPIN), "--engine", engine, "--gdb", f"tcp::{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        while "SPIN-READY" not in (line := proc.stdout.readline()):
            assert line, "the guest did not start"
        time.sleep(1.0)
        out = run_gdb(port, "printf \"AT=%lx\\n\", $pc", "break *$pc", "continue",
                      "printf \"HIT=%lx\\n\", $pc", "continue",
                      "printf \"HIT=%lx\\n\", $pc", "kill", elf=SPIN)
        at = re.findall(r"^AT=([0-9a-f]+)$", out, re.M)
        hits = re.findall(r"^HIT=([0-9a-f]+)$", out, re.M)
        assert len(at) == 1 and hits == at * 2, out
        assert out.count("Breakpoint 1, ") == 2, out
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_qemu_S_without_a_stub_holds_the_cpu() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.qemu_compat", "-M", "virt", "-nographic", "-bios",
         "none", "-kernel", str(DEBUGME), "-S"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "the CPU is held" in proc.stderr.readline()
        time.sleep(1.0)
        assert proc.poll() is None  # debugme would have printed and exited by now
    finally:
        proc.kill()
        out, _ = proc.communicate()
    assert "debugme" not in out


def test_qemu_s_is_no_longer_ambiguous() -> None:
    """``-s`` used to be 'ambiguous option: -s could match -smp, -serial'."""
    from pyhv.cli.qemu_compat import _parser

    ns = _parser().parse_args(["-s", "-S", "-smp", "2"])
    assert ns.gdb_default and ns.freeze and ns.smp == "2"


# -- bad input -----------------------------------------------------------------------------


def test_port_in_use_is_a_clear_error_and_nothing_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "pyhv.cli.main", "run", "--bios", "none", "--kernel",
             str(DEBUGME), "--gdb", f"tcp:127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"pyhv: error: --gdb: port {port} on 127.0.0.1 is "
                                   "already in use (another gdb stub or program listens "
                                   "there)"), done.stderr
    assert done.stdout == ""  # the guest never ran


def test_a_non_loopback_address_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyhv.cli.main", "run", "--bios", "none", "--kernel",
         str(DEBUGME), "--gdb", "tcp:0.0.0.0:1234"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "loopback only" in done.stderr and "--gdb tcp:0.0.0.0:1234" in done.stderr


class RawClient:
    """A minimal RSP client over a socket, to send what gdb never would."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def packet(self, payload: bytes) -> bytes:
        self.send_raw(b"$" + payload + b"#%02x" % (sum(payload) & 0xFF))
        return self.reply()

    def read_byte(self) -> bytes:
        while not self.buf:
            data = self.sock.recv(4096)
            if not data:
                return b""
            self.buf += data
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def reply(self) -> bytes:
        """The next packet's payload (acks skipped), acknowledged."""
        while True:
            b = self.read_byte()
            if b == b"":
                raise ConnectionError("closed")
            if b == b"$":
                break
        payload = b""
        while (b := self.read_byte()) != b"#":
            payload += b
        checksum = self.read_byte() + self.read_byte()
        assert int(checksum, 16) == sum(payload) & 0xFF
        self.send_raw(b"+")
        return payload

    def close(self) -> None:
        self.sock.close()


def test_second_client_refused_malformed_packets_answered_guest_intact() -> None:
    port = free_port()
    proc = start_stub(DEBUGME, "interp", port)
    first = RawClient(port)
    try:
        assert first.packet(b"qSupported:multiprocess+").startswith(b"PacketSize=")
        regs = first.packet(b"g")
        # a second gdb is told, and closed; the first is unaffected
        second = RawClient(port)
        second.send_raw(b"$qSupported#37")
        assert second.reply() == b"E.pyhv: another gdb is already attached to this VM"
        with pytest.raises(ConnectionError):
            second.reply()
        second.close()
        assert first.packet(b"g") == regs
        # a wrong checksum gets a NAK, noise between packets is skipped
        first.send_raw(b"garbage$g#00")
        assert first.read_byte() == b"-"
        # malformed commands get error replies
        assert first.packet(b"mzz,4") == b"E01"
        assert first.packet(b"M80000000,4:123") == b"E01"  # odd hex
        assert first.packet(b"Z0") == b"E01"
        assert first.packet(b"qXfer:features:read:target.xml:zz") == b"E01"
        assert first.packet(b"Hg99") == b"E01"
        assert first.packet(b"vCont;x") == b"E01"
        assert first.packet(b"unknown-packet") == b""
        # a software breakpoint where nothing is mapped is refused; the guest is intact
        assert first.packet(b"Z0,40000000,2") == b"E14"
        assert first.packet(b"m40000000,4") == b"E14"
        assert first.packet(b"g") == regs
        assert first.packet(b"?").startswith(b"T05")
        # the guest still runs to its end
        first.send_raw(b"$c#63")
        assert first.reply() == b"W00"
    finally:
        first.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stdout is not None and "PASS debugme" in proc.stdout.read()


@needs_gdb
def test_gdb_refuses_a_breakpoint_outside_ram_and_the_guest_goes_on() -> None:
    port = free_port()
    proc = start_stub(DEBUGME, "translate", port)
    out = run_gdb(port, "break *0x40000000", "continue", "printf \"PC=%lx\\n\", $pc",
                  "delete", "continue")
    assert "Cannot insert breakpoint 1" in out and "Cannot access memory at address " \
        "0x40000000" in out, out
    assert "PC=1000" in out, out  # refused before anything ran
    assert "exited normally" in out, out
    assert proc.wait(timeout=60) == 0


def test_ctrl_c_interrupts_a_running_guest_and_kill_ends_it() -> None:
    port = free_port()
    proc = start_stub(SPIN, "translate", port)
    client = RawClient(port)
    try:
        client.send_raw(b"+")
        assert client.packet(b"vCont?") == b"vCont;c;C;s;S"
        client.send_raw(b"$vCont;c#a8")
        time.sleep(1.0)  # the guest spins (prints SPIN-READY)
        client.send_raw(b"\x03")
        stop = client.reply()
        assert stop.startswith(b"T02"), stop
        pc = int.from_bytes(bytes.fromhex(client.packet(b"p20").decode()), "little")
        assert 0x80000000 <= pc < 0x80100000  # stopped in the program, not at reset
        client.send_raw(b"$k#6b")
    finally:
        client.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stdout is not None and "SPIN-READY" in proc.stdout.read()


def test_detach_lets_the_guest_run_on() -> None:
    port = free_port()
    proc = start_stub(DEBUGME, "interp", port)
    client = RawClient(port)
    try:
        assert client.packet(b"Z0,%x,2" % symbol("compute")) == b"OK"
        assert client.packet(b"D") == b"OK"  # breakpoints go with the debugger
    finally:
        client.close()
    assert proc.wait(timeout=60) == 0


# -- the Linux guest -------------------------------------------------------------------------

# RV64 Linux links its kernel at KERNEL_LINK_ADDR (arch/riscv/include/asm/page.h), where
# the Image's first byte goes: what vmlinux-to-elf needs to place the recovered ELF.
KERNEL_LINK_ADDR = 0xFFFFFFFF80000000
EM_RISCV = 243


def kernel_symbols(tmp_path: Path) -> Path:
    """An ELF with the guest kernel's symbols: the Image has no debug info and there is
    no vmlinux or System.map beside it (/work/shared/guests/build.sh keeps neither),
    but it has kallsyms (CONFIG_KALLSYMS: text symbols), which vmlinux-to-elf reads."""
    out = tmp_path / "vmlinux.elf"
    tool = shutil.which("vmlinux-to-elf")
    argv = [tool] if tool else [sys.executable, "-m", "vmlinux_to_elf.scripts.vmlinux_to_elf"]
    done = subprocess.run([*argv, "--e-machine", str(EM_RISCV), "--bit-size", "64",
                           "--base-address", f"{KERNEL_LINK_ADDR:x}", str(IMAGE), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and out.exists(), done.stdout + done.stderr
    return out


def comm_offset(vmlinux: Path) -> int:
    """offsetof(struct task_struct, comm), from the kernel's own code (no debug info to
    ask): __get_task_comm(buf, size, tsk) passes ``tsk->comm`` to strscpy_pad as its
    second argument, ``addi a1, <tsk>, OFFSET`` right before the call."""
    out = subprocess.run([GDB or "gdb-multiarch", "-batch", "-nx", "-ex", f"file {vmlinux}",
                          "-ex", "x/24i __get_task_comm"],
                         capture_output=True, text=True, timeout=60).stdout
    offset = None
    for line in out.splitlines():
        m = re.search(r"\s(?:addi?)\s+a1,\w+,(\d+)$", line)
        if m:
            offset = int(m.group(1))
        if "<strscpy_pad>" in line:
            break
    assert offset is not None, out
    return offset


@pytest.mark.slow
@needs_gdb
@needs_linux
def test_gdb_breaks_in_linux_start_kernel_and_reads_init_task_comm(tmp_path: Path) -> None:
    """``hbreak start_kernel`` by symbol (a hardware breakpoint: gdb inserts it at the
    reset vector, long before the kernel's address is mapped), continue through OpenSBI
    and the kernel's early boot, then read ``init_task.comm``: ``init_task`` is where
    the boot hart's ``tp`` points (``current``, set in head.S before start_kernel)."""
    pytest.importorskip("vmlinux_to_elf", reason="vmlinux-to-elf (pip, test extra)")
    vmlinux = kernel_symbols(tmp_path)
    offset = comm_offset(vmlinux)
    port = free_port()
    args = ["-m", "pyhv.cli.main", "run", "--kernel", str(IMAGE), "--initrd", str(INITRD),
            "--append", "console=ttyS0", "--gdb", f"tcp:127.0.0.1:{port}", "--wait-gdb"]
    proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "listening" in proc.stderr.readline()
        out = run_gdb(port, "hbreak start_kernel", "continue",
                      "printf \"PC=%lx\\n\", $pc", "info registers priv",
                      f"printf \"COMM=%s\\n\", (char *)($tp + {offset})", "kill",
                      elf=vmlinux)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    start = subprocess.run([GDB or "gdb-multiarch", "-batch", "-nx", "-ex", f"file {vmlinux}",
                            "-ex", "printf \"%lx\\n\", &start_kernel"],
                           capture_output=True, text=True).stdout.strip()
    assert "Breakpoint 1, " in out and "in start_kernel ()" in out, out
    assert f"PC={start}" in out, out
    assert "prv:1 [Supervisor]" in out, out
    assert "COMM=swapper\n" in out, out  # INIT_TASK_COMM


# -- a VM of the host daemon -----------------------------------------------------------------

# the daemon tests' fixtures: an environment of its own, a daemon on a fresh state dir
env = daemon_tests.env
daemon = daemon_tests.daemon


@needs_gdb
def test_pyhv_debug_opens_a_daemon_vms_stub(daemon: Daemon, env: dict[str, str]) -> None:
    """``pyhv debug NAME`` prints the port of the VM's stub (opened on demand in its
    process, loopback); gdb attaches, reads the running guest and detaches, the VM runs
    on; a VM that does not run is a clear error."""
    from pyhv.host.api import Host

    host = Host(daemon.state)
    define(host, "dbg", SPIN, engine="translate")
    define(host, "off", SPIN)
    host.start("dbg")
    out = daemon_pyhv(env, daemon.state, "debug", "dbg")
    port = int(ok(out).strip())
    assert f"target remote 127.0.0.1:{port}" in out.stderr
    assert int(ok(daemon_pyhv(env, daemon.state, "debug", "dbg")).strip()) == port  # same
    gdb = run_gdb(port, "printf \"PC=%lx\\n\", $pc", "info threads", "monitor info harts",
                  "detach", elf=SPIN)
    pc = re.search(r"^PC=([0-9a-f]+)$", gdb, re.M)
    assert pc and 0x80000000 <= int(pc.group(1), 16) < 0x80100000, gdb
    assert "Thread 1 (hart 0 (M-mode" in gdb and "hart 0: pc 0x" in gdb, gdb
    assert "[Inferior 1 (Remote target) detached]" in gdb, gdb
    assert host.get("dbg").state == "running"
    before = host.metrics()
    time.sleep(0.5)
    after = host.metrics()
    def ran(metrics: dict) -> int:
        return int(next(m for m in metrics["vms"] if m["name"] == "dbg")["instructions"])

    assert ran(after) > ran(before)  # the guest runs on after gdb detached
    daemon_error(daemon_pyhv(env, daemon.state, "debug", "off"), 2,
                 "VM 'off' is not running")
    # while gdb holds the guest, the daemon still stops the VM
    client = RawClient(port)
    try:
        assert client.packet(b"?").startswith(b"T05")
        time.sleep(0.3)  # the status page catches up (its tick)
        held = ran(host.metrics())
        time.sleep(0.3)
        assert ran(host.metrics()) == held  # held: not one instruction more
        outcome = host.stop("dbg", timeout=1)
        assert outcome["state"] == "stopped", outcome
    finally:
        client.close()
