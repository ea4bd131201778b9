"""The block translator (pyhv.cpu.translate) against the interpreter, its reference.

* Differential: random RV64GC programs from the conformance generator
  (tests/conformance/conftest.py), turned into loops (so blocks get hot, compiled and
  become ``while`` loops) and often given a load that faults in a chosen iteration, run
  on the Interpreter and on the Translator from identical state, in M-mode (inline RAM
  accesses) and in S-mode through Sv39 (inline TLB lookups), with several translator
  configurations; every x and f register, fflags, frm, the data window, pc, instret and
  the trap CSRs must agree, also when the translator runs in slices of random sizes.
* Targeted: precise traps in the middle of a block and of a loop iteration, exact
  counters mid-block and in loops, the register result of a closure that ends a block,
  FP and AMO traps inside blocks, self-modifying code (seen at once, even by the block
  doing the store) and FENCE.I, SFENCE.VMA and satp changes, MPRV, blocks that end at a
  page boundary, an instruction straddling two pages, a device stop request in the
  middle of a block, a trap storm, hotness, and flushes.
* The bare-metal guest programs (guests/tests) and the benchmark pass on a Machine
  whose engines are Translators.
"""

from __future__ import annotations

import importlib.util
import random
import re
import struct
from pathlib import Path

import pytest

from pyhv import BufferConsole, Machine, MachineConfig
from pyhv.cpu.mmu import PTE_V
from pyhv.cpu.run_loop import GuestCrash, StopRequest
from pyhv.cpu.translate import Translator
from pyhv.devices.base import Device
from pyhv.isa import csr as C
from pyhv.memory.ram import GuestRAM

ROOT = Path(__file__).resolve().parents[2]


import engine_world as W  # noqa: E402 - tests/conftest.py puts tests/ on sys.path

H = W.H  # the conformance program generator (tests/conformance/conftest.py)
BASE, RWX, NOP, J_SELF = W.BASE, W.RWX, W.NOP, W.J_SELF
World = W.World
addi, add, ld, sd, bne = W.addi, W.add, W.ld, W.sd, W.bne


# -- encodings used by the targeted tests (addi, add, ld, sd, bne: above) ----------------------


def sw(rs2: int, rs1: int, imm: int) -> int:
    return H.enc_s(0x23, 2, rs1, rs2, imm)


def jal(rd: int, off: int) -> int:
    return H.enc_j(rd, off)


def jalr(rd: int, rs1: int, imm: int) -> int:
    return H.enc_i(0x67, rd, 0, rs1, imm)


def csrrs(rd: int, csr: int, rs1: int) -> int:
    return H.enc_i(0x73, rd, 2, rs1, csr)


def csrrw(rd: int, csr: int, rs1: int) -> int:
    return H.enc_i(0x73, rd, 1, rs1, csr)


FENCE_I = 0x0000100F
ECALL = 0x00000073
SFENCE_VMA = 0x12000073


# -- machines (World: tests/engine_world.py) ---------------------------------------------------


def both(setup, budget: int, slices: list[int] | None = None, **kw) -> tuple[World, World]:
    """Run the same setup on the interpreter and on the translator; compare the states.

    With ``slices``, the translator runs in those slices (the setup must end parked).
    """
    a, b = World("interp"), World("translate", **kw)
    setup(a)
    setup(b)
    a.engine.run(budget)
    if slices is None:
        b.engine.run(budget)
    else:
        for s in slices:
            b.engine.run(s)
    sa, sb = a.state(), b.state()
    if slices is not None:  # the translator may overshoot a slice by part of a block
        del sa["instret"], sb["instret"]
    assert sb == sa, "\n".join(
        f"{k}: interp={sa[k]!r} translate={sb[k]!r}" for k in sa if sa[k] != sb[k]
    )
    assert a.ram.read_bytes(BASE, 1 << 20) == b.ram.read_bytes(BASE, 1 << 20)
    return a, b


# -- differential: random programs -----------------------------------------------------------


_looped, _run_program, _listing = W.looped, W.run_program, W.listing

CONFIGS = {
    "hot-at-once": {"threshold": 1},
    "hot-later": {"threshold": 30},
    "basic-blocks": {"threshold": 1, "superblocks": False},
    "short-blocks": {"threshold": 1, "max_block": 5},
    "paged": {"threshold": 1, "paged": True},
    "paged-later": {"threshold": 30, "paged": True},
}


@pytest.mark.parametrize("category", ["int", "muldiv", "mem", "rvc", "fp", "all"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_random_programs_match_interpreter(category: str, config: str) -> None:
    kw = dict(CONFIGS[config])
    paged = kw.pop("paged", False)
    rng = random.Random(f"{category}-{config}")
    compared = 0
    for n in range(60):
        prog = H.generate(rng, category)
        looped = _looped(prog, rng, with_trap=n % 3 == 0)
        if looped is None:
            continue
        code, counter, iterations = looped
        budget = (prog.n_insns() + 10) * (iterations + 1) + 50
        for sliced in (False, True):
            ref = _run_program("interp", code, prog, counter, iterations, budget, None, paged)
            if sliced:
                del ref["instret"]
            got = _run_program("translate", code, prog, counter, iterations, budget,
                               random.Random(n) if sliced else None, paged, **kw)
            if got != ref:
                diffs = [f"{k}: interp={ref[k]!r} translate={got[k]!r}" for k in ref
                         if ref[k] != got[k] and k != "data"]
                if ref["data"] != got["data"]:
                    diffs.append("data window differs")
                pytest.fail(f"program {n} (counter x{counter}, {iterations} iterations, "
                            f"sliced {sliced}):\n" + "\n".join(diffs) + "\n" + _listing(code))
        compared += 1
    assert compared > 20


# -- targeted ---------------------------------------------------------------------------------


def test_trap_in_the_middle_of_a_block_is_precise() -> None:
    # addi a0, zero, 7 ; addi a2, a2, 1 ; ld a1, 0(zero) -> access fault ; addi a0, zero, 9
    def setup(w: World) -> None:
        w.put(BASE, [addi(10, 0, 7), addi(12, 12, 1), ld(11, 0, 0), addi(10, 0, 9), J_SELF])
        w.put(BASE + 0x100, [J_SELF])
        w.hart.mtvec = BASE + 0x100

    _, t = both(setup, 3, threshold=1)
    h = t.hart
    assert (h.x[10], h.x[12], h.instret) == (7, 1, 2)
    assert (h.mcause, h.mepc, h.mtval, h.pc) == (5, BASE + 8, 0, BASE + 0x100)
    assert t.engine.compiled >= 1


def test_trap_in_a_later_loop_iteration_is_precise() -> None:
    # loop: ld a1, 0(a0) ; add a2, a2, a1 ; addi a0, a0, 8 ; addi a3, a3, -1 ; bnez a3, loop
    # a0 walks off the end of RAM in the fourth iteration.
    ram_end = BASE + (4 << 20)

    def setup(w: World) -> None:
        w.put(BASE, [ld(11, 10, 0), add(12, 12, 11), addi(10, 10, 8), addi(13, 13, -1),
                     bne(13, 0, -16), J_SELF])
        w.put(BASE + 0x100, [J_SELF])
        w.ram.write_bytes(ram_end - 24, struct.pack("<3Q", 1, 20, 300))
        w.hart.mtvec = BASE + 0x100
        w.hart.x[10] = ram_end - 24
        w.hart.x[13] = 100

    _, t = both(setup, 16, threshold=1)  # 15 retire, the 16th traps
    h = t.hart
    assert (h.x[12], h.x[10], h.x[13], h.instret) == (321, ram_end, 97, 15)
    assert (h.mcause, h.mepc, h.mtval) == (5, BASE, ram_end)
    for slices in ([3] * 20, [7, 1, 1, 30], [16, 16]):
        both(setup, 40, slices=slices, threshold=1)
        both(setup, 40, slices=slices, threshold=2)


def test_counters_are_exact_mid_block_and_in_loops() -> None:
    # nop x5 ; csrr a0, instret ; nop ; csrr a1, instret
    def straight(w: World) -> None:
        w.put(BASE, [NOP] * 5 + [csrrs(10, C.INSTRET, 0), NOP, csrrs(11, C.INSTRET, 0),
                                 J_SELF])

    _, t = both(straight, 8, threshold=1)
    assert (t.hart.x[10], t.hart.x[11], t.hart.instret) == (5, 7, 8)

    # loop: csrr t0, minstret ; sd t0, 0(a0) ; addi a0, a0, 8 ; addi a3, a3, -1 ; bnez a3
    def loop(w: World) -> None:
        w.put(BASE, [csrrs(5, C.MINSTRET, 0), sd(5, 10, 0), addi(10, 10, 8), addi(13, 13, -1),
                     bne(13, 0, -16), csrrw(0, C.MINSTRET, 0), NOP, csrrs(14, C.INSTRET, 0),
                     J_SELF])
        w.hart.x[10] = BASE + 0x10000
        w.hart.x[13] = 20
        w.hart.instret = 1000

    _, t = both(loop, 200, threshold=2)
    assert t.ram.read(BASE + 0x10000 + 8 * 19, 8) == 1000 + 19 * 5
    assert t.hart.x[14] == 2  # the csrw itself and the nop retired since
    both(loop, 200, slices=[5] * 40, threshold=1)


def test_closure_that_ends_a_block_keeps_its_register_result() -> None:
    # addi a0, zero, 5 ; addi a0, a0, 1 ; csrrw a0, mstatus, a1 (SliceBreak after a0 = old)
    def setup(w: World) -> None:
        w.put(BASE, [addi(10, 0, 5), addi(10, 10, 1), csrrw(10, C.MSTATUS, 11), addi(12, 10, 0),
                     J_SELF])
        w.hart.x[11] = C.MSTATUS_MIE
        w.hart.mstatus = C.MSTATUS_MPIE | C.MSTATUS_UXL | C.MSTATUS_SXL

    _, t = both(setup, 10, threshold=1)
    assert t.hart.x[10] == t.hart.x[12] == C.MSTATUS_MPIE | C.MSTATUS_UXL | C.MSTATUS_SXL
    assert t.hart.mstatus & C.MSTATUS_MIE


def test_fp_and_amo_traps_inside_compiled_blocks() -> None:
    fadd_d = H.enc_r(0x53, 1, 7, 2, 3, 0x01)  # fadd.d f1, f2, f3
    amoadd_w = H.enc_r(0x2F, 11, 2, 13, 12, 0)  # amoadd.w a1, a2, (a3)

    def setup(w: World, insn: int, fs: int, a3: int) -> None:
        w.put(BASE, [addi(10, 10, 1), addi(10, 10, 1), insn, addi(10, 10, 1), J_SELF])
        w.put(BASE + 0x100, [J_SELF])
        w.hart.mtvec = BASE + 0x100
        w.hart.mstatus |= fs
        w.hart.x[13] = a3
        w.hart.x[11] = 77

    for insn, fs, a3, cause in ((fadd_d, 0, 0, 2), (amoadd_w, 0, BASE + 0x2001, 6),
                                (amoadd_w, 0, BASE + 0x2000, None),
                                (fadd_d, C.MSTATUS_FS, 0, None)):
        _, t = both(lambda w, i=insn, f=fs, a=a3: setup(w, i, f, a), 10, threshold=1)
        if cause is not None:
            assert (t.hart.mcause, t.hart.mepc, t.hart.x[10], t.hart.x[11]) == (
                cause, BASE + 8, 2, 77)
        else:
            assert t.hart.x[10] == 3


def _dbits(v: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", v))[0]


_FP_EDGES = [0.0, -0.0, 1.0, -1.5, 3.0, 0.1, 1e-300, -1e-310, 5e-324, 2.2250738585072014e-308,
             1e300, -1.7976931348623157e308, float("inf"), float("-inf"), 4.0, 2.0**-1022]
_FP_NANS = [0x7FF8000000000000, 0x7FF0000000000001, 0xFFF4000000000000]


def test_inline_double_precision_matches_the_interpreter() -> None:
    """The translator runs fadd/fsub/fmul/fdiv/fsqrt/fmadd & co., compares, sign
    injection, moves and int->double conversions inline (host floats, with shortcuts once
    NX is set); the result, fflags and the trap behaviour must be the interpreter's, for
    edge values (zeros, subnormals, overflow, division by zero, sqrt of negatives, NaNs),
    with FS dirty or not, fflags empty or not, and frm RNE or not."""
    fp = H.fp_insn
    body = [
        fp("fadd.d", 3, 1, 2, rm=7), fp("fmul.d", 4, 3, 1, rm=7), fp("fdiv.d", 5, 4, 2, rm=7),
        fp("fsqrt.d", 6, 5, rm=7), fp("fmadd.d", 7, 1, 2, 3, rm=7),
        fp("fnmsub.d", 8, 4, 5, 6, rm=0), fp("fmsub.d", 9, 2, 2, 1, rm=7),
        fp("fnmadd.d", 10, 3, 4, 2, rm=7), fp("fle.d", 10, 1, 2), fp("flt.d", 11, 2, 1),
        fp("feq.d", 12, 3, 3), fp("fsub.d", 11, 4, 3, rm=7), fp("fsgnjn.d", 12, 1, 2),
        fp("fsgnjx.d", 13, 4, 3), fp("fsgnj.d", 14, 5, 5), fp("fmv.x.d", 14, 6),
        fp("fmv.d.x", 15, 12), fp("fcvt.d.w", 16, 9, rm=7), fp("fcvt.d.wu", 17, 14, rm=0),
        fp("fdiv.d", 18, 2, 1, rm=1), fp("fmul.d", 19, 1, 1, rm=7),
        fp("fsqrt.d", 20, 2, rm=7), fp("fsub.d", 21, 2, 2, rm=7),
    ]
    rng = random.Random(5)
    values = [_dbits(v) for v in _FP_EDGES] + _FP_NANS
    dirty = C.MSTATUS_FS | C.MSTATUS_SD
    # Every edge value against a random one with the inline paths enabled (NX set and
    # not), then random mixes of everything.
    cases = [(v, rng.choice(values), nx, 0, dirty) for v in values for nx in (1, 0)]
    cases += [(rng.choice(values), v, 1, 0, dirty) for v in values]
    for _ in range(40):
        cases.append((
            rng.choice(values + [_dbits(rng.uniform(-10, 10))]),
            rng.choice(values + [_dbits(rng.uniform(-10, 10))]),
            rng.choice([0, 1, 1, 0x1F, 0x10]), rng.choice([0, 0, 0, 1, 5]),
            rng.choice([dirty, dirty, C.MSTATUS_FS, 1 << 13, 0]),
        ))
    for f1, f2, fflags, frm, fs in cases:

        def setup(w: World, f1=f1, f2=f2, fflags=fflags, frm=frm, fs=fs) -> None:
            # loop: <body> ; addi a3, a3, -1 ; bnez a3, loop ; j .
            words = [ins.word for ins in body]
            w.put(BASE, words + [addi(13, 13, -1), bne(13, 0, -4 * len(words) - 4), J_SELF])
            w.put(BASE + 0x400, [J_SELF])
            w.hart.mtvec = BASE + 0x400
            h = w.hart
            h.f[1], h.f[2] = f1, f2
            h.x[9], h.x[12], h.x[13] = f2 ^ 0x80000000, f2, 3
            h.fflags, h.frm = fflags, frm
            h.mstatus = (h.mstatus & ~(C.MSTATUS_FS | C.MSTATUS_SD)) | fs

        for threshold in (1, 2):
            both(setup, 3 * (len(body) + 2) + 5, threshold=threshold)


def test_inline_fused_multiply_add_near_ties() -> None:
    """The inline fmadd/fnmsub (NX already set: value only) on thousands of operand
    triples built to land on or next to rounding ties and cancellations, which it must
    recognise and hand to softfloat; every result must be the interpreter's."""
    import math

    rng = random.Random(11)
    table = BASE + 0x10000
    triples = []
    for _ in range(2500):
        a = math.ldexp(rng.randrange(1 << 26, 1 << 27) | 1, rng.randint(-30, 30))
        b = math.ldexp(rng.randrange(1 << 26, 1 << 27) | 1, rng.randint(-30, 30))
        if rng.random() < 0.3:
            a, b = rng.uniform(-4, 4), rng.uniform(-4, 4)
        p = a * b
        c = rng.choice([0.0, -p, math.ulp(p) * rng.choice([0.5, -0.5, 0.25, 1.5]),
                        -p + math.ulp(p) * rng.randint(-4, 4), rng.uniform(-abs(p), abs(p)),
                        2.0 ** rng.randint(-60, 60)])
        triples.append((a, b, c))
    fp = H.fp_insn
    fld = lambda rd, off: H.enc_i(0x07, rd, 3, 10, off)  # noqa: E731
    fsd = lambda rs, off: H.enc_s(0x27, 3, 10, rs, off)  # noqa: E731
    body = [fld(1, 0), fld(2, 8), fld(3, 16), fp("fmadd.d", 4, 1, 2, 3, rm=7).word,
            fp("fnmsub.d", 5, 1, 2, 3, rm=0).word, fsd(4, 24), fsd(5, 32),
            addi(10, 10, 40), addi(13, 13, -1)]
    words = body + [bne(13, 0, -4 * len(body)), J_SELF]

    def setup(w: World) -> None:
        w.put(BASE, words)
        w.ram.write_bytes(table, b"".join(struct.pack("<3d16x", *t) for t in triples))
        w.hart.x[10], w.hart.x[13] = table, len(triples)
        w.hart.fflags, w.hart.frm = 1, 0
        w.hart.mstatus |= C.MSTATUS_FS | C.MSTATUS_SD

    both(setup, len(triples) * (len(body) + 1) + 10, threshold=1)


def test_self_modifying_code_is_seen_at_once() -> None:
    # 0: addi a0, zero, 1 ; 4: sw a1, 0(a2) ; 8: addi a3, a3, -1 ; 12: bnez a3, 0 ; 16: j .
    # The store rewrites insn 0 of the executing block (a loop): the translator leaves
    # the block right after the store, as the interpreter fetches anew.
    def setup(w: World) -> None:
        w.put(BASE, [addi(10, 0, 1), sw(11, 12, 0), addi(13, 13, -1), bne(13, 0, -12), J_SELF])
        w.hart.x[12] = BASE
        w.hart.x[11] = addi(10, 0, 2)
        w.hart.x[13] = 3

    for threshold in (1, 2):
        _, t = both(setup, 100, threshold=threshold)
        assert t.hart.x[10] == 2
        both(setup, 100, slices=[1, 2, 3, 4, 100], threshold=threshold)
    t = World("translate", threshold=1)
    setup(t)
    assert t.engine.run(2) == 2  # the block stopped after the store
    assert (t.hart.pc, t.hart.x[10]) == (BASE + 8, 1)

    # A hot function is patched by its caller (in another block) between two calls:
    # main: jalr ra, 0(s1) ; sw a1, 0(s1) ; jalr ra, 0(s1) ; j .    f: addi a0, a0, 1 ; ret
    def calls(w: World) -> None:
        w.put(BASE, [addi(13, 0, 10), jalr(1, 9, 0), addi(13, 13, -1), bne(13, 0, -8),
                     sw(11, 9, 0), jalr(1, 9, 0), J_SELF])
        w.put(BASE + 0x800, [addi(10, 10, 1), jalr(0, 1, 0)])
        w.hart.x[9] = BASE + 0x800
        w.hart.x[11] = addi(10, 10, 100)

    _, t = both(calls, 200, threshold=2)
    assert t.hart.x[10] == 110
    assert t.engine.compiled >= 2


def test_fence_i_and_stores_into_the_same_path() -> None:
    # 0: sw a1, 12(a2) ; 4: fence.i (or nop) ; 8: nop ; 12: addi a0, zero, 1 (patched: 2)
    def setup(w: World, fence: int) -> None:
        w.put(BASE, [sw(11, 12, 12), fence, NOP, addi(10, 0, 1), J_SELF])
        w.hart.x[12] = BASE
        w.hart.x[11] = addi(10, 0, 2)

    for fence in (FENCE_I, NOP):
        for threshold in (1, 2):
            _, t = both(lambda w, f=fence: setup(w, f), 10, threshold=threshold)
            assert t.hart.x[10] == 2


def sv39_map(ram: GuestRAM, root: int, va: int, pa: int, flags: int, pool: list[int]) -> None:
    """Map a 4 KiB page in the Sv39 table at ``root``; tables come from ``pool``."""
    table = root
    for level in (2, 1):
        idx = (va >> (12 + 9 * level)) & 0x1FF
        pte = ram.read(table + idx * 8, 8)
        if not pte & PTE_V:
            new = pool.pop()
            ram.write(table + idx * 8, 8, ((new >> 12) << 10) | PTE_V)
            table = new
        else:
            table = ((pte >> 10) & ((1 << 44) - 1)) << 12
    ram.write(table + ((va >> 12) & 0x1FF) * 8, 8, ((pa >> 12) << 10) | flags)




def _paged(w: World, root: int, maps: list[tuple[int, int]]) -> int:
    pool = [BASE + 0x20_0000 + 0x1000 * i for i in range(16)][::-1] if root == BASE + 0x10_0000 \
        else [BASE + 0x30_0000 + 0x1000 * i for i in range(16)][::-1]
    for va, pa in maps:
        sv39_map(w.ram, root, va, pa, RWX, pool)
    return (8 << 60) | (root >> 12)


def test_sfence_vma_and_satp_changes_switch_code() -> None:
    va = 0x4000_0000
    pa1, pa2 = BASE + 0x4_0000, BASE + 0x5_0000
    code1 = [addi(10, 0, 1), addi(11, 11, 1), ECALL]
    code2 = [addi(10, 0, 2), addi(11, 11, 2), ECALL]
    handler = BASE + 0x100

    def setup(w: World) -> None:
        w.put(pa1, code1)
        w.put(pa2, code2)
        w.put(handler, [J_SELF])
        w.put(BASE + 0x200, [SFENCE_VMA, J_SELF])  # M-mode: sfence.vma zero, zero
        w.put(BASE + 0x300, [H.enc_r(0x73, 0, 0, 10, 0, 0x09), J_SELF])  # sfence.vma a0
        w.hart.mtvec = handler
        w.tables = (_paged(w, BASE + 0x10_0000, [(va, pa1)]),
                    _paged(w, BASE + 0x11_0000, [(va, pa2)]))

    def enter_s(w: World, satp: int) -> None:
        h = w.hart
        h.satp = satp
        h.priv = C.PRV_S
        h.pc = va
        h.mmu.flush()
        h.mmu.update_mode()

    def m_code(w: World, pc: int, a0: int = 0) -> None:
        h = w.hart
        h.priv = C.PRV_M
        h.mmu.update_mode()
        h.x[10] = a0
        h.pc = pc
        w.engine.run(2)

    worlds = [World("interp"), World("translate", threshold=1)]
    for w in worlds:
        setup(w)
        for _ in range(3):  # hot
            enter_s(w, w.tables[0])
            w.engine.run(10)
        assert (w.hart.x[10], w.hart.mcause, w.hart.mepc) == (1, 9, va + 8)
        # Remap the page to the other code: blocks are keyed by virtual pc, so they must
        # go with SFENCE.VMA (all, then one page).
        sv39_map(w.ram, BASE + 0x10_0000, va, pa2, RWX, [])
        m_code(w, BASE + 0x200)
        enter_s(w, w.tables[0])
        w.hart.satp = w.tables[0]
        w.engine.run(10)
        assert w.hart.x[10] == 2
        sv39_map(w.ram, BASE + 0x10_0000, va, pa1, RWX, [])
        m_code(w, BASE + 0x300, a0=va)
        enter_s(w, w.tables[0])
        w.engine.run(10)
        assert w.hart.x[10] == 1
        # Another satp: another translation context.
        enter_s(w, w.tables[1])
        w.engine.run(10)
        assert w.hart.x[10] == 2
        enter_s(w, w.tables[0])
        w.engine.run(10)
        assert w.hart.x[10] == 1
    assert worlds[0].state() == worlds[1].state()


def test_mprv_switches_inline_ram_accesses_to_translated_ones() -> None:
    va, pa = 0x8020_0000, BASE + 0x30_0000

    def setup(w: World) -> None:
        w.put(BASE, [ld(11, 10, 0), addi(12, 12, 1), J_SELF])
        w.ram.write(0x8020_0000, 8, 111)
        w.ram.write(pa, 8, 222)
        w.hart.satp = _paged(w, BASE + 0x10_0000, [(va, pa)])
        w.hart.x[10] = va

    worlds = [World("interp"), World("translate", threshold=1)]
    for w in worlds:
        setup(w)
        h = w.hart
        for mprv, expect in ((0, 111), (1, 222), (0, 111)):
            h.mstatus = (h.mstatus & ~(C.MSTATUS_MPRV | C.MSTATUS_MPP)) | (
                (C.MSTATUS_MPRV | (C.PRV_S << C.MSTATUS_MPP_SHIFT)) if mprv else 0)
            h.mmu.update_mode()
            h.pc = BASE
            w.engine.run(3)
            assert h.x[11] == expect
    assert worlds[0].state() == worlds[1].state()


def test_blocks_end_at_the_page_boundary() -> None:
    start = BASE + 0xFF0

    def setup(w: World) -> None:
        w.put(start, [addi(10, 10, i) for i in range(1, 9)] + [J_SELF])
        w.hart.pc = start

    _, t = both(setup, 9, threshold=1)
    assert t.hart.x[10] == 36
    tree, pages, _, _ = t.engine._scan(start)
    assert [pc for pc, _d, _taken in tree] == [start + 4 * i for i in range(4)]
    assert pages == {start >> 12}


def test_instruction_straddling_two_pages() -> None:
    # c.nop at 0xffc, then a 4-byte addi at 0xffe whose upper half is in the next page.
    va = 0x4000_0000
    word = addi(10, 10, 5)

    def place(w: World, addr: int, hi_addr: int) -> None:
        w.ram.write(addr + 0xFFC, 2, 0x0001)
        w.ram.write(addr + 0xFFE, 2, word & 0xFFFF)
        w.ram.write(hi_addr, 2, word >> 16)
        w.ram.write(hi_addr + 2, 4, J_SELF)

    # Bare: the block is [c.nop, addi] and is registered for both physical pages.
    def bare(w: World) -> None:
        place(w, BASE, BASE + 0x1000)
        w.hart.pc = BASE + 0xFFC

    _, t = both(bare, 3, threshold=1)
    assert t.hart.x[10] == 5
    assert {BASE >> 12, (BASE >> 12) + 1} <= set(t.code.pages)
    # Rewriting the upper half (a loader or device writing the other physical page)
    # drops the block: addi a0, a0, 5 becomes addi a0, a0, 7.
    t.ram.write(BASE + 0x1000, 2, addi(10, 10, 7) >> 16)
    t.code.invalidate_range(BASE + 0x1000, 2)
    t.hart.pc = BASE + 0xFFC
    t.engine.run(2)
    assert t.hart.x[10] == 12

    # Sv39: the two halves come from non-adjacent physical pages; then the second page
    # is unmapped: the fetch faults (on both engines alike).
    lo_pa, hi_pa = BASE + 0x4_0000, BASE + 0x7_0000

    def paged(w: World, second: bool) -> None:
        place(w, lo_pa, hi_pa)
        maps = [(va, lo_pa)] + ([(va + 0x1000, hi_pa)] if second else [])
        w.hart.satp = _paged(w, BASE + 0x10_0000, maps)
        w.put(BASE + 0x100, [J_SELF])
        w.hart.mtvec = BASE + 0x100
        w.hart.priv = C.PRV_S
        w.hart.mmu.update_mode()
        w.hart.pc = va + 0xFFC

    _, t = both(lambda w: paged(w, True), 3, threshold=1)
    assert t.hart.x[10] == 5 and t.hart.pc == va + 0x1002
    _, t = both(lambda w: paged(w, False), 3, threshold=1)
    assert (t.hart.mcause, t.hart.mepc) == (12, va + 0xFFE)


class _StopDevice(Device):
    name = "stop"

    def __init__(self) -> None:
        self.value = None

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value
        raise StopRequest()


def test_stop_request_in_the_middle_of_a_block() -> None:
    dev_base = 0x1000_0000

    def setup(w: World) -> None:
        w.bus.attach(dev_base, 0x1000, _StopDevice())
        w.put(BASE, [addi(10, 0, 1), addi(11, 11, 3), sw(10, 12, 0), addi(10, 0, 2), J_SELF])
        w.hart.x[12] = dev_base

    worlds = []
    for engine in ("interp", "translate"):
        w = World(engine, **({"threshold": 1} if engine == "translate" else {}))
        setup(w)
        assert w.engine.run(100) == 3
        worlds.append(w)
        assert (w.hart.pc, w.hart.x[10], w.hart.x[11], w.hart.instret) == (BASE + 12, 1, 3, 3)
    assert worlds[0].state() == worlds[1].state()


def test_pause_and_wfi_yield_the_slice() -> None:
    # loop: pause ; addi a0, a0, 1 ; addi a3, a3, -1 ; bnez a3, loop ; j .
    # then (after the loop) nothing: wfi is tested on its own below.
    from pyhv.cpu.interp import PAUSE
    from pyhv.cpu.trap import MIP_MTIP

    def spin(w: World) -> None:
        w.put(BASE, [PAUSE, addi(10, 10, 1), addi(13, 13, -1), bne(13, 0, -12), J_SELF])
        w.hart.x[13] = 5
        w.hart.yield_on_pause = True

    def wfi(w: World) -> None:
        w.put(BASE, [addi(10, 10, 1), 0x10500073, addi(10, 10, 1), J_SELF])
        w.hart.mie = w.hart.mip_hw = MIP_MTIP  # pending, but masked by mstatus.MIE
        w.hart.yield_on_pause = True

    def relax(w: World) -> None:  # Linux's cpu_relax() without Zihintpause
        div = (1 << 25) | (15 << 15) | (4 << 12) | (15 << 7) | 0x33  # div a5, a5, zero
        w.put(BASE, [div, addi(10, 10, 1), addi(13, 13, -1), bne(13, 0, -12), J_SELF])
        w.hart.x[13] = 5
        w.hart.yield_on_pause = True

    for setup in (spin, wfi, relax):
        for kw in ({"threshold": 1}, {}):
            runs = {}
            for engine in ("interp", "translate"):
                w = World(engine, **(kw if engine == "translate" else {}))
                setup(w)
                runs[engine] = ([w.engine.run(100) for _ in range(8)], w.state())
            assert runs["translate"] == runs["interp"]
            counts = runs["interp"][0]
            assert counts[0] < 100  # the slice ended at the hint


def test_trap_storm_is_reported() -> None:
    t = World("translate", threshold=1)
    t.put(BASE, [ld(11, 0, 0)])
    t.hart.mtvec = BASE + 0x100  # zeros there: illegal instruction
    with pytest.raises(GuestCrash):
        t.engine.run(1000)


def test_blocks_are_compiled_only_when_hot() -> None:
    # a tight loop of 50 iterations, then j .
    def setup(w: World) -> None:
        w.put(BASE, [addi(13, 0, 50), addi(10, 10, 1), addi(13, 13, -1), bne(13, 0, -8),
                     J_SELF])

    w = World("translate", threshold=8)
    setup(w)
    w.engine.run(3)
    assert w.engine.compiled == 0
    w.engine.run(200)
    assert w.hart.x[10] == 50
    assert 1 <= w.engine.compiled <= 3
    both(setup, 300, slices=[1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 200], threshold=8)


def test_flush_drops_blocks() -> None:
    w = World("translate", threshold=1)
    w.put(BASE, [addi(10, 10, 1), J_SELF])
    w.engine.run(5)
    assert w.hart.flush_decoded == w.engine.flush
    cache = w.engine._context().blocks
    assert cache
    w.hart.flush_decoded()
    assert not cache
    w.ram.write(BASE, 4, addi(10, 10, 2))
    w.hart.pc = BASE
    w.engine.run(1)
    assert w.hart.x[10] == 3


# -- whole machines ---------------------------------------------------------------------------

GUESTS = ROOT / "guests" / "tests"


def _not_self_checking() -> set[str]:
    """The guest programs tests/integration/test_guest_programs.py does not boot to a
    verdict (they wait for input or run until stopped), from its INTERACTIVE set."""
    spec = importlib.util.spec_from_file_location(
        "pyhv_guest_programs", ROOT / "tests" / "integration" / "test_guest_programs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.INTERACTIVE)


PROGRAMS = sorted(p.stem for p in GUESTS.glob("*.elf") if p.stem not in _not_self_checking())


def _boot(path: Path, smp: int, **kw) -> tuple[object, str]:
    console = BufferConsole()
    vm = Machine(MachineConfig(bios="none", kernel=str(path), smp=smp), console=console)
    vm.engines = [Translator(h, vm.board.code, **kw) for h in vm.harts]
    try:
        result = vm.run(timeout=300)
    finally:
        vm.close()
    return result, console.text


GUEST_RUNS = [(name, 4 if name == "smp" else 1, threshold)
              for name in PROGRAMS for threshold in (1, 1000)]
GUEST_RUNS += [(name, 2, 50) for name in PROGRAMS if name != "smp"]  # a second hart parks


@pytest.mark.parametrize("name,smp,threshold", GUEST_RUNS)
def test_guest_programs_pass_on_the_translator(name: str, smp: int, threshold: int) -> None:
    result, text = _boot(GUESTS / f"{name}.elf", smp, threshold=threshold)
    assert result.reason == "poweroff", text
    if name == "exit_code":
        assert result.exit_code == 3 and "FAIL exit_code" in text, text
    else:
        assert result.exit_code == 0 and f"PASS {name}" in text, text


@pytest.mark.slow
def test_benchmark_passes_with_the_exact_instruction_count() -> None:
    result, text = _boot(ROOT / "guests" / "bench" / "bench-small.elf", 1)
    assert result.exit_code == 0 and "PASS bench-small" in text, text
    # The count QEMU reports with -icount shift=0 and the interpreter's minstret.
    assert re.search(r"BENCH-INSTRET 5621503\b", text), text
