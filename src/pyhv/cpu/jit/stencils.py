"""The baseline tier: machine code for warm blocks in microseconds, by copy and patch.

A Linux boot runs ~80 M instructions, 94% of them in ~4,000 blocks that each run more
than 256 times (counted under QEMU), but LLVM, even in the quick tier, needs ~2.5 ms a
block: a boot is over before a tenth of them are compiled, and the rest ran in the
native interpreter (~7 ns an instruction, its dispatch a serial chain). So warm blocks
can get machine code the way CPython's copy-and-patch JIT makes it: each instruction the
native interpreter runs from its decoded cache (``native_interp.FAST_OPS``) is compiled
once, by LLVM, into a *stencil*: a small function whose register numbers, immediate
and pc offset are *holes*, external symbols that the object file leaves as relocations.
A block is then the stencils of its instructions copied one after another into
executable memory with their holes patched, each falling through into the next. Their
semantics are the native interpreter's own (``_Gen.fast_ops``, generated with the holes
in place of the decoded fields), so the two cannot disagree.

A baseline block counts its runs; when the count reaches the block's ``lim`` it asks
Python (EXIT_HOT), which asks the compiler for its quick LLVM block (compiled while the
compiler has nothing else to do) and, once the block ran ``codegen.OPT_AFTER``
instructions, for its optimised region, as a quick block would (engine._promote).
After its control transfer it goes on
to the block at the target through the dispatch table (as LLVM blocks chain), else to
the dispatcher, as it does before an instruction it does not do; an access its soft
TLB cannot do leaves before the instruction (EXIT_SLOW with the access noted), which
the dispatcher hands to the native interpreter, as for an LLVM block.

Stencils are built per data-translation mode (bare, soft TLB), kept in the runtime
directory like the dispatcher; the code lives in :class:`Arena`, which is emptied
(every baseline block dropped first) when it fills up, as QEMU flushes its code buffer.

On by default (``PYHV_JIT_BASELINE=0`` turns it off; engine.BASE_RUNS): a start the
native interpreter ran 256 times gets its baseline block at once, where it used to wait
for its quick LLVM block (~2 ms of the compiler's thread each, one after another), and
its region is asked for as soon as it ran enough; LLVM then compiles the regions of hot
loops first and quick blocks only when idle. A block costs ~0.1-0.2 ms of Python to
scan, build and link (a Linux boot builds ~800); building them natively would make
it cheaper still. x86-64 hosts only.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import marshal
import mmap
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

from ...isa import spec
from ...isa.decoder import Decoded, spin_hint
from . import perfmap
from . import state as S
from .codegen import ENDS, MAX_INSNS
from .loader import R_32, R_32S, R_64, R_PC32, R_PLT32
from .native_interp import FAST_OPS, _Gen

# Holes: external symbols with the value ranges LLVM may assume (absolute symbols).
# rd, rs1 and rs2 are byte offsets of x registers in the state (8 x number); pcoff and
# npcoff the instruction's pc and the next one's, less the block's start (which is in
# s->pc while a block runs); n the block's instructions, rem those from this one on.
HOLES: dict[str, tuple[int, int]] = {
    "rd": (0, 256), "rs1": (0, 256), "rs2": (0, 256),
    "imm": (-(1 << 31), 1 << 31), "pcoff": (0, 1 << 13), "npcoff": (0, 1 << 13),
    "n": (0, 1 << 16), "rem": (0, 1 << 16), "lim": (0, 1 << 31),
    # a branch's or jal's two ways out (a jal's one): the byte offset of the first
    # dispatch-table slot of the target's pair (Baseline.build)
    "tslot": (0, 32 * S.NDISPATCH), "fslot": (0, 32 * S.NDISPATCH)}
EXTERNAL = ("pyhv_refill", "pyhv_mmio_slot", "pyhv_granule_clear")  # the dispatcher's helpers
NEXT = "H_next"  # the next stencil (a jump, dropped where it falls through)
COUNT = "H_count"  # the block's run counter (RIP-relative, in the arena)
_WAYS = frozenset(("jal", *spec.BRANCHES))
_X0_ZERO = "store i64 0, ptr %s"  # (the interpreter's handlers: x0 is zero again)
# fast ops that write rd: each also has a stencil for an rd that is not x0
_WRITES_RD = frozenset(n for n in FAST_OPS
                       if n not in spec.BRANCHES and n not in spec.STORES)

# (x86-64 relocation types, loader.py: what a hole's bytes hold)

CHUNK = 1 << 20  # arena chunk: counters, trampolines, then code
NCOUNTERS = 4096
TRAMP = 16  # jmp *0(%rip); .quad target
CODE_START = NCOUNTERS * 4 + 0x4000  # code starts on a page of its own, past the counters
MAX_CHUNKS = 16  # then the arena is emptied (every baseline block dropped)
# A baseline block's code, at most (it has at most MAX_INSNS instructions, as any block,
# and no stencil is near 256 bytes)
MAX_BLOCK_BYTES = MAX_INSNS * 256




def host_supported() -> bool:
    """Stencils are x86-64 code patched with x86-64 relocations."""
    return os.uname().machine in ("x86_64", "AMD64")


_HOLE_OF = {"%qrd": "rd", "%qrs1": "rs1", "%qrs2": "rs2"}  # the interpreter's fields


class _StencilGen(_Gen):
    """The native interpreter's generator, made to emit one fast op as a stencil."""

    def xptr(self, r: str) -> str:
        return self.op(f"getelementptr i8, ptr %s, i64 ptrtoint (ptr @H_{_HOLE_OF[r]} to i64)")

    def ways_out(self, name: str, rd_x0: bool = True) -> str:
        """A branch's or jal's stencil: the condition (a branch), then each way's own
        tail, which sets the pc and goes on through the dispatch table to the block at
        that constant target, its table slot patched in at build time (a control
        transfer otherwise hashes the pc it computed at run time, and selects it)."""
        self.lines = []
        e = self.emit
        self.label("entry")
        e(f"%start = load i64, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.PC}')}")
        pc = self.op("add i64 %start, ptrtoint (ptr @H_pcoff to i64)")
        npc = self.op("add i64 %start, ptrtoint (ptr @H_npcoff to i64)")
        taken = self.op(f"add i64 {pc}, ptrtoint (ptr @H_imm to i64)")
        if name == "jal":
            e(f"store i64 {npc}, ptr {self.xptr('%qrd')}")
            if rd_x0:
                e(_X0_ZERO)
            self._way(taken, "t")
        else:
            a = self.op(f"load i64, ptr {self.xptr('%qrs1')}")
            b = self.op(f"load i64, ptr {self.xptr('%qrs2')}")
            e(f"br i1 {spec.llvm(name, self.op, a, b)}, label %wt, label %wf")
            self.label("wt")
            self._way(taken, "t")
            self.label("wf")
            self._way(npc, "f")
        return self._function(f"st_{name}" if rd_x0 else f"st_{name}_nz")

    def _way(self, target: str, way: str) -> None:
        e = self.emit
        self.set_field(S.PC, target)
        go = self.op(f"icmp sgt i64 {self.field(S.BUDGET)}, 0")
        if self.translated:  # (within its page only, as a control transfer's xfer)
            same = self.op(f"icmp ult i64 {self.op(f'xor i64 {target}, %start')}, 4096")
            go = self.op(f"and i1 {go}, {same}")
        e(f"br i1 {go}, label %c{way}, label %l{way}")
        self.label(f"c{way}")
        tab = self.field(S.TABLE, "ptr")
        off = f"ptrtoint (ptr @H_{way}slot to i64)"
        tag = self.op(f"or i64 {target}, 1")  # state.table_tag
        e0 = self.op(f"getelementptr i8, ptr {tab}, i64 {off}")
        hit0 = self.op(f"icmp eq i64 {self.op(f'load i64, ptr {e0}')}, {tag}")
        e(f"br i1 {hit0}, label %h{way}, label %o{way}")
        self.label(f"o{way}")
        e1 = self.op(f"getelementptr i8, ptr {tab}, i64 {self.op(f'xor i64 {off}, 32')}")
        hit1 = self.op(f"icmp eq i64 {self.op(f'load i64, ptr {e1}')}, {tag}")
        e(f"br i1 {hit1}, label %h{way}, label %l{way}")
        self.label(f"h{way}")
        ent = self.op(f"phi ptr [ {e0}, %c{way} ], [ {e1}, %o{way} ]")
        fn = self.op(f"load ptr, ptr {self.op(f'getelementptr i8, ptr {ent}, i64 8')}")
        e(f"%r{way} = musttail call preserve_nonecc i32 {fn}(ptr %s)")
        e(f"ret i32 %r{way}")
        self.label(f"l{way}")
        e(f"ret i32 {S.EXIT_CONTINUE}")

    def stencil(self, name: str, rd_x0: bool = True) -> str:
        """The stencil of fast op ``name``; without ``rd_x0``, for an ``rd`` that is
        not x0 (``st_NAME_nz``): the interpreter's handler writes rd, then zero to x0
        again (rd may be x0), a store that a block with rd known not to be x0 spares."""
        if name in spec.BRANCHES or name == "jal":
            return self.ways_out(name, rd_x0)
        self.lines = []
        e = self.emit
        self.label("entry")
        e("%pcv = alloca i64")
        e("%acc = alloca i64")
        e("%pfok = alloca i1")
        e(f"%start = load i64, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.PC}')}")
        e("%pc = add i64 %start, ptrtoint (ptr @H_pcoff to i64)")
        e("%npc = add i64 %start, ptrtoint (ptr @H_npcoff to i64)")
        e("%qimm = add i64 0, ptrtoint (ptr @H_imm to i64)")
        e(f"%ramhost = load ptr, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.RAM_HOST}')}")
        e(f"%ramsize = load i64, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.RAM_SIZE}')}")
        e(f"%codemap = load ptr, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.CODEMAP}')}")
        e(f"%codebits = load ptr, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.CODEBITS}')}")
        e(f"br label %q_{name}")
        body = len(self.lines)
        self.fast_ops()
        handlers = self.lines[body:]
        del self.lines[body:]
        # this op's handler: from its label to the next op's
        first = handlers.index(f"q_{name}:")
        end = next((i for i in range(first + 1, len(handlers))
                    if handlers[i].startswith("q_")), len(handlers))
        handler = handlers[first:end]
        if not rd_x0:
            handler = [ln for ln in handler if ln.strip() != _X0_ZERO]
        self.lines += handler
        self.label("next")
        e(f"%c = musttail call preserve_nonecc i32 @{NEXT}(ptr %s)")
        e("ret i32 %c")
        self.label("xfer")  # a control transfer: the block ends
        target = self.op("load i64, ptr %pcv")
        self.set_field(S.PC, target)
        # ... and goes on to the block at the target, if there is one and budget is
        # left, without the dispatcher: a tail call through the dispatch table, as an
        # LLVM block chains (a translated block only within its page, whose mapping
        # was checked when it was entered); else the dispatcher goes on
        go = self.op(f"icmp sgt i64 {self.field(S.BUDGET)}, 0")
        if self.translated:
            same = self.op(f"icmp ult i64 {self.op(f'xor i64 {target}, %start')}, 4096")
            go = self.op(f"and i1 {go}, {same}")
        e(f"br i1 {go}, label %chain, label %leave")
        self.label("chain")
        tab = self.field(S.TABLE, "ptr")
        slot = self.op(f"and i64 {self.op(f'lshr i64 {target}, 1')}, {S.NDISPATCH - 1}")
        e0, e1 = self.table_ways(tab, slot)
        want = self.op(f"or i64 {target}, 1")  # state.table_tag
        hit0 = self.op(f"icmp eq i64 {self.op(f'load i64, ptr {e0}')}, {want}")
        e(f"br i1 {hit0}, label %found, label %way2")
        self.label("way2")
        hit1 = self.op(f"icmp eq i64 {self.op(f'load i64, ptr {e1}')}, {want}")
        e(f"br i1 {hit1}, label %found, label %leave")
        self.label("found")
        ent = self.op(f"phi ptr [ {e0}, %chain ], [ {e1}, %way2 ]")
        fn = self.op(f"load ptr, ptr {self.op(f'getelementptr i8, ptr {ent}, i64 8')}")
        e(f"%cr = musttail call preserve_nonecc i32 {fn}(ptr %s)")
        e("ret i32 %cr")
        self.label("leave")
        e(f"ret i32 {S.EXIT_CONTINUE}")
        self.label("slowmem")  # leave before this instruction, its access noted
        self.set_field(S.EXIT_ACCESS, self.op("load i64, ptr %acc"))
        self.set_field(S.PC, "%pc")
        b = self.field(S.BUDGET)
        self.set_field(S.BUDGET, self.op(f"add i64 {b}, ptrtoint (ptr @H_rem to i64)"))
        e(f"ret i32 {S.EXIT_SLOW}")
        return self._function(f"st_{name}" if rd_x0 else f"st_{name}_nz")

    def enter(self) -> str:
        """A block's first stencil: count the run (at ``lim``, ask for the LLVM
        version, before doing anything); take the block's instructions from the
        budget."""
        self.lines = []
        e = self.emit
        self.label("entry")
        c = self.op(f"load i32, ptr @{COUNT}")
        c1 = self.op(f"add i32 {c}, 1")
        e(f"store i32 {c1}, ptr @{COUNT}")
        hot = self.op(f"icmp eq i32 {c1}, ptrtoint (ptr @H_lim to i32)")
        e(f"br i1 {hot}, label %hot, label %go")
        self.label("hot")
        e(f"ret i32 {S.EXIT_HOT}")
        self.label("go")
        b = self.field(S.BUDGET)
        self.set_field(S.BUDGET, self.op(f"sub i64 {b}, ptrtoint (ptr @H_n to i64)"))
        e(f"%c = musttail call preserve_nonecc i32 @{NEXT}(ptr %s)")
        e("ret i32 %c")
        return self._function("st_enter")

    def leave(self) -> str:
        """A block's last stencil where it ends before an instruction it does not do
        (or at its page's end): the dispatcher goes on there."""
        self.lines = []
        self.label("entry")
        start = self.field(S.PC)
        self.set_field(S.PC, self.op(f"add i64 {start}, ptrtoint (ptr @H_pcoff to i64)"))
        self.emit(f"ret i32 {S.EXIT_CONTINUE}")
        return self._function("st_leave")

    def _function(self, name: str) -> str:
        body = "\n".join(self.lines)
        return f"define preserve_nonecc i32 @{name}(ptr noalias %s) #0 {{\n{body}\n}}\n"


def stencil_ir(translated: bool) -> str:
    """The stencil module of one data-translation mode."""
    g = _StencilGen(translated)
    parts = [g.stencil(name) for name in FAST_OPS]
    parts += [g.stencil(name, rd_x0=False) for name in FAST_OPS if name in _WRITES_RD]
    parts += [g.enter(), g.leave()]
    decls = [f"@H_{h} = external dso_local global i8, !absolute_symbol !{i}"
             for i, h in enumerate(HOLES)]
    decls += [f"@{COUNT} = external dso_local global i32",
              f"declare preserve_nonecc i32 @{NEXT}(ptr)",
              "declare dso_local i1 @pyhv_refill(ptr, i64, i64)",
              "declare dso_local ptr @pyhv_mmio_slot(ptr, i64, i64)",
              "declare dso_local i1 @pyhv_granule_clear(ptr, i64)"]
    meta = [f"!{i} = !{{i64 {lo}, i64 {hi}}}" for i, (lo, hi) in enumerate(HOLES.values())]
    return ("\n".join(decls) + '\nattributes #0 = { nounwind "frame-pointer"="none" }\n'
            + "\n".join(parts) + "\n".join(meta) + "\n")


# What a hole's value is, for a patch: one of the HOLES (its index), or these
_NEXT_AT, _COUNT_AT, _TRAMP_AT = len(HOLES), len(HOLES) + 1, len(HOLES) + 2
_FITS = {R_32: (0, 1 << 32), R_32S: (-(1 << 31), 1 << 31), R_PC32: (-(1 << 31), 1 << 31),
         R_PLT32: (-(1 << 31), 1 << 31), R_64: (-(1 << 63), 1 << 64)}
_PACK = {R_32: "<I", R_32S: "<i", R_PC32: "<i", R_PLT32: "<i", R_64: "<Q"}
_PACKERS = {t: struct.Struct(f).pack_into for t, f in _PACK.items()}
# offset, packer (pack_into of the field's struct), value, addend, pc-rel, range, 64-bit
Patch = tuple[int, Callable[..., None], int, int, bool, int, int, bool]


class Stencil:
    """One stencil's bytes and its patches (offset, the field's packer, which value, addend,
    relative to the patched field's address, the range the result must be in)."""

    __slots__ = ("code", "patches")

    def __init__(self, code: bytes, relocs: list[tuple[int, int, str, int]]) -> None:
        # a last instruction that jumps to the next stencil is dropped: it falls through
        tail = [r for r in relocs if r[2] == NEXT and r[0] == len(code) - 4]
        if tail and code[-5] == 0xE9:
            code = code[:-5]
            relocs = [r for r in relocs if r is not tail[0]]
        names = list(HOLES)
        self.code = code
        self.patches: list[Patch] = []
        for off, typ, sym, add in relocs:
            if sym == NEXT:
                which = _NEXT_AT
            elif sym == COUNT:
                which = _COUNT_AT
            elif sym in EXTERNAL:
                which = _TRAMP_AT + EXTERNAL.index(sym)
            else:
                which = names.index(sym[2:])
            lo, hi = _FITS[typ]
            self.patches.append((off, _PACKERS[typ], which, add, typ in (R_PC32, R_PLT32),
                                 lo, hi, typ == R_64))


def _parse_relocs(obj: bytes) -> dict[str, tuple[bytes, list[tuple[int, int, str, int]]]]:
    """Each function of the object: its bytes and relocations (offset, type, symbol,
    addend)."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection
    from elftools.elf.sections import SymbolTableSection

    elf = ELFFile(io.BytesIO(obj))
    text_index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".text")
    text = elf.get_section(text_index).data()
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise ValueError("stencils: no symbol table")
    funcs = [(s.name, s["st_value"], s["st_size"]) for s in symtab.iter_symbols()
             if s["st_info"]["type"] == "STT_FUNC" and s["st_shndx"] == text_index]
    relocs: list[tuple[int, int, str, int]] = []
    for sec in elf.iter_sections():
        if not isinstance(sec, RelocationSection):
            continue
        if sec["sh_info"] != text_index:
            if sec.name.startswith(".rela.eh_frame"):
                continue
            raise ValueError(f"stencils: relocations for {sec.name}")
        for r in sec.iter_relocations():
            target = symtab.get_symbol(r["r_info_sym"])
            if target["st_shndx"] != "SHN_UNDEF":
                raise ValueError(f"stencils: a relocation to {target.name or 'a section'}")
            relocs.append((r["r_offset"], r["r_info_type"], target.name, r["r_addend"]))
    out: dict[str, tuple[bytes, list[tuple[int, int, str, int]]]] = {}
    for name, value, size in funcs:
        holes = [(o - value, t, n, a) for o, t, n, a in relocs if value <= o < value + size]
        for _o, t, ref, _a in holes:
            if t not in (R_64, R_PC32, R_PLT32, R_32, R_32S):
                raise ValueError(f"stencils: relocation type {t} in {name}")
            if not ref.startswith("H_") and ref not in EXTERNAL:
                raise ValueError(f"stencils: {name} refers to {ref}")
        out[name] = (text[value:value + size], holes)
    return out


class Arena:
    """Executable memory for baseline blocks: chunks of CHUNK bytes, each with its run
    counters (on pages of their own: a store near code being run costs the host CPU a
    pipeline flush) and jumps to the dispatcher's helpers, then code. Full, it is
    emptied; ``on_reset`` first drops every block in it."""

    def __init__(self, externals: dict[str, int]) -> None:
        self.externals = externals
        self.chunks: list[tuple[mmap.mmap, int]] = []
        self.code_at = 0  # next free byte in the last chunk
        self.counter_at = 0
        self.resets = 0

    def _new_chunk(self) -> None:
        # private: a process forked from this one writes its own blocks in its own copy
        mem = mmap.mmap(-1, CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                        prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        base = ctypes.addressof(ctypes.c_char.from_buffer(mem))
        for i, name in enumerate(EXTERNAL):
            at = NCOUNTERS * 4 + i * TRAMP
            mem[at:at + 14] = b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", self.externals[name])
        self.chunks.append((mem, base))
        self.code_at = CODE_START
        self.counter_at = 0

    def full(self, size: int) -> bool:
        """No room for ``size`` bytes of code and a counter, nor for another chunk."""
        fits = self.chunks and self.code_at + size <= CHUNK and self.counter_at < NCOUNTERS
        return not fits and len(self.chunks) >= MAX_CHUNKS

    def reset(self) -> None:
        """Forget every block (the caller dropped them from the dispatch tables)."""
        for mem, _base in self.chunks:
            mem.close()
        self.chunks = []
        self.resets += 1

    def place(self, size: int) -> tuple[mmap.mmap, int, int, int]:
        """(chunk, its address, code offset, counter offset) for a new block."""
        if not self.chunks or self.code_at + size > CHUNK or self.counter_at >= NCOUNTERS:
            self._new_chunk()
        mem, base = self.chunks[-1]
        at = self.code_at
        self.code_at = (at + size + 15) & ~15
        counter = self.counter_at * 4
        self.counter_at += 1
        return mem, base, at, counter



_M64 = (1 << 64) - 1


class Baseline:
    """Builds baseline blocks of one machine (both modes) into its arena."""

    def __init__(self, modes: Sequence[dict[str, Stencil]], externals: dict[str, int]
                 ) -> None:
        self.modes = modes  # [bare, soft TLB]
        self.arena = Arena(externals)
        self.built = 0

    def supported(self, d: Decoded) -> bool:
        # (a spin-wait hint ends the block: where harts take turns it hands the slice
        # over, which the dispatcher's slow path does)
        return d.name in FAST_OPS and not spin_hint(d.raw)

    def build(self, translated: bool, insns: list[tuple[int, Decoded]], start: int,
              end: int, lim: int) -> tuple[int, int] | None:
        """Machine code for ``insns`` (all supported, from ``start``, in one page);
        ``end`` is the pc after the last one; the block asks Python when its run
        counter reaches ``lim``. Returns (its address, the address of its run
        counter), or None if the arena is full or a hole would not fit."""
        st = self.modes[1 if translated else 0]
        n = len(insns)
        pieces: list[tuple[Stencil, tuple[int, ...]]] = [
            (st["st_enter"], (0, 0, 0, 0, 0, 0, n, 0, lim, 0, 0))]
        for i, (pc, d) in enumerate(insns):
            off = pc - start
            ways = (0, 0)
            if d.name in _WAYS:  # (a jal's way on is its target only)
                ways = (32 * S.slot((pc + d.imm) & _M64), 32 * S.slot((pc + d.length) & _M64))
            name = "st_" + d.name + ("_nz" if d.rd and d.name in _WRITES_RD else "")
            pieces.append((st[name], (8 * d.rd, 8 * d.rs1, 8 * d.rs2, d.imm, off,
                                      off + d.length, n, n - i, 0, *ways)))
        if insns[-1][1].name not in ENDS:
            pieces.append((st["st_leave"], (0, 0, 0, 0, end - start, 0, 0, 0, 0, 0, 0)))
        buf = bytearray()
        offsets = []
        for p, _ in pieces:
            offsets.append(len(buf))
            buf += p.code
        offsets.append(len(buf))
        if self.arena.full(len(buf)):
            return None
        mem, base, at, counter = self.arena.place(len(buf))
        addr = base + at
        tramps = tuple(base + NCOUNTERS * 4 + i * TRAMP for i in range(len(EXTERNAL)))
        tail = (base + counter, *tramps)
        for k, (p, values) in enumerate(pieces):
            at_k = offsets[k]
            vals = (*values, addr + offsets[k + 1], *tail)
            for off, pack, which, add, rel, lo, hi, wide in p.patches:
                v = vals[which] + add
                if rel:
                    v -= addr + at_k + off
                if not lo <= v < hi:
                    return None  # (the arena keeps the room: rare)
                pack(buf, at_k + off, v & 0xFFFFFFFFFFFFFFFF if wide else v)
        mem[at:at + len(buf)] = buf
        self.built += 1
        perfmap.name(addr, len(buf), f"base_{start:x}")
        return addr, base + counter


def load_or_build(runtime_dir: Path | None, compile_ir: Callable[[str], bytes]
                  ) -> list[dict[str, Stencil]]:
    """The stencils of both modes: from the runtime directory (whose name covers this
    module's source, like the dispatcher's object), else compiled (``compile_ir``: IR
    text to an optimised object, ~0.1 s a mode), parsed and kept there."""
    path = runtime_dir / "stencils.bin" if runtime_dir is not None else None
    tables = None
    if path is not None:
        try:
            data = path.read_bytes()
            if hashlib.sha256(data[32:]).digest() == data[:32]:
                tables = marshal.loads(data[32:])
        except (OSError, ValueError, EOFError, TypeError):
            tables = None
    if tables is None:
        tables = [_parse_relocs(compile_ir(stencil_ir(translated)))
                  for translated in (False, True)]
        if path is not None:
            try:
                blob = marshal.dumps(tables)
                tmp = path.with_name(f".stencils.{os.getpid()}")
                tmp.write_bytes(hashlib.sha256(blob).digest() + blob)
                tmp.replace(path)
            except OSError:
                pass
    return [{name: Stencil(code, relocs) for name, (code, relocs) in t.items()}
            for t in tables]


__all__ = ["Baseline", "stencil_ir", "load_or_build", "HOLES"]
