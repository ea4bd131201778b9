"""The interpreter's F and D operations (everything except loads and stores).

Each instruction is one operation of isa/spec.py (``FpInsn.op``: add, sgnj, to_int ...);
this module implements those operations on the bit-exact arithmetic of
:mod:`softfloat`, and :data:`FP_OPS` maps each instruction to its handler. The
floating-point rules (rounding-mode selection, NaN-boxing of single-precision values,
fflags accumulation, sign extension of integer results) live here, once.

Each handler is ``handler(hart, d)``; it reads ``hart.x``/``hart.f``/``hart.frm`` and
``d.rd/rs1/rs2/rs3/rm/raw``, writes the destination register and ORs exception flags into
``hart.fflags``.  An invalid rounding mode raises :class:`IllegalInstruction` before any
state changes.  Marking mstatus.FS dirty is the caller's job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyhv.cpu import softfloat as sf
from pyhv.cpu.trap import IllegalInstruction
from pyhv.isa import spec

Handler = Callable[[Any, Any], None]

BOX = 0xFFFFFFFF00000000  # upper half of a NaN-boxed single
MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
SIGN32 = 0x80000000
SIGN64 = 0x8000000000000000
CANONICAL_NAN32 = sf.CANONICAL_NAN32


def rounding_mode(hart: Any, d: Any) -> int:
    """The effective rounding mode; reserved encodings (5, 6, or dynamic with frm >= 5)
    are illegal instructions."""
    rm = d.rm
    if rm == 7:
        rm = hart.frm
    if rm > 4:
        raise IllegalInstruction(d.raw)
    return rm


def unbox(v: int) -> int:
    """Single-precision operand from a 64-bit register: improperly boxed -> canonical NaN."""
    if v >> 32 == MASK32:
        return v & MASK32
    return CANONICAL_NAN32


def _sext32(v: int) -> int:
    """Sign-extend the low 32 bits to a 64-bit unsigned register value."""
    v &= MASK32
    return v | BOX if v & SIGN32 else v


# Per-format glue: operand reader, result writer and the softfloat format.
def _read_s(v: int) -> int:
    return unbox(v)


def _read_d(v: int) -> int:
    return v


def _write_s(v: int) -> int:
    return v | BOX


def _write_d(v: int) -> int:
    return v


_FMTS = {
    "s": (sf.F32, _read_s, _write_s, SIGN32),
    "d": (sf.F64, _read_d, _write_d, SIGN64),
}


def _binary(fn: Callable[[sf.Format, int, int, int], tuple[int, int]], sfx: str) -> Handler:
    fmt, rd_, wr, _ = _FMTS[sfx]

    def op(hart: Any, d: Any) -> None:
        rm = rounding_mode(hart, d)
        f = hart.f
        r, fl = fn(fmt, rd_(f[d.rs1]), rd_(f[d.rs2]), rm)
        f[d.rd] = wr(r)
        if fl:
            hart.fflags |= fl

    return op


def _sqrt(sfx: str) -> Handler:
    fmt, rd_, wr, _ = _FMTS[sfx]

    def op(hart: Any, d: Any) -> None:
        rm = rounding_mode(hart, d)
        f = hart.f
        r, fl = sf.sqrt(fmt, rd_(f[d.rs1]), rm)
        f[d.rd] = wr(r)
        if fl:
            hart.fflags |= fl

    return op


def _fused(sfx: str, neg_product: bool, neg_addend: bool) -> Handler:
    """fmadd/fmsub/fnmsub/fnmadd: negations flip operand sign bits, so NaN inputs keep
    their class (sNaN stays sNaN) and the single rounding is in the right direction."""
    fmt, rd_, wr, sign = _FMTS[sfx]
    pflip = sign if neg_product else 0
    cflip = sign if neg_addend else 0

    def op(hart: Any, d: Any) -> None:
        rm = rounding_mode(hart, d)
        f = hart.f
        r, fl = sf.fma(fmt, rd_(f[d.rs1]) ^ pflip, rd_(f[d.rs2]), rd_(f[d.rs3]) ^ cflip, rm)
        f[d.rd] = wr(r)
        if fl:
            hart.fflags |= fl

    return op


def _minmax(fn: Callable[[sf.Format, int, int], tuple[int, int]], sfx: str) -> Handler:
    fmt, rd_, wr, _ = _FMTS[sfx]

    def op(hart: Any, d: Any) -> None:
        f = hart.f
        r, fl = fn(fmt, rd_(f[d.rs1]), rd_(f[d.rs2]))
        f[d.rd] = wr(r)
        if fl:
            hart.fflags |= fl

    return op


def _sgnj(sfx: str, kind: int) -> Handler:
    """Sign injection on raw bits (0 = copy, 1 = negated, 2 = xor); no flags."""
    _, rd_, wr, sign = _FMTS[sfx]

    def op(hart: Any, d: Any) -> None:
        f = hart.f
        a = rd_(f[d.rs1])
        b = rd_(f[d.rs2])
        if kind == 0:
            s = b & sign
        elif kind == 1:
            s = (b & sign) ^ sign
        else:
            s = (a ^ b) & sign
        f[d.rd] = wr((a & (sign - 1)) | s)

    return op


def _compare(fn: Callable[[sf.Format, int, int], tuple[int, int]], sfx: str) -> Handler:
    fmt, rd_, _, _ = _FMTS[sfx]

    def op(hart: Any, d: Any) -> None:
        f = hart.f
        r, fl = fn(fmt, rd_(f[d.rs1]), rd_(f[d.rs2]))
        if d.rd:
            hart.x[d.rd] = r
        if fl:
            hart.fflags |= fl

    return op


def _fclass(sfx: str) -> Handler:
    fmt, rd_, _, _ = _FMTS[sfx]

    def op(hart: Any, d: Any) -> None:
        if d.rd:
            hart.x[d.rd] = sf.classify(fmt, rd_(hart.f[d.rs1]))

    return op


def _to_int(sfx: str, width: int, signed: bool) -> Handler:
    """fcvt.{w,wu,l,lu}.fmt: 32-bit results (even unsigned ones) are sign-extended."""
    fmt, rd_, _, _ = _FMTS[sfx]

    def op(hart: Any, d: Any) -> None:
        rm = rounding_mode(hart, d)
        v, fl = sf.to_int(fmt, rd_(hart.f[d.rs1]), rm, width, signed)
        if d.rd:
            hart.x[d.rd] = _sext32(v) if width == 32 else v & MASK64
        if fl:
            hart.fflags |= fl

    return op


def _from_int(sfx: str, width: int, signed: bool) -> Handler:
    """fcvt.fmt.{w,wu,l,lu}: the source is the low ``width`` bits of x[rs1]."""
    fmt, _, wr, _ = _FMTS[sfx]
    mask = (1 << width) - 1
    top = 1 << (width - 1)

    def op(hart: Any, d: Any) -> None:
        rm = rounding_mode(hart, d)
        v = hart.x[d.rs1] & mask
        if signed and v & top:
            v -= 1 << width
        r, fl = sf.from_int(fmt, v, rm)
        hart.f[d.rd] = wr(r)
        if fl:
            hart.fflags |= fl

    return op


def fcvt_s_d(hart: Any, d: Any) -> None:
    rm = rounding_mode(hart, d)
    r, fl = sf.f64_to_f32(hart.f[d.rs1], rm)
    hart.f[d.rd] = r | BOX
    if fl:
        hart.fflags |= fl


def fcvt_d_s(hart: Any, d: Any) -> None:
    rounding_mode(hart, d)  # exact, but a reserved rm is still illegal
    r, fl = sf.f32_to_f64(unbox(hart.f[d.rs1]))
    hart.f[d.rd] = r
    if fl:
        hart.fflags |= fl


def fmv_x_w(hart: Any, d: Any) -> None:
    # Raw low 32 bits, no NaN-box check, sign-extended.
    if d.rd:
        hart.x[d.rd] = _sext32(hart.f[d.rs1])


def fmv_w_x(hart: Any, d: Any) -> None:
    hart.f[d.rd] = (hart.x[d.rs1] & MASK32) | BOX


def fmv_x_d(hart: Any, d: Any) -> None:
    if d.rd:
        hart.x[d.rd] = hart.f[d.rs1]


def fmv_d_x(hart: Any, d: Any) -> None:
    hart.f[d.rd] = hart.x[d.rs1]


_ARITH = {"add": sf.add, "sub": sf.sub, "mul": sf.mul, "div": sf.div}
_MINMAX = {"minnum": sf.fmin, "maxnum": sf.fmax}
_COMPARE = {"eq": sf.eq, "lt": sf.lt, "le": sf.le}
_MOVES = {("mv_x", "s"): fmv_x_w, ("mv_x", "d"): fmv_x_d, ("mv_f", "s"): fmv_w_x,
          ("mv_f", "d"): fmv_d_x, ("cvt", "s"): fcvt_s_d, ("cvt", "d"): fcvt_d_s}


def handler(i: spec.FpInsn) -> Handler | None:
    """The handler of an F/D instruction of isa/spec.py, from its operation (None for
    loads and stores, which the hart's memory path does)."""
    op, s = i.op, i.fmt
    if op in _ARITH:
        return _binary(_ARITH[op], s)
    if op in _MINMAX:
        return _minmax(_MINMAX[op], s)
    if op in _COMPARE:
        return _compare(_COMPARE[op], s)
    if op == "sqrt":
        return _sqrt(s)
    if op == "fma":
        return _fused(s, bool(i.arg & 1), bool(i.arg & 2))
    if op == "sgnj":
        return _sgnj(s, i.arg)
    if op == "class":
        return _fclass(s)
    if op == "to_int":
        return _to_int(s, i.arg, i.signed)
    if op == "from_int":
        return _from_int(s, i.arg, i.signed)
    if (op, s) in _MOVES:
        return _MOVES[op, s]
    return None


def _build() -> dict[str, Handler]:
    ops: dict[str, Handler] = {}
    for name, i in spec.FP.items():
        h = handler(i)
        if h is not None:
            ops[name] = h
    return ops


FP_OPS: dict[str, Handler] = _build()
