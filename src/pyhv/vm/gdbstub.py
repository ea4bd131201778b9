"""A gdb remote stub for a machine: gdb (``target remote``) debugs the guest's harts.

Why: studying a kernel means stopping it, stepping it and reading its state; QEMU's
``-s -S`` is how every OS course does it. This module speaks gdb's Remote Serial
Protocol (RSP, "GDB Remote Serial Protocol" in gdb's manual, appendix E) on a TCP
socket, loopback only. Each hart is a gdb thread (thread id = hart index + 1).

The stub runs the machine itself: between gdb's commands the guest is held (its guest
clock rebased on resume, so timers do not fire in a burst after a long stop); on
``continue`` the machine runs at full speed on its own engine, the socket polled
between rounds for Ctrl-C. While gdb holds breakpoints or watchpoints, or steps, the
harts run through the checked stepper of cpu/breakpoints.py instead (no translated
block runs past a breakpoint, a step is exactly one instruction).

Two parts: the packet layer (framing, checksums, escapes, acks: :class:`PacketReader`,
:func:`frame`), and :class:`GdbServer` (the commands).
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..cpu.breakpoints import (
    ACCESS,
    READ,
    WRITE,
    BreakpointInterpreter,
    Breakpoints,
    DebugStop,
    run_debug,
)
from ..devices.rom import Rom
from ..errors import ConfigError
from ..isa import csr as C

if TYPE_CHECKING:
    from ..cpu.hart import Hart
    from .machine import Machine, RunResult

PACKET_SIZE = 0x4000  # what qSupported offers gdb (bytes of a packet's payload)
MAX_PACKET = 1 << 20  # a packet longer than this without its '#' is dropped (NAK)
POLL_SECONDS = 0.01  # how often a running guest's socket is looked at (Ctrl-C)
HELD_TICK = 0.05  # run_with: how often the VM process is served while gdb holds it
SIGINT, SIGTRAP = 2, 5
REFUSAL = b"E.pyhv: another gdb is already attached to this VM"
REFUSE_SECONDS = 2.0  # how long a refused second client is waited for (its first packet)
M64 = (1 << 64) - 1

# -- the packet layer ----------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """The RSP checksum: the sum of the payload's bytes, modulo 256."""
    return sum(data) & 0xFF


def escape(data: bytes) -> bytes:
    """Binary data in a packet: '#', '$', '}' and '*' become '}' then the byte ^ 0x20."""
    out = bytearray()
    for b in data:
        if b in b"#$}*":
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """The inverse of :func:`escape` (``X`` packets, gdb's binary writes). A trailing
    lone '}' is malformed: ValueError."""
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x7D:
            nxt = next(it, None)
            if nxt is None:
                raise ValueError("escape character at the end of the data")
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """``$payload#cs``: the payload must already be escaped where it holds binary."""
    return b"$" + payload + b"#%02x" % checksum(payload)


class PacketReader:
    """Splits what gdb sends into events: ("packet", payload), ("bad", reason) for a
    packet whose checksum or framing is wrong (answered with a NAK), ("interrupt", b"")
    for Ctrl-C (0x03 outside a packet), ("ack", b"+") and ("nak", b"-"). Other bytes
    between packets are noise, skipped, as the protocol says."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buf += data
        events: list[tuple[str, bytes]] = []
        buf = self._buf
        while buf:
            first = buf[0]
            if first != 0x24:  # '$'
                del buf[0]
                if first == 0x03:
                    events.append(("interrupt", b""))
                elif first == 0x2B:
                    events.append(("ack", b"+"))
                elif first == 0x2D:
                    events.append(("nak", b"-"))
                continue
            end = buf.find(b"#")
            if end < 0:
                if len(buf) > MAX_PACKET:
                    del buf[:]
                    events.append(("bad", b"packet too long"))
                break
            if len(buf) < end + 3:
                break  # the checksum has not arrived yet
            payload = bytes(buf[1:end])
            given = bytes(buf[end + 1:end + 3])
            del buf[:end + 3]
            try:
                ok = int(given, 16) == checksum(payload)
            except ValueError:
                ok = False
            if not ok:
                events.append(("bad", b"checksum"))
            elif b"$" in payload:
                events.append(("bad", b"'$' inside a packet"))
            else:
                events.append(("packet", payload))
        return events


# -- the target description ------------------------------------------------------------------

X_NAMES = ("zero ra sp gp tp t0 t1 t2 fp s1 a0 a1 a2 a3 a4 a5 a6 a7 s2 s3 s4 s5 s6 s7 s8 "
           "s9 s10 s11 t3 t4 t5 t6").split()
F_NAMES = ("ft0 ft1 ft2 ft3 ft4 ft5 ft6 ft7 fs0 fs1 fa0 fa1 fa2 fa3 fa4 fa5 fa6 fa7 fs2 "
           "fs3 fs4 fs5 fs6 fs7 fs8 fs9 fs10 fs11 ft8 ft9 ft10 ft11").split()
PC_REGNUM = 32
F0_REGNUM = 33
CSR_BASE_REGNUM = 65  # gdb's RISC-V numbering: CSR n is register 65 + n
PRIV_REGNUM = CSR_BASE_REGNUM + 4096  # gdb's virtual "priv" register
FP_CSRS = {"fflags": C.FFLAGS, "frm": C.FRM, "fcsr": C.FCSR}
# the CSRs gdb knows by name that this hart has (the privileged spec's names)
CSRS = {
    "sstatus": C.SSTATUS, "sie": C.SIE, "stvec": C.STVEC, "scounteren": C.SCOUNTEREN,
    "sscratch": C.SSCRATCH, "sepc": C.SEPC, "scause": C.SCAUSE, "stval": C.STVAL,
    "sip": C.SIP, "satp": C.SATP, "mstatus": C.MSTATUS, "misa": C.MISA,
    "medeleg": C.MEDELEG, "mideleg": C.MIDELEG, "mie": C.MIE, "mtvec": C.MTVEC,
    "mcounteren": C.MCOUNTEREN, "mcountinhibit": C.MCOUNTINHIBIT, "mscratch": C.MSCRATCH,
    "mepc": C.MEPC, "mcause": C.MCAUSE, "mtval": C.MTVAL, "mip": C.MIP,
    "pmpcfg0": 0x3A0, "pmpcfg2": 0x3A2, **{f"pmpaddr{i}": 0x3B0 + i for i in range(16)},
    "tselect": 0x7A0, "tdata1": 0x7A1, "tdata2": 0x7A2, "tdata3": 0x7A3,
    "mcycle": C.MCYCLE, "minstret": C.MINSTRET, "cycle": C.CYCLE, "time": C.TIME,
    "instret": C.INSTRET, "mvendorid": C.MVENDORID, "marchid": C.MARCHID,
    "mimpid": C.MIMPID, "mhartid": C.MHARTID,
}


def _reg(name: str, regnum: int, kind: str = "int", group: str = "") -> str:
    grp = f' group="{group}"' if group else ""
    return f'<reg name="{name}" bitsize="64" type="{kind}" regnum="{regnum}"{grp}/>'


def target_xml() -> bytes:
    """The target description gdb reads (qXfer:features:read): RV64 with the integer
    registers and pc, the FP registers and their CSRs, the CSRs above, and ``priv``."""
    cpu = [_reg(n, i, "code_ptr" if n == "ra" else "data_ptr" if n in ("sp", "gp", "tp",
                                                                     "fp") else "int")
           for i, n in enumerate(X_NAMES)]
    cpu.append(_reg("pc", PC_REGNUM, "code_ptr"))
    fpu = [_reg(n, F0_REGNUM + i, "ieee_double") for i, n in enumerate(F_NAMES)]
    fpu += [_reg(n, CSR_BASE_REGNUM + num, "int", "float") for n, num in FP_CSRS.items()]
    csrs = [_reg(n, CSR_BASE_REGNUM + num, "int", "csr") for n, num in CSRS.items()]
    parts = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
        "<target><architecture>riscv:rv64</architecture>",
        '<feature name="org.gnu.gdb.riscv.cpu">', *cpu, "</feature>",
        '<feature name="org.gnu.gdb.riscv.fpu">', *fpu, "</feature>",
        '<feature name="org.gnu.gdb.riscv.csr">', *csrs, "</feature>",
        '<feature name="org.gnu.gdb.riscv.virtual">',
        _reg("priv", PRIV_REGNUM, "int", "general"), "</feature>",
        "</target>",
    ]
    return "\n".join(parts).encode()


_REGNUMS = {CSR_BASE_REGNUM + num for num in (*FP_CSRS.values(), *CSRS.values())}


# -- the server ------------------------------------------------------------------------------


def parse_gdb_address(text: str, option: str = "--gdb") -> tuple[str, int]:
    """``tcp:HOST:PORT``, ``tcp::PORT``, ``HOST:PORT``, ``:PORT`` or ``PORT`` (QEMU's
    forms) -> (host, port); an empty host is 127.0.0.1. Only loopback addresses are
    accepted: the stub gives full control of the guest to whoever connects."""
    rest = text[4:] if text.startswith("tcp:") else text
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = "", rest
    host = host.strip("[]") or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{option} {text}: give tcp:127.0.0.1:PORT (PORT a number)") \
            from None
    if not 0 < port < 65536:
        raise ConfigError(f"{option} {text}: port {port} is not in 1-65535")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(f"{option} {text}: '{host}' is not an IP address") from None
    if not loopback:
        raise ConfigError(f"{option} {text}: the gdb stub listens on loopback only "
                          "(127.0.0.1 or ::1); reach it from afar through an SSH tunnel")
    return host, port


class GdbServer:
    """The stub: listens on ``host:port`` from construction (a port in use is a
    ConfigError before anything starts), then :meth:`serve` runs the machine under
    gdb's control until it powers off or gdb kills it."""

    def __init__(self, host: str, port: int, option: str = "--gdb",
                 log: Any = None) -> None:
        self.log = log if log is not None else sys.stderr
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(2)
        except OSError as e:
            listener.close()
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"{option}: port {port} on {host} is already in use "
                                  "(another gdb stub or program listens there)") from None
            raise ConfigError(f"{option}: cannot listen on {host}:{port}: "
                              f"{e.strerror or e}") from None
        listener.setblocking(False)
        self.listener = listener
        self.host, self.port = host, listener.getsockname()[1]
        self.client: socket.socket | None = None
        self.reader = PacketReader()
        self.ack = True
        self.last_reply = b""
        self.points = Breakpoints()
        self.machine: Machine | None = None
        self.held = False  # the guest is stopped, gdb in control
        self.current = 0  # hart index of gdb's selected thread (Hg/Hc)
        self.stepping: int | None = None  # the hart of a single step
        self.resumed: set[int] | None = None  # the harts gdb lets run (None: all)
        self.stop: tuple[int, DebugStop] | None = None  # why the run just ended
        self._interrupted = False
        self._killed = False
        self._next_poll = 0.0
        self._was_checked = False  # the last run went through the checked stepper
        self._bp_interps: list[BreakpointInterpreter] = []
        self._tick: Callable[[], bool] | None = None  # run_with's: the VM process's
        self._tick_stopped = False
        self._announced = False

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        self._drop_client()
        self.listener.close()

    def serve(self, machine: Machine, wait: bool = False, timeout: float | None = None,
              max_instructions: int | None = None) -> RunResult:
        """Run ``machine`` under the stub: with ``wait``, hold it until gdb attaches
        (QEMU's -S); then run and serve gdb until the guest powers off, crashes, hits a
        limit, or gdb kills it. Returns the last run's result."""
        from .machine import RunResult

        self.machine = machine
        began = time.monotonic()
        if not self._announced:
            self._announced = True
            self._say(f"gdb stub listening on {self.host}:{self.port}"
                      + (" (waiting for gdb to attach)" if wait else ""))
        if wait:
            self.held = True
            while self.client is None:
                select.select([self.listener], [], [])
                self._accept()
        while True:
            if self.held:
                self._serve_held()
                if self._killed:
                    return RunResult("quit", 0, machine.instructions,
                                     time.monotonic() - began)
                continue
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - began))
            result = self._run(left, max_instructions)
            if result.reason in ("debug", "stopped"):
                continue  # held for gdb now (a stop, Ctrl-C, a new client), or run on
            if result.reason != "snapshot":  # (Ctrl-A s: saved, then run on, gdb stays)
                self._exited(result)
            return result

    def run_with(self, machine: Machine, tick: Callable[[], bool]) -> RunResult:
        """As :meth:`serve`, for the host daemon's VM process (host/worker.py): the
        process's ``tick`` (its channel, console and status page) is called while the
        guest runs and while gdb holds it, and a tick that asks to stop returns at
        once (reason "stopped") for the process to handle its request; it calls again
        to go on. gdb's ``kill`` returns "quit"."""
        from .machine import RunResult

        self.machine = machine
        began = time.monotonic()
        while True:
            if self.held:
                if self._serve_held(tick):
                    return RunResult("stopped", 0, machine.instructions,
                                     time.monotonic() - began)
                if self._killed:
                    self._killed = False
                    return RunResult("quit", 0, machine.instructions,
                                     time.monotonic() - began)
                continue
            self._tick, self._tick_stopped = tick, False
            try:
                result = self._run(None, None)
            finally:
                self._tick = None
            if result.reason == "stopped" and self._tick_stopped:
                return result
            if result.reason in ("debug", "stopped"):
                continue
            self._exited(result)
            return result

    # -- running -------------------------------------------------------------------------

    def _run(self, timeout: float | None, max_instructions: int | None) -> RunResult:
        machine = self.machine
        assert machine is not None
        checked = self.stepping is not None or bool(self.points) or self.resumed is not None
        if self._was_checked and not checked:
            for engine in machine.engines:
                engine.flush()  # its code ran while the stepper did
        self._was_checked = checked
        machine.debug = self if checked else None
        machine.watch_fds = [self.listener.fileno()] + \
            ([self.client.fileno()] if self.client is not None else [])
        self.stop = None
        machine.clock.rebase()  # the time gdb held the guest is not guest time
        lent = self._interpreters() if checked else []
        for interp in lent:
            interp.lend(True)
        try:
            result = machine.run(max_instructions=max_instructions, timeout=timeout,
                                 stop_when=self._poll)
        finally:
            machine.debug = None
            machine.watch_fds = []
            for interp in lent:
                interp.lend(False)
        if result.reason == "debug" and self.stop is not None:
            index, why = self.stop
            self.stepping = None
            self.current = index
            self.held = True
            self._send(self._stop_reply(index, why))
        elif result.reason == "stopped" and self._interrupted:
            self._interrupted = False
            self.stepping = None
            self.held = True
            self._send(b"T%02xthread:%x;" % (SIGINT, self.current + 1))
        return result

    def _interpreters(self) -> list[BreakpointInterpreter]:
        """The harts' breakpoint interpreters, made on first use and kept (their
        decode caches stay registered with the machine's code watch)."""
        machine = self.machine
        assert machine is not None
        if not self._bp_interps or self._bp_interps[0].points is not self.points:
            self._bp_interps = [BreakpointInterpreter(h, machine.board.code, self.points)
                                for h in machine.harts]
        return self._bp_interps

    def run_hart(self, hart: Hart, budget: int) -> int:
        """The machine's hook while gdb holds breakpoints or steps (Machine.debug)."""
        index = hart.hartid
        if self.resumed is not None and index not in self.resumed:
            return 0  # gdb keeps this one stopped
        single = self.stepping == index
        if not single and not self.points.watches and not hart.triggers.armed:
            interp = self._bp_interps[index]
            interp.stop = None
            n = interp.run(budget)
            why = interp.stop
        else:
            n, why = run_debug(hart, self.points, budget, single=single)
        if why is not None:
            self.stop = (index, why)
        return n

    def _poll(self) -> bool:
        """The run loop's stop_when: every POLL_SECONDS, look for Ctrl-C, a detach or
        a new client, without blocking (and ask the embedding process's tick)."""
        if self._tick is not None and self._tick():
            self._tick_stopped = True
            return True
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + POLL_SECONDS
        socks: list[socket.socket] = [self.listener]
        if self.client is not None:
            socks.append(self.client)
        ready, _, _ = select.select(socks, [], [], 0)
        if self.listener in ready:
            if self._accept():
                self.held = True  # a new gdb: stop the guest for it
                return True
        if self.client is not None and self.client in ready:
            for kind, _payload in self._receive():
                if kind == "interrupt":
                    self._interrupted = True
                elif kind == "packet":
                    self._ack()
                    # all-stop mode: gdb sends nothing else while the guest runs
                    self._send(b"")
            if self._interrupted:
                return True
        return False

    # -- held: gdb's commands ----------------------------------------------------------------

    def _serve_held(self, tick: Callable[[], bool] | None = None) -> bool:
        """Answer gdb's packets until one resumes the guest (or gdb leaves). With
        ``tick`` (the daemon's VM process), call it every HELD_TICK seconds meanwhile
        and return True as soon as it asks to stop (a request of the daemon)."""
        while self.held and not self._killed:
            if self.client is None:
                self.held = False
                return False
            ready, _, _ = select.select([self.client, self.listener], [], [],
                                        None if tick is None else HELD_TICK)
            if self.listener in ready:
                self._accept()
            if self.client is not None and self.client in ready:
                for kind, payload in self._receive():
                    self._event(kind, payload)
                    if not self.held or self._killed or self.client is None:
                        break
            if tick is not None and tick():
                return True
        return False

    def _event(self, kind: str, payload: bytes) -> None:
        if kind == "bad":
            if self.ack:
                self._raw(b"-")
            return
        if kind == "nak":
            if self.last_reply:
                self._raw(self.last_reply)
            return
        if kind == "interrupt":  # already stopped (its stop reply is on its way): ignored
            return
        if kind != "packet":
            return
        self._ack()
        reply: bytes | None
        try:
            reply = self._command(payload)
        except (ValueError, IndexError, KeyError):
            reply = b"E01"  # a malformed command: an error, never an exception
        if reply is not None:
            self._send(reply)

    def _command(self, p: bytes) -> bytes | None:  # noqa: C901 - the RSP's command table
        machine = self.machine
        assert machine is not None
        c = p[:1]
        if c == b"?":
            return self._stop_reply(self.current, DebugStop("break")) \
                if self.stop is None else self._stop_reply(*self.stop)
        if c == b"g":
            hart = self._hart()
            return b"".join(_hex64(v) for v in (*hart.x, hart.pc))
        if c == b"G":
            data = bytes.fromhex(p[1:].decode())
            hart = self._hart()
            values = [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]
            for i, v in enumerate(values[:33]):
                self._set_reg(hart, i, v)
            return b"OK"
        if c == b"p":
            value = self._get_reg(self._hart(), int(p[1:], 16))
            return b"E0e" if value is None else _hex64(value)
        if c == b"P":
            num, _, val = p[1:].partition(b"=")
            value = int.from_bytes(bytes.fromhex(val.decode()), "little")
            return b"OK" if self._set_reg(self._hart(), int(num, 16), value) else b"E0e"
        if c == b"m":
            addr, length = (int(x, 16) for x in p[1:].split(b","))
            got = self._read(addr, min(length, PACKET_SIZE // 2))
            return b"E14" if got is None else got.hex().encode()
        if c in (b"M", b"X"):
            head, _, body = p[1:].partition(b":")
            addr, length = (int(x, 16) for x in head.split(b","))
            data = bytes.fromhex(body.decode()) if c == b"M" else unescape(body)
            if len(data) != length:
                return b"E01"
            return b"OK" if self._write(addr, data) else b"E14"
        if c in (b"Z", b"z"):
            return self._breakpoint(c == b"Z", p[1:])
        if c == b"H":
            tid = int(p[2:], 16) if p[2:] not in (b"", b"-1") else 0
            if tid > len(machine.harts):
                return b"E01"
            if tid > 0:
                self.current = tid - 1
            return b"OK"
        if c == b"T":
            tid = int(p[1:], 16)
            return b"OK" if 0 < tid <= len(machine.harts) else b"E01"
        if c in (b"c", b"s", b"C", b"S"):
            args = p[1:].split(b";")
            if c in (b"C", b"S"):
                args = args[1:]  # the signal is not delivered: the guest has none
            if args and args[0]:
                self._hart().pc = int(args[0], 16)
            if c in (b"s", b"S"):
                self._resume(self.current, {self.current})  # the others stay stopped
            else:
                self._resume(None, None)
            return None
        if c == b"D":
            self._send(b"OK")
            self._detach()
            return None
        if c == b"k":
            self._killed = True
            self._drop_client()
            return None
        if p.startswith(b"vCont"):
            return self._vcont(p)
        if p.startswith(b"q") or p.startswith(b"Q"):
            return self._query(p)
        return b""  # not supported (vMustReplyEmpty, vKill...): the empty reply

    def _query(self, p: bytes) -> bytes | None:
        machine = self.machine
        assert machine is not None
        if p.startswith(b"qSupported"):
            return (b"PacketSize=%x;qXfer:features:read+;QStartNoAckMode+;"
                    b"vContSupported+" % PACKET_SIZE)
        if p == b"QStartNoAckMode":
            self._send(b"OK")  # acknowledged as usual, then no more acks
            self.ack = False
            return None
        if p.startswith(b"qXfer:features:read:"):
            annex, _, span = p[len(b"qXfer:features:read:"):].partition(b":")
            if annex != b"target.xml":
                return b"E00"
            off, length = (int(x, 16) for x in span.split(b","))
            xml = target_xml()
            chunk = xml[off:off + length]
            return (b"l" if off + length >= len(xml) else b"m") + escape(chunk)
        if p == b"qfThreadInfo":
            return b"m" + b",".join(b"%x" % (i + 1) for i in range(len(machine.harts)))
        if p == b"qsThreadInfo":
            return b"l"
        if p == b"qC":
            return b"QC%x" % (self.current + 1)
        if p.startswith(b"qAttached"):
            return b"1"
        if p.startswith(b"qThreadExtraInfo,"):
            i = int(p.split(b",")[1], 16) - 1
            if not 0 <= i < len(machine.harts):
                return b"E01"
            hart = machine.harts[i]
            state = "stopped" if hart.stopped else "wfi" if hart.waiting else "running"
            name = f"hart {hart.hartid} ({'USM'[min(hart.priv, 2)]}-mode, {state})"
            return name.encode().hex().encode()
        if p.startswith(b"qRcmd,"):
            return self._monitor(bytes.fromhex(p[6:].decode()).decode(errors="replace"))
        return b""

    def _vcont(self, p: bytes) -> bytes | None:
        if p == b"vCont?":
            return b"vCont;c;C;s;S"
        assert self.machine is not None
        count = len(self.machine.harts)
        actions = p[len(b"vCont"):].split(b";")[1:]
        if not actions:
            return b"E01"
        # each thread takes the leftmost action that names it (or names no thread);
        # threads no action names stay stopped
        plan: dict[int, bytes] = {}
        for action in actions:
            verb, _, tid = action.partition(b":")
            kind = verb[:1].lower()
            if kind not in (b"c", b"s"):
                return b"E01"
            if tid and tid != b"-1":
                target = int(tid, 16) - 1
                if not 0 <= target < count:
                    return b"E01"
                targets: Iterable[int] = (target,)
            else:
                targets = range(count)
            for t in targets:
                plan.setdefault(t, kind)
        steps = [t for t, kind in plan.items() if kind == b"s"]
        if len(steps) > 1:
            return b"E01"  # one stepping thread at a time (all-stop mode)
        self._resume(steps[0] if steps else None, set(plan) if len(plan) < count else None)
        return None

    def _resume(self, step: int | None, resumed: set[int] | None) -> None:
        self.stepping = step
        self.resumed = resumed
        if step is not None:
            self.current = step
        self.stop = None
        self.held = False

    def _detach(self) -> None:
        """gdb leaves (D, or its socket closed): its breakpoints go, the guest runs on."""
        self.points.execute.clear()
        self.points.watches.clear()
        self.stepping = None
        self.resumed = None
        self._drop_client()
        self.held = False

    # -- breakpoints -------------------------------------------------------------------------

    def _breakpoint(self, insert: bool, args: bytes) -> bytes:
        kind_text, addr_text, size_text = args.split(b";")[0].split(b",")
        kind, addr, size = int(kind_text), int(addr_text, 16), int(size_text, 16)
        points = self.points
        if kind in (0, 1):
            if insert:
                if kind == 0 and self._read(addr, 2) is None:
                    return b"E14"  # no memory there: gdb says it cannot insert it
                points.execute.add(addr)
            else:
                points.execute.discard(addr)
            return b"OK"
        if kind in (2, 3, 4):
            if size <= 0:
                return b"E01"
            entry = ((WRITE, READ, ACCESS)[kind - 2], addr, size)
            if insert:
                if entry not in points.watches:
                    points.watches.append(entry)
            elif entry in points.watches:
                points.watches.remove(entry)
            return b"OK"
        return b""

    def _stop_reply(self, index: int, why: DebugStop) -> bytes:
        extra = b"%s:%x;" % (why.kind.encode(), why.addr) if why.kind in (WRITE, READ, ACCESS) \
            else b""
        return b"T%02x%sthread:%x;" % (SIGTRAP, extra, index + 1)

    # -- registers and memory ----------------------------------------------------------------

    def _hart(self) -> Hart:
        assert self.machine is not None
        return self.machine.harts[self.current]

    def _get_reg(self, hart: Hart, num: int) -> int | None:
        if num < 0:
            return None
        if num < 32:
            return hart.x[num]
        if num == PC_REGNUM:
            return hart.pc
        if F0_REGNUM <= num < F0_REGNUM + 32:
            return hart.f[num - F0_REGNUM]
        if num == PRIV_REGNUM:
            return hart.priv
        if num in _REGNUMS:
            return hart.debug_csr_read(num - CSR_BASE_REGNUM)
        return None

    def _set_reg(self, hart: Hart, num: int, value: int) -> bool:
        value &= M64
        if num < 0:
            return False
        if num < 32:
            if num:
                hart.x[num] = value
            return True
        if num == PC_REGNUM:
            hart.pc = value
            return True
        if F0_REGNUM <= num < F0_REGNUM + 32:
            hart.f[num - F0_REGNUM] = value
            return True
        if num == PRIV_REGNUM:
            if value not in (C.PRV_U, C.PRV_S, C.PRV_M):
                return False
            hart.priv = value
            hart.mmu.update_mode()
            hart.context_changed = True
            return True
        if num in _REGNUMS:
            csr = num - CSR_BASE_REGNUM
            if csr in (C.FFLAGS, C.FRM, C.FCSR):
                if csr != C.FRM:
                    hart.fflags = value & 31
                if csr != C.FFLAGS:
                    hart.frm = (value >> 5 if csr == C.FCSR else value) & 7
                return True
            ok = hart.debug_csr_write(csr, value)
            hart.mmu.update_mode()
            hart.mmu.flush()
            return ok
        return False

    def _physical(self, va: int) -> int | None:
        return self._hart().mmu.debug_translate(va)

    def _read(self, addr: int, length: int) -> bytes | None:
        """``length`` bytes at the virtual address ``addr`` through the selected hart's
        current translation; None when any byte does not map to RAM or ROM."""
        out = bytearray()
        while length > 0:
            n = min(length, 0x1000 - (addr & 0xFFF))
            pa = self._physical(addr)
            if pa is None:
                return None
            data = self.read_physical(pa, n)
            if data is None:
                return None
            out += data
            addr = (addr + n) & M64
            length -= n
        return bytes(out)

    def read_physical(self, pa: int, length: int) -> bytes | None:
        """Guest-physical bytes from RAM or a ROM; None elsewhere (device registers
        are not read: a read can change them, as a UART's receive buffer)."""
        assert self.machine is not None
        board = self.machine.board
        if board.ram.contains(pa, length):
            return board.ram.read_bytes(pa, length)
        hit = board.bus.find(pa, length)
        if hit is not None and isinstance(hit[0], Rom):
            return bytes(hit[0].data[hit[1]:hit[1] + length])
        return None

    def _write(self, addr: int, data: bytes) -> bool:
        """Write RAM through the hart's translation; the code built from those bytes
        is dropped, so every engine runs what gdb wrote."""
        assert self.machine is not None
        board = self.machine.board
        pieces = []
        offset = 0
        while offset < len(data):
            n = min(len(data) - offset, 0x1000 - ((addr + offset) & 0xFFF))
            pa = self._physical((addr + offset) & M64)
            if pa is None or not board.ram.contains(pa, n):
                return False
            pieces.append((pa, data[offset:offset + n]))
            offset += n
        for pa, chunk in pieces:
            board.ram.write_bytes(pa, chunk)
            board.code.invalidate_range(pa, len(chunk))
        return True

    # -- monitor commands ------------------------------------------------------------------

    def _monitor(self, command: str) -> bytes:
        """``monitor ...`` in gdb: the text goes to gdb's console (O packets)."""
        words = command.split()
        if not words or words[0] == "help":
            text = ("pyhv monitor commands:\n"
                    "  info mtree            the guest-physical memory map\n"
                    "  info harts            each hart's pc, privilege and state\n"
                    "  xp ADDR [LEN]         guest-physical memory, hex (RAM and ROM)\n"
                    "  system_reset          reset the machine (as the syscon reboot)\n")
        elif words[:2] == ["info", "mtree"]:
            text = self._mtree()
        elif words[:2] == ["info", "harts"]:
            assert self.machine is not None
            text = "".join(f"hart {h.hartid}: pc {h.pc:#018x} priv {'USHM'[h.priv]}"
                           f"{' wfi' if h.waiting else ''}{' stopped' if h.stopped else ''}\n"
                           for h in self.machine.harts)
        elif words[0] == "xp" and len(words) in (2, 3):
            try:
                addr = int(words[1], 0)
                length = int(words[2], 0) if len(words) == 3 else 16
            except ValueError:
                return self._console("xp: give ADDR [LEN] as numbers (0x... for hex)\n")
            if not 0 < length <= 4096:
                return self._console("xp: LEN must be 1-4096\n")
            data = self.read_physical(addr, length)
            if data is None:
                return self._console(f"xp: {addr:#x}+{length:#x} is not RAM or ROM\n")
            text = "".join(f"{addr + i:#018x}: {data[i:i + 16].hex(' ')}\n"
                           for i in range(0, len(data), 16))
        elif words == ["system_reset"]:
            assert self.machine is not None
            self.machine.reset()
            self.stop = None
            text = "machine reset\n"
        else:
            text = f"unknown monitor command '{command}' (try 'monitor help')\n"
        return self._console(text)

    def _mtree(self) -> str:
        assert self.machine is not None
        board = self.machine.board
        rows = [(board.ram.base, board.ram.base + board.ram.size, "ram")]
        rows += [(b, e, getattr(d, "name", type(d).__name__)) for b, e, d in board.bus.windows]
        return "address-space: memory\n" + "".join(
            f"  {b:016x}-{e - 1:016x}: {name}\n" for b, e, name in sorted(rows))

    def _console(self, text: str) -> bytes:
        for i in range(0, len(text), 512):
            self._send(b"O" + text[i:i + 512].encode().hex().encode())
        return b"OK"

    # -- the connection --------------------------------------------------------------------

    def _accept(self) -> bool:
        """Take a waiting connection: the first gdb is served, a second one is told
        that another debugger is attached and closed."""
        try:
            conn, peer = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        if self.client is not None:
            self._refuse(conn)
            self._say(f"refused a second gdb client from {peer[0]}:{peer[1]}: "
                      "one is already attached")
            return False
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = conn
        self.reader = PacketReader()
        self.ack = True
        self.last_reply = b""
        self._say(f"gdb attached from {peer[0]}:{peer[1]}")
        return True

    @staticmethod
    def _refuse(conn: socket.socket) -> None:
        """Answer a second gdb's first packet with an error that says why, then close
        (gdb prints "Remote failure reply: E.pyhv: another gdb is already attached")."""
        try:
            conn.settimeout(REFUSE_SECONDS)
            reader = PacketReader()
            got: list[tuple[str, bytes]] = []
            while not any(kind == "packet" for kind, _ in got):
                data = conn.recv(4096)
                if not data:
                    break
                got += reader.feed(data)
            conn.sendall(b"+" + frame(REFUSAL))
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):  # until gdb closes its end (no reset on its reads)
                pass
        except OSError:
            pass
        finally:
            conn.close()

    def _receive(self) -> Iterator[tuple[str, bytes]]:
        assert self.client is not None
        try:
            data = self.client.recv(65536)
        except (BlockingIOError, InterruptedError):
            return iter(())
        except OSError:
            data = b""
        if not data:
            self._say("gdb detached (connection closed)")
            self._detach()
            return iter(())
        return iter(self.reader.feed(data))

    def _ack(self) -> None:
        if self.ack:
            self._raw(b"+")

    def _send(self, payload: bytes) -> None:
        self.last_reply = frame(payload)
        self._raw(self.last_reply)

    def _raw(self, data: bytes) -> None:
        if self.client is None:
            return
        try:
            self.client.sendall(data)
        except OSError:
            self._detach()

    def _drop_client(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            finally:
                self.client = None

    def _exited(self, result: RunResult) -> None:
        """Tell gdb the guest is gone: W with the power-off's exit code."""
        if self.client is not None:
            if result.reason == "crash" and self.machine is not None:
                self._console(f"pyhv: guest crashed: {self.machine.crash}\n")
            elif result.reason != "poweroff":
                self._console(f"pyhv: the machine stopped ({result.reason})\n")
            self._send(b"W%02x" % (result.exit_code & 0xFF))
            self._drop_client()

    def _say(self, text: str) -> None:
        print(f"pyhv: {text}", file=self.log, flush=True)


def _hex64(value: int) -> bytes:
    return (value & M64).to_bytes(8, "little").hex().encode()


__all__ = ["GdbServer", "PacketReader", "checksum", "escape", "frame", "parse_gdb_address",
           "target_xml", "unescape"]
