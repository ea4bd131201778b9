/* bitmanip: Zba (address generation), Zbb (basic bit manipulation) and Zbs
 * (single-bit operations), as QEMU's rv64 CPU has them. Expected values worked
 * out by hand from the ratified Bit-Manipulation specification 1.0.0. */
#include "common.h"

TEST_NAME("bitmanip");

#define NORVC(s) ".option push\n.option norvc\n" s "\n.option pop\n"
#define T_RR(op, a, b, exp) do { uint64_t __r; \
    __asm__ __volatile__(NORVC(#op " %0, %1, %2") : "=r"(__r) \
                         : "r"((uint64_t)(a)), "r"((uint64_t)(b))); \
    CHECK_EQ(__r, (exp), #op " " #a ", " #b); } while (0)
#define T_RI(op, a, imm, exp) do { uint64_t __r; \
    __asm__ __volatile__(NORVC(#op " %0, %1, " #imm) : "=r"(__r) \
                         : "r"((uint64_t)(a))); \
    CHECK_EQ(__r, (exp), #op " " #a ", " #imm); } while (0)
#define T_R1(op, a, exp) do { uint64_t __r; \
    __asm__ __volatile__(NORVC(#op " %0, %1") : "=r"(__r) : "r"((uint64_t)(a))); \
    CHECK_EQ(__r, (exp), #op " " #a); } while (0)

#define ONES  0xffffffffffffffffULL
#define MIN64 0x8000000000000000ULL

int main(uint64_t hartid, uint64_t dtb)
{
    /* Zba */
    T_RR(sh1add, 5, 100, 110);
    T_RR(sh2add, 5, 100, 120);
    T_RR(sh3add, ONES, 0, 0xfffffffffffffff8ULL);
    T_RR(add.uw, 0xffffffff80000000ULL, 1, 0x80000001ULL);
    T_RR(sh1add.uw, 0x100000003ULL, 1, 7);
    T_RR(sh2add.uw, 0xffffffffffffffffULL, 0, 0x3fffffffcULL);
    T_RR(sh3add.uw, 0x100000002ULL, 1, 17);
    T_RI(slli.uw, 0xffffffff80000001ULL, 4, 0x800000010ULL);

    /* Zbb: logic with negate */
    T_RR(andn, 0xc, 0xa, 0x4);
    T_RR(orn, 0, 0, ONES);
    T_RR(xnor, 5, 5, ONES);
    /* counts */
    T_R1(clz, 0, 64);
    T_R1(clz, 1, 63);
    T_R1(clz, MIN64, 0);
    T_R1(ctz, 0, 64);
    T_R1(ctz, 0x8, 3);
    T_R1(cpop, ONES, 64);
    T_R1(cpop, 0x8000000000000101ULL, 3);
    T_R1(clzw, 0xffffffff00000001ULL, 31);
    T_R1(clzw, 0xffffffff00000000ULL, 32);
    T_R1(ctzw, 0xffffffff00000000ULL, 32);
    T_R1(ctzw, 0x80000000ULL, 31);
    T_R1(cpopw, 0xffffffff00000003ULL, 2);
    /* min/max */
    T_RR(max, ONES, 1, 1);
    T_RR(maxu, ONES, 1, ONES);
    T_RR(min, ONES, 1, ONES);
    T_RR(minu, ONES, 1, 1);
    /* sign and zero extension */
    T_R1(sext.b, 0x80, 0xffffffffffffff80ULL);
    T_R1(sext.b, 0x17f, 0x7f);
    T_R1(sext.h, 0x8000, 0xffffffffffff8000ULL);
    T_R1(zext.h, 0x12345678ULL, 0x5678);
    /* rotations */
    T_RR(rol, 0x8000000000000001ULL, 1, 3);
    T_RR(rol, 1, 64, 1);                      /* only the low 6 bits count */
    T_RR(ror, 1, 1, MIN64);
    T_RI(rori, 0x10, 4, 1);
    T_RR(rolw, 0x80000000ULL, 1, 1);
    T_RR(rorw, 1, 1, 0xffffffff80000000ULL);  /* the 32-bit result, sign-extended */
    T_RI(roriw, 0x100000002ULL, 1, 1);
    /* byte operations */
    T_R1(rev8, 0x0102030405060708ULL, 0x0807060504030201ULL);
    T_R1(orc.b, 0x0100000000008000ULL, 0xff0000000000ff00ULL);

    /* Zbs */
    T_RR(bclr, ONES, 65, 0xfffffffffffffffdULL);   /* bit 65 & 63 = 1 */
    T_RI(bclri, ONES, 63, 0x7fffffffffffffffULL);
    T_RR(bext, 0x4, 2, 1);
    T_RI(bexti, 0x10000000000ULL, 40, 1);
    T_RR(binv, 0, 64, 1);
    T_RI(binvi, 1, 0, 0);
    T_RR(bset, 0, 3, 8);
    T_RI(bseti, 0, 63, MIN64);
    pass();
}

CHECK_COUNT_OK();
