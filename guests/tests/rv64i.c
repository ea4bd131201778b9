/* rv64i: every RV64I base instruction with hand-computed expected values.
 * All instructions under test are emitted with `.option norvc` so the 32-bit
 * encodings are what runs.  ecall/ebreak are covered by `traps`. */
#include "common.h"

TEST_NAME("rv64i");

#define NORVC(s) ".option push\n.option norvc\n" s "\n.option pop\n"

/* register-register op */
#define T_RR(op, a, b, exp) do { uint64_t __r; \
    __asm__ __volatile__(NORVC(#op " %0, %1, %2") : "=r"(__r) \
                         : "r"((uint64_t)(a)), "r"((uint64_t)(b))); \
    CHECK_EQ(__r, (exp), #op " " #a ", " #b); } while (0)

/* register-immediate op (imm is pasted into the assembly text) */
#define T_RI(op, a, imm, exp) do { uint64_t __r; \
    __asm__ __volatile__(NORVC(#op " %0, %1, " #imm) : "=r"(__r) \
                         : "r"((uint64_t)(a))); \
    CHECK_EQ(__r, (exp), #op " " #a ", " #imm); } while (0)

/* conditional branch: result 1 if taken, 0 if it fell through */
#define T_BR(op, a, b, taken) do { uint64_t __r; \
    __asm__ __volatile__(NORVC("li %0, 1\n" #op " %1, %2, 1f\nli %0, 0\n1:") \
                         : "=&r"(__r) : "r"((uint64_t)(a)), "r"((uint64_t)(b))); \
    CHECK_EQ(__r, (taken), #op " " #a ", " #b " taken?"); } while (0)

static volatile uint64_t ldata[2] __attribute__((aligned(16))) = {
    0xf0e0d0c0b0a09080ULL, 0x7f6f5f4f3f2f1f0fULL,
};
static volatile uint64_t sdata[2] __attribute__((aligned(16)));

/* self-modifying code buffer: addi a0, x0, 1 ; jalr x0, 0(ra) */
static uint32_t smc[2] __attribute__((aligned(8))) = { 0x00100513u, 0x00008067u };

static void test_arith(void)
{
    T_RR(add, 5, 7, 12);
    T_RR(add, 0x7fffffffffffffffULL, 1, 0x8000000000000000ULL);
    T_RR(add, -1, 1, 0);
    T_RR(sub, 5, 7, -2);
    T_RR(sub, 0x8000000000000000ULL, 1, 0x7fffffffffffffffULL);
    T_RI(addi, 5, -2048, -2043);
    T_RI(addi, 5, 2047, 2052);
    T_RI(addi, 0xffffffffffffffffULL, 1, 0);
    T_RR(addw, 0x7fffffff, 1, 0xffffffff80000000ULL);
    T_RR(addw, 0x1234567800000001ULL, 0xabcdef0000000002ULL, 3);
    T_RI(addiw, 0x7fffffff, 1, 0xffffffff80000000ULL);
    T_RI(addiw, 0xffffffff00000005ULL, -6, 0xffffffffffffffffULL);
    T_RI(addiw, 0x123456789abcdef0ULL, 0, 0xffffffff9abcdef0ULL); /* sext.w */
    T_RR(subw, 0x80000000, 1, 0x7fffffff);
    T_RR(subw, 0, 1, 0xffffffffffffffffULL);
    T_RR(subw, 0xaaaaaaaa00000005ULL, 0x5555555500000003ULL, 2);
}

static void test_logic(void)
{
    T_RR(and, 0xff00ff00ff00ff00ULL, 0x0ff00ff00ff00ff0ULL, 0x0f000f000f000f00ULL);
    T_RR(or,  0xff00ff00ff00ff00ULL, 0x0ff00ff00ff00ff0ULL, 0xfff0fff0fff0fff0ULL);
    T_RR(xor, 0xff00ff00ff00ff00ULL, 0x0ff00ff00ff00ff0ULL, 0xf0f0f0f0f0f0f0f0ULL);
    T_RI(andi, 0x123456789abcdef0ULL, -16, 0x123456789abcdef0ULL);
    T_RI(andi, 0x123456789abcdef0ULL, 0x7f0, 0x6f0);
    T_RI(ori,  0x1200000000000000ULL, -2048, 0xfffffffffffff800ULL);
    T_RI(ori,  0x1200000000000000ULL, 0x0f0, 0x12000000000000f0ULL);
    T_RI(xori, 0x00ff00ff00ff00ffULL, -1, 0xff00ff00ff00ff00ULL);      /* not */
    T_RI(xori, 0x00ff00ff00ff00ffULL, 0x100, 0x00ff00ff00ff01ffULL);
}

static void test_compare(void)
{
    T_RR(slt, -1, 1, 1);
    T_RR(slt, 1, -1, 0);
    T_RR(slt, 5, 5, 0);
    T_RR(slt, 0x8000000000000000ULL, 0x7fffffffffffffffULL, 1);
    T_RR(sltu, -1, 1, 0);
    T_RR(sltu, 1, -1, 1);
    T_RR(sltu, 0, 1, 1);        /* snez-like */
    T_RI(slti, -5, -4, 1);
    T_RI(slti, -4, -5, 0);
    T_RI(slti, 0x7fffffffffffffffULL, 2047, 0);
    T_RI(sltiu, 5, -1, 1);      /* imm sign-extends to 0xfff...f, compared unsigned */
    T_RI(sltiu, 0, 1, 1);       /* seqz */
    T_RI(sltiu, 7, 1, 0);
    T_RI(sltiu, 0xfffffffffffff800ULL, -2048, 0);
}

static void test_shifts(void)
{
    T_RR(sll, 1, 63, 0x8000000000000000ULL);
    T_RR(sll, 3, 64, 3);                       /* shamt = rs2[5:0] */
    T_RR(sll, 3, 65, 6);
    T_RR(srl, 0x8000000000000000ULL, 63, 1);
    T_RR(srl, 0xf000000000000000ULL, 0xffffffffffffffc4ULL, 0x0f00000000000000ULL);
    T_RR(sra, 0x8000000000000000ULL, 63, 0xffffffffffffffffULL);
    T_RR(sra, 0x4000000000000000ULL, 62, 1);
    T_RI(slli, 1, 63, 0x8000000000000000ULL);
    T_RI(slli, 0x00000000ffffffffULL, 32, 0xffffffff00000000ULL);
    T_RI(srli, 0x8000000000000000ULL, 63, 1);
    T_RI(srli, 0xffffffffffffffffULL, 32, 0x00000000ffffffffULL);
    T_RI(srai, 0x8000000000000000ULL, 63, 0xffffffffffffffffULL);
    T_RI(srai, 0x8000000000000000ULL, 32, 0xffffffff80000000ULL);
    T_RR(sllw, 1, 31, 0xffffffff80000000ULL);
    T_RR(sllw, 3, 32, 3);                      /* shamt = rs2[4:0] */
    T_RR(sllw, 0xffffffff00000001ULL, 1, 2);
    T_RR(srlw, 0xffffffff80000000ULL, 31, 1);
    T_RR(srlw, 0x12345678f0000000ULL, 4, 0x0f000000);
    T_RR(srlw, 0x0000000080000000ULL, 0, 0xffffffff80000000ULL);   /* result sign-extended */
    T_RR(sraw, 0x0000000080000000ULL, 31, 0xffffffffffffffffULL);
    T_RR(sraw, 0xffffffff7fffffffULL, 30, 1);
    T_RR(sraw, 0x80000000, 33, 0xffffffffc0000000ULL);
    T_RI(slliw, 1, 31, 0xffffffff80000000ULL);
    T_RI(slliw, 0x00000000c0000001ULL, 1, 0xffffffff80000002ULL);
    T_RI(srliw, 0xffffffff80000000ULL, 31, 1);
    T_RI(srliw, 0x0000000080000000ULL, 0, 0xffffffff80000000ULL);
    T_RI(srliw, 0xabcdef0012345678ULL, 4, 0x01234567);
    T_RI(sraiw, 0x0000000080000000ULL, 31, 0xffffffffffffffffULL);
    T_RI(sraiw, 0x000000007fffffffULL, 31, 0);
    T_RI(sraiw, 0xffffffff80000000ULL, 4, 0xfffffffff8000000ULL);
}

static void test_upper(void)
{
    uint64_t r, pc, pc2;
    __asm__ __volatile__(NORVC("lui %0, 0x12345") : "=r"(r));
    CHECK_EQ(r, 0x12345000, "lui 0x12345");
    __asm__ __volatile__(NORVC("lui %0, 0x80000") : "=r"(r));
    CHECK_EQ(r, 0xffffffff80000000ULL, "lui 0x80000 sign-extends");
    __asm__ __volatile__(NORVC("lui %0, 0xfffff") : "=r"(r));
    CHECK_EQ(r, 0xfffffffffffff000ULL, "lui 0xfffff");

    /* jal gives the address of the following auipc independently */
    __asm__ __volatile__(NORVC("jal %1, 1f\n1: auipc %0, 0") : "=r"(r), "=r"(pc));
    CHECK_EQ(r, pc, "auipc 0");
    __asm__ __volatile__(NORVC("jal %1, 1f\n1: auipc %0, 1") : "=r"(r), "=r"(pc));
    CHECK_EQ(r, pc + 0x1000, "auipc 1");
    __asm__ __volatile__(NORVC("jal %1, 1f\n1: auipc %0, 0xfffff") : "=r"(r), "=r"(pc));
    CHECK_EQ(r, pc - 0x1000, "auipc 0xfffff (negative)");
    __asm__ __volatile__(NORVC("jal %1, 1f\n1: auipc %0, 0x80000") : "=r"(r), "=r"(pc));
    CHECK_EQ(r, pc - 0x80000000ULL, "auipc 0x80000 (sign-extended)");
    (void)pc2;
}

static void test_branches(void)
{
    T_BR(beq, 5, 5, 1);
    T_BR(beq, 5, 6, 0);
    T_BR(beq, 0x100000005ULL, 5, 0);          /* all 64 bits compared */
    T_BR(bne, 5, 6, 1);
    T_BR(bne, 5, 5, 0);
    T_BR(blt, -1, 1, 1);
    T_BR(blt, 1, -1, 0);
    T_BR(blt, 3, 3, 0);
    T_BR(blt, 0x8000000000000000ULL, 0x7fffffffffffffffULL, 1);
    T_BR(bge, 3, 3, 1);
    T_BR(bge, -1, 1, 0);
    T_BR(bge, 1, -1, 1);
    T_BR(bltu, 1, -1, 1);
    T_BR(bltu, -1, 1, 0);
    T_BR(bltu, 7, 7, 0);
    T_BR(bgeu, -1, 1, 1);
    T_BR(bgeu, 1, -1, 0);
    T_BR(bgeu, 7, 7, 1);

    /* backward branch: count down 10 iterations */
    uint64_t n = 10, iters;
    __asm__ __volatile__(NORVC("li %0, 0\n1: addi %0, %0, 1\naddi %1, %1, -1\nbnez %1, 1b")
                         : "=&r"(iters), "+r"(n));
    CHECK_EQ(iters, 10, "backward bne loop count");

    /* a taken branch over a long distance (> 2 KiB forward) */
    uint64_t r;
    __asm__ __volatile__(NORVC("li %0, 1\nbeq zero, zero, 1f\nli %0, 0\n.skip 3000, 0\n1:")
                         : "=&r"(r));
    CHECK_EQ(r, 1, "beq forward 3000 bytes");
}

static void test_jumps(void)
{
    uint64_t link, base, skipped;

    /* jal: link = pc + 4, skipped instruction not executed */
    __asm__ __volatile__(NORVC("li %2, 0\nauipc %1, 0\njal %0, 1f\nli %2, 1\n1:")
                         : "=r"(link), "=&r"(base), "=&r"(skipped));
    CHECK_EQ(link, base + 8, "jal link value");
    CHECK_EQ(skipped, 0, "jal skipped instruction");

    /* jal x0 (j) backwards and forwards */
    __asm__ __volatile__(NORVC("li %0, 0\nj 2f\n1: addi %0, %0, 1\nj 3f\n2: addi %0, %0, 2\nj 1b\n3:")
                         : "=&r"(skipped));
    CHECK_EQ(skipped, 3, "jal x0 forward/backward");

    /* jalr clears bit 0 of the target */
    __asm__ __volatile__(NORVC("li %2, 0\nauipc %1, 0\naddi %0, %1, 17\njalr %0, 0(%0)\n"
                               "li %2, 1\n1:")
                         : "=&r"(link), "=&r"(base), "=&r"(skipped));
    /* auipc@A, addi@A+4, jalr@A+8 -> link A+12, target (A+17)&~1 = A+16 */
    CHECK_EQ(link, base + 12, "jalr odd target: link (rd == rs1)");
    CHECK_EQ(skipped, 0, "jalr odd target: bit 0 cleared");

    /* negative offset, rd != rs1 */
    uint64_t t;
    __asm__ __volatile__(NORVC("li %3, 0\nauipc %1, 0\naddi %2, %1, 28\njalr %0, -12(%2)\n"
                               "li %3, 1\n1:")
                         : "=&r"(link), "=&r"(base), "=&r"(t), "=&r"(skipped));
    CHECK_EQ(link, base + 12, "jalr -12(rs1): link");
    CHECK_EQ(skipped, 0, "jalr -12(rs1): target");
    CHECK_EQ(t, base + 28, "jalr rs1 unchanged");

    /* jalr x0 as return */
    __asm__ __volatile__(NORVC("li %0, 5\njal t0, 1f\naddi %0, %0, 1\nj 2f\n"
                               "1: addi %0, %0, 10\njalr x0, 0(t0)\n2:")
                         : "=&r"(t) :: "t0");
    CHECK_EQ(t, 16, "jal t0 / jalr x0, 0(t0) call-return");
}

static void test_loads(void)
{
    const volatile uint64_t *p = ldata;
    uint64_t r;
#define T_LD(op, off, base, exp) do { \
    __asm__ __volatile__(NORVC(#op " %0, " #off "(%1)") : "=r"(r) : "r"(base) : "memory"); \
    CHECK_EQ(r, (exp), #op " " #off "(" #base ")"); } while (0)
    const volatile uint8_t *e = (const volatile uint8_t *)p + 16;   /* end pointer */
    T_LD(lb,  0, p, 0xffffffffffffff80ULL);
    T_LD(lb,  8, p, 0x0f);
    T_LD(lbu, 0, p, 0x80);
    T_LD(lbu, 7, p, 0xf0);
    T_LD(lh,  0, p, 0xffffffffffff9080ULL);
    T_LD(lh,  8, p, 0x1f0f);
    T_LD(lhu, 0, p, 0x9080);
    T_LD(lhu, 6, p, 0xf0e0);
    T_LD(lw,  0, p, 0xffffffffb0a09080ULL);
    T_LD(lw,  4, p, 0xfffffffff0e0d0c0ULL);
    T_LD(lw,  8, p, 0x3f2f1f0f);
    T_LD(lwu, 0, p, 0xb0a09080ULL);
    T_LD(lwu, 12, p, 0x7f6f5f4fULL);
    T_LD(ld,  0, p, 0xf0e0d0c0b0a09080ULL);
    T_LD(ld,  8, p, 0x7f6f5f4f3f2f1f0fULL);
    T_LD(lb,  -1, e, 0x7f);
    T_LD(lh,  -2, e, 0x7f6f);
    T_LD(lw,  -12, e, 0xfffffffff0e0d0c0ULL);
    T_LD(ld,  -16, e, 0xf0e0d0c0b0a09080ULL);
#undef T_LD
}

static void test_stores(void)
{
    volatile uint64_t *p = sdata;
    uint64_t v = 0x1122334455667788ULL;
    __asm__ __volatile__(NORVC("sd %1, 0(%0)") :: "r"(p), "r"(v) : "memory");
    CHECK_EQ(p[0], 0x1122334455667788ULL, "sd");
    v = 0xffffffffffffffabULL;
    __asm__ __volatile__(NORVC("sb %1, 1(%0)") :: "r"(p), "r"(v) : "memory");
    CHECK_EQ(p[0], 0x112233445566ab88ULL, "sb stores low byte only");
    v = 0x123456789abccdefULL;
    __asm__ __volatile__(NORVC("sh %1, 2(%0)") :: "r"(p), "r"(v) : "memory");
    CHECK_EQ(p[0], 0x11223344cdefab88ULL, "sh stores low half only");
    v = 0xdeadbeef12345678ULL;
    __asm__ __volatile__(NORVC("sw %1, 4(%0)") :: "r"(p), "r"(v) : "memory");
    CHECK_EQ(p[0], 0x12345678cdefab88ULL, "sw stores low word only");
    v = 0xa5;
    __asm__ __volatile__(NORVC("sb %1, -1(%0)") :: "r"((uintptr_t)p + 16), "r"(v) : "memory");
    CHECK_EQ(p[1], 0xa500000000000000ULL, "sb -1(rs1)");
    v = 0x0102030405060708ULL;
    __asm__ __volatile__(NORVC("sd %1, -8(%0)") :: "r"((uintptr_t)p + 16), "r"(v) : "memory");
    CHECK_EQ(p[1], 0x0102030405060708ULL, "sd -8(rs1)");
    CHECK_EQ(((volatile uint8_t *)p)[8], 0x08, "little-endian byte order");
}

static void test_fence_x0(void)
{
    uint64_t r;
    __asm__ __volatile__(NORVC("fence\nfence rw, rw\nfence iorw, iorw\nfence r, w\nfence.i")
                         ::: "memory");

    /* fence.i makes a freshly written instruction visible */
    uint64_t (*fn)(void) = (uint64_t (*)(void))(uintptr_t)smc;
    __asm__ __volatile__("fence.i" ::: "memory");
    CHECK_EQ(fn(), 1, "execute code from data");
    ((volatile uint32_t *)smc)[0] = 0x00200513u;          /* addi a0, x0, 2 */
    __asm__ __volatile__("fence.i" ::: "memory");
    CHECK_EQ(fn(), 2, "fence.i after modifying code");

    __asm__ __volatile__(NORVC("addi x0, x0, 5\nlui x0, 0x12345\nadd %0, x0, x0") : "=r"(r));
    CHECK_EQ(r, 0, "x0 after addi/lui x0");
    __asm__ __volatile__(NORVC("ld x0, 0(%1)\nlb x0, 0(%1)\nmv %0, x0") : "=r"(r) : "r"(ldata));
    CHECK_EQ(r, 0, "x0 after loads into x0");
    __asm__ __volatile__(NORVC("jal x0, 1f\n1: auipc x0, 1\nor %0, x0, x0") : "=r"(r));
    CHECK_EQ(r, 0, "x0 after jal/auipc x0");
}

int main(uint64_t hartid, uint64_t dtb)
{
    test_arith();
    test_logic();
    test_compare();
    test_shifts();
    test_upper();
    test_branches();
    test_jumps();
    test_loads();
    test_stores();
    test_fence_x0();
    pass();
}

CHECK_COUNT_OK();
