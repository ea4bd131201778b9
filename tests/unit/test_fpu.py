"""Instruction-level rules of pyhv.cpu.fpu: NaN-boxing, rounding-mode selection,
register-write conventions and flag accumulation.  Arithmetic itself is covered (including
a differential comparison with unicorn) in test_softfloat.py."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from pyhv.cpu.fpu import FP_OPS
from pyhv.cpu.trap import IllegalInstruction

BOX = 0xFFFFFFFF00000000
MASK64 = (1 << 64) - 1


def s(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def d(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def hart(frm: int = 0) -> SimpleNamespace:
    return SimpleNamespace(x=[0] * 32, f=[0] * 32, fflags=0, frm=frm)


def insn(name: str, rd: int = 3, rs1: int = 1, rs2: int = 2, rs3: int = 4, rm: int = 0):
    raw = 0x12345653  # only used as the trap value
    return SimpleNamespace(name=name, rd=rd, rs1=rs1, rs2=rs2, rs3=rs3, rm=rm, raw=raw)


def test_all_mnemonics_present() -> None:
    expected = {"fcvt.s.d", "fcvt.d.s", "fmv.x.w", "fmv.w.x", "fmv.x.d", "fmv.d.x"}
    for x in "sd":
        for n in (
            "fadd fsub fmul fdiv fsqrt fmin fmax fmadd fmsub fnmsub fnmadd fsgnj fsgnjn "
            "fsgnjx feq flt fle fclass"
        ).split():
            expected.add(f"{n}.{x}")
        for it in ("w", "wu", "l", "lu"):
            expected.add(f"fcvt.{it}.{x}")
            expected.add(f"fcvt.{x}.{it}")
    assert set(FP_OPS) == expected


def test_single_results_are_boxed() -> None:
    h = hart()
    h.f[1] = s(1.5) | BOX
    h.f[2] = s(2.25) | BOX
    FP_OPS["fadd.s"](h, insn("fadd.s"))
    assert h.f[3] == s(3.75) | BOX
    assert h.fflags == 0


def test_improperly_boxed_input_is_canonical_nan() -> None:
    h = hart()
    h.f[1] = s(1.5)  # upper half zero: not a valid single
    h.f[2] = s(2.0) | BOX
    FP_OPS["fadd.s"](h, insn("fadd.s"))
    assert h.f[3] == 0x7FC00000 | BOX
    assert h.fflags == 0  # the canonical NaN is quiet
    h.f[1] = 0xFFFFFFFE3F800000  # almost boxed
    FP_OPS["fclass.s"](h, insn("fclass.s"))
    assert h.x[3] == 1 << 9  # quiet NaN
    # A double in the register viewed as single is a NaN too.
    h.f[1] = d(1.0)
    FP_OPS["fcvt.d.s"](h, insn("fcvt.d.s"))
    assert h.f[3] == 0x7FF8000000000000


def test_sign_injection() -> None:
    h = hart()
    h.f[1] = s(1.5) | BOX
    h.f[2] = s(-2.0) | BOX
    FP_OPS["fsgnj.s"](h, insn("fsgnj.s"))
    assert h.f[3] == s(-1.5) | BOX
    FP_OPS["fsgnjn.s"](h, insn("fsgnjn.s"))
    assert h.f[3] == s(1.5) | BOX
    h.f[1] = s(-1.5) | BOX
    FP_OPS["fsgnjx.s"](h, insn("fsgnjx.s"))
    assert h.f[3] == s(1.5) | BOX
    # Unboxed inputs become the canonical NaN before the sign is injected.
    h.f[1] = 0x3FC00000
    h.f[2] = 0x12345678
    FP_OPS["fsgnjn.s"](h, insn("fsgnjn.s"))
    assert h.f[3] == 0xFFC00000 | BOX
    # Doubles: raw bits, signaling NaNs untouched, no flags.
    h.f[1] = 0x7FF0000000000001
    h.f[2] = d(-1.0)
    FP_OPS["fsgnj.d"](h, insn("fsgnj.d"))
    assert h.f[3] == 0xFFF0000000000001
    FP_OPS["fsgnjx.d"](h, insn("fsgnjx.d", rs1=3, rs2=3))  # fabs
    assert h.f[3] == 0x7FF0000000000001
    assert h.fflags == 0


def test_moves() -> None:
    h = hart()
    h.f[1] = 0x12345678_80000001  # fmv.x.w ignores boxing, sign-extends bit 31
    FP_OPS["fmv.x.w"](h, insn("fmv.x.w"))
    assert h.x[3] == 0xFFFFFFFF80000001
    h.f[1] = 0xFFFFFFFF_7FFFFFFF
    FP_OPS["fmv.x.w"](h, insn("fmv.x.w"))
    assert h.x[3] == 0x7FFFFFFF
    h.x[1] = 0xDEADBEEF_3F800000
    FP_OPS["fmv.w.x"](h, insn("fmv.w.x"))
    assert h.f[3] == 0xFFFFFFFF_3F800000
    FP_OPS["fmv.d.x"](h, insn("fmv.d.x"))
    assert h.f[3] == 0xDEADBEEF_3F800000
    h.f[1] = 0x7FF0000000000001
    FP_OPS["fmv.x.d"](h, insn("fmv.x.d"))
    assert h.x[3] == 0x7FF0000000000001
    assert h.fflags == 0


def test_int_results_sign_extended() -> None:
    h = hart()
    h.f[1] = s(-1.0) | BOX
    FP_OPS["fcvt.w.s"](h, insn("fcvt.w.s"))
    assert h.x[3] == MASK64
    h.f[1] = s(3e9) | BOX
    FP_OPS["fcvt.wu.s"](h, insn("fcvt.wu.s"))
    assert h.x[3] == 0xFFFFFFFF_B2D05E00  # 32-bit unsigned result, sign-extended
    h.f[1] = d(float("nan"))
    FP_OPS["fcvt.wu.d"](h, insn("fcvt.wu.d"))
    assert h.x[3] == MASK64 and h.fflags == 0x10
    h.f[1] = d(-5.0)
    FP_OPS["fcvt.l.d"](h, insn("fcvt.l.d"))
    assert h.x[3] == (-5) & MASK64
    FP_OPS["fcvt.lu.d"](h, insn("fcvt.lu.d"))
    assert h.x[3] == 0


def test_rounding_mode_field_and_frm() -> None:
    h = hart(frm=3)  # RUP
    h.f[1] = d(2.5)
    FP_OPS["fcvt.l.d"](h, insn("fcvt.l.d", rm=7))  # dynamic -> RUP
    assert h.x[3] == 3
    FP_OPS["fcvt.l.d"](h, insn("fcvt.l.d", rm=0))  # static RNE
    assert h.x[3] == 2
    FP_OPS["fcvt.l.d"](h, insn("fcvt.l.d", rm=1))  # RTZ
    assert h.x[3] == 2
    FP_OPS["fcvt.l.d"](h, insn("fcvt.l.d", rm=4))  # RMM
    assert h.x[3] == 3
    assert h.fflags == 1


@pytest.mark.parametrize(("rm", "frm"), [(5, 0), (6, 0), (7, 5), (7, 6), (7, 7)])
@pytest.mark.parametrize("name", ["fadd.d", "fsqrt.s", "fmadd.d", "fcvt.w.s", "fcvt.d.s",
                                  "fcvt.s.w", "fcvt.s.d"])
def test_reserved_rounding_mode_is_illegal(name: str, rm: int, frm: int) -> None:
    h = hart(frm=frm)
    h.f[1] = h.f[2] = h.f[4] = s(1.0) | BOX
    h.x[1] = 7
    before = (list(h.x), list(h.f), h.fflags)
    with pytest.raises(IllegalInstruction) as exc:
        FP_OPS[name](h, insn(name, rm=rm))
    assert exc.value.tval == 0x12345653
    assert (h.x, h.f, h.fflags) == before


def test_ops_without_rm_ignore_funct3_for_rounding() -> None:
    h = hart(frm=7)  # an invalid frm must not matter for min/max/compare/class/moves
    h.f[1] = d(1.0)
    h.f[2] = d(2.0)
    FP_OPS["fmin.d"](h, insn("fmin.d", rm=0))
    assert h.f[3] == d(1.0)
    FP_OPS["flt.d"](h, insn("flt.d", rm=1))
    assert h.x[3] == 1


def test_x0_never_written() -> None:
    h = hart()
    h.f[1] = h.f[2] = d(1.0)
    for name in ("feq.d", "fclass.d", "fcvt.w.d", "fcvt.lu.d", "fmv.x.d", "fmv.x.w"):
        FP_OPS[name](h, insn(name, rd=0))
    assert h.x[0] == 0
    # Flags are still raised even if the result is discarded.
    h.f[1] = 0x7FF0000000000001
    FP_OPS["feq.d"](h, insn("feq.d", rd=0))
    assert h.x[0] == 0 and h.fflags == 0x10


def test_fflags_accumulate() -> None:
    h = hart()
    h.fflags = 0x08
    h.f[1] = d(1.0)
    h.f[2] = d(3.0)
    FP_OPS["fdiv.d"](h, insn("fdiv.d"))
    assert h.fflags == 0x09
    h.f[2] = d(0.0)
    FP_OPS["fdiv.d"](h, insn("fdiv.d"))
    assert h.fflags == 0x09


def test_fused_negations() -> None:
    h = hart()
    h.f[1] = d(2.0)
    h.f[2] = d(3.0)
    h.f[4] = d(1.0)
    expected = {"fmadd.d": 7.0, "fmsub.d": 5.0, "fnmsub.d": -5.0, "fnmadd.d": -7.0}
    for name, value in expected.items():
        FP_OPS[name](h, insn(name))
        assert h.f[3] == d(value), name
    # A negated signaling NaN is still signaling: NV, canonical result.
    h.f[4] = 0x7FF0000000000001
    FP_OPS["fnmadd.d"](h, insn("fnmadd.d"))
    assert h.f[3] == 0x7FF8000000000000 and h.fflags == 0x10
    # Single precision with boxing.
    h = hart()
    h.f[1], h.f[2], h.f[4] = s(2.0) | BOX, s(3.0) | BOX, s(1.0) | BOX
    FP_OPS["fnmsub.s"](h, insn("fnmsub.s"))
    assert h.f[3] == s(-5.0) | BOX


def test_int_to_float_uses_low_bits() -> None:
    h = hart()
    h.x[1] = 0x12345678_FFFFFFFF  # w: low 32 bits as signed = -1
    FP_OPS["fcvt.d.w"](h, insn("fcvt.d.w"))
    assert h.f[3] == d(-1.0)
    FP_OPS["fcvt.d.wu"](h, insn("fcvt.d.wu"))
    assert h.f[3] == d(4294967295.0)
    h.x[1] = MASK64
    FP_OPS["fcvt.s.l"](h, insn("fcvt.s.l"))
    assert h.f[3] == s(-1.0) | BOX
    FP_OPS["fcvt.s.lu"](h, insn("fcvt.s.lu"))
    assert h.f[3] == s(2.0**64) | BOX and h.fflags == 1


def test_narrowing_boxes_and_flags() -> None:
    h = hart()
    h.f[1] = d(1e300)
    FP_OPS["fcvt.s.d"](h, insn("fcvt.s.d", rm=1))  # RTZ: max finite
    assert h.f[3] == 0x7F7FFFFF | BOX and h.fflags == 0x05
