"""F and D extension instruction semantics (everything except loads and stores).

Why a separate table: the decoder resolves an instruction to a mnemonic, and the hart
dispatches through :data:`FP_OPS` so the floating-point rules (rounding-mode selection,
NaN-boxing of single-precision values, fflags accumulation, sign extension of integer
results) live in one place on top of the bit-exact arithmetic in :mod:`softfloat`.

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


def _build() -> dict[str, Handler]:
    ops: dict[str, Handler] = {}
    for s in ("s", "d"):
        ops[f"fadd.{s}"] = _binary(sf.add, s)
        ops[f"fsub.{s}"] = _binary(sf.sub, s)
        ops[f"fmul.{s}"] = _binary(sf.mul, s)
        ops[f"fdiv.{s}"] = _binary(sf.div, s)
        ops[f"fsqrt.{s}"] = _sqrt(s)
        ops[f"fmin.{s}"] = _minmax(sf.fmin, s)
        ops[f"fmax.{s}"] = _minmax(sf.fmax, s)
        ops[f"fmadd.{s}"] = _fused(s, False, False)
        ops[f"fmsub.{s}"] = _fused(s, False, True)
        ops[f"fnmsub.{s}"] = _fused(s, True, False)
        ops[f"fnmadd.{s}"] = _fused(s, True, True)
        ops[f"fsgnj.{s}"] = _sgnj(s, 0)
        ops[f"fsgnjn.{s}"] = _sgnj(s, 1)
        ops[f"fsgnjx.{s}"] = _sgnj(s, 2)
        ops[f"feq.{s}"] = _compare(sf.eq, s)
        ops[f"flt.{s}"] = _compare(sf.lt, s)
        ops[f"fle.{s}"] = _compare(sf.le, s)
        ops[f"fclass.{s}"] = _fclass(s)
        ops[f"fcvt.w.{s}"] = _to_int(s, 32, True)
        ops[f"fcvt.wu.{s}"] = _to_int(s, 32, False)
        ops[f"fcvt.l.{s}"] = _to_int(s, 64, True)
        ops[f"fcvt.lu.{s}"] = _to_int(s, 64, False)
        ops[f"fcvt.{s}.w"] = _from_int(s, 32, True)
        ops[f"fcvt.{s}.wu"] = _from_int(s, 32, False)
        ops[f"fcvt.{s}.l"] = _from_int(s, 64, True)
        ops[f"fcvt.{s}.lu"] = _from_int(s, 64, False)
    ops["fcvt.s.d"] = fcvt_s_d
    ops["fcvt.d.s"] = fcvt_d_s
    ops["fmv.x.w"] = fmv_x_w
    ops["fmv.w.x"] = fmv_w_x
    ops["fmv.x.d"] = fmv_x_d
    ops["fmv.d.x"] = fmv_d_x
    return ops


FP_OPS: dict[str, Handler] = _build()
