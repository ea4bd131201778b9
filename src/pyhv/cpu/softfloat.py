"""Exact IEEE 754-2008 binary32/binary64 arithmetic on raw bit patterns.

Why this exists: the guest's F and D extensions need bit-exact results *and* the five
exception flags for every rounding mode RISC-V defines.  Python floats only offer
round-to-nearest-even and report no flags, so the general path here decodes each operand
into ``(sign, integer significand, exponent)``, computes the exact result with Python
integers (division and square root keep a few extra bits plus a sticky bit), and rounds
once in :func:`round_pack`.  Every operation returns ``(result, flags)``; the caller ORs
the flags into ``fflags``.

RISC-V specifics (unprivileged spec, chapter "F"):

* tininess is detected *after* rounding, and UF is raised only if the result is also
  inexact;
* every NaN result is the canonical quiet NaN (no payload propagation);
* signaling NaN inputs raise NV; ``0 * inf`` inside an FMA raises NV even when the addend
  is a quiet NaN;
* fmin/fmax follow IEEE 754-2019 minimumNumber/maximumNumber (a single NaN input is
  ignored, ``-0 < +0``);
* float-to-integer conversions saturate (NaN converts to the largest positive value).

Fast paths use the host's binary64 arithmetic for round-to-nearest-even doubles (the
``*_d_rne`` functions, which the general entry points call for RNE binary64): the host
result is correctly rounded, and an error-free transformation proves whether it was
exact, so result and flags are identical to the integer path:

* add/sub: TwoSum gives the exact rounding error (NX iff it is nonzero; a finite sum
  cannot overflow and a subnormal sum is exact, so no OF/UF);
* mul/div/sqrt: operands are kept in an exponent window where the result is normal and
  cannot overflow; the host result is exact iff the integer product of significands
  ``a*b`` has at most 53 significant bits, and ``q*b`` (``r*r``) equals ``a`` exactly;
* fma: ``a*b = p + e`` (TwoProduct), then TwoSums give ``a*b + c = r + w + v`` exactly
  with ``r = fl(fl(p + c) + ...)``; ``r`` is the correctly rounded result when
  ``|w| + |v|`` is below half the distance to ``r``'s neighbour (checked conservatively),
  which is almost always;
* compares of non-NaN values.

NaN, infinite, zero (where its sign matters), subnormal and out-of-window operands, and
the rare fma near a rounding tie, fall back to the integer path.
"""

from __future__ import annotations

import math

# Rounding modes (frm / instruction rm field encodings).
RNE = 0  # round to nearest, ties to even
RTZ = 1  # round towards zero
RDN = 2  # round down (towards -inf)
RUP = 3  # round up (towards +inf)
RMM = 4  # round to nearest, ties to max magnitude

# Exception flags in fflags bit order.
NX = 1  # inexact
UF = 2  # underflow
OF = 4  # overflow
DZ = 8  # divide by zero
NV = 16  # invalid operation

# fclass result bits.
CLASS_NEG_INF = 1 << 0
CLASS_NEG_NORMAL = 1 << 1
CLASS_NEG_SUBNORMAL = 1 << 2
CLASS_NEG_ZERO = 1 << 3
CLASS_POS_ZERO = 1 << 4
CLASS_POS_SUBNORMAL = 1 << 5
CLASS_POS_NORMAL = 1 << 6
CLASS_POS_INF = 1 << 7
CLASS_SNAN = 1 << 8
CLASS_QNAN = 1 << 9


class Format:
    """Parameters of one IEEE binary interchange format."""

    __slots__ = (
        "width",
        "mbits",
        "ebits",
        "bias",
        "emin",
        "emax",
        "sign_shift",
        "exp_all_ones",
        "frac_mask",
        "hidden",
        "quiet_bit",
        "canonical_nan",
        "inf",
        "max_finite",
        "mag_mask",
        "prec",
    )

    def __init__(self, width: int, ebits: int) -> None:
        self.width = width
        self.ebits = ebits
        self.mbits = width - 1 - ebits  # stored fraction bits
        self.prec = self.mbits + 1  # precision p, including the hidden bit
        self.bias = (1 << (ebits - 1)) - 1
        self.emin = 1 - self.bias
        self.emax = self.bias
        self.sign_shift = width - 1
        self.exp_all_ones = (1 << ebits) - 1
        self.frac_mask = (1 << self.mbits) - 1
        self.hidden = 1 << self.mbits
        self.quiet_bit = 1 << (self.mbits - 1)
        self.inf = self.exp_all_ones << self.mbits
        self.canonical_nan = self.inf | self.quiet_bit
        self.max_finite = self.inf - 1
        self.mag_mask = (1 << (width - 1)) - 1

    def __repr__(self) -> str:
        return f"Format(binary{self.width})"


F32 = Format(32, 8)
F64 = Format(64, 11)

CANONICAL_NAN32 = F32.canonical_nan  # 0x7fc00000
CANONICAL_NAN64 = F64.canonical_nan  # 0x7ff8000000000000


# --------------------------------------------------------------------------- helpers


def is_nan(fmt: Format, a: int) -> bool:
    """True for any NaN (quiet or signaling)."""
    return (a & fmt.mag_mask) > fmt.inf


def is_snan(fmt: Format, a: int) -> bool:
    """True for a signaling NaN (NaN with the quiet bit clear)."""
    return (a & fmt.mag_mask) > fmt.inf and not a & fmt.quiet_bit


def _nan_flags(fmt: Format, *ops: int) -> int:
    """NV if any operand is a signaling NaN."""
    for a in ops:
        if (a & fmt.mag_mask) > fmt.inf and not a & fmt.quiet_bit:
            return NV
    return 0


def _decode(fmt: Format, a: int) -> tuple[int, int, int]:
    """Finite operand -> (sign, significand, exponent) with value = sig * 2**exp."""
    e = (a >> fmt.mbits) & fmt.exp_all_ones
    if e:
        return a >> fmt.sign_shift, (a & fmt.frac_mask) | fmt.hidden, e - fmt.bias - fmt.mbits
    # Subnormal or zero: no hidden bit, fixed exponent emin.
    return a >> fmt.sign_shift, a & fmt.frac_mask, fmt.emin - fmt.mbits


def _round_increment(rm: int, sign: int, kept: int, rem: int, shift: int) -> int:
    """1 if the truncated magnitude ``kept`` must be bumped by one ulp, else 0.

    ``rem`` (nonzero) holds the ``shift`` discarded low bits.
    """
    if rm == RNE:
        half = 1 << (shift - 1)
        return 1 if rem > half or (rem == half and kept & 1) else 0
    if rm == RTZ:
        return 0
    if rm == RDN:
        return sign
    if rm == RUP:
        return sign ^ 1
    # RMM: ties away from zero.
    return 1 if rem >= 1 << (shift - 1) else 0


def round_pack(sign: int, sig: int, exp: int, fmt: Format, rm: int) -> tuple[int, int]:
    """Round ``(-1)**sign * sig * 2**exp`` to ``fmt`` under ``rm``; return (bits, flags).

    ``sig`` is a non-negative integer.  If the true value is not exactly representable by
    ``sig`` (division, square root), the caller must provide at least two bits below the
    final rounding position and OR a sticky bit into the lowest one.  A zero ``sig`` packs
    a zero of the given sign.
    """
    if sig == 0:
        return sign << fmt.sign_shift, 0
    mbits = fmt.mbits
    emin = fmt.emin
    top = exp + sig.bit_length() - 1  # exponent of the leading one bit
    # Exponent of the result's least significant bit: normal results keep p bits,
    # results below 2**emin are pinned to the subnormal grid.
    q = top - mbits if top >= emin else emin - mbits
    shift = q - exp
    flags = 0
    if shift <= 0:
        kept = sig << -shift  # exact: no rounding needed
    else:
        kept = sig >> shift
        rem = sig & ((1 << shift) - 1)
        if rem:
            flags = NX
            kept += _round_increment(rm, sign, kept, rem, shift)
            if kept >> (mbits + 1):  # rounding carried into a new leading bit
                kept >>= 1
                q += 1
            if top < emin:
                # Tininess after rounding: would the result, rounded to p bits with an
                # unbounded exponent range, still be below 2**emin?  Only a value just
                # under 2**emin can round up to it.
                tiny = True
                if top == emin - 1:
                    su = shift - 1  # unbounded rounding keeps one more bit
                    if su > 0:
                        k = sig >> su
                        r = sig & ((1 << su) - 1)
                        if r and (k + _round_increment(rm, sign, k, r, su)) >> (mbits + 1):
                            tiny = False
                if tiny:
                    flags |= UF
    if kept >> mbits:
        biased = q + mbits + fmt.bias
        if biased >= fmt.exp_all_ones:
            # Overflow: infinity, or the largest finite number when rounding toward zero
            # (or toward the opposite infinity).
            flags |= OF | NX
            if rm == RTZ or (rm == RDN and not sign) or (rm == RUP and sign):
                return (sign << fmt.sign_shift) | fmt.max_finite, flags
            return (sign << fmt.sign_shift) | fmt.inf, flags
        return (sign << fmt.sign_shift) | (biased << mbits) | (kept & fmt.frac_mask), flags
    return (sign << fmt.sign_shift) | kept, flags  # subnormal (q == emin - mbits)


def _add_exact(
    sa: int, ma: int, xa: int, sb: int, mb: int, xb: int, fmt: Format, rm: int
) -> tuple[int, int]:
    """Round ``(-1)**sa*ma*2**xa + (-1)**sb*mb*2**xb`` once."""
    if not mb:
        if not ma:
            # Exact zero sum of two zeros: equal signs keep the sign, else +0 (-0 in RDN).
            return ((sa if sa == sb else (1 if rm == RDN else 0)) << fmt.sign_shift), 0
        return round_pack(sa, ma, xa, fmt, rm)
    if not ma:
        return round_pack(sb, mb, xb, fmt, rm)
    if abs(xa - xb) > 160:
        # Far-apart operands: replace the tiny one with a sticky bit so we never build
        # thousand-bit integers.  Let A be the operand with the higher top bit and g the
        # exponent below which nothing can affect rounding (min of A's lsb and two bits
        # under the result's lsb).  If B < 2**g, any value in (0, 2**g) gives the same
        # rounded result and flags, so 2**(g-1) stands in for it.
        ta = xa + ma.bit_length()
        tb = xb + mb.bit_length()
        if ta >= tb:
            g = min(xa, ta - fmt.prec - 2)
            if tb <= g:
                mb, xb = 1, g - 1
        else:
            g = min(xb, tb - fmt.prec - 2)
            if ta <= g:
                ma, xa = 1, g - 1
    if xa > xb:
        ma <<= xa - xb
        x = xb
    else:
        mb <<= xb - xa
        x = xa
    if sa == sb:
        return round_pack(sa, ma + mb, x, fmt, rm)
    diff = ma - mb
    if diff > 0:
        return round_pack(sa, diff, x, fmt, rm)
    if diff < 0:
        return round_pack(sb, -diff, x, fmt, rm)
    # Exact cancellation x - x is +0, except -0 when rounding down.
    return ((1 if rm == RDN else 0) << fmt.sign_shift), 0


# ------------------------------------------------- binary64 fast path (host arithmetic)

# When False the general entry points (add, mul, ...) skip the fast paths (the tests use it
# to check both paths agree); the ``*_d_rne`` functions always try them.
FAST_PATH = True

# Bits <-> float through one shared buffer: two views of the same 32 bytes.
_BUF = bytearray(32)
_U = memoryview(_BUF).cast("Q")
_D = memoryview(_BUF).cast("d")
_SPLITTER = 134217729.0  # 2**27 + 1, Veltkamp split constant for binary64
_ulp = math.ulp
_frexp = math.frexp
_sqrt = math.sqrt


# Biased-exponent window for the mul/div/sqrt/fma fast paths: |unbiased exponent| <= 480
# keeps products, quotients, Veltkamp splits and Dekker error terms clear of overflow and
# underflow, so the error-free transformations are exact. (x >> 52 & 0x7FF) - _FAST_LO
# must lie in [0, _FAST_SPAN].
_FAST_LO = 1023 - 480
_FAST_HI = 1023 + 480
_FAST_SPAN = _FAST_HI - _FAST_LO
_FRAC = (1 << 52) - 1
_HIDDEN = 1 << 52
_LOW52 = (1 << 52) - 1
_LOW53 = (1 << 53) - 1
_TINY = 2.0**-1000  # fma results at least this large are normal (no UF)
_HUGE = 2.0**1000  # fma addends below this cannot overflow TwoSum


def add_d_rne(a: int, b: int) -> tuple[int, int]:
    """binary64 a + b, round to nearest even: (bits, flags)."""
    _U[0] = a
    _U[1] = b
    x = _D[0]
    y = _D[1]
    s = x + y
    if s - s == 0.0:  # finite, so were x and y
        bb = s - x
        err = (x - (s - bb)) + (y - bb)
        if err - err == 0.0:  # no spurious overflow inside TwoSum
            _D[2] = s
            return _U[2], (NX if err != 0.0 else 0)
    return _add(F64, a, b, RNE)


def sub_d_rne(a: int, b: int) -> tuple[int, int]:
    """binary64 a - b, round to nearest even."""
    return add_d_rne(a, b ^ 0x8000000000000000)


def mul_d_rne(a: int, b: int) -> tuple[int, int]:
    """binary64 a * b, round to nearest even."""
    if ((a >> 52 & 0x7FF) - _FAST_LO) & 0xFFFFFFFF <= _FAST_SPAN and (
        (b >> 52 & 0x7FF) - _FAST_LO
    ) & 0xFFFFFFFF <= _FAST_SPAN:
        _U[0] = a
        _U[1] = b
        _D[2] = _D[0] * _D[1]
        # Normal operands: exact iff the 105/106-bit product of the significands has
        # nothing below its top 53 bits.
        m = ((a & _FRAC) | _HIDDEN) * ((b & _FRAC) | _HIDDEN)
        return _U[2], (NX if m & (_LOW53 if m >> 105 else _LOW52) else 0)
    return _mul(F64, a, b, RNE)


def div_d_rne(a: int, b: int) -> tuple[int, int]:
    """binary64 a / b, round to nearest even."""
    if ((a >> 52 & 0x7FF) - _FAST_LO) & 0xFFFFFFFF <= _FAST_SPAN and (
        (b >> 52 & 0x7FF) - _FAST_LO
    ) & 0xFFFFFFFF <= _FAST_SPAN:
        _U[0] = a
        _U[1] = b
        _D[2] = _D[0] / _D[1]
        q = _U[2]
        # Exact iff q * b == a exactly: the significands' product is a's significand
        # times a power of two (the quotient of normals in the window is normal).
        m = ((q & _FRAC) | _HIDDEN) * ((b & _FRAC) | _HIDDEN)
        return q, (0 if m == ((a & _FRAC) | _HIDDEN) << (m.bit_length() - 53) else NX)
    return _div(F64, a, b, RNE)


def sqrt_d_rne(a: int) -> tuple[int, int]:
    """binary64 square root, round to nearest even."""
    # Positive (sign bit clear) and inside the window: the host root is correctly
    # rounded, and exact iff r * r == a exactly.
    if ((a >> 52) - _FAST_LO) & 0xFFFFFFFF <= _FAST_SPAN:
        _U[0] = a
        _D[1] = _sqrt(_D[0])
        r = _U[1]
        m = ((r & _FRAC) | _HIDDEN) ** 2
        return r, (0 if m == ((a & _FRAC) | _HIDDEN) << (m.bit_length() - 53) else NX)
    return _sqrt_general(F64, a, RNE)


def fma_d_rne(a: int, b: int, c: int) -> tuple[int, int]:
    """binary64 a * b + c with a single rounding to nearest even."""
    if ((a >> 52 & 0x7FF) - _FAST_LO) & 0xFFFFFFFF <= _FAST_SPAN and (
        (b >> 52 & 0x7FF) - _FAST_LO
    ) & 0xFFFFFFFF <= _FAST_SPAN:
        _U[0] = a
        _U[1] = b
        _U[2] = c
        x = _D[0]
        y = _D[1]
        z = _D[2]
        if -_HUGE < z < _HUGE:  # finite (not NaN) and TwoSum cannot overflow
            p = x * y  # Dekker's TwoProduct: x*y == p + e
            t = _SPLITTER * x
            xh = t - (t - x)
            xl = x - xh
            t = _SPLITTER * y
            yh = t - (t - y)
            yl = y - yh
            e = ((xh * yh - p) + xh * yl + xl * yh) + xl * yl
            s = p + z  # TwoSum: p + z == s + t
            bb = s - p
            t = (p - (s - bb)) + (z - bb)
            u = t + e  # TwoSum: t + e == u + v
            bb = u - t
            v = (t - (u - bb)) + (e - bb)
            r = s + u  # TwoSum: s + u == r + w, so x*y + z == r + w + v exactly
            bb = r - s
            w = (s - (r - bb)) + (u - bb)
            if w == 0.0 and v == 0.0:
                if r != 0.0:  # an exact zero takes its sign from the operands' rules
                    _D[3] = r
                    return _U[3], 0
            elif _TINY <= abs(r):
                # r is the correctly rounded x*y + z iff |w + v| is below half the gap
                # to r's neighbour on that side (a quarter ulp below a power of two);
                # fl(|w| + |v|) < h proves it (rounding is monotonic, h is a float).
                h = _ulp(r) * 0.5
                if abs(_frexp(r)[0]) == 0.5:
                    h *= 0.5
                if abs(w) + abs(v) < h:
                    _D[3] = r
                    return _U[3], (NX if w + v != 0.0 else 0)
    return _fma(F64, a, b, c, RNE)


def int_to_d_exact(v: int) -> int:
    """binary64 bits of an integer that converts exactly (|v| < 2**53), any rounding."""
    _D[3] = v
    return _U[3]


def eq_d(a: int, b: int) -> tuple[int, int]:
    """binary64 quiet equality."""
    _U[0] = a
    _U[1] = b
    x = _D[0]
    y = _D[1]
    if x == x and y == y:
        return (1 if x == y else 0), 0
    return 0, _nan_flags(F64, a, b)


def lt_d(a: int, b: int) -> tuple[int, int]:
    """binary64 signaling less-than."""
    _U[0] = a
    _U[1] = b
    x = _D[0]
    y = _D[1]
    if x == x and y == y:
        return (1 if x < y else 0), 0
    return 0, NV


def le_d(a: int, b: int) -> tuple[int, int]:
    """binary64 signaling less-or-equal."""
    _U[0] = a
    _U[1] = b
    x = _D[0]
    y = _D[1]
    if x == x and y == y:
        return (1 if x <= y else 0), 0
    return 0, NV


# --------------------------------------------------------------------------- arithmetic


def add(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    """a + b."""
    if rm == RNE and fmt is F64 and FAST_PATH:
        return add_d_rne(a, b)
    return _add(fmt, a, b, rm)


def _add(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    """a + b on the integer path."""
    inf = fmt.inf
    ma_ = a & fmt.mag_mask
    mb_ = b & fmt.mag_mask
    if ma_ >= inf or mb_ >= inf:
        if ma_ > inf or mb_ > inf:
            return fmt.canonical_nan, _nan_flags(fmt, a, b)
        if ma_ == inf and mb_ == inf and a != b:
            return fmt.canonical_nan, NV  # inf - inf
        return (a if ma_ == inf else b), 0
    sa, siga, xa = _decode(fmt, a)
    sb, sigb, xb = _decode(fmt, b)
    return _add_exact(sa, siga, xa, sb, sigb, xb, fmt, rm)


def sub(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    """a - b (b's sign flipped; NaN results are canonical anyway)."""
    return add(fmt, a, b ^ (1 << fmt.sign_shift), rm)


def mul(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    """a * b."""
    if rm == RNE and fmt is F64 and FAST_PATH:
        return mul_d_rne(a, b)
    return _mul(fmt, a, b, rm)


def _mul(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    """a * b on the integer path."""
    inf = fmt.inf
    ma_ = a & fmt.mag_mask
    mb_ = b & fmt.mag_mask
    sign = (a ^ b) >> fmt.sign_shift
    if ma_ >= inf or mb_ >= inf:
        if ma_ > inf or mb_ > inf:
            return fmt.canonical_nan, _nan_flags(fmt, a, b)
        if ma_ == 0 or mb_ == 0:
            return fmt.canonical_nan, NV  # inf * 0
        return (sign << fmt.sign_shift) | inf, 0
    _, siga, xa = _decode(fmt, a)
    _, sigb, xb = _decode(fmt, b)
    return round_pack(sign, siga * sigb, xa + xb, fmt, rm)


def div(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    """a / b."""
    if rm == RNE and fmt is F64 and FAST_PATH:
        return div_d_rne(a, b)
    return _div(fmt, a, b, rm)


def _div(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    """a / b on the integer path."""
    inf = fmt.inf
    ma_ = a & fmt.mag_mask
    mb_ = b & fmt.mag_mask
    sign = (a ^ b) >> fmt.sign_shift
    if ma_ > inf or mb_ > inf:
        return fmt.canonical_nan, _nan_flags(fmt, a, b)
    if ma_ == inf:
        if mb_ == inf:
            return fmt.canonical_nan, NV  # inf / inf
        return (sign << fmt.sign_shift) | inf, 0
    if mb_ == inf:
        return sign << fmt.sign_shift, 0  # finite / inf = signed zero
    if mb_ == 0:
        if ma_ == 0:
            return fmt.canonical_nan, NV  # 0 / 0
        return (sign << fmt.sign_shift) | inf, DZ
    if ma_ == 0:
        return sign << fmt.sign_shift, 0
    _, siga, xa = _decode(fmt, a)
    _, sigb, xb = _decode(fmt, b)
    # Scale the dividend so the integer quotient has at least p+2 bits, then append a
    # sticky bit: guard + round + sticky below the rounding position.
    k = fmt.prec + 3 + sigb.bit_length() - siga.bit_length()
    if k < 0:
        k = 0
    quo, r = divmod(siga << k, sigb)
    return round_pack(sign, (quo << 1) | (1 if r else 0), xa - xb - k - 1, fmt, rm)


def sqrt(fmt: Format, a: int, rm: int) -> tuple[int, int]:
    """Square root (sqrt(-0) = -0; any other negative input is invalid)."""
    if rm == RNE and fmt is F64 and FAST_PATH:
        return sqrt_d_rne(a)
    return _sqrt_general(fmt, a, rm)


def _sqrt_general(fmt: Format, a: int, rm: int) -> tuple[int, int]:
    """Square root on the integer path."""
    inf = fmt.inf
    mag = a & fmt.mag_mask
    if mag > inf:
        return fmt.canonical_nan, _nan_flags(fmt, a)
    if mag == 0:
        return a, 0
    if a >> fmt.sign_shift:
        return fmt.canonical_nan, NV
    if mag == inf:
        return a, 0
    _, sig, exp = _decode(fmt, a)
    if exp & 1:  # make the exponent even so it halves exactly
        sig <<= 1
        exp -= 1
    # Scale by 4**k so the integer root has at least p+2 bits, then add a sticky bit.
    k = fmt.prec + 3 - (sig.bit_length() >> 1)
    if k < 0:
        k = 0
    n = sig << (2 * k)
    root = math.isqrt(n)
    sticky = 1 if root * root != n else 0
    return round_pack(0, (root << 1) | sticky, ((exp - 2 * k) >> 1) - 1, fmt, rm)


def fma(fmt: Format, a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    """a * b + c with a single rounding.

    Callers implement fmsub/fnmadd/fnmsub by flipping the sign bits of the operands.
    """
    if rm == RNE and fmt is F64 and FAST_PATH:
        return fma_d_rne(a, b, c)
    return _fma(fmt, a, b, c, rm)


def _fma(fmt: Format, a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    """a * b + c on the integer path."""
    inf = fmt.inf
    ma_ = a & fmt.mag_mask
    mb_ = b & fmt.mag_mask
    mc_ = c & fmt.mag_mask
    if ma_ >= inf or mb_ >= inf or mc_ >= inf:
        flags = _nan_flags(fmt, a, b, c)
        # inf * 0 is invalid even when the addend is a quiet NaN.
        if (ma_ == inf and mb_ == 0) or (ma_ == 0 and mb_ == inf):
            return fmt.canonical_nan, NV
        if ma_ > inf or mb_ > inf or mc_ > inf:
            return fmt.canonical_nan, flags
        psign = (a ^ b) >> fmt.sign_shift
        if ma_ == inf or mb_ == inf:
            if mc_ == inf and (c >> fmt.sign_shift) != psign:
                return fmt.canonical_nan, NV  # inf - inf
            return (psign << fmt.sign_shift) | inf, 0
        return c, 0  # finite product + infinite addend
    sa, siga, xa = _decode(fmt, a)
    sb, sigb, xb = _decode(fmt, b)
    sc, sigc, xc = _decode(fmt, c)
    return _add_exact(sa ^ sb, siga * sigb, xa + xb, sc, sigc, xc, fmt, rm)


# ------------------------------------------------------------------ min/max, compares


def _order_key(fmt: Format, a: int) -> int:
    """Total order on non-NaN values with -0 below +0 (for min/max)."""
    mag = a & fmt.mag_mask
    return -mag - 1 if a >> fmt.sign_shift else mag


def _value_key(fmt: Format, a: int) -> int:
    """Numeric order on non-NaN values where -0 == +0 (for comparisons)."""
    mag = a & fmt.mag_mask
    return -mag if a >> fmt.sign_shift else mag


def fmin(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """minimumNumber: a lone NaN is ignored, two NaNs give the canonical NaN."""
    na = is_nan(fmt, a)
    nb = is_nan(fmt, b)
    if na or nb:
        flags = _nan_flags(fmt, a, b)
        if na and nb:
            return fmt.canonical_nan, flags
        return (b if na else a), flags
    return (a if _order_key(fmt, a) <= _order_key(fmt, b) else b), 0


def fmax(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """maximumNumber: a lone NaN is ignored, two NaNs give the canonical NaN."""
    na = is_nan(fmt, a)
    nb = is_nan(fmt, b)
    if na or nb:
        flags = _nan_flags(fmt, a, b)
        if na and nb:
            return fmt.canonical_nan, flags
        return (b if na else a), flags
    return (a if _order_key(fmt, a) >= _order_key(fmt, b) else b), 0


def eq(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """Quiet equality: NaN compares unequal, NV only for signaling NaNs."""
    if fmt is F64 and FAST_PATH:
        return eq_d(a, b)
    if is_nan(fmt, a) or is_nan(fmt, b):
        return 0, _nan_flags(fmt, a, b)
    return (1 if _value_key(fmt, a) == _value_key(fmt, b) else 0), 0


def lt(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """Signaling less-than: any NaN operand raises NV."""
    if fmt is F64 and FAST_PATH:
        return lt_d(a, b)
    if is_nan(fmt, a) or is_nan(fmt, b):
        return 0, NV
    return (1 if _value_key(fmt, a) < _value_key(fmt, b) else 0), 0


def le(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """Signaling less-or-equal: any NaN operand raises NV."""
    if fmt is F64 and FAST_PATH:
        return le_d(a, b)
    if is_nan(fmt, a) or is_nan(fmt, b):
        return 0, NV
    return (1 if _value_key(fmt, a) <= _value_key(fmt, b) else 0), 0


def classify(fmt: Format, a: int) -> int:
    """The 10-bit fclass mask (exactly one bit set)."""
    neg = a >> fmt.sign_shift
    mag = a & fmt.mag_mask
    if mag > fmt.inf:
        return CLASS_QNAN if a & fmt.quiet_bit else CLASS_SNAN
    if mag == fmt.inf:
        return CLASS_NEG_INF if neg else CLASS_POS_INF
    if mag == 0:
        return CLASS_NEG_ZERO if neg else CLASS_POS_ZERO
    if mag < fmt.hidden:
        return CLASS_NEG_SUBNORMAL if neg else CLASS_POS_SUBNORMAL
    return CLASS_NEG_NORMAL if neg else CLASS_POS_NORMAL


# --------------------------------------------------------------------------- conversions


def to_int(fmt: Format, a: int, rm: int, width: int, signed: bool) -> tuple[int, int]:
    """Convert to a ``width``-bit integer, saturating like RISC-V.

    Returns the mathematical integer (negative allowed when ``signed``) and the flags.
    Out-of-range values and NaN raise NV only (no NX); NaN and +inf give the maximum,
    -inf and too-negative values give the minimum (0 for unsigned).
    """
    if signed:
        lo = -(1 << (width - 1))
        hi = (1 << (width - 1)) - 1
    else:
        lo = 0
        hi = (1 << width) - 1
    mag = a & fmt.mag_mask
    if mag >= fmt.inf:
        if mag > fmt.inf:
            return hi, NV  # NaN saturates to the largest positive value
        return (lo if a >> fmt.sign_shift else hi), NV
    sign, sig, exp = _decode(fmt, a)
    flags = 0
    if exp >= 0:
        if exp > width:  # sig >= 1, so certainly out of range; avoid huge shifts
            return (lo if sign else hi), NV
        v = sig << exp
    else:
        shift = -exp
        v = sig >> shift
        rem = sig & ((1 << shift) - 1)
        if rem:
            flags = NX
            v += _round_increment(rm, sign, v, rem, shift)
    if sign:
        v = -v
    if v < lo or v > hi:
        # The rounded value is out of range: invalid, and NX is not reported.
        return (lo if sign else hi), NV
    return v, flags


def from_int(fmt: Format, v: int, rm: int) -> tuple[int, int]:
    """Convert a Python integer (any sign) to ``fmt`` with rounding."""
    if v < 0:
        return round_pack(1, -v, 0, fmt, rm)
    return round_pack(0, v, 0, fmt, rm)


def convert(src: Format, dst: Format, a: int, rm: int) -> tuple[int, int]:
    """Convert between formats (widening is exact; narrowing rounds)."""
    mag = a & src.mag_mask
    sign = a >> src.sign_shift
    if mag > src.inf:
        return dst.canonical_nan, _nan_flags(src, a)
    if mag == src.inf:
        return (sign << dst.sign_shift) | dst.inf, 0
    _, sig, exp = _decode(src, a)
    return round_pack(sign, sig, exp, dst, rm)


def f32_to_f64(a: int) -> tuple[int, int]:
    """fcvt.d.s: exact except that NaNs become the canonical NaN."""
    return convert(F32, F64, a, RNE)


def f64_to_f32(a: int, rm: int) -> tuple[int, int]:
    """fcvt.s.d: rounds; NaNs become the canonical NaN (NV for sNaN)."""
    return convert(F64, F32, a, rm)
