/* fp: F and D extensions with exact expected bit patterns and fflags:
 * every rounding mode (static and dynamic through frm), NX/UF/OF/DZ/NV,
 * fused multiply-add, sqrt, min/max with NaN and signed zero, comparisons,
 * fclass, conversions incl. saturation, fmv, sign injection, NaN-boxing and
 * canonical NaNs, illegal rounding modes and the mstatus.FS field. */
#include "common.h"

TEST_NAME("fp");

/* fflags bits */
#define NX 0x01
#define UF 0x02
#define OF 0x04
#define DZ 0x08
#define NV 0x10

/* single-precision patterns */
#define S_ZERO   0x00000000u
#define S_NZERO  0x80000000u
#define S_ONE    0x3f800000u
#define S_MONE   0xbf800000u
#define S_TWO    0x40000000u
#define S_THREE  0x40400000u
#define S_FOUR   0x40800000u
#define S_HALF   0x3f000000u
#define S_INF    0x7f800000u
#define S_NINF   0xff800000u
#define S_QNAN   0x7fc00000u      /* canonical NaN */
#define S_QNANP  0x7fc00123u      /* quiet NaN with payload */
#define S_SNAN   0x7f800001u
#define S_MINNORM 0x00800000u
#define S_1E30   0x7149f2cau
#define S_1EM30  0x0da24260u
#define S_2M24   0x33800000u      /* 2^-24 */
/* double-precision patterns */
#define D_ZERO   0x0000000000000000ULL
#define D_NZERO  0x8000000000000000ULL
#define D_ONE    0x3ff0000000000000ULL
#define D_MONE   0xbff0000000000000ULL
#define D_TWO    0x4000000000000000ULL
#define D_THREE  0x4008000000000000ULL
#define D_INF    0x7ff0000000000000ULL
#define D_NINF   0xfff0000000000000ULL
#define D_QNAN   0x7ff8000000000000ULL
#define D_SNAN   0x7ff0000000000001ULL
#define D_2M53   0x3ca0000000000000ULL  /* 2^-53 */
#define D_THIRD  0x3fd5555555555555ULL  /* 1/3 rounded to nearest */
#define D_X      0x3ff0000000400000ULL  /* 1 + 2^-30 */
#define D_Y      0x3ff0000000800000ULL  /* 1 + 2^-29 = round(x*x) */
#define D_MY     0xbff0000000800000ULL
#define D_1E19   0x43e158e460913d00ULL
#define D_1E300  0x7e37e43c8800759cULL
#define D_M2P5   0xc004000000000000ULL  /* -2.5 */

#define SX32(v) ((uint64_t)(int64_t)(int32_t)(uint32_t)(v))
#define BOX(v)  (0xffffffff00000000ULL | (uint32_t)(v))

/* Generic FP check: clears fflags, runs `body` (operands in %2 %3 %4 as
 * integer registers, result into %0), then reads fflags into %1. */
#define FP_T(body, a, b, c, exp, expfl, what) do { uint64_t __r, __f; \
    __asm__ __volatile__("csrwi fflags, 0\n" body "\ncsrr %1, fflags" \
        : "=&r"(__r), "=&r"(__f) \
        : "r"((uint64_t)(a)), "r"((uint64_t)(b)), "r"((uint64_t)(c)) \
        : "ft0", "ft1", "ft2", "ft3", "memory"); \
    CHECK_EQ2(__r, __f, (exp), (expfl), what " (result/fflags)"); } while (0)

#define LS1 "fmv.w.x ft0, %2\n"
#define LS2 LS1 "fmv.w.x ft1, %3\n"
#define LS3 LS2 "fmv.w.x ft3, %4\n"
#define LD1 "fmv.d.x ft0, %2\n"
#define LD2 LD1 "fmv.d.x ft1, %3\n"
#define LD3 LD2 "fmv.d.x ft3, %4\n"
#define RS  "\nfmv.x.w %0, ft2"
#define RD  "\nfmv.x.d %0, ft2"

/* float ops: op text uses ft2 = dest, ft0/ft1/ft3 = sources */
#define TS1(op, a, exp, fl, what)       FP_T(LS1 op RS, a, 0, 0, SX32(exp), fl, what)
#define TS2(op, a, b, exp, fl, what)    FP_T(LS2 op RS, a, b, 0, SX32(exp), fl, what)
#define TS3(op, a, b, c, exp, fl, what) FP_T(LS3 op RS, a, b, c, SX32(exp), fl, what)
#define TD1(op, a, exp, fl, what)       FP_T(LD1 op RD, a, 0, 0, exp, fl, what)
#define TD2(op, a, b, exp, fl, what)    FP_T(LD2 op RD, a, b, 0, exp, fl, what)
#define TD3(op, a, b, c, exp, fl, what) FP_T(LD3 op RD, a, b, c, exp, fl, what)
/* float -> integer register (op writes %0) */
#define TSI1(op, a, exp, fl, what)      FP_T(LS1 op, a, 0, 0, exp, fl, what)
#define TSI2(op, a, b, exp, fl, what)   FP_T(LS2 op, a, b, 0, exp, fl, what)
#define TDI1(op, a, exp, fl, what)      FP_T(LD1 op, a, 0, 0, exp, fl, what)
#define TDI2(op, a, b, exp, fl, what)   FP_T(LD2 op, a, b, 0, exp, fl, what)
/* integer register (%2) -> float */
#define TIS(op, x, exp, fl, what)       FP_T(op RS, x, 0, 0, SX32(exp), fl, what)
#define TID(op, x, exp, fl, what)       FP_T(op RD, x, 0, 0, exp, fl, what)

static void test_rounding(void)
{
    /* 1/3 in single: 1.0101...b x 2^-2, the 24th+ bits are 1010... (> half) */
    TS2("fdiv.s ft2, ft0, ft1, rne", S_ONE, S_THREE, 0x3eaaaaab, NX, "fdiv.s 1/3 rne");
    TS2("fdiv.s ft2, ft0, ft1, rtz", S_ONE, S_THREE, 0x3eaaaaaa, NX, "fdiv.s 1/3 rtz");
    TS2("fdiv.s ft2, ft0, ft1, rdn", S_ONE, S_THREE, 0x3eaaaaaa, NX, "fdiv.s 1/3 rdn");
    TS2("fdiv.s ft2, ft0, ft1, rup", S_ONE, S_THREE, 0x3eaaaaab, NX, "fdiv.s 1/3 rup");
    TS2("fdiv.s ft2, ft0, ft1, rmm", S_ONE, S_THREE, 0x3eaaaaab, NX, "fdiv.s 1/3 rmm");
    TS2("fdiv.s ft2, ft0, ft1, rdn", S_MONE, S_THREE, 0xbeaaaaab, NX, "fdiv.s -1/3 rdn");
    TS2("fdiv.s ft2, ft0, ft1, rup", S_MONE, S_THREE, 0xbeaaaaaa, NX, "fdiv.s -1/3 rup");
    TS2("fdiv.s ft2, ft0, ft1, rtz", S_MONE, S_THREE, 0xbeaaaaaa, NX, "fdiv.s -1/3 rtz");
    /* 1/3 in double: the bits after the 52nd are 0101... (< half) */
    TD2("fdiv.d ft2, ft0, ft1, rne", D_ONE, D_THREE, 0x3fd5555555555555ULL, NX, "fdiv.d 1/3 rne");
    TD2("fdiv.d ft2, ft0, ft1, rup", D_ONE, D_THREE, 0x3fd5555555555556ULL, NX, "fdiv.d 1/3 rup");
    TD2("fdiv.d ft2, ft0, ft1, rmm", D_ONE, D_THREE, 0x3fd5555555555555ULL, NX, "fdiv.d 1/3 rmm");
    TD2("fdiv.d ft2, ft0, ft1, rdn", D_MONE, D_THREE, 0xbfd5555555555556ULL, NX, "fdiv.d -1/3 rdn");
    /* exact ties: 1 + 2^-24 is halfway between 1 and 1 + 2^-23 */
    TS2("fadd.s ft2, ft0, ft1, rne", S_ONE, S_2M24, 0x3f800000, NX, "fadd.s tie rne (to even)");
    TS2("fadd.s ft2, ft0, ft1, rmm", S_ONE, S_2M24, 0x3f800001, NX, "fadd.s tie rmm (away)");
    TS2("fadd.s ft2, ft0, ft1, rup", S_ONE, S_2M24, 0x3f800001, NX, "fadd.s tie rup");
    TS2("fadd.s ft2, ft0, ft1, rdn", S_ONE, S_2M24, 0x3f800000, NX, "fadd.s tie rdn");
    TS2("fadd.s ft2, ft0, ft1, rmm", S_MONE, 0xb3800000u, 0xbf800001, NX, "fadd.s -tie rmm");
    TS2("fadd.s ft2, ft0, ft1, rne", S_MONE, 0xb3800000u, 0xbf800000, NX, "fadd.s -tie rne");
    TS2("fadd.s ft2, ft0, ft1, rne", 0x3f800001u, S_2M24, 0x3f800002, NX, "fadd.s odd tie rne (up to even)");
    TD2("fadd.d ft2, ft0, ft1, rne", D_ONE, D_2M53, D_ONE, NX, "fadd.d tie rne");
    TD2("fadd.d ft2, ft0, ft1, rmm", D_ONE, D_2M53, 0x3ff0000000000001ULL, NX, "fadd.d tie rmm");
    TS2("fsub.s ft2, ft0, ft1, rne", S_ONE, S_ONE, S_ZERO, 0, "fsub.s 1-1 rne = +0");
    TS2("fsub.s ft2, ft0, ft1, rdn", S_ONE, S_ONE, S_NZERO, 0, "fsub.s 1-1 rdn = -0");
    TS2("fmul.s ft2, ft0, ft1, rne", S_THREE, S_HALF, 0x3fc00000, 0, "fmul.s 3*0.5 exact");

    /* dynamic rounding mode through frm */
    csr_write(frm, 1);
    TS2("fdiv.s ft2, ft0, ft1, dyn", S_ONE, S_THREE, 0x3eaaaaaa, NX, "fdiv.s 1/3 dyn frm=RTZ");
    csr_write(frm, 2);
    TS2("fdiv.s ft2, ft0, ft1, dyn", S_MONE, S_THREE, 0xbeaaaaab, NX, "fdiv.s -1/3 dyn frm=RDN");
    csr_write(frm, 3);
    TD2("fdiv.d ft2, ft0, ft1, dyn", D_ONE, D_THREE, 0x3fd5555555555556ULL, NX, "fdiv.d 1/3 dyn frm=RUP");
    csr_write(frm, 4);
    TS2("fadd.s ft2, ft0, ft1, dyn", S_ONE, S_2M24, 0x3f800001, NX, "fadd.s tie dyn frm=RMM");
    TS2("fadd.s ft2, ft0, ft1",      S_ONE, S_2M24, 0x3f800001, NX, "fadd.s tie default rm (dyn) frm=RMM");
    csr_write(frm, 0);
    TS2("fadd.s ft2, ft0, ft1, dyn", S_ONE, S_2M24, 0x3f800000, NX, "fadd.s tie dyn frm=RNE");

    /* fcsr = frm << 5 | fflags */
    csr_write(fcsr, 0);
    csr_write(frm, 3);
    csr_write(fflags, 0x1f);
    CHECK_EQ(csr_read(fcsr), 0x7f, "fcsr = frm<<5 | fflags");
    csr_write(fcsr, 0xff);          /* only 8 bits exist */
    CHECK_EQ2(csr_read(frm), csr_read(fflags), 7, 0x1f, "fcsr write splits into frm/fflags");
    uint64_t old;
    __asm__ __volatile__("fsrm %0, %1" : "=r"(old) : "r"(2UL));
    CHECK_EQ2(old, csr_read(fcsr), 7, 0x5f, "fsrm swaps frm");
    csr_write(fcsr, 0);

    /* invalid rounding modes raise illegal instruction */
    csr_write(frm, 5);
    CHECK_EQ(csr_read(frm), 5, "frm holds reserved value 5");
    EXPECT_TRAP();
    __asm__ __volatile__("fadd.s ft2, ft0, ft1, dyn" ::: "ft2", "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "dyn rm with frm=5 -> illegal instruction");
    csr_write(frm, 0);
    EXPECT_TRAP();
    __asm__ __volatile__(".insn r 0x53, 5, 0, ft2, ft0, ft1" ::: "ft2", "memory"); /* fadd.s rm=5 */
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "static rm=5 -> illegal instruction");
    EXPECT_TRAP();
    __asm__ __volatile__(".insn r 0x53, 6, 1, ft2, ft0, ft1" ::: "ft2", "memory"); /* fadd.d rm=6 */
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "static rm=6 (fadd.d) -> illegal instruction");
}

static void test_flags(void)
{
    TS2("fmul.s ft2, ft0, ft1, rne", S_1EM30, S_1EM30, S_ZERO, UF | NX, "fmul.s underflow to 0");
    TS2("fmul.s ft2, ft0, ft1, rne", S_MINNORM, S_HALF, 0x00400000, 0,
        "fmul.s exact subnormal: no UF");
    TS2("fmul.s ft2, ft0, ft1, rup", S_1EM30, S_1EM30, 0x00000001, UF | NX,
        "fmul.s underflow rup -> min subnormal");
    TS2("fmul.s ft2, ft0, ft1, rne", S_1E30, S_1E30, S_INF, OF | NX, "fmul.s overflow rne -> inf");
    TS2("fmul.s ft2, ft0, ft1, rtz", S_1E30, S_1E30, 0x7f7fffff, OF | NX, "fmul.s overflow rtz -> max");
    TS2("fdiv.s ft2, ft0, ft1, rne", S_ONE, S_ZERO, S_INF, DZ, "fdiv.s 1/+0 = +inf DZ");
    TS2("fdiv.s ft2, ft0, ft1, rne", S_MONE, S_ZERO, S_NINF, DZ, "fdiv.s -1/+0 = -inf DZ");
    TD2("fdiv.d ft2, ft0, ft1, rne", D_ONE, D_NZERO, D_NINF, DZ, "fdiv.d 1/-0 = -inf DZ");
    TS2("fdiv.s ft2, ft0, ft1, rne", S_ZERO, S_ZERO, S_QNAN, NV, "fdiv.s 0/0 = NaN NV");
    TS2("fsub.s ft2, ft0, ft1, rne", S_INF, S_INF, S_QNAN, NV, "fsub.s inf-inf NV");
    TS2("fmul.s ft2, ft0, ft1, rne", S_ZERO, S_INF, S_QNAN, NV, "fmul.s 0*inf NV");
    TD2("fmul.d ft2, ft0, ft1, rne", D_INF, D_ZERO, D_QNAN, NV, "fmul.d inf*0 NV");
    TS2("fdiv.s ft2, ft0, ft1, rne", S_INF, S_TWO, S_INF, 0, "fdiv.s inf/2 exact");
    /* NaN results are always the canonical NaN; sNaN operands raise NV */
    TS2("fadd.s ft2, ft0, ft1, rne", S_QNANP, S_ONE, S_QNAN, 0, "fadd.s qNaN payload -> canonical");
    TS2("fadd.s ft2, ft0, ft1, rne", S_SNAN, S_ONE, S_QNAN, NV, "fadd.s sNaN -> canonical NV");
    TD2("fadd.d ft2, ft0, ft1, rne", D_ONE, D_SNAN, D_QNAN, NV, "fadd.d sNaN -> canonical NV");
    TD2("fmul.d ft2, ft0, ft1, rne", 0x7ff8000000000abcULL, D_ONE, D_QNAN, 0,
        "fmul.d qNaN payload -> canonical");
    /* flags accumulate */
    FP_T(LS3 "fdiv.s ft2, ft0, ft1, rne\nfdiv.s ft2, ft0, ft3, rne\nfmv.x.w %0, ft2",
         S_ONE, S_THREE, S_ZERO, SX32(S_INF), NX | DZ, "fflags accumulate NX then DZ");
    csr_write(fflags, 0);
    uint64_t f;
    __asm__ __volatile__("csrwi fflags, 0x3\n fsflags %0, %1" : "=r"(f) : "r"(0x10UL));
    CHECK_EQ2(f, csr_read(fflags), 3, 0x10, "fsflags swaps fflags");
    csr_write(fflags, 0);
}

static void test_fma_sqrt(void)
{
    TS3("fmadd.s ft2, ft0, ft1, ft3, rne", S_TWO, S_THREE, S_ONE, 0x40e00000, 0, "fmadd.s 2*3+1");
    TS3("fmsub.s ft2, ft0, ft1, ft3, rne", S_TWO, S_THREE, S_ONE, 0x40a00000, 0, "fmsub.s 2*3-1");
    TS3("fnmadd.s ft2, ft0, ft1, ft3, rne", S_TWO, S_THREE, S_ONE, 0xc0e00000, 0, "fnmadd.s -(2*3)-1");
    TS3("fnmsub.s ft2, ft0, ft1, ft3, rne", S_TWO, S_THREE, S_ONE, 0xc0a00000, 0, "fnmsub.s -(2*3)+1");
    /* single rounding: x = 1+2^-30, x*x = 1 + 2^-29 + 2^-60 exactly; y = 1+2^-29 */
    TD3("fmsub.d ft2, ft0, ft1, ft3, rne", D_X, D_X, D_Y, 0x3c30000000000000ULL, 0,
        "fmsub.d x*x-y = 2^-60 (fused)");
    TD3("fmadd.d ft2, ft0, ft1, ft3, rne", D_X, D_X, D_MY, 0x3c30000000000000ULL, 0,
        "fmadd.d x*x+(-y) = 2^-60 (fused)");
    TD3("fnmsub.d ft2, ft0, ft1, ft3, rne", D_X, D_X, D_Y, 0xbc30000000000000ULL, 0,
        "fnmsub.d -(x*x)+y = -2^-60");
    TD3("fnmadd.d ft2, ft0, ft1, ft3, rne", D_X, D_X, D_MY, 0xbc30000000000000ULL, 0,
        "fnmadd.d -(x*x)-(-y) = -2^-60");
    TD3("fmadd.d ft2, ft0, ft1, ft3, rne", D_X, D_X, D_ZERO, D_Y, NX, "fmadd.d x*x+0 rounds once");
    TS3("fmadd.s ft2, ft0, ft1, ft3, rne", S_INF, S_ZERO, S_QNAN, S_QNAN, NV,
        "fmadd.s inf*0+qNaN raises NV");
    TS3("fmadd.s ft2, ft0, ft1, ft3, rdn", S_ONE, S_ONE, S_MONE, S_NZERO, 0, "fmadd.s 1*1-1 rdn = -0");
    TS3("fmadd.s ft2, ft0, ft1, ft3, rne", S_ONE, S_ONE, S_MONE, S_ZERO, 0, "fmadd.s 1*1-1 rne = +0");

    TS1("fsqrt.s ft2, ft0, rne", S_TWO, 0x3fb504f3, NX, "fsqrt.s 2");
    TS1("fsqrt.s ft2, ft0, rne", S_FOUR, S_TWO, 0, "fsqrt.s 4 exact");
    TS1("fsqrt.s ft2, ft0, rne", S_NZERO, S_NZERO, 0, "fsqrt.s -0 = -0");
    TS1("fsqrt.s ft2, ft0, rne", S_MONE, S_QNAN, NV, "fsqrt.s -1 = NaN NV");
    TS1("fsqrt.s ft2, ft0, rne", S_INF, S_INF, 0, "fsqrt.s inf");
    TD1("fsqrt.d ft2, ft0, rne", D_TWO, 0x3ff6a09e667f3bcdULL, NX, "fsqrt.d 2");
    TD1("fsqrt.d ft2, ft0, rdn", D_TWO, 0x3ff6a09e667f3bccULL, NX, "fsqrt.d 2 rdn (rne rounded up)");
    TD1("fsqrt.d ft2, ft0, rne", D_MONE, D_QNAN, NV, "fsqrt.d -1 = NaN NV");
}

static void test_minmax_cmp(void)
{
    TS2("fmin.s ft2, ft0, ft1", S_ONE, S_QNAN, S_ONE, 0, "fmin.s(1, qNaN) = 1");
    TS2("fmin.s ft2, ft0, ft1", S_QNANP, S_ONE, S_ONE, 0, "fmin.s(qNaN, 1) = 1");
    TS2("fmax.s ft2, ft0, ft1", S_ONE, S_SNAN, S_ONE, NV, "fmax.s(1, sNaN) = 1 NV");
    TS2("fmax.s ft2, ft0, ft1", S_QNANP, S_QNANP, S_QNAN, 0, "fmax.s(NaN, NaN) = canonical");
    TS2("fmin.s ft2, ft0, ft1", S_NZERO, S_ZERO, S_NZERO, 0, "fmin.s(-0, +0) = -0");
    TS2("fmin.s ft2, ft0, ft1", S_ZERO, S_NZERO, S_NZERO, 0, "fmin.s(+0, -0) = -0");
    TS2("fmax.s ft2, ft0, ft1", S_NZERO, S_ZERO, S_ZERO, 0, "fmax.s(-0, +0) = +0");
    TS2("fmax.s ft2, ft0, ft1", S_MONE, S_TWO, S_TWO, 0, "fmax.s(-1, 2) = 2");
    TS2("fmin.s ft2, ft0, ft1", S_NINF, S_MONE, S_NINF, 0, "fmin.s(-inf, -1) = -inf");
    TD2("fmin.d ft2, ft0, ft1", D_NZERO, D_ZERO, D_NZERO, 0, "fmin.d(-0, +0) = -0");
    TD2("fmax.d ft2, ft0, ft1", D_QNAN, D_ONE, D_ONE, 0, "fmax.d(qNaN, 1) = 1");
    TD2("fmin.d ft2, ft0, ft1", D_SNAN, D_SNAN, D_QNAN, NV, "fmin.d(sNaN, sNaN) = canonical NV");

    TSI2("feq.s %0, ft0, ft1", S_ONE, S_ONE, 1, 0, "feq.s 1 == 1");
    TSI2("feq.s %0, ft0, ft1", S_QNAN, S_ONE, 0, 0, "feq.s qNaN quiet");
    TSI2("feq.s %0, ft0, ft1", S_SNAN, S_ONE, 0, NV, "feq.s sNaN NV");
    TSI2("flt.s %0, ft0, ft1", S_QNAN, S_ONE, 0, NV, "flt.s qNaN NV (signaling compare)");
    TSI2("fle.s %0, ft0, ft1", S_ONE, S_QNAN, 0, NV, "fle.s qNaN NV");
    TSI2("feq.s %0, ft0, ft1", S_NZERO, S_ZERO, 1, 0, "feq.s -0 == +0");
    TSI2("flt.s %0, ft0, ft1", S_NZERO, S_ZERO, 0, 0, "flt.s -0 < +0 false");
    TSI2("fle.s %0, ft0, ft1", S_NZERO, S_ZERO, 1, 0, "fle.s -0 <= +0");
    TSI2("flt.s %0, ft0, ft1", S_MONE, S_ONE, 1, 0, "flt.s -1 < 1");
    TSI2("flt.s %0, ft0, ft1", S_NINF, S_MONE, 1, 0, "flt.s -inf < -1");
    TDI2("flt.d %0, ft0, ft1", D_ONE, D_TWO, 1, 0, "flt.d 1 < 2");
    TDI2("fle.d %0, ft0, ft1", D_TWO, D_ONE, 0, 0, "fle.d 2 <= 1 false");
    TDI2("feq.d %0, ft0, ft1", D_QNAN, D_QNAN, 0, 0, "feq.d NaN != NaN");
    TDI2("flt.d %0, ft0, ft1", D_SNAN, D_ONE, 0, NV, "flt.d sNaN NV");
}

static void test_fclass(void)
{
    TSI1("fclass.s %0, ft0", S_NINF, 1 << 0, 0, "fclass.s -inf");
    TSI1("fclass.s %0, ft0", S_MONE, 1 << 1, 0, "fclass.s -normal");
    TSI1("fclass.s %0, ft0", 0x80000001u, 1 << 2, 0, "fclass.s -subnormal");
    TSI1("fclass.s %0, ft0", S_NZERO, 1 << 3, 0, "fclass.s -0");
    TSI1("fclass.s %0, ft0", S_ZERO, 1 << 4, 0, "fclass.s +0");
    TSI1("fclass.s %0, ft0", 0x007fffffu, 1 << 5, 0, "fclass.s +subnormal");
    TSI1("fclass.s %0, ft0", S_MINNORM, 1 << 6, 0, "fclass.s +normal");
    TSI1("fclass.s %0, ft0", S_INF, 1 << 7, 0, "fclass.s +inf");
    TSI1("fclass.s %0, ft0", S_SNAN, 1 << 8, 0, "fclass.s sNaN");
    TSI1("fclass.s %0, ft0", 0xffc00000u, 1 << 9, 0, "fclass.s qNaN (negative)");
    TDI1("fclass.d %0, ft0", D_NINF, 1 << 0, 0, "fclass.d -inf");
    TDI1("fclass.d %0, ft0", 0x000fffffffffffffULL, 1 << 5, 0, "fclass.d +subnormal");
    TDI1("fclass.d %0, ft0", D_NZERO, 1 << 3, 0, "fclass.d -0");
    TDI1("fclass.d %0, ft0", D_ONE, 1 << 6, 0, "fclass.d +normal");
    TDI1("fclass.d %0, ft0", D_SNAN, 1 << 8, 0, "fclass.d sNaN");
    TDI1("fclass.d %0, ft0", D_QNAN, 1 << 9, 0, "fclass.d qNaN");
    /* a single that is not NaN-boxed is seen as the canonical (quiet) NaN */
    TDI1("fclass.s %0, ft0", 0x000000003f800000ULL, 1 << 9, 0, "fclass.s of unboxed value = qNaN");
}

static void test_convert(void)
{
    /* float -> int, rounding */
    TSI1("fcvt.w.s %0, ft0, rtz", 0x406ccccdu, 3, NX, "fcvt.w.s 3.7 rtz");
    TSI1("fcvt.w.s %0, ft0, rne", 0x406ccccdu, 4, NX, "fcvt.w.s 3.7 rne");
    TSI1("fcvt.w.s %0, ft0, rne", 0xc0600000u, -4, NX, "fcvt.w.s -3.5 rne");
    TSI1("fcvt.w.s %0, ft0, rmm", 0xc0600000u, -4, NX, "fcvt.w.s -3.5 rmm");
    TSI1("fcvt.w.s %0, ft0, rup", 0xc0600000u, -3, NX, "fcvt.w.s -3.5 rup");
    TSI1("fcvt.w.s %0, ft0, rdn", 0xc0600000u, -4, NX, "fcvt.w.s -3.5 rdn");
    TSI1("fcvt.w.s %0, ft0, rtz", 0xc0600000u, -3, NX, "fcvt.w.s -3.5 rtz");
    TSI1("fcvt.w.s %0, ft0, rne", 0x40200000u, 2, NX, "fcvt.w.s 2.5 rne");
    TSI1("fcvt.w.s %0, ft0, rmm", 0x40200000u, 3, NX, "fcvt.w.s 2.5 rmm");
    TSI1("fcvt.w.s %0, ft0, rtz", S_MONE, -1, 0, "fcvt.w.s -1 exact");
    /* saturation */
    TSI1("fcvt.w.s %0, ft0, rtz", 0x501502f9u, 0x7fffffff, NV, "fcvt.w.s 1e10 saturates");
    TSI1("fcvt.w.s %0, ft0, rtz", 0xd01502f9u, 0xffffffff80000000ULL, NV, "fcvt.w.s -1e10 saturates");
    TSI1("fcvt.w.s %0, ft0, rtz", S_QNAN, 0x7fffffff, NV, "fcvt.w.s NaN -> INT32_MAX");
    TSI1("fcvt.w.s %0, ft0, rtz", S_NINF, 0xffffffff80000000ULL, NV, "fcvt.w.s -inf -> INT32_MIN");
    TSI1("fcvt.wu.s %0, ft0, rtz", S_MONE, 0, NV, "fcvt.wu.s -1 -> 0 NV");
    TSI1("fcvt.wu.s %0, ft0, rtz", 0xbf000000u, 0, NX, "fcvt.wu.s -0.5 rtz -> 0 NX only");
    TSI1("fcvt.wu.s %0, ft0, rtz", 0x4f32d05eu, 0xffffffffb2d05e00ULL, 0,
         "fcvt.wu.s 3e9 (result sign-extended)");
    TSI1("fcvt.wu.s %0, ft0, rtz", 0x501502f9u, 0xffffffffffffffffULL, NV, "fcvt.wu.s 1e10 saturates");
    TSI1("fcvt.wu.s %0, ft0, rtz", S_QNAN, 0xffffffffffffffffULL, NV, "fcvt.wu.s NaN");
    TSI1("fcvt.l.s %0, ft0, rtz", 0xd01502f9u, 0xfffffffdabf41c00ULL, 0, "fcvt.l.s -1e10 exact");
    TSI1("fcvt.lu.s %0, ft0, rtz", S_NINF, 0, NV, "fcvt.lu.s -inf -> 0");
    TDI1("fcvt.l.d %0, ft0, rtz", D_1E19, 0x7fffffffffffffffULL, NV, "fcvt.l.d 1e19 saturates");
    TDI1("fcvt.l.d %0, ft0, rtz", D_NINF, 0x8000000000000000ULL, NV, "fcvt.l.d -inf");
    TDI1("fcvt.l.d %0, ft0, rne", D_M2P5, -2, NX, "fcvt.l.d -2.5 rne");
    TDI1("fcvt.lu.d %0, ft0, rtz", D_1E19, 0x8ac7230489e80000ULL, 0, "fcvt.lu.d 1e19 exact");
    TDI1("fcvt.lu.d %0, ft0, rtz", D_QNAN, 0xffffffffffffffffULL, NV, "fcvt.lu.d NaN");
    TDI1("fcvt.lu.d %0, ft0, rtz", D_MONE, 0, NV, "fcvt.lu.d -1 -> 0 NV");
    TDI1("fcvt.w.d %0, ft0, rtz", D_1E19, 0x7fffffff, NV, "fcvt.w.d 1e19 saturates");
    TDI1("fcvt.wu.d %0, ft0, rtz", 0x41efffffffe00000ULL, 0xffffffffffffffffULL, 0,
         "fcvt.wu.d 4294967295 (sign-extended)");

    /* int -> float */
    TIS("fcvt.s.w ft2, %2, rne", -1, S_MONE, 0, "fcvt.s.w -1");
    TIS("fcvt.s.w ft2, %2, rne", 0x100000002ULL, S_TWO, 0, "fcvt.s.w uses low 32 bits");
    TIS("fcvt.s.wu ft2, %2, rne", 0xffffffffULL, 0x4f800000, NX, "fcvt.s.wu 0xffffffff -> 2^32");
    TIS("fcvt.s.wu ft2, %2, rtz", 0xffffffffULL, 0x4f7fffff, NX, "fcvt.s.wu 0xffffffff rtz");
    TIS("fcvt.s.l ft2, %2, rne", 16777217, 0x4b800000, NX, "fcvt.s.l 2^24+1 rne");
    TIS("fcvt.s.l ft2, %2, rup", 16777217, 0x4b800001, NX, "fcvt.s.l 2^24+1 rup");
    TIS("fcvt.s.lu ft2, %2, rne", 0x8000000000000000ULL, 0x5f000000, 0, "fcvt.s.lu 2^63");
    TID("fcvt.d.l ft2, %2, rne", 0x8000000000000000ULL, 0xc3e0000000000000ULL, 0, "fcvt.d.l INT64_MIN");
    TID("fcvt.d.lu ft2, %2, rne", 0xffffffffffffffffULL, 0x43f0000000000000ULL, NX,
        "fcvt.d.lu 2^64-1 -> 2^64");
    TID("fcvt.d.w ft2, %2", 0xfffffffffffffffbULL, 0xc014000000000000ULL, 0, "fcvt.d.w -5");
    TID("fcvt.d.wu ft2, %2", 0xffffffffULL, 0x41efffffffe00000ULL, 0, "fcvt.d.wu 0xffffffff exact");

    /* float <-> double */
    FP_T(LD1 "fcvt.s.d ft2, ft0, rne" RS, D_THIRD, 0, 0, SX32(0x3eaaaaab), NX, "fcvt.s.d 1/3 rne");
    FP_T(LD1 "fcvt.s.d ft2, ft0, rtz" RS, D_THIRD, 0, 0, SX32(0x3eaaaaaa), NX, "fcvt.s.d 1/3 rtz");
    FP_T(LD1 "fcvt.s.d ft2, ft0, rne" RS, D_1E300, 0, 0, SX32(S_INF), OF | NX, "fcvt.s.d 1e300 overflow");
    FP_T(LD1 "fcvt.s.d ft2, ft0, rne" RS, 0x3690000000000000ULL, 0, 0, 0, UF | NX,
         "fcvt.s.d 2^-150 underflow");
    FP_T(LD1 "fcvt.s.d ft2, ft0, rne" RS, 0x7ff8000000000abcULL, 0, 0, SX32(S_QNAN), 0,
         "fcvt.s.d qNaN -> canonical");
    FP_T(LS1 "fcvt.d.s ft2, ft0" RD, 0x3eaaaaabu, 0, 0, 0x3fd5555560000000ULL, 0, "fcvt.d.s exact");
    FP_T(LS1 "fcvt.d.s ft2, ft0" RD, S_SNAN, 0, 0, D_QNAN, NV, "fcvt.d.s sNaN -> canonical NV");
    FP_T(LS1 "fcvt.d.s ft2, ft0" RD, 0x80000001u, 0, 0, 0xb6a0000000000000ULL, 0,
         "fcvt.d.s -min subnormal exact");
}

static volatile uint64_t mem[2] __attribute__((aligned(16)));

static void test_move_box(void)
{
    /* fmv.w.x NaN-boxes, fmv.x.w sign-extends */
    FP_T("fmv.w.x ft2, %2\nfmv.x.d %0, ft2", 0xdeadbeef3f800000ULL, 0, 0,
         BOX(S_ONE), 0, "fmv.w.x takes low 32 bits and NaN-boxes");
    FP_T("fmv.w.x ft2, %2\nfmv.x.w %0, ft2", 0x80000000, 0, 0, 0xffffffff80000000ULL, 0,
         "fmv.x.w sign-extends");
    FP_T("fmv.d.x ft2, %2\nfmv.x.d %0, ft2", D_SNAN, 0, 0, D_SNAN, 0, "fmv.d.x/fmv.x.d keep sNaN bits");
    /* single-precision results are NaN-boxed */
    FP_T(LS2 "fadd.s ft2, ft0, ft1, rne\nfmv.x.d %0, ft2", S_ONE, S_ONE, 0, BOX(S_TWO), 0,
         "fadd.s result NaN-boxed");
    /* an operand that is not NaN-boxed is the canonical NaN */
    FP_T("fmv.d.x ft0, %2\nfmv.w.x ft1, %3\nfadd.s ft2, ft0, ft1, rne\nfmv.x.d %0, ft2",
         0x000000003f800000ULL, S_ONE, 0, BOX(S_QNAN), 0, "fadd.s unboxed operand -> canonical NaN");
    FP_T("fmv.d.x ft0, %2\nfmv.w.x ft1, %3\nfsgnjn.s ft2, ft0, ft1\nfmv.x.d %0, ft2",
         0x000000003f800000ULL, S_ONE, 0, BOX(0xffc00000u), 0, "fsgnjn.s unboxed operand -> NaN");
    /* fmv.x.w / fsw transfer the low 32 bits without checking the boxing */
    FP_T("fmv.d.x ft0, %2\nfmv.x.w %0, ft0", 0x123456789abcdef0ULL, 0, 0, 0xffffffff9abcdef0ULL, 0,
         "fmv.x.w of unboxed register");
    mem[0] = 0x5555555555555555ULL;
    FP_T("fmv.d.x ft0, %2\nfsw ft0, 0(%3)\nld %0, 0(%3)", 0x123456789abcdef0ULL, &mem[0], 0,
         0x555555559abcdef0ULL, 0, "fsw stores low 32 bits");
    mem[1] = 0x40490fdb;      /* pi as single */
    FP_T("flw ft0, 8(%2)\nfmv.x.d %0, ft0", mem, 0, 0, BOX(0x40490fdb), 0, "flw NaN-boxes");
    mem[1] = D_M2P5;
    FP_T("fld ft0, 8(%2)\nfsd ft0, 0(%2)\nld %0, 0(%2)", mem, 0, 0, D_M2P5, 0, "fld/fsd");

    /* sign injection: no canonicalisation, no flags */
    TS2("fsgnj.s ft2, ft0, ft1", S_SNAN, S_MONE, 0xff800001, 0, "fsgnj.s keeps sNaN payload");
    TS2("fsgnjn.s ft2, ft0, ft1", S_ONE, S_ONE, S_MONE, 0, "fsgnjn.s (fneg)");
    TS2("fsgnjx.s ft2, ft0, ft1", S_MONE, S_MONE, S_ONE, 0, "fsgnjx.s (-1, -1) = 1");
    TD2("fsgnj.d ft2, ft0, ft1", D_ONE, 0xc000000000000000ULL, D_MONE, 0, "fsgnj.d");
    TD2("fsgnjx.d ft2, ft0, ft1", D_MONE, D_ONE, D_MONE, 0, "fsgnjx.d (-1, 1) = -1");
}

static uint64_t fs_field(void) { return (csr_read(mstatus) & MSTATUS_FS) >> 13; }

static void test_fs(void)
{
    /* FS Initial -> Dirty on an FP register write; SD mirrors dirty */
    csr_clear(mstatus, MSTATUS_FS);
    csr_set(mstatus, 1UL << 13);
    CHECK_EQ(fs_field(), 1, "mstatus.FS writable (Initial)");
    __asm__ __volatile__("fmv.w.x ft5, %0" :: "r"(0x40490fdbUL) : "ft5");
    CHECK_EQ(fs_field(), 3, "FP register write sets FS=Dirty");
    CHECK(csr_read(mstatus) & MSTATUS_SD, "mstatus.SD set when FS is Dirty");
    csr_clear(mstatus, MSTATUS_FS);
    csr_set(mstatus, 2UL << 13);
    CHECK(!(csr_read(mstatus) & MSTATUS_SD), "mstatus.SD clear when FS is Clean");
    csr_write(fflags, 1);
    CHECK_EQ(fs_field(), 3, "fflags write sets FS=Dirty");
    csr_write(fflags, 0);

    /* FS = Off: every FP instruction and FP CSR access is illegal */
    csr_clear(mstatus, MSTATUS_FS);
    CHECK_EQ(fs_field(), 0, "mstatus.FS = Off");
    uint32_t insn;
    EXPECT_TRAP();
    __asm__ __volatile__(".option push\n.option norvc\n"
                         "la %0, 1f\n1: fadd.s ft2, ft0, ft1\n.option pop"
                         : "=&r"(insn) :: "ft2", "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "FS=0: fadd.s -> illegal instruction");
    CHECK(trap_tval == 0 || trap_tval == *(uint32_t *)(uintptr_t)insn,
          "FS=0: mtval = instruction bits or 0");
    uint64_t r = 0;
    EXPECT_TRAP();
    __asm__ __volatile__("fmv.x.w %0, ft5" : "+r"(r) :: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "FS=0: fmv.x.w -> illegal instruction");
    EXPECT_TRAP();
    __asm__ __volatile__("csrr %0, fcsr" : "+r"(r) :: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "FS=0: csrr fcsr -> illegal instruction");
    EXPECT_TRAP();
    __asm__ __volatile__("flw ft2, 0(%0)" :: "r"(mem) : "ft2", "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "FS=0: flw -> illegal instruction");
    EXPECT_TRAP();
    __asm__ __volatile__("c.fld fa0, 0(%0)" :: "r"(mem) : "fa0", "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "FS=0: c.fld -> illegal instruction");
    CHECK_EQ(fs_field(), 0, "FS stays Off after the traps");

    /* back on: the register file kept its contents */
    csr_set(mstatus, 1UL << 13);
    __asm__ __volatile__("fmv.x.w %0, ft5" : "=r"(r));
    CHECK_EQ(r, 0x40490fdb, "FP registers preserved while FS=Off");
    csr_set(mstatus, MSTATUS_FS);
}

int main(uint64_t hartid, uint64_t dtb)
{
    csr_write(fcsr, 0);
    test_rounding();
    test_flags();
    test_fma_sqrt();
    test_minmax_cmp();
    test_fclass();
    test_convert();
    test_move_box();
    test_fs();
    pass();
}

CHECK_COUNT_OK();
