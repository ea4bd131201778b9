"""The decoded-code cache one engine keeps for one hart, shared by every engine.

What an engine builds from guest code (the interpreter's closures, the translator's
blocks, ...) is only valid in the translation context it was fetched in, and only while
the memory it came from is unchanged. This module does that bookkeeping once:

* **Contexts.** One :class:`CodeContext` per translation context: the privilege level,
  ``satp`` (0 in M-mode, where fetches are not translated) and, for engines that inline
  guest RAM accesses, whether data accesses are translated (``mmu.dmode``: MPRV). Each
  context holds ``tables``: dicts keyed by virtual pc (an engine may keep several, e.g.
  compiled blocks and decoded instructions). Past ``MAX_CONTEXTS`` contexts (a guest
  cycling through address spaces) all are dropped and their tables reused.
* **Physical pages.** Every table is registered with the machine's
  :class:`~pyhv.cpu.mmu.CodeWatch`, and :meth:`CodeCache.add` records the physical pages
  an entry came from: a store into one of them (by any hart, the page walker, a device
  or a loader) drops the entry.
* **Virtual pages.** Where fetches are translated, :meth:`CodeCache.add` also records the
  virtual pages an entry spans, so SFENCE.VMA of one page (:meth:`CodeCache.flush_page`)
  drops exactly what was fetched through it; a full SFENCE.VMA or a reset drops whole
  contexts (:meth:`CodeCache.flush`).
* **Stores next to code**, for engines that store to RAM inline: :class:`CodePages`
  (which RAM pages hold code: a list the store indexes) and :class:`CodeBytes` (which
  bytes of such a page hold instructions) let a store leave code alone when it wrote
  none of it.

The engine's hot loop only does ``ctx = cache.current()`` when it (re)enters its loop
(after a trap, a context change, a new slice) and then plain dict lookups in
``ctx.tables``; nothing here runs per instruction.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..isa import csr as C

if TYPE_CHECKING:
    from .hart import Hart
    from .mmu import CodeWatch

MAX_CONTEXTS = 64  # translation contexts kept per hart before all are dropped

ContextKey = tuple[int, int] | tuple[int, int, bool]


class CodeContext:
    """The tables of one translation context; engines may subclass it to keep more
    per-context state, reset by :meth:`cleared`."""

    __slots__ = ("ids", "tables")

    def __init__(self, tables: tuple[dict[int, Any], ...], ids: tuple[int, ...]) -> None:
        self.tables = tables
        self.ids = ids  # each table's CodeWatch cache id

    def cleared(self) -> None:
        """Hook: the tables were flushed (SFENCE.VMA, reset), not invalidated by a store."""

    def forget(self, pcs: list[int]) -> None:
        """Hook: the entries at ``pcs`` were dropped by an SFENCE.VMA of their page."""


class CodeCache:
    """Per-context tables of one engine for one hart (see the module docstring).

    ``tables``: how many dicts each context holds; ``context``: the class of the contexts
    (:class:`CodeContext` or a subclass taking the same constructor arguments);
    ``by_data_mode``: whether data translation (MPRV) is part of the context key.
    """

    def __init__(
        self,
        hart: Hart,
        code: CodeWatch,
        tables: int = 1,
        context: type[CodeContext] = CodeContext,
        by_data_mode: bool = False,
        max_contexts: int = MAX_CONTEXTS,
    ) -> None:
        self.hart = hart
        self.code = code
        self.n_tables = tables
        self.context_class = context
        self.by_data_mode = by_data_mode
        self.max_contexts = max_contexts
        self.contexts: dict[ContextKey, CodeContext] = {}
        self._free_ids: list[tuple[int, ...]] = []
        # Per registered cache id: virtual page -> pcs from it, for SFENCE.VMA of a page.
        self._vpages: dict[int, dict[int, list[int]]] = {}

    def key(self) -> ContextKey:
        """The hart's current translation context."""
        hart = self.hart
        priv = hart.priv
        satp = hart.satp if priv != C.PRV_M else 0
        if self.by_data_mode:
            return (priv, satp, hart.mmu.dmode)
        return (priv, satp)

    def current(self) -> CodeContext:
        """The context the hart is in now (created, with empty tables, if new)."""
        key = self.key()
        ctx = self.contexts.get(key)
        if ctx is None:
            ctx = self._new_context(key)
        return ctx

    def _new_context(self, key: ContextKey) -> CodeContext:
        if len(self.contexts) >= self.max_contexts:
            for old in self.contexts.values():
                for table in old.tables:
                    table.clear()
                for cid in old.ids:
                    self._vpages.pop(cid, None)
                self._free_ids.append(old.ids)
            self.contexts.clear()
        tables: tuple[dict[int, Any], ...] = tuple({} for _ in range(self.n_tables))
        if self._free_ids:
            ids = self._free_ids.pop()
            for cid, table in zip(ids, tables, strict=True):
                self.code.caches[cid] = table
        else:
            ids = tuple(self.code.register(table) for table in tables)
        ctx = self.contexts[key] = self.context_class(tables, ids)
        return ctx

    def add(self, cid: int, pc: int, ppns: Iterable[int], vpns: Iterable[int]) -> None:
        """Record that the entry at ``pc`` of table ``cid`` was built from the physical
        pages ``ppns``, fetched through the virtual pages ``vpns``."""
        add = self.code.add
        for ppn in ppns:
            add(ppn, cid, pc)
        if self.hart.mmu.imode:
            vpages = self._vpages.get(cid)
            if vpages is None:
                vpages = self._vpages[cid] = {}
            for vpn in vpns:
                pcs = vpages.get(vpn)
                if pcs is None:
                    vpages[vpn] = [pc]
                else:
                    pcs.append(pc)

    def add_insn(self, cid: int, pc: int, ppns: Iterable[int], length: int) -> None:
        """:meth:`add` for one instruction of ``length`` bytes at ``pc`` (the decode
        path of an interpreter: the virtual pages are only worked out when needed)."""
        add = self.code.add
        for ppn in ppns:
            add(ppn, cid, pc)
        if self.hart.mmu.imode:
            last = ((pc + length - 1) & 0xFFFFFFFFFFFFFFFF) >> 12
            vpn = pc >> 12
            self.add(cid, pc, (), (vpn,) if last == vpn else (vpn, last))

    def flush(self, all_contexts: bool = True, supervisor: bool = True) -> None:
        """Drop what was built: everything, or what was fetched through translation.

        With ``all_contexts`` False only translated contexts (S and U) are dropped, and
        S-mode ones only if ``supervisor``.
        """
        for key, ctx in self.contexts.items():
            priv = key[0]
            if all_contexts or priv == C.PRV_U or (priv == C.PRV_S and supervisor):
                for cid, table in zip(ctx.ids, ctx.tables, strict=True):
                    table.clear()
                    vpages = self._vpages.get(cid)
                    if vpages:
                        vpages.clear()
                ctx.cleared()

    def flush_page(self, vpn: int) -> None:
        """SFENCE.VMA of one virtual page: drop what was fetched through it."""
        for key, ctx in self.contexts.items():
            if key[0] == C.PRV_M:
                continue
            for cid, table in zip(ctx.ids, ctx.tables, strict=True):
                vpages = self._vpages.get(cid)
                pcs = vpages.pop(vpn, None) if vpages else None
                if pcs:
                    for pc in pcs:
                        table.pop(pc, None)
                    ctx.forget(pcs)


class CodeBytes:
    """Which bytes of each physical page hold instructions, for one CodeWatch.

    A store into a page holding code drops everything built from that page (CodeWatch).
    Guests often keep written data in the same 4 KiB page as code (a small program's
    ``.data`` right after its ``.text``), and then each store into that data would drop
    and rebuild the code. Engines that register entries through :meth:`mark` as well
    record which bytes their instructions occupy, so a store can first ask :meth:`clean`:
    True when every entry the CodeWatch holds for the page was marked here and none of
    them occupies the stored bytes, i.e. nothing decoded can be stale (QEMU keeps a
    similar bitmap of code per page). Entries registered by anyone else make the page
    "unknown" (False) until it is invalidated. One instance per CodeWatch, shared by all
    the engines (harts) that use it: :meth:`of`.
    """

    _instances: weakref.WeakKeyDictionary[Any, CodeBytes] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, code: CodeWatch) -> CodeBytes:
        inst = cls._instances.get(code)
        if inst is None:
            inst = cls._instances[code] = cls(code)
        return inst

    def __init__(self, code: CodeWatch) -> None:
        self.code = code
        # ppn -> [the CodeWatch's entry set for the page when marked, the marked
        # (cache id, key) entries in it, a 4096-byte map: nonzero = instruction byte]
        self.pages: dict[int, list[Any]] = {}

    def mark(self, ppn: int, cid: int, key: int, off: int, size: int) -> None:
        """Entry (``cid``, ``key``), just added to the CodeWatch for page ``ppn``, holds an
        instruction at bytes [off, off + size) of that page."""
        entries = self.code.pages.get(ppn)
        rec = self.pages.get(ppn)
        if rec is None or rec[0] is not entries:  # new, or the page was invalidated since
            rec = self.pages[ppn] = [entries, set(), bytearray(4096)]
        rec[1].add((cid, key))
        rec[2][off:off + size] = b"\x01" * size

    def mark_spans(self, cid: int, keys: Iterable[int], spans: Iterable[tuple[int, int, int]]
                   ) -> None:
        """:meth:`mark` for several entries (``keys``) built from the same instructions,
        given as (ppn, offset, size) spans: each byte is marked once, not once per entry."""
        keys = list(keys)
        by_page: dict[int, list[tuple[int, int]]] = {}
        for ppn, off, size in spans:
            by_page.setdefault(ppn, []).append((off, size))
        for ppn, pieces in by_page.items():
            entries = self.code.pages.get(ppn)
            rec = self.pages.get(ppn)
            if rec is None or rec[0] is not entries:
                rec = self.pages[ppn] = [entries, set(), bytearray(4096)]
            rec[1].update((cid, key) for key in keys)
            bytemap = rec[2]
            for off, size in pieces:
                bytemap[off:off + size] = b"\x01" * size

    def clean(self, ppn: int, off: int, size: int) -> bool:
        """Whether a store to bytes [off, off + size) of page ``ppn`` can leave the
        page's decoded code alone."""
        rec = self.pages.get(ppn)
        if rec is None:
            return False
        entries = self.code.pages.get(ppn)
        # Entries only ever leave a page all at once (CodeWatch.invalidate), so the
        # marked ones are a subset of the current set: equal sizes mean all are marked.
        if rec[0] is not entries or entries is None or len(entries) != len(rec[1]):
            return False
        return rec[2].find(1, off, off + size) < 0


class CodePages:
    """Which RAM pages hold code, as a list of bools (index: RAM offset >> 12), for one
    CodeWatch and RAM.

    The translator's inline stores ask it on every store (``if cpg[o >> 12]``): indexing
    a list is CPython's cheapest lookup, cheaper than a set lookup of the physical page
    number or a bytearray index. It mirrors ``CodeWatch.pages`` through the CodeWatch's
    watchers, which are told whenever a page starts or stops holding code. One instance
    per (CodeWatch, RAM): :meth:`of`.
    """

    _instances: weakref.WeakKeyDictionary[Any, dict[tuple[int, int], CodePages]] = (
        weakref.WeakKeyDictionary())

    @classmethod
    def of(cls, code: CodeWatch, ram_base: int, ram_size: int) -> CodePages:
        per_ram = cls._instances.get(code)
        if per_ram is None:
            per_ram = cls._instances[code] = {}
        inst = per_ram.get((ram_base, ram_size))
        if inst is None:
            inst = per_ram[(ram_base, ram_size)] = cls(code, ram_base, ram_size)
        return inst

    def __init__(self, code: CodeWatch, ram_base: int, ram_size: int) -> None:
        self.first = ram_base >> 12
        self.map = [False] * ((ram_size + 0xFFF) >> 12)
        for ppn in code.pages:
            self.watch(ppn, True)
        code.watchers.append(self.watch)

    def watch(self, ppn: int, holds_code: bool) -> None:
        i = ppn - self.first
        if 0 <= i < len(self.map):
            self.map[i] = holds_code


__all__ = ["MAX_CONTEXTS", "CodeBytes", "CodeCache", "CodeContext", "CodePages"]
