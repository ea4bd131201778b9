/* bench: CPU-bound benchmark for measuring guest MIPS.
 *
 * Four kernels, each run BENCH_SCALE rounds (compile-time constant):
 *   crc     table-driven CRC32 over a 4 KiB buffer (integer, loads, shifts)
 *   memsort fill/copy/quicksort of 1024 words (memory, calls, compares)
 *   branchy sieve of Eratosthenes + a tiny bytecode interpreter (branches,
 *           indirect jumps through a switch)
 *   fp      Mandelbrot iteration counts + a sqrt/div series (double)
 *
 * Prints
 *   BENCH-CHECKSUM 0x<16 hex digits>   (deterministic for a given scale)
 *   BENCH-INSTRET <decimal>            (minstret delta over the kernels)
 *   BENCH-TICKS <decimal>              (CLINT mtime delta, 10 MHz)
 * and exits 0 (PASS) if the checksum equals BENCH_EXPECT (when defined). */
#include "common.h"

#ifndef BENCH_SCALE
#define BENCH_SCALE 1
#endif
#ifndef BENCH_NAME
#define BENCH_NAME "bench"
#endif

TEST_NAME(BENCH_NAME);

/* ------------------------------------------------------------------ */
static uint32_t rng_state;

static uint32_t rng(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
}

/* ------------------------------------------------------------------ */
#define CRC_BUF 4096
static uint8_t crc_buf[CRC_BUF];
static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    for (int i = 0; i < CRC_BUF; i++)
        crc_buf[i] = (uint8_t)(rng() >> 24);
}

static uint32_t crc32(const uint8_t *p, int n, uint32_t crc)
{
    crc = ~crc;
    for (int i = 0; i < n; i++)
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static uint64_t kernel_crc(void)
{
    uint32_t crc = 0;
    for (int pass = 0; pass < 6; pass++) {
        crc = crc32(crc_buf, CRC_BUF, crc);
        crc_buf[crc % CRC_BUF] ^= (uint8_t)crc;
    }
    return crc;
}

/* ------------------------------------------------------------------ */
#define NSORT 1024
static uint32_t sort_a[NSORT], sort_b[NSORT];

static void copy_words(uint32_t *d, const uint32_t *s, int n)
{
    for (int i = 0; i < n; i++)
        d[i] = s[i];
}

static void quicksort(uint32_t *v, int lo, int hi)
{
    while (lo < hi) {
        uint32_t pivot = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                uint32_t t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (j - lo < hi - i) {
            quicksort(v, lo, j);
            lo = i;
        } else {
            quicksort(v, i, hi);
            hi = j;
        }
    }
}

static uint64_t kernel_memsort(void)
{
    uint64_t h = 0;
    for (int rep = 0; rep < 2; rep++) {
        for (int i = 0; i < NSORT; i++)
            sort_a[i] = rng();
        copy_words(sort_b, sort_a, NSORT);
        memcpy(sort_a, sort_b, NSORT * sizeof(uint32_t) / 4);   /* byte copy of a quarter */
        quicksort(sort_b, 0, NSORT - 1);
        for (int i = 0; i < NSORT; i++) {
            if (i && sort_b[i - 1] > sort_b[i])
                fail(1, "quicksort produced unsorted output");
            h += (uint64_t)sort_b[i] * (uint64_t)(i + 1);
        }
    }
    return h;
}

/* ------------------------------------------------------------------ */
#define SIEVE_N 16384
static uint8_t sieve_flags[SIEVE_N];

static uint64_t sieve(void)
{
    uint64_t count = 0;
    for (int i = 0; i < SIEVE_N; i++)
        sieve_flags[i] = 1;
    sieve_flags[0] = sieve_flags[1] = 0;
    for (int i = 2; i * i < SIEVE_N; i++)
        if (sieve_flags[i])
            for (int j = i * i; j < SIEVE_N; j += i)
                sieve_flags[j] = 0;
    for (int i = 0; i < SIEVE_N; i++)
        count += sieve_flags[i];
    return count;
}

/* tiny stack VM running a bytecode program that sums the Collatz step
 * counts of 1..n (locals: 0 = n, 1 = x, 2 = steps) */
enum { OP_HALT, OP_PUSH, OP_LOAD, OP_STORE, OP_ADD, OP_SUB, OP_AND, OP_DUP, OP_SHR1,
       OP_JZ, OP_JMP };

static const uint8_t vm_prog[] = {
    /*  0 outer */ OP_LOAD, 0, OP_JZ, 59,
    /*  4 */       OP_LOAD, 0, OP_STORE, 1,                    /* x = n */
    /*  8 inner */ OP_LOAD, 1, OP_PUSH, 1, OP_SUB, OP_JZ, 50,   /* x == 1 -> next */
    /* 15 */       OP_LOAD, 1, OP_PUSH, 1, OP_AND, OP_JZ, 36,   /* even -> 36 */
    /* 22 */       OP_LOAD, 1, OP_DUP, OP_ADD, OP_LOAD, 1, OP_ADD, OP_PUSH, 1, OP_ADD,
    /* 32 */       OP_STORE, 1, OP_JMP, 41,                    /* x = 3x + 1 */
    /* 36 even */  OP_LOAD, 1, OP_SHR1, OP_STORE, 1,            /* x = x / 2 */
    /* 41 count */ OP_LOAD, 2, OP_PUSH, 1, OP_ADD, OP_STORE, 2, OP_JMP, 8,
    /* 50 next */  OP_LOAD, 0, OP_PUSH, 1, OP_SUB, OP_STORE, 0, OP_JMP, 0,
    /* 59 end */   OP_HALT,
};

static uint64_t vm_run(uint64_t n)
{
    uint64_t stack[8], loc[3] = { n, 0, 0 };
    int sp = 0, pc = 0;
    for (;;) {
        uint8_t op = vm_prog[pc++];
        switch (op) {
        case OP_PUSH:  stack[sp++] = vm_prog[pc++]; break;
        case OP_LOAD:  stack[sp++] = loc[vm_prog[pc++]]; break;
        case OP_STORE: loc[vm_prog[pc++]] = stack[--sp]; break;
        case OP_ADD:   sp--; stack[sp - 1] += stack[sp]; break;
        case OP_SUB:   sp--; stack[sp - 1] -= stack[sp]; break;
        case OP_AND:   sp--; stack[sp - 1] &= stack[sp]; break;
        case OP_DUP:   stack[sp] = stack[sp - 1]; sp++; break;
        case OP_SHR1:  stack[sp - 1] >>= 1; break;
        case OP_JZ:    { uint8_t t = vm_prog[pc++]; if (stack[--sp] == 0) pc = t; } break;
        case OP_JMP:   pc = vm_prog[pc]; break;
        default:       return loc[2];
        }
    }
}

static uint64_t collatz_direct(uint64_t n)
{
    uint64_t steps = 0;
    for (; n; n--)
        for (uint64_t x = n; x != 1; steps++)
            x = (x & 1) ? 3 * x + 1 : x >> 1;
    return steps;
}

static uint64_t kernel_branchy(int round)
{
    uint64_t primes = sieve();
    uint64_t n = 24 + (round & 7);
    uint64_t steps = vm_run(n);
    if (steps != collatz_direct(n))
        fail_val(3, "bytecode interpreter result", steps, collatz_direct(n));
    if (primes != 1900)
        fail_val(4, "sieve prime count below 16384", primes, 1900);
    return primes * 1000003u + steps;
}

/* ------------------------------------------------------------------ */
static uint64_t dbits(double d)
{
    union { double d; uint64_t u; } c = { .d = d };
    return c.u;
}

static inline double fsqrt(double x)
{
    double r;
    __asm__("fsqrt.d %0, %1" : "=f"(r) : "f"(x));
    return r;
}

static uint64_t kernel_fp(int round)
{
    const int W = 32, H = 24, MAXIT = 64;
    uint64_t iters = 0;
    double shift = round * 1e-3;
    for (int y = 0; y < H; y++) {
        double ci = -1.0 + 2.0 * y / H;
        for (int x = 0; x < W; x++) {
            double cr = -2.0 + 2.5 * x / W + shift;
            double zr = 0.0, zi = 0.0;
            int it = 0;
            while (it < MAXIT && zr * zr + zi * zi <= 4.0) {
                double t = zr * zr - zi * zi + cr;
                zi = 2.0 * zr * zi + ci;
                zr = t;
                it++;
            }
            iters += it;
        }
    }
    double acc = 0.0;
    for (int i = 1; i <= 1500; i++) {
        double di = (double)i;
        acc += fsqrt(di) / (di + 0.5) - acc * 1e-4;
    }
    return mix(iters, dbits(acc));
}

/* ------------------------------------------------------------------ */
int main(uint64_t hartid, uint64_t dtb)
{
    puts_(BENCH_NAME ": scale ");
    put_dec(BENCH_SCALE);
    uart_putc('\n');

    rng_state = 12345;
    uint64_t t0 = mmio_r64(CLINT_MTIME);
    uint64_t i0 = csr_read(minstret);

    crc_init();
    uint64_t h = 0;
#ifdef BENCH_PROFILE
    /* -DBENCH_PROFILE: print the minstret share of each kernel */
    uint64_t k[4] = { 0, 0, 0, 0 }, c;
#define PROF(i, e) (c = csr_read(minstret), h = mix(h, (e)), k[i] += csr_read(minstret) - c)
#else
#define PROF(i, e) (h = mix(h, (e)))
#endif
    for (int r = 0; r < BENCH_SCALE; r++) {
        PROF(0, kernel_crc());
        PROF(1, kernel_memsort());
        PROF(2, kernel_branchy(r));
        PROF(3, kernel_fp(r));
    }
#ifdef BENCH_PROFILE
    static const char *const kname[4] = { "crc", "memsort", "branchy", "fp" };
    for (int i = 0; i < 4; i++) {
        puts_("BENCH-PROFILE ");
        puts_(kname[i]);
        uart_putc(' ');
        put_dec(k[i]);
        uart_putc('\n');
    }
#endif

    uint64_t i1 = csr_read(minstret);
    uint64_t t1 = mmio_r64(CLINT_MTIME);

    puts_("BENCH-CHECKSUM ");
    put_hex(h);
    uart_putc('\n');
    puts_("BENCH-INSTRET ");
    put_dec(i1 - i0);
    uart_putc('\n');
    puts_("BENCH-TICKS ");
    put_dec(t1 - t0);
    uart_putc('\n');
#ifdef BENCH_EXPECT
    if (h != (uint64_t)BENCH_EXPECT)
        fail_val(2, "checksum mismatch", h, (uint64_t)BENCH_EXPECT);
#endif
    pass();
}
