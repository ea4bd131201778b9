"""The decoded-code cache shared by the engines (pyhv.cpu.code_cache), and what the
translator builds on it: blocks survive stores to data that shares their page.

* CodeCache: one context per (privilege, satp[, data translation]); tables registered
  with the CodeWatch (a store into a page drops its entries); SFENCE.VMA of one page and
  full flushes; contexts beyond MAX_CONTEXTS are all dropped and their ids reused.
* CodeWatch: entries are registered with their bytes; a store next to code (same page,
  no instruction bytes) drops nothing, one over an instruction drops exactly the entries
  whose bytes it overlaps; the page's granule mask follows and watchers are told.
* The translator: a loop storing into data on its own code page keeps its compiled block
  (inline and MMU stores alike), a rewrite of an instruction with the same bytes drops
  the block and it is revived unchanged, while a store over its instructions still takes
  effect at once.
"""

from __future__ import annotations

from pathlib import Path

from pyhv.cpu.code_cache import MAX_CONTEXTS, CodeCache, CodeContext
from pyhv.cpu.hart import Hart
from pyhv.cpu.mmu import CodeWatch
from pyhv.isa import csr as C
from pyhv.memory.bus import Bus
from pyhv.memory.ram import GuestRAM

ROOT = Path(__file__).resolve().parents[2]
BASE = 0x8000_0000


import engine_world as W  # noqa: E402 - tests/conftest.py puts tests/ on sys.path


def _hart() -> tuple[Hart, CodeWatch]:
    code = CodeWatch()
    return Hart(0, GuestRAM(BASE, 1 << 20), Bus(), code), code


class _Tracked(CodeContext):
    __slots__ = ("events",)

    def __init__(self, tables, ids) -> None:
        super().__init__(tables, ids)
        self.events: list[object] = []

    def cleared(self) -> None:
        self.events.append("cleared")

    def forget(self, pcs) -> None:
        self.events.append(tuple(pcs))


def test_contexts_are_keyed_by_privilege_satp_and_optionally_data_mode() -> None:
    hart, code = _hart()
    cache = CodeCache(hart, code, tables=2, context=_Tracked, by_data_mode=True)
    m = cache.current()
    assert cache.current() is m and len(m.tables) == 2 and len(set(m.ids)) == 2
    assert all(code.caches[i] is t for i, t in zip(m.ids, m.tables, strict=True))
    hart.satp = 8 << 60 | 0x123
    assert cache.current() is m  # M-mode fetches are not translated: satp is no part
    hart.priv = C.PRV_S
    s1 = cache.current()
    hart.satp = 8 << 60 | 0x124
    s2 = cache.current()
    assert len({id(m), id(s1), id(s2)}) == 3
    hart.mmu.dmode = not hart.mmu.dmode
    assert cache.current() is not s2
    plain = CodeCache(hart, code)
    assert plain.key() == (C.PRV_S, 8 << 60 | 0x124)


def test_store_invalidation_flush_and_flush_page() -> None:
    hart, code = _hart()
    cache = CodeCache(hart, code, context=_Tracked)
    hart.priv = C.PRV_S
    hart.satp = 8 << 60 | 0x100
    hart.mmu.imode = True  # fetches translated: virtual pages are recorded
    ctx = cache.current()
    table, cid = ctx.tables[0], ctx.ids[0]
    for pc, ppn in ((0x1000, 0x80010), (0x1004, 0x80010), (0x2ffe, 0x80020)):
        table[pc] = pc
        cache.add(cid, pc, (ppn,) if pc != 0x2ffe else (0x80020, 0x80030), {pc >> 12})
    code.invalidate(0x80030)  # the second half of the straddling instruction
    assert 0x2FFE not in table and set(table) == {0x1000, 0x1004}
    cache.flush_page(0x1)
    assert not table and ctx.events == [(0x1000, 0x1004)]
    table[0x5000] = 1
    cache.flush(all_contexts=False, supervisor=False)  # S-mode contexts survive
    assert table and ctx.events[-1] != "cleared"
    cache.flush(all_contexts=False, supervisor=True)
    assert not table and ctx.events[-1] == "cleared"


def test_too_many_contexts_are_dropped_and_their_ids_reused() -> None:
    hart, code = _hart()
    cache = CodeCache(hart, code, max_contexts=4)
    hart.priv = C.PRV_U
    first = []
    for asid in range(4):
        hart.satp = 8 << 60 | asid << 44
        ctx = cache.current()
        ctx.tables[0][asid] = asid
        first.append(ctx)
    registered = len(code.caches)
    hart.satp = 8 << 60 | 99 << 44
    fresh = cache.current()
    assert len(cache.contexts) == 1 and all(not c.tables[0] for c in first)
    assert len(code.caches) == registered  # ids reused, nothing new registered
    assert code.caches[fresh.ids[0]] is fresh.tables[0]
    assert MAX_CONTEXTS == 64


def test_code_watch_drops_exactly_the_entries_a_write_overlaps() -> None:
    code = CodeWatch()
    t0, t1 = {}, {}
    c0, c1 = code.register(t0), code.register(t1)
    seen: list[tuple[int, int]] = []
    code.watchers.append(lambda ppn, mask: seen.append((ppn, mask)))
    ppn = 0x80001
    pa = ppn << 12
    assert not code.holds_code(pa, 8)
    for key, off, size in ((0x1000, 0, 4), (0x1004, 4, 2), (0x1ffe, 0xFFE, 2)):
        t0[key] = key
        code.add(ppn, c0, key, off, size)
    t1["blk"] = 1
    code.add(ppn, c1, "blk", 0, 6)  # a block over the first two instructions
    assert code.masks[ppn] == 1 | 1 << 511 and seen == [(ppn, 1), (ppn, 1 | 1 << 511)]
    code.written(pa + 0x800, 8)  # data next to code
    code.written(pa + 6, 2)  # same granule as code, other bytes
    assert set(t0) == {0x1000, 0x1004, 0x1ffe} and t1 and code.dropped == 0
    assert code.holds_code(pa + 6, 2) and not code.holds_code(pa + 8, 8)
    code.written(pa + 4, 1)  # the second instruction and the block
    assert set(t0) == {0x1000, 0x1ffe} and not t1 and code.dropped == 2
    code.invalidate_range(pa - 0x10, 0x14)  # DMA over the first instruction
    assert set(t0) == {0x1ffe} and code.masks[ppn] == 1 << 511
    code.written(pa + 0xFFF, 1)
    assert not t0 and ppn not in code.masks and ppn not in code.pages and seen[-1] == (ppn, 0)


def _data_loop(w) -> None:
    # 0: sw a1, 0x400(a2) ; 4: addi a1, a1, 1 ; 8: addi a3, a3, -1 ; 12: bnez a3, 0 ; j .
    # a2 = BASE: the data word sits in the code's own page.
    w.put(BASE, [W.H.enc_s(0x23, 2, 12, 11, 0x400), W.addi(11, 11, 1), W.addi(13, 13, -1),
                 W.bne(13, 0, -12), W.J_SELF])
    w.hart.x[12] = BASE
    w.hart.x[13] = 500


def test_blocks_survive_stores_to_data_in_their_page() -> None:
    a, t = W.World("interp"), W.World("translate", threshold=2)
    for w in (a, t):
        _data_loop(w)
        w.engine.run(3000)
    assert t.state() == a.state()
    assert t.ram.read(BASE + 0x400, 4) == a.ram.read(BASE + 0x400, 4) == 499
    # Compiled once (the loop, then the final j .), never dropped, never recompiled.
    assert t.engine._context().recompiles == {BASE: 0, BASE + 16: 0}
    assert t.engine.revived == 0


def test_blocks_dropped_by_mmu_stores_are_revived_unchanged() -> None:
    t = W.World("translate", threshold=2)
    _data_loop(t)
    t.engine.run(100)
    assert t.engine.compiled == 1
    t.ram.write(BASE + 0x900, 4, 7)  # a device writes data next to the code: kept
    t.code.invalidate_range(BASE + 0x900, 4)
    assert t.engine._context().blocks
    t.code.invalidate_range(BASE + 4, 4)  # the same instruction written again: dropped
    assert not t.engine._context().blocks
    t.engine.run(3000)
    assert t.engine._context().recompiles[BASE] == 0 and t.engine.revived >= 1
    # A changed instruction is not revived: addi a1, a1, 1 -> addi a1, a1, 2.
    t.hart.x[13], t.hart.pc = 10, BASE
    t.ram.write(BASE + 4, 4, W.addi(11, 11, 2))
    t.code.invalidate_range(BASE + 4, 4)
    before = t.hart.x[11]
    t.engine.run(200)
    assert t.hart.x[11] == before + 20
