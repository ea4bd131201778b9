"""The translator's double-precision code on Python floats (``fpnx``: FS dirty, frm RNE
and NX already set) against the interpreter, at the edges of its shortcuts.

Once NX is set the translator computes add/sub/mul/div/sqrt with host floats and fused
multiply-adds with Veltkamp's split and ``math.fsum``, keeping f registers as floats
across a block and its loops; anything its checks cannot prove exact (besides NX) goes to
the interpreter's closure. These tests feed operands at those checks' bounds: huge
factors (the split overflows), subnormal factors with huge partners, products and sums
next to the underflow and overflow thresholds, zeros of both signs, infinities and NaNs,
and fld/fsd inside the same loop; every f and x register, fflags and memory must be
the interpreter's. The loop also runs with NX clear, so the bits body is covered too.
"""

from __future__ import annotations

import math
import random
import struct

import pytest

import engine_world as W  # tests/conftest.py puts tests/ on sys.path
from pyhv.isa import csr as C

H = W.H
BASE, J_SELF = W.BASE, W.J_SELF
TABLE = BASE + 0x10000


def fld(rd: int, off: int) -> int:
    return H.enc_i(0x07, rd, 3, 10, off)


def fsd(rs: int, off: int) -> int:
    return H.enc_s(0x27, 3, 10, rs, off)


def fp(mn: str, rd: int, rs1: int, rs2: int = 0, rs3: int = 0) -> int:
    return H.fp_insn(mn, rd, rs1, rs2, rs3, rm=7).word


# One loop iteration per operand triple at TABLE (24 bytes in, 8 results out).
BODY = [
    fld(1, 0), fld(2, 8), fld(3, 16),
    fp("fmadd.d", 4, 1, 2, 3), fp("fnmsub.d", 5, 1, 2, 3), fp("fmsub.d", 6, 2, 1, 3),
    fp("fnmadd.d", 7, 3, 1, 2),
    fp("fmul.d", 8, 1, 2), fp("fadd.d", 9, 1, 3), fp("fdiv.d", 11, 3, 2),
    fp("fsqrt.d", 12, 1), fp("fsub.d", 13, 2, 3),
    fsd(4, 24), fsd(5, 32), fsd(6, 40), fsd(7, 48), fsd(8, 56), fsd(9, 64),
    fsd(11, 72), fsd(12, 80), fsd(13, 88),
    fp("fle.d", 14, 1, 2), W.add(15, 15, 14), fp("feq.d", 14, 4, 4), W.add(15, 15, 14),
    W.addi(10, 10, 96), W.addi(13, 13, -1),
]
STRIDE = 96


def _edge_triples(rng: random.Random) -> list[tuple[float, float, float]]:
    big = [2.0**995, 2.0**996, 2.0**997, 1.5 * 2.0**1000, 2.0**1023, 1.7976931348623157e308]
    tiny = [5e-324, 2.0**-1060, 2.0**-1030, 2.2250738585072014e-308, 2.0**-969, 2.0**-600]
    specials = [0.0, -0.0, math.inf, -math.inf, math.nan, 1.0, -1.0, 3.0]
    pool = big + tiny + [-v for v in big + tiny] + specials
    out = []
    for a in pool:
        for b in (rng.choice(pool), 2.0**rng.randint(-60, 60), rng.uniform(-3, 3)):
            out.append((a, b, rng.choice(pool + [rng.uniform(-1e3, 1e3)])))
    # Products right at the fast path's bounds, huge-times-subnormal, cancellations.
    for e in (-969, -970, -968, 999, 1000, 1001, 1022, 1023):
        m = rng.uniform(1, 2)
        out.append((m * 2.0 ** (e // 2), 2.0 ** (e - e // 2), rng.uniform(-1, 1)))
    for _ in range(40):
        a = rng.choice(tiny) * rng.uniform(1, 2)
        b = 2.0 ** rng.randint(900, 1023) * rng.uniform(1, 1.99)
        out.append((a, b, rng.choice([0.0, -a * b, rng.uniform(-1, 1), 2.0**-1000])))
    for _ in range(60):
        a, b = rng.uniform(-4, 4), rng.uniform(-4, 4)
        out.append((a, b, -a * b + math.ulp(a * b) * rng.choice([0.5, -0.5, 0.25, 1.0])))
    return out


@pytest.mark.parametrize("nx", [1, 0])
def test_float_shortcuts_at_their_bounds_match_the_interpreter(nx: int) -> None:
    triples = _edge_triples(random.Random(17))
    words = BODY + [W.bne(13, 0, -4 * len(BODY)), J_SELF]

    def setup(w: W.World) -> None:
        w.put(BASE, words)
        w.put(BASE + 0x800, [J_SELF])
        w.hart.mtvec = BASE + 0x800
        w.ram.write_bytes(TABLE, b"".join(
            struct.pack("<3d", *t) + bytes(STRIDE - 24) for t in triples))
        h = w.hart
        h.x[10], h.x[13] = TABLE, len(triples)
        h.fflags, h.frm = nx, 0
        h.mstatus |= C.MSTATUS_FS | C.MSTATUS_SD

    budget = len(triples) * (len(BODY) + 1) + 10
    for threshold in (1, 3):
        a, b = W.World("interp"), W.World("translate", threshold=threshold)
        setup(a)
        setup(b)
        a.engine.run(budget)
        b.engine.run(budget)
        sa, sb = a.state(), b.state()
        assert sb == sa, "\n".join(f"{k}: interp={sa[k]!r} translate={sb[k]!r}"
                                   for k in sa if sa[k] != sb[k])
        size = len(triples) * STRIDE
        assert a.ram.read_bytes(TABLE, size) == b.ram.read_bytes(TABLE, size)
