"""The gdb stub's packet layer (framing, checksums, escapes, malformed input) and its
commands against a real machine in this process (registers, memory, breakpoints,
single step, monitor commands, the guest clock after a hold)."""

from __future__ import annotations

import io
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyhv.clock import FakeClock
from pyhv.cpu.breakpoints import DebugStop
from pyhv.errors import ConfigError
from pyhv.vm.config import MachineConfig
from pyhv.vm.gdbstub import (
    PRIV_REGNUM,
    GdbServer,
    PacketReader,
    checksum,
    escape,
    frame,
    parse_gdb_address,
    target_xml,
    unescape,
)
from pyhv.vm.guest_time import GuestTime
from pyhv.vm.machine import Machine

DEBUGME = Path(__file__).resolve().parents[2] / "guests" / "tests" / "debugme.elf"
COMPUTE = 0x8000141E  # debugme.elf's compute (checked below against the ELF)


# -- the packet layer ------------------------------------------------------------------------


def test_frame_and_checksum() -> None:
    assert checksum(b"OK") == 0x9A
    assert frame(b"OK") == b"$OK#9a"
    assert frame(b"") == b"$#00"


def test_escape_round_trips_every_byte() -> None:
    data = bytes(range(256)) * 2
    escaped = escape(data)
    for special in b"#$*":
        assert special not in escaped
    assert unescape(escaped) == data
    assert escape(b"a}b") == b"a}]b"
    with pytest.raises(ValueError):
        unescape(b"abc}")


def test_reader_splits_packets_across_reads() -> None:
    reader = PacketReader()
    assert reader.feed(b"+$g#6") == [("ack", b"+")]
    assert reader.feed(b"7$m8000") == [("packet", b"g")]
    assert reader.feed(b"0000,4#") == []
    events = reader.feed(b"%02x-\x03" % checksum(b"m80000000,4"))
    assert events == [("packet", b"m80000000,4"), ("nak", b"-"), ("interrupt", b"")]


def test_reader_malformed_input() -> None:
    reader = PacketReader()
    assert reader.feed(b"$g#00") == [("bad", b"checksum")]
    assert reader.feed(b"$g#zz") == [("bad", b"checksum")]
    assert reader.feed(b"noise$a$b#%02x" % checksum(b"a$b")) == [
        ("bad", b"'$' inside a packet")]
    assert reader.feed(b"$g#67") == [("packet", b"g")]  # and it carries on
    huge = PacketReader()
    assert huge.feed(b"$" + b"x" * (1 << 20) + b"y") == [("bad", b"packet too long")]
    assert huge.feed(b"$g#67") == [("packet", b"g")]


def test_gdb_addresses() -> None:
    assert parse_gdb_address("tcp::1234") == ("127.0.0.1", 1234)
    assert parse_gdb_address("tcp:127.0.0.1:5") == ("127.0.0.1", 5)
    assert parse_gdb_address("tcp:localhost:77") == ("127.0.0.1", 77)
    assert parse_gdb_address("tcp:[::1]:9") == ("::1", 9)
    assert parse_gdb_address("4321") == ("127.0.0.1", 4321)
    for bad, words in (("tcp::x", "PORT a number"), ("tcp::0", "not in 1-65535"),
                       ("tcp:10.0.0.1:1234", "loopback only"),
                       ("tcp:host.example:1", "not an IP address")):
        with pytest.raises(ConfigError, match=words):
            parse_gdb_address(bad)


def test_target_description() -> None:
    root = ET.fromstring(target_xml())
    assert root.findtext("architecture") == "riscv:rv64"
    features = {f.get("name"): f for f in root.findall("feature")}
    assert set(features) == {"org.gnu.gdb.riscv.cpu", "org.gnu.gdb.riscv.fpu",
                             "org.gnu.gdb.riscv.csr", "org.gnu.gdb.riscv.virtual"}
    regs = {r.get("name"): int(r.get("regnum", "-1")) for r in root.iter("reg")}
    assert regs["zero"] == 0 and regs["t6"] == 31 and regs["pc"] == 32
    assert regs["ft0"] == 33 and regs["ft11"] == 64
    assert (regs["fflags"], regs["frm"], regs["fcsr"]) == (66, 67, 68)
    assert regs["mstatus"] == 65 + 0x300 and regs["satp"] == 65 + 0x180
    assert regs["priv"] == PRIV_REGNUM == 65 + 4096
    assert len(regs) == len(set(regs.values()))


def test_guest_time_rebase_drops_a_hold() -> None:
    host = FakeClock()
    guest = GuestTime(host)
    host.advance(100 * 10**9)  # a debugger held the machine for 100 s
    guest.rebase()
    guest.time_reads = 10**6  # a guest polling the time: guest time follows the host
    guest.advance(1000)
    assert guest.monotonic_ns() == 0


# -- the commands, on a machine --------------------------------------------------------------


@pytest.fixture
def stub() -> Iterator[tuple[GdbServer, Machine, socket.socket]]:
    """A stub on a debugme machine (interpreter, fake clock), with a socketpair as its
    gdb (the test reads what gdb would)."""
    machine = Machine(MachineConfig(kernel=str(DEBUGME), bios="none", engine="interp"),
                      clock=FakeClock())
    server = GdbServer("127.0.0.1", 0, log=io.StringIO())
    server.machine = machine
    ours, theirs = socket.socketpair()
    server.client = ours
    server.ack = False
    theirs.settimeout(5)
    try:
        yield server, machine, theirs
    finally:
        server.close()
        theirs.close()
        machine.close()


def received(sock: socket.socket) -> list[bytes]:
    """The packets the stub sent so far (payloads)."""
    sock.setblocking(False)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return [p for kind, p in PacketReader().feed(data) if kind == "packet"]


def reg(server: GdbServer, num: int) -> int:
    reply = server._command(b"p%x" % num)
    assert reply is not None
    return int.from_bytes(bytes.fromhex(reply.decode()), "little")


def test_registers_read_and_write(stub: tuple[GdbServer, Machine, socket.socket]) -> None:
    server, machine, _ = stub
    hart = machine.harts[0]
    assert reg(server, 32) == 0x1000  # the reset vector
    assert server._command(b"P1=efbeadde00000000") == b"OK"
    assert hart.x[1] == 0xDEADBEEF and reg(server, 1) == 0xDEADBEEF
    assert server._command(b"P0=0100000000000000") == b"OK" and hart.x[0] == 0
    g = server._command(b"g")
    assert g is not None and len(g) == 33 * 16
    assert reg(server, 65 + 0xF14) == 0  # mhartid
    assert reg(server, PRIV_REGNUM) == 3  # M-mode
    assert reg(server, 65 + 0x301) == machine.harts[0].debug_csr_read(0x301)  # misa
    assert server._command(b"P%x=0800000000000000" % (65 + 0x340)) == b"OK"  # mscratch
    assert hart.mscratch == 8
    assert server._command(b"P%x=0100000000000000" % (65 + 0xF14)) == b"E0e"  # read-only
    assert server._command(b"p%x" % 5000) == b"E0e"
    assert server._command(b"P%x=0500000000000000" % PRIV_REGNUM) == b"E0e"  # no H-mode


def test_memory_and_breakpoints_where_memory_is(
        stub: tuple[GdbServer, Machine, socket.socket]) -> None:
    server, machine, _ = stub
    assert server._command(b"m1000,4") == b"97020000"  # the boot ROM: readable
    assert server._command(b"M80200000,4:01020304") == b"OK"
    assert machine.board.ram.read_bytes(0x80200000, 4) == b"\x01\x02\x03\x04"
    assert server._command(b"X80200004,2:}]a") == b"OK"
    assert machine.board.ram.read_bytes(0x80200004, 2) == b"}a"
    assert server._command(b"M1000,4:00000000") == b"E14"  # ROM: not written
    assert server._command(b"m10000000,1") == b"E14"  # a UART register: not read
    assert server._command(b"m40000000,4") == b"E14"  # nothing there
    pc = machine.harts[0].pc
    assert server._command(b"Z0,40000000,2") == b"E14"
    assert server._command(b"Z0,10000000,2") == b"E14"
    assert server._command(b"Z0,1000,2") == b"OK"  # ROM is memory
    assert server._command(b"Z1,40000000,2") == b"OK"  # a hardware one: anywhere
    assert server._command(b"Z2,80000000,0") == b"E01"
    assert server._command(b"Z9,80000000,4") == b""
    assert machine.harts[0].pc == pc


def test_breakpoint_then_single_steps_match_the_interpreter(
        stub: tuple[GdbServer, Machine, socket.socket]) -> None:
    server, machine, gdb = stub
    hart = machine.harts[0]
    assert server._command(b"Z0,%x,2" % COMPUTE) == b"OK"
    server._resume(None, None)
    result = server._run(None, None)
    assert result.reason == "debug" and hart.pc == COMPUTE
    assert server.stop == (0, DebugStop("break", COMPUTE))
    assert received(gdb) == [b"T05thread:1;"]
    before = hart.instret
    assert server._command(b"z0,%x,2" % COMPUTE) == b"OK"
    assert server._command(b"vCont;s:1") is None
    server._run(None, None)
    assert hart.instret == before + 1 and hart.pc == COMPUTE + 2  # c.addi sp,sp,-48
    assert received(gdb) == [b"T05thread:1;"]


def test_watchpoint_stops_before_the_store(
        stub: tuple[GdbServer, Machine, socket.socket]) -> None:
    """As gdb drives a write watchpoint on RISC-V: stop before the store (crt0's BSS
    clearing first, then main's), take it out, step over, put it back, continue."""
    server, machine, gdb = stub
    result_addr = 0x800016C0  # debugme.elf's ``result``
    stores = []
    for _ in range(10):
        assert server._command(b"Z2,%x,8" % result_addr) == b"OK"
        server._resume(None, None)
        server._run(None, None)
        assert received(gdb) == [b"T05watch:%x;thread:1;" % result_addr]
        stores.append(machine.harts[0].pc)
        assert server._command(b"z2,%x,8" % result_addr) == b"OK"
        before = machine.board.ram.read_bytes(result_addr, 8)
        server._resume(0, {0})
        server._run(None, None)  # gdb steps over it
        assert received(gdb) == [b"T05thread:1;"]
        if before != machine.board.ram.read_bytes(result_addr, 8):
            break
    assert int.from_bytes(machine.board.ram.read_bytes(result_addr, 8), "little") == 385
    assert stores[-1] == 0x80001498  # main's ``sd a4,0(a5)``: result = sum
    assert len(stores) > 1  # crt0 cleared the BSS first (a store that changed nothing)


def test_the_guest_clock_does_not_jump_after_a_hold(
        stub: tuple[GdbServer, Machine, socket.socket]) -> None:
    server, machine, _ = stub
    host = machine.host_clock
    assert isinstance(host, FakeClock)
    start = machine.clock.monotonic_ns()
    host.advance(100 * 10**9)  # gdb held the guest for 100 s
    machine.clock.time_reads = 10**6  # and it polls the time: guest time follows host
    server._command(b"Z0,%x,2" % COMPUTE)
    server._resume(None, None)
    server._run(None, None)
    assert machine.clock.monotonic_ns() - start < 10**9


def test_monitor_commands(stub: tuple[GdbServer, Machine, socket.socket]) -> None:
    server, machine, gdb = stub

    def monitor(text: str) -> str:
        assert server._command(b"qRcmd," + text.encode().hex().encode()) == b"OK"
        return "".join(bytes.fromhex(p[1:].decode()).decode() for p in received(gdb)
                       if p.startswith(b"O"))

    mtree = monitor("info mtree")
    assert "0000000080000000-0000000087ffffff: ram" in mtree
    assert "0000000010000000-00000000100000ff: uart" in mtree
    assert "0x0000000000001000: 97 02 00 00" in monitor("xp 0x1000 4")
    assert "is not RAM or ROM" in monitor("xp 0x10000000")
    assert "hart 0: pc 0x0000000000001000 priv M" in monitor("info harts")
    machine.harts[0].pc = 0x80000000
    assert monitor("system_reset") == "machine reset\n"
    assert machine.harts[0].pc == 0x1000
    assert "unknown monitor command" in monitor("frobnicate")
    assert "info mtree" in monitor("help")


def test_queries(stub: tuple[GdbServer, Machine, socket.socket]) -> None:
    server, machine, _ = stub
    supported = server._command(b"qSupported:multiprocess+;xmlRegisters=i386")
    assert supported is not None and b"qXfer:features:read+" in supported
    xml = target_xml()
    first = server._command(b"qXfer:features:read:target.xml:0,100")
    assert first == b"m" + escape(xml[:0x100])
    rest = server._command(b"qXfer:features:read:target.xml:100,%x" % len(xml))
    assert rest == b"l" + escape(xml[0x100:])
    assert server._command(b"qXfer:features:read:other.xml:0,100") == b"E00"
    assert server._command(b"qfThreadInfo") == b"m1"
    assert server._command(b"qsThreadInfo") == b"l"
    assert server._command(b"qC") == b"QC1"
    assert server._command(b"qAttached") == b"1"
    assert server._command(b"T1") == b"OK" and server._command(b"T2") == b"E01"


def test_debugme_symbols_as_the_tests_expect() -> None:
    from elftools.elf.elffile import ELFFile

    with open(DEBUGME, "rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        assert table.get_symbol_by_name("compute")[0]["st_value"] == COMPUTE
        assert table.get_symbol_by_name("result")[0]["st_value"] == 0x800016C0


def test_vcont_actions_per_thread() -> None:
    """Each hart takes the leftmost action naming it; harts no action names stay
    stopped (gdb's scheduler-locking, its software single-step's ``vCont;c:1``)."""
    machine = Machine(MachineConfig(kernel=str(DEBUGME), bios="none", engine="interp",
                                    smp=2))
    server = GdbServer("127.0.0.1", 0, log=io.StringIO())
    server.machine = machine
    try:
        assert server._command(b"vCont;s:2;c") is None
        assert (server.stepping, server.resumed, server.current) == (1, None, 1)
        assert server._command(b"vCont;c:1") is None
        assert (server.stepping, server.resumed) == (None, {0})
        assert server._command(b"vCont;c") is None
        assert (server.stepping, server.resumed) == (None, None)
        assert server._command(b"vCont;s:1") is None
        assert (server.stepping, server.resumed) == (0, {0})
        assert server._command(b"vCont;s:1;s:2") == b"E01"
        assert server._command(b"vCont;c:3") == b"E01"
        assert server._command(b"qfThreadInfo") == b"m1,2"
        # only hart 0 may run: hart 1 does not move
        pc1 = machine.harts[1].pc
        server._command(b"Z0,%x,2" % COMPUTE)
        assert server._command(b"vCont;c:1") is None
        server._run(None, None)
        assert server.stop == (0, DebugStop("break", COMPUTE))
        assert machine.harts[1].pc == pc1 and machine.harts[1].instret == 0
    finally:
        server.close()
        machine.close()


def test_any_packet_gets_an_answer_never_an_exception(
        stub: tuple[GdbServer, Machine, socket.socket]) -> None:
    """Hostile or broken clients: whatever follows a command letter, the stub answers
    (an error, an empty reply, or the command's own) and never raises."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    server, _machine, _gdb = stub
    letters = [b"?", b"g", b"G", b"p", b"P", b"m", b"M", b"X", b"Z", b"z", b"H", b"T",
               b"c", b"s", b"C", b"S", b"vCont", b"vCont;", b"qXfer:features:read:",
               b"qRcmd,", b"qThreadExtraInfo,", b"qSupported", b"QStartNoAckMode", b"q"]
    noise = st.binary(max_size=40) | st.text("0123456789abcdefx,:;=-#}$*", max_size=40).map(
        str.encode)

    @settings(max_examples=400, derandomize=True, deadline=None)
    @given(st.sampled_from(letters), noise)
    def check(letter: bytes, rest: bytes) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            server.held, server._killed, server.client = True, False, ours
            server._event("packet", letter + rest)
            if server.client is not None:  # (D and k close it)
                server.client.close()
                server.client = None
                # it answered, unless it resumed the guest (the stop reply comes later)
                assert received(theirs) or not server.held

    check()
