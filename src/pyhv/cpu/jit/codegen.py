"""Guest blocks to LLVM IR (text), and the native dispatch loop.

A block is a straight run of decoded instructions from one start pc, ending with (and
including) a branch or jump, or just before an instruction native code does not do
(CSR accesses, traps, AMOs, system instructions...), a page end or ``MAX_INSNS``. A
*region* (optimised blocks only, engine._scan) goes on past its branches while code
ahead is reachable from within it, and its branches to its own instructions stay inside
the function.

Each block becomes ``i32 @name(ptr %s)`` under ``preserve_none`` (nothing callee-saved:
blocks tail-call each other). Guest registers it uses are loaded once at entry and
tracked as SSA values (a region keeps them in allocas that SROA turns into SSA, joins
included), and written back on exit. An exit that goes on has its own tail: write back,
store pc, charge the retired instructions to the budget and chain to the next compiled
block through the dispatch table (its own call site) or return. Every other way out
goes through one shared exit block. A load or store the native fast path cannot do
(soft-TLB miss the native walk cannot fill, misaligned, outside RAM, a store over
translated code) leaves *before* the instruction with ``EXIT_SLOW``: the instruction
then runs in Python with exactly the state the interpreter would have, so traps stay
precise; loads or stores through one base register are checked as a group at the first
of them (:func:`access_groups`), which leaves before itself if the check fails. A
branch back to the block's start becomes a loop inside the function,
bounded by the budget (kept in a register).

Blocks are compiled twice at most: first quickly, counting the instructions they run
(``counted``, in a global of their module), then, past ``OPT_AFTER``, optimised
(compiler.py's two tiers) unless that would cost too much (``opt_cost``).

Semantics follow the interpreter's tables (cpu/interp.py); the differential tests run
random programs on both.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Collection

from ...clock import TIME_READ_SLACK
from ...isa import csr as C
from ...isa import spec
from ...isa.decoder import PAUSE, Decoded, spin_hint
from . import state as S

M64 = (1 << 64) - 1
MAX_INSNS = 64
# ... but a straight line of code (no branch or jump yet) goes on to this many: unrolled
# rounds of a hash or cipher (Linux's blake2s, ~2,300 instructions in three pages, run at
# each interrupt's entropy mixing) would otherwise be dozens of blocks, each to get hot
# on its own
MAX_STRAIGHT = 512
REGION_REACH = 512  # bytes from its start a block may branch forward within itself
# Guest instructions a quickly compiled block runs before it asks to be compiled again,
# optimised (EXIT_OPT; Compiler.submit): ~0.3 ms of its time, a few ms of the compiler's.
OPT_AFTER = 1 << 18
# ... unless compiling it optimised would cost more than OPT_MAX_COST units (an
# instruction is one, a double-precision one FP_COST: strict FP makes LLVM's optimising
# code generator slow, ~250 ms for 64 instructions of n-body, time in which the
# compiler's thread serves no other block; such a block stays quick, ~12% slower)
OPT_MAX_COST = 128
FP_COST = 8
RECOUNT = 1 << 24  # and again every so many (see _Block.count)
RAM_BASE = 0x80000000
BLOCK_CC = "preserve_nonecc"

BRANCHES = frozenset(spec.BRANCHES)  # their conditions: isa/spec.py
# Loads and stores: bits accessed, and a load's extension to 64 bits (isa/spec.py).
LOADS = {n: (8 * i.size, "sext" if i.signed else "zext" if i.size < 8 else None)
         for n, i in spec.LOADS.items()}
STORES = {n: 8 * i.size for n, i in spec.STORES.items()}

# F/D work done natively, single and double precision (round-to-nearest-even, or the
# static rounding named below); exception flags come from the host FPU (MXCSR, read by
# the dispatcher), so the host operations must run exactly as the guest's: constrained
# ("strictfp") intrinsics keep LLVM from folding, dropping or reordering them. A single
# lives NaN-boxed in an F register (upper 32 bits all ones; one that is not reads as
# the canonical NaN), and every single result is boxed.
_FP = spec.FP
FP_FMT = {n: i.fmt for n, i in _FP.items()}  # s or d: the operation's (a cvt's: its result)
FP_ARITH = {n: "f" + i.op for n, i in _FP.items() if i.op in ("add", "sub", "mul", "div")}
FP_SQRT = frozenset(n for n, i in _FP.items() if i.op == "sqrt")
FP_FMA = {n: (bool(i.arg & 1), bool(i.arg & 2)) for n, i in _FP.items()
          if i.op == "fma"}  # (negate product, negate addend)
_CMP_OPS = {"eq": ("fcmp", "oeq"), "lt": ("fcmps", "olt"), "le": ("fcmps", "ole")}
FP_CMP = {n: _CMP_OPS[i.op] for n, i in _FP.items() if i.op in _CMP_OPS}
FP_SGNJ = {n: i.arg for n, i in _FP.items() if i.op == "sgnj"}
# FP -> signed integer; integer -> FP: (extension of the low 32 bits, width)
FP_TO_INT = {n: i.arg for n, i in _FP.items() if i.op == "to_int" and i.signed}
INT_TO_FP = {n: (("sext" if i.signed else "zext") if i.arg == 32 else None, i.arg)
             for n, i in _FP.items() if i.op == "from_int" and (i.arg == 32 or i.signed)}
FP_CVT = frozenset(n for n, i in _FP.items() if i.op == "cvt")  # fcvt.s.d, fcvt.d.s
FP_TO_UINT = {n: i.arg for n, i in _FP.items() if i.op == "to_int" and not i.signed}
FP_FROM_U64 = frozenset(n for n, i in _FP.items()
                        if i.op == "from_int" and i.arg == 64 and not i.signed)
FP_CLASS = frozenset(n for n, i in _FP.items() if i.op == "class")
FP_MINMAX = {n: i.op == "maxnum" for n, i in _FP.items() if i.op in ("minnum", "maxnum")}
FP_LOADS = {n: 8 * i.arg for n, i in _FP.items() if i.op == "load"}
FP_STORES = {n: 8 * i.arg for n, i in _FP.items() if i.op == "store"}
FP_MOVES = {n: (i.op, i.fmt) for n, i in _FP.items() if i.op in ("mv_x", "mv_f")}
FP_NAMES = (set(FP_ARITH) | FP_SQRT | set(FP_FMA) | set(FP_CMP) | set(FP_SGNJ)
            | set(FP_TO_INT) | set(INT_TO_FP) | FP_CVT | set(FP_MINMAX) | set(FP_TO_UINT)
            | FP_FROM_U64 | FP_CLASS | set(FP_LOADS) | set(FP_STORES) | set(FP_MOVES))
_FP_TO_X = (set(FP_CMP) | set(FP_TO_INT) | set(FP_TO_UINT) | FP_CLASS
            | {n for n, (op, _) in FP_MOVES.items() if op == "mv_x"})
_RM_DYN = 7
_CANON_D = 0x7FF8000000000000
_CANON_S = 0x7FC00000
_BOX = 0xFFFFFFFF00000000
_CI = 'metadata !"round.tonearest", metadata !"fpexcept.strict"'
_CX = 'metadata !"fpexcept.strict"'

# Atomics: harts of a VM take turns on one host thread, so a plain load + store is atomic.
AMO_NAMES = {n for n, i in spec.INSNS.items() if i.opcode == spec.ATOMIC}  # lr, sc, AMOs

ALU_NAMES = set(spec.ALU)  # the integer ALU: its LLVM IR comes from isa/spec.py
NATIVE = ALU_NAMES | set(BRANCHES) | set(LOADS) | set(STORES) | {
    "lui", "auipc", "jal", "jalr", "fence", "fence.i", "addiw"} | FP_NAMES | AMO_NAMES
ENDS = set(BRANCHES) | {"jal", "jalr"}


def counter_index(name: str) -> int:
    """The slot of the machine's counter array (state.COUNTERS) where the quick block
    ``name`` counts the instructions it runs."""
    return int(hashlib.blake2b(name.encode(), digest_size=4).hexdigest(), 16) & (
        S.NCOUNTERS - 1)


def ends_block(d: Decoded) -> bool:
    """Whether a block ends with (and including) this instruction: a jump or branch."""
    return d.name in ENDS


def opt_cost(insns: list[tuple[int, Decoded]]) -> int:
    """What compiling ``insns`` optimised costs, in units of an integer instruction."""
    return sum(FP_COST if d.name in FP_NAMES else 1 for _, d in insns)


def internal_edges(start: int, insns: list[tuple[int, Decoded]]) -> list[tuple[int, int]]:
    """(instruction index, target) of every branch or jal of ``insns`` to one of their
    own instructions: the block's internal control flow."""
    pcs = {pc for pc, _ in insns}
    out = []
    for k, (pc, d) in enumerate(insns):
        if d.name in BRANCHES or d.name == "jal":
            t = (pc + d.imm) & M64
            if t in pcs:
                out.append((k, t))
    return out


def _signed(v: int) -> int:
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def access_groups(insns: list[tuple[int, Decoded]], targets: Collection[int],
                  clock: Collection[int] = ()) -> dict[int, tuple[int, int, int, int]]:
    """Loads (or stores) of one block through the same base register, on one straight
    path (no branch, jump or branch target between them) while that register keeps
    its value, whose bytes lie within 4 KiB of each other (so on two pages at most):
    instruction index -> (the group's first member, its lowest offset from the base,
    the bytes it spans from there, members). A function's prologue saves a dozen
    registers through ``sp``, its epilogue loads them back: checked once each."""
    out: dict[int, tuple[int, int, int, int]] = {}
    runs: dict[tuple[bool, int], list[tuple[int, int, int]]] = {}

    def close(key: tuple[bool, int]) -> None:
        members = runs.pop(key)
        if len(members) < 2:
            return
        lo = min(i for _, i, _ in members)
        hi = max(i + n for _, i, n in members)
        if hi - lo <= 4096:
            for k, _, _ in members:
                out[k] = (members[0][0], lo, hi - lo, len(members))

    for k, (pc, d) in enumerate(insns):
        if pc in targets:
            for key in list(runs):
                close(key)
        name = d.name
        bits = STORES.get(name) or FP_STORES.get(name)
        store = bits is not None
        if not store:
            bits = LOADS[name][0] if name in LOADS else FP_LOADS.get(name)
        if bits is not None and pc not in clock:
            runs.setdefault((store, d.rs1), []).append((k, _signed(d.imm), bits // 8))
        # (an instruction between members may leave the block: those before it are done,
        # in order, and the check stays true, as nothing native changes RAM's bounds
        # or which of its bytes hold code)
        if ends_block(d):
            for key in list(runs):
                close(key)
        elif d.rd and _writes_x(d):
            for key in [key for key in runs if key[1] == d.rd]:
                close(key)
    for key in list(runs):
        close(key)
    return out


def written_by(insns: list[tuple[int, Decoded]], edges: list[tuple[int, int]]
               ) -> list[tuple[frozenset[int], frozenset[int]]]:
    """For each instruction of a region, the x and f registers some path from the
    region's start through it has written, it included: all that an exit right after
    it must write back."""
    index = {pc: k for k, (pc, _) in enumerate(insns)}
    succ: list[list[int]] = [[] for _ in insns]
    for k, (_, d) in enumerate(insns):
        if d.name not in ("jal", "jalr") and k + 1 < len(insns):
            succ[k].append(k + 1)
    for k, t in edges:
        succ[k].append(index[t])
    own = [(frozenset([d.rd]) if d.rd and _writes_x(d) else frozenset(),
            frozenset([d.rd]) if _writes_f(d) else frozenset()) for _, d in insns]
    w_in: list[tuple[frozenset[int], frozenset[int]]] = [(frozenset(), frozenset())] * len(insns)
    w_out = list(own)
    changed = True
    while changed:
        changed = False
        for k in range(len(insns)):
            out = (w_in[k][0] | own[k][0], w_in[k][1] | own[k][1])
            if out != w_out[k]:
                w_out[k] = out
                changed = True
            for j in succ[k]:
                merged = (w_in[j][0] | out[0], w_in[j][1] | out[1])
                if merged != w_in[j]:
                    w_in[j] = merged
                    changed = True
    return w_out


# sstatus reads and SIE set/clear (Linux's local_irq_save/restore), in S-mode only.
CSR_SIE = {"csrrs": "set", "csrrc": "clear", "csrrsi": "set", "csrrci": "clear"}


def reads_time(d: Decoded) -> bool:
    """``rdtime``: csrrs rd, time, x0 (a block reads the clock itself, _Block.rdtime)."""
    return d.name == "csrrs" and d.csr == C.TIME and d.rs1 == 0


def supported(d: Decoded, supervisor: bool = False) -> bool:
    """Whether native code does this instruction (else the block ends before it)."""
    if reads_time(d):
        return True
    if d.name in CSR_SIE:  # reads, and immediate forms on SIE; the rest: the native
        if not supervisor or d.csr != C.SSTATUS:  # interpreter (SUM switches the soft
            return False  # TLB, FS the F registers' state)
        if d.name.endswith("i"):
            return d.rs1 & ~C.MSTATUS_SIE == 0  # uimm is in rs1
        return d.rs1 == 0
    if d.name not in NATIVE:
        return False
    if d.name in FP_TO_INT or d.name in FP_TO_UINT:
        return d.rm in (*_ROUND_TO_INT, RM_RTZ, _RM_DYN)  # RTZ: C's casts; RDN: floor ...
    if (d.name in FP_ARITH or d.name in FP_FMA or d.name in FP_SQRT
            or d.name in INT_TO_FP and (INT_TO_FP[d.name][1] == 64 or FP_FMT[d.name] == "s")
            or d.name in FP_CVT and FP_FMT[d.name] == "s"
            or d.name in FP_FROM_U64):  # (these round)
        return d.rm in (0, _RM_DYN)
    return True


def code_granule_check(off: str, codemap: str, granule_fn: str, fast: str, slow: str,
                       stem: str, fresh: Callable[[], str], aligned: str = "true") -> list[str]:
    """IR lines for a store of at most 8 bytes within a page at RAM offset ``off`` in
    bare mode: on to ``fast`` if its page holds no code (``codemap``) or, ``aligned``,
    its 8-byte granule holds none (asked of the runtime's ``pyhv_granule_clear``,
    ``granule_fn``: the function itself in the runtime's module, a pointer to it from
    the hart state in a block's; it counts such stores in ``smcok``), else to ``slow``
    (Python stores and drops the code it overlaps; a misaligned store into a page with
    code is Python's too). Out of line: the bitmap test inline took ~10% of quick
    blocks' and ~20% of optimised regions' code generation (sort's batches), for the
    few stores that go to pages with code. ``fresh`` names temporaries; ``stem`` the
    extra labels."""
    page, mapp, ok = fresh(), fresh(), fresh()
    return [
        f"  {page} = lshr i64 {off}, 12",
        f"  {mapp} = getelementptr i8, ptr {codemap}, i64 {page}",
        f"  %{stem}c = load i8, ptr {mapp}",
        f"  %{stem}z = icmp eq i8 %{stem}c, 0",
        f"  br i1 %{stem}z, label %{fast}, label %{stem}q",
        f"{stem}q:",
        f"  br label %{stem}a" if aligned == "true" else
        f"  br i1 {aligned}, label %{stem}a, label %{slow}",
        f"{stem}a:",
        f"  {ok} = call i1 {granule_fn}(ptr %s, i64 {off})",
        f"  br i1 {ok}, label %{fast}, label %{slow}",
    ]


def fma_invalid(op: Callable[[str], str], a: str, b: str, ty: str = "i64") -> str:
    """The NV flag (16) an FMA of a * b raises on RISC-V for inf * 0 even when the
    addend is a quiet NaN, which the host does not: IR through ``op`` (expr -> name);
    ``a`` and ``b`` are the operands' bits (``ty`` i32: singles)."""
    mag, inf = (0x7FFFFFFF, 0x7F800000) if ty == "i32" else (0x7FFFFFFFFFFFFFFF,
                                                              0x7FF0000000000000)
    ma = op(f"and {ty} {a}, {mag}")
    mb = op(f"and {ty} {b}, {mag}")
    ia = op(f"icmp eq {ty} {ma}, {inf}")
    ib = op(f"icmp eq {ty} {mb}, {inf}")
    za = op(f"icmp eq {ty} {ma}, 0")
    zb = op(f"icmp eq {ty} {mb}, 0")
    p1 = op(f"and i1 {ia}, {zb}")
    p2 = op(f"and i1 {za}, {ib}")
    bad = op(f"or i1 {p1}, {p2}")
    return op(f"select i1 {bad}, i64 16, i64 0")


def fp_minmax(op: Callable[[str], str], a: str, b: str, is_max: bool, single: bool) -> str:
    """fmin/fmax (RISC-V 2.2: a NaN operand gives the other; two NaNs the canonical
    NaN; -0 < +0; a signalling NaN raises invalid, as the quiet compares do) on the
    operands' bits ``a``, ``b`` (i32 singles or i64 doubles): IR through ``op``."""
    ty, fty, w = ("i32", "float", "f32") if single else ("i64", "double", "f64")
    mag, inf, canon = ((0x7FFFFFFF, 0x7F800000, _CANON_S) if single
                       else (0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000, _CANON_D))
    fa, fb = op(f"bitcast {ty} {a} to {fty}"), op(f"bitcast {ty} {b} to {fty}")
    cmp = "ogt" if is_max else "olt"
    first = op(f'call i1 @llvm.experimental.constrained.fcmp.{w}({fty} {fa}, {fty} {fb}, '
               f'metadata !"{cmp}", {_CX}) #1')
    same = op(f'call i1 @llvm.experimental.constrained.fcmp.{w}({fty} {fa}, {fty} {fb}, '
              f'metadata !"oeq", {_CX}) #1')
    an = op(f"icmp ugt {ty} {op(f'and {ty} {a}, {mag}')}, {inf}")
    bn = op(f"icmp ugt {ty} {op(f'and {ty} {b}, {mag}')}, {inf}")
    zeros = op(f"{'and' if is_max else 'or'} {ty} {a}, {b}")  # (+0 and -0 compare equal)
    r = op(f"select i1 {first}, {ty} {a}, {ty} {b}")
    r = op(f"select i1 {same}, {ty} {zeros}, {ty} {r}")
    r = op(f"select i1 {bn}, {ty} {a}, {ty} {r}")
    r = op(f"select i1 {an}, {ty} {b}, {ty} {r}")
    return op(f"select i1 {op(f'and i1 {an}, {bn}')}, {ty} {canon}, {ty} {r}")


def _fconst(v: float) -> str:
    """An FP constant as LLVM IR writes it (a float's too: its value as a double)."""
    return f"0x{struct.unpack('<Q', struct.pack('<d', v))[0]:016X}"


RM_RNE, RM_RTZ, RM_RDN, RM_RUP, RM_RMM = 0, 1, 2, 3, 4
# what rounds a value to an integer in each mode (RNE: rint, which raises inexact; RTZ:
# the conversion itself, which truncates and raises it; the others raise none: added)
_ROUND_TO_INT = {RM_RNE: "rint", RM_RDN: "floor", RM_RUP: "ceil", RM_RMM: "round"}


def _int_range(rm: int, low: float, top: float, exact: bool) -> tuple[float, str, float, str]:
    """(lower bound, its compare, upper bound, its compare) of the operands that round,
    in mode ``rm``, to an integer in [low, top): with ``exact``, low - 1, low - 0.5,
    top - 1 and top - 0.5 exist in the format; else the format's values next to low and
    top are integers, and nothing between them and the bound rounds across it."""
    if not exact:
        lower = {RM_RNE: (-0.5, "oge"), RM_RTZ: (-1.0, "ogt"), RM_RDN: (0.0, "oge"),
                 RM_RUP: (-1.0, "ogt"), RM_RMM: (-0.5, "ogt")}[rm] if low == 0 else (low, "oge")
        return (*lower, top, "olt")
    return {RM_RNE: (low - 0.5, "oge", top - 0.5, "olt"),
            RM_RTZ: (low - 1.0, "ogt", top, "olt"),
            RM_RDN: (low, "oge", top, "olt"),
            RM_RUP: (low - 1.0, "ogt", top - 1.0, "ole"),
            RM_RMM: (low - 0.5, "ogt", top - 0.5, "olt")}[rm]


def fp_to_int(op: Callable[[str], str], bits: str, single: bool, width: int, signed: bool,
              rm: int) -> tuple[str, str]:
    """fcvt.w/wu/l/lu.s/d of the operand's bits (i32 single, i64 double), rounded in
    static mode ``rm`` (RNE, RTZ, RDN, RUP, RMM: C's casts, floor, ceil, lround): (the
    i64 result as RISC-V writes it, the fflags to add). In range (what rounds into the
    destination's range), the host converts the rounded value (inexact from the host, or
    added when the rounding changed the value); else the result saturates (NaN and too
    large: the largest value; too small: the smallest) and only invalid is raised:
    out-of-range operands never reach a host operation that could raise another flag
    (the quiet compares raise invalid for a signalling NaN only)."""
    ty, fty, w, prec = ("i32", "float", "f32", 24) if single else ("i64", "double", "f64", 53)
    x = op(f"bitcast {ty} {bits} to {fty}")
    top = 2.0 ** (width - 1 if signed else width)  # the first value too large
    low = -top if signed else 0.0  # the smallest value
    lo, lo_cc, hi, hi_cc = _int_range(rm, low, top, width + 1 <= prec)
    above = op(f'call i1 @llvm.experimental.constrained.fcmp.{w}({fty} {x}, {fty} '
               f'{_fconst(lo)}, metadata !"{lo_cc}", {_CX}) #1')
    below = op(f'call i1 @llvm.experimental.constrained.fcmp.{w}({fty} {x}, {fty} '
               f'{_fconst(hi)}, metadata !"{hi_cc}", {_CX}) #1')
    valid = op(f"and i1 {above}, {below}")
    xs = op(f"select i1 {valid}, {fty} {x}, {fty} {_fconst(0.0)}")
    nx = "0"
    if rm == RM_RNE:
        xs = op(f"call {fty} @llvm.experimental.constrained.rint.{w}({fty} {xs}, {_CI}) #1")
    elif rm != RM_RTZ:
        r = op(f"call {fty} @llvm.experimental.constrained.{_ROUND_TO_INT[rm]}.{w}("
               f"{fty} {xs}, {_CX}) #1")
        moved = op(f'call i1 @llvm.experimental.constrained.fcmp.{w}({fty} {xs}, {fty} {r}, '
                   f'metadata !"une", {_CX}) #1')
        nx = op(f"select i1 {moved}, i64 1, i64 0")
        xs = r
    if width == 64 and not signed:  # [2**63, 2**64): less 2**63 (exact), the top bit back
        t63 = _fconst(2.0 ** 63)
        big = op(f'call i1 @llvm.experimental.constrained.fcmp.{w}({fty} {xs}, {fty} {t63}, '
                 f'metadata !"oge", {_CX}) #1')
        less = op(f"call {fty} @llvm.experimental.constrained.fsub.{w}({fty} "
                  f"{op(f'select i1 {big}, {fty} {xs}, {fty} {t63}')}, {fty} {t63}, {_CI}) #1")
        xs = op(f"select i1 {big}, {fty} {less}, {fty} {xs}")
        v = op(f"call i64 @llvm.experimental.constrained.fptosi.i64.{w}({fty} {xs}, {_CX}) #1")
        v = op(f"select i1 {big}, i64 {op(f'xor i64 {v}, {_c(1 << 63)}')}, i64 {v}")
    else:
        v = op(f"call i64 @llvm.experimental.constrained.fptosi.i64.{w}({fty} {xs}, {_CX}) #1")
    mag, inf = (0x7FFFFFFF, 0x7F800000) if single else (0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000)
    nan = op(f"icmp ugt {ty} {op(f'and {ty} {bits}, {mag}')}, {inf}")
    high = op(f"or i1 {op(f'icmp sge {ty} {bits}, 0')}, {nan}")  # (NaNs saturate high)
    if signed:
        sat = op(f"select i1 {high}, i64 {(1 << (width - 1)) - 1}, i64 {-(1 << (width - 1))}")
    else:
        sat = op(f"select i1 {high}, i64 -1, i64 0")
    r = op(f"select i1 {valid}, i64 {v}, i64 {sat}")
    if width == 32:  # (the low 32 bits, sign-extended: wu's too)
        r = op(f"sext i32 {op(f'trunc i64 {r} to i32')} to i64")
    return r, op(f"select i1 {valid}, i64 {nx}, i64 16")


def fp_unbox(op: Callable[[str], str], bits: str) -> str:
    """The single in an F register's bits (i32): the canonical NaN unless the upper
    half is all ones (NaN-boxing)."""
    boxed = op(f"icmp eq i64 {op(f'lshr i64 {bits}, 32')}, {0xFFFFFFFF}")
    return op(f"select i1 {boxed}, i32 {op(f'trunc i64 {bits} to i32')}, i32 {_CANON_S}")


def fp_box_bits(op: Callable[[str], str], b: str) -> str:
    """An F register's bits for a single's bits ``b`` (i32): NaN-boxed."""
    return op(f"or i64 {op(f'zext i32 {b} to i64')}, {_c(_BOX)}")


def fp_result(op: Callable[[str], str], r: str, single: bool) -> str:
    """An F register's bits for an arithmetic result (float or double): NaNs made
    canonical (RISC-V never propagates payloads), a single NaN-boxed."""
    ty, fty, mag, inf, canon = (("i32", "float", 0x7FFFFFFF, 0x7F800000, _CANON_S) if single
                                else ("i64", "double", 0x7FFFFFFFFFFFFFFF,
                                      0x7FF0000000000000, _CANON_D))
    b = op(f"bitcast {fty} {r} to {ty}")
    nan = op(f"icmp ugt {ty} {op(f'and {ty} {b}, {mag}')}, {inf}")
    b = op(f"select i1 {nan}, {ty} {canon}, {ty} {b}")
    return fp_box_bits(op, b) if single else b


def fp_sign_inject(op: Callable[[str], str], kind: int, a: str, b: str, single: bool) -> str:
    """fsgnj (kind 0), fsgnjn (1), fsgnjx (2) on the operands' bits (i32 singles,
    unboxed, or i64 doubles); the result's bits in the same type."""
    ty, top, mag = ("i32", -(1 << 31), 0x7FFFFFFF) if single else ("i64", _c(1 << 63),
                                                                   0x7FFFFFFFFFFFFFFF)
    sb = op(f"and {ty} {b}, {top}")
    if kind == 1:
        sb = op(f"xor {ty} {sb}, {top}")
    elif kind == 2:
        sb = op(f"xor {ty} {sb}, {op(f'and {ty} {a}, {top}')}")
    return op(f"or {ty} {op(f'and {ty} {a}, {mag}')}, {sb}")


def fp_class(op: Callable[[str], str], bits: str, single: bool) -> str:
    """fclass.s/d of the operand's bits (i32 single, i64 double): the i64 with the one
    bit of its class set (0 -inf, 1 -normal, 2 -subnormal, 3 -0, 4 +0, 5 +subnormal,
    6 +normal, 7 +inf, 8 signalling NaN, 9 quiet NaN). Raises no flag."""
    ty, m, emax, fmask, quiet = (("i32", 23, 0xFF, (1 << 23) - 1, 1 << 22) if single
                                 else ("i64", 52, 0x7FF, (1 << 52) - 1, 1 << 51))
    neg = op(f"icmp slt {ty} {bits}, 0")
    exp = op(f"and {ty} {op(f'lshr {ty} {bits}, {m}')}, {emax}")
    frac = op(f"and {ty} {bits}, {fmask}")
    top = op(f"icmp eq {ty} {exp}, {emax}")
    low = op(f"icmp eq {ty} {exp}, 0")
    nofrac = op(f"icmp eq {ty} {frac}, 0")
    isq = op(f"icmp ne {ty} {op(f'and {ty} {frac}, {quiet}')}, 0")

    def by_sign(neg_k: int, pos_k: int) -> str:
        return op(f"select i1 {neg}, i64 {neg_k}, i64 {pos_k}")

    k = by_sign(1, 6)  # normal
    zero_or_sub = op(f"select i1 {nofrac}, i64 {by_sign(3, 4)}, i64 {by_sign(2, 5)}")
    k = op(f"select i1 {low}, i64 {zero_or_sub}, i64 {k}")
    nan = op(f"select i1 {isq}, i64 9, i64 8")
    inf_or_nan = op(f"select i1 {nofrac}, i64 {by_sign(0, 7)}, i64 {nan}")
    k = op(f"select i1 {top}, i64 {inf_or_nan}, i64 {k}")
    return op(f"shl i64 1, {k}")


def fp_from_u64(op: Callable[[str], str], a: str, single: bool) -> str:
    """fcvt.s/d.lu (round to nearest even): an operand with its top bit set is halved
    keeping a sticky low bit, converted (rounded once) and doubled (exact), as
    compilers do it on x86. Returns the result as float or double."""
    fty, w = ("float", "f32") if single else ("double", "f64")
    neg = op(f"icmp slt i64 {a}, 0")
    half = op(f"or i64 {op(f'lshr i64 {a}, 1')}, {op(f'and i64 {a}, 1')}")
    src = op(f"select i1 {neg}, i64 {half}, i64 {a}")
    f = op(f"call {fty} @llvm.experimental.constrained.sitofp.{w}.i64(i64 {src}, {_CI}) #1")
    twice = op(f"call {fty} @llvm.experimental.constrained.fadd.{w}({fty} {f}, {fty} {f}, "
               f"{_CI}) #1")
    return op(f"select i1 {neg}, {fty} {twice}, {fty} {f}")


def _c(v: int) -> str:
    """A 64-bit constant as LLVM wants it (signed decimal)."""
    v &= M64
    return str(v - (1 << 64) if v >> 63 else v)


class FpValues:
    """FP register values in IR, for both generators (blocks here, the native
    interpreter): an F register holds 64 bits, a double as they are, a single NaN-boxed.
    The class using it provides ``op`` (an IR expression -> its value's name)."""

    op: Callable[[str], str]

    def dbl(self, bits: str) -> str:
        return self.op(f"bitcast i64 {bits} to double")

    def bits(self, d: str) -> str:
        return self.op(f"bitcast double {d} to i64")

    def canon(self, d: str) -> str:
        """Bits of a double result, NaNs made canonical (fp_result)."""
        return fp_result(self.op, d, False)

    def unbox(self, bits: str) -> str:
        return fp_unbox(self.op, bits)

    def flt(self, bits: str) -> str:
        return self.op(f"bitcast i32 {self.unbox(bits)} to float")

    def box(self, f: str) -> str:
        return fp_result(self.op, f, True)

    def box_bits(self, b: str) -> str:
        return fp_box_bits(self.op, b)


class TimeReads:
    """Reads of the guest's clock (the time CSR, the CLINT's mtime register) in IR, for
    both generators: the class using it provides ``op`` (as FpValues) and ``emit`` (an
    IR line, appended)."""

    op: Callable[[str], str]
    emit: Callable[[str], None]

    def time_read(self, counted: bool = True) -> str:
        """What a read returns: clock.next_time_read, a tick past the last read (any
        hart's, through the shared tlast) while that stays within TIME_READ_SLACK ticks
        of the run's mtime; with ``counted`` (the time CSR: the board does not count
        its mtime register's reads as polls) the read counts in treads. Every field
        is read here, where the read is (treads and tlast change as the guest runs)."""
        def at(off: int) -> str:
            return self.op(f"getelementptr i8, ptr %s, i64 {off}")

        if counted:
            pn = at(S.TREADS)
            n = self.op(f"load i64, ptr {pn}")
            self.emit(f"store i64 {self.op(f'add i64 {n}, 1')}, ptr {pn}")
        tlast = at(S.TLAST)
        cell = self.op(f"inttoptr i64 {self.op(f'load i64, ptr {tlast}')} to ptr")
        last = self.op(f"load i64, ptr {cell}")
        pmt = at(S.MTIME)
        mt = self.op(f"load i64, ptr {pmt}")
        cand = self.op(f"add i64 {last}, 1")
        over = self.op(f"icmp ugt i64 {cand}, {self.op(f'add i64 {mt}, {TIME_READ_SLACK}')}")
        cand = self.op(f"select i1 {over}, i64 {last}, i64 {cand}")
        value = self.op(f"select i1 {self.op(f'icmp ugt i64 {mt}, {cand}')}, i64 {mt}, "
                        f"i64 {cand}")
        self.emit(f"store i64 {value}, ptr {cell}")
        return value

    def mtime_half(self, now: str, rel: str) -> str:
        """A 32-bit load of the mtime register: its low half at ``rel`` 0, else its
        high half."""
        hi = self.op(f"lshr i64 {now}, 32")
        lo = self.op(f"and i64 {now}, 4294967295")
        return self.op(f"select i1 {self.op(f'icmp eq i64 {rel}, 4')}, i64 {hi}, i64 {lo}")


class _Block(FpValues, TimeReads):
    def __init__(self, name: str, start: int, insns: list[tuple[int, Decoded]],
                 translated: bool, counted: bool = False, clock: Collection[int] = ()) -> None:
        self.name = name
        self.clock = clock  # pcs of loads that read mtime (block_ir)
        self.quick = counted  # (asked for by the quick tier; see state_ptr)
        # a quickly compiled block counts the instructions it runs (see count)
        self.counted = counted and opt_cost(insns) <= OPT_MAX_COST
        self.fp_checked = False  # FS and frm checked (at the first FP instruction)
        self.start = start
        self.insns = insns
        self.translated = translated
        self.lines: list[str] = []
        self.n = 0
        self.label = "i0"
        # (from label, code, pc, instructions retired, stores done)
        # (... , budget and store count before this iteration: loop blocks only)
        self.exits: list[tuple[str, int, str, int | str, int | str, str, str]] = []
        self.exit_base: tuple[str, str] | None = None
        self.ntails = 0  # exits with their own tail (see exit)
        self.globals: set[str] = set()  # module globals the function uses
        self.stores = 0  # stores done since entry (the loop header, the region segment)
        # Registers are SSA values tracked here: reg -> current value (in a region,
        # reg -> its entry value, and the current one is in its alloca %ax<reg>).
        self.x: dict[int, str] = {}
        self.f: dict[int, str] = {}
        self.dirty: set[int] = set()
        self.fdirty: set[int] = set()
        self.fs_dirty = False
        self.prologue: list[str] = []  # loads in the entry block (dominate everything)
        self.fields: dict[int, str] = {}
        self.ptrs: dict[int, str] = {}  # state field -> its pointer, computed at entry
        # A region: the block branches to its own instructions (other than a plain
        # loop: one way out, at its end, back to its start): registers live in
        # allocas (SSA after SROA, which builds the phis of its joins), and the
        # instructions retired and stores done so far in two more; each target starts
        # a labelled segment.
        self.edges = internal_edges(start, insns)
        self.region = bool(self.edges) and (self.edges != [(len(insns) - 1, start)]
                                            or any(ends_block(d) for _, d in insns[:-1]))
        self.targets = {t for _, t in self.edges} if self.region else set()
        self.back = {t for k, t in self.edges if t <= insns[k][0]} if self.region else set()
        self.written = written_by(insns, self.edges) if self.region else []
        self.seg_k = 0  # the region's current segment starts at this instruction
        self.reachable = True  # (region) the instruction being emitted can be reached
        self.loop = not self.region and self._is_loop()
        self.header: list[str] = []  # phis of the loop header
        # loads and stores checked together (access_groups)
        self.groups = access_groups(insns, self.targets, clock)
        # (translated) each group's host addend, by its first member (groups interleave)
        self.group_adds: dict[int, str] = {}

    def _is_loop(self) -> bool:
        pc, d = self.insns[-1]
        return (d.name in BRANCHES or d.name == "jal") and (pc + d.imm) & M64 == self.start

    # -- helpers -------------------------------------------------------------------
    def t(self) -> str:
        self.n += 1
        return f"%t{self.n}"

    def emit(self, line: str) -> None:
        self.lines.append("  " + line)

    def start_label(self, label: str) -> None:
        self.lines.append(f"{label}:")
        self.label = label

    def field(self, offset: int, ty: str = "i64") -> str:
        """A hart-state field that native code does not change (loaded once, at entry)."""
        v = self.fields.get(offset)
        if v is None:
            v = self.fields[offset] = f"%fld{offset}"
            self.prologue.append(f"  %pfld{offset} = getelementptr i8, ptr %s, i64 {offset}")
            self.prologue.append(f"  {v} = load {ty}, ptr %pfld{offset}")
            self.ptrs[offset] = f"%pfld{offset}"
        return v

    def state_ptr(self, offset: int, out: list[str] | None = None) -> str:
        """A pointer to a hart-state field, for a write-back or an exit. Optimised code
        computes each once, at entry: less IR for its passes and code generator (13%
        less time over sort's regions). Quick code computes it where it is used (in
        ``out`` if given, else emitted), which its fast instruction selector folds into
        the access: one computed at entry stays live in a register (17% longer to
        compile, 5% more machine code)."""
        if self.quick:
            p = self.t()
            line = f"{p} = getelementptr i8, ptr %s, i64 {offset}"
            if out is None:
                self.emit(line)
            else:
                out.append(line)
            return p
        known = self.ptrs.get(offset)
        if known is not None:
            return known
        p = self.ptrs[offset] = f"%pfld{offset}"
        self.prologue.append(f"  {p} = getelementptr i8, ptr %s, i64 {offset}")
        return p

    def address(self, base: str, imm: int) -> str:
        """A load's or store's address: ``base`` plus the immediate (no instruction for
        an offset of 0: the quick tier has no pass that folds it)."""
        return base if imm & M64 == 0 else self.op(f"add i64 {base}, {_c(imm)}")

    def rd(self, r: int) -> str:
        if r == 0:
            return "0"
        v = self.x.get(r)
        if v is None:
            v = self.x[r] = f"%ix{r}"
            self.prologue.append(f"  %pix{r} = getelementptr i8, ptr %s, i64 {S.X + 8 * r}")
            self.prologue.append(f"  %ix{r} = load i64, ptr %pix{r}")
            self.ptrs.setdefault(S.X + 8 * r, f"%pix{r}")
            if self.region:
                self.prologue.append(f"  %ax{r} = alloca i64")
                self.prologue.append(f"  store i64 %ix{r}, ptr %ax{r}")
        if self.region:
            return self.op(f"load i64, ptr %ax{r}")
        return v

    def wr(self, r: int, v: str) -> None:
        if r == 0:
            return
        if self.region:
            self.rd(r)  # its alloca, holding the entry value for the paths that skip this
            self.emit(f"store i64 {v}, ptr %ax{r}")
            self.dirty.add(r)
            return
        if v.lstrip("-").isdigit():  # a constant: give it a name for the phis
            v = self.op(f"add i64 0, {v}")
        self.x[r] = v
        self.dirty.add(r)

    def frd(self, r: int) -> str:
        v = self.f.get(r)
        if v is None:
            v = self.f[r] = f"%if{r}"
            self.prologue.append(f"  %pif{r} = getelementptr i8, ptr %s, i64 {S.F + 8 * r}")
            self.prologue.append(f"  %if{r} = load i64, ptr %pif{r}")
            self.ptrs.setdefault(S.F + 8 * r, f"%pif{r}")
            if self.region:
                self.prologue.append(f"  %af{r} = alloca i64")
                self.prologue.append(f"  store i64 %if{r}, ptr %af{r}")
        if self.region:
            return self.op(f"load i64, ptr %af{r}")
        return v

    def fwr(self, r: int, v: str) -> None:
        if self.region:
            self.frd(r)
            self.emit(f"store i64 {v}, ptr %af{r}")
            self.emit("store i64 1, ptr %afsd")  # FS dirty on this path
        else:
            self.f[r] = v
        self.fdirty.add(r)
        self.fs_dirty = True

    def fp_check(self, k: int, pc: int, rm: int | None) -> None:
        """FP disabled (mstatus.FS = Off) or a dynamic rounding mode other than RNE:
        leave before instruction k, Python does it (or raises the illegal instruction).
        Checked once, at the block's first FP instruction, for all of them (nothing a
        block does changes mstatus.FS or frm): one exit instead of one per instruction,
        which would each write back every register (FP blocks compiled 2x slower)."""
        if self.fp_checked:
            return
        self.fp_checked = True
        dyn = any(d.name in FP_NAMES and d.rm == _RM_DYN for _, d in self.insns[k:])
        mode = self.field(S.FPMODE)
        need = S.FP_ENABLED | (S.FP_RNE if dyn else 0)
        m = self.op(f"and i64 {mode}, {need}")
        self.unless(self.op(f"icmp eq i64 {m}, {need}"), k, pc)

    def unless(self, ok: str, k: int, pc: int) -> None:
        """Go on only if ``ok``; else leave before instruction k for Python to do it."""
        go, out = f"u{k}g{self.n}", f"u{k}o{self.n}"
        self.emit(f"br i1 {ok}, label %{go}, label %{out}")
        self.start_label(out)
        p = self.op(f"getelementptr i8, ptr %s, i64 {S.EXIT_ACCESS}")
        self.emit(f"store i64 0, ptr {p}")
        self.exit(S.EXIT_SLOW, _c(pc), k)
        self.start_label(go)

    def call(self, ret: str, fn: str, args: str) -> str:
        return self.op(f"call {ret} @llvm.experimental.constrained.{fn}({args}) #1")

    def fp(self, k: int, pc: int, d: Decoded) -> None:  # noqa: C901 - one case per group
        name = d.name
        self.fp_check(k, pc, d.rm)
        if name in FP_LOADS or name in FP_STORES:
            bits = FP_LOADS.get(name) or FP_STORES[name]
            a = self.rd(d.rs1)
            addr = self.address(a, d.imm)
            ptr = self.access(k, pc, addr, bits // 8, store=name in FP_STORES)
            if name in FP_LOADS:
                v = self.op(f"load i{bits}, ptr {ptr}, align 1")
                if bits == 32:
                    v = self.op(f"zext i32 {v} to i64")
                    v = self.op(f"or i64 {v}, {_c(_BOX)}")
                self.fwr(d.rd, v)
            else:
                v = self.frd(d.rs2)
                if bits == 32:
                    v = self.op(f"trunc i64 {v} to i32")
                self.emit(f"store i{bits} {v}, ptr {ptr}, align 1")
        elif name in FP_CVT:
            if FP_FMT[name] == "s":  # fcvt.s.d: rounds
                x = self.dbl(self.frd(d.rs1))
                self.fwr(d.rd, self.box(self.call("float", "fptrunc.f32.f64",
                                                  f"double {x}, {_CI}")))
            else:  # fcvt.d.s: exact (a signalling NaN raises invalid)
                x = self.flt(self.frd(d.rs1))
                self.fwr(d.rd, self.canon(self.call("double", "fpext.f64.f32",
                                                    f"float {x}, {_CX}")))
        elif name in FP_TO_UINT or name in FP_TO_INT:
            single = FP_FMT[name] == "s"
            a = self.frd(d.rs1)
            width = FP_TO_INT.get(name) or FP_TO_UINT[name]
            r, nv = fp_to_int(self.op, self.unbox(a) if single else a, single, width,
                              name in FP_TO_INT, RM_RNE if d.rm == _RM_DYN else d.rm)
            self.raise_flags(nv)
            self.wr(d.rd, r)
            self.fs_dirty = True
        elif name in FP_FROM_U64:
            single = FP_FMT[name] == "s"
            r = fp_from_u64(self.op, self.rd(d.rs1), single)
            self.fwr(d.rd, self.box_bits(self.op(f"bitcast float {r} to i32")) if single
                     else self.bits(r))
        elif name in FP_CLASS:
            single = FP_FMT[name] == "s"
            a = self.frd(d.rs1)
            self.wr(d.rd, fp_class(self.op, self.unbox(a) if single else a, single))
        elif name in FP_MINMAX:
            if FP_FMT[name] == "s":
                a, b = self.unbox(self.frd(d.rs1)), self.unbox(self.frd(d.rs2))
                self.fwr(d.rd, self.box_bits(fp_minmax(self.op, a, b, FP_MINMAX[name], True)))
            else:
                self.fwr(d.rd, fp_minmax(self.op, self.frd(d.rs1), self.frd(d.rs2),
                                         FP_MINMAX[name], False))
        elif FP_FMT.get(name) == "s" and name not in FP_LOADS and name not in FP_STORES \
                and name not in FP_MOVES:
            self.fp_single(d)
        elif name in FP_ARITH:
            a, b = self.dbl(self.frd(d.rs1)), self.dbl(self.frd(d.rs2))
            r = self.call("double", f"{FP_ARITH[name]}.f64", f"double {a}, double {b}, {_CI}")
            self.fwr(d.rd, self.canon(r))
        elif name in FP_SQRT:
            a = self.dbl(self.frd(d.rs1))
            r = self.call("double", "sqrt.f64", f"double {a}, {_CI}")
            self.fwr(d.rd, self.canon(r))
        elif name in FP_FMA:
            neg_p, neg_c = FP_FMA[name]
            a, b, c = self.frd(d.rs1), self.frd(d.rs2), self.frd(d.rs3)
            if neg_p:
                a = self.op(f"xor i64 {a}, {_c(1 << 63)}")
            if neg_c:
                c = self.op(f"xor i64 {c}, {_c(1 << 63)}")
            da, db, dc = self.dbl(a), self.dbl(b), self.dbl(c)
            self.raise_flags(fma_invalid(self.op, a, b))
            r = self.call("double", "fma.f64", f"double {da}, double {db}, double {dc}, {_CI}")
            self.fwr(d.rd, self.canon(r))
        elif name in FP_CMP:
            fn, cc = FP_CMP[name]
            a, b = self.dbl(self.frd(d.rs1)), self.dbl(self.frd(d.rs2))
            c = self.call("i1", f"{fn}.f64", f'double {a}, double {b}, metadata !"{cc}", {_CX}')
            self.wr(d.rd, self.op(f"zext i1 {c} to i64"))
            self.fs_dirty = True  # may have raised flags
        elif name in FP_SGNJ:
            self.fwr(d.rd, fp_sign_inject(self.op, FP_SGNJ[name], self.frd(d.rs1),
                                          self.frd(d.rs2), False))
        elif name in INT_TO_FP:
            r = self.call("double", "sitofp.f64.i64", f"i64 {self.int_operand(d)}, {_CI}")
            self.fwr(d.rd, self.bits(r))
        elif FP_MOVES.get(name) == ("mv_x", "d"):
            self.wr(d.rd, self.frd(d.rs1))
        elif FP_MOVES.get(name) == ("mv_f", "d"):
            self.fwr(d.rd, self.rd(d.rs1))
        elif FP_MOVES.get(name) == ("mv_x", "s"):
            v = self.frd(d.rs1)
            self.wr(d.rd, self.sext32(v))
        elif FP_MOVES.get(name) == ("mv_f", "s"):
            v = self.rd(d.rs1)
            v = self.op(f"and i64 {v}, {0xFFFFFFFF}")
            self.fwr(d.rd, self.op(f"or i64 {v}, {_c(_BOX)}"))
        else:  # pragma: no cover
            raise AssertionError(name)

    def fp_single(self, d: Decoded) -> None:
        """Single-precision arithmetic, sqrt, FMA, compares, sign injection and
        conversions from integers: as the double ones, on unboxed operands."""
        name = d.name
        if name in FP_ARITH:
            a, b = self.flt(self.frd(d.rs1)), self.flt(self.frd(d.rs2))
            self.fwr(d.rd, self.box(self.call("float", f"{FP_ARITH[name]}.f32",
                                              f"float {a}, float {b}, {_CI}")))
        elif name in FP_SQRT:
            a = self.flt(self.frd(d.rs1))
            self.fwr(d.rd, self.box(self.call("float", "sqrt.f32", f"float {a}, {_CI}")))
        elif name in FP_FMA:
            neg_p, neg_c = FP_FMA[name]
            a, b, c = (self.unbox(self.frd(r)) for r in (d.rs1, d.rs2, d.rs3))
            if neg_p:
                a = self.op(f"xor i32 {a}, {-(1 << 31)}")
            if neg_c:
                c = self.op(f"xor i32 {c}, {-(1 << 31)}")
            fa, fb, fc = (self.op(f"bitcast i32 {v} to float") for v in (a, b, c))
            self.raise_flags(fma_invalid(self.op, a, b, "i32"))
            self.fwr(d.rd, self.box(self.call("float", "fma.f32",
                                              f"float {fa}, float {fb}, float {fc}, {_CI}")))
        elif name in FP_CMP:
            fn, cc = FP_CMP[name]
            a, b = self.flt(self.frd(d.rs1)), self.flt(self.frd(d.rs2))
            c = self.call("i1", f"{fn}.f32", f'float {a}, float {b}, metadata !"{cc}", {_CX}')
            self.wr(d.rd, self.op(f"zext i1 {c} to i64"))
            self.fs_dirty = True
        elif name in FP_SGNJ:
            r = fp_sign_inject(self.op, FP_SGNJ[name], self.unbox(self.frd(d.rs1)),
                               self.unbox(self.frd(d.rs2)), True)
            self.fwr(d.rd, self.box_bits(r))
        elif name in INT_TO_FP:
            r = self.call("float", "sitofp.f32.i64", f"i64 {self.int_operand(d)}, {_CI}")
            self.fwr(d.rd, self.box_bits(self.op(f"bitcast float {r} to i32")))
        else:  # pragma: no cover
            raise AssertionError(name)

    def raise_flags(self, flags: str) -> None:
        pf = self.op(f"getelementptr i8, ptr %s, i64 {S.FFLAGS}")
        old = self.op(f"load i64, ptr {pf}")
        self.emit(f"store i64 {self.op(f'or i64 {old}, {flags}')}, ptr {pf}")

    def int_operand(self, d: Decoded) -> str:
        """fcvt.s/d.w/wu/l's integer operand, extended to 64 bits."""
        ext, _width = INT_TO_FP[d.name]
        a = self.rd(d.rs1)
        if ext:
            a = self.op(f"{ext} i32 {self.op(f'trunc i64 {a} to i32')} to i64")
        return a

    def op(self, expr: str) -> str:
        v = self.t()
        self.emit(f"{v} = {expr}")
        return v

    def exit(self, code: int, pc: str, n: int, stores: int | None = None,
             charged: bool = False) -> None:
        """Leave the block: write back what it changed, then the shared tail (which
        charges ``n`` instructions, the index of the instruction it leaves before, and
        counts ``stores``, by default the stores done so far). In a region, ``n`` and the
        stores are those of the current segment on top of the retired count
        (``charged``: the segment was charged already)."""
        region = self.region
        if region and (code != S.EXIT_CONTINUE or charged):
            # the shared exit writes back every register the region writes, once
            # (their allocas hold what this path left in them)
            self.exits.append((self.label, code, pc, *self.region_counts(n, stores, charged),
                               "", ""))
            self.emit("br label %exit")
            return
        # (a region's way on, after instruction n - 1: what a path to it may have written)
        xs, fs = self.written[n - 1] if region else (self.dirty, self.fdirty)
        for r in sorted(xs):
            v = self.rd(r) if region else self.x[r]
            self.emit(f"store i64 {v}, ptr {self.state_ptr(S.X + 8 * r)}")
        for r in sorted(fs):
            v = self.frd(r) if region else self.f[r]
            self.emit(f"store i64 {v}, ptr {self.state_ptr(S.F + 8 * r)}")
        if fs if region else self.fs_dirty:
            p = self.state_ptr(S.FSDIRTY)
            if region:  # only if this path wrote an F register
                was = self.op(f"load i64, ptr {p}")
                now = self.op(f"or i64 {was}, {self.op('load i64, ptr %afsd')}")
                self.emit(f"store i64 {now}, ptr {p}")
            else:
                self.emit(f"store i64 1, ptr {p}")
        if region:
            self.way_out(code, pc, *self.region_counts(n, stores, charged), "", "")
            return
        # a loop block keeps its budget and store count in SSA values (header phis);
        # its exits charge what this iteration did on top of them
        base = ("%hbud", "%hst") if self.loop else ("", "")
        bases = self.exit_base or base
        self.exit_base = None
        self.way_out(code, pc, n, self.stores if stores is None else stores, *bases)

    def region_counts(self, n: int, stores: int | None, charged: bool) -> tuple[str, str]:
        """(Region) instructions retired and stores done on the way to an exit: the
        counts so far plus the current segment's (none if ``charged``)."""
        seg_n = 0 if charged else n - self.seg_k
        seg_st = 0 if charged else (self.stores if stores is None else stores)
        ret = self.op("load i64, ptr %aret")
        nst = self.op("load i64, ptr %anst")
        return self.op(f"add i64 {ret}, {seg_n}"), self.op(f"add i64 {nst}, {seg_st}")

    def way_out(self, code: int, pc: str, n: int | str, stores: int | str, bbase: str,
                sbase: str) -> None:
        """After the write-back: an exit that goes on gets its own tail, to the next
        block (the chaining call site then serves one successor: a guest branch's two
        ways are two sites, each predicted well, not one indirect jump whose target
        follows the branch; a constant pc finds its dispatch-table slot at compile
        time); any other goes through the shared exit."""
        if code == S.EXIT_CONTINUE:
            self.ntails += 1
            sfx = f"_{self.ntails}"
            self.lines.extend("  " + ln if not ln.endswith(":") else ln
                              for ln in self.tail(str(code), pc, str(n), str(stores), bbase,
                                                  sbase, sfx))
            return
        self.exits.append((self.label, code, pc, n, stores, bbase, sbase))
        self.emit("br label %exit")

    def region_writeback(self) -> list[str]:
        """(Region) the shared exit's write-back: every register the region writes."""
        out = []
        for r in sorted(self.dirty):
            out.append(f"  %wx{r} = load i64, ptr %ax{r}")
            out.append(f"  store i64 %wx{r}, ptr {self.state_ptr(S.X + 8 * r, out)}")
        for r in sorted(self.fdirty):
            out.append(f"  %wf{r} = load i64, ptr %af{r}")
            out.append(f"  store i64 %wf{r}, ptr {self.state_ptr(S.F + 8 * r, out)}")
        if self.fs_dirty:
            pfs = self.state_ptr(S.FSDIRTY, out)
            out += [f"  %wfs0 = load i64, ptr {pfs}",
                    "  %wfs1 = load i64, ptr %afsd",
                    "  %wfs2 = or i64 %wfs0, %wfs1",
                    f"  store i64 %wfs2, ptr {pfs}"]
        return out

    def charge(self, k: int) -> None:
        """(Region) the segment ends before instruction ``k`` on this path: add its
        instructions and stores to the retired and store counts."""
        ret = self.op("load i64, ptr %aret")
        self.emit(f"store i64 {self.op(f'add i64 {ret}, {k - self.seg_k}')}, ptr %aret")
        if self.stores:
            nst = self.op("load i64, ptr %anst")
            self.emit(f"store i64 {self.op(f'add i64 {nst}, {self.stores}')}, ptr %anst")

    def enter_segment(self, k: int, pc: int) -> None:
        """(Region) instruction ``k`` is a branch target: fall into its label (if the
        code before it goes on), and start a segment there. Registers written after
        it reach it again by a backward branch, and are written back from then on."""
        label = f"L{pc:x}"
        if self.reachable:
            self.charge(k)
            self.emit(f"br label %{label}")
        self.start_label(label)
        self.seg_k = k
        self.stores = 0
        self.fp_checked = False  # the check earlier does not dominate this
        self.reachable = True
        if pc in self.back:
            for _, d in self.insns[k:]:
                if d.rd and _writes_x(d):
                    self.rd(d.rd)
                    self.dirty.add(d.rd)
                if _writes_f(d):
                    self.frd(d.rd)
                    self.fdirty.add(d.rd)
                    self.fs_dirty = True

    def sext32(self, v: str) -> str:
        t = self.op(f"trunc i64 {v} to i32")
        return self.op(f"sext i32 {t} to i64")

    def spin_yield(self, k: int, npc: int) -> None:
        """After spin-wait hint ``k`` (isa.decoder.spin_hint): on a machine whose harts
        take turns, hand the rest of the slice over (as the interpreter does); else go
        on."""
        y = self.op(f"icmp ne i64 {self.field(S.YIELD)}, 0")
        self.leave_after_if(y, S.EXIT_YIELD, k, npc, "p")

    def leave_after_if(self, cond: str, code: int, k: int, npc: int, tag: str) -> None:
        """If ``cond``: leave with ``code`` after instruction k (retired; pc = npc);
        else go on with the block."""
        go, out = f"{tag}{k}c", f"{tag}{k}x"
        self.emit(f"br i1 {cond}, label %{out}, label %{go}")
        self.start_label(out)
        self.exit(code, _c(npc), k + 1)
        self.start_label(go)

    # -- instructions --------------------------------------------------------------------
    def insn(self, k: int, pc: int, d: Decoded, last: bool) -> bool:
        """Emit instruction k; returns False when it ended the block itself."""
        name = d.name
        npc = (pc + d.length) & M64
        imm = d.imm & M64
        if name in spec.ALU:
            ua, ub = spec.operands(name)
            a = self.rd(d.rs1) if ua else ""
            b = self.rd(d.rs2) if ub else ""
            self.wr(d.rd, spec.llvm(name, self.op, a, b, _c(imm)))
            if name == "div" and spin_hint(d.raw):
                self.spin_yield(k, npc)  # Linux's cpu_relax(): as a PAUSE, below
        elif name in FP_NAMES:
            self.fp(k, pc, d)
        elif name in AMO_NAMES:
            self.atomic(k, pc, d)
        elif reads_time(d):
            self.rdtime(k, pc, d)
        elif name in CSR_SIE:
            return self.sstatus(k, pc, d)
        elif name == "lui":
            self.wr(d.rd, _c(imm))
        elif name == "auipc":
            self.wr(d.rd, _c(pc + imm))
        elif name in ("fence", "fence.i"):
            if d.raw == PAUSE:
                self.spin_yield(k, npc)
        elif name == "jal":
            self.wr(d.rd, _c(npc))
            self.jump((pc + imm) & M64, k + 1, pc)
            return False
        elif name == "jalr":
            a = self.rd(d.rs1)
            t = self.op(f"add i64 {a}, {_c(imm)}")
            t = self.op(f"and i64 {t}, -2")
            self.wr(d.rd, _c(npc))
            self.exit(S.EXIT_CONTINUE, t, k + 1)
            return False
        elif name in BRANCHES:
            a, b = self.rd(d.rs1), self.rd(d.rs2)
            c = spec.llvm(name, self.op, a, b)
            taken, fall = f"k{k}t", f"k{k}f"
            self.emit(f"br i1 {c}, label %{taken}, label %{fall}")
            self.start_label(taken)
            self.jump((pc + imm) & M64, k + 1, pc)
            self.start_label(fall)
            if self.region and not last:
                return True  # on to the next instruction, in the same segment
            self.exit(S.EXIT_CONTINUE, _c(npc), k + 1)
            return False
        elif name in LOADS:
            bits, ext = LOADS[name]
            a = self.rd(d.rs1)
            addr = self.address(a, imm)
            ptr = self.access(k, pc, addr, bits // 8, store=False)
            v = self.op(f"load i{bits}, ptr {ptr}, align 1")
            if ext:
                v = self.op(f"{ext} i{bits} {v} to i64")
            self.wr(d.rd, v)
        elif name in STORES:
            bits = STORES[name]
            a, b = self.rd(d.rs1), self.rd(d.rs2)
            addr = self.address(a, imm)
            ptr = self.access(k, pc, addr, bits // 8, store=True)
            if bits < 64:
                b = self.op(f"trunc i64 {b} to i{bits}")
            self.emit(f"store i{bits} {b}, ptr {ptr}, align 1")
        else:  # pragma: no cover - supported() guards this
            raise AssertionError(name)
        return True

    def atomic(self, k: int, pc: int, d: Decoded) -> None:
        base, _, width = d.name.partition(".")
        bits = 32 if width == "w" else 64
        ty = f"i{bits}"
        addr = self.rd(d.rs1)
        presv = self.op(f"getelementptr i8, ptr %s, i64 {S.RESV}")
        if base == "lr":
            ptr = self.access(k, pc, addr, bits // 8, store=False, atomic=True)
            v = self.op(f"load {ty}, ptr {ptr}, align 1")
            self.emit(f"store i64 {self.guest_pa(ptr)}, ptr {presv}")
            self.wr(d.rd, self.op(f"sext {ty} {v} to i64") if bits == 32 else v)
            return
        if base == "sc":
            ptr = self.access(k, pc, addr, bits // 8, store=True, atomic=True)
            resv = self.op(f"load i64, ptr {presv}")
            ok = self.op(f"icmp eq i64 {resv}, {self.guest_pa(ptr)}")
            yes, join = f"k{k}y", f"k{k}j"
            src = self.rd(d.rs2)
            if bits == 32:
                src = self.op(f"trunc i64 {src} to i32")
            self.emit(f"br i1 {ok}, label %{yes}, label %{join}")
            self.start_label(yes)
            self.emit(f"store {ty} {src}, ptr {ptr}, align 1")
            self.emit(f"br label %{join}")
            self.start_label(join)
            self.emit(f"store i64 -1, ptr {presv}")
            self.wr(d.rd, self.op(f"select i1 {ok}, i64 0, i64 1"))
            return
        ptr = self.access(k, pc, addr, bits // 8, store=True, atomic=True)
        old = self.op(f"load {ty}, ptr {ptr}, align 1")
        m = self.op(f"sext {ty} {old} to i64") if bits == 32 else old
        new = spec.llvm(d.name, self.op, b=self.rd(d.rs2), m=m)  # isa/spec.py
        if bits == 32:
            new = self.op(f"trunc i64 {new} to i32")
        self.emit(f"store {ty} {new}, ptr {ptr}, align 1")
        self.wr(d.rd, m)

    def rdtime(self, k: int, pc: int, d: Decoded) -> None:
        """rdtime, where the hart may read the time CSR (``timeok``, as the native
        interpreter); else the block leaves before it (Python raises the fault)."""
        ok, go = f"t{k}o", f"t{k}g"
        p = self.op(f"getelementptr i8, ptr %s, i64 {S.TIMEOK}")
        allowed = self.op(f"icmp ne i64 {self.op(f'load i64, ptr {p}')}, 0")
        self.emit(f"br i1 {allowed}, label %{go}, label %{ok}")
        self.start_label(ok)
        self.exit(S.EXIT_SLOW, _c(pc), k)
        self.start_label(go)
        self.wr(d.rd, self.time_read())

    def sstatus(self, k: int, pc: int, d: Decoded) -> bool:
        """csrr sstatus, and csrr(s|c)i sstatus on SIE (local_irq_*); the value read is
        the interpreter's (FS dirty folded in, SD from FS). Setting SIE while an
        interrupt waits for it leaves the block (EXIT_IRQ) so that Python takes it."""
        npc = (pc + d.length) & M64
        bits = str(d.rs1) if d.name.endswith("i") else "0"
        pms = self.op(f"getelementptr i8, ptr %s, i64 {S.MSTATUS}")
        ms = self.op(f"load i64, ptr {pms}")
        if d.rd:
            pfs = self.op(f"getelementptr i8, ptr %s, i64 {S.FSDIRTY}")
            fsd = self.op(f"load i64, ptr {pfs}")
            dirty = self.op(f"icmp ne i64 {fsd}, 0")
            withfs = self.op(f"or i64 {ms}, {C.MSTATUS_FS}")
            m2 = self.op(f"select i1 {dirty}, i64 {withfs}, i64 {ms}")
            m3 = self.op(f"or i64 {m2}, {_c(C.MSTATUS_UXL | C.MSTATUS_SXL)}")
            fs = self.op(f"and i64 {m3}, {C.MSTATUS_FS}")
            full = self.op(f"icmp eq i64 {fs}, {C.MSTATUS_FS}")
            sd = self.op(f"select i1 {full}, i64 {_c(C.MSTATUS_SD)}, i64 0")
            m4 = self.op(f"and i64 {m3}, {_c(~C.MSTATUS_SD)}")
            m5 = self.op(f"or i64 {m4}, {sd}")
            self.wr(d.rd, self.op(f"and i64 {m5}, {_c(C.SSTATUS_MASK)}"))
        if bits == "0":
            return True
        if CSR_SIE[d.name] == "clear":
            inv = self.op(f"xor i64 {bits}, -1")
            new = self.op(f"and i64 {ms}, {inv}")
            self.emit(f"store i64 {new}, ptr {pms}")
        else:
            new = self.op(f"or i64 {ms}, {bits}")
            self.emit(f"store i64 {new}, ptr {pms}")
            sie = self.op(f"and i64 {new}, {C.MSTATUS_SIE}")
            on = self.op(f"icmp ne i64 {sie}, 0")
            want = self.op(f"icmp ne i64 {self.field(S.IRQSIE)}, 0")
            irq = self.op(f"and i1 {on}, {want}")
            self.leave_after_if(irq, S.EXIT_IRQ, k, npc, "c")
        return True

    def guest_pa(self, ptr: str) -> str:
        """Guest physical address of a host pointer into guest RAM."""
        host = self.op(f"ptrtoint ptr {self.field(S.RAM_HOST, 'ptr')} to i64")
        h = self.op(f"ptrtoint ptr {ptr} to i64")
        off = self.op(f"sub i64 {h}, {host}")
        return self.op(f"add i64 {off}, {RAM_BASE}")

    def jump(self, target: int, n: int, pc: int = -1) -> None:
        """Go to ``target`` having retired ``n`` (instruction ``n - 1`` at ``pc`` jumps):
        a branch within a region, a loop's back edge, or an exit."""
        if self.region and target in self.targets:
            self.charge(n)
            label = f"L{target:x}"
            if target <= pc:  # backward: bounded by the budget
                ret = self.op("load i64, ptr %aret")
                left = self.op(f"sub i64 %bud0, {ret}")
                go = self.op(f"icmp sgt i64 {left}, 0")
                out = f"j{n}o{self.n}"
                self.emit(f"br i1 {go}, label %{label}, label %{out}")
                self.start_label(out)
                self.exit(S.EXIT_CONTINUE, _c(target), n, charged=True)
            else:
                self.emit(f"br label %{label}")
            return
        if target == self.start and self.loop:
            # The back edge: budget and store count stay in registers (header phis),
            # written to the state once, on the way out.
            b2 = self.op(f"sub i64 %hbud, {n}")
            st2 = self.op(f"add i64 %hst, {self.stores}")
            c = self.op(f"icmp sgt i64 {b2}, 0")
            out = f"L{self.n}"
            latch = self.label
            self.latch = (latch, dict(self.x), dict(self.f), b2, st2)
            self.emit(f"br i1 {c}, label %i0, label %{out}")
            self.start_label(out)
            self.exit_base = (b2, st2)
            self.exit(S.EXIT_CONTINUE, _c(target), 0, 0)
        else:
            self.exit(S.EXIT_CONTINUE, _c(target), n)

    def access(self, k: int, pc: int, addr: str, size: int, store: bool,
               atomic: bool = False) -> str:
        """Host pointer for a guest access, or the slow exit before instruction k. A
        misaligned load or store within a page is done here too (the host does it, as
        pyhv's hart does misaligned accesses in hardware, as QEMU's): C code reading
        words at byte offsets (hashes, packet and file parsers) would otherwise leave
        native code at each. An atomic (``atomic``) must be aligned (Python raises)."""
        fast, slow = f"m{k}f", f"m{k}s"
        group = None if atomic else self.groups.get(k)
        if group is not None:
            return self.group_access(k, pc, addr, store, group)
        aligned = fits = "true"
        if size > 1:
            low = self.op(f"and i64 {addr}, {size - 1}")
            aligned = self.op(f"icmp eq i64 {low}, 0")
            if atomic:
                fits = aligned
            else:
                page_off = self.op(f"and i64 {addr}, 4095")
                fits = self.op(f"icmp ule i64 {page_off}, {4096 - size}")
        if self.translated:
            _vpn, ent, _tagp, hit = self.tlb_probe(addr, store)
            ok = self.op(f"and i1 {hit}, {fits}")
            self.emit(f"br i1 {ok}, label %{fast}, label %{slow}")
            # A miss walks the page tables natively (the refill behind the state's
            # pointer); only what that cannot do leaves for Python. (A store the refill
            # lets through may be one into a page with code, whose granule it checked:
            # aligned only.)
            self.start_label(slow)
            fn = self.field(S.REFILL, "ptr")
            got = self.op(f"call i1 {fn}(ptr %s, i64 {addr}, i64 {size if store else 0})")
            ok2 = self.op(f"and i1 {got}, {aligned if store else fits}")
            self.emit(f"br i1 {ok2}, label %{fast}, label %{slow}x")
            self.slow_exit(f"{slow}x", addr, store, k, pc)
            self.start_label(fast)
            host = self.op(f"add i64 {addr}, {self.tlb_addend(ent)}")
            return self.op(f"inttoptr i64 {host} to ptr")
        # (an add of -RAM_BASE: a 32-bit immediate, where a sub of RAM_BASE is not; the
        # quick tier has no pass that folds what is left out here)
        off = self.op(f"add i64 {addr}, {-RAM_BASE}")
        lim = self.field(S.RAM_SIZE)
        if size > 1:
            lim = self.op(f"sub i64 {lim}, {size - 1}")
        inr = self.op(f"icmp ult i64 {off}, {lim}")
        # (RAM is one host mapping: a load may cross pages; a store checks its pages' code)
        ok = self.op(f"and i1 {inr}, {fits}") if atomic and fits != "true" else inr
        if store:
            chk = f"m{k}c"
            if fits == "true" or atomic:
                self.emit(f"br i1 {ok}, label %{chk}, label %{slow}")
            else:  # across two pages: the second must hold no code (the first is checked)
                cross, inr2 = f"m{k}x", f"m{k}r"
                self.emit(f"br i1 {ok}, label %{inr2}, label %{slow}")
                self.start_label(inr2)
                self.emit(f"br i1 {fits}, label %{chk}, label %{cross}")
                self.start_label(cross)
                last = self.op(f"lshr i64 {self.op(f'add i64 {off}, {size - 1}')}, 12")
                mp = self.op(f"getelementptr i8, ptr {self.field(S.CODEMAP, 'ptr')}, i64 {last}")
                clean = self.op(f"icmp eq i8 {self.op(f'load i8, ptr {mp}')}, 0")
                self.emit(f"br i1 {clean}, label %{chk}, label %{slow}")
            self.start_label(chk)
            self.lines.extend(code_granule_check(
                off, self.field(S.CODEMAP, "ptr"), self.field(S.GRANULEFN, "ptr"), fast, slow,
                f"m{k}g", self.t, aligned))
        elif size in (4, 8) and not atomic and pc in self.clock:
            # outside RAM: the CLINT's mtime register (a program timing itself) is read
            # without leaving (pyhv_clock_load); any other device leaves. Only at a load
            # seen reading mtime: the call and its joins in every 4- and 8-byte load
            # took ~10% of the code generator's time (sort's batches, quick and
            # optimised alike) for the few loads that ever read the clock.
            dev, clk, join = f"m{k}d", f"m{k}t", f"m{k}j"
            self.emit(f"br i1 {ok}, label %{fast}, label %{dev}")
            self.start_label(dev)
            fn = self.field(S.CLOCKFN, "ptr")  # (_clock_load_ir)
            hit = self.op(f"call i1 {fn}(ptr %s, i64 {addr}, i64 {size})")
            self.emit(f"br i1 {hit}, label %{clk}, label %{slow}")
            self.start_label(clk)
            val = self.state_ptr(S.MMIOVAL)
            self.emit(f"br label %{join}")
            self.slow_exit(slow, addr, store, k, pc)
            self.start_label(fast)
            ram = self.ram_pointer(off)
            self.emit(f"br label %{join}")
            self.start_label(join)
            return self.op(f"phi ptr [ {ram}, %{fast} ], [ {val}, %{clk} ]")
        else:
            self.emit(f"br i1 {ok}, label %{fast}, label %{slow}")
        self.slow_exit(slow, addr, store, k, pc)
        self.start_label(fast)
        return self.ram_pointer(off)

    def ram_pointer(self, off: str) -> str:
        """The host pointer to RAM offset ``off`` (bare mode: RAM is one host mapping)."""
        return self.op(f"getelementptr i8, ptr {self.field(S.RAM_HOST, 'ptr')}, i64 {off}")

    def group_access(self, k: int, pc: int, addr: str, store: bool,
                     group: tuple[int, int, int, int]) -> str:
        """Host pointer for member ``k`` of an access group: the group's first member
        checks the bytes all of them touch, once (bare mode: in RAM and, for stores, on
        pages that hold no code; translated: :meth:`translated_group`), and leaves before
        itself if they fail; the others just access."""
        first, lo, span, members = group
        if self.translated:
            if k == first:
                self.group_adds[first] = self.translated_group(k, pc, addr, store, group)
            host = self.op(f"add i64 {addr}, {self.group_adds[first]}")
            return self.op(f"inttoptr i64 {host} to ptr")
        off = self.op(f"add i64 {addr}, {-RAM_BASE}")
        if k == first:
            fast, slow = f"m{k}f", f"m{k}s"
            imm = _signed(self.insns[k][1].imm)
            low = off if lo == imm else self.op(f"add i64 {off}, {lo - imm}")
            lim = self.op(f"sub i64 {self.field(S.RAM_SIZE)}, {span - 1}")
            inr = self.op(f"icmp ult i64 {low}, {lim}")
            if store:
                chk = f"m{k}c"
                self.emit(f"br i1 {inr}, label %{chk}, label %{slow}")
                self.start_label(chk)
                cmap = self.field(S.CODEMAP, "ptr")
                p0 = self.op(f"lshr i64 {low}, 12")
                p1 = self.op(f"lshr i64 {self.op(f'add i64 {low}, {span - 1}')}, 12")
                c0 = self.op(f"load i8, ptr {self.op(f'getelementptr i8, ptr {cmap}, i64 {p0}')}")
                c1 = self.op(f"load i8, ptr {self.op(f'getelementptr i8, ptr {cmap}, i64 {p1}')}")
                clean = self.op(f"icmp eq i8 {self.op(f'or i8 {c0}, {c1}')}, 0")
                near = f"m{k}q"
                self.emit(f"br i1 {clean}, label %{fast}, label %{near}")
                # a page that holds code: the group goes on natively if none of the
                # 8-byte granules its stores span does (the runtime's pyhv_range_clear,
                # as a lone store asks pyhv_granule_clear); else Python does the stores
                self.start_label(near)
                fn = self.field(S.RANGEFN, "ptr")
                ok = self.op(f"call i1 {fn}(ptr %s, i64 {low}, i64 {span}, i64 {members})")
                self.emit(f"br i1 {ok}, label %{fast}, label %{slow}")
            else:
                self.emit(f"br i1 {inr}, label %{fast}, label %{slow}")
            self.slow_exit(slow, addr, store, k, pc)
            self.start_label(fast)
        return self.ram_pointer(off)

    def tlb_probe(self, addr: str, store: bool) -> tuple[str, str, str, str]:
        """(vpn, entry, tag pointer, hit) of ``addr``'s soft-TLB entry: its read tag,
        or with ``store`` its write tag, asked for ``addr``'s page."""
        vpn = self.op(f"lshr i64 {addr}, 12")
        idx = self.op(f"and i64 {vpn}, {S.NTLB - 1}")
        off = self.op(f"mul i64 {idx}, {S.TLB_ENTRY}")
        ent = self.op(f"getelementptr i8, ptr {self.field(S.TLBP, 'ptr')}, i64 {off}")
        tagp = self.op(f"getelementptr i8, ptr {ent}, i64 {8 if store else 0}")
        hit = self.op(f"icmp eq i64 {self.op(f'load i64, ptr {tagp}')}, {vpn}")
        return vpn, ent, tagp, hit

    def tlb_addend(self, ent: str) -> str:
        """A soft-TLB entry's host addend (host address = guest virtual + it)."""
        return self.op(f"load i64, ptr {self.op(f'getelementptr i8, ptr {ent}, i64 16')}")

    def translated_group(self, k: int, pc: int, addr: str, store: bool,
                         group: tuple[int, int, int, int]) -> str:
        """(Translated) the check of a group whose first member is ``k``: its bytes on
        one page, that page's soft-TLB entry allowing the access (refilled natively on
        a miss, as a lone access's is), and for stores to a page that holds code, none of
        the granules the group spans holding any (pyhv_range_clear). Returns the entry's
        host addend, which every member adds to its address."""
        _first, lo, span, members = group
        fast, slow, miss, again = f"m{k}f", f"m{k}s", f"m{k}m", f"m{k}a"
        imm = _signed(self.insns[k][1].imm)
        low = addr if lo == imm else self.op(f"add i64 {addr}, {lo - imm}")
        last = self.op(f"add i64 {low}, {span - 1}")
        same = self.op(f"icmp ult i64 {self.op(f'xor i64 {low}, {last}')}, 4096")
        vpn, ent, tagp, hit = self.tlb_probe(low, store)
        self.emit(f"br i1 {self.op(f'and i1 {hit}, {same}')}, label %{fast}, label %{miss}")
        # a miss (on one page only): refilled natively as for a load, then the entry is
        # asked again. (A store's refill has effects a group must not have before its
        # first store leaves: it takes the console UART's next transmit slot; a load's
        # has none, and fills a writable, dirty page's write tag too.)
        self.start_label(miss)
        self.emit(f"br i1 {same}, label %{again}, label %{slow}")
        self.start_label(again)
        fn = self.field(S.REFILL, "ptr")
        self.op(f"call i1 {fn}(ptr %s, i64 {low}, i64 0)")
        tag2 = self.op(f"load i64, ptr {tagp}")
        hit2 = self.op(f"icmp eq i64 {tag2}, {vpn}")
        if store:
            # a page that holds code keeps a write tag of vpn | CODE_TAG: the group goes
            # on if none of the granules it spans holds any
            near = f"m{k}q"
            self.emit(f"br i1 {hit2}, label %{fast}, label %{near}")
            self.start_label(near)
            code = self.op(f"icmp eq i64 {tag2}, {self.op(f'or i64 {vpn}, {S.CODE_TAG}')}")
            rng = f"m{k}r"
            self.emit(f"br i1 {code}, label %{rng}, label %{slow}")
            self.start_label(rng)
            add = self.tlb_addend(ent)
            host = self.op(f"add i64 {low}, {add}")
            ram = self.op(f"ptrtoint ptr {self.field(S.RAM_HOST, 'ptr')} to i64")
            poff = self.op(f"sub i64 {host}, {ram}")
            rfn = self.field(S.RANGEFN, "ptr")
            ok = self.op(f"call i1 {rfn}(ptr %s, i64 {poff}, i64 {span}, i64 {members})")
            self.emit(f"br i1 {ok}, label %{fast}, label %{slow}")
        else:
            self.emit(f"br i1 {hit2}, label %{fast}, label %{slow}")
        self.slow_exit(slow, addr, store, k, pc)
        self.start_label(fast)
        return self.tlb_addend(ent)

    def slow_exit(self, label: str, addr: str, store: bool, k: int, pc: int) -> None:
        self.start_label(label)
        self.emit(f"store i64 {addr}, ptr {self.state_ptr(S.EXIT_VADDR)}")
        self.emit(f"store i64 {2 if store else 1}, ptr {self.state_ptr(S.EXIT_ACCESS)}")
        self.exit(S.EXIT_SLOW, _c(pc), k)

    # -- the function ----------------------------------------------------------------------
    def build(self) -> str:
        if self.loop:
            # Registers the body writes get a phi at the loop header: (value at entry,
            # value at the back edge). Their entry values are loaded in the prologue.
            xw = sorted({d.rd for _, d in self.insns if d.rd and _writes_x(d)})
            fw = sorted({d.rd for _, d in self.insns if _writes_f(d)})
            for r in xw:
                self.rd(r)
                self.x[r] = f"%hx{r}"
                self.dirty.add(r)
            for r in fw:
                self.frd(r)
                self.f[r] = f"%hf{r}"
                self.fdirty.add(r)
        last_pc, last_d = self.insns[-1]
        ended = False
        for k, (pc, d) in enumerate(self.insns):
            if self.region:
                if pc in self.targets:
                    self.enter_segment(k, pc)
                elif not self.reachable:
                    continue  # only reached from outside (its own block then)
            if not self.insn(k, pc, d, k == len(self.insns) - 1):
                if self.region:
                    self.reachable = False
                    continue
                ended = True
                break
            if d.name in STORES or d.name in FP_STORES:
                self.stores += 1
        if not ended and self.reachable:
            self.exit(S.EXIT_CONTINUE, _c(last_pc + last_d.length), len(self.insns))
        # (the shared exit first: it may add the state pointers it uses to the prologue)
        exit_lines = self.shared_exit()
        out = [f"define {BLOCK_CC} i32 @{self.name}(ptr noalias %s) #0 {{", "entry:"]
        if self.region:
            out += ["  %aret = alloca i64", "  store i64 0, ptr %aret",
                    "  %anst = alloca i64", "  store i64 0, ptr %anst"]
            if self.fs_dirty or any(fs for _, fs in self.written):
                out += ["  %afsd = alloca i64", "  store i64 0, ptr %afsd"]
        out.extend(self.prologue)
        if self.loop or self.region:
            out.append(f"  %pbud0 = getelementptr i8, ptr %s, i64 {S.BUDGET}")
            out.append("  %bud0 = load i64, ptr %pbud0")
        if self.counted and not self.loop:
            out.extend(self.count_entry())
        else:
            out.append("  br label %i0")
        out.append("i0:")
        if self.loop:
            latch, lx, lf, lbud, lst = self.latch
            out.append(f"  %hbud = phi i64 [ %bud0, %entry ], [ {lbud}, %{latch} ]")
            out.append(f"  %hst = phi i64 [ 0, %entry ], [ {lst}, %{latch} ]")
            for r in xw:
                out.append(f"  %hx{r} = phi i64 [ %ix{r}, %entry ], [ {lx[r]}, %{latch} ]")
            for r in fw:
                out.append(f"  %hf{r} = phi i64 [ %if{r}, %entry ], [ {lf[r]}, %{latch} ]")
        out.extend(self.lines)
        out.extend(exit_lines)
        out.append("}")
        return "\n".join(sorted(self.globals) + out)

    def shared_exit(self) -> list[str]:
        """The exit block the slow paths (and a region's other exits) share."""
        out: list[str] = []
        if self.exits:
            out.append("exit:")
            codes = ", ".join(f"[ {e[1]}, %{e[0]} ]" for e in self.exits)
            pcs = ", ".join(f"[ {e[2]}, %{e[0]} ]" for e in self.exits)
            ns = ", ".join(f"[ {e[3]}, %{e[0]} ]" for e in self.exits)
            sts = ", ".join(f"[ {e[4]}, %{e[0]} ]" for e in self.exits)
            out.append(f"  %ec = phi i32 {codes}")
            out.append(f"  %epc = phi i64 {pcs}")
            out.append(f"  %en = phi i64 {ns}")
            out.append(f"  %es0 = phi i64 {sts}")
            bb = sb = ""
            if self.loop:  # what earlier iterations did (header phis), per exit
                bases = ", ".join(f"[ {e[5]}, %{e[0]} ]" for e in self.exits)
                out.append(f"  %b0 = phi i64 {bases}")
                sbases = ", ".join(f"[ {e[6]}, %{e[0]} ]" for e in self.exits)
                out.append(f"  %sb0 = phi i64 {sbases}")
                bb, sb = "%b0", "%sb0"
            if self.region:
                out.extend(self.region_writeback())
            out.extend(self.tail("%ec", "%epc", "%en", "%es0", bb, sb, ""))
        return out

    def tail(self, code: str, pc: str, n: str, stores: str, bbase: str, sbase: str,
             x: str) -> list[str]:
        """The way out after the registers are written back: count the stores, store
        pc, charge ``n`` instructions to the budget (on top of ``bbase``, a loop's
        earlier iterations), count the block's heat (quick blocks), then chain or
        return ``code``. ``x`` makes its labels and values unique in the function."""
        out = []
        if stores != "0" or sbase:
            st = f"%es{x}"
            out.append(f"{st} = add i64 {stores}, {sbase or 0}")
            pst = self.state_ptr(S.STORES, out)
            out.append(f"%st0{x} = load i64, ptr {pst}")
            out.append(f"%st1{x} = add i64 %st0{x}, {st}")
            out.append(f"store i64 %st1{x}, ptr {pst}")
        out.append(f"store i64 {pc}, ptr {self.state_ptr(S.PC, out)}")
        pb = self.state_ptr(S.BUDGET, out)
        if not bbase:
            bbase = f"%b0{x}"
            out.append(f"{bbase} = load i64, ptr {pb}")
        out.append(f"%b1{x} = sub i64 {bbase}, {n}")
        out.append(f"store i64 %b1{x}, ptr {pb}")
        if self.counted and self.loop:
            self.count(x, out)
        self.chain(code, pc, x, out)
        return out

    def count_entry(self) -> list[str]:
        """(A quick block that is not a loop) count its instructions at each entry, the
        whole block's as if it ran through: once per block rather than at each of its
        exits (a sixth of a quick block's IR went to counting at 2-5 exits). Crossing
        OPT_AFTER, or another RECOUNT, it leaves before its first instruction with
        EXIT_OPT, as :meth:`count` does; Python comes back to it at once."""
        idx = counter_index(self.name)
        return [
            f"  %pcnt = getelementptr i8, ptr %s, i64 {S.COUNTERS}",
            "  %hcb = load ptr, ptr %pcnt",
            f"  %hcp = getelementptr i64, ptr %hcb, i64 {idx}",
            "  %hc0 = load i64, ptr %hcp",
            f"  %hc1 = add i64 %hc0, {len(self.insns)}",
            "  store i64 %hc1, ptr %hcp",
            f"  %hwas = icmp ult i64 %hc0, {OPT_AFTER}",
            f"  %hnow = icmp uge i64 %hc1, {OPT_AFTER}",
            "  %hcross = and i1 %hwas, %hnow",
            "  %hbits = xor i64 %hc0, %hc1",
            f"  %hagain = icmp uge i64 %hbits, {RECOUNT}",
            "  %hask = or i1 %hcross, %hagain",
            "  br i1 %hask, label %hot, label %i0",
            "hot:",
            f"  %pxv = getelementptr i8, ptr %s, i64 {S.EXIT_VADDR}",
            f"  store i64 {_c(self.start)}, ptr %pxv",
            f"  ret i32 {S.EXIT_OPT}",
        ]

    def count(self, x: str, out: list[str]) -> None:
        """Add the instructions this entry ran (loop iterations included) to the
        block's counter (in the machine's array, shared by every hart that runs it);
        on crossing OPT_AFTER, leave with EXIT_OPT (start pc in exit_vaddr): Python
        has it compiled again, optimised. Every ``RECOUNT`` instructions after that it
        asks again, for the harts of another machine still running it quick."""
        # (a counter in an array the state points to, not a global of the module: LLVM's
        # fast instruction selector gives up on a store to a global in the large code
        # model, and code generation took 15% longer; blocks whose keys share an index
        # share a counter, which only makes one of them ask a little early)
        idx = counter_index(self.name)
        c = f"%hcp{x}"
        counters = self.state_ptr(S.COUNTERS, out)
        out += [
            f"%hcb{x} = load ptr, ptr {counters}",
            f"{c} = getelementptr i64, ptr %hcb{x}, i64 {idx}",
            f"%hu{x} = sub i64 %bud0, %b1{x}",
            f"%hc0{x} = load i64, ptr {c}",
            f"%hc1{x} = add i64 %hc0{x}, %hu{x}",
            f"store i64 %hc1{x}, ptr {c}",
            f"%hwas{x} = icmp ult i64 %hc0{x}, {OPT_AFTER}",
            f"%hnow{x} = icmp uge i64 %hc1{x}, {OPT_AFTER}",
            f"%hcross{x} = and i1 %hwas{x}, %hnow{x}",
            f"%hbits{x} = xor i64 %hc0{x}, %hc1{x}",
            f"%hagain{x} = icmp uge i64 %hbits{x}, {RECOUNT}",
            f"%hask{x} = or i1 %hcross{x}, %hagain{x}",
            f"br i1 %hask{x}, label %hot{x}, label %heated{x}",
            f"hot{x}:",
        ]
        out.append(f"store i64 {_c(self.start)}, ptr {self.state_ptr(S.EXIT_VADDR, out)}")
        out += [
            f"ret i32 {S.EXIT_OPT}",
            f"heated{x}:",
        ]

    def chain(self, code: str, pc: str, x: str, out: list[str]) -> None:
        """Go on to the next block without the dispatcher when it is compiled and
        linked (its pc in the dispatch table) and budget is left: a tail call through
        the table, from this exit's own call site. A translated block chains only
        within its own page (that page's mapping was checked when it was entered;
        another page needs the dispatcher's I-TLB check). Only an exit that goes on
        (``EXIT_CONTINUE``, its own tail) chains; ``pc`` is a constant or a value (jalr).
        The shared exit's codes (slow paths, traps) return to the dispatcher."""
        const_pc = pc.lstrip("-").isdigit()
        if code != str(S.EXIT_CONTINUE):  # the shared exit's ways out: to Python
            out.append(f"ret i32 {code}")
            return
        if const_pc and self.translated and (int(pc) ^ self.start) & M64 >= 4096:
            out.append(f"ret i32 {code}")  # another page: the dispatcher checks its mapping
            return
        out.append(f"%left{x} = icmp sgt i64 %b1{x}, 0")
        go = f"%left{x}"
        if self.translated and not const_pc:
            out += [
                f"%same{x} = xor i64 {pc}, {_c(self.start)}",
                f"%samep{x} = icmp ult i64 %same{x}, 4096",
                f"%try2{x} = and i1 {go}, %samep{x}",
            ]
            go = f"%try2{x}"
        out.append(f"br i1 {go}, label %chain{x}, label %leave{x}")
        out.append(f"chain{x}:")
        out.append(f"%tab{x} = load ptr, ptr {self.state_ptr(S.TABLE, out)}")
        if const_pc:
            i = S.slot(int(pc) & M64)
            tag = str(int(pc) | 1)  # state.table_tag
            out.append(f"%ce0{x} = getelementptr i8, ptr %tab{x}, i64 {32 * i}")
            out.append(f"%ce1{x} = getelementptr i8, ptr %tab{x}, i64 {32 * (i ^ 1)}")
        else:
            tag = f"%ctag{x}"
            out += [
                f"{tag} = or i64 {pc}, 1",
                f"%ch{x} = lshr i64 {pc}, 1",
                f"%ci{x} = and i64 %ch{x}, {S.NDISPATCH - 1}",
                f"%co{x} = shl i64 %ci{x}, 5",
                f"%ce0{x} = getelementptr i8, ptr %tab{x}, i64 %co{x}",
                f"%co1{x} = xor i64 %co{x}, 32",
                f"%ce1{x} = getelementptr i8, ptr %tab{x}, i64 %co1{x}",
            ]
        out += [
            f"%ct0{x} = load i64, ptr %ce0{x}",
            f"%chit0{x} = icmp eq i64 %ct0{x}, {tag}",
            f"br i1 %chit0{x}, label %next{x}, label %way2{x}",
            f"way2{x}:",
            f"%ct1{x} = load i64, ptr %ce1{x}",
            f"%chit1{x} = icmp eq i64 %ct1{x}, {tag}",
            f"br i1 %chit1{x}, label %next{x}, label %leave{x}",
            f"next{x}:",
            f"%ce{x} = phi ptr [ %ce0{x}, %chain{x} ], [ %ce1{x}, %way2{x} ]",
            f"%cfp{x} = getelementptr i8, ptr %ce{x}, i64 8",
            f"%cfn{x} = load ptr, ptr %cfp{x}",
            f"%cr{x} = musttail call {BLOCK_CC} i32 %cfn{x}(ptr %s)",
            f"ret i32 %cr{x}",
            f"leave{x}:",
            f"ret i32 {code}",
        ]


def _writes_x(d: Decoded) -> bool:
    n = d.name
    if n in FP_NAMES:
        return n in _FP_TO_X
    return n not in STORES and n not in BRANCHES and n not in ("fence", "fence.i")


def _writes_f(d: Decoded) -> bool:
    n = d.name
    return n in FP_NAMES and n not in _FP_TO_X and n not in FP_STORES


def block_ir(name: str, start: int, insns: list[tuple[int, Decoded]], translated: bool,
             counted: bool = False, clock: Collection[int] = ()) -> str:
    """LLVM IR for one block (a function named ``name``). The caller chose the
    instructions with :func:`supported` (sstatus accesses only for S-mode blocks).
    ``counted``: the block counts the instructions it runs and asks to be compiled
    again, optimised, after OPT_AFTER (see :meth:`_Block.count`). ``clock``: the pcs
    of its loads that read the CLINT's mtime (engine.py marks them at their first
    slow exit): only those read it natively."""
    return _Block(name, start, insns, translated, counted, clock).build()


_DECLS = [
    f"declare {t} @llvm.experimental.constrained.{op}.{w}({t}, {t}, metadata, metadata)"
    for op in ("fadd", "fsub", "fmul", "fdiv") for t, w in (("double", "f64"), ("float", "f32"))
] + [
    "declare float @llvm.experimental.constrained.sqrt.f32(float, metadata, metadata)",
    "declare float @llvm.experimental.constrained.rint.f32(float, metadata, metadata)",
    "declare float @llvm.experimental.constrained.fma.f32(float, float, float, metadata,"
    " metadata)",
    "declare i1 @llvm.experimental.constrained.fcmp.f32(float, float, metadata, metadata)",
    "declare i1 @llvm.experimental.constrained.fcmps.f32(float, float, metadata, metadata)",
    "declare i32 @llvm.experimental.constrained.fptosi.i32.f32(float, metadata)",
    "declare i64 @llvm.experimental.constrained.fptosi.i64.f32(float, metadata)",
    *(f"declare {t} @llvm.experimental.constrained.{fn}.{w}({t}, metadata)"
      for fn in ("floor", "ceil", "round") for t, w in (("double", "f64"), ("float", "f32"))),
    "declare float @llvm.experimental.constrained.sitofp.f32.i64(i64, metadata, metadata)",
    "declare float @llvm.experimental.constrained.fptrunc.f32.f64(double, metadata, metadata)",
    "declare double @llvm.experimental.constrained.fpext.f64.f32(float, metadata)",
] + [
    "declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)",
    "declare double @llvm.experimental.constrained.sqrt.f64(double, metadata, metadata)",
    "declare double @llvm.experimental.constrained.rint.f64(double, metadata, metadata)",
    "declare double @llvm.experimental.constrained.fma.f64(double, double, double, metadata,"
    " metadata)",
    "declare i1 @llvm.experimental.constrained.fcmp.f64(double, double, metadata, metadata)",
    "declare i1 @llvm.experimental.constrained.fcmps.f64(double, double, metadata, metadata)",
    "declare i32 @llvm.experimental.constrained.fptosi.i32.f64(double, metadata)",
    "declare i64 @llvm.experimental.constrained.fptosi.i64.f64(double, metadata)",
    "declare double @llvm.experimental.constrained.sitofp.f64.i64(i64, metadata, metadata)",
    "declare void @llvm.x86.sse.ldmxcsr(ptr)",
    "declare void @llvm.x86.sse.stmxcsr(ptr)",
    *spec.LLVM_DECLS,
]
HEADER = "\n".join(_DECLS) + """
attributes #0 = { nounwind strictfp "frame-pointer"="none" }
attributes #1 = { strictfp }
"""

# The soft-TLB refill: an Sv39/Sv48 walk (privileged spec 4.3.2) in native code, for the
# common case only: every PTE in RAM, valid, no reserved bits, the leaf's A bit set (and
# D for a store), permissions granted, the page in RAM. Anything else (a fault, A/D to
# set, MMIO, a store over translated code) returns 0 and Python's walk does it. A load
# fill also grants stores when the page is writable and dirty; a page holding code gets
# the write tag vpn | CODE_TAG, so each store there asks the code granule bitmap.
_PPN = (1 << 44) - 1
REFILL = f"""
; The table walk: the leaf PTE of va and 9 x its level; or, with PTE 0 (not valid), 1
; when the walk itself raises a page fault (a non-canonical va, an invalid PTE, reserved
; bits, W without R, no leaf: Mmu.walk's rules), 0 when it needs Python (a PTE outside
; RAM, no Sv39/Sv48).
define internal {{i64, i64}} @pyhv_walk(ptr %s, i64 %va) #0 {{
entry:
  %psatp = getelementptr i8, ptr %s, i64 {S.SATP}
  %satp = load i64, ptr %psatp
  %mode = lshr i64 %satp, 60
  %sv39 = icmp eq i64 %mode, {C.SATP_MODE_SV39}
  %sv48 = icmp eq i64 %mode, {C.SATP_MODE_SV48}
  %okm = or i1 %sv39, %sv48
  br i1 %okm, label %canon, label %fail
canon:
  %sh = select i1 %sv39, i64 25, i64 16
  %t1 = shl i64 %va, %sh
  %t2 = ashr i64 %t1, %sh
  %isc = icmp eq i64 %t2, %va
  br i1 %isc, label %start, label %fault
start:
  %root = and i64 %satp, {_PPN}
  %a0 = shl i64 %root, 12
  %lvl0 = select i1 %sv39, i64 2, i64 3
  %prh = getelementptr i8, ptr %s, i64 {S.RAM_HOST}
  %rh = load ptr, ptr %prh
  %prs = getelementptr i8, ptr %s, i64 {S.RAM_SIZE}
  %rs = load i64, ptr %prs
  %lim = sub i64 %rs, 7
  br label %walk
walk:
  %a = phi i64 [ %a0, %start ], [ %anext, %next ]
  %lvl = phi i64 [ %lvl0, %start ], [ %lvlm1, %next ]
  %s9 = mul i64 %lvl, 9
  %s12 = add i64 %s9, 12
  %vi = lshr i64 %va, %s12
  %vi9 = and i64 %vi, 511
  %vo = shl i64 %vi9, 3
  %pa = add i64 %a, %vo
  %off = sub i64 %pa, {RAM_BASE}
  %inram = icmp ult i64 %off, %lim
  br i1 %inram, label %rd, label %fail
rd:
  %pp = getelementptr i8, ptr %rh, i64 %off
  %pte = load i64, ptr %pp
  %v = and i64 %pte, 1
  %valid = icmp ne i64 %v, 0
  %hi = lshr i64 %pte, 54
  %nores = icmp eq i64 %hi, 0
  %rw = and i64 %pte, 6
  %wnr = icmp eq i64 %rw, 4
  %ok0 = and i1 %valid, %nores
  %ok1 = xor i1 %wnr, true
  %ok2 = and i1 %ok0, %ok1
  br i1 %ok2, label %kind, label %fault
kind:
  %rx = and i64 %pte, 10
  %isleaf = icmp ne i64 %rx, 0
  %ppn = lshr i64 %pte, 10
  %ppnm = and i64 %ppn, {_PPN}
  br i1 %isleaf, label %leaf, label %next
next:
  %last = icmp eq i64 %lvl, 0
  %anext = shl i64 %ppnm, 12
  %lvlm1 = sub i64 %lvl, 1
  br i1 %last, label %fault, label %walk
leaf:
  %r0 = insertvalue {{i64, i64}} undef, i64 %pte, 0
  %r1 = insertvalue {{i64, i64}} %r0, i64 %s9, 1
  ret {{i64, i64}} %r1
fault:
  ret {{i64, i64}} {{i64 0, i64 1}}
fail:
  ret {{i64, i64}} {{i64 0, i64 0}}
}}

; The guest physical page of a leaf (superpages: the 4 KiB page of va in it), or -1 if
; the superpage is misaligned.
define internal i64 @pyhv_leaf_pa(i64 %va, i64 %pte, i64 %s9) #0 {{
entry:
  %ppn = lshr i64 %pte, 10
  %ppnm = and i64 %ppn, {_PPN}
  %lowbits = shl i64 1, %s9
  %low = sub i64 %lowbits, 1
  %mis = and i64 %ppnm, %low
  %alok = icmp eq i64 %mis, 0
  %vpn = lshr i64 %va, 12
  %vlow = and i64 %vpn, %low
  %pg = or i64 %ppnm, %vlow
  %ppage = shl i64 %pg, 12
  %r = select i1 %alok, i64 %ppage, i64 -1
  ret i64 %r
}}

; The same, but -1 too if the page is not in RAM.
define internal i64 @pyhv_leaf_page(ptr %s, i64 %va, i64 %pte, i64 %s9) #0 {{
entry:
  %ppage = call i64 @pyhv_leaf_pa(i64 %va, i64 %pte, i64 %s9)
  %poff = sub i64 %ppage, {RAM_BASE}
  %prs = getelementptr i8, ptr %s, i64 {S.RAM_SIZE}
  %rs = load i64, ptr %prs
  %inram = icmp ult i64 %poff, %rs
  %r = select i1 %inram, i64 %ppage, i64 -1
  ret i64 %r
}}

; Fetch: the physical page number instructions at va come from, or -1 (Python decides).
define i64 @pyhv_fetch_page(ptr %s, i64 %va) #0 {{
entry:
  %w = call {{i64, i64}} @pyhv_walk(ptr %s, i64 %va)
  %pte = extractvalue {{i64, i64}} %w, 0
  %s9 = extractvalue {{i64, i64}} %w, 1
  %pip = getelementptr i8, ptr %s, i64 {S.IPRIV}
  %ipriv = load i64, ptr %pip
  %ub = and i64 %pte, 16
  %isub = icmp ne i64 %ub, 0
  %isu = icmp eq i64 %ipriv, 0
  %pok = icmp eq i1 %isu, %isub
  %axv = and i64 %pte, 73
  %axok = icmp eq i64 %axv, 73
  %ok = and i1 %pok, %axok
  br i1 %ok, label %page, label %fail
page:
  %pg = call i64 @pyhv_leaf_page(ptr %s, i64 %va, i64 %pte, i64 %s9)
  %bad = icmp eq i64 %pg, -1
  %ppn = lshr i64 %pg, 12
  %r = select i1 %bad, i64 -1, i64 %ppn
  ret i64 %r
fail:
  ret i64 -1
}}

; A store of va (RAM offset poff) into a writable page that holds code (write tag
; vpn | CODE_TAG, at %pw): true if its 8-byte granule holds no translated code (counted
; in smcok), false if Python must do it and drop the code it overlaps. A page that no
; longer holds code gets its plain write tag back.
define internal i1 @pyhv_code_store(ptr %s, i64 %poff, i64 %vpn, ptr %pw) #0 {{
entry:
  %pcm = getelementptr i8, ptr %s, i64 {S.CODEMAP}
  %cm = load ptr, ptr %pcm
  %pidx = lshr i64 %poff, 12
  %cbp = getelementptr i8, ptr %cm, i64 %pidx
  %cb = load i8, ptr %cbp
  %nocode = icmp eq i8 %cb, 0
  br i1 %nocode, label %plain, label %bits
plain:
  store i64 %vpn, ptr %pw
  ret i1 true
bits:
  %gok = call i1 @pyhv_granule_clear(ptr %s, i64 %poff)
  ret i1 %gok
}}

; The console UART's fast window: the host pointer a byte access to guest physical
; address %pa may use (%store: 0 for a load, whose size the caller checks through its
; alignment, else the store's size), or null when Python must do it. What is allowed
; is set by Python per run (uart_flags): a read of LSR returns the copy in uart_lsr (no
; side effect then); a byte written to THR takes the transmit buffer's next slot, which
; Python sends after the run, before it does anything else (nothing else the guest
; can see changes: THR is empty again at once, the THRE interrupt state is as before).
define ptr @pyhv_mmio_slot(ptr %s, i64 %pa, i64 %store) #0 {{
entry:
  %pb = getelementptr i8, ptr %s, i64 {S.UART_BASE}
  %base = load i64, ptr %pb
  %off = sub i64 %pa, %base
  %pf = getelementptr i8, ptr %s, i64 {S.UART_FLAGS}
  %fl = load i64, ptr %pf
  %isst = icmp ne i64 %store, 0
  br i1 %isst, label %tx, label %rd
rd:
  %islsr = icmp eq i64 %off, 5
  %lf = and i64 %fl, {S.UART_READ_LSR}
  %lok = icmp ne i64 %lf, 0
  %rok = and i1 %islsr, %lok
  %plsr = getelementptr i8, ptr %s, i64 {S.UART_LSR}
  %r = select i1 %rok, ptr %plsr, ptr null
  ret ptr %r
tx:
  %isthr = icmp eq i64 %off, 0
  %byte = icmp eq i64 %store, 1
  %tf = and i64 %fl, {S.UART_WRITE_THR}
  %tok = icmp ne i64 %tf, 0
  %pn = getelementptr i8, ptr %s, i64 {S.TXN}
  %n = load i64, ptr %pn
  %room = icmp ult i64 %n, {S.TXCAP}
  %t1 = and i1 %isthr, %byte
  %t2 = and i1 %t1, %tok
  %t3 = and i1 %t2, %room
  br i1 %t3, label %put, label %no
put:
  %pbuf = getelementptr i8, ptr %s, i64 {S.TXBUF}
  %buf = load ptr, ptr %pbuf
  %slot = getelementptr i8, ptr %buf, i64 %n
  %n1 = add i64 %n, 1
  store i64 %n1, ptr %pn
  ret ptr %slot
no:
  ret ptr null
}}

; The page fault an access by U-mode at va must raise (%kind: 0 fetch, 1 load, 2 store),
; as Mmu.walk decides it: its cause (12, 13 or 15), or -1 when there is none or it is not
; that simple (a PTE outside RAM, a misaligned superpage, A/D bits to set: Python).
define internal i64 @pyhv_ufault(ptr %s, i64 %va, i64 %kind) #0 {{
entry:
  %isf = icmp eq i64 %kind, 0
  %isl = icmp eq i64 %kind, 1
  %c1 = select i1 %isl, i64 13, i64 15
  %cause = select i1 %isf, i64 12, i64 %c1
  %w = call {{i64, i64}} @pyhv_walk(ptr %s, i64 %va)
  %pte = extractvalue {{i64, i64}} %w, 0
  %why = extractvalue {{i64, i64}} %w, 1
  %found = icmp ne i64 %pte, 0
  br i1 %found, label %leaf, label %failed
failed:
  %walkfault = icmp eq i64 %why, 1
  br i1 %walkfault, label %fault, label %none
leaf:
  %ub = and i64 %pte, 16
  %nou = icmp eq i64 %ub, 0
  %xb = and i64 %pte, 8
  %xok = icmp ne i64 %xb, 0
  %rb = and i64 %pte, 2
  %rok = icmp ne i64 %rb, 0
  %wb = and i64 %pte, 4
  %wok = icmp ne i64 %wb, 0
  %pms = getelementptr i8, ptr %s, i64 {S.MSTATUS}
  %ms = load i64, ptr %pms
  %mxrb = and i64 %ms, {C.MSTATUS_MXR}
  %mxr = icmp ne i64 %mxrb, 0
  %mx = and i1 %mxr, %xok
  %lok = or i1 %rok, %mx
  %ok1 = select i1 %isl, i1 %lok, i1 %wok
  %ok = select i1 %isf, i1 %xok, i1 %ok1
  %nok = xor i1 %ok, true
  %deny = or i1 %nou, %nok
  br i1 %deny, label %fault, label %none
fault:
  ret i64 %cause
none:
  ret i64 -1
}}

; Loads and stores: fill the soft-TLB entry of va; false if Python must do it. %store
; is 0 for a load, else the store's size. A device page whose access the MMIO window
; takes gets a one-access entry (see mfill).
define i1 @pyhv_refill(ptr %s, i64 %va, i64 %store) #0 {{
entry:
  %pmva = getelementptr i8, ptr %s, i64 {S.MMIOVA}
  store i64 -1, ptr %pmva
  %isst0 = icmp ne i64 %store, 0
  br i1 %isst0, label %stchk, label %walk0
stchk:
  %vpn0 = lshr i64 %va, 12
  %idx0 = and i64 %vpn0, {S.NTLB - 1}
  %eo0 = mul i64 %idx0, {S.TLB_ENTRY}
  %ptsel0 = getelementptr i8, ptr %s, i64 {S.TLBP}
  %tsel0 = load ptr, ptr %ptsel0
  %ent0 = getelementptr i8, ptr %tsel0, i64 %eo0
  %pw0 = getelementptr i8, ptr %ent0, i64 8
  %w0 = load i64, ptr %pw0
  %cvpn0 = or i64 %vpn0, {S.CODE_TAG}
  %known = icmp eq i64 %w0, %cvpn0
  br i1 %known, label %codepage, label %walk0
codepage:
  %pad0 = getelementptr i8, ptr %ent0, i64 16
  %add0 = load i64, ptr %pad0
  %host0 = add i64 %va, %add0
  %prh0 = getelementptr i8, ptr %s, i64 {S.RAM_HOST}
  %rh0 = load ptr, ptr %prh0
  %rhi0 = ptrtoint ptr %rh0 to i64
  %poff0 = sub i64 %host0, %rhi0
  %r0 = call i1 @pyhv_code_store(ptr %s, i64 %poff0, i64 %vpn0, ptr %pw0)
  ret i1 %r0
walk0:
  %w = call {{i64, i64}} @pyhv_walk(ptr %s, i64 %va)
  %pte = extractvalue {{i64, i64}} %w, 0
  %s9 = extractvalue {{i64, i64}} %w, 1
  %pdp = getelementptr i8, ptr %s, i64 {S.DPRIV}
  %dpriv = load i64, ptr %pdp
  %pms = getelementptr i8, ptr %s, i64 {S.MSTATUS}
  %ms = load i64, ptr %pms
  %ub = and i64 %pte, 16
  %isub = icmp ne i64 %ub, 0
  %sumb = and i64 %ms, {C.MSTATUS_SUM}
  %sum = icmp ne i64 %sumb, 0
  %mxrb = and i64 %ms, {C.MSTATUS_MXR}
  %mxr = icmp ne i64 %mxrb, 0
  %isu = icmp eq i64 %dpriv, 0
  %notub = xor i1 %isub, true
  %sok = or i1 %notub, %sum
  %pok = select i1 %isu, i1 %isub, i1 %sok
  %avb = and i64 %pte, 65
  %aok = icmp eq i64 %avb, 65
  %rb = and i64 %pte, 2
  %rok = icmp ne i64 %rb, 0
  %xb = and i64 %pte, 8
  %xok = icmp ne i64 %xb, 0
  %mx = and i1 %mxr, %xok
  %readable = or i1 %rok, %mx
  %wdb = and i64 %pte, 132
  %wd = icmp eq i64 %wdb, 132
  %c1 = and i1 %pok, %aok
  br i1 %c1, label %page, label %fail
page:
  %ppage = call i64 @pyhv_leaf_page(ptr %s, i64 %va, i64 %pte, i64 %s9)
  %inram = icmp ne i64 %ppage, -1
  br i1 %inram, label %perm, label %mmio
mmio:
  %isstm = icmp ne i64 %store, 0
  %needm = select i1 %isstm, i1 %wd, i1 %readable
  br i1 %needm, label %mmio1, label %fail
mmio1:
  %mpage = call i64 @pyhv_leaf_pa(i64 %va, i64 %pte, i64 %s9)
  %malok = icmp ne i64 %mpage, -1
  br i1 %malok, label %mmio2, label %fail
mmio2:
  %mvpn = lshr i64 %va, 12
  %mvo = and i64 %va, 4095
  %mpa = or i64 %mpage, %mvo
  ; (proved: va maps to the device at mpa, with the permission this access needs)
  store i64 %va, ptr %pmva
  %pmpa = getelementptr i8, ptr %s, i64 {S.MMIOPA}
  store i64 %mpa, ptr %pmpa
  %slot = call ptr @pyhv_mmio_slot(ptr %s, i64 %mpa, i64 %store)
  %mgot = icmp ne ptr %slot, null
  br i1 %mgot, label %mfill, label %fail
mfill:
  ; the entry points at the slot for this one access; its tags match no page, so the
  ; next access to the device comes back here
  %midx = and i64 %mvpn, {S.NTLB - 1}
  %meo = mul i64 %midx, {S.TLB_ENTRY}
  %mptsel = getelementptr i8, ptr %s, i64 {S.TLBP}
  %mtsel = load ptr, ptr %mptsel
  %ment = getelementptr i8, ptr %mtsel, i64 %meo
  store i64 -1, ptr %ment
  %mpw = getelementptr i8, ptr %ment, i64 8
  store i64 -1, ptr %mpw
  %mslot = ptrtoint ptr %slot to i64
  %madd = sub i64 %mslot, %va
  %mpa2 = getelementptr i8, ptr %ment, i64 16
  store i64 %madd, ptr %mpa2
  ret i1 true
perm:
  %poff = sub i64 %ppage, {RAM_BASE}
  %pcm = getelementptr i8, ptr %s, i64 {S.CODEMAP}
  %cm = load ptr, ptr %pcm
  %pidx = lshr i64 %poff, 12
  %cbp = getelementptr i8, ptr %cm, i64 %pidx
  %cb = load i8, ptr %cbp
  %clean = icmp eq i8 %cb, 0
  %wok = and i1 %wd, %clean
  %notclean = xor i1 %clean, true
  %wcode = and i1 %wd, %notclean
  %isst = icmp ne i64 %store, 0
  %need = select i1 %isst, i1 %wd, i1 %readable
  br i1 %need, label %fill, label %fail
fill:
  %vpn = lshr i64 %va, 12
  %idx = and i64 %vpn, {S.NTLB - 1}
  %eo = mul i64 %idx, {S.TLB_ENTRY}
  %ptsel = getelementptr i8, ptr %s, i64 {S.TLBP}
  %tsel = load ptr, ptr %ptsel
  %ent = getelementptr i8, ptr %tsel, i64 %eo
  %rtag = select i1 %readable, i64 %vpn, i64 -1
  %cvpn = or i64 %vpn, {S.CODE_TAG}
  %wtag1 = select i1 %wcode, i64 %cvpn, i64 -1
  %wtag = select i1 %wok, i64 %vpn, i64 %wtag1
  store i64 %rtag, ptr %ent
  %pw = getelementptr i8, ptr %ent, i64 8
  store i64 %wtag, ptr %pw
  %prh = getelementptr i8, ptr %s, i64 {S.RAM_HOST}
  %rh = load ptr, ptr %prh
  %rhi = ptrtoint ptr %rh to i64
  %hp = add i64 %rhi, %poff
  %vb = shl i64 %vpn, 12
  %add = sub i64 %hp, %vb
  %pa2 = getelementptr i8, ptr %ent, i64 16
  store i64 %add, ptr %pa2
  %chk = and i1 %isst, %wcode
  br i1 %chk, label %codest, label %done
codest:
  %vo = and i64 %va, 4095
  %soff = add i64 %poff, %vo
  %r1 = call i1 @pyhv_code_store(ptr %s, i64 %soff, i64 %vpn, ptr %pw)
  ret i1 %r1
done:
  ret i1 true
fail:
  ret i1 false
}}

; A page starts holding code: no soft-TLB entry (of either TLB) may write it natively.
define void @pyhv_revoke(ptr %s, i64 %hostpage) #0 {{
entry:
  %pt0 = getelementptr i8, ptr %s, i64 {S.TLBP0}
  %t0 = load ptr, ptr %pt0
  %none = icmp eq ptr %t0, null
  br i1 %none, label %out, label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %step ]
  %eo = mul i64 %i, {S.TLB_ENTRY}
  %ent = getelementptr i8, ptr %t0, i64 %eo
  %pw = getelementptr i8, ptr %ent, i64 8
  %w = load i64, ptr %pw
  %pa = getelementptr i8, ptr %ent, i64 16
  %add = load i64, ptr %pa
  %wb = shl i64 %w, 12
  %h = add i64 %wb, %add
  %hit = icmp eq i64 %h, %hostpage
  %live = icmp ne i64 %w, -1
  %both = and i1 %hit, %live
  br i1 %both, label %drop, label %step
drop:
  store i64 -1, ptr %pw
  br label %step
step:
  %i1 = add i64 %i, 1
  %end = icmp eq i64 %i1, {2 * S.NTLB}
  br i1 %end, label %out, label %loop
out:
  ret void
}}
"""

def mxcsr_flags(op: Callable[[str], str], mx: str) -> str:
    """RISC-V fflags (NV DZ OF UF NX, bits 4..0) from the host's MXCSR exception flags
    ``mx`` (i64: IE bit 0, ZE 2, OE 3, UE 4, PE 5): the dispatcher takes them at its
    exit, the native interpreter at an fflags or fcsr access."""
    out = "0"
    for src, dst in ((0, 4), (2, 3), (3, 2), (4, 1), (5, 0)):  # (MXCSR bit, fflags bit)
        b = op(f"and i64 {op(f'lshr i64 {mx}, {src}')}, 1")
        out = op(f"or i64 {out}, {op(f'shl i64 {b}, {dst}')}")
    return out


def _ir_lines(make: Callable[[Callable[[str], str]], str], stem: str) -> tuple[str, str]:
    """(IR lines, result name) of ``make`` run with an ``op`` writing temporaries
    ``%{stem}N``: generated IR inside a function written as text."""
    lines: list[str] = []

    def op(expr: str) -> str:
        v = f"%{stem}{len(lines)}"
        lines.append(f"  {v} = {expr}")
        return v

    result = make(op)
    return "\n".join(lines), result


_HARVEST, _HARVESTED = _ir_lines(lambda op: mxcsr_flags(op, "%m64"), "mxf")


class _HelperGen(TimeReads):
    """IR lines for a helper function of the dispatcher's module."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def op(self, expr: str) -> str:
        v = f"%c{len(self.lines)}"
        self.lines.append(f"  {v} = {expr}")
        return v

    def emit(self, line: str) -> None:
        self.lines.append("  " + line)


def _clock_load_ir() -> str:
    """``i1 @pyhv_clock_load(s, pa, size)``, for a bare-mode block's aligned 4- or 8-byte
    load outside RAM (through ``state.CLOCKFN``): a load of the CLINT's mtime register
    (``mtimepa``; whole, or either 32-bit half) reads the clock as the time CSR does
    (uncounted, as the board's mtime reads: VirtBoard._next_time), its value in mmioval
    and counted as a device access: true; anything else false (the block leaves). Out
    of line: a dozen lines of IR in every such load of every block cost more compile
    time than the call costs a program that reads the clock in a loop."""
    g = _HelperGen()
    pmtp = g.op(f"getelementptr i8, ptr %s, i64 {S.MTIMEPA}")
    mtp = g.op(f"load i64, ptr {pmtp}")
    rel = g.op("sub i64 %pa, " + mtp)
    at0 = g.op(f"icmp eq i64 {rel}, 0")
    is4 = g.op("icmp eq i64 %size, 4")
    half = g.op(f"and i1 {is4}, {g.op(f'icmp eq i64 {rel}, 4')}")
    hit = g.op(f"or i1 {at0}, {half}")
    hit = g.op(f"and i1 {hit}, {g.op(f'icmp ne i64 {mtp}, 0')}")
    g.emit(f"br i1 {hit}, label %read, label %other")
    g.lines.append("read:")
    now = g.time_read(counted=False)
    now = g.op(f"select i1 {is4}, i64 {g.mtime_half(now, rel)}, i64 {now}")
    g.emit(f"store i64 {now}, ptr {g.op(f'getelementptr i8, ptr %s, i64 {S.MMIOVAL}')}")
    pn = g.op(f"getelementptr i8, ptr %s, i64 {S.NMMIO}")
    n = g.op(f"load i64, ptr {pn}")
    g.emit(f"store i64 {g.op(f'add i64 {n}, 1')}, ptr {pn}")
    g.emit("ret i1 true")
    g.lines.append("other:")
    g.emit("ret i1 false")
    body = "\n".join(g.lines)
    return f"define i1 @pyhv_clock_load(ptr %s, i64 %pa, i64 %size) #0 {{\nentry:\n{body}\n}}\n"


# A store into a page that holds code (bare mode, aligned): whether its 8-byte granule
# holds none (CodeWatch's bits; counted in smcok). Called by blocks (state.GRANULEFN), the
# native interpreter and the refill: code_granule_check.
GRANULE = f"""
define i1 @pyhv_granule_clear(ptr %s, i64 %off) #0 {{
entry:
  %pbits = getelementptr i8, ptr %s, i64 {S.CODEBITS}
  %bits = load ptr, ptr %pbits
  %gi = lshr i64 %off, 6
  %gp = getelementptr i8, ptr %bits, i64 %gi
  %gbyte = load i8, ptr %gp
  %g = lshr i64 %off, 3
  %g7 = and i64 %g, 7
  %g8 = trunc i64 %g7 to i8
  %sh = lshr i8 %gbyte, %g8
  %bit = and i8 %sh, 1
  %clear = icmp eq i8 %bit, 0
  br i1 %clear, label %ok, label %no
ok:
  %pok = getelementptr i8, ptr %s, i64 {S.SMCOK}
  %v = load i64, ptr %pok
  %w = add i64 %v, 1
  store i64 %w, ptr %pok
  ret i1 true
no:
  ret i1 false
}}

define i1 @pyhv_range_clear(ptr %s, i64 %off, i64 %len, i64 %n) #0 {{
entry:
  %pbits = getelementptr i8, ptr %s, i64 {S.CODEBITS}
  %bits = load ptr, ptr %pbits
  %g0 = lshr i64 %off, 3
  %end = add i64 %off, %len
  %last = sub i64 %end, 1
  %g1 = lshr i64 %last, 3
  br label %loop
loop:
  %g = phi i64 [ %g0, %entry ], [ %gn, %next ]
  %gi = lshr i64 %g, 3
  %gp = getelementptr i8, ptr %bits, i64 %gi
  %gbyte = load i8, ptr %gp
  %g7 = and i64 %g, 7
  %g8 = trunc i64 %g7 to i8
  %sh = lshr i8 %gbyte, %g8
  %bit = and i8 %sh, 1
  %clear = icmp eq i8 %bit, 0
  br i1 %clear, label %next, label %no
next:
  %gn = add i64 %g, 1
  %more = icmp ule i64 %gn, %g1
  br i1 %more, label %loop, label %ok
ok:
  %pok = getelementptr i8, ptr %s, i64 {S.SMCOK}
  %v = load i64, ptr %pok
  %w = add i64 %v, %n
  store i64 %w, ptr %pok
  ret i1 true
no:
  ret i1 false
}}
"""

DISPATCH = REFILL + _clock_load_ir() + GRANULE + f"""
define i32 @pyhv_dispatch(ptr %s) #0 {{
entry:
  %mx = alloca i32
  store i32 8064, ptr %mx  ; 0x1F80: all exceptions masked, round to nearest, flags clear
  call void @llvm.x86.sse.ldmxcsr(ptr %mx) #1
  %pb = getelementptr i8, ptr %s, i64 {S.BUDGET}
  %ppc = getelementptr i8, ptr %s, i64 {S.PC}
  %ptab = getelementptr i8, ptr %s, i64 {S.TABLE}
  %pichk = getelementptr i8, ptr %s, i64 {S.ICHK}
  br label %loop
loop:
  %b = load i64, ptr %pb
  %over = icmp sle i64 %b, 0
  br i1 %over, label %budget, label %look
look:
  %pc = load i64, ptr %ppc
  %tab = load ptr, ptr %ptab
  %h = lshr i64 %pc, 1
  %i = and i64 %h, {S.NDISPATCH - 1}
  %o = shl i64 %i, 5
  %ent0 = getelementptr i8, ptr %tab, i64 %o
  %want = or i64 %pc, 1
  %tag = load i64, ptr %ent0
  %hit = icmp eq i64 %tag, %want
  br i1 %hit, label %found, label %way2
way2:
  %o2 = xor i64 %o, 32
  %ent1 = getelementptr i8, ptr %tab, i64 %o2
  %tag2 = load i64, ptr %ent1
  %hit2 = icmp eq i64 %tag2, %want
  br i1 %hit2, label %found, label %miss
found:
  %ent = phi ptr [ %ent0, %look ], [ %ent1, %way2 ]
  ; (read each time: a native trap into M-mode or MRET out of it switches the context)
  %ichk = load i64, ptr %pichk
  %checked = icmp ne i64 %ichk, 0
  br i1 %checked, label %itlb, label %call
itlb:
  ; a block fetched through translation runs only while its page still maps where it
  ; was fetched from: the I-TLB remembers pages checked since the last fence
  %vpn = lshr i64 %pc, 12
  %ii = and i64 %vpn, {S.NITLB - 1}
  %io = shl i64 %ii, 4
  %io2 = add i64 %io, {S.ITLB}
  %ient = getelementptr i8, ptr %s, i64 %io2
  %itag = load i64, ptr %ient
  %iep = getelementptr i8, ptr %ient, i64 8
  %ippn = load i64, ptr %iep
  %pbp = getelementptr i8, ptr %ent, i64 16
  %bppn = load i64, ptr %pbp
  %t1 = icmp eq i64 %itag, %vpn
  %t2 = icmp eq i64 %ippn, %bppn
  %t3 = and i1 %t1, %t2
  br i1 %t3, label %call, label %iwalk
iwalk:
  %np = call i64 @pyhv_fetch_page(ptr %s, i64 %pc)
  %same = icmp eq i64 %np, %bppn
  br i1 %same, label %ifill, label %miss
ifill:
  store i64 %vpn, ptr %ient
  store i64 %np, ptr %iep
  br label %call
call:
  %pfn = getelementptr i8, ptr %ent, i64 8
  %fn = load ptr, ptr %pfn
  %r = call {BLOCK_CC} i32 %fn(ptr %s)
  %cont = icmp eq i32 %r, 0
  br i1 %cont, label %loop, label %bexit
bexit:
  ; a block left before an access it could not do: the native interpreter tries that
  ; instruction first (the console UART's window in bare mode, say), then Python
  %isslow = icmp eq i32 %r, {S.EXIT_SLOW}
  %pacc = getelementptr i8, ptr %s, i64 {S.EXIT_ACCESS}
  %acc = load i64, ptr %pacc
  %mem = icmp ne i64 %acc, 0
  %pint0 = getelementptr i8, ptr %s, i64 {S.INTERP}
  %ifn0 = load ptr, ptr %pint0
  %hasint = icmp ne ptr %ifn0, null
  %t0 = and i1 %isslow, %mem
  %try = and i1 %t0, %hasint
  br i1 %try, label %retry, label %out
retry:
  ; a load of the CLINT's mtime: its pc is noted (CLOCKPC), and Python has the blocks
  ; holding it compiled again to read the clock themselves (engine._clock_read)
  %cppc = getelementptr i8, ptr %s, i64 {S.PC}
  %clpc = load i64, ptr %cppc
  %cpmt = getelementptr i8, ptr %s, i64 {S.MTIMEPA}
  %cmtpa = load i64, ptr %cpmt
  %cpva = getelementptr i8, ptr %s, i64 {S.EXIT_VADDR}
  %cva = load i64, ptr %cpva
  %crel = sub i64 %cva, %cmtpa
  %cnear = icmp ult i64 %crel, 8
  %cisld = icmp eq i64 %acc, 1
  %chasmt = icmp ne i64 %cmtpa, 0
  %cck0 = and i1 %cnear, %cisld
  %cck = and i1 %cck0, %chasmt
  br i1 %cck, label %clockpc, label %retry2
clockpc:
  %cpcp = getelementptr i8, ptr %s, i64 {S.CLOCKPC}
  store i64 %clpc, ptr %cpcp
  br label %retry2
retry2:
  %r3 = call i32 %ifn0(ptr %s)
  %c3 = icmp eq i32 %r3, 0
  br i1 %c3, label %loop, label %out3
out3:
  br label %done
out:
  br label %done
budget:
  br label %done
miss:
  ; no compiled block here: the native interpreter runs the stretch (if there is one)
  %pint = getelementptr i8, ptr %s, i64 {S.INTERP}
  %ifn = load ptr, ptr %pint
  %noint = icmp eq ptr %ifn, null
  br i1 %noint, label %lookup, label %interp
interp:
  %r2 = call i32 %ifn(ptr %s)
  %c2 = icmp eq i32 %r2, 0
  br i1 %c2, label %loop, label %out2
out2:
  br label %done
lookup:
  br label %done
done:
  %code = phi i32 [ %r, %out ], [ {S.EXIT_BUDGET}, %budget ], [ %r2, %out2 ],
                 [ {S.EXIT_LOOKUP}, %lookup ], [ %r3, %out3 ]
  call void @llvm.x86.sse.stmxcsr(ptr %mx) #1
  %m = load i32, ptr %mx
  %m64 = zext i32 %m to i64
{_HARVEST}
  %pff = getelementptr i8, ptr %s, i64 {S.FFLAGS}
  %old = load i64, ptr %pff
  %new = or i64 %old, {_HARVESTED}
  store i64 %new, ptr %pff
  ret i32 %code
}}
"""
