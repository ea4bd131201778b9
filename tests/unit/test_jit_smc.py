"""Stores next to and over translated code, on the JIT (issue: the engine without cliffs).

The CodeWatch knows which bytes of a page hold translated code (8-byte granules), and
native code checks a store into a page holding code against them:

* a loop that writes data in its own code page keeps running native code: its stores
  are done natively (``native_stores_near_code``), none leave for Python, no block is
  dropped, in bare mode and through Sv39 translation;
* a store over the bytes of the block that is running, with or without FENCE.I, drops
  that block and the next instruction is the new one, exactly as on the interpreter;
* DMA over one block of a page drops that block only; DMA over the data part of the
  page drops none.
"""

from __future__ import annotations

import pytest

from pyhv.cpu.engines import jit_unavailable_reason

pytestmark = pytest.mark.skipif(jit_unavailable_reason() is not None,
                                reason=f"jit unavailable: {jit_unavailable_reason()}")

from test_jit import (  # noqa: E402
    BASE,
    BASELINE_TIER,
    WFI,
    _pte,
    addi,
    bne,
    i_type,
    jit_world,
    li32,
    run,
    sd,
)

import engine_world as W  # noqa: E402 - tests/conftest.py puts tests/ on sys.path

H = W.H
CODE = BASE + 0x3000  # the loop's page; its data word sits at CODE + 0x400
ROOT = BASE + 0x20000  # Sv39 root table: one gigapage mapping RAM onto itself
TIERS = pytest.mark.parametrize("threshold", [1, BASELINE_TIER, 10**9],
                                ids=["compiled", "baseline", "native-interp"])


def hop(k: int) -> list[int]:
    """A block of its own: a0 += k, then on to the next 12 bytes on by an indirect jump
    (t4 = auipc; jalr 8(t4)): a direct jump forward would let one block run on."""
    return [addi(10, 10, k), H.enc_u(0x17, 29, 0), i_type(0x67, 0, 0, 29, 8)]


def sw(rs2: int, rs1: int, imm: int) -> int:
    return H.enc_s(0x23, 2, rs1, rs2, imm)


def _csrw(csr: int, rs1: int) -> int:
    return (csr << 20) | (rs1 << 15) | (1 << 12) | 0x73


def _lu32(rd: int, value: int) -> list[int]:
    """rd = a 32-bit value, zero-extended."""
    return li32(rd, value) + [i_type(0x13, rd, 1, rd, 32), i_type(0x13, rd, 5, rd, 32)]


def s_mode_entry(target: int) -> list[int]:
    """M-mode code (t5 and t6 only: the programs use the other registers): Sv39 with the
    root table at ROOT, sfence.vma, then mret to ``target`` in S-mode."""
    satp = (8 << 60) | (ROOT >> 12)
    prog = li32(30, satp >> 32) + [i_type(0x13, 30, 1, 30, 32)]  # t5 = satp (hi) << 32
    prog += _lu32(31, satp & 0xFFFFFFFF) + [
        0x01FF6F33,  # or t5, t5, t6
        _csrw(0x180, 30),  # satp
        0x12000073,  # sfence.vma
    ] + _lu32(30, target) + [_csrw(0x341, 30)] + li32(30, 1 << 11) + [
        (0x300 << 20) | (30 << 15) | (2 << 12) | 0x73, 0x30200073]  # mstatus.MPP = S; mret
    return prog


def _enter(world, translated: bool, target: int) -> None:
    """Start at ``target``: in M-mode (bare), or in S-mode under Sv39 where the gigapage
    at 0x8000_0000 maps RAM to itself (V R W X A D)."""
    if not translated:
        world.hart.pc = target
        return
    pte = ((BASE >> 12) << 10) | 0xCF
    world.ram.write_bytes(ROOT + 8 * (BASE >> 30), pte.to_bytes(8, "little"))
    world.put(BASE, s_mode_entry(target))
    world.hart.pc = BASE


def _pair(threshold: int, setup) -> tuple:
    worlds = (W.World("interp"), jit_world(threshold=threshold))
    for w in worlds:
        setup(w)
        run(w, 400_000)
        assert w.hart.waiting
    return worlds


@TIERS
@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_stores_to_data_in_a_code_page_stay_native(threshold, translated):
    n = 3000
    loop = [sw(11, 12, 0x400), addi(11, 11, 1), addi(13, 13, -1), bne(13, 0, -12), WFI]

    def setup(w) -> None:
        w.put(CODE, loop)
        w.hart.x[12], w.hart.x[13] = CODE, n
        _enter(w, translated, CODE)

    interp, jit = _pair(threshold, setup)
    assert jit.state() == interp.state()
    assert jit.ram.read(CODE + 0x400, 4) == interp.ram.read(CODE + 0x400, 4) == n - 1
    stats = jit.engine.stats()
    assert stats["slow_path_stores"] <= 2, stats
    assert stats["blocks_invalidated_by_writes"] == 0, stats
    assert stats["native_stores"] >= n, stats
    if threshold == 1:  # the loop's block is code: every store was checked, natively
        assert stats["native_stores_near_code"] >= n - 2, stats


def _rewriting_loop(threshold: int, stores: list[int], after: list[int], n: int,
                    switch: int, translated: bool) -> tuple:
    """Run a loop of ``n`` iterations on the interpreter and the JIT: ``stores`` (through
    s0 = its start; the last over the instruction right after them, ``addi t0, t0, 1``,
    with t2), that instruction, ``after``; t2 holds the instruction's own bytes until
    ``switch`` iterations are left, then ``addi t0, t0, 100``. Returns the two worlds."""
    new = addi(5, 5, 100)
    old = addi(5, 5, 1)
    body = stores + [old] + after + [
        addi(6, 6, -1),
        addi(9, 6, -switch),
        bne(9, 0, 8),
        addi(7, 28, 0),  # at ``switch`` left: t2 = the new instruction
        bne(6, 0, 0),  # patched below: back to the first store
        WFI,
    ]
    back = len(body) - 2
    body[back] = bne(6, 0, -4 * back)

    def setup(w) -> None:
        w.put(CODE, body)
        w.hart.x[6], w.hart.x[7], w.hart.x[8], w.hart.x[28] = n, old, CODE, new
        _enter(w, translated, CODE)

    return _pair(threshold, setup)


@TIERS
@pytest.mark.parametrize("fence_i", [False, True], ids=["no-fence.i", "fence.i"])
@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_store_over_the_running_block(threshold, fence_i, translated):
    """Each iteration stores t2 over the instruction right after the store (the block
    that is running); t2 holds that instruction's own bytes until iteration 25, then
    ``addi t0, t0, 100``: from then on the new instruction runs, as on the interpreter."""
    store = [sw(7, 8, 4)]  # 0: store t2 over the next instruction (at 4)
    interp, jit = _rewriting_loop(threshold, store, [0x0000100F] if fence_i else [],
                                  n=50, switch=25, translated=translated)
    assert interp.hart.x[5] == 25 + 25 * 100
    assert jit.state() == interp.state()
    if threshold == 1:
        assert jit.engine.stats()["blocks_invalidated_by_writes"] >= 1


def test_dma_drops_exactly_the_blocks_it_overlaps():
    """Two compiled loops in one page, then DMA: over the data part of the page (no
    block dropped), over the first loop's bytes (that loop only)."""
    from pyhv.devices.virtio.dma import GuestDMA

    # (the first loop leaves through jalr, so its block ends there: blocks go on past
    # a loop's branch into the code after it)
    first = [addi(10, 10, 1), addi(6, 6, -1), bne(6, 0, -8), i_type(0x67, 0, 0, 5, 0)]
    second = [addi(11, 11, 2), addi(7, 7, -1), bne(7, 0, -8), WFI]
    world = jit_world(threshold=1)
    world.put(CODE, first + second)
    world.hart.pc = CODE
    world.hart.x[6], world.hart.x[7], world.hart.x[5] = 100, 100, CODE + 16
    run(world)
    native = world.engine._context().native
    starts = {CODE, CODE + 16}
    assert starts <= set(native)
    dma = GuestDMA(world.ram, world.code)
    dma.write(CODE + 0x800, b"\x01" * 64)  # data next to the code
    assert starts <= set(native)
    dma.write(CODE + 4, world.ram.read_bytes(CODE + 4, 4))  # the first loop's bytes
    assert CODE not in native and CODE + 16 in native
    assert world.engine.stats()["blocks_invalidated_by_writes"] == 1


def test_codewatch_sweep_drops_the_rest_of_a_page_being_overwritten():
    """Writes over code piece after piece (SWEEP_HITS of them, nothing added between)
    drop the code after the last one at once; code added in between restarts the count,
    and code before the sweep stays."""
    from pyhv.cpu.mmu import SWEEP_HITS, CodeWatch

    code = CodeWatch()
    cache: dict[int, int] = {}
    cid = code.register(cache)
    ppn = 0x80003
    for i in range(32):  # 32 blocks of 16 bytes from offset 0x100
        cache[i] = i
        code.add(ppn, cid, i, 0x100 + 16 * i, 16)
    base = ppn << 12
    code.written(base + 0x000, 8)  # no code there: not a hit
    for i in range(SWEEP_HITS - 1):
        code.written(base + 0x100 + 16 * (i + 2), 8)
    assert sorted(set(range(32)) - set(cache)) == [2, 3, 4] and code.sweeps == 0
    code.add(ppn, cid, 40, 0x800, 4)  # code runs here again: no sweep under way
    cache[40] = 40
    for i in range(SWEEP_HITS - 1):
        code.written(base + 0x100 + 16 * (i + 6), 8)
    assert code.sweeps == 0 and 8 not in cache and 9 in cache
    code.written(base + 0x100 + 16 * 10, 8)  # the SWEEP_HITS-th: the rest goes
    assert code.sweeps == 1
    assert sorted(cache) == [0, 1, 5, 9]
    assert code.masks[ppn] == sum(1 << g for g in (0x20, 0x21, 0x22, 0x23, 0x2A, 0x2B,
                                                   0x32, 0x33))


@TIERS
def test_exec_over_old_code_sweeps_and_runs_the_new_code(threshold):
    """A program's 16 blocks (a0 += 1 each) run; then a copy loop in another page writes
    a new program over them (a0 += 2 each), fence.i, and runs it: as on the
    interpreter, and with the compiled blocks swept after a few slow stores instead of
    one trip to Python per block."""
    page, main, src = CODE, BASE + 0x5000, BASE + 0x6000
    jal = H.enc_j

    def prog(k: int) -> list[int]:
        words: list[int] = []
        for _ in range(16):
            words += hop(k)
        return words + [i_type(0x67, 0, 0, 1, 0)]  # ret

    ld = W.ld
    body = [
        jal(1, page - main),  # 0: run the old program
        ld(5, 6, 0),  # 4: copy: t0 = *t1
        W.sd(5, 7, 0),  # *t2 = t0
        addi(6, 6, 8), addi(7, 7, 8), addi(28, 28, -1),
        bne(28, 0, -20),
        0x0000100F,  # fence.i
        jal(1, page - (main + 32)),  # run the new program
        WFI,
    ]

    def setup(w) -> None:
        w.put(page, prog(1))
        w.put(src, prog(2))
        w.put(main, body)
        w.hart.x[6], w.hart.x[7], w.hart.x[28] = src, page, len(prog(1)) * 4 // 8 + 1
        w.hart.pc = main

    interp, jit = _pair(threshold, setup)
    assert interp.hart.x[10] == 16 + 32
    assert jit.state() == interp.state()
    if threshold == 1:
        from pyhv.cpu.mmu import SWEEP_HITS

        stats = jit.engine.stats()
        assert stats["code_pages_swept"] == 1, stats
        assert stats["slow_path_stores"] <= SWEEP_HITS, stats


def test_a_program_copied_again_over_its_pages_comes_back_linked_at_once():
    """A program runs hot (its 16 blocks compiled), is copied again over the same pages
    with the same bytes (an exec of it into pages that held it), runs again: its blocks
    come back by their bytes, none compiled again, and the first one that heats up
    brings the rest of its page with it (one trip to Python, not one per block)."""
    from pyhv.cpu.jit.compiler import OPT, key_shape

    page, main, src = CODE, BASE + 0x5000, BASE + 0x6000
    jal = H.enc_j

    words: list[int] = []
    for _ in range(16):
        words += hop(1)
    words.append(i_type(0x67, 0, 0, 1, 0))  # ret
    body = [
        addi(8, 0, 12),  # 0: s0 = 12 runs
        jal(1, page - (main + 4)),  # 4: run the program
        addi(8, 8, -1), bne(8, 0, -8),  # 8, 12
        W.ld(5, 6, 0), W.sd(5, 7, 0),  # 16: copy it again over itself
        addi(6, 6, 8), addi(7, 7, 8), addi(28, 28, -1), bne(28, 0, -20),
        0x0000100F,  # 40: fence.i
        addi(8, 0, 12),  # 44
        jal(1, page - (main + 48)),  # 48
        addi(8, 8, -1), bne(8, 0, -8),
        WFI,
    ]
    world = jit_world(threshold=4)
    world.put(page, words)
    world.put(src, words)
    world.put(main, body)
    world.hart.x[6], world.hart.x[7], world.hart.x[28] = src, page, len(words) * 4 // 8 + 1
    world.hart.pc = main
    engine = world.engine
    after_copy: list[int] = []
    hot = engine._hot

    compiled_again = []  # blocks of the program's page compiled after the copy
    submit = engine.compiler.submit

    def counting_hot(ctx, pc):
        if world.hart.x[28] == 0 and pc >> 12 == page >> 12:
            after_copy.append(pc)
        return hot(ctx, pc)

    def counting_submit(key, ir, done, heat=None, idle=False):
        start = key_shape(key)[0]
        if world.hart.x[28] == 0 and start >> 12 == page >> 12 and not key.endswith(OPT):
            compiled_again.append(start)
        return submit(key, ir, done, heat, idle)

    engine._hot = counting_hot
    engine.compiler.submit = counting_submit  # (the compiler other tests share: put back)
    try:
        run(world)
    finally:
        del engine.compiler.submit
    assert world.hart.waiting and world.hart.x[10] == 2 * 12 * 16
    stats = engine.stats()
    assert stats["retranslations"] >= 16, stats
    assert compiled_again == []
    assert len(after_copy) <= 2, after_copy  # was one per block


# -- the native interpreter's decoded cache ---------------------------------------------
# It keeps decoded instructions by pc slot, each entry naming the instruction bits it was
# decoded from; a cached instruction runs only while those are still the bits at its pc.

def _halfwords(words: list[int]) -> bytes:
    """Instructions given as 16-bit (< 0x10000, low bits not 11) or 32-bit values."""
    out = bytearray()
    for w in words:
        out += w.to_bytes(2 if w & 3 != 3 else 4, "little")
    return bytes(out)


@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_a_compressed_instruction_rewritten_under_the_decoded_cache(translated):
    """A loop stores a halfword over the compressed instruction after the store, its own
    bits for 25 iterations, then ``c.addi t0, 3`` instead of ``c.addi t0, 1``: the
    native interpreter runs the new one from the next iteration, as the interpreter."""
    old, new = 0x0285, 0x028D  # c.addi t0, 1; c.addi t0, 3
    body = [
        H.enc_s(0x23, 1, 8, 7, 4),  # 0: sh t2, 4(s0)
        old,  # 4: rewritten
        0x0001,  # 6: c.nop
        addi(6, 6, -1),  # 8
        addi(9, 6, -25),  # 12
        bne(9, 0, 8),  # 16
        addi(7, 28, 0),  # 20: at 25 left, t2 = the new instruction
        bne(6, 0, -24),  # 24: back to the store
        WFI,
    ]

    def setup(w) -> None:
        w.ram.write_bytes(CODE, _halfwords(body))
        w.hart.x[6], w.hart.x[7], w.hart.x[8], w.hart.x[28] = 50, old, CODE, new
        _enter(w, translated, CODE)

    interp, jit = _pair(10**9, setup)
    assert interp.hart.x[5] == 25 * 1 + 25 * 3
    assert jit.state() == interp.state()


def test_instructions_sharing_a_decoded_cache_slot():
    """Two functions 2 * NDCACHE bytes apart (their pcs share every slot of the decoded
    cache), with different instructions at the same offsets, called in turn: each runs
    its own."""
    from pyhv.cpu.jit import state as S

    apart = S.NDCACHE * 2  # within the test world's RAM and a jal's reach
    f_a, f_b = CODE + 0x100, CODE + 0x100 + apart
    jalr_ret = i_type(0x67, 0, 0, 1, 0)
    main = [H.enc_j(1, f_a - CODE), H.enc_j(1, f_b - (CODE + 4)), addi(6, 6, -1),
            bne(6, 0, -12), WFI]

    def setup(w) -> None:
        w.put(CODE, main)
        w.put(f_a, [addi(5, 5, 1), 0x0001_0001, jalr_ret])  # +1, two c.nop
        w.put(f_b, [addi(5, 5, 7), addi(10, 10, 2), jalr_ret])  # +7, a0 += 2
        w.hart.x[6] = 300
        w.hart.pc = CODE

    interp, jit = _pair(10**9, setup)
    assert interp.hart.x[5] == 300 * 8 and interp.hart.x[10] == 600
    assert jit.state() == interp.state()


def _ld(rd, rs1, imm, f3=3):
    return i_type(0x03, rd, f3, rs1, imm)


def _sd(rs2, rs1, imm, f3=3):
    return H.enc_s(0x23, f3, rs1, rs2, imm)


@TIERS
@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_misaligned_accesses_natively_as_on_the_interpreter(threshold, translated):
    """Loads and stores at byte offsets within a page (what C code reading words from a
    byte buffer does) stay native, and across a page boundary too in bare mode (RAM is
    one host mapping; a store checks both pages for code); one across pages under
    translation and a store into the data of a page holding code are Python's; every
    value as on the interpreter."""
    n = 200
    data, cross = BASE + 0x50000, BASE + 0x52000
    loop = [
        _ld(5, 10, 3), _ld(6, 10, 1, 2), _ld(7, 10, 5, 5),  # ld +3, lw +1, lhu +5
        _sd(5, 11, 9), _sd(6, 11, 2, 2), _sd(7, 11, 0x101, 1),  # sd +9, sw +2, sh +0x101
        _ld(8, 12, -3),  # ld across the page boundary at x12
        _sd(5, 12, -5),  # sd across it
        _sd(8, 13, 0x3FD, 2),  # sw into the code page's data, misaligned
        W.add(20, 20, 5), W.add(20, 20, 6), W.add(20, 20, 7), W.add(20, 20, 8),
        addi(10, 10, 1), addi(11, 11, 3), addi(9, 9, -1), bne(9, 0, -64), WFI,
    ]

    def setup(w) -> None:
        w.put(CODE, loop)
        w.ram.write_bytes(data, bytes((i * 37 + 11) & 0xFF for i in range(8192)))
        w.ram.write_bytes(cross - 8, bytes(range(1, 17)))
        w.hart.x[9], w.hart.x[10], w.hart.x[11] = n, data, data + 0x1000
        w.hart.x[12], w.hart.x[13] = cross, CODE
        _enter(w, translated, CODE)

    interp, jit = _pair(threshold, setup)
    assert jit.state() == interp.state()
    assert (jit.ram.read_bytes(data, 8192) == interp.ram.read_bytes(data, 8192))
    assert jit.ram.read_bytes(cross - 16, 32) == interp.ram.read_bytes(cross - 16, 32)
    assert jit.ram.read_bytes(CODE + 0x3F0, 32) == interp.ram.read_bytes(CODE + 0x3F0, 32)
    stats = jit.engine.stats()
    # per iteration, the store over the code page leaves, and under Sv39 the two
    # accesses across pages (each twice: a refill is tried first); before, all nine did
    assert stats["slow_exits"] < (7 if translated else 2) * n, stats


def _csrr(rd, num):
    return (num << 20) | (2 << 12) | (rd << 7) | 0x73


def _csr(f3, rd, num, rs1):
    return (num << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | 0x73


@TIERS
@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_fp_csrs_natively_as_on_the_interpreter(threshold, translated):
    """fflags, frm and fcsr read, written, set and cleared in a loop of FP arithmetic
    (as Linux saves and restores fcsr at each switch between processes): the values
    and flags the interpreter has, a rounding mode other than RNE honoured from the
    next instruction on (that addition is Python's), without leaving native code for
    the CSR accesses."""
    n = 200
    fdiv, fadd = 0x0D, 0x01  # funct7 of fdiv.d, fadd.d; rm 7: the dynamic mode (frm)
    loop = [
        H.enc_r(0x53, 1, 7, 2, 3, fdiv),  # fdiv.d f1, f2, f3: 1/3 inexact (NX)
        _csr(2, 11, 0x001, 0), W.add(20, 20, 11),  # frflags x11
        _csr(1, 12, 0x003, 13), W.add(21, 21, 12),  # fscsr x12, x13: RTZ, NX set
        H.enc_r(0x53, 4, 7, 1, 2, fadd),  # fadd.d f4, f1, f2 under RTZ: Python's
        _csr(2, 14, 0x003, 0), W.add(22, 22, 14),  # frcsr x14
        _csr(7, 0, 0x001, 1),  # csrci fflags, NX
        _csr(5, 15, 0x002, 0), W.add(23, 23, 15),  # fsrmi x15, RNE
        H.enc_r(0x53, 6, 7, 2, 3, fdiv),  # fdiv.d f6, f2, f3: NX natively (MXCSR)
        H.enc_r(0x53, 18, 1, 7, 0, 0x61),  # fcvt.w.d x18, f7 (NaN), rtz: NV natively
        _csr(1, 0, 0x001, 0),  # fsflags x0: both gone
        H.enc_r(0x53, 5, 7, 3, 2, fdiv),  # fdiv.d f5, f3, f2: exact, no flag
        _csr(2, 16, 0x003, 0), W.add(24, 24, 16),  # frcsr x16
        _csr(6, 17, 0x001, 4), W.add(25, 25, 17),  # csrrsi x17, fflags, UF
        addi(9, 9, -1)]
    loop += [bne(9, 0, -4 * len(loop)), WFI]

    def setup(w) -> None:
        w.put(CODE, loop)
        h = w.hart
        h.x[9], h.x[13] = n, 1 << 5 | 1
        h.f[2], h.f[3] = 0x3FF0000000000000, 0x4008000000000000  # 1.0, 3.0
        h.f[7] = 0x7FF8000000000000  # NaN
        h.mstatus |= 1 << 13  # FS = Initial
        _enter(w, translated, CODE)

    interp, jit = _pair(threshold, setup)
    assert jit.state() == interp.state()
    h = interp.hart
    # flags read: NX (fdiv), then NX | UF (the csrrsi of the iteration before);
    # fcsr after the RTZ addition: frm 1, NX; frm read back: RTZ; then all clear
    assert (h.x[20], h.x[21], h.x[22], h.x[23], h.x[24], h.x[25]) == (
        1 + 5 * (n - 1), 1 + 5 * (n - 1), 33 * n, n, 0, 0)
    assert (h.fflags, h.frm) == (4, 0)
    assert jit.engine.stats()["slow_exits"] < 2 * n, jit.engine.stats()


@TIERS
@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_counter_reads_natively_as_on_the_interpreter(threshold, translated):
    """mcycle/minstret (M-mode) or cycle/instret (S-mode, as mcounteren allows) read in
    a loop, as a benchmark timing each iteration does: the values the interpreter
    reads (instructions retired before the read), without leaving native code."""
    n = 300
    cyc, ins = (0xC00, 0xC02) if translated else (0xB00, 0xB02)
    loop = [_csrr(5, cyc), addi(6, 6, 3), _csrr(7, ins), W.add(20, 20, 5), W.add(21, 21, 7),
            H.enc_r(0x33, 22, 4, 22, 7, 0), addi(9, 9, -1), bne(9, 0, -28), WFI]

    def setup(w) -> None:
        w.put(CODE, loop)
        w.hart.x[9] = n
        w.hart.mcounteren = 0b101  # cycle and instret for S-mode
        _enter(w, translated, CODE)

    interp, jit = _pair(threshold, setup)
    assert jit.state() == interp.state()
    assert interp.hart.x[20] > 0 and interp.hart.x[21] > interp.hart.x[20]
    assert jit.engine.stats()["slow_exits"] < n // 2, jit.engine.stats()


def ld(rd: int, rs1: int, imm: int) -> int:
    return i_type(0x03, rd, 3, rs1, imm)


@TIERS
@pytest.mark.parametrize("translated", [False, True], ids=["bare", "sv39"])
def test_a_group_of_stores_to_data_in_a_code_page_stays_native(threshold, translated):
    """Three stores through one base register (a group, checked once: codegen's
    access_groups) into data that shares its page with the loop's code: done natively,
    counted near code, no exit to Python, as a lone store there is."""
    n = 3000
    loop = [sw(11, 12, 0x400), sw(13, 12, 0x404), sw(11, 12, 0x40C),
            addi(11, 11, 1), addi(13, 13, -1), bne(13, 0, -20), WFI]

    def setup(w) -> None:
        w.put(CODE, loop)
        w.hart.x[12], w.hart.x[13] = CODE, n
        _enter(w, translated, CODE)

    interp, jit = _pair(threshold, setup)
    assert jit.state() == interp.state()
    assert jit.ram.read(CODE + 0x400, 16) == interp.ram.read(CODE + 0x400, 16)
    stats = jit.engine.stats()
    assert stats["slow_path_stores"] <= 2, stats
    assert stats["blocks_invalidated_by_writes"] == 0, stats
    if threshold == 1:
        # every store of the group checked against the code once, natively, in its
        # block (a group that left its block for the native interpreter would count
        # its stores twice: the group's check, then the interpreter's)
        assert 3 * (n - 2) <= stats["native_stores_near_code"] <= 3 * (n + 2), stats


@TIERS
def test_a_group_of_stores_over_the_running_block(threshold):
    """Two stores through one base, the second over the instruction right after them
    (the running block's own bytes): the group's check finds code in the bytes it spans,
    so Python does both stores, drops the block, and the new instruction runs from the
    iteration that wrote it on, exactly as on the interpreter."""
    stores = [sw(6, 8, 0x400), sw(7, 8, 8)]  # data; then over the instruction at 8
    interp, jit = _rewriting_loop(threshold, stores, [], n=40, switch=20, translated=False)
    assert interp.hart.x[5] == 20 + 20 * 100
    assert jit.state() == interp.state()
    assert jit.ram.read(CODE + 0x400, 4) == interp.ram.read(CODE + 0x400, 4)


@TIERS
def test_a_group_of_loads_that_leaves_ram_faults_where_the_interpreter_does(threshold):
    """Two loads through one base (a group), the second past the end of RAM: the first
    is done, the second raises a load access fault with the interpreter's pc, tval and
    registers (the group's check fails, so the block leaves before its first load)."""
    end = BASE + (4 << 20)
    handler = BASE + 0x3800
    prog = [ld(10, 12, -8), ld(11, 12, 0), WFI]

    def setup(w) -> None:
        w.put(CODE, prog)
        w.put(handler, [WFI])
        w.ram.write_bytes(end - 8, (0x1122334455667788).to_bytes(8, "little"))
        w.hart.mtvec = handler
        w.hart.x[12] = end
        w.hart.pc = CODE

    worlds = []
    for w in (W.World("interp"), jit_world(threshold=threshold)):
        setup(w)
        run(w, 10_000)
        worlds.append(w)
    interp, jit = worlds
    assert interp.hart.mcause == 5 and interp.hart.mtval == end
    assert interp.hart.x[10] == 0x1122334455667788
    assert jit.state() == interp.state()


@TIERS
def test_interleaved_groups_on_differently_mapped_pages(threshold):
    """Sv39 with two data pages mapped to physical pages far apart (each its own soft-TLB
    addend): a loop that loads through one base and stores through another, their
    accesses interleaved, so two groups are open at once; each must use its own page's
    translation, as on the interpreter."""
    l1 = BASE + 0x21000  # level-1 table for the gigapage at 0x4000_0000
    l0 = BASE + 0x22000  # level-0 table: its first two 4 KiB pages
    src, dst = BASE + 0x10000, BASE + 0x30000
    va = 0x4000_0000
    n = 500
    loop = [ld(5, 10, 0), sd(5, 11, 8), ld(6, 10, 8), sd(6, 11, 0), ld(7, 10, 16),
            sd(7, 11, 16), addi(5, 5, 1), sd(5, 10, 0), addi(12, 12, -1), bne(12, 0, -36),
            WFI]

    def setup(w) -> None:
        w.ram.write_bytes(ROOT + 8 * 1, _pte(l1, 0x01).to_bytes(8, "little"))
        w.ram.write_bytes(l1, _pte(l0, 0x01).to_bytes(8, "little"))
        w.ram.write_bytes(l0, _pte(src, 0xC7).to_bytes(8, "little"))  # V R W A D
        w.ram.write_bytes(l0 + 8, _pte(dst, 0xC7).to_bytes(8, "little"))
        w.ram.write_bytes(src, bytes(range(24)))
        w.put(CODE, loop)
        w.hart.x[10], w.hart.x[11], w.hart.x[12] = va, va + 0x1000, n
        _enter(w, True, CODE)

    interp, jit = _pair(threshold, setup)
    assert jit.state() == interp.state()
    assert jit.ram.read_bytes(dst, 24) == interp.ram.read_bytes(dst, 24)
    assert jit.ram.read_bytes(src, 24) == interp.ram.read_bytes(src, 24)
    assert interp.ram.read(dst + 16, 8) == 0x1716151413121110
