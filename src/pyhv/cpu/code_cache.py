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
* **Physical bytes.** Every table is registered with the machine's
  :class:`~pyhv.cpu.mmu.CodeWatch`, and :meth:`CodeCache.add` records the bytes of the
  physical pages an entry came from: a store into them (by any hart, the page walker, a
  device or a loader) drops the entry; a store to other bytes of the page does not.
* **Virtual pages.** Where fetches are translated, :meth:`CodeCache.add` also records the
  virtual pages an entry spans, so SFENCE.VMA of one page (:meth:`CodeCache.flush_page`)
  drops exactly what was fetched through it; a full SFENCE.VMA or a reset drops whole
  contexts (:meth:`CodeCache.flush`).
* **Stores next to code**, for engines that store to RAM inline: :class:`CodePages`
  (which RAM pages hold code: a list the store indexes) tells when to ask the
  CodeWatch, which leaves code alone when the store wrote none of it.

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

    def add(self, cid: int, pc: int, ppns: Iterable[int], vpns: Iterable[int],
            spans: Iterable[tuple[int, int, int]] | None = None) -> None:
        """Record that the entry at ``pc`` of table ``cid`` was built from the physical
        pages ``ppns`` (exactly: from the bytes ``spans``, as (ppn, offset, size)),
        fetched through the virtual pages ``vpns``."""
        add = self.code.add
        if spans is None:
            for ppn in ppns:
                add(ppn, cid, pc)
        else:
            for ppn, off, size in spans:
                add(ppn, cid, pc, off, size)
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

    def add_insn(self, cid: int, pc: int, pa: int, ppns: tuple[int, ...], length: int
                 ) -> None:
        """:meth:`add` for one instruction of ``length`` bytes at ``pc``, physical ``pa``
        (``ppns``: its physical pages, two if it straddles a page boundary; the decode
        path of an interpreter: the virtual pages are only worked out when needed)."""
        for ppn, off, size in insn_spans(pa, length, ppns):
            self.code.add(ppn, cid, pc, off, size)
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


def insn_spans(pa: int, length: int, ppns: tuple[int, ...] | list[int]
               ) -> tuple[tuple[int, int, int], ...]:
    """The bytes of an instruction at physical ``pa`` as (ppn, offset, size) per page
    (``ppns``: the physical pages it came from, two if it straddles a page boundary)."""
    off = pa & 0xFFF
    if off + length <= 0x1000:
        return ((pa >> 12, off, length),)
    first = 0x1000 - off
    return ((pa >> 12, off, first), (ppns[-1], 0, length - first))


def merge_spans(spans: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """(ppn, offset, size) spans with touching or overlapping ones of a page merged."""
    out: list[list[int]] = []
    for ppn, off, size in sorted(spans):
        if out and out[-1][0] == ppn and off <= out[-1][1] + out[-1][2]:
            last = out[-1]
            last[2] = max(last[2], off + size - last[1])
        else:
            out.append([ppn, off, size])
    return [(p, o, n) for p, o, n in out]


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
        for ppn, mask in code.masks.items():
            self.watch(ppn, mask)
        code.watchers.append(self.watch)

    def watch(self, ppn: int, mask: int) -> None:
        i = ppn - self.first
        if 0 <= i < len(self.map):
            self.map[i] = mask != 0


__all__ = ["MAX_CONTEXTS", "CodeCache", "CodeContext", "CodePages", "insn_spans", "merge_spans"]
