/* A tiny JIT inside the guest: writes RISC-V machine code for a small loop with
 * different constants and a different combining instruction each time into a static
 * buffer, makes it visible to instruction fetch with fence.i, calls it, and checks
 * the result against the same computation in C; many times over. */
#include <stdint.h>
#include <stdio.h>

#define GENERATIONS 16000

enum { A0 = 10, A1 = 11, T0 = 5, T1 = 6, T2 = 7 };

static uint32_t code[64] __attribute__((aligned(16)));
static unsigned ncode;
static uint64_t checksum = 0xcbf29ce484222325ULL;

static uint32_t r_type(uint32_t f7, uint32_t rs2, uint32_t rs1, uint32_t f3, uint32_t rd,
                       uint32_t opc)
{
    return f7 << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | rd << 7 | opc;
}

static uint32_t i_type(int32_t imm, uint32_t rs1, uint32_t f3, uint32_t rd, uint32_t opc)
{
    return (uint32_t)(imm & 0xfff) << 20 | rs1 << 15 | f3 << 12 | rd << 7 | opc;
}

static uint32_t b_type(int32_t off, uint32_t rs2, uint32_t rs1, uint32_t f3)
{
    uint32_t o = (uint32_t)off;
    return ((o >> 12) & 1) << 31 | ((o >> 5) & 0x3f) << 25 | rs2 << 20 | rs1 << 15 |
           f3 << 12 | ((o >> 1) & 0xf) << 8 | ((o >> 11) & 1) << 7 | 0x63;
}

static void emit(uint32_t insn)
{
    code[ncode++] = insn;
}

/* li rd, v for a signed 32-bit v: lui + addiw */
static void li32(uint32_t rd, int32_t v)
{
    int32_t lo = (int32_t)((uint32_t)v << 20) >> 20;
    uint32_t hi = ((uint32_t)v - (uint32_t)lo) & 0xfffff000u;
    emit(hi | rd << 7 | 0x37);
    emit(i_type(lo, rd, 0, rd, 0x1b));
}

enum combine { ADD, SUB, XOR, OR };

/* uint64_t f(uint64_t x, uint64_t n):
 *   do { x = x * mul; x = x COMBINE k; x ^= x >> shift; } while (--n); return x; */
static void generate(int32_t mul, int32_t k, unsigned shift, enum combine how)
{
    static const uint32_t f7[] = { 0x00, 0x20, 0x00, 0x00 }, f3[] = { 0, 0, 4, 6 };
    ncode = 0;
    li32(T0, mul);
    li32(T1, k);
    unsigned loop = ncode;
    emit(r_type(1, T0, A0, 0, A0, 0x33));                  /* mul  a0, a0, t0 */
    emit(r_type(f7[how], T1, A0, f3[how], A0, 0x33));      /* op   a0, a0, t1 */
    emit(i_type((int32_t)shift, A0, 5, T2, 0x13));         /* srli t2, a0, shift */
    emit(r_type(0, T2, A0, 4, A0, 0x33));                  /* xor  a0, a0, t2 */
    emit(i_type(-1, A1, 0, A1, 0x13));                     /* addi a1, a1, -1 */
    emit(b_type((int32_t)(loop - ncode) * 4, 0, A1, 1));   /* bnez a1, loop */
    emit(0x00008067);                                      /* ret */
    __asm__ volatile("fence.i" ::: "memory");
}

static uint64_t reference(uint64_t x, uint64_t n, int32_t mul, int32_t k, unsigned shift,
                          enum combine how)
{
    uint64_t m = (uint64_t)(int64_t)mul, kk = (uint64_t)(int64_t)k;
    do {
        x *= m;
        switch (how) {
        case ADD: x += kk; break;
        case SUB: x -= kk; break;
        case XOR: x ^= kk; break;
        case OR:  x |= kk; break;
        }
        x ^= x >> shift;
    } while (--n);
    return x;
}

int main(void)
{
    uint64_t (*fn)(uint64_t, uint64_t) = (uint64_t (*)(uint64_t, uint64_t))(uintptr_t)code;
    uint32_t seed = 12345;
    uint64_t x = 1;
    for (int g = 0; g < GENERATIONS; g++) {
        seed = seed * 1103515245u + 12345u;
        int32_t mul = (int32_t)(seed | 1);
        int32_t k = (int32_t)(seed * 2654435761u) >> (g & 7);
        unsigned shift = 1 + (seed >> 27) % 63;
        enum combine how = (enum combine)(g & 3);
        uint64_t n = 16 + (g & 31);
        generate(mul, k, shift, how);
        for (int call = 0; call < 3; call++) {
            uint64_t got = fn(x, n);
            uint64_t want = reference(x, n, mul, k, shift, how);
            if (got != want) {
                printf("generation %d call %d: got 0x%016llx, want 0x%016llx\n", g, call,
                       (unsigned long long)got, (unsigned long long)want);
                return 1;
            }
            x = got + (uint64_t)call;
        }
        checksum = (checksum ^ x) * 0x100000001b3ULL;
    }
    printf("codegen: %d generations\n", GENERATIONS);
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)checksum);
    return 0;
}
