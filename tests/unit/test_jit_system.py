"""System instructions the JIT's native interpreter does itself (no trip to Python), each
against the interpreter: the trap handlers' plain CSRs (M and S scratch, epc, cause,
tval) in every CSR instruction form, mhartid and mstatus reads, the privilege check of
a CSR's number (an S-mode access to an M-mode CSR still traps), SFENCE.VMA under Sv39,
and FP loads and stores (flw/fld/fsw/fsd, NaN-boxing, FS made dirty)."""

from __future__ import annotations

import pytest

from pyhv.cpu.engines import jit_unavailable_reason

pytestmark = pytest.mark.skipif(jit_unavailable_reason() is not None,
                                reason=f"jit unavailable: {jit_unavailable_reason()}")

from test_jit import BASE, BASELINE_TIER, WFI, i_type, jit_world, li32, lui, run  # noqa: E402
from test_jit_smc import ROOT, _csrw, _lu32, s_mode_entry  # noqa: E402

import engine_world as W  # noqa: E402 - tests/conftest.py puts tests/ on sys.path

H = W.H
HANDLER = BASE + 0x800
DATA = BASE + 0x10000
S_CODE = BASE + 0x2000


def csr(f3: int, rd: int, num: int, rs1: int) -> int:
    return (num << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | 0x73


CSRRW, CSRRS, CSRRC, CSRRWI, CSRRSI, CSRRCI = 1, 2, 3, 5, 6, 7


def _exercise(scratch: int, epc: int, cause: int, tval: int) -> list[int]:
    """Every CSR form on the four plain CSRs of one mode (values from x5..x8)."""
    return [
        csr(CSRRW, 10, scratch, 5), csr(CSRRS, 11, scratch, 6), csr(CSRRC, 12, scratch, 7),
        csr(CSRRW, 0, epc, 8),  # bit 0 of an epc reads as 0
        csr(CSRRSI, 13, epc, 0x13), csr(CSRRCI, 14, epc, 0x3),
        csr(CSRRWI, 15, cause, 0x1F), csr(CSRRS, 16, cause, 0),
        csr(CSRRW, 17, tval, 8), csr(CSRRC, 18, tval, 5), csr(CSRRS, 19, tval, 0),
        csr(CSRRS, 20, scratch, 0), csr(CSRRS, 21, epc, 0),
    ]


def _program() -> tuple[list[int], list[int], list[int]]:
    m = li32(5, 0x12345678) + li32(6, 0x0F0F) + li32(7, 0x00FF) + li32(8, 0x7777)
    m += _exercise(0x340, 0x341, 0x342, 0x343)
    m += [csr(CSRRS, 22, 0xF14, 0), csr(CSRRS, 23, 0x300, 0)]  # mhartid, mstatus
    m += _lu32(30, HANDLER) + [_csrw(0x305, 30)]  # mtvec
    m += [lui(30, 2), csr(CSRRS, 0, 0x300, 30)]  # mstatus.FS = Initial (t5 = 1 << 13)
    # S-mode under Sv39 (the gigapage maps RAM to itself)
    m += s_mode_entry(S_CODE)
    s = li32(5, 0x5A5A) + li32(6, 0x0101) + li32(7, 0x1111) + li32(8, 0x2223)
    s += _exercise(0x140, 0x141, 0x142, 0x143)
    s += _lu32(9, DATA)
    s += [
        i_type(0x07, 1, 3, 9, 0),  # fld f1, 0(s1)
        i_type(0x07, 2, 2, 9, 8),  # flw f2, 8(s1): NaN-boxed
        H.enc_s(0x27, 3, 9, 1, 16),  # fsd f1, 16(s1)
        H.enc_s(0x27, 2, 9, 2, 24),  # fsw f2, 24(s1)
        0x12000073,  # sfence.vma (all)
        0x12048073,  # sfence.vma s1
        i_type(0x03, 24, 3, 9, 16),  # ld s8, 16(s1): after the fences, through the TLB
        csr(CSRRS, 25, 0x340, 0),  # S reads mscratch: illegal instruction -> M handler
        WFI,
    ]
    handler = [csr(CSRRS, 26, 0x342, 0), csr(CSRRS, 27, 0x341, 0), WFI]
    return m, s, handler


@pytest.mark.parametrize("threshold", [1, BASELINE_TIER, 10**9],
                         ids=["compiled", "baseline", "native-interp"])
def test_system_instructions_natively(threshold):
    m, s, handler = _program()
    pte = ((BASE >> 12) << 10) | 0xCF
    results = []
    for world in (W.World("interp"), jit_world(threshold=threshold)):
        world.ram.write_bytes(ROOT + 8 * (BASE >> 30), pte.to_bytes(8, "little"))
        world.ram.write_bytes(DATA, (0x400921FB54442D18).to_bytes(8, "little")
                              + (0x3F800000).to_bytes(4, "little"))
        world.put(BASE, m)
        world.put(S_CODE, s)
        world.put(HANDLER, handler)
        run(world, 10_000)
        assert world.hart.waiting
        h = world.hart
        results.append((world.state(), h.mscratch, h.sscratch, h.mtval, h.stval,
                        world.ram.read_bytes(DATA, 32)))
    interp, jit = results
    state = interp[0]
    assert state["x"][26] == 2 and state["x"][27] != 0  # the illegal mscratch read from S
    assert state["x"][21] == (0x2222 | 0x13) & ~0x3  # sepc: bit 0 dropped, then set/clear
    assert state["x"][24] == 0x400921FB54442D18  # fld/fsd round trip through the TLB
    assert jit == interp
    # Only the mode switches, the satp write and the trap left native code.
    assert world.engine.slow_exits < 16, world.engine.slow_exits


USER_VA = 0x4000_0000  # a user (U) gigapage onto RAM, next to the kernel's identity map


@pytest.mark.parametrize("threshold", [1, BASELINE_TIER, 10**9],
                         ids=["compiled", "baseline", "native-interp"])
def test_sum_toggles_natively(threshold):
    """S-mode code reaches a user page only with sstatus.SUM set: a loop sets SUM, loads
    and stores through the user mapping, clears SUM (the kernel's uaccess pattern,
    natively: each SUM value has its own soft TLB), then a load without SUM takes a page
    fault to M-mode; csrw sstatus restoring SIE/SPIE/SPP/SUM is native too."""
    m = _lu32(30, HANDLER) + [_csrw(0x305, 30)] + s_mode_entry(S_CODE)
    user = USER_VA + (DATA - BASE)
    s = li32(5, 1 << 18) + _lu32(9, user) + li32(6, 200) + [
        csr(CSRRS, 0, 0x100, 5),  # loop: csrs sstatus, SUM
        i_type(0x03, 7, 3, 9, 0),  # ld t2, 0(s1)
        i_type(0x13, 7, 0, 7, 3),  # addi t2, t2, 3
        H.enc_s(0x23, 3, 9, 7, 0),  # sd t2, 0(s1)
        csr(CSRRC, 0, 0x100, 5),  # csrc sstatus, SUM
        csr(CSRRS, 28, 0x100, 0),  # csrr t3, sstatus
        csr(CSRRW, 0, 0x100, 28),  # csrw sstatus, t3 (a trap return's restore)
        i_type(0x13, 6, 0, 6, -1),
        H.enc_b(1, 6, 0, -32),  # bnez t1, loop
        i_type(0x03, 8, 3, 9, 0),  # ld s0, 0(s1) without SUM: load page fault
        WFI,
    ]
    handler = [csr(CSRRS, 26, 0x342, 0), csr(CSRRS, 27, 0x343, 0), WFI]
    kernel = ((BASE >> 12) << 10) | 0xCF
    userpte = ((BASE >> 12) << 10) | 0xDF  # V R W X U A D
    results = []
    for world in (W.World("interp"), jit_world(threshold=threshold)):
        world.ram.write_bytes(ROOT + 8 * (BASE >> 30), kernel.to_bytes(8, "little"))
        world.ram.write_bytes(ROOT + 8 * (USER_VA >> 30), userpte.to_bytes(8, "little"))
        world.ram.write_bytes(DATA, (1000).to_bytes(8, "little"))
        world.put(BASE, m)
        world.put(S_CODE, s)
        world.put(HANDLER, handler)
        run(world, 100_000)
        assert world.hart.waiting
        results.append((world.state(), world.ram.read_bytes(DATA, 8)))
    interp, jit = results
    assert interp[0]["x"][26] == 13 and interp[0]["x"][27] == user  # load page fault
    assert int.from_bytes(interp[1], "little") == 1000 + 3 * 200
    assert jit == interp
    assert world.engine.slow_exits < 40, world.engine.slow_exits


@pytest.mark.parametrize("threshold", [1, BASELINE_TIER, 10**9],
                         ids=["compiled", "baseline", "native-interp"])
def test_sstatus_fs_changes_natively(threshold):
    """A kernel's trap entry clears SUM and FS (csrrc sstatus) and its return writes the
    saved sstatus back: natively, with the F registers' dirty state carried through FS;
    an FP instruction with FS off still raises the illegal instruction."""
    m = _lu32(30, HANDLER) + [_csrw(0x305, 30)]
    m += [lui(30, 2), csr(CSRRS, 0, 0x300, 30)]  # FS = Initial
    m += s_mode_entry(S_CODE)
    fadd = lambda rd, a, b: (0x01 << 25) | (b << 20) | (a << 15) | (7 << 12) | (rd << 7) | 0x53  # noqa: E731
    s = _lu32(9, DATA) + li32(6, 0x46000) + [
        i_type(0x07, 1, 3, 9, 0),  # fld f1, 0(s1)
        fadd(2, 1, 1),  # f2 = f1 + f1: FS dirty
        csr(CSRRC, 5, 0x100, 6),  # t0 = sstatus (FS dirty, SD); SUM and FS cleared
        csr(CSRRS, 28, 0x100, 0),  # t3 = sstatus: FS off
        csr(CSRRW, 0, 0x100, 5),  # the return's restore: FS dirty again
        fadd(3, 2, 1),  # f3 = f2 + f1
        H.enc_s(0x27, 3, 9, 3, 8),  # fsd f3, 8(s1)
        csr(CSRRS, 29, 0x100, 0),  # t4 = sstatus
        csr(CSRRC, 0, 0x100, 6),  # FS off
        fadd(4, 1, 1),  # illegal instruction -> M handler
        WFI,
    ]
    handler = [csr(CSRRS, 26, 0x342, 0), csr(CSRRS, 27, 0x300, 0), WFI]
    pte = ((BASE >> 12) << 10) | 0xCF
    results = []
    for world in (W.World("interp"), jit_world(threshold=threshold)):
        world.ram.write_bytes(ROOT + 8 * (BASE >> 30), pte.to_bytes(8, "little"))
        world.ram.write_bytes(DATA, (0x3FF8000000000000).to_bytes(8, "little"))  # 1.5
        world.put(BASE, m)
        world.put(S_CODE, s)
        world.put(HANDLER, handler)
        run(world, 10_000)
        assert world.hart.waiting
        results.append((world.state(), world.ram.read_bytes(DATA, 16)))
    interp, jit = results
    x = interp[0]["x"]
    assert x[5] >> 13 & 3 == 3 and x[28] >> 13 & 3 == 0 and x[29] >> 13 & 3 == 3
    assert x[26] == 2  # the FP instruction with FS off
    assert interp[1][8:] == (0x4012000000000000).to_bytes(8, "little")  # 4.5
    assert jit == interp
    assert world.engine.slow_exits < 16, world.engine.slow_exits


@pytest.mark.parametrize("threshold", [1, BASELINE_TIER, 10**9],
                         ids=["compiled", "baseline", "native-interp"])
def test_misa_and_machine_trap_stack_writes_natively(threshold):
    """In M-mode: misa read in every form (writes ignored), and mstatus writes that
    change only the trap stack's bits (SIE, SPIE, SPP, MPIE; a firmware's trap exit)
    done natively in a loop; one that changes MPP and one that changes MIE after it
    still reach Python. Each against the interpreter."""
    n = 50
    stack = (1 << 5) | (1 << 8) | (1 << 7)  # SPIE, SPP, MPIE
    loop = li32(8, n) + li32(9, stack) + [
        csr(CSRRS, 10, 0x301, 0),  # a0 = misa
        csr(CSRRW, 11, 0x301, 9),  # a1 = misa (the write is ignored)
        csr(CSRRSI, 12, 0x301, 3),
        csr(CSRRS, 13, 0x300, 9),  # set SPIE, SPP, MPIE
        csr(CSRRSI, 0, 0x300, 2),  # SIE
        csr(CSRRC, 14, 0x300, 9),  # and clear them
        csr(CSRRCI, 15, 0x300, 2),
        csr(CSRRW, 16, 0x300, 15),  # write back what was read
        i_type(0x13, 8, 0, 8, -1),
    ]
    loop.append(H.enc_b(1, 8, 0, -4 * (len(loop) - len(li32(8, n)) - len(li32(9, stack)))))
    tail = li32(9, 1 << 11) + [csr(CSRRS, 17, 0x300, 9)]  # MPP = S: Python
    # a supervisor software interrupt pending, enabled in mie, not delegated: setting
    # mstatus.MIE (Python) lets it in right after that instruction
    tail += _lu32(30, HANDLER) + [_csrw(0x305, 30), csr(CSRRSI, 0, 0x304, 2),
                                  csr(CSRRSI, 0, 0x344, 2)]
    tail += [csr(CSRRSI, 18, 0x300, 8), csr(CSRRS, 19, 0x300, 0), WFI]
    results = []
    for world in (W.World("interp"), jit_world(threshold=threshold)):
        world.put(BASE, loop + tail)
        world.put(HANDLER, [csr(CSRRS, 20, 0x300, 0), csr(CSRRCI, 0, 0x344, 2), WFI])
        run(world, 100_000)
        assert world.hart.waiting
        results.append(world.state())
    interp, jit = results
    from pyhv.isa import csr as C

    assert interp["x"][10] == interp["x"][11] == interp["x"][12] == C.MISA_RV64GC
    assert interp["mcause"] == (1 << 63) | 1 and interp["x"][19] == 0
    assert interp["mepc"] == BASE + 4 * (len(loop + tail) - 2)
    assert (interp["x"][20] >> 11) & 3 == 3 and interp["x"][20] & (1 << 7)  # MPP, MPIE
    assert jit == interp
    assert world.engine.slow_exits < 10, world.engine.slow_exits  # not 8 per round
