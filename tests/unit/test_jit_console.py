"""The console UART under the JIT: a guest's LSR polls and THR writes stay native.

Printing a byte costs a 16550 driver one LSR read and one THR write (OpenSBI, U-Boot,
Linux's console and earlycon all poll so); both went through Python once each, about
two exits per byte printed. The JIT now does them in native code while they have no
other effect (the UART's ``native_window``) and hands the bytes to the UART after the
run. Checked here against the interpreter: the same output and state, in M-mode (bare)
and in S-mode through Sv39, compiled and in the native interpreter; and the cases the
window must leave to Python (loopback, the divisor latch) behave as before.
"""

from __future__ import annotations

import pytest

from pyhv.cpu.engines import jit_unavailable_reason

pytestmark = pytest.mark.skipif(jit_unavailable_reason() is not None,
                                reason=f"jit unavailable: {jit_unavailable_reason()}")

from test_jit import WFI, addi, bne, i_type, run, tier  # noqa: E402
from test_jit_smc import CODE, ROOT, TIERS, _enter  # noqa: E402

import engine_world as W  # noqa: E402
from pyhv.devices.base import IrqLine  # noqa: E402
from pyhv.devices.uart16550 import Uart16550  # noqa: E402

H = W.H
UART = 0x1000_0000


def lb(rd, rs1, imm):
    return i_type(0x03, rd, 0, rs1, imm)


def lbu(rd, rs1, imm):
    return i_type(0x03, rd, 4, rs1, imm)


def sb(rs2, rs1, imm):
    return H.enc_s(0x23, 0, rs1, rs2, imm)


def andi(rd, rs1, imm):
    return i_type(0x13, rd, 7, rs1, imm)


def beq(rs1, rs2, off):
    return H.enc_b(0, rs1, rs2, off)


def uart_world(engine: str, threshold: int = 1):
    """A World with the 16550 at QEMU's address, driven by ``engine``."""
    from pyhv.cpu.jit import make_jit_engines

    w = W.World("interp")
    w.out = []
    w.uart = Uart16550(IrqLine(), w.out.append)
    w.uart_base = UART  # what the JIT's native window looks for on the board
    w.bus.attach(UART, 0x100, w.uart)
    if engine == "jit":
        w.engine = make_jit_engines(w, sync=True, **tier(threshold))[0]
    return w


def _pair(threshold, setup):
    worlds = (uart_world("interp"), uart_world("jit", threshold))
    for w in worlds:
        setup(w)
        run(w, 2_000_000)
        assert w.hart.waiting
    return worlds


def _identity_io(w, translated: bool) -> None:
    """Under Sv39, a gigapage mapping the device region (0..1 GiB) onto itself (R W)."""
    if translated:
        w.ram.write_bytes(ROOT, (0xC7).to_bytes(8, "little"))


def _printer(n: int) -> list[int]:
    """t0 = the UART; print n bytes from a1 on, polling LSR.THRE before each."""
    return [
        (0x10000 << 12) | (5 << 7) | 0x37,  # lui t0, 0x10000
        lbu(6, 5, 5),  # wait: t1 = LSR
        andi(6, 6, 0x20),
        beq(6, 0, -8),
        sb(11, 5, 0),  # THR = a1
        addi(11, 11, 1),
        addi(10, 10, -1),
        bne(10, 0, -24),
        WFI,
    ]


@TIERS
@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_printing_stays_native(threshold, translated):
    n = 2000

    def setup(w) -> None:
        w.put(CODE, _printer(n))
        w.hart.x[10], w.hart.x[11] = n, 0x20
        _identity_io(w, translated)
        _enter(w, translated, CODE)

    interp, jit = _pair(threshold, setup)
    expected = bytes((0x20 + i) & 0xFF for i in range(n))
    assert b"".join(interp.out) == b"".join(jit.out) == expected
    assert jit.state() == interp.state()
    assert jit.uart.save() == interp.uart.save()
    stats = jit.engine.stats()
    assert stats["native_console_bytes"] >= n - 4, stats
    assert stats["slow_exits"] < 20, stats  # was about 2 per byte


@TIERS
@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_loopback_and_divisor_latch_still_reach_the_uart(threshold, translated):
    """Loopback: a THR write comes back as input (read from RBR, sign-extended by lb);
    with DLAB set the THR offset is the divisor latch. Neither is printed."""
    prog = [
        (0x10000 << 12) | (5 << 7) | 0x37,  # lui t0, 0x10000
        addi(6, 0, 0x10), sb(6, 5, 4),  # MCR = loopback
        addi(7, 0, -0x56), sb(7, 5, 0),  # THR = 0xAA: back as input
        lb(8, 5, 0),  # s0 = RBR (0xAA, sign-extended)
        lb(9, 5, 5),  # s1 = LSR
        sb(0, 5, 4),  # MCR = 0
        addi(6, 0, 0x80), sb(6, 5, 3),  # LCR.DLAB
        addi(7, 0, 0x33), sb(7, 5, 0),  # DLL = 0x33
        lbu(18, 5, 0),  # s2 = DLL
        sb(0, 5, 3),  # LCR = 0
        addi(7, 0, 0x21), sb(7, 5, 0),  # "!" printed
        WFI,
    ]

    def setup(w) -> None:
        w.put(CODE, prog)
        _identity_io(w, translated)
        _enter(w, translated, CODE)

    interp, jit = _pair(threshold, setup)
    assert interp.hart.x[8] == (1 << 64) - 0x56 and interp.hart.x[18] == 0x33
    assert b"".join(interp.out) == b"".join(jit.out) == b"!"
    assert jit.state() == interp.state()
    assert jit.uart.save() == interp.uart.save()
