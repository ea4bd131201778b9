"""Tier 1 of the fast engine: hot guest code compiled into Python functions, one per block.

Why: the interpreter pays a dict lookup, a closure call and a ``return npc`` per guest
instruction. The translator generates one Python function per guest block in which
integer ALU operations, loads, stores and branches are plain Python statements on Python
locals, so only one dispatch per block remains (none per loop iteration). ``compile()``
is expensive (about 60 µs per guest instruction here), so code runs *cold* first, one
instruction at a time through the interpreter's own closures, and a block is compiled
only once ``threshold`` instructions have run cold from its start pc.

How:

* **One semantics.** Instructions come from the one decoder (isa/decoder.py). The inline
  Python is generated from the interpreter's ``ALU`` / ``BRANCH`` expression tables and
  its ``LOADS`` / ``STORES`` MMU methods; every other instruction (CSR, AMO, LR/SC, F/D,
  system) is a call to the closure that the interpreter's ``make_op`` builds for it,
  except the common double-precision ones (arithmetic, fused multiply-add, compares,
  sign injection, moves, int32 conversions; ``_FP_INLINE``): while mstatus.FS is dirty
  and frm is round-to-nearest-even (``fpok``, read on entry: only a block's last
  instruction can change them) they run inline through softfloat's binary64 RNE fast
  paths, and once fflags.NX is set (``fpnx``: the flag is sticky, so exactness need not
  be proved again) add/sub/mul/div/sqrt are plain host float operations whose result is
  checked to rule out every other flag; anything else falls back to the closure.
* **Blocks.** A block is a small tree of paths from its start pc. A path goes through
  not-taken conditional branches and through ``jal`` to targets in the same page; it
  ends with (and includes) ``jalr``, a ``jal`` it does not follow, any instruction whose
  closure may raise :class:`SliceBreak`, :class:`YieldSlice` or :class:`CounterAccess`
  or always traps (CSR accesses, ``mret``/``sret``/``wfi``/``sfence.vma``/``pause``,
  ``ecall``/``ebreak``/illegal), ``fence.i``, or the last instruction that starts in
  the start pc's 4 KiB virtual page. The taken side of a branch is either
  a side exit or, while the block's budget of ``MAX_BLOCK`` instructions lasts, a path of
  its own (if-then-else code stays inside the function). A branch or jump back to the
  start, or an instruction falling through into it, makes the function a ``while``
  loop, bounded by the run loop's remaining budget.
  Code fetched from outside RAM (the boot ROM) is never read ahead and never compiled.
* **Registers** read repeatedly or written are Python locals. Outside loops every write
  also goes to ``hart.x`` (``x[5] = r5 = ...``), so exits, traps and interpreter
  closures need no write-back. Loop functions load their locals on entry and write the
  written ones back at every exit, before every closure call and, through a ``try``/
  ``except`` around the loop (free in CPython 3.11 until something is raised), when
  anything is raised. Constants and known value widths are propagated along each path,
  so ``auipc``/``lui`` address arithmetic folds and provably useless 64-bit masks and
  signed-compare fix-ups go. Where data translation is off (M-mode, bare S-mode; part of
  the cache key) loads and stores index guest RAM inline on small offsets and call the
  MMU only for MMIO, misaligned or out-of-range addresses; otherwise they call the MMU.
* **Precise traps.** When instruction j of a block raises, the hart (after the loop
  write-back) holds exactly the effects of the instructions before it. The run loop only
  needs j, and gets it for free from the exception's traceback: every instruction is
  emitted on its own source lines, so the line number in the block's frame maps back to
  j, and the frame's ``k`` counts the instructions of earlier loop iterations. Nothing is
  counted on the fast path. From j the loop derives the faulting pc, the exact retired
  count (instret), where a :class:`StopRequest` resumes and which closure performs an
  exact counter access. Cold code runs like the interpreter: pc is the faulting one.
* **Caching and invalidation** follow the interpreter (a
  :class:`~.code_cache.CodeCache`): per translation context (privilege, satp, data
  translation on/off) one dict of compiled blocks and one of decoded instructions for
  cold code, keyed by virtual pc; every physical page an instruction came from is
  registered with the machine's :class:`CodeWatch`, so a store into it (by any hart, the
  page walker or a device) drops what was built from it, and SFENCE.VMA drops the
  virtual pages it names (``flush``/``flush_page``, installed as
  ``hart.flush_decoded*``). A store that drops the block executing it ends the block
  right after the store, so even self-modifying code without FENCE.I sees its new
  instructions at once, as on the interpreter (and QEMU). Data often shares a page with
  code: an inline store into such a page first asks :class:`~.code_cache.CodeBytes`
  (which bytes of the page hold registered instructions) and leaves the page's code
  alone when it wrote none of them; a block dropped anyway (a store through the MMU,
  DMA) is put back as it was if its instruction bytes are unchanged (``_revive``). A
  block whose code really changes again and again needs twice as many cold instructions
  before each recompilation.
* **Interrupts** are checked at the start of each ``run`` slice, as in the interpreter.
  ``run(budget)`` runs whole blocks and loop iterations until the budget is used up, so
  it may overshoot by less than one path (``MAX_BLOCK`` instructions); the count it
  returns and ``hart.instret`` are exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..isa import csr as C
from ..isa.decoder import Decoded, decode
from . import softfloat as sf
from .code_cache import CodeBytes, CodeCache, CodeContext
from .hart import Hart
from .interp import (
    _NS,
    ALU,
    BRANCH,
    LOADS,
    M64,
    PAUSE,
    SIGN,
    STORES,
    CounterAccess,
    GuestCrash,
    SliceBreak,
    StopRequest,
    YieldSlice,
    make_op,
)
from .mmu import CodeWatch
from .trap import Trap

MAX_BLOCK = 64  # instructions per block path at most
# Instructions run cold (through interpreter closures) from a block's start pc before the
# block is compiled: compiling costs about as much as interpreting a thousand instructions.
HOT_THRESHOLD = 1000

_BRANCHES = frozenset(BRANCH)
# Instructions that always end a block (inclusive), besides branches and jal not followed.
_ENDS_BLOCK = frozenset(
    {"jalr", "ecall", "ebreak", "illegal", "mret", "sret", "wfi", "sfence.vma", "fence.i",
     "csrrw", "csrrs", "csrrc", "csrrwi", "csrrsi", "csrrci"}
)
_VARS = re.compile(r"\b(a|b|i|si|sh|M64|SIGN)\b")
_LITERALS = {"M64": hex(M64), "SIGN": hex(SIGN)}
_MASKED = " & M64"
# "(((((E) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) & M64)": the table's sign extension
# of a 32-bit result, emitted as a cheaper conditional.
_SEXT32 = re.compile(r"^\(\(\(\(\((.*)\) & 0xFFFFFFFF\) \^ 0x80000000\) - 0x80000000\) & M64\)$")
_HI32 = 0xFFFFFFFF00000000
# Signed compares that equal their unsigned forms when both operands are below 2**63.
_UNSIGNED_FORM = {"blt": "bltu", "bge": "bgeu", "slt": "sltu", "slti": "sltiu"}
# Inline loads: (ram view attribute, size, sign-extend to 64 bits, result bits).
_LOAD_VIEWS = {
    "lb": ("s8", 1, True, 64), "lh": ("s16", 2, True, 64), "lw": ("s32", 4, True, 64),
    "ld": ("u64", 8, False, 64), "lbu": ("u8", 1, False, 8), "lhu": ("u16", 2, False, 16),
    "lwu": ("u32", 4, False, 32),
}
_STORE_VIEWS = {"sb": ("u8", 1), "sh": ("u16", 2), "sw": ("u32", 4), "sd": ("u64", 8)}
_VIEW_SHIFT = {1: 0, 2: 1, 4: 2, 8: 3}
_IDENT = re.compile(r"\b[A-Za-z]")

# Double-precision instructions emitted inline (see _Emitter.fp): kind, and for the
# arithmetic ones the softfloat function that computes them under round-to-nearest-even
# (host floats with exact flags), as (bits, flags). They run inline while the block's
# ``fpok`` holds (computed on entry: mstatus.FS and SD set, so nothing to check or mark,
# and frm = RNE); otherwise, and for static rounding modes other than RNE, through the
# interpreter's closure.
_SIGN64 = 1 << 63
_FP_INLINE: dict[str, tuple[str, Any]] = {
    "fadd.d": ("bin", sf.add_d_rne), "fsub.d": ("bin", sf.sub_d_rne),
    "fmul.d": ("bin", sf.mul_d_rne), "fdiv.d": ("bin", sf.div_d_rne),
    "fsqrt.d": ("un", sf.sqrt_d_rne),
    "fmadd.d": ("fma", (0, 0)), "fmsub.d": ("fma", (0, _SIGN64)),
    "fnmsub.d": ("fma", (_SIGN64, 0)), "fnmadd.d": ("fma", (_SIGN64, _SIGN64)),
    "feq.d": ("cmp", sf.eq_d), "flt.d": ("cmp", sf.lt_d), "fle.d": ("cmp", sf.le_d),
    "fsgnj.d": ("sgnj", 0), "fsgnjn.d": ("sgnj", 1), "fsgnjx.d": ("sgnj", 2),
    "fmv.x.d": ("mvxd", None), "fmv.d.x": ("mvdx", None),
    "fcvt.d.w": ("cvt", 32), "fcvt.d.wu": ("cvt", -32),
}
# Those inline in host floats alone once NX is set (the operator, or None: a function).
_FP_STICKY = {"fadd.d": "+", "fsub.d": "-", "fmul.d": "*", "fdiv.d": "/", "fsqrt.d": "sqrt"}
_MINN = 2.2250738585072014e-308  # smallest normal binary64
_MAXF = 1.7976931348623157e308  # largest finite binary64
_FBUF = bytearray(32)  # bits <-> float: two views of one buffer
_FU = memoryview(_FBUF).cast("Q")
_FD = memoryview(_FBUF).cast("d")
# Those with a rounding-mode field (inline only for rm = RNE or dynamic).
_FP_RM = frozenset(n for n, (k, _) in _FP_INLINE.items() if k in ("bin", "un", "fma", "cvt"))
_MISS = -(1 << 70)  # TLB miss: far below any RAM offset

Block = Callable[[int], tuple[int, int]]


class _StoreExit(Exception):
    """Raised by a block right after a store that dropped the block itself."""


_STORE_EXIT = _StoreExit()


# A block is a tree of paths: [pc, decoded, taken] entries, where ``taken`` is the path
# compiled for a taken conditional branch (None: the branch leaves the block).
Path = list[list[Any]]


class BlockInfo:
    """What the run loop needs to know about a block when one of its instructions raises.

    Per instruction (in source order; a block tree may hold a pc more than once): its pc,
    where it resumes, its closure (if it runs one) and how many instructions of the
    current iteration retired before it.
    """

    __slots__ = ("start", "pcs", "npcs", "ops", "depth", "lines", "code")

    def __init__(self, start: int) -> None:
        self.start = start
        self.pcs: list[int] = []
        self.npcs: list[int] = []
        self.ops: list[Any] = []
        self.depth: list[int] = []
        self.lines: list[int] = []  # source line -> instruction
        self.code: Any = None  # the code object of the block's function

    def add(self, pc: int, d: Decoded, depth: int) -> int:
        self.pcs.append(pc)
        self.npcs.append((pc + d.length) & M64)
        self.ops.append(None)
        self.depth.append(depth)
        return len(self.pcs) - 1


def _walk(tree: Path):
    """Every (pc, decoded) of a block tree."""
    for pc, d, taken in tree:
        yield pc, d
        if taken:
            yield from _walk(taken)


def _subst(expr: str, values: dict[str, str]) -> str:
    """Put operands (and the M64/SIGN constants, as literals) into a table expression."""
    values = {**_LITERALS, **values}
    return _VARS.sub(lambda m: values[m.group(1)], expr)


@lru_cache(maxsize=1 << 12)
def _fold(expr: str) -> int | None:
    """The value of an expression without register operands, else None."""
    # Any name but the table helpers (_div, ...) is a register, temporary or call.
    if _IDENT.search(expr):
        return None
    return eval(expr, dict(_NS)) & M64  # noqa: S307 - our own generated expression


def _bits(v: int) -> int:
    return max(v.bit_length(), 1)


def _ends_block(d: Decoded) -> bool:
    """Whether ``d`` always ends a block (besides branches and jal not followed)."""
    return d.name in _ENDS_BLOCK or d.raw == PAUSE  # pause may yield the slice


def _falls_through(d: Decoded) -> bool:
    """Whether the generated code may go on to the next instruction after ``d`` (not
    for jumps, nor for instructions run by a closure at the end of a path, whose next
    pc is the closure's result)."""
    return d.name not in ("jal", "jalr") and not _ends_block(d) and (
        d.name in ALU or d.name in _BRANCHES or d.name in LOADS or d.name in STORES
        or d.name in ("lui", "auipc", "fence") or d.name in _FP_INLINE
    )


def _writes_x(name: str) -> bool:
    """Whether an instruction run through its closure may write an integer register."""
    if name.startswith(("f", "fence")):  # F/D: only compares, fclass, fmv.x, fcvt to int
        return name.startswith(("feq", "flt", "fle", "fclass", "fmv.x", "fcvt.w", "fcvt.l"))
    return True


def _stores(name: str) -> bool:
    """Whether an instruction run through its closure may store to memory."""
    return name.startswith(("amo", "sc.")) or name in ("fsw", "fsd")


def _uses_b(name: str) -> bool:
    return re.search(r"\bb\b", ALU[name]) is not None


def _operands(d: Decoded) -> tuple[tuple[int, ...], int]:
    """(integer registers the generated code reads, register it writes) for ``d``."""
    name = d.name
    if name in ALU:
        return ((d.rs1, d.rs2) if _USES_B[name] else (d.rs1,)), d.rd
    if name in LOADS or name == "jalr":
        return (d.rs1,), d.rd
    if name in STORES or name in _BRANCHES:
        return (d.rs1, d.rs2), 0
    if name in ("lui", "auipc", "jal"):
        return (), d.rd
    if name in _FP_INLINE:  # inline FP: which of them touch x
        kind = _FP_INLINE[name][0]
        if kind in ("cmp", "mvxd"):
            return (), d.rd
        if kind in ("mvdx", "cvt"):
            return (d.rs1,), 0
        return (), 0
    # fence, or a closure (it works on hart.x; its rd is reloaded after it)
    return (), 0


_USES_B = {name: _uses_b(name) for name in ALU}


class _Emitter:
    """Generates the source of one block function (see the module docstring).

    Invariants along the path: a register in ``locals`` is either unbound (not yet read or
    written: its value is in x) or holds its current value; ``written`` holds the locals
    that may differ from x. Values are always unsigned 64-bit, as in the interpreter.
    """

    def __init__(
        self, hart: Hart, info: BlockInfo, tree: Path, inline_ram: bool, cache: dict[int, Any]
    ) -> None:
        self.hart = hart
        self.info = info
        self.inline_ram = inline_ram
        self.ram_base = hart.mmu.ram_base
        self.ram_size = hart.mmu.ram_size
        self.body: list[str] = []
        self.line_insn: list[int] = []  # per body line: instruction index
        self.closure_lines: list[int] = []  # body lines that call interpreter closures
        self.env: dict[str, Any] = {"x": hart.x, "cache": cache, "mmu": hart.mmu}
        self.tlbs: set[str] = set()  # TLB lookups used (bound on entry)
        self.fp_used = False  # inline FP instructions (``fpok`` computed on entry)
        self.fp_sticky = False  # and some that use ``fpok`` and NX already set (``fpnx``)
        self.idx = 0
        self.indent = 1
        self.const: dict[int, int] = {}  # register -> known value along the path
        self.width: dict[int, int] = {}  # register -> known bit width (absent: 64)
        self.written: set[int] = set()  # locals written since x was last brought up to date
        self.bound: set[int] = set()  # locals assigned so far along the path
        start = info.start
        insns = list(_walk(tree))
        # A branch or jal back to the start, or an instruction falling through into it
        # (always the last of its path), makes the block a loop.
        self.loop = any(
            ((d.name in _BRANCHES or d.name == "jal") and (pc + d.imm) & M64 == start)
            or ((pc + d.length) & M64 == start and _falls_through(d))
            for pc, d in insns
        )
        reads: dict[int, int] = {}
        writes: set[int] = set()
        for _pc, d in insns:
            srcs, dst = _operands(d)
            for r in srcs:
                if r:
                    reads[r] = reads.get(r, 0) + 1
            if dst:
                writes.add(dst)
        # Locals: registers read more than once, or read and written, or read in a loop.
        # Those only written are stored straight into x; those read once read from x.
        self.locals = {r for r, cnt in reads.items() if r in writes or cnt > 1 or self.loop}
        self.all_written = writes & self.locals
        if self.loop:
            # Every local is loaded on entry; at the top of an iteration whatever the
            # previous one wrote is dirty.
            self.bound = set(self.locals)
            self.written = set(self.all_written)
            self.indent = 2
            self.emit("while True:")
            self.indent = 3

    # -- plumbing ---------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        self.body.append("    " * self.indent + line)
        self.line_insn.append(self.idx)

    def bind(self, name: str, value: Any) -> str:
        self.env[name] = value
        return name

    def read(self, r: int) -> str:
        """An expression for the current value of x[r] (emitting a lazy load if needed)."""
        if r == 0:
            return "0"
        if r in self.const:
            return hex(self.const[r])
        if r not in self.locals:
            return f"x[{r}]"
        if r not in self.bound:
            self.emit(f"r{r} = x[{r}]")
            self.bound.add(r)
        return f"r{r}"

    def write(self, r: int, expr: str, width: int = 64) -> None:
        """Emit ``x[r] = expr`` (to a local or to x) and track what is known about it."""
        if r == 0:
            return
        value = _fold(expr)
        if value is not None:
            self.const[r] = value
            self.width[r] = _bits(value)
            expr = hex(value)
        else:
            self.const.pop(r, None)
            if width < 64:
                self.width[r] = width
            else:
                self.width.pop(r, None)
        if r not in self.locals:
            self.emit(f"x[{r}] = {expr}")
        elif self.loop:
            self.emit(f"r{r} = {expr}")
            self.written.add(r)
            self.bound.add(r)
        else:  # outside loops x stays up to date: exits and traps need no write-back
            self.emit(f"x[{r}] = r{r} = {expr}")
            self.bound.add(r)

    def wide(self, r: int) -> int:
        """Known bit width of x[r]."""
        return 0 if r == 0 else self.width.get(r, 64)

    def writeback(self) -> None:
        """Bring x up to date with the locals."""
        regs = sorted(self.written)
        if regs:
            self.emit("; ".join(f"x[{r}] = r{r}" for r in regs))

    def exit(self, target: str, n: int) -> None:
        """Leave the block after ``n`` instructions of this iteration, going to ``target``."""
        self.writeback()
        if self.loop:
            self.emit(f"return ({target}, k + {n})")
        else:
            self.emit(f"return ({target}, {n})")

    def back_edge(self, n: int) -> None:
        """Jump back to the start: iterate while the budget lasts, else exit."""
        self.emit(f"k += {n}")
        self.emit("if k < rem:")
        self.emit("    continue")
        self.writeback()
        self.emit(f"return ({self.info.start:#x}, k)")

    def source(self) -> str:
        params = ", ".join(f"{k}={k}" for k in self.env)
        head = [f"def block(rem, {params}):"]
        if self.tlbs:  # the TLBs of the current context (SUM, MXR and MPRV pick them)
            head.append("    " + "; ".join(
                f"{t} = mmu.tlb_{t[-1]}.get" for t in sorted(self.tlbs)))
        if self.fp_used:  # nothing in a block can change FS or frm but its last insn
            dirty = C.MSTATUS_FS | C.MSTATUS_SD  # what an FP instruction would set
            head.append(f"    fpok = (hart.mstatus & {dirty:#x}) == {dirty:#x} and hart.frm == 0")
            if self.fp_sticky:
                head.append("    fpnx = fpok and (hart.fflags & 1) != 0")
        if not self.loop:
            self.head_lines = len(head)
            return "\n".join([*head, *self.body, ""])
        entry = [f"r{r} = x[{r}]" for r in sorted(self.locals)]
        head.append("    " + "; ".join([*entry, "k = 0"]))
        head.append("    try:")
        regs = sorted(self.all_written)
        if regs:
            # On any exception, write the bound locals back: the hart then holds exactly
            # the effects of the instructions before the one that raised. After a closure
            # call raised, x is already right (written back before it; the closure may
            # have changed x[rd]).
            tail = ["    except BaseException as exc:"]
            wb = [
                "        loc = locals()",
                f"        for r in {tuple(regs)}:",
                "            v = loc.get(f'r{r}')",
                "            if v is not None:",
                "                x[r] = v",
            ]
            if self.closure_lines:
                lines = {len(head) + 1 + b for b in self.closure_lines}
                tail.append(f"        if exc.__traceback__.tb_lineno not in {lines}:")
                wb = ["    " + line for line in wb]
            tail += [*wb, "        raise"]
        else:
            tail = ["    except BaseException:", "        raise"]
        self.head_lines = len(head)
        return "\n".join([*head, *self.body, *tail, ""])

    # -- instructions -----------------------------------------------------------------------

    def path(self, path: Path, depth: int) -> None:
        """Emit a path of the block tree whose first instruction has ``depth`` before it."""
        for p, (pc, d, taken) in enumerate(path):
            if self.insn(pc, d, depth + p, p == len(path) - 1, taken):
                return
        raise AssertionError("a path always leaves the block")

    def insn(self, pc: int, d: Decoded, depth: int, last: bool, taken: Path | None) -> bool:
        """Emit one instruction; return True if control never falls through it."""
        j = self.idx = self.info.add(pc, d, depth)
        name = d.name
        n = depth + 1  # instructions of this iteration retired after it
        npc = (pc + d.length) & M64
        rd, rs1, rs2 = d.rd, d.rs1, d.rs2
        start = self.info.start
        if name in ALU:
            self.alu(name, d)
        elif name == "lui" or name == "auipc":
            self.write(rd, hex((d.imm + (pc if name == "auipc" else 0)) & M64))
        elif name in LOADS:
            self.load(name, d)
        elif name in STORES:
            self.store(name, d)
        elif name in _BRANCHES:
            t = (pc + d.imm) & M64
            if name in _UNSIGNED_FORM and max(self.wide(rs1), self.wide(rs2)) < 64:
                name = _UNSIGNED_FORM[name]
            cond = _subst(BRANCH[name], {"a": self.read(rs1), "b": self.read(rs2)})
            value = _fold(cond)
            if value == 0 or (t == npc and not last):
                pass  # never taken, or taken to where it falls through anyway
            else:
                if value is None:
                    self.emit(f"if {cond}:")
                    self.indent += 1
                if taken:  # the taken side is compiled too: fork what is known
                    saved = (dict(self.const), dict(self.width), set(self.written),
                             set(self.bound))
                    self.path(taken, n)
                    self.const, self.width, self.written, self.bound = saved
                elif t == start and self.loop:
                    self.back_edge(n)
                else:
                    self.exit(hex(t), n)
                if value is None:
                    self.indent -= 1
                else:
                    return True  # always taken
        elif name == "jal":
            t = (pc + d.imm) & M64
            self.write(rd, hex(npc))
            if last:
                if t == start and self.loop:
                    self.back_edge(n)
                else:
                    self.exit(hex(t), n)
                return True
            return False  # followed: the path goes on at the target
        elif name == "jalr":
            base = self.read(rs1)
            target = f"({base} + {d.imm}) & {M64 & ~1:#x}" if d.imm else f"{base} & {M64 & ~1:#x}"
            value = _fold(target)
            if value is not None:
                target = hex(value)
            elif rd and rd == rs1:
                self.emit(f"t = {target}")
                target = "t"
            self.write(rd, hex(npc))
            self.exit(target, n)
            return True
        elif name == "fence" and d.raw != PAUSE:
            pass  # one sequentially consistent memory: nothing to order
        elif name in _FP_INLINE and (name not in _FP_RM or d.rm in (0, 7)):
            self.fp(name, d, j, pc)
        else:
            op = make_op(self.hart, d, pc)
            self.info.ops[j] = op
            ref = self.bind(f"op{j}", op)
            self.writeback()  # the closure works on hart.x
            self.written.clear()
            self.closure_lines.append(len(self.body))
            self.emit(f"t = {ref}()" if last else f"{ref}()")
            if rd and _writes_x(name):  # closures write at most x[rd]
                self.const.pop(rd, None)
                self.width.pop(rd, None)
                if rd in self.bound:
                    self.emit(f"r{rd} = x[{rd}]")
            if last:
                self.exit("t", n)
                return True
            if _stores(name):
                self.smc_guard()
        if last:
            if npc == start and self.loop:  # falls through into the start: iterate
                self.back_edge(n)
            else:
                self.exit(hex(npc), n)
            return True
        return False

    def fp(self, name: str, d: Decoded, j: int, pc: int) -> None:
        """Emit a double-precision instruction inline, with the interpreter's closure as
        the fallback when ``fpok`` does not hold (FS not dirty, frm not RNE)."""
        kind, arg = _FP_INLINE[name]
        rd, rs1, rs2, rs3 = d.rd, d.rs1, d.rs2, d.rs3
        op = make_op(self.hart, d, pc)
        self.info.ops[j] = op
        ref = self.bind(f"op{j}", op)
        self.bind("f", self.hart.f)
        self.bind("hart", self.hart)
        self.fp_used = True
        x_out = kind in ("cmp", "mvxd") and rd != 0
        # Operands from x are read (and lazily loaded) before the branch, so both sides
        # see them; the fast side's register write is then undone for the closure side.
        value = self.read(rs1) if kind in ("mvdx", "cvt") else ""
        saved = (dict(self.const), dict(self.width), set(self.written), set(self.bound))
        sticky = _FP_STICKY.get(name)
        if kind == "fma":
            self.fma_sticky(d, arg)
            self.emit("elif fpok:")
        elif sticky is not None:
            # NX already set (fflags is sticky, fpnx): an operation whose only possible
            # flag is NX needs no exactness check, just a result that rules out the
            # others (finite, and normal where UF could arise); anything else runs the
            # closure. Host floats round to nearest even, as fpnx requires.
            fu, fd = self.bind("fu", _FU), self.bind("fd", _FD)
            self.fp_sticky = True
            self.emit("if fpnx:")
            self.indent += 1
            self.emit(f"{fu}[0] = f[{rs1}]" + (f"; {fu}[1] = f[{rs2}]" if kind == "bin" else ""))
            if name == "fsqrt.d":
                fn = self.bind("fsqrt", math.sqrt)
                cond = f"(fy := {fd}[0]) > 0.0 and (fz := {fn}(fy)) <= {_MAXF!r}"
            elif name == "fdiv.d":
                cond = (f"(fy := {fd}[1]) != 0.0 and (fz := {fd}[0] / fy) - fz == 0.0 "
                        f"and not {-_MINN!r} < fz < {_MINN!r}")
            elif name == "fmul.d":
                # Not below the smallest normal (UF), unless exactly zero times finite.
                cond = (f"(fz := {fd}[0] * {fd}[1]) - fz == 0.0 "
                        f"and (not {-_MINN!r} < fz < {_MINN!r} "
                        f"or {fd}[0] == 0.0 or {fd}[1] == 0.0)")
            else:
                cond = f"(fz := {fd}[0] {sticky} {fd}[1]) - fz == 0.0"
            self.emit(f"if {cond}:")
            self.emit(f"    {fd}[2] = fz; f[{rd}] = {fu}[2]")
            self.emit("else:")
            self.emit(f"    {ref}()")
            self.indent -= 1
            self.emit("elif fpok:")
        else:
            self.emit("if fpok:")
        self.indent += 1
        if kind in ("bin", "un", "fma"):
            if kind == "bin":
                fn = self.bind(f"fp_{name[:-2]}", arg)
                self.emit(f"v, fl = {fn}(f[{rs1}], f[{rs2}])")
            elif kind == "un":
                fn = self.bind(f"fp_{name[:-2]}", arg)
                self.emit(f"v, fl = {fn}(f[{rs1}])")
            else:
                fn = self.bind("fp_fma", sf.fma_d_rne)
                pflip, cflip = arg
                a = f"f[{rs1}] ^ {pflip:#x}" if pflip else f"f[{rs1}]"
                c = f"f[{rs3}] ^ {cflip:#x}" if cflip else f"f[{rs3}]"
                self.emit(f"v, fl = {fn}({a}, f[{rs2}], {c})")
            self.emit(f"f[{rd}] = v")
            self.emit("if fl: hart.fflags |= fl")
        elif kind == "cmp":
            # Host float compares for non-NaN operands (-0 == +0); NaNs: softfloat.
            fn = self.bind(f"fp_{name[:-2]}", arg)
            fu, fd = self.bind("fu", _FU), self.bind("fd", _FD)
            rel = {"feq.d": "==", "flt.d": "<", "fle.d": "<="}[name]
            self.emit(f"{fu}[0] = f[{rs1}]; {fu}[1] = f[{rs2}]")
            self.emit(f"if (fx := {fd}[0]) == fx and (fy := {fd}[1]) == fy:")
            self.emit(f"    v = 1 if fx {rel} fy else 0")
            self.emit("else:")
            self.emit(f"    v, fl = {fn}(f[{rs1}], f[{rs2}])")
            self.emit("    hart.fflags |= fl")
            if rd:
                self.write(rd, "v", 1)
        elif kind == "sgnj":
            a, b = f"f[{rs1}]", f"f[{rs2}]"
            if rs1 == rs2 and arg == 0:  # fmv.d
                expr = a
            elif rs1 == rs2 and arg == 1:  # fneg.d
                expr = f"{a} ^ {_SIGN64:#x}"
            elif rs1 == rs2:  # fabs.d
                expr = f"{a} & {_SIGN64 - 1:#x}"
            else:
                sign = (f"{b} & {_SIGN64:#x}", f"~{b} & {_SIGN64:#x}",
                        f"({a} ^ {b}) & {_SIGN64:#x}")[arg]
                expr = f"({a} & {_SIGN64 - 1:#x}) | ({sign})"
            self.emit(f"f[{rd}] = {expr}")
        elif kind == "mvxd":
            if rd:
                self.write(rd, f"f[{rs1}]")
            else:
                self.emit("pass")
        elif kind == "mvdx":
            self.emit(f"f[{rd}] = {value}")
        else:  # cvt: int32/uint32 -> binary64 is exact
            fn = self.bind("fp_cvt_d_i", sf.int_to_d_exact)
            if arg > 0:
                self.emit(f"w = {value} & 0xFFFFFFFF")
                self.emit(f"f[{rd}] = {fn}(w - ((w & 0x80000000) << 1))")
            else:
                self.emit(f"f[{rd}] = {fn}({value} & 0xFFFFFFFF)")
        self.indent -= 1
        self.const, self.width, self.written, self.bound = saved
        self.emit("else:")
        self.indent += 1
        if kind in ("cmp", "mvxd", "mvdx", "cvt"):  # the closure works on hart.x
            self.writeback()
            self.closure_lines.append(len(self.body))
        self.emit(f"{ref}()")
        if x_out and rd in self.locals:
            self.emit(f"r{rd} = x[{rd}]")
        self.indent -= 1
        if x_out:  # both sides leave x[rd] (and its local) holding the result
            self.const.pop(rd, None)
            if kind == "cmp":
                self.width[rd] = 1
            else:
                self.width.pop(rd, None)
            if rd in self.locals:
                self.bound.add(rd)
                if self.loop:
                    self.written.add(rd)

    def fma_sticky(self, d: Decoded, flips: tuple[int, int]) -> None:
        """The ``if fpnx:`` side of a fused multiply-add: once NX is set only the value
        matters. ``x*y = p + e`` exactly (Dekker's TwoProduct: the operands are normal and
        below 2**995 and the product above 2**-969, so the split cannot overflow and the
        error is representable), then TwoSums: ``p + z = s + t``, ``t + e = u + w``, ``s + u
        = r + v``, so ``x*y + z = r + v + w`` exactly, and ``r`` is the correctly rounded
        result when ``|v| + |w|`` (rounded up or exact: a float sum is monotonic) stays
        below half the gap to ``r``'s neighbours: ulp(r)/2, or ulp(r)/4 below a power of two
        (as in softfloat's fma_d_rne). ``|s|`` above 2**-1000 keeps ``r`` normal (no UF);
        the bounds rule out OF. Otherwise (rarely) softfloat's fma decides."""
        rd, rs1, rs2, rs3 = d.rd, d.rs1, d.rs2, d.rs3
        fu, fd = self.bind("fu", _FU), self.bind("fd", _FD)
        fn = self.bind("fp_fma", sf.fma_d_rne)
        ulp, frexp = self.bind("ulp", math.ulp), self.bind("frexp", math.frexp)
        self.fp_sticky = True
        pflip, cflip = flips
        a = f"f[{rs1}] ^ {pflip:#x}" if pflip else f"f[{rs1}]"
        c = f"f[{rs3}] ^ {cflip:#x}" if cflip else f"f[{rs3}]"
        big, small, tiny = 2.0**995, 2.0**-969, 2.0**-1000
        spl = 134217729.0
        self.emit("if fpnx:")
        self.indent += 1
        self.emit(f"{fu}[0] = {a}; {fu}[1] = f[{rs2}]; {fu}[2] = {c}")
        self.emit(f"fx = {fd}[0]; fy = {fd}[1]; fz = {fd}[2]")
        self.emit(f"if ({-big!r} < fx < {big!r} and {-big!r} < fy < {big!r} "
                  f"and {-big!r} < fz < {big!r} and not {-_MINN!r} < fx < {_MINN!r} "
                  f"and not {-_MINN!r} < fy < {_MINN!r} "
                  f"and not {-small!r} < (fp := fx * fy) < {small!r}"
                  f" and not {-tiny!r} < (fs := fp + fz) < {tiny!r}):")
        self.emit(f"    t = {spl!r} * fx; xh = t - (t - fx); xl = fx - xh")
        self.emit(f"    t = {spl!r} * fy; yh = t - (t - fy); yl = fy - yh")
        self.emit("    fe = ((xh * yh - fp) + xh * yl + xl * yh) + xl * yl")
        self.emit("    t = fs - fp; ft = (fp - (fs - t)) + (fz - t)")
        self.emit("    fv = ft + fe; t = fv - ft; fw = (ft - (fv - t)) + (fe - t)")
        self.emit("    fr = fs + fv; t = fr - fs; fv = (fs - (fr - t)) + (fv - t)")
        self.emit(f"    fg = abs(fv) + abs(fw); fh = {ulp}(fr) * 0.25")
        self.emit(f"    if fg < fh or (fg < fh + fh and abs({frexp}(fr)[0]) != 0.5):")
        self.emit(f"        {fd}[3] = fr; f[{rd}] = {fu}[3]")
        self.emit("    else:")
        self.emit(f"        v, fl = {fn}({a}, f[{rs2}], {c}); f[{rd}] = v; hart.fflags |= fl")
        # A zero factor (the other finite) and a nonzero addend: exactly the addend.
        self.emit(f"elif (fx == 0.0 or fy == 0.0) and fz != 0.0 and {-big!r} < fx < {big!r} "
                  f"and {-big!r} < fy < {big!r} and {-big!r} < fz < {big!r}:")
        self.emit(f"    f[{rd}] = {fu}[2]")
        self.emit("else:")
        self.emit(f"    v, fl = {fn}({a}, f[{rs2}], {c}); f[{rd}] = v; hart.fflags |= fl")
        self.indent -= 1

    def alu(self, name: str, d: Decoded) -> None:
        rd, rs1, rs2 = d.rd, d.rs1, d.rs2
        if not rd:
            return
        imm = d.imm
        i = imm & M64
        sh = imm & 63
        wa, wb = self.wide(rs1), self.wide(rs2) if _USES_B[name] else _bits(i)
        if name in _UNSIGNED_FORM and max(wa, wb) < 64 and (name != "slti" or imm >= 0):
            name = _UNSIGNED_FORM[name]
        if (name == "addi" and imm == 0) or (name in ("add", "or", "xor") and rs2 == 0):
            self.write(rd, self.read(rs1), wa or 1)  # a move
            return
        if name in ("add", "or", "xor") and rs1 == 0:
            self.write(rd, self.read(rs2), wb or 1)
            return
        expr = ALU[name]
        values = {"a": self.read(rs1), "i": hex(i),
                  "si": hex(i ^ SIGN), "sh": str(sh)}
        if _USES_B[name]:
            values["b"] = self.read(rs2)
        full = _subst(expr, values)
        if _fold(full) is not None:
            self.write(rd, full)
            return
        width = 64
        sext = _SEXT32.match(expr)
        if sext is not None:
            inner = _subst(sext.group(1), values)
            if name == "addiw" and not imm:
                inner = values["a"]
            if name == "srliw" and sh:  # below 2**31: the sign extension does nothing
                self.write(rd, inner, 32 - sh)
                return
            self.emit(f"w = ({inner}) & 0xFFFFFFFF")
            self.write(rd, f"w if w < 0x80000000 else w | {_HI32:#x}")
            return
        if expr.endswith(_MASKED):
            inner = _subst(expr[: -len(_MASKED)], values)
            if name in ("add", "addi") and imm >= 0 and max(wa, wb) < 64:
                full, width = inner, max(wa, wb) + 1
            elif name == "slli" and wa + sh <= 64:
                full, width = inner, wa + sh
        elif name in ("and", "andi"):
            width = min(wa, wb)
        elif name in ("or", "xor", "ori", "xori"):
            width = max(wa, wb)
        elif name == "srli":
            width = max(wa - sh, 1)
        elif name == "srl":
            width = wa
        elif name in ("sltu", "sltiu", "slt", "slti"):
            width = 1
        self.write(rd, full, width)

    # -- memory -------------------------------------------------------------------------------

    def _inline_offset(
        self, d: Decoded, size: int, store: bool = False
    ) -> tuple[str, str, int | None]:
        """Emit what an inline access needs: (condition for the fast path, address for
        the MMU slow path, constant RAM offset or None). The offset lands in ``o``."""
        base = self.read(d.rs1)
        imm = d.imm
        value = _fold(base)
        if not self.inline_ram:
            # Translated: look the page up in the MMU's TLB (the dict of the current
            # translation context, fetched on entry); a miss gives a hugely negative
            # offset, so the MMU method (which fills the TLB) does the access. An
            # unmasked address (>= 2**64 or < 0) misses as well.
            tlb = "tlbw" if store else "tlbr"
            self.tlbs.add(tlb)
            if value is not None:
                a = (value + imm) & M64
                self.emit(f"o = {tlb}({a >> 12:#x}, {_MISS}) + {(a & 0xFFF) - self.ram_base}")
                cond = f"0 <= o < {self.ram_size:#x}"
                return (f"not o & {size - 1} and {cond}" if size > 1 else cond), hex(a), None
            if imm:
                self.emit(f"a = {base} + {imm}")
                base, addr = "a", f"a & {M64:#x}"
            else:
                addr = base
            self.emit(f"o = {tlb}({base} >> 12, {_MISS}) - {self.ram_base:#x} + ({base} & 0xFFF)")
            cond = f"0 <= o < {self.ram_size:#x}"
            if size > 1:
                cond = f"not o & {size - 1} and {cond}"
            return cond, addr, None
        if value is not None:
            addr = (value + imm) & M64
            off = addr - self.ram_base
            ok = 0 <= off < self.ram_size and not off & (size - 1)
            return ("True" if ok else "False"), hex(addr), off
        # o may be off by a multiple of 2**64 (the address is not masked): then it is out
        # of range and the slow path masks it.
        k = imm - self.ram_base
        self.emit(f"o = {base} {'-' if k < 0 else '+'} {abs(k):#x}")
        cond = f"0 <= o < {self.ram_size:#x}"
        if size > 1:
            cond = f"not o & {size - 1} and {cond}"
        addr = f"({base} + {imm}) & {M64:#x}" if imm else base
        return cond, addr, None

    def load(self, name: str, d: Decoded) -> None:
        mmu = self.hart.mmu
        method = self.bind(LOADS[name], getattr(mmu, LOADS[name]))
        view_name, size, signed, width = _LOAD_VIEWS[name]
        view = self.bind(view_name, getattr(mmu.ram, view_name))
        cond, addr, off = self._inline_offset(d, size)
        shift = _VIEW_SHIFT[size]
        if off is not None:
            index = str(off >> shift)
        else:
            index = f"o >> {shift}" if shift else "o"
        fast = f"{view}[{index}]" + (f" & {M64:#x}" if signed else "")
        slow = f"{method}({addr})"
        expr = fast if cond == "True" else slow if cond == "False" else (
            f"{fast} if {cond} else {slow}"
        )
        if d.rd:
            self.write(d.rd, expr, width)
        else:
            self.emit(expr)

    def smc_guard(self) -> None:
        """After a store: if it dropped this block (self-modifying code), leave the block
        right after the store, so the next instruction is fetched anew (as QEMU does)."""
        self.bind("store_exit", _STORE_EXIT)
        self.emit(f"if {self.info.start:#x} not in cache: raise store_exit")

    def store_helpers(self) -> None:
        """Bind ``smc(o, size)`` (an inline store of ``size`` bytes at RAM offset ``o`` hit
        a page holding code) and ``sst(method, addr, value)`` (a store through the MMU):
        both leave the block if it was dropped."""
        if "smc" in self.env:
            return
        cache, start = self.env["cache"], self.info.start
        mmu = self.hart.mmu
        invalidate = mmu.code.invalidate
        clean = CodeBytes.of(mmu.code).clean
        ram_base = self.ram_base

        def smc(o: int, size: int) -> None:
            pa = o + ram_base
            ppn = pa >> 12
            if clean(ppn, pa & 0xFFF, size):
                return  # data next to code: no instruction was written
            invalidate(ppn)
            if start not in cache:
                raise _STORE_EXIT

        def sst(method: Callable[[int, int], None], addr: int, value: int) -> None:
            method(addr, value)
            if start not in cache:
                raise _STORE_EXIT

        self.bind("smc", smc)
        self.bind("sst", sst)

    def store(self, name: str, d: Decoded) -> None:
        mmu = self.hart.mmu
        method = self.bind(STORES[name], getattr(mmu, STORES[name]))
        view_name, size = _STORE_VIEWS[name]
        value = self.read(d.rs2)
        view = self.bind(view_name, getattr(mmu.ram, view_name))
        self.bind("code_pages", mmu.code_pages)
        self.store_helpers()
        cond, addr, off = self._inline_offset(d, size, store=True)
        slow = f"sst({method}, {addr}, {value})"
        if cond == "False":
            self.emit(slow)
            return
        literal = _fold(value)
        mask = (1 << (8 * size)) - 1
        if literal is not None:
            value = hex(literal & mask)
        elif self.wide(d.rs2) > 8 * size:
            value = f"{value} & {mask:#x}"
        shift = _VIEW_SHIFT[size]
        if off is not None:
            index, page = str(off >> shift), hex((off + self.ram_base) >> 12)
        else:  # the page from the (small) offset: cheaper than from the address
            index = f"o >> {shift}" if shift else "o"
            page = f"(o >> 12) + {self.ram_base >> 12:#x}"
        if cond != "True":
            self.emit(f"if {cond}:")
            self.indent += 1
        self.emit(f"{view}[{index}] = {value}")
        self.emit(f"if {page} in code_pages: smc({'o' if off is None else hex(off)}, {size})")
        if cond != "True":
            self.indent -= 1
            self.emit(f"else: {slow}")


def translate(
    hart: Hart, start: int, tree: Path, cache: dict[int, Any], inline_ram: bool = False
) -> Block:
    """Compile a scanned block tree into one function ``block(rem) -> (next pc, retired)``.

    ``cache`` is the block cache it goes into: a store that drops the block from it ends
    the block. ``inline_ram``: data accesses are not translated in the block's context,
    so guest RAM is indexed inline.
    """
    info = BlockInfo(start)
    em = _Emitter(hart, info, tree, inline_ram, cache)
    em.path(tree, 0)
    src = em.source()
    ns = {**_NS, **em.env}  # helpers (_div, ...) as globals, the rest as default args
    exec(compile(src, f"<pyhv block {info.start:#x}>", "exec"), ns)  # noqa: S102
    fn = ns["block"]
    # Source lines are 1-based; the body follows the head lines; the tail maps to nothing.
    info.lines = [0] * (em.head_lines + 1) + em.line_insn + [0] * 12
    info.code = fn.__code__
    fn.info = info
    fn.source = src
    return fn


class _Context(CodeContext):
    """The caches of one translation context (privilege, satp, data translation on/off)."""

    __slots__ = ("blocks", "ops", "heat", "recompiles", "block_id", "op_id", "built")

    def __init__(self, tables: tuple[dict[int, Any], ...], ids: tuple[int, ...]) -> None:
        super().__init__(tables, ids)
        # Compiled blocks by start pc, and decoded instructions for cold code by pc, as
        # (closure, pc the path goes on at or -1 if the instruction ends a block). Both
        # are registered with the CodeWatch, which drops entries whose pages are written.
        self.blocks: dict[int, Block]
        self.ops: dict[int, tuple[Any, int]]
        self.blocks, self.ops = tables
        self.block_id, self.op_id = ids
        # Block start -> instructions run cold from there (negative after a compile: how
        # many more it needs if the block is dropped), and how often it was compiled.
        self.heat: dict[int, int] = {}
        self.recompiles: dict[int, int] = {}
        # Block start -> what revives the block if a store drops it but leaves its
        # instructions as they were (data next to code): (function, physical pages,
        # virtual pages, RAM ranges as (offset, size), their bytes when compiled).
        self.built: dict[int, tuple[Any, set[int], set[int], list[tuple[int, int]], bytes]] = {}

    def cleared(self) -> None:
        self.heat.clear()  # a flush is not the blocks' fault: no backoff
        self.recompiles.clear()
        self.built.clear()  # translations may have changed

    def forget(self, pcs: list[int]) -> None:
        built = self.built
        for pc in pcs:
            built.pop(pc, None)


def _spans(pa: int, length: int, ppns: list[int]) -> tuple[tuple[int, int, int], ...]:
    """The bytes of an instruction at physical ``pa`` as (ppn, offset, size) per page
    (``ppns``: the physical pages it came from, two if it straddles a page boundary)."""
    off = pa & 0xFFF
    if off + length <= 0x1000:
        return ((pa >> 12, off, length),)
    first = 0x1000 - off
    return ((pa >> 12, off, first), (ppns[-1], 0, length - first))


def _ranges(spans: list[tuple[int, int, int]], ram_base: int) -> list[tuple[int, int]]:
    """(ppn, offset, size) spans of RAM as merged (RAM offset, size) ranges."""
    out: list[list[int]] = []
    for o, n in sorted(((ppn << 12) + off - ram_base, size) for ppn, off, size in spans):
        if out and o <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], o + n - out[-1][0])
        else:
            out.append([o, n])
    return [(o, n) for o, n in out]


@lru_cache(maxsize=1 << 16)
def _decode(word: int, length: int) -> Decoded:
    return decode(word, length)


class Translator:
    """Runs one hart through compiled blocks; same interface as :class:`Interpreter`.

    Cold code is interpreted one instruction at a time through the interpreter's
    closures (decoded once per context, as the interpreter does). A cold stretch runs
    from a block start (the target of a taken jump or branch, or the instruction after
    one that ends blocks) to the next one; its length is added to its start's heat, and
    once that reaches ``threshold`` instructions the block there is compiled. A block
    that stores drop again and again (code sharing a page with written data) needs
    twice as much heat for each recompilation; a flush (SFENCE.VMA, reset) only resets
    the heat.
    """

    def __init__(
        self, hart: Hart, code: CodeWatch, threshold: int = HOT_THRESHOLD,
        max_block: int = MAX_BLOCK, superblocks: bool = True,
    ) -> None:
        self.hart = hart
        self.code = code
        self.threshold = max(threshold, 1)  # cold instructions from a start pc
        self.max_block = max_block
        self.superblocks = superblocks
        self.compiled = 0  # blocks compiled so far (statistics)
        self.revived = 0  # blocks dropped by a store and put back unchanged (statistics)
        # Like the interpreter's contexts, plus whether data accesses are translated
        # (MPRV), which inline RAM accesses depend on; it only changes with a SliceBreak.
        self.cache = CodeCache(hart, code, tables=2, context=_Context, by_data_mode=True)
        # Which bytes of code pages hold instructions (shared by the harts): a store next
        # to code (data in the same page) leaves blocks alone.
        self.code_bytes = CodeBytes.of(code)
        hart.flush_decoded = self.flush  # type: ignore[method-assign]
        hart.flush_decoded_page = self.flush_page  # type: ignore[method-assign]

    # -- caches -----------------------------------------------------------------------------

    def flush(self, all_contexts: bool = True, supervisor: bool = True) -> None:
        """Drop blocks and decoded instructions: all, or those fetched through translation.

        With ``all_contexts`` False only translated contexts (S and U) are dropped, and
        S-mode ones only if ``supervisor``.
        """
        self.cache.flush(all_contexts, supervisor)

    def flush_page(self, vpn: int) -> None:
        """SFENCE.VMA of one virtual page: drop what was fetched from it."""
        self.cache.flush_page(vpn)

    def _context(self) -> _Context:
        return self.cache.current()  # type: ignore[return-value]

    def _fetch(self, pc: int) -> tuple[Decoded, list[int], int]:
        """Fetch and decode at ``pc``: (decoded, physical pages, physical address)."""
        mmu = self.hart.mmu
        pa = mmu.translate_fetch(pc)
        off = pa - mmu.ram_base
        if 0 <= off < mmu.ram_size - 2 and (pa & 0xFFF) < 0xFFE:  # RAM, within a page
            lo = mmu.u16[off >> 1]
            if lo & 3 == 3:
                return _decode(lo | mmu.u16[(off >> 1) + 1] << 16, 4), [pa >> 12], pa
            return _decode(lo, 2), [pa >> 12], pa
        lo, pa = mmu.fetch16(pc)
        if lo & 3 == 3:
            hi, pa2 = mmu.fetch16((pc + 2) & M64)
            return _decode(lo | hi << 16, 4), [pa >> 12, pa2 >> 12], pa
        return _decode(lo, 2), [pa >> 12], pa

    def _decode_op(self, pc: int, ctx: _Context) -> tuple[Any, int]:
        """Decode one instruction for cold execution (raises its fetch fault)."""
        d, ppns, pa = self._fetch(pc)
        op = make_op(self.hart, d, pc)
        npc = (pc + d.length) & M64
        ends = _ends_block(d) or npc >> 12 != pc >> 12
        entry = (op, -1 if ends else npc)
        ctx.ops[pc] = entry
        last = ((pc + d.length - 1) & M64) >> 12
        self.cache.add(ctx.op_id, pc, ppns, {pc >> 12, last})
        for ppn, off, size in _spans(pa, d.length, ppns):
            self.code_bytes.mark(ppn, ctx.op_id, pc, off, size)
        return entry

    # -- building blocks --------------------------------------------------------------------

    def _scan(self, start: int) -> tuple[Path, set[int], bool, list[tuple[int, int, int]]]:
        """Decode the block tree at ``start``: (tree, physical pages, in RAM, the bytes
        its instructions occupy as (ppn, offset, size)).

        The main path goes through not-taken branches and followed jumps; then, while
        the instruction budget lasts, the taken side of each branch (in path order) that
        stays in the page and does not go back to the path gets its own path. A fetch
        fault on the first instruction is raised (it is that instruction's trap); one
        further on just ends the path before it.
        """
        mmu = self.hart.mmu
        ram_lo, ram_hi = mmu.ram_base, mmu.ram_base + mmu.ram_size
        pages: set[int] = set()
        spans: list[tuple[int, int, int]] = []
        page = start >> 12
        budget = [self.max_block]
        in_ram = [True]
        superblocks = self.superblocks

        def path(pc: int, on: set[int]) -> Path:
            out: Path = []
            on = set(on)
            while budget[0] > 0:
                try:
                    d, ppns, pa = self._fetch(pc)
                except Trap:
                    if pc == start:
                        raise
                    break
                budget[0] -= 1
                out.append([pc, d, None])
                on.add(pc)
                pages.update(ppns)
                spans.extend(_spans(pa, d.length, ppns))
                if not ram_lo <= pa < ram_hi:
                    in_ram[0] = False
                    break  # never read ahead from a device
                name = d.name
                npc = (pc + d.length) & M64
                if _ends_block(d):
                    break
                if name == "jal":
                    pc = (pc + d.imm) & M64
                    if not superblocks or pc == start or pc >> 12 != page or pc in on:
                        break
                    continue
                if name in _BRANCHES and not superblocks:
                    break
                if npc >> 12 != page or npc in on:
                    break
                pc = npc
            if superblocks:
                prefix = set(on)
                for entry in out:
                    pc, d = entry[0], entry[1]
                    prefix.add(pc)
                    if d.name not in _BRANCHES or budget[0] < 2:
                        continue
                    t = (pc + d.imm) & M64
                    if t != start and t >> 12 == page and t not in prefix:
                        entry[2] = path(t, {p for p in prefix})
            return out

        tree = path(start, set())
        return tree, pages, in_ram[0], spans

    def _compile(self, pc: int, ctx: _Context) -> Block | None:
        """Compile the block at ``pc`` into ``ctx``; None if it must stay cold."""
        try:
            tree, pages, in_ram, spans = self._scan(pc)
        except Trap:
            return None  # the cold path raises the fetch fault
        if not in_ram:
            ctx.heat[pc] = -(1 << 62)  # code outside RAM (the boot ROM) stays cold
            return None
        vpns = set()
        for ipc, d in _walk(tree):
            vpns.add(ipc >> 12)
            vpns.add(((ipc + d.length - 1) & M64) >> 12)
        self.cache.add(ctx.block_id, pc, pages, vpns)
        for ppn, off, size in spans:
            self.code_bytes.mark(ppn, ctx.block_id, pc, off, size)
        fn = translate(self.hart, pc, tree, ctx.blocks, inline_ram=not self.hart.mmu.dmode)
        ctx.blocks[pc] = fn
        self.compiled += 1
        ranges = _ranges(spans, self.hart.mmu.ram_base)
        ctx.built[pc] = (fn, pages, vpns, ranges, self._ram_bytes(ranges))
        # If it is dropped (its page written), it must get hotter to be compiled again.
        again = ctx.recompiles.get(pc, -1) + 1
        ctx.recompiles[pc] = again
        ctx.heat[pc] = -(self.threshold << min(again, 16)) + self.threshold
        return fn

    def _ram_bytes(self, ranges: list[tuple[int, int]]) -> bytes:
        mv = self.hart.mmu.ram.mv
        return b"".join(mv[o:o + n] for o, n in ranges)

    def _revive(self, pc: int, ctx: _Context) -> Block | None:
        """Put back the block at ``pc`` dropped by a store that left its instructions as
        they were (e.g. a store to data sharing its page, through the MMU); None if they
        changed. No flush happened since (it would have forgotten the block), so the
        virtual-to-physical mapping is the one it was compiled with."""
        fn, pages, vpns, ranges, code = ctx.built[pc]
        if self._ram_bytes(ranges) != code:
            del ctx.built[pc]
            return None
        self.cache.add(ctx.block_id, pc, pages, vpns)
        base = self.hart.mmu.ram_base
        mark = self.code_bytes.mark
        for o, n in ranges:
            pa = base + o
            while n > 0:  # ranges may cross pages
                size = min(n, 0x1000 - (pa & 0xFFF))
                mark(pa >> 12, ctx.block_id, pc, pa & 0xFFF, size)
                pa += size
                n -= size
        ctx.blocks[pc] = fn
        self.revived += 1
        return fn

    # -- running --------------------------------------------------------------------------

    @staticmethod
    def _faulting(e: Block, exc: BaseException) -> tuple[int, int]:
        """(instructions retired in block ``e`` before the one that raised, its index)."""
        info: BlockInfo = e.info  # type: ignore[attr-defined]
        tb = exc.__traceback__
        code = info.code
        while tb is not None and tb.tb_frame.f_code is not code:
            tb = tb.tb_next
        assert tb is not None, "exception did not come through the block"
        j = info.lines[tb.tb_lineno]
        return tb.tb_frame.f_locals.get("k", 0) + info.depth[j], j

    def run(self, budget: int) -> int:
        """Execute about ``budget`` instructions (whole blocks); return how many retired.

        Returns early when the hart enters WFI or a device requests a stop.
        """
        hart = self.hart
        threshold = self.threshold - 1
        done = 0
        trapped = 0  # trapping instructions retire nothing but still use up the budget
        base = hart.instret  # hart.instret = base + done, written back on the way out
        while done + trapped < budget:
            if hart.waiting:
                break
            if (hart.mip | hart.mip_hw) & hart.mie:
                irq = hart.interrupt_to_take()
                if irq is not None:
                    hart.take_trap(irq, 0, hart.pc, interrupt=True)
            hart.context_changed = False
            ctx = self._context()
            bget = ctx.blocks.get
            oget = ctx.ops.get
            heat = ctx.heat
            built = ctx.built
            pc = hart.pc
            limit = budget - trapped
            e: Any = None
            op: Any = None
            try:
                while done < limit:
                    e = bget(pc)
                    if e is None:
                        h = heat.get(pc, 0)
                        if pc in built:
                            e = self._revive(pc, ctx)
                        if e is None and h >= threshold:
                            e = self._compile(pc, ctx)
                    if e is not None:
                        pc, k = e(limit - done)
                        done += k
                        continue
                    # Cold: interpret up to a taken jump, an instruction ending blocks, or
                    # the end of the budget. On an exception pc is the faulting insn's.
                    start = pc
                    first = done
                    while True:
                        o = oget(pc)
                        if o is None:
                            o = self._decode_op(pc, ctx)
                        op, nx = o
                        pc = op()
                        done += 1
                        if pc != nx or done >= limit:
                            break
                    heat[start] = h + done - first
                hart.pc = pc
            except Trap as t:
                if e is None:  # cold (or fetching): pc is the faulting instruction's
                    fpc = pc
                else:
                    k, j = self._faulting(e, t)
                    done += k
                    fpc = e.info.pcs[j]
                trapped += 1
                hart.take_trap(t.cause, t.tval, fpc)
                if hart.pc == fpc:
                    # The trap handler's first instruction is the one that just trapped:
                    # the hart would trap forever. Report it instead of spinning.
                    hart.instret = base + done
                    raise GuestCrash(hart) from None
            except SliceBreak as s:
                # The closure has set hart.pc.
                done += 1 if e is None else self._faulting(e, s)[0] + 1
                s.__traceback__ = None  # a shared instance: do not let tracebacks pile up
            except YieldSlice as y:  # pause / wfi on a multi-hart machine: hand over
                done += 1 if e is None else self._faulting(e, y)[0] + 1
                y.__traceback__ = None
                break
            except CounterAccess as c:
                if e is None:
                    fpc = pc
                else:
                    k, j = self._faulting(e, c)
                    done += k
                    op, fpc = e.info.ops[j], e.info.pcs[j]
                c.__traceback__ = None
                hart.instret = base + done
                try:
                    hart.pc = op.exact()
                    base = hart.instret - done  # a write to minstret moves the base
                    done += 1
                except SliceBreak as s:
                    s.__traceback__ = None
                    base = hart.instret - done
                    done += 1
                except Trap as t:
                    trapped += 1
                    hart.take_trap(t.cause, t.tval, fpc)
            except _StoreExit as s:
                k, j = self._faulting(e, s)
                s.__traceback__ = None
                done += k + 1
                pc = e.info.npcs[j]
                hart.pc = pc
            except StopRequest as s:
                if e is None:
                    done += 1
                    hart.pc = op.npc
                else:
                    k, j = self._faulting(e, s)
                    done += k + 1
                    hart.pc = e.info.npcs[j]
                break
        hart.instret = base + done
        return done


__all__ = ["HOT_THRESHOLD", "MAX_BLOCK", "BlockInfo", "Translator", "translate"]
