"""Device accesses from native code: done through the device callback, without an exit.

A guest's driver reads and writes device registers all the time (a virtio queue's
notify, its interrupt status and acknowledge, the PLIC's claim and complete); each used
to cost a trip out of native code with every register copied out and back. The native
interpreter now calls the device from where it is (``state.MMIOFN``) for devices that
allow it. Checked against the interpreter, untranslated (M-mode) and through Sv39 (S-mode):
the same registers, instret and device log; a store that raises an interrupt wire leaves
native code right after it (for Python to take the interrupt); a device that does not
allow it still goes through Python.
"""

from __future__ import annotations

import pytest

from pyhv.cpu.engines import jit_unavailable_reason
from pyhv.cpu.trap import MIP_MEIP
from pyhv.memory.device import Device

pytestmark = pytest.mark.skipif(jit_unavailable_reason() is not None,
                                reason=f"jit unavailable: {jit_unavailable_reason()}")

from test_jit import BASE, WFI, addi, bne, i_type, jit_world, run  # noqa: E402
from test_jit_smc import ROOT, TIERS, _lu32, s_mode_entry  # noqa: E402

import engine_world as W  # noqa: E402

DEV = 0x1000_0000  # the device's physical address (and virtual, through Sv39)
N = 200


class Counter(Device):
    """Offset 0: reads count up; 4: a write is logged; 8: a write raises the hart's
    external interrupt wire; 12: a write lowers it. Its Python does float arithmetic,
    whose host flags must not become the guest's fflags."""

    size = 0x1000

    def __init__(self, hart, native: bool) -> None:
        self.hart = hart
        self.native_access = native
        self.count = 0
        self.log: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.count += 1
        self.mean = self.count / 3  # (host float arithmetic: inexact, not the guest's)
        return self.count * 3 if offset == 0 else len(self.log)

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append((offset, size, value))
        if offset == 8:
            self.hart.set_mip_hw(MIP_MEIP, True)
        elif offset == 12:
            self.hart.set_mip_hw(MIP_MEIP, False)


def sw(rs2: int, rs1: int, imm: int) -> int:
    return W.H.enc_s(0x23, 2, rs1, rs2, imm)


def lw(rd: int, rs1: int, imm: int) -> int:
    return i_type(0x03, rd, 2, rs1, imm)


def _program(w, translated: bool, native: bool) -> Counter:
    dev = Counter(w.hart, native)
    w.bus.attach(DEV, dev.size, dev)
    # the loop: a load, a store of the counter; every 16th round a store that raises
    # the external interrupt wire (not enabled: when a device's interrupt is taken
    # differs between engines) and one that lowers it again
    loop = _lu32(19, DEV) + [addi(8, 0, N)]
    top = len(loop)
    loop += [
        lw(5, 19, 0), W.add(20, 20, 5),  # s4 += *dev
        sw(8, 19, 4),  # dev[1] = s0
        i_type(0x13, 6, 7, 8, 15),  # t1 = s0 & 15
        bne(6, 0, 12),
        sw(8, 19, 8),  # raise the wire
        sw(0, 19, 12),  # lower it
        addi(8, 8, -1),
    ]
    loop += [bne(8, 0, 4 * (top - len(loop))), WFI]
    if translated:
        # Sv39: RAM's gigapage onto itself, the device's gigapage (VA 0) onto itself
        w.ram.write_bytes(ROOT + 8 * 2, (((BASE >> 12) << 10) | 0xCF).to_bytes(8, "little"))
        w.ram.write_bytes(ROOT, ((0 << 10) | 0xC7).to_bytes(8, "little"))  # V R W A D
        w.put(BASE, s_mode_entry(BASE + 0x1000))
        w.put(BASE + 0x1000, loop)
    else:
        w.put(BASE, loop)
    w.hart.pc = BASE
    return dev


@TIERS
@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_device_accesses_natively_as_on_the_interpreter(threshold, translated):
    worlds = (W.World("interp"), jit_world(threshold=threshold))
    devs = []
    for w in worlds:
        devs.append(_program(w, translated, native=True))
        run(w, 400_000)
        assert w.hart.waiting
    interp, jit = worlds
    h = interp.hart
    assert h.x[20] == 3 * N * (N + 1) // 2 and h.mip_hw == 0
    assert jit.state() == interp.state()
    assert devs[1].log == devs[0].log and devs[1].count == devs[0].count == N
    assert len(devs[0].log) == N + 2 * (N // 16)
    stats = jit.engine.stats()
    assert stats["native_device_accesses"] >= 2 * N, stats
    assert stats["slow_exits"] < N // 4, stats
    # each raise leaves native code after the store (the wire came up), nothing else
    assert N // 16 <= jit.engine.irq_exits <= N // 16 + 2


def test_a_device_that_does_not_allow_it_stays_in_python():

    w = jit_world(threshold=10**9)
    dev = _program(w, translated=False, native=False)
    run(w, 400_000)
    assert dev.count == N and w.hart.x[20] == 3 * N * (N + 1) // 2
    stats = w.engine.stats()
    assert stats["native_device_accesses"] == 0
    assert stats["slow_exits"] >= 2 * N, stats


def _clint_world(jit: bool):
    """A one-hart world with a CLINT at QEMU's address, known to the engine as the
    board's (as ``VirtBoard.clint``), on a clock that stands still."""
    from test_jit import tier

    from pyhv.clock import FakeClock
    from pyhv.cpu.jit import make_jit_engines
    from pyhv.devices.clint import Clint

    w = W.World("interp")
    w.clint = Clint(1, FakeClock(), lambda _h, bit, level: w.hart.set_mip_hw(bit, level))
    w.bus.attach(CLINT, w.clint.size, w.clint)
    if jit:
        w.engine = make_jit_engines(w, sync=True, **tier(10**9))[0]
    return w


CLINT = 0x0200_0000


def sd(rs2: int, rs1: int, imm: int) -> int:
    return W.H.enc_s(0x23, 3, rs1, rs2, imm)


def test_clint_registers_natively_as_on_the_interpreter():
    """OpenSBI's timer and IPI paths: mtimecmp writes and reads and the msip of the hart
    itself, from native code, as the interpreter does them; an mtime write still goes
    through Python (the engine's native time reads follow it)."""
    worlds = (_clint_world(jit=False), _clint_world(jit=True))
    for w in worlds:
        loop = _lu32(19, CLINT) + _lu32(20, CLINT + 0x4000) + _lu32(21, CLINT + 0xBFF8)
        loop += [addi(8, 0, N)]
        top = len(loop)
        loop += [
            i_type(0x13, 5, 4, 8, -1),  # t0 = ~s0: a deadline far away (MTIP stays low)
            sd(5, 20, 0),  # mtimecmp = t0
            i_type(0x03, 6, 3, 20, 0), W.add(22, 22, 6),  # s6 += mtimecmp
            sw(0, 19, 0),  # msip = 0
            lw(7, 19, 0), W.add(23, 23, 7),  # s7 += msip
            i_type(0x13, 6, 7, 8, 15),  # t1 = s0 & 15
            bne(6, 0, 8),
            sd(8, 21, 0),  # mtime = s0 (every 16th round)
            addi(8, 8, -1),
        ]
        loop += [bne(8, 0, 4 * (top - len(loop))), WFI]
        w.put(BASE, loop)
        w.hart.pc = BASE
        run(w, 400_000)
        assert w.hart.waiting
    interp, jit = worlds
    assert interp.hart.x[22] == sum((~s) & (1 << 64) - 1 for s in range(1, N + 1)) % (1 << 64)
    assert jit.state() == interp.state()
    assert jit.clint.mtimecmp == interp.clint.mtimecmp and jit.clint.mtime_writes == N // 16
    assert jit.hart.mip_hw == interp.hart.mip_hw == 0
    stats = jit.engine.stats()
    assert stats["native_device_accesses"] >= 4 * N, stats
    # the mtime writes, and little else, left native code
    assert N // 16 <= stats["slow_exits"] < N // 16 + N // 8, stats


def _clock_world(threshold: int | None = None):
    """A one-hart world with a CLINT whose mtime and the time CSR read the board's one
    sequence of the clock (``VirtBoard._next_time``: a tick past the last read while
    near mtime; the time CSR's reads counted, ``_read_time``), its mtime register where
    the board says (``mtime_pa``)."""
    import ctypes

    from test_jit import tier

    from pyhv.clock import FakeClock, next_time_read
    from pyhv.cpu.jit import make_jit_engines
    from pyhv.devices.clint import MTIME, Clint

    w = W.World("interp")
    w.clock = FakeClock()  # (it stands still: mtime is 0, reads step a tick each)
    w.clock.time_reads = 0
    w.clint = Clint(1, w.clock, lambda _h, bit, level: w.hart.set_mip_hw(bit, level))
    w.bus.attach(CLINT, w.clint.size, w.clint)
    w.time_last = ctypes.c_uint64(0)
    w.mtime_pa = CLINT + MTIME

    def next_time() -> int:
        w.time_last.value = next_time_read(w.time_last.value, w.clint.mtime())
        return w.time_last.value

    def read_time() -> int:
        w.clock.time_reads += 1
        return next_time()

    w.clint.read_mtime, w.hart.read_mtime = next_time, read_time
    w.python_reads = 0  # CLINT registers read through its Python
    python_read = w.clint.read

    def counted(offset: int, size: int) -> int:
        w.python_reads += 1
        return python_read(offset, size)

    w.clint.read = counted
    if threshold is not None:
        w.engine = make_jit_engines(w, sync=True, **tier(threshold))[0]
    return w


@TIERS
def test_mtime_reads_natively_as_on_the_interpreter(threshold):
    """A program timing itself through the CLINT's mtime register (a bare-metal
    ``clock()``): loads of the whole register and of either half read the clock's one
    sequence natively, as the time CSR does, with no trip to Python per read (each
    was one, ~2 us: such a program took 22x QEMU's time): the same values and the same
    count of time CSR reads (which tells guest time that the guest polls) as the
    interpreter."""
    worlds = (_clock_world(), _clock_world(threshold))
    for w in worlds:
        loop = _lu32(21, CLINT + 0xBFF8) + [addi(8, 0, N)]
        top = len(loop)
        loop += [
            i_type(0x03, 5, 3, 21, 0), W.add(22, 22, 5),  # s6 += mtime (ld)
            lw(6, 21, 0), W.add(23, 23, 6),  # s7 += its low half (lw: sign-extended)
            i_type(0x03, 7, 6, 21, 4), W.add(24, 24, 7),  # s8 += its high half (lwu)
            0xC0102973,  # rdtime s2: the same sequence
            W.add(25, 25, 18),
            addi(8, 8, -1),
        ]
        loop += [bne(8, 0, 4 * (top - len(loop))), WFI]
        w.put(BASE, loop)
        w.hart.pc = BASE
        run(w, 400_000)
        assert w.hart.waiting
    interp, jit = worlds
    assert interp.clock.time_reads == N  # (the board counts the time CSR's reads)
    assert interp.time_last.value == 4 * N  # (within TIME_READ_SLACK of mtime)
    assert interp.hart.x[22] == sum(4 * i + 1 for i in range(N))
    assert interp.hart.x[24] == 0 and interp.hart.x[25] == sum(4 * i + 4 for i in range(N))
    assert jit.state() == interp.state()
    assert jit.clock.time_reads == interp.clock.time_reads
    assert jit.time_last.value == interp.time_last.value
    assert interp.python_reads == 3 * N
    assert jit.python_reads == 0
    stats = jit.engine.stats()
    assert stats["native_device_accesses"] >= 3 * N, stats
    assert stats["slow_exits"] < N // 8, stats
    if threshold == 1:
        # The loop's block was compiled before any read: its loads left it for the
        # clock (the native interpreter read it), the dispatcher noted where, and the
        # block was compiled again to read it itself at those three loads
        top = len(_lu32(21, CLINT + 0xBFF8)) + 1
        loads = {BASE + 4 * (top + k) for k in (0, 2, 4)}
        assert loads <= jit.engine.machine.clock_loads, jit.engine.machine.clock_loads
