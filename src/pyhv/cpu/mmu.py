"""Address translation (Sv39/Sv48) and the guest load/store paths.

This is a hot path: every guest load and store goes through one of the ``load_*`` /
``store_*`` methods. The fast path is a dict lookup in a software TLB (keyed by virtual
page, holding the physical page address) and an index into a typed view of guest RAM;
misaligned accesses, page-crossing accesses and MMIO take the slow path.

TLBs are kept per translation context (effective privilege, SUM, MXR), so toggling SUM in
the kernel's uaccess helpers flushes nothing; SFENCE.VMA and satp writes flush them all.
Stores into pages that hold decoded instructions notify the code watcher, which drops
the decoded instructions whose bytes they overlap (self-modifying code, loaders,
FENCE.I-free kernels), and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..isa import csr as C
from ..memory.bus import Bus
from ..memory.ram import GuestRAM
from .trap import (
    INSN_ACCESS_FAULT,
    INSN_PAGE_FAULT,
    LOAD_ACCESS_FAULT,
    LOAD_PAGE_FAULT,
    STORE_ACCESS_FAULT,
    STORE_PAGE_FAULT,
    Trap,
)

if TYPE_CHECKING:
    from .hart import Hart

FETCH, LOAD, STORE = 0, 1, 2
_PAGE_FAULT = (INSN_PAGE_FAULT, LOAD_PAGE_FAULT, STORE_PAGE_FAULT)
_ACCESS_FAULT = (INSN_ACCESS_FAULT, LOAD_ACCESS_FAULT, STORE_ACCESS_FAULT)

PTE_V, PTE_R, PTE_W, PTE_X, PTE_U, PTE_G, PTE_A, PTE_D = (1 << i for i in range(8))
_PTE_RESERVED = 0x3FF << 54  # N, PBMT and reserved bits: no Svnapot/Svpbmt here
_PPN_MASK = (1 << 44) - 1
M64 = (1 << 64) - 1


GRANULE = 8  # bytes of a page per bit of a code mask (an aligned store of <= 8 bytes hits one)
# Writes over code in one page, with no code added there meanwhile, after which the next
# one also drops all code after it in the page (CodeWatch.written).
SWEEP_HITS = 4


def granule_mask(off: int, size: int) -> int:
    """The bits of a page's code mask that bytes [off, off + size) of the page touch."""
    first = off // GRANULE
    last = (off + size - 1) // GRANULE
    return ((1 << (last - first + 1)) - 1) << first


class CodeWatch:
    """Which bytes of guest RAM hold code that was decoded or translated, shared by all
    harts of a machine (QEMU keeps the same per-page record of translated bytes).

    Every engine registers what it built (a decoded instruction, a block, a function)
    with the byte range it came from: ``add(ppn, cache id, key, off, size)``. A write by
    any hart, the page walker, a device (DMA) or a loader drops exactly the entries
    whose bytes it overlaps (``written``, ``invalidate_range``), popping their keys from
    the registered caches; a write to other bytes of the same page leaves them alone,
    so data that shares a page with code costs nothing.

    One exception to "exactly": a page whose code is being written over piece after
    piece (``SWEEP_HITS`` writes that each dropped something, and no code added there
    in between: an exec copying a program over pages that held another's, a page
    reused) also loses the code after the fourth write's bytes, so the rest of the sweep
    runs without a trip to Python at each piece. Code that a guest patches now and then
    (or a JIT inside it that regenerates a few blocks and runs them) is not swept.

    ``masks[ppn]`` is a quick summary per page: bit g set when bytes [8g, 8g + 8) hold
    registered code. Stores ask it first; ``watchers(ppn, mask)`` are told whenever it
    changes (0: the page holds no code any more), so native code can keep a copy.
    """

    def __init__(self) -> None:
        # ppn -> {(cache id, key): [[lo, hi], ...] byte ranges of the page}
        self.pages: dict[int, dict[tuple[int, Any], list[list[int]]]] = {}
        self.masks: dict[int, int] = {}
        self.caches: list[dict] = []
        self.watchers: list[Callable[[int, int], None]] = []
        self.dropped = 0  # entries dropped by writes (statistics)
        # ppn -> writes over its code since code was last added there (see written)
        self._sweeps: dict[int, int] = {}
        self.sweeps = 0  # pages whose code a sweep of writes dropped (statistics)

    def register(self, cache: dict) -> int:
        self.caches.append(cache)
        return len(self.caches) - 1

    def add(self, ppn: int, cache_id: int, key: Any, off: int = 0, size: int = 0x1000) -> None:
        """Entry ``key`` of cache ``cache_id`` was built from bytes [off, off + size) of
        physical page ``ppn`` (by default the whole page)."""
        entries = self.pages.get(ppn)
        if entries is None:
            entries = self.pages[ppn] = {}
        if self._sweeps:
            self._sweeps.pop(ppn, None)  # code runs here again: no sweep under way
        end = off + size
        ranges = entries.get((cache_id, key))
        if ranges is None:
            entries[(cache_id, key)] = [[off, end]]
        else:
            last = ranges[-1]
            if last[0] <= off <= last[1]:
                if end > last[1]:
                    last[1] = end
            elif not any(r[0] <= off and end <= r[1] for r in ranges):
                ranges.append([off, end])
        old = self.masks.get(ppn, 0)
        mask = old | granule_mask(off, size)
        if mask != old:
            self.masks[ppn] = mask
            for watcher in self.watchers:
                watcher(ppn, mask)

    def holds_code(self, pa: int, size: int) -> bool:
        """Whether bytes [pa, pa + size) (within one page) may hold registered code."""
        mask = self.masks.get(pa >> 12)
        return mask is not None and bool(mask & granule_mask(pa & 0xFFF, size))

    def written(self, pa: int, size: int) -> None:
        """Bytes [pa, pa + size), within one page, were written: drop the code there."""
        mask = self.masks.get(pa >> 12)
        if mask is not None and mask & granule_mask(pa & 0xFFF, size):
            ppn, lo = pa >> 12, pa & 0xFFF
            hits = self._sweeps.get(ppn, 0) + 1
            if hits >= SWEEP_HITS:
                # The guest is writing over this page's code piece after piece (an exec
                # or a page reused): what follows in the page goes now, not one exit
                # per piece.
                del self._sweeps[ppn]
                self.sweeps += 1
                self._drop(ppn, lo, 0x1000)
                return
            if len(self._sweeps) >= 4096:
                self._sweeps.clear()
            self._sweeps[ppn] = hits
            self._drop(ppn, lo, lo + size)

    def _drop(self, ppn: int, lo: int, hi: int) -> None:
        """Drop the entries of page ``ppn`` that overlap bytes [lo, hi); recompute the
        page's mask from what is left."""
        entries = self.pages.get(ppn)
        if entries is None:
            return
        caches = self.caches
        gone = [k for k, ranges in entries.items()
                if any(r[0] < hi and lo < r[1] for r in ranges)]
        if not gone:
            return
        for k in gone:
            del entries[k]
            caches[k[0]].pop(k[1], None)
        self.dropped += len(gone)
        # Popping an entry may have dropped others of this page (a cache that forgets a
        # group of keys at once): recompute from what the page still holds.
        mask = 0
        for ranges in entries.values():
            for r in ranges:
                mask |= granule_mask(r[0], r[1] - r[0])
        if not entries:
            del self.pages[ppn]
        if mask:
            self.masks[ppn] = mask
        else:
            self.masks.pop(ppn, None)
        for watcher in self.watchers:
            watcher(ppn, mask)

    def invalidate(self, ppn: int) -> None:
        """Drop everything built from page ``ppn``."""
        self._drop(ppn, 0, 0x1000)

    def invalidate_range(self, paddr: int, length: int) -> None:
        """A device (DMA) or loader wrote guest RAM: drop code built from those bytes."""
        if length <= 0 or not self.masks:
            return
        end = paddr + length
        first, last = paddr >> 12, (end - 1) >> 12
        if last - first > len(self.masks):
            ppns = [p for p in self.masks if first <= p <= last]
        else:
            ppns = [p for p in range(first, last + 1) if p in self.masks]
        for ppn in ppns:
            base = ppn << 12
            lo = max(paddr, base) - base
            hi = min(end, base + 0x1000) - base
            if self.masks.get(ppn, 0) & granule_mask(lo, hi - lo):
                self._drop(ppn, lo, hi)


class Mmu:
    """One hart's view of memory: translation, permission checks and RAM/MMIO access."""

    def __init__(self, hart: Hart, ram: GuestRAM, bus: Bus, code: CodeWatch) -> None:
        self.hart = hart
        self.ram = ram
        self.bus = bus
        self.code = code
        self.code_pages = code.pages
        self.ram_base = ram.base
        self.ram_size = ram.size
        self.u8, self.u16, self.u32, self.u64 = ram.u8, ram.u16, ram.u32, ram.u64
        self.s8, self.s16, self.s32 = ram.s8, ram.s16, ram.s32
        self._tlbs: dict[tuple[int, int, int], tuple[dict, dict]] = {}
        self._itlbs: dict[int, dict] = {}
        self.tlb_r: dict[int, int] = {}
        self.tlb_w: dict[int, int] = {}
        self.tlb_x: dict[int, int] = {}
        self.dmode = False  # data accesses translated
        self.imode = False  # instruction fetches translated
        self.dpriv = C.PRV_M
        self._superpages = False  # some TLB entry was splintered from a superpage
        self.update_mode()

    # -- translation context -------------------------------------------------------

    def update_mode(self) -> None:
        """Recompute the translation context after a priv, mstatus or satp change."""
        h = self.hart
        mode = h.satp >> 60
        priv = h.priv
        ms = h.mstatus
        dpriv = priv
        if priv == C.PRV_M and ms & C.MSTATUS_MPRV:
            dpriv = (ms >> C.MSTATUS_MPP_SHIFT) & 3
        self.dpriv = dpriv
        self.dmode = mode != 0 and dpriv != C.PRV_M
        self.imode = mode != 0 and priv != C.PRV_M
        key = (dpriv, 1 if ms & C.MSTATUS_SUM else 0, 1 if ms & C.MSTATUS_MXR else 0)
        pair = self._tlbs.get(key)
        if pair is None:
            pair = self._tlbs[key] = ({}, {})
        self.tlb_r, self.tlb_w = pair
        itlb = self._itlbs.get(priv)
        if itlb is None:
            itlb = self._itlbs[priv] = {}
        self.tlb_x = itlb

    def flush(self) -> None:
        """SFENCE.VMA / satp write: forget every cached translation."""
        for r, w in self._tlbs.values():
            r.clear()
            w.clear()
        for x in self._itlbs.values():
            x.clear()
        self._superpages = False

    def flush_page(self, vpn: int) -> None:
        """SFENCE.VMA of one address. TLB entries are 4 KiB splinters, so if any came
        from a superpage, the other splinters of it may be stale too: flush everything."""
        if self._superpages:
            self.flush()
            return
        for r, w in self._tlbs.values():
            r.pop(vpn, None)
            w.pop(vpn, None)
        for x in self._itlbs.values():
            x.pop(vpn, None)

    def walk(self, va: int, access: int, priv: int) -> int:
        """Translate ``va`` for ``access`` at privilege ``priv``; return the physical page.

        Implements the Sv39/Sv48 walk of privileged spec 4.3.2, with hardware A/D update
        (as QEMU does). Raises the page fault or access fault the spec prescribes.
        """
        h = self.hart
        satp = h.satp
        mode = satp >> 60
        levels = 3 if mode == C.SATP_MODE_SV39 else 4
        vabits = 12 + 9 * levels
        top = va >> (vabits - 1)
        if top != 0 and top != (M64 >> (vabits - 1)):
            raise Trap(_PAGE_FAULT[access], va)
        ms = h.mstatus
        a = (satp & _PPN_MASK) << 12
        ram = self.ram
        for level in range(levels - 1, -1, -1):
            pte_addr = a + ((va >> (12 + 9 * level)) & 0x1FF) * 8
            if not ram.contains(pte_addr, 8):
                raise Trap(_ACCESS_FAULT[access], va)
            off = pte_addr - self.ram_base
            pte = self.u64[off >> 3]
            if not pte & PTE_V or (not pte & PTE_R and pte & PTE_W) or pte & _PTE_RESERVED:
                raise Trap(_PAGE_FAULT[access], va)
            if not pte & (PTE_R | PTE_X):
                if level == 0:
                    raise Trap(_PAGE_FAULT[access], va)
                a = ((pte >> 10) & _PPN_MASK) << 12
                continue
            # Leaf: permission checks.
            if priv == C.PRV_U:
                if not pte & PTE_U:
                    raise Trap(_PAGE_FAULT[access], va)
            elif pte & PTE_U and (access == FETCH or not ms & C.MSTATUS_SUM):
                raise Trap(_PAGE_FAULT[access], va)
            if access == FETCH:
                ok = pte & PTE_X
            elif access == LOAD:
                ok = pte & PTE_R or (ms & C.MSTATUS_MXR and pte & PTE_X)
            else:
                ok = pte & PTE_W
            if not ok:
                raise Trap(_PAGE_FAULT[access], va)
            ppn = (pte >> 10) & _PPN_MASK
            low = (1 << (9 * level)) - 1
            if ppn & low:  # misaligned superpage
                raise Trap(_PAGE_FAULT[access], va)
            new = pte | PTE_A | (PTE_D if access == STORE else 0)
            if new != pte:
                self.u64[off >> 3] = new
                if pte_addr >> 12 in self.code_pages:
                    self.code.written(pte_addr, 8)
            if level:
                self._superpages = True
            return (ppn | ((va >> 12) & low)) << 12
        raise Trap(_PAGE_FAULT[access], va)  # unreachable: level 0 handled above

    def debug_translate(self, va: int) -> int | None:
        """The physical address a debugger means by ``va`` (gdb's memory reads): the
        hart's current data translation, walked without permission checks and without
        setting A/D bits (a look must not change the guest); None where nothing maps."""
        if not self.dmode:
            return va & M64
        satp = self.hart.satp
        levels = 3 if satp >> 60 == C.SATP_MODE_SV39 else 4
        vabits = 12 + 9 * levels
        top = va >> (vabits - 1)
        if top != 0 and top != (M64 >> (vabits - 1)):
            return None
        a = (satp & _PPN_MASK) << 12
        for level in range(levels - 1, -1, -1):
            pte_addr = a + ((va >> (12 + 9 * level)) & 0x1FF) * 8
            if not self.ram.contains(pte_addr, 8):
                return None
            pte = self.u64[(pte_addr - self.ram_base) >> 3]
            if not pte & PTE_V:
                return None
            ppn = (pte >> 10) & _PPN_MASK
            if pte & (PTE_R | PTE_X):
                low = (1 << (12 + 9 * level)) - 1
                return (ppn << 12 & ~low) | (va & low)
            a = ppn << 12
        return None

    def _fill(self, va: int, access: int) -> int:
        page = self.walk(va, access, self.dpriv)
        (self.tlb_w if access == STORE else self.tlb_r)[va >> 12] = page
        return page

    def translate(self, va: int, access: int) -> int:
        """Physical address for a data access (slow path helper, any alignment)."""
        if not self.dmode:
            return va
        tlb = self.tlb_w if access == STORE else self.tlb_r
        page = tlb.get(va >> 12)
        if page is None:
            page = self._fill(va, access)
        return page | (va & 0xFFF)

    def translate_fetch(self, va: int) -> int:
        if not self.imode:
            return va
        page = self.tlb_x.get(va >> 12)
        if page is None:
            page = self.walk(va, FETCH, self.hart.priv)
            self.tlb_x[va >> 12] = page
        return page | (va & 0xFFF)

    # -- instruction fetch ------------------------------------------------------------

    def fetch16(self, va: int) -> tuple[int, int]:
        """Fetch a 16-bit parcel: (value, physical address). Raises fetch faults."""
        pa = self.translate_fetch(va)
        off = pa - self.ram_base
        if 0 <= off < self.ram_size - 1:
            return self.ram.read(pa, 2), pa
        value = self.bus.read(pa, 2)
        if value is None:
            raise Trap(INSN_ACCESS_FAULT, va)
        return value, pa

    # -- data access slow paths -----------------------------------------------------------

    def _slow_load(self, va: int, size: int) -> int:
        if (va & 0xFFF) + size > 0x1000:  # crosses a page: bytewise, each translated
            value = 0
            for i in range(size):
                value |= self._slow_load((va + i) & M64, 1) << (8 * i)
            return value
        pa = self.translate(va, LOAD)
        if self.ram.contains(pa, size):
            return self.ram.read(pa, size)
        got = self.bus.read(pa, size)
        if got is None:
            raise Trap(LOAD_ACCESS_FAULT, va)
        return got

    def _slow_store(self, va: int, size: int, value: int) -> None:
        if (va & 0xFFF) + size > 0x1000:
            # Translate both pages first, so a fault leaves memory untouched.
            self.translate(va, STORE)
            self.translate((va + size - 1) & M64, STORE)
            for i in range(size):
                self._slow_store((va + i) & M64, 1, value >> (8 * i))
            return
        pa = self.translate(va, STORE)
        if self.ram.contains(pa, size):
            self.ram.write(pa, size, value)
            if pa >> 12 in self.code_pages:
                self.code.written(pa, size)
            return
        if not self.bus.write(pa, size, value):
            raise Trap(STORE_ACCESS_FAULT, va)

    def check_store(self, va: int, size: int) -> int:
        """Translate + check a store target without storing (AMOs, SC). Returns pa."""
        return self.translate(va, STORE)

    # -- data access fast paths (hot) ---------------------------------------------------------

    def load_u64(self, va: int) -> int:
        if self.dmode:
            page = self.tlb_r.get(va >> 12)
            if page is None:
                page = self._fill(va, LOAD)
            off = (page | (va & 0xFFF)) - self.ram_base
        else:
            off = va - self.ram_base
        if not off & 7 and 0 <= off < self.ram_size:
            return self.u64[off >> 3]
        return self._slow_load(va, 8)

    def load_u32(self, va: int) -> int:
        if self.dmode:
            page = self.tlb_r.get(va >> 12)
            if page is None:
                page = self._fill(va, LOAD)
            off = (page | (va & 0xFFF)) - self.ram_base
        else:
            off = va - self.ram_base
        if not off & 3 and 0 <= off < self.ram_size:
            return self.u32[off >> 2]
        return self._slow_load(va, 4)

    def load_s32(self, va: int) -> int:
        if self.dmode:
            page = self.tlb_r.get(va >> 12)
            if page is None:
                page = self._fill(va, LOAD)
            off = (page | (va & 0xFFF)) - self.ram_base
        else:
            off = va - self.ram_base
        if not off & 3 and 0 <= off < self.ram_size:
            return self.s32[off >> 2] & M64
        v = self._slow_load(va, 4)
        return v | 0xFFFFFFFF00000000 if v & 0x80000000 else v

    def load_u16(self, va: int) -> int:
        if self.dmode:
            page = self.tlb_r.get(va >> 12)
            if page is None:
                page = self._fill(va, LOAD)
            off = (page | (va & 0xFFF)) - self.ram_base
        else:
            off = va - self.ram_base
        if not off & 1 and 0 <= off < self.ram_size:
            return self.u16[off >> 1]
        return self._slow_load(va, 2)

    def load_s16(self, va: int) -> int:
        v = self.load_u16(va)
        return v | 0xFFFFFFFFFFFF0000 if v & 0x8000 else v

    def load_u8(self, va: int) -> int:
        if self.dmode:
            page = self.tlb_r.get(va >> 12)
            if page is None:
                page = self._fill(va, LOAD)
            off = (page | (va & 0xFFF)) - self.ram_base
        else:
            off = va - self.ram_base
        if 0 <= off < self.ram_size:
            return self.u8[off]
        return self._slow_load(va, 1)

    def load_s8(self, va: int) -> int:
        v = self.load_u8(va)
        return v | 0xFFFFFFFFFFFFFF00 if v & 0x80 else v

    def store_u64(self, va: int, value: int) -> None:
        if self.dmode:
            page = self.tlb_w.get(va >> 12)
            if page is None:
                page = self._fill(va, STORE)
            pa = page | (va & 0xFFF)
        else:
            pa = va
        off = pa - self.ram_base
        if not off & 7 and 0 <= off < self.ram_size:
            self.u64[off >> 3] = value
            if pa >> 12 in self.code_pages:
                self.code.written(pa, 8)
            return
        self._slow_store(va, 8, value)

    def store_u32(self, va: int, value: int) -> None:
        if self.dmode:
            page = self.tlb_w.get(va >> 12)
            if page is None:
                page = self._fill(va, STORE)
            pa = page | (va & 0xFFF)
        else:
            pa = va
        off = pa - self.ram_base
        if not off & 3 and 0 <= off < self.ram_size:
            self.u32[off >> 2] = value & 0xFFFFFFFF
            if pa >> 12 in self.code_pages:
                self.code.written(pa, 4)
            return
        self._slow_store(va, 4, value & 0xFFFFFFFF)

    def store_u16(self, va: int, value: int) -> None:
        if self.dmode:
            page = self.tlb_w.get(va >> 12)
            if page is None:
                page = self._fill(va, STORE)
            pa = page | (va & 0xFFF)
        else:
            pa = va
        off = pa - self.ram_base
        if not off & 1 and 0 <= off < self.ram_size:
            self.u16[off >> 1] = value & 0xFFFF
            if pa >> 12 in self.code_pages:
                self.code.written(pa, 2)
            return
        self._slow_store(va, 2, value & 0xFFFF)

    def store_u8(self, va: int, value: int) -> None:
        if self.dmode:
            page = self.tlb_w.get(va >> 12)
            if page is None:
                page = self._fill(va, STORE)
            pa = page | (va & 0xFFF)
        else:
            pa = va
        off = pa - self.ram_base
        if 0 <= off < self.ram_size:
            self.u8[off] = value & 0xFF
            if pa >> 12 in self.code_pages:
                self.code.written(pa, 1)
            return
        self._slow_store(va, 1, value & 0xFF)
