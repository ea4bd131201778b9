"""The binary64 round-to-nearest-even fast paths of pyhv.cpu.softfloat (host floats plus
error-free transformations) against the exact integer path, bit for bit and flag for flag.

Operands come from hypothesis: any bit pattern, ordinary and extreme doubles, the edges
of the fast paths' exponent window, subnormals, zeros, infinities and NaNs, and small
integers times powers of two, whose products and sums land exactly on rounding ties
(the hard case for fma, where the fast path must notice it cannot decide and fall back).
"""

from __future__ import annotations

import math
import random
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyhv.cpu import softfloat as sf
from pyhv.cpu.softfloat import F64, NX, RNE

MASK64 = (1 << 64) - 1
SIGN = 1 << 63


def d(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def _exp_bits(e: int, frac: int = 0, sign: int = 0) -> int:
    return sign << 63 | (e & 0x7FF) << 52 | frac


# Exponents at and around the fast-path window (biased 543..1503) and the format limits.
_EDGE_EXPS = [0, 1, 2, 542, 543, 544, 1022, 1023, 1024, 1502, 1503, 1504, 2045, 2046, 2047]
_FRACS = [0, 1, 2, (1 << 52) - 1, 1 << 51, (1 << 51) + 1, 0x5555555555555]

_edges = st.builds(
    _exp_bits, st.sampled_from(_EDGE_EXPS), st.sampled_from(_FRACS), st.integers(0, 1)
)
# m * 2**k with a small integer m: exact products and sums, and exact rounding ties.
_small_ints = st.builds(
    lambda m, k, neg: d(math.ldexp(-m if neg else m, k)),
    st.integers(1, (1 << 30) - 1), st.integers(-80, 80), st.booleans(),
)
_doubles = st.one_of(
    st.integers(0, MASK64),
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(d),
    st.floats(min_value=-1e6, max_value=1e6, width=64).map(d),
    _edges,
    _small_ints,
    st.sampled_from([0, SIGN, 1, SIGN | 1, d(1.0), d(-1.0), d(2.0), d(0.5), d(3.0),
                     0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000,
                     0x7FF0000000000001, 0x7FEFFFFFFFFFFFFF, 0x0010000000000000,
                     0x000FFFFFFFFFFFFF]),
)

SETTINGS = settings(max_examples=700, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _general(name: str, *ops: int) -> tuple[int, int]:
    return {
        "add": lambda a, b: sf._add(F64, a, b, RNE),
        "sub": lambda a, b: sf._add(F64, a, b ^ SIGN, RNE),
        "mul": lambda a, b: sf._mul(F64, a, b, RNE),
        "div": lambda a, b: sf._div(F64, a, b, RNE),
    }[name](*ops)


FAST = {"add": sf.add_d_rne, "sub": sf.sub_d_rne, "mul": sf.mul_d_rne, "div": sf.div_d_rne}


@SETTINGS
@given(name=st.sampled_from(sorted(FAST)), a=_doubles, b=_doubles)
@example(name="add", a=d(1.0), b=d(2.0**-53))  # a tie, to even
@example(name="add", a=d(1.0), b=d(-1.0))  # +0
@example(name="add", a=SIGN, b=SIGN)  # -0
@example(name="add", a=0x7FEFFFFFFFFFFFFF, b=0x7CA0000000000000)  # overflow by rounding
@example(name="mul", a=d(2.0**-540), b=d(2.0**-540))  # underflow: outside the window
@example(name="div", a=d(1.0), b=d(3.0))
@example(name="div", a=d(1.0), b=0)
def test_binary_fast_paths_match_the_integer_path(name: str, a: int, b: int) -> None:
    assert FAST[name](a, b) == _general(name, a, b)


@SETTINGS
@given(a=_doubles)
@example(a=d(2.0))
@example(a=d(4.0))
@example(a=SIGN)
@example(a=d(-4.0))
@example(a=_exp_bits(543, 1))
def test_sqrt_fast_path_matches_the_integer_path(a: int) -> None:
    assert sf.sqrt_d_rne(a) == sf._sqrt_general(F64, a, RNE)


@SETTINGS
@given(a=_doubles, b=_doubles, c=_doubles)
@example(a=d(2.0**27 + 1), b=d(2.0**26 + 1), c=0)  # product exactly on a tie
@example(a=d(2.0**27 + 1), b=d(2.0**26 + 1), c=d(-(2.0**53)))  # cancellation: exact
@example(a=d(1.0 + 2.0**-52), b=d(1.0 + 2.0**-52), c=d(-1.0))
@example(a=d(1.0 + 2.0**-52), b=d(1.0 - 2.0**-53), c=d(-1.0))  # result near 2**-52
@example(a=d(3.0), b=d(1.0 / 3.0), c=d(-1.0))  # tiny residue
@example(a=d(2.0), b=d(3.0), c=d(-6.0))  # exact zero: +0
@example(a=d(-2.0), b=d(3.0), c=d(6.0))
@example(a=d(0.1), b=d(10.0), c=d(-1.0))
@example(a=d(1.0), b=d(1.0), c=d(2.0**-53))  # 1 + half ulp: a tie, to even
@example(a=d(1.0), b=d(1.0), c=d(-(2.0**-54)))  # 1 - quarter ulp: below a power of two
@example(a=d(1.0), b=d(1.0), c=d(-(2.0**-53)))  # the tie just below 1
def test_fma_fast_path_matches_the_integer_path(a: int, b: int, c: int) -> None:
    assert sf.fma_d_rne(a, b, c) == sf._fma(F64, a, b, c, RNE)


@SETTINGS
@given(a=_doubles, b=_doubles)
def test_compare_fast_paths_match_the_integer_path(a: int, b: int) -> None:
    saved = sf.FAST_PATH
    sf.FAST_PATH = False
    try:
        slow = (sf.eq(F64, a, b), sf.lt(F64, a, b), sf.le(F64, a, b))
    finally:
        sf.FAST_PATH = saved
    assert (sf.eq_d(a, b), sf.lt_d(a, b), sf.le_d(a, b)) == slow


def test_fma_near_ties_in_bulk() -> None:
    """Many products of two 27-bit integers plus addends at the rounding boundary: the
    inexact cases that land on or next to ties, where the fast path must fall back."""
    rng = random.Random(7)
    exact = 0
    for _ in range(10000):
        a = math.ldexp(rng.randrange(1 << 26, 1 << 27) | 1, rng.randint(-30, 30))
        b = math.ldexp(rng.randrange(1 << 26, 1 << 27) | 1, rng.randint(-30, 30))
        p = a * b
        c = rng.choice([
            0.0, -p, math.ulp(p) * rng.choice([0.5, -0.5, 0.25, -0.25, 1.5]),
            -p + math.ulp(p) * rng.randint(-4, 4), rng.uniform(-abs(p), abs(p)),
        ])
        args = d(a), d(b), d(c)
        fast = sf.fma_d_rne(*args)
        assert fast == sf._fma(F64, *args, RNE), (a, b, c)
        exact += fast[1] & NX == 0
    assert exact  # some exact results were met too


def test_fast_paths_are_used_by_the_general_entry_points() -> None:
    # RNE binary64 goes through the fast path; other modes and binary32 do not.
    one_third = sf.div(F64, d(1.0), d(3.0), RNE)
    assert one_third == (d(1.0 / 3.0), NX)
    assert sf.fma(F64, d(2.0), d(3.0), d(1.0), RNE) == (d(7.0), 0)
    assert sf.sqrt(F64, d(9.0), RNE) == (d(3.0), 0)
    assert sf.sqrt(F64, d(2.0), RNE) == (d(math.sqrt(2.0)), NX)
