"""Tier 1 of the fast engine: hot guest code compiled into Python functions.

Why: the interpreter pays a dict lookup, a closure call and a ``return npc`` per guest
instruction. The translator generates Python functions in which integer ALU operations,
loads, stores, branches and the common double-precision operations are plain Python
statements on Python locals, and in which control goes from block to block (and round
loops) without returning to the run loop where the successor is known. ``compile()`` is
expensive (about 100 µs per guest instruction here), so code runs *cold* first, one
instruction at a time through the interpreter's own closures, and a block is compiled
only once ``threshold`` instructions have run cold from its start pc.

How:

* **One semantics.** Instructions come from the one decoder (isa/decoder.py). The inline
  Python is generated from the interpreter's ``ALU`` / ``BRANCH`` expression tables (or
  cheaper equivalents: compares instead of masks with big constants, signed compares
  without big ints) and its ``LOADS`` / ``STORES`` MMU methods; every other instruction
  (CSR, AMO, LR/SC, single precision, system) is a call to the closure that the
  interpreter's ``make_op`` builds for it, except the common double-precision ones
  (arithmetic, fused multiply-add, compares, sign injection, moves, int32 conversions;
  ``_FP_INLINE``; and fld/fsd in the float body). Whether mstatus.FS is dirty, frm is
  round-to-nearest-even (``fpok``) and fflags.NX is set (``fpnx``) is read on entry:
  only the last instruction of a path can change them (NX only ever gets set). With
  ``fpnx`` the function runs its *float body*: the f registers it uses are Python floats
  (locals ``d<r>``) from entry to exit, add/sub/mul/div/sqrt are host float operations
  whose result is checked to rule out every flag but NX (sticky, already set), and fused
  multiply-adds are exact sums (``math.fsum``) of Veltkamp-split products. Otherwise the
  *bits body* runs them through softfloat's binary64 RNE fast paths while ``fpok``
  holds. Anything neither can prove falls back to the closure.
* **Trees.** A tree is a small set of paths from a start pc. A path goes through
  not-taken conditional branches and through ``jal`` to targets in the same page; it
  ends with (and includes) ``jalr``, a ``jal`` it does not follow, any instruction whose
  closure may raise :class:`SliceBreak`, :class:`YieldSlice` or :class:`CounterAccess`
  or always traps (CSR accesses, ``mret``/``sret``/``wfi``/``sfence.vma``/``pause``,
  ``ecall``/``ebreak``/illegal), ``fence.i``, or the last instruction that starts in
  the start pc's 4 KiB virtual page. The taken side of a branch is either a side exit
  or, while the tree's budget of ``MAX_BLOCK`` instructions lasts, a path of its own
  (if-then-else code stays inside the function). Code fetched from outside RAM (the
  boot ROM) is never read ahead and never compiled.
* **Functions with several entries.** The hot start pc's tree is compiled together with
  the trees of further *entries*: the loop headers and call return addresses of the
  code around it that already ran, then the exits of the trees that already ran (the
  trees of these stop where they reach another entry), within ``max_region``
  instructions and ``MAX_ENTRIES`` entries. A branch, jump or fall-through to its own
  tree's start makes that tree a ``while`` loop; to another entry it sets ``ent`` and
  goes round the function's outer loop, which picks the tree; a ``jalr`` looks its
  target up among the entries. These transitions are the chaining: they check only the
  budget (``k < rem``). A jalr target that no entry has and that is taken again and
  again (a bytecode interpreter's handlers, a function's callers) makes the function be
  compiled again with it as an entry (``_learner``). Every entry pc is registered in the
  block cache with all the function's pages, so whatever drops one drops all.
* **Registers** read repeatedly or written are Python locals. Outside loops every write
  also goes to ``hart.x`` (``x[5] = r5 = ...``), so exits, traps and interpreter
  closures need no write-back. Looping functions load their locals on entry and write
  the written ones back at every exit, before every closure call and, through a
  ``try``/``except`` around the loop (free in CPython 3.11 until something is raised),
  when anything is raised; float locals are written back the same way. Constants and
  known value widths are propagated along each path, so ``auipc``/``lui`` address
  arithmetic folds and provably useless 64-bit masks and signed-compare fix-ups go.
  Where data translation is off (M-mode, bare S-mode; part of the cache key) loads and
  stores index guest RAM inline on small offsets and call the MMU only for MMIO,
  misaligned or out-of-range addresses; otherwise they look the page up in the MMU's
  TLB inline and call the MMU on a miss.
* **Precise traps.** When instruction j of a function raises, the hart (after the
  write-back) holds exactly the effects of the instructions before it. The run loop
  only needs j, and gets it for free from the exception's traceback: every instruction
  is emitted on its own source lines, so the line number in the function's frame maps
  back to j, and the frame's ``k`` counts the instructions of earlier loop iterations
  and trees. Nothing is counted on the fast path. From j the loop derives the faulting
  pc, the exact retired count (instret), where a :class:`StopRequest` resumes and which
  closure performs an exact counter access. Cold code runs like the interpreter: pc is
  the faulting one.
* **Caching and invalidation** follow the interpreter (a
  :class:`~.code_cache.CodeCache`): per translation context (privilege, satp, data
  translation on/off) one dict of compiled entries and one of decoded instructions for
  cold code, keyed by virtual pc; the physical bytes every instruction came from are
  registered with the machine's :class:`CodeWatch`, so a store into them (by any hart,
  the page walker or a device) drops what was built from them, and SFENCE.VMA drops the
  virtual pages it names (``flush``/``flush_page``, installed as
  ``hart.flush_decoded*``). A store that drops the function executing it ends it right
  after the store, so even self-modifying code without FENCE.I sees its new
  instructions at once, as on the interpreter (and QEMU). Data often shares a page with
  code: the CodeWatch knows which bytes of a page hold registered instructions, so an
  inline store into a page holding code (:class:`~.code_cache.CodePages`) drops only
  the functions whose bytes it wrote; one dropped although its bytes are unchanged (the
  guest rewrote the same instruction) is put back as it was (``_revive``). A block
  whose code really changes again and again needs twice as many cold instructions
  before each recompilation.
* **Interrupts** are checked at the start of each ``run`` slice, as in the interpreter.
  ``run(budget)`` runs whole paths until the budget is used up, so it may overshoot by
  less than one path (``MAX_BLOCK`` instructions); the count it returns and
  ``hart.instret`` are exact.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from types import FunctionType
from typing import Any

from ..isa import csr as C
from ..isa import spec
from ..isa.decoder import Decoded, decode
from . import softfloat as sf
from .code_cache import CodeCache, CodeContext, CodePages, insn_spans, merge_spans
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
    make_op,
    spin_hint,
)
from .mmu import CodeWatch
from .run_loop import (
    SLICE_EXITS,
    SliceStrategy,
)
from .trap import Trap

MAX_BLOCK = 64  # instructions per block path at most
# Instructions (in all its trees) and entries of one compiled function at most.
MAX_REGION = 256
MAX_ENTRIES = 16
# A jalr target that is no entry of the function it leaves, taken this often from one
# jalr, makes the function be compiled again with the targets seen there as entries
# (MAX_LEARNED at most per jalr, MAX_RELEARN recompilations per function).
LEARN_AFTER = 16
MAX_LEARNED = 12
MAX_RELEARN = 3
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
_LOGIC = frozenset({"and", "or", "xor", "andi", "ori", "xori"})
# 32-bit operations whose result before the sign extension is never negative.
_NONNEG_W = frozenset({"addw", "sllw", "slliw", "mulw", "srlw"})
# Signed compares that equal their unsigned forms when both operands are below 2**63.
_UNSIGNED_FORM = {"blt": "bltu", "bge": "bgeu", "slt": "sltu", "slti": "sltiu"}
# Inline loads: (ram view attribute, size, sign-extend to 64 bits, result bits).
_LOAD_VIEWS = {n: (f"u{8 * i.size}", i.size, i.signed,
                    64 if i.signed or i.size == 8 else 8 * i.size)
               for n, i in spec.LOADS.items()}
_STORE_VIEWS = {n: (f"u{8 * i.size}", i.size) for n, i in spec.STORES.items()}
_VIEW_SHIFT = {1: 0, 2: 1, 4: 2, 8: 3}
_IDENT = re.compile(r"\b[A-Za-z]")

# Double-precision instructions emitted inline (see _Emitter.fp and _Emitter.fp_fast):
# kind, and for the arithmetic ones the softfloat function that computes them under
# round-to-nearest-even (host floats with exact flags), as (bits, flags). Where the
# block's ``fpok`` holds (computed on entry: mstatus.FS and SD set, so nothing to check
# or mark, and frm = RNE) they run inline on the bits in ``f``; where ``fpnx`` holds as
# well (fflags.NX already set) on Python floats; otherwise, and for static rounding modes
# other than RNE, through the interpreter's closure.
_SIGN64 = 1 << 63
def _inline_kind(i: spec.FpInsn) -> tuple[str, Any] | None:
    """How a double-precision instruction of isa/spec.py runs inline, by its operation."""
    if i.fmt != "d":
        return None
    op = i.op
    if op in ("add", "sub", "mul", "div"):
        return "bin", getattr(sf, f"{op}_d_rne")
    if op == "sqrt":
        return "un", sf.sqrt_d_rne
    if op == "fma":  # the sign flips of the product and the addend
        return "fma", (_SIGN64 if i.arg & 1 else 0, _SIGN64 if i.arg & 2 else 0)
    if op in ("eq", "lt", "le"):
        return "cmp", getattr(sf, f"{op}_d")
    if op == "sgnj":
        return "sgnj", i.arg
    if op in ("mv_x", "mv_f"):
        return ("mvxd" if op == "mv_x" else "mvdx"), None
    if op == "from_int" and i.arg == 32:  # exact: no rounding
        return "cvt", 32 if i.signed else -32
    return None


_FP_INLINE: dict[str, tuple[str, Any]] = {
    n: k for n, i in spec.FP.items() if (k := _inline_kind(i)) is not None}
_FP_OP = {n: i.op for n, i in spec.FP.items()}  # instruction -> its operation
# Double-precision loads and stores, inline only on floats (where FS is known on).
_FP_MEM = frozenset(n for n, i in spec.FP.items()
                    if i.fmt == "d" and i.op in ("load", "store"))
_MINN = 2.2250738585072014e-308  # smallest normal binary64
_MAXF = 1.7976931348623157e308  # largest finite binary64
# Bounds of the inline fused multiply-add (see _Emitter.fma_fast).
_FMA_LO = 2.0**-969  # product: no partial product underflows
_FMA_HI = 2.0**1000  # product and addend: no partial sum overflows
_SPLIT = 134217729.0  # 2**27 + 1
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


def _sgnj_bits(kind: int, rs1: int, rs2: int) -> str:
    """fsgnj.d (0), fsgnjn.d (1), fsgnjx.d (2) on the bits in f."""
    a, b = f"f[{rs1}]", f"f[{rs2}]"
    if rs1 == rs2:  # fmv.d, fneg.d, fabs.d
        return (a, f"{a} ^ {_SIGN64:#x}", f"{a} & {_SIGN64 - 1:#x}")[kind]
    sign = (f"{b} & {_SIGN64:#x}", f"~{b} & {_SIGN64:#x}", f"({a} ^ {b}) & {_SIGN64:#x}")[kind]
    return f"({a} & {_SIGN64 - 1:#x}) | ({sign})"


def _walk(tree: Path):
    """Every (pc, decoded) of a block tree."""
    for pc, d, taken in tree:
        yield pc, d
        if taken:
            yield from _walk(taken)


def _exits(tree: Path) -> list[int]:
    """The static targets a block tree may leave to, in path order: branch and jump
    targets not compiled into it, fall-throughs at the end of a path, and the return
    address of each call (where the callee's ``ret`` goes)."""
    out: list[int] = []
    for p, (pc, d, taken) in enumerate(tree):
        last = p == len(tree) - 1
        name = d.name
        npc = (pc + d.length) & M64
        if name in _BRANCHES:
            if taken:
                out.extend(_exits(taken))
            else:
                out.append((pc + d.imm) & M64)
            if last:
                out.append(npc)
        elif name == "jal":
            if last:
                out.append((pc + d.imm) & M64)
            if d.rd:
                out.append(npc)
        elif last and _falls_through(d):
            out.append(npc)
    return out


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


def _signed_lt(a: str, b: str) -> str:
    """``a < b`` as signed 64-bit values (expressions of unsigned ones), without the big
    ints that ``(a ^ SIGN) < (b ^ SIGN)`` builds: an unsigned compare where the signs
    agree; a constant operand fixes its sign at compile time."""
    va, vb = _fold(a), _fold(b)
    if va is not None and vb is not None:
        return str(int((va ^ SIGN) < (vb ^ SIGN)))
    if vb is not None:  # a < b: a negative, or a non-negative and below b
        return f"({a} < {b} or {a} >= {SIGN:#x})" if vb < SIGN else f"{SIGN:#x} <= {a} < {b}"
    if va is not None:
        return f"{a} < {b} < {SIGN:#x}" if va < SIGN else f"({b} < {SIGN:#x} or {a} < {b})"
    return f"({a} < {b} if ({a} < {SIGN:#x}) == ({b} < {SIGN:#x}) else {b} < {SIGN:#x})"


def _bits(v: int) -> int:
    return max(v.bit_length(), 1)


def _ends_block(d: Decoded) -> bool:
    """Whether ``d`` always ends a block (besides branches and jal not followed)."""
    return d.name in _ENDS_BLOCK or spin_hint(d.raw)  # a spin hint may yield the slice


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
    if name in _FP_OP:  # F/D: only compares, fclass, fmv.x, fcvt to int
        return _FP_OP[name] in ("eq", "lt", "le", "class", "mv_x", "to_int")
    return not name.startswith("fence")


def _stores(name: str) -> bool:
    """Whether an instruction run through its closure may store to memory."""
    return name.startswith(("amo", "sc.")) or _FP_OP.get(name) == "store"


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
    if name in _FP_MEM:
        return (d.rs1,), 0
    # fence, or a closure (it works on hart.x; its rd is reloaded after it)
    return (), 0


def _foperands(d: Decoded) -> tuple[tuple[int, ...], int | None]:
    """(float registers an inline FP instruction reads, the one it writes or None)."""
    kind = "mem" if d.name in _FP_MEM else _FP_INLINE[d.name][0]
    if kind == "mem":
        return ((d.rs2,), None) if _FP_OP[d.name] == "store" else ((), d.rd)
    if kind == "fma":
        return (d.rs1, d.rs2, d.rs3), d.rd
    if kind in ("bin", "sgnj"):
        return (d.rs1, d.rs2), d.rd
    if kind == "cmp":
        return (d.rs1, d.rs2), None
    if kind == "mvxd":
        return (d.rs1,), None
    if kind == "un":
        return (d.rs1,), d.rd
    return (), d.rd  # mvdx, cvt


def _fp_inline(d: Decoded) -> bool:
    """Whether ``d`` is a double-precision instruction the generated code may run inline."""
    name = d.name
    return name in _FP_INLINE and (name not in _FP_RM or d.rm in (0, 7))


def _writes_f(name: str) -> bool:
    """Whether an instruction run through its closure may write a float register."""
    return name in _FP_OP and not _writes_x(name) and _FP_OP[name] != "store"


_USES_B = {name: _uses_b(name) for name in ALU}


class _Emitter:
    """Generates the source of one compiled function: the trees of its entries, in a
    float body and a bits body where it has inline double-precision code (see the module
    docstring).

    Invariants along the path: a register in ``locals`` is either unbound (not yet read or
    written: its value is in x) or holds its current value; ``written`` holds the locals
    that may differ from x. Values are always unsigned 64-bit, as in the interpreter.
    In the float body (``fast``) the same holds for the float locals ``d<r>`` (Python
    floats with the bits of f[r]): ``fbound`` and ``fwritten``.
    """

    def __init__(
        self, hart: Hart, info: BlockInfo, trees: list[tuple[int, Path]], inline_ram: bool,
        cache: dict[int, Any], learn: Callable[[int, int], None] | None = None,
        token: int = 0,
    ) -> None:
        self.hart = hart
        self.learn = learn
        self.token = token  # the key whose absence from the block table means "dropped"
        self.info = info
        self.trees = trees
        self.states = {start: i for i, (start, _tree) in enumerate(trees)}
        self.multi = len(trees) > 1  # several entries: a state machine over them
        self.cur = 0  # the entry whose tree is being emitted
        self.inner = False  # emitting inside that entry's own loop (multi only)
        self.inline_ram = inline_ram
        self.ram_base = hart.mmu.ram_base
        self.ram_size = hart.mmu.ram_size
        self.body: list[str] = []
        self.line_insn: list[int] = []  # per body line: instruction index
        self.closure_lines: list[int] = []  # body lines that call interpreter closures
        self.env: dict[str, Any] = {"x": hart.x, "cache": cache, "mmu": hart.mmu}
        self.tlbs: set[str] = set()  # TLB lookups used (bound on entry)
        self.index: dict[int, int] = {}  # id of a tree entry -> instruction index
        self.idx = 0
        self.indent = 1
        self.fast = False  # emitting the float body (fpnx holds)
        self.const: dict[int, int] = {}  # register -> known value along the path
        self.width: dict[int, int] = {}  # register -> known bit width (absent: 64)
        self.sx: set[int] = set()  # registers known to hold sign-extended 32-bit values
        self.written: set[int] = set()  # locals written since x was last brought up to date
        self.bound: set[int] = set()  # locals assigned so far along the path
        self.fwritten: set[int] = set()  # float locals written since f was brought up to date
        self.fbound: set[int] = set()  # float locals assigned so far along the path
        # A branch or jal back to the start of its tree, or an instruction falling
        # through into it (always the last of its path), makes the tree a loop; the
        # function loops if some tree does or if it has several entries.
        self.self_loop = [
            any(((d.name in _BRANCHES or d.name == "jal") and (pc + d.imm) & M64 == start)
                or ((pc + d.length) & M64 == start and _falls_through(d))
                for pc, d in _walk(tree))
            for start, tree in trees
        ]
        self.loop = self.multi or self.self_loop[0]
        insns = [(pc, d) for _start, tree in trees for pc, d in _walk(tree)]
        reads: dict[int, int] = {}
        writes: set[int] = set()
        freads: set[int] = set()
        fwrites: set[int] = set()
        for _pc, d in insns:
            srcs, dst = _operands(d)
            for r in srcs:
                if r:
                    reads[r] = reads.get(r, 0) + 1
            if dst:
                writes.add(dst)
            if _fp_inline(d) or d.name in _FP_MEM:
                fsrcs, fdst = _foperands(d)
                freads.update(fsrcs)
                if fdst is not None:
                    fwrites.add(fdst)
        # Locals: registers read more than once, or read and written, or read in a loop.
        # Those only written are stored straight into x; those read once read from x.
        self.locals = {r for r, cnt in reads.items() if r in writes or cnt > 1 or self.loop}
        self.all_written = writes & self.locals
        # Inline double-precision code: a float body too, for when fpnx holds (every
        # register those instructions touch is a float local there).
        self.fp_used = any(_fp_inline(d) for _pc, d in insns)
        self.flocals = freads | fwrites if self.fp_used else set()
        self.fall_written = fwrites if self.fp_used else set()

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

    def write(self, r: int, expr: str, width: int = 64, sext: bool = False) -> None:
        """Emit ``x[r] = expr`` (to a local or to x) and track what is known about it
        (``sext``: the value is a sign-extended 32-bit one)."""
        if r == 0:
            return
        value = _fold(expr)
        if value is not None:
            self.const[r] = value
            self.width[r] = _bits(value)
            expr = hex(value)
            sext = value < 0x80000000 or value >= M64 - 0x7FFFFFFF
        else:
            self.const.pop(r, None)
            if width < 64:
                self.width[r] = width
            else:
                self.width.pop(r, None)
        if sext or width <= 31:
            self.sx.add(r)
        else:
            self.sx.discard(r)
        if r in self.locals and expr == f"r{r}" and r in self.bound:
            return  # a move onto itself (sext.w of a sign-extended value)
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

    def sext32(self, r: int) -> bool:
        """Whether x[r] is known to be a sign-extended 32-bit value (a *w result, a
        signed load, below 2**31), so that sign-extending it again changes nothing."""
        return r == 0 or r in self.sx or self.width.get(r, 64) <= 31

    def fread(self, r: int) -> str:
        """The float local holding f[r] (emitting a lazy load if needed); float body only."""
        if r not in self.fbound:
            self.emit(f"fu[0] = f[{r}]; d{r} = fd[0]")
            self.fbound.add(r)
        return f"d{r}"

    def fset(self, r: int) -> None:
        """The float local of f[r] was just assigned."""
        self.fbound.add(r)
        self.fwritten.add(r)

    def writeback(self) -> None:
        """Bring x (and f) up to date with the locals."""
        parts = [f"x[{r}] = r{r}" for r in sorted(self.written)]
        parts += [f"fd[0] = d{r}; f[{r}] = fu[0]" for r in sorted(self.fwritten)]
        if parts:
            self.emit("; ".join(parts))

    def state(self) -> tuple[Any, ...]:
        """What is known along the path, to fork it at a branch."""
        return (dict(self.const), dict(self.width), set(self.sx), set(self.written),
                set(self.bound), set(self.fwritten), set(self.fbound))

    def restore(self, saved: tuple[Any, ...]) -> None:
        (self.const, self.width, self.sx, self.written, self.bound, self.fwritten,
         self.fbound) = saved

    def exit(self, target: str, n: int, dynamic: bool = False) -> None:
        """Go on at ``target`` after ``n`` instructions of this iteration: at an entry of
        the function while the budget lasts, else leave it. ``dynamic``: a jalr target,
        looked up among the entries at run time."""
        value = _fold(target)
        go = "break" if self.inner else "continue"  # to the function's outer loop
        if self.loop and value is not None and value in self.states:
            i = self.states[value]
            self.emit(f"k += {n}")
            if i == self.cur and self.self_loop[i]:  # the tree's own loop
                self.emit("if k < rem: continue")
            else:
                self.emit(f"if k < rem: ent = {i}; {go}")
            self.leave(target)
            return
        if dynamic and value is None and self.learn is not None:
            # A jalr target no entry has: counted (see Translator._learner).
            self.bind("learn", self.learn)
            site = self.info.pcs[self.idx]
            if self.multi:
                self.emit(f"k += {n}")
                self.emit(f"if (q := emap.get({target})) is None: learn({target}, {site:#x})")
                self.emit(f"elif k < rem: ent = q; {go}")
                self.leave(target)
                return
            self.emit(f"if {target} != {self.trees[0][0]:#x}: learn({target}, {site:#x})")
        elif self.multi and dynamic and value is None:
            self.emit(f"k += {n}")
            self.emit(f"if k < rem and (q := emap.get({target})) is not None: ent = q; {go}")
            self.leave(target)
            return
        if self.loop:
            self.emit(f"k += {n}")
            self.leave(target)
        else:
            self.writeback()
            self.emit(f"return ({target}, {n})")

    def leave(self, target: str) -> None:
        """Leave a looping function for ``target`` (``k`` counted): through the shared
        tail after its outer loop, which writes every written local back (all are bound
        in loops, so that is right at any exit) and returns (see ``tail``)."""
        if self.inner:  # out of the tree's own loop, then out of the outer one
            self.emit(f"to = {target}; ent = -1; break")
        else:
            self.emit(f"to = {target}; break")

    def tail(self) -> None:
        """The shared exit of a looping function's body (see ``leave``)."""
        self.written = set(self.all_written)
        self.fwritten = set(self.fall_written) if self.fast else set()
        self.writeback()
        self.emit("return (to, k)")

    def bodies(self) -> None:
        """Emit the function's code: the float body (if any) first, taken when ``fpnx``
        holds on entry, then the bits body."""
        self.indent = 2 if self.loop or self.fall_written else 1  # inside the try
        if self.multi:
            self.bind("emap", dict(self.states))
        if self.fp_used:
            self.bind("f", self.hart.f)
            self.bind("hart", self.hart)
            buf = bytearray(32)  # bits <-> float: two views of one buffer (per block)
            self.bind("fu", memoryview(buf).cast("Q"))
            self.bind("fd", memoryview(buf).cast("d"))
            self.emit("if fpnx:")
            self.indent += 1
            self.body_of(fast=True)
            self.indent -= 1
        self.body_of(fast=False)

    def body_of(self, fast: bool) -> None:
        """Emit one body (``fast``: the float body) of the function."""
        self.fast = fast
        if self.loop:
            if fast:  # every float local is loaded on entry too
                for r in sorted(self.flocals):
                    self.emit(f"fu[0] = f[{r}]; d{r} = fd[0]")
            self.emit("while True:")
            self.indent += 1
            self.dispatch(0, len(self.trees))
            self.indent -= 1
            self.tail()
        else:
            self.tree_code(0)

    def top(self) -> None:
        """The state at the top of a tree. In loops every local is loaded on entry, and
        whatever an earlier iteration (or entry) wrote is dirty."""
        self.const, self.width, self.sx = {}, {}, set()
        if self.loop:
            self.bound, self.written = set(self.locals), set(self.all_written)
            self.fbound = set(self.flocals) if self.fast else set()
            self.fwritten = set(self.fall_written) if self.fast else set()
        else:
            self.written, self.bound = set(), set()
            self.fwritten, self.fbound = set(), set()

    def dispatch(self, lo: int, hi: int) -> None:
        """Emit the trees of entries lo..hi-1, chosen by ``ent`` (a binary search)."""
        if hi - lo == 1:
            self.tree_code(lo)
            return
        mid = (lo + hi) // 2
        self.emit(f"if ent < {mid}:" if hi - lo > 2 else f"if ent == {lo}:")
        self.indent += 1
        self.dispatch(lo, mid)
        self.indent -= 1
        self.emit("else:")
        self.indent += 1
        self.dispatch(mid, hi)
        self.indent -= 1

    def tree_code(self, i: int) -> None:
        """Emit the tree of entry ``i`` (in its own loop if it has several entries and
        loops back to its start)."""
        self.cur = i
        self.top()
        tree = self.trees[i][1]
        if self.multi and self.self_loop[i]:
            self.emit("while True:")
            self.indent += 1
            self.inner = True
            self.path(tree, 0)
            self.inner = False
            self.indent -= 1
            self.emit("if ent < 0: break")  # left the tree's loop to leave the function
        else:
            self.path(tree, 0)

    def source(self) -> str:
        params = ", ".join(f"{k}={k}" for k in self.env)
        head = [f"def block(rem, ent=0, {params}):" if self.multi else f"def block(rem, {params}):"]
        if self.tlbs:  # the TLBs of the current context (SUM, MXR and MPRV pick them)
            head.append("    " + "; ".join(
                f"{t} = mmu.tlb_{t[-1]}.get" for t in sorted(self.tlbs)))
        if self.fp_used:  # nothing in a block can change FS, frm or NX but its last insn
            dirty = C.MSTATUS_FS | C.MSTATUS_SD  # what an FP instruction would set
            head.append(f"    fpok = (hart.mstatus & {dirty:#x}) == {dirty:#x} and hart.frm == 0")
            head.append("    fpnx = fpok and (hart.fflags & 1) != 0")
        if not self.loop and not self.fall_written:
            self.head_lines = len(head)
            return "\n".join([*head, *self.body, ""])
        if self.loop:
            entry = [f"r{r} = x[{r}]" for r in sorted(self.locals)]
            head.append("    " + "; ".join([*entry, "k = 0"]))
        head.append("    try:")
        regs = sorted(self.all_written) if self.loop else []
        fregs = sorted(self.fall_written)
        if regs or fregs:
            # On any exception, write the bound locals back: the hart then holds exactly
            # the effects of the instructions before the one that raised. After a closure
            # call raised, x and f are already right (written back before it; the closure
            # may have changed x[rd] or f[rd]).
            tail = ["    except BaseException as exc:"]
            wb = ["        loc = locals()"]
            if regs:
                wb += [
                    f"        for r in {tuple(regs)}:",
                    "            v = loc.get(f'r{r}')",
                    "            if v is not None:",
                    "                x[r] = v",
                ]
            if fregs:
                wb += [
                    f"        for r in {tuple(fregs)}:",
                    "            v = loc.get(f'd{r}')",
                    "            if v is not None:",
                    "                fd[0] = v; f[r] = fu[0]",
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
        for p, entry in enumerate(path):
            if self.insn(entry, depth + p, p == len(path) - 1):
                return
        raise AssertionError("a path always leaves the block")

    def op(self, j: int, d: Decoded, pc: int) -> str:
        """The name of the interpreter's closure for instruction ``j`` (made once)."""
        if self.info.ops[j] is None:
            self.info.ops[j] = make_op(self.hart, d, pc)
        return self.bind(f"op{j}", self.info.ops[j])

    def call(self, j: int, d: Decoded, pc: int, last: bool) -> None:
        """Emit a call of the closure of instruction ``j``, with x and f up to date."""
        ref = self.op(j, d, pc)
        self.writeback()  # the closure works on hart.x and hart.f
        self.written.clear()
        self.fwritten.clear()
        self.closure_lines.append(len(self.body))
        self.emit(f"t = {ref}()" if last else f"{ref}()")
        rd = d.rd
        if rd and _writes_x(d.name):  # closures write at most x[rd] (or f[rd])
            self.const.pop(rd, None)
            self.width.pop(rd, None)
            self.sx.discard(rd)
            if rd in self.bound:
                self.emit(f"r{rd} = x[{rd}]")
        if self.fast and rd in self.fbound and _writes_f(d.name):
            self.emit(f"fu[0] = f[{rd}]; d{rd} = fd[0]")

    def insn(self, entry: list[Any], depth: int, last: bool) -> bool:
        """Emit one instruction; return True if control never falls through it."""
        pc, d, taken = entry
        j = self.index.get(id(entry))
        if j is None:  # the first body to emit it
            j = self.index[id(entry)] = self.info.add(pc, d, depth)
        self.idx = j
        name = d.name
        n = depth + 1  # instructions of this iteration retired after it
        npc = (pc + d.length) & M64
        rd, rs1, rs2 = d.rd, d.rs1, d.rs2
        if name in ALU and not spin_hint(d.raw):  # (a DIV stall: its closure yields)
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
            if name in ("blt", "bge"):
                cond = _signed_lt(self.read(rs1), self.read(rs2))
                if name == "bge":
                    cond = f"not {cond}"
            else:
                cond = _subst(BRANCH[name], {"a": self.read(rs1), "b": self.read(rs2)})
            value = _fold(cond)
            if value == 0 or (t == npc and not last):
                pass  # never taken, or taken to where it falls through anyway
            else:
                if value is None:
                    self.emit(f"if {cond}:")
                    self.indent += 1
                if taken:  # the taken side is compiled too: fork what is known
                    saved = self.state()
                    self.path(taken, n)
                    self.restore(saved)
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
                self.exit(hex(t), n)
                return True
            return False  # followed: the path goes on at the target
        elif name == "jalr":
            base = self.read(rs1)
            target = f"({base} + {d.imm}) & {M64 & ~1:#x}" if d.imm else f"{base} & {M64 & ~1:#x}"
            value = _fold(target)
            if value is not None:
                target = hex(value)
            elif (rd and rd == rs1) or self.multi:
                self.emit(f"t = {target}")
                target = "t"
            self.write(rd, hex(npc))
            self.exit(target, n, dynamic=True)
            return True
        elif name == "fence" and d.raw != PAUSE:
            pass  # one sequentially consistent memory: nothing to order
        elif _fp_inline(d):
            if self.fast:
                self.fp_fast(name, d, j, pc)
            else:
                self.fp(name, d, j, pc)
        elif self.fast and name in _FP_MEM:
            self.fmem(name, d)
        else:
            self.call(j, d, pc, last)
            if last:
                self.exit("t", n)
                return True
            if _stores(name):
                self.smc_guard()
        if last:
            self.exit(hex(npc), n)
            return True
        return False

    def fp(self, name: str, d: Decoded, j: int, pc: int) -> None:
        """Emit a double-precision instruction inline on the bits in f (NX not known to
        be set), with the interpreter's closure as the fallback when ``fpok`` does not
        hold (FS not dirty, frm not RNE)."""
        kind, arg = _FP_INLINE[name]
        rd, rs1, rs2, rs3 = d.rd, d.rs1, d.rs2, d.rs3
        ref = self.op(j, d, pc)
        x_out = kind in ("cmp", "mvxd") and rd != 0
        # Operands from x are read (and lazily loaded) before the branch, so both sides
        # see them; the fast side's register write is then undone for the closure side.
        value = self.read(rs1) if kind in ("mvdx", "cvt") else ""
        saved = self.state()
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
            fn = self.bind(f"fp_{_FP_OP[name]}", arg)
            rel = {"eq": "==", "lt": "<", "le": "<="}[_FP_OP[name]]
            self.emit(f"fu[0] = f[{rs1}]; fu[1] = f[{rs2}]")
            self.emit("if (fx := fd[0]) == fx and (fy := fd[1]) == fy:")
            self.emit(f"    v = 1 if fx {rel} fy else 0")
            self.emit("else:")
            self.emit(f"    v, fl = {fn}(f[{rs1}], f[{rs2}])")
            self.emit("    hart.fflags |= fl")
            if rd:
                self.write(rd, "v", 1)
        elif kind == "sgnj":
            self.emit(f"f[{rd}] = {_sgnj_bits(arg, rs1, rs2)}")
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
        self.restore(saved)
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
                self.sx.add(rd)
            else:
                self.width.pop(rd, None)
                self.sx.discard(rd)
            if rd in self.locals:
                self.bound.add(rd)
                if self.loop:
                    self.written.add(rd)

    # -- the float body ---------------------------------------------------------------------

    def fallback(self, ref: str, d: Decoded, rd: int | None) -> None:
        """The rare side of an inline float instruction: the interpreter's closure (its
        float result, if any, reloaded into ``d<rd>``). The closure only reads its float
        sources and writes its destination, fflags and mstatus, and where ``fpnx`` holds
        it raises nothing a guest sees (FS is on, the rounding mode valid), so only its
        sources need writing back."""
        srcs = sorted({r for r in _foperands(d)[0] if r in self.fwritten})
        if srcs:
            self.emit("; ".join(f"fd[0] = d{r}; f[{r}] = fu[0]" for r in srcs))
        self.emit(f"{ref}()")
        if rd is not None:
            self.emit(f"fu[0] = f[{rd}]; d{rd} = fd[0]")

    def fp_fast(self, name: str, d: Decoded, j: int, pc: int) -> None:
        """Emit a double-precision instruction on float locals (``fpnx`` holds: FS dirty,
        frm = RNE and NX already set, so an operation whose only possible flag is NX
        needs no exactness check, just a result that rules out the other flags: finite,
        and normal where UF could arise). Anything else runs the closure. Host floats
        round to nearest even, as RNE requires; negation, ``abs`` and ``copysign`` only
        touch the sign bit (IEEE 754 §5.5.1), so NaN payloads survive them."""
        kind, arg = _FP_INLINE[name]
        rd, rs1, rs2 = d.rd, d.rs1, d.rs2
        ref = self.op(j, d, pc)
        mx, mn = repr(_MAXF), repr(_MINN)
        if kind == "bin":
            a, b = self.fread(rs1), self.fread(rs2)
            if _FP_OP[name] in ("add", "sub"):  # an inexact sum is never tiny
                o = "+" if _FP_OP[name] == "add" else "-"
                self.emit(f"if -{mx} <= (fz := {a} {o} {b}) <= {mx}: d{rd} = fz")
            elif _FP_OP[name] == "mul":  # zero only exactly (a zero factor)
                self.emit(f"if {mn} <= (fz := {a} * {b}) <= {mx} or -{mx} <= fz <= -{mn} "
                          f"or (fz == 0.0 and ({a} == 0.0 or {b} == 0.0)): d{rd} = fz")
            else:
                self.emit(f"if {b} != 0.0 and ({mn} <= (fz := {a} / {b}) <= {mx} "
                          f"or -{mx} <= fz <= -{mn}): d{rd} = fz")
        elif kind == "un":  # fsqrt.d of a positive finite value: normal, finite
            a = self.fread(rs1)
            self.bind("fsqrt", math.sqrt)
            self.emit(f"if 0.0 < {a} <= {mx}: d{rd} = fsqrt({a})")
        elif kind == "fma":
            self.fma_fast(d, ref, arg)
            self.fset(rd)
            return
        elif kind == "cmp":
            a, b = self.fread(rs1), self.fread(rs2)
            yes, no = {"eq": ("==", f"{a} < {b} or {a} > {b}"), "lt": ("<", f"{a} >= {b}"),
                       "le": ("<=", f"{a} > {b}")}[_FP_OP[name]]
            self.emit(f"if {a} {yes} {b}: v = 1")
            self.emit(f"elif {no}: v = 0")  # neither: a NaN (flags, maybe) -> closure
            self.emit("else:")
            self.indent += 1
            self.fallback(ref, d, None)
            self.emit(f"v = x[{rd}]" if rd else "pass")
            self.indent -= 1
            if rd:
                self.write(rd, "v", 1)
            return
        else:
            self.fp_move(kind, arg, d)
            return
        self.emit("else:")
        self.indent += 1
        self.fallback(ref, d, rd)
        self.indent -= 1
        self.fset(rd)

    def fp_move(self, kind: str, arg: Any, d: Decoded) -> None:
        """Sign injection, moves and int32 conversions (exact, no flags) on float locals."""
        rd, rs1, rs2 = d.rd, d.rs1, d.rs2
        if kind == "sgnj":
            a = self.fread(rs1)
            if rs1 == rs2:  # fmv.d, fneg.d, fabs.d
                expr = (a, f"-{a}", f"fabs({a})")[arg]
                self.bind("fabs", abs)
            else:
                b = self.fread(rs2)
                cs = self.bind("copysign", math.copysign)
                expr = (f"{cs}({a}, {b})", f"{cs}({a}, -{b})",
                        f"-{a} if {cs}(1.0, {b}) < 0.0 else {a}")[arg]
            self.emit(f"d{rd} = {expr}")
        elif kind == "mvxd":
            if rd:
                self.emit(f"fd[0] = {self.fread(rs1)}")
                self.write(rd, "fu[0]")
            return
        elif kind == "mvdx":
            value = self.read(rs1)
            if value == "0":
                self.emit(f"d{rd} = 0.0")
            else:
                self.emit(f"fu[0] = {value}; d{rd} = fd[0]")
        else:  # cvt: int32/uint32 -> binary64 is exact
            value = self.read(rs1)
            if arg > 0:
                self.emit(f"w = {value} & 0xFFFFFFFF")
                self.emit(f"d{rd} = (w - ((w & 0x80000000) << 1)) + 0.0")
            else:
                self.emit(f"d{rd} = ({value} & 0xFFFFFFFF) + 0.0")
        self.fset(rd)

    def fma_fast(self, d: Decoded, ref: str, flips: tuple[int, int]) -> None:
        """A fused multiply-add on float locals. Veltkamp's split (x = xh + xl, 26 bits
        each; exact unless C*x overflows, and then NaN) makes the four partial products
        of x*y exact when the product is above ``_FMA_LO`` (no partial product has bits
        below 2**-1074, subnormal factors included); ``math.fsum`` then returns their sum
        with z correctly rounded (to nearest even), which is the fused result. The
        bounds ``_FMA_HI`` rule out overflow inside fsum, a normal finite result rules
        out UF, OF and a NaN from an overflowing split. A zero factor (the other finite)
        and a nonzero finite addend give exactly the addend. Otherwise the closure."""
        rd = d.rd
        pflip, cflip = flips
        x, y, z = self.fread(d.rs1), self.fread(d.rs2), self.fread(d.rs3)
        if pflip:
            self.emit(f"fx = -{x}")
            x = "fx"
        if cflip:
            self.emit(f"fz = -{z}")
            z = "fz"
        self.bind("fsum", math.fsum)
        lo, hi, spl = repr(_FMA_LO), repr(_FMA_HI), repr(_SPLIT)
        mx, mn = repr(_MAXF), repr(_MINN)
        self.emit(f"if -{hi} < {z} < {hi} and ({lo} < (fp := {x} * {y}) < {hi} "
                  f"or -{hi} < fp < -{lo}):")
        self.indent += 1
        self.emit(f"t = {spl} * {x}; xh = t - (t - {x}); xl = {x} - xh")
        self.emit(f"t = {spl} * {y}; yh = t - (t - {y}); yl = {y} - yh")
        self.emit(f"if {mn} <= (fr := fsum((xh * yh, xh * yl, xl * yh, xl * yl, {z}))) <= {mx} "
                  f"or -{mx} <= fr <= -{mn}: d{rd} = fr")
        self.emit("else:")
        self.indent += 1
        self.fallback(ref, d, rd)
        self.indent -= 2
        self.emit(f"elif ({x} == 0.0 or {y} == 0.0) and {z} != 0.0 and -{mx} <= {x} <= {mx} "
                  f"and -{mx} <= {y} <= {mx} and -{mx} <= {z} <= {mx}: d{rd} = {z}")
        self.emit("else:")
        self.indent += 1
        self.fallback(ref, d, rd)
        self.indent -= 1

    def fmem(self, name: str, d: Decoded) -> None:
        """fld/fsd in the float body (FS is on): the integer access of 8 bytes, the
        bits moved through the block's float buffer."""
        if _FP_OP[name] == "load":
            self.load("ld", d, f"fu[0] = {{}}; d{d.rd} = fd[0]")
            self.fset(d.rd)
        elif d.rs2 in self.fbound:
            self.emit(f"fd[0] = d{d.rs2}")
            self.store("sd", d, "fu[0]")
        else:
            self.store("sd", d, f"f[{d.rs2}]")

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
            self.write(rd, self.read(rs1), wa or 1, self.sext32(rs1))  # a move
            return
        if name in ("add", "or", "xor") and rs1 == 0:
            self.write(rd, self.read(rs2), wb or 1, self.sext32(rs2))
            return
        if name == "addiw" and imm == 0 and self.sext32(rs1):  # sext.w of such a value
            self.write(rd, self.read(rs1), wa or 1, True)
            return
        expr = ALU[name]
        values = {"a": self.read(rs1), "i": hex(i),
                  "si": hex(i ^ SIGN), "sh": str(sh)}
        if _USES_B[name]:
            values["b"] = self.read(rs2)
        if name in ("slt", "slti"):
            full = f"(1 if {_signed_lt(values['a'], values.get('b', values['i']))} else 0)"
        else:
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
            elif name == "addiw" and imm < 0:
                inner = f"{values['a']} - {-imm}"
            if name == "srliw" and sh:  # below 2**31: the sign extension does nothing
                self.write(rd, inner, 32 - sh)
                return
            # Small non-negative results (counters) need no masking at all.
            low = "" if name in _NONNEG_W or (name == "addiw" and imm >= 0) else "0 <= "
            self.write(rd, f"(w if {low}(w := {inner}) < 0x80000000 else "
                           f"(u if (u := w & 0xFFFFFFFF) < 0x80000000 else u | {_HI32:#x}))",
                       sext=True)
            return
        if expr.endswith(_MASKED):
            inner = _subst(expr[: -len(_MASKED)], values)
            if name in ("add", "addi") and imm >= 0 and max(wa, wb) < 64:
                full, width = inner, max(wa, wb) + 1
            elif name == "slli" and wa + sh <= 64:
                full, width = inner, wa + sh
            elif name == "addi" and imm < 0 or name == "sub":
                # A compare is cheaper than masking with a three-digit constant.
                b = str(-imm) if name == "addi" else values["b"]
                full = f"(z if (z := {values['a']} - {b}) >= 0 else z + {1 << 64:#x})"
            elif name in ("add", "addi", "sll", "slli", "mul"):
                full = f"(z if (z := {inner}) <= {M64:#x} else z & {M64:#x})"
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
        # Bitwise operations on sign-extended 32-bit values (an immediate is one) give one.
        sx32 = name in _LOGIC and self.sext32(rs1) and (name[-1] == "i" or self.sext32(rs2))
        self.write(rd, full, width, sx32)

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
                return self._in_ram(size), hex(a), None
            if imm:
                self.emit(f"a = {base} + {imm}")
                base, addr = "a", f"a & {M64:#x}"
            else:
                addr = base
            self.emit(f"o = {tlb}({base} >> 12, {_MISS}) - {self.ram_base:#x} + ({base} & 0xFFF)")
            return self._in_ram(size), addr, None
        if value is not None:
            at = (value + imm) & M64
            off = at - self.ram_base
            ok = 0 <= off < self.ram_size and not off & (size - 1)
            return ("True" if ok else "False"), hex(at), off
        # o may be off by a multiple of 2**64 (the address is not masked): then it is out
        # of range and the slow path masks it.
        k = imm - self.ram_base
        self.emit(f"o = {base} {'-' if k < 0 else '+'} {abs(k):#x}")
        addr = f"({base} + {imm}) & {M64:#x}" if imm else base
        return self._in_ram(size), addr, None

    def _in_ram(self, size: int) -> str:
        """The condition for an aligned access of ``size`` bytes at RAM offset ``o``
        (an int of any size): for a power-of-two RAM size, one AND with a negative
        mask (no bit at or above the size's, nor in the low ``size - 1``)."""
        ram = self.ram_size
        if ram & (ram - 1) == 0:
            return f"not o & {-ram | (size - 1)}"
        cond = f"0 <= o < {ram:#x}"
        return f"not o & {size - 1} and {cond}" if size > 1 else cond

    def load(self, name: str, d: Decoded, target: str | None = None) -> None:
        """An integer load into x[rd], or (``target``: a format string) into what
        ``target.format(value)`` does with the value."""
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
        if signed:  # the unsigned view, sign-extended by hand: no big int when positive
            top = 1 << (8 * size - 1)
            fast = f"(w if (w := {view}[{index}]) < {top:#x} else w | {M64 & -top:#x})"
        else:
            fast = f"{view}[{index}]"
        slow = f"{method}({addr})"
        expr = fast if cond == "True" else slow if cond == "False" else (
            f"{fast} if {cond} else {slow}"
        )
        if target is not None:
            self.emit(target.format(expr))
        elif d.rd:
            self.write(d.rd, expr, width, signed)
        else:
            self.emit(expr)

    def smc_guard(self) -> None:
        """After a store: if it dropped this function (self-modifying code: its token is
        gone from the block table), leave it right after the store, so the next
        instruction is fetched anew (as QEMU does)."""
        self.bind("store_exit", _STORE_EXIT)
        self.emit(f"if {self.token} not in cache: raise store_exit")

    def store_helpers(self) -> None:
        """Bind ``smc(o, size)`` (an inline store of ``size`` bytes at RAM offset ``o`` hit
        a page holding code) and ``sst(method, addr, value)`` (a store through the MMU):
        both leave the block if it was dropped."""
        if "smc" in self.env:
            return
        cache, start = self.env["cache"], self.token
        mmu = self.hart.mmu
        written = mmu.code.written
        ram_base = self.ram_base

        def smc(o: int, size: int) -> None:
            written(o + ram_base, size)  # data next to code drops nothing
            if start not in cache:
                raise _STORE_EXIT

        def sst(method: Callable[[int, int], None], addr: int, value: int) -> None:
            method(addr, value)
            if start not in cache:
                raise _STORE_EXIT

        self.bind("smc", smc)
        self.bind("sst", sst)

    def store(self, name: str, d: Decoded, value: str | None = None) -> None:
        """An integer store of x[rs2], or of ``value`` (an expression)."""
        mmu = self.hart.mmu
        method = self.bind(STORES[name], getattr(mmu, STORES[name]))
        view_name, size = _STORE_VIEWS[name]
        if value is None:
            value = self.read(d.rs2)
        view = self.bind(view_name, getattr(mmu.ram, view_name))
        self.bind("cpg", CodePages.of(mmu.code, self.ram_base, self.ram_size).map)
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
            index, page = str(off >> shift), str(off >> 12)
        else:  # the page from the (small) offset: cheaper than from the address
            index = f"o >> {shift}" if shift else "o"
            page = "o >> 12"
        if cond != "True":
            self.emit(f"if {cond}:")
            self.indent += 1
        self.emit(f"{view}[{index}] = {value}")
        self.emit(f"if cpg[{page}]: smc({'o' if off is None else hex(off)}, {size})")
        if cond != "True":
            self.indent -= 1
            self.emit(f"else: {slow}")


def translate(
    hart: Hart, trees: list[tuple[int, Path]], cache: dict[int, Any], inline_ram: bool = False,
    learn: Callable[[int, int], None] | None = None, token: int | None = None,
) -> list[Block]:
    """Compile scanned block trees, as (start pc, tree), into one function; return one
    ``block(rem) -> (next pc, retired)`` per tree, entering the function at that tree
    (they share its code object and BlockInfo, and differ in their default ``ent``).

    ``cache`` is the block cache they go into: a store that drops ``token`` (by default
    the first entry) from it ends the function. ``inline_ram``: data accesses are not
    translated in the function's context, so guest RAM is indexed inline. ``learn(target,
    jalr pc)`` is called when a jalr leaves the function for a target that is none of its
    entries.
    """
    info = BlockInfo(trees[0][0])
    em = _Emitter(hart, info, trees, inline_ram, cache, learn,
                  trees[0][0] if token is None else token)
    em.bodies()
    src = em.source()
    ns = {**_NS, **em.env}  # helpers (_div, ...) as globals, the rest as default args
    exec(compile(src, f"<pyhv block {info.start:#x}>", "exec"), ns)  # noqa: S102
    fn = ns["block"]
    # Source lines are 1-based; the body follows the head lines; the tail maps to nothing.
    info.lines = [0] * (em.head_lines + 1) + em.line_insn + [0] * 32
    info.code = fn.__code__
    fns = [fn]
    for i in range(1, len(trees)):
        defaults = (i, *fn.__defaults__[1:])
        fns.append(FunctionType(fn.__code__, fn.__globals__, fn.__name__, defaults))
    for f in fns:
        f.info = info  # type: ignore[attr-defined]
        f.source = src  # type: ignore[attr-defined]
    return fns


class _Built:
    """What was built from one compiled function, to put it back if a store drops it but
    leaves its instructions as they were (data next to code): its entries, the key of
    its liveness token in the block table, where it came from and its bytes then."""

    __slots__ = ("entries", "token", "pages", "vpns", "ranges", "code")

    def __init__(self, entries: list[tuple[int, Any]], token: int, pages: set[int],
                 vpns: set[int], ranges: list[tuple[int, int]], code: bytes) -> None:
        self.entries = entries  # (entry pc, its function)
        self.token = token
        self.pages = pages  # physical pages
        self.vpns = vpns  # virtual pages
        self.ranges = ranges  # RAM (offset, size) ranges of its instructions
        self.code = code  # their bytes when compiled


class _Context(CodeContext):
    """The caches of one translation context (privilege, satp, data translation on/off)."""

    __slots__ = ("blocks", "ops", "heat", "recompiles", "block_id", "op_id", "built",
                 "jumps", "relearns")

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
        # Entry pc -> what revives its function if a store drops it but leaves its
        # instructions as they were.
        self.built: dict[int, _Built] = {}
        # jalr pc -> how often each target no entry had was taken from it, and function
        # start -> how often it was compiled again for such targets (see _learner).
        self.jumps: dict[int, dict[int, int]] = {}
        self.relearns: dict[int, int] = {}

    def cleared(self) -> None:
        self.heat.clear()  # a flush is not the blocks' fault: no backoff
        self.recompiles.clear()
        self.built.clear()  # translations may have changed
        self.jumps.clear()
        self.relearns.clear()

    def forget(self, pcs: list[int]) -> None:
        built = self.built
        for pc in pcs:
            built.pop(pc, None)


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


class Translator(SliceStrategy):
    """Runs one hart through compiled blocks; same interface as :class:`Interpreter`.

    Cold code is interpreted one instruction at a time through the interpreter's
    closures (decoded once per context, as the interpreter does). A cold stretch runs
    from a block start (the target of a taken jump or branch, or the instruction after
    one that ends blocks) to the next one; its length is added to its start's heat, and
    once that reaches ``threshold`` instructions the block there is compiled, with
    further entries (see ``_compile``; ``max_region`` instructions in all, 0 for one tree
    per function). A block that stores drop again and again (code sharing a page with
    written data) needs twice as much heat for each recompilation; a flush (SFENCE.VMA,
    reset) only resets the heat.
    """

    # Instructions per hart turn. The machine's default (4096) suits the interpreter;
    # this engine runs several times faster, so a turn four times as long takes no longer
    # in wall-clock time (interrupt and console latency stay as they are) and pays the
    # per-turn costs (device polls, interrupt checks, loading a function's locals) a
    # quarter as often.
    preferred_slice = 16384

    def __init__(
        self, hart: Hart, code: CodeWatch, threshold: int = HOT_THRESHOLD,
        max_block: int = MAX_BLOCK, superblocks: bool = True, max_region: int = MAX_REGION,
    ) -> None:
        self.hart = hart
        self.code = code
        self.threshold = max(threshold, 1)  # cold instructions from a start pc
        self.max_block = max_block
        self.superblocks = superblocks
        self.max_region = max_region  # instructions per compiled function (several trees)
        self.compiled = 0  # blocks compiled so far (statistics)
        self.tokens = 0  # the last function's liveness token (negative: never a pc)
        self.revived = 0  # blocks dropped by a store and put back unchanged (statistics)
        # Like the interpreter's contexts, plus whether data accesses are translated
        # (MPRV), which inline RAM accesses depend on; it only changes with a SliceBreak.
        self.cache = CodeCache(hart, code, tables=2, context=_Context, by_data_mode=True)
        hart.flush_decoded = self.flush
        hart.flush_decoded_page = self.flush_page

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
        self.cache.add(ctx.op_id, pc, ppns, {pc >> 12, last}, insn_spans(pa, d.length, ppns))
        return entry

    # -- building blocks --------------------------------------------------------------------

    def _scan(
        self, start: int, stop: set[int] | frozenset[int] = frozenset(), size: int = 0
    ) -> tuple[Path, set[int], bool, list[tuple[int, int, int]]]:
        """Decode the block tree at ``start``: (tree, physical pages, in RAM, the bytes
        its instructions occupy as (ppn, offset, size)).

        The main path goes through not-taken branches and followed jumps; then, while
        the instruction budget (``size``, else ``max_block``) lasts, the taken side of
        each branch (in path order) that stays in the page and does not go back to the
        path gets its own path. Paths end before the pcs in ``stop`` (other entries of
        the same function). A fetch fault on
        the first instruction is raised (it is that instruction's trap); one further on
        just ends the path before it.
        """
        mmu = self.hart.mmu
        ram_lo, ram_hi = mmu.ram_base, mmu.ram_base + mmu.ram_size
        pages: set[int] = set()
        spans: list[tuple[int, int, int]] = []
        page = start >> 12
        budget = [size or self.max_block]
        in_ram = [True]
        superblocks = self.superblocks

        def path(pc: int, on: set[int]) -> Path:
            out: Path = []
            on = set(on)
            while budget[0] > 0:
                if pc in stop and pc != start:
                    break
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
                spans.extend(insn_spans(pa, d.length, ppns))
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
                    if t != start and t >> 12 == page and t not in prefix and t not in stop:
                        entry[2] = path(t, {p for p in prefix})
            return out

        tree = path(start, set())
        return tree, pages, in_ram[0], spans

    def _ran(self, pc: int, ctx: _Context) -> bool:
        """Whether code at ``pc`` already ran in this context (cold or compiled) and is
        in RAM (reading ahead from a device could have side effects)."""
        if pc not in ctx.ops and pc not in ctx.built:
            return False
        mmu = self.hart.mmu
        try:
            pa = mmu.translate_fetch(pc)
        except Trap:
            return False
        return 0 <= pa - mmu.ram_base < mmu.ram_size

    def _loops(self, start: int, ctx: _Context) -> tuple[set[int], list[int]]:
        """Explore the code that already ran around ``start`` (depth first over its basic
        blocks and their static successors, the return address of a call counting as
        one; at most ``max_region`` instructions): (loop headers, i.e. targets of back
        edges; the return addresses of its calls)."""
        headers: set[int] = set()
        returns: list[int] = []
        colour: dict[int, int] = {}  # 1: on the depth-first stack, 2: done
        budget = self.max_region

        def successors(pc: int) -> list[int]:
            nonlocal budget
            page = pc >> 12
            while budget > 0:
                try:
                    d, _ppns, _pa = self._fetch(pc)
                except Trap:
                    return []
                budget -= 1
                name, npc = d.name, (pc + d.length) & M64
                if name in _BRANCHES:
                    return [(pc + d.imm) & M64, npc]
                if name == "jal":
                    if d.rd:
                        returns.append(npc)
                        return [(pc + d.imm) & M64, npc]
                    return [(pc + d.imm) & M64]
                if _ends_block(d):
                    return []
                if npc >> 12 != page:
                    return [npc]
                pc = npc
            return []

        if not self._ran(start, ctx):
            return headers, returns
        stack = [(start, iter(successors(start)))]
        colour[start] = 1
        while stack:
            pc, succ = stack[-1]
            for t in succ:
                if colour.get(t) == 1:
                    headers.add(t)
                elif t not in colour and self._ran(t, ctx):
                    colour[t] = 1
                    stack.append((t, iter(successors(t))))
                    break
            else:
                colour[pc] = 2
                stack.pop()
        return headers, [r for r in returns if self._ran(r, ctx)]

    @staticmethod
    def _jumps(tree: Path, ctx: _Context) -> list[int]:
        """The targets the jalrs of ``tree`` were seen to leave for, most taken first."""
        out: list[int] = []
        for pc, d in _walk(tree):
            seen = ctx.jumps.get(pc) if d.name == "jalr" else None
            if seen:
                out += sorted(seen, key=seen.__getitem__, reverse=True)[:MAX_LEARNED]
        return out

    def _learner(self, ctx: _Context, start: int) -> Callable[[int, int], None]:
        """``learn(target, site)`` for the function compiled at ``start``: counts, per
        jalr (``site``), the targets it leaves the function for; when one has been taken
        LEARN_AFTER times the function is compiled again at once, with the targets seen
        at its jalrs as entries (a bytecode interpreter's handlers, the callers of a
        function). The running function is not disturbed: it returns to the run loop,
        which finds the new one."""

        def learn(target: int, site: int) -> None:
            seen = ctx.jumps.get(site)
            if seen is None:
                seen = ctx.jumps[site] = {}
            n = seen[target] = seen.get(target, 0) + 1
            if n == LEARN_AFTER and ctx.relearns.get(start, 0) < MAX_RELEARN:
                ctx.relearns[start] = ctx.relearns.get(start, 0) + 1
                self._compile(start, ctx, learned=target)

        return learn

    def _compile(self, pc: int, ctx: _Context, learned: int | None = None) -> Block | None:
        """Compile the block at ``pc`` into ``ctx``; None if it must stay cold (or, when
        compiling again for the jalr target ``learned``, if that would not take it in).

        With ``max_region`` above one block, the function gets further entries (up to
        ``MAX_ENTRIES``; ``max_region`` instructions in all), each with its own tree that
        ends where it reaches another entry: first the targets its jalrs were seen to
        leave for (see _learner), then the loop headers and call return addresses of the
        code that already ran around ``pc`` (see _loops), then, breadth first, the static
        exits of the trees (branch and jump targets, fall-throughs) that already ran. The
        trees then go on to each other without returning to the run loop (see
        _Emitter.exit). The tree at ``pc`` itself stops at no entry, so the loop it is
        hot in stays one Python loop.
        """
        try:
            tree, pages, in_ram, spans = self._scan(pc)
        except Trap:
            return None  # the cold path raises the fetch fault
        if not in_ram:
            ctx.heat[pc] = -(1 << 62)  # code outside RAM (the boot ROM) stays cold
            return None
        trees = [(pc, tree)]
        size = sum(1 for _ in _walk(tree))
        if self.max_region > size:
            headers, returns = self._loops(pc, ctx)
            hot = deque(self._jumps(tree, ctx))  # taken first
            starts = [pc, *hot, *sorted(headers - {pc}), *returns]
            queue = deque(dict.fromkeys(starts[1:] + _exits(tree)))
            stop = set(starts)
            while (hot or queue) and len(trees) < MAX_ENTRIES and size < self.max_region:
                # A jalr target seen taken may take the rest of the room (a shorter
                # tree); anything else needs room for a whole one.
                taken = bool(hot)
                t = hot.popleft() if taken else queue.popleft()
                if any(t == s for s, _tree in trees) or not self._ran(t, ctx):
                    continue  # never ran: maybe never will
                stop.add(t)
                try:
                    more, pg, in_ram, sp = self._scan(
                        t, stop, min(self.max_block, self.max_region - size) if taken else 0)
                except Trap:
                    continue
                n = sum(1 for _ in _walk(more))
                if not in_ram or size + n > self.max_region:
                    continue
                trees.append((t, more))
                size += n
                pages |= pg
                spans += sp
                queue.extend(_exits(more))
                hot.extend(self._jumps(more, ctx))
        if learned is not None and all(t != learned for t, _tree in trees):
            return None  # no room for it: keep the function as it is
        vpns = set()
        for _start, tree in trees:
            for ipc, d in _walk(tree):
                vpns.add(ipc >> 12)
                vpns.add(((ipc + d.length - 1) & M64) >> 12)
        learn = self._learner(ctx, pc) if self.max_region > size else None
        self.tokens -= 1
        token = self.tokens
        fns = translate(self.hart, trees, ctx.blocks, not self.hart.mmu.dmode, learn, token)
        self.compiled += 1
        ranges = _ranges(spans, self.hart.mmu.ram_base)
        built = _Built([(start, fn) for (start, _tree), fn in zip(trees, fns, strict=True)],
                       token, pages, vpns, ranges, self._ram_bytes(ranges))
        self._register(built, ctx, built.entries, spans)
        # If it is dropped (its page written), it must get hotter to be compiled again.
        again = ctx.recompiles.get(pc, -1) + (0 if learned is not None else 1)
        ctx.recompiles[pc] = again
        ctx.heat[pc] = -(self.threshold << min(again, 16)) + self.threshold
        return fns[0]

    def _ram_bytes(self, ranges: list[tuple[int, int]]) -> bytes:
        mv = self.hart.mmu.ram.mv
        return b"".join(mv[o:o + n] for o, n in ranges)

    def _register(self, built: _Built, ctx: _Context, entries: list[tuple[int, Any]],
                  spans: list[tuple[int, int, int]]) -> None:
        """Enter ``entries`` (pc, function) of a function, and its token, into the block
        table. Every entry, and the token, stands for the whole function: each is
        registered with all its pages, so whatever drops one drops all, and the
        function's stores leave it once its token is gone (see _Emitter.smc_guard). The
        token's key is negative, never a pc the run loop looks up."""
        spans = merge_spans(spans)
        for pc, fn in [(built.token, built.entries[0][1]), *entries]:
            self.cache.add(ctx.block_id, pc, built.pages, built.vpns, spans)
            ctx.blocks[pc] = fn
        for pc, _fn in entries:
            ctx.built[pc] = built

    def _revive(self, pc: int, ctx: _Context) -> Block | None:
        """Put back the function of entry ``pc`` dropped by a store that left its
        instructions as they were (e.g. a store to data sharing its page, through the
        MMU), with its token and every entry of it whose slot is still empty; None if
        they changed. No flush happened since (it would have forgotten the function), so
        the virtual-to-physical mapping is the one it was compiled with."""
        built = ctx.built[pc]
        if self._ram_bytes(built.ranges) != built.code:
            for start, _fn in built.entries:
                if ctx.built.get(start) is built:
                    del ctx.built[start]
            return None
        spans = []
        base = self.hart.mmu.ram_base
        for o, n in built.ranges:
            pa = base + o
            while n > 0:  # ranges may cross pages
                size = min(n, 0x1000 - (pa & 0xFFF))
                spans.append((pa >> 12, pa & 0xFFF, size))
                pa += size
                n -= size
        entries = [(start, fn) for start, fn in built.entries
                   if start not in ctx.blocks and ctx.built.get(start) is built]
        self._register(built, ctx, entries, spans)
        self.revived += 1
        return ctx.blocks[pc]

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

    # -- the run loop's strategy (cpu/run_loop.py) -----------------------------------------
    def stretch(self, limit: int) -> int:  # noqa: C901 - one loop and where it left
        """Blocks, and cold instructions between them, up to about ``limit``
        instructions, in the current context."""
        hart = self.hart
        threshold = self.threshold - 1
        hart.context_changed = False
        ctx = self._context()
        bget = ctx.blocks.get
        oget = ctx.ops.get
        heat = ctx.heat
        built = ctx.built
        pc = hart.pc
        done = 0
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
            return done
        except _StoreExit as s:  # a block's store hit code: go on after it
            k, j = self._faulting(e, s)
            s.__traceback__ = None
            hart.pc = e.info.npcs[j]
            return done + k + 1
        except SLICE_EXITS as x:
            # where it left: cold, pc and op are the instruction's; in a block, the
            # block knows (its ops, pcs and next pcs by instruction)
            if e is None:
                self.at = (done, pc, op, getattr(op, "npc", pc))
            else:
                k, j = self._faulting(e, x)
                info = e.info
                self.at = (done + k, info.pcs[j], info.ops[j], info.npcs[j])
            raise


__all__ = ["HOT_THRESHOLD", "MAX_BLOCK", "MAX_REGION", "BlockInfo", "Translator", "translate"]
