/* rv64m: the M extension (multiply/divide) incl. high-half products,
 * W forms, division by zero and signed-overflow results. */
#include "common.h"

TEST_NAME("rv64m");

#define NORVC(s) ".option push\n.option norvc\n" s "\n.option pop\n"
#define T_RR(op, a, b, exp) do { uint64_t __r; \
    __asm__ __volatile__(NORVC(#op " %0, %1, %2") : "=r"(__r) \
                         : "r"((uint64_t)(a)), "r"((uint64_t)(b))); \
    CHECK_EQ(__r, (exp), #op " " #a ", " #b); } while (0)

#define MIN64 0x8000000000000000ULL
#define MAX64 0x7fffffffffffffffULL
#define ONES  0xffffffffffffffffULL

int main(uint64_t hartid, uint64_t dtb)
{
    /* mul: low 64 bits */
    T_RR(mul, 3, 7, 21);
    T_RR(mul, -1, -1, 1);
    T_RR(mul, -3, 7, -21);
    T_RR(mul, MAX64, 2, 0xfffffffffffffffeULL);
    T_RR(mul, MIN64, -1, MIN64);
    T_RR(mul, 0x100000001ULL, 0x100000001ULL, 0x0000000200000001ULL);

    /* mulh: signed x signed, high 64 bits */
    T_RR(mulh, -1, -1, 0);
    T_RR(mulh, MIN64, MIN64, 0x4000000000000000ULL);
    T_RR(mulh, MAX64, MAX64, 0x3fffffffffffffffULL);
    T_RR(mulh, -2, 3, ONES);
    T_RR(mulh, MIN64, 2, ONES);
    T_RR(mulh, 0x100000000ULL, 0x100000000ULL, 1);

    /* mulhu: unsigned x unsigned */
    T_RR(mulhu, ONES, ONES, 0xfffffffffffffffeULL);
    T_RR(mulhu, MIN64, 2, 1);
    T_RR(mulhu, -2, 3, 2);
    T_RR(mulhu, 0x123456789ULL, 0x10, 0);

    /* mulhsu: rs1 signed x rs2 unsigned */
    T_RR(mulhsu, -1, ONES, ONES);        /* -(2^64-1) = -2^64 + 1 */
    T_RR(mulhsu, 1, ONES, 0);
    T_RR(mulhsu, MIN64, 2, ONES);        /* -2^64 */
    T_RR(mulhsu, 2, MIN64, 1);           /* 2^64 */
    T_RR(mulhsu, -2, 3, ONES);

    /* mulw: low 32 bits of the product, sign-extended; upper input bits ignored */
    T_RR(mulw, 0x7fffffff, 2, 0xfffffffffffffffeULL);
    T_RR(mulw, 0x100000003ULL, 5, 15);
    T_RR(mulw, 0x10000, 0x10000, 0);
    T_RR(mulw, 0x40000000, 2, 0xffffffff80000000ULL);
    T_RR(mulw, -3, 0xffffffff00000007ULL, -21);

    /* div / divu */
    T_RR(div, 20, 6, 3);
    T_RR(div, -20, 6, -3);               /* rounds toward zero */
    T_RR(div, 20, -6, -3);
    T_RR(div, -20, -6, 3);
    T_RR(div, 20, 0, ONES);              /* x / 0 = -1 */
    T_RR(div, -20, 0, ONES);
    T_RR(div, MIN64, -1, MIN64);         /* overflow */
    T_RR(divu, 20, 6, 3);
    T_RR(divu, ONES, 2, MAX64);
    T_RR(divu, -20, 6, 0x2aaaaaaaaaaaaaa7ULL);
    T_RR(divu, 20, 0, ONES);             /* x / 0 = 2^64-1 */

    /* rem / remu: sign follows the dividend */
    T_RR(rem, 20, 6, 2);
    T_RR(rem, -20, 6, -2);
    T_RR(rem, 20, -6, 2);
    T_RR(rem, -20, -6, -2);
    T_RR(rem, -7, 0, -7);                /* x % 0 = x */
    T_RR(rem, MIN64, -1, 0);             /* overflow */
    T_RR(remu, ONES, 10, 5);
    T_RR(remu, 20, 6, 2);
    T_RR(remu, -7, 0, -7);

    /* divw / divuw / remw / remuw: 32-bit operands, sign-extended results */
    T_RR(divw, -20, 6, -3);
    T_RR(divw, 0xffffffff00000014ULL, 6, 3);
    T_RR(divw, 0x80000000, -1, 0xffffffff80000000ULL);      /* INT32_MIN / -1 */
    T_RR(divw, 5, 0, ONES);
    T_RR(divw, 5, 0x100000000ULL, ONES);                    /* divisor low 32 bits = 0 */
    T_RR(divuw, 0xffffffff, 2, 0x7fffffff);
    T_RR(divuw, 0x80000000, 1, 0xffffffff80000000ULL);      /* result sign-extended */
    T_RR(divuw, 0x123456789ULL, 0, ONES);                   /* 0xffffffff sign-extended */
    T_RR(divuw, 0xfffffffffffffff0ULL, 0x10, 0x0fffffff);   /* 0xfffffff0 / 16 */
    T_RR(remw, -20, 6, -2);
    T_RR(remw, 0x80000000, -1, 0);
    T_RR(remw, 0x123456789ULL, 0, 0x23456789);
    T_RR(remw, 0xfffffffffffffff9ULL, 0, -7);
    T_RR(remw, 0xabcdef0000000011ULL, 0x5, 2);
    T_RR(remuw, 0xfffffffb, 3, 2);
    T_RR(remuw, 0x80000005, 0, 0xffffffff80000005ULL);
    T_RR(remuw, 0x1000000007ULL, 0x100000004ULL, 3);
    pass();
}

CHECK_COUNT_OK();
