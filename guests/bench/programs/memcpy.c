/* Memory copy: memcpy, memmove (overlapping, both directions), memset and memcmp of
 * many sizes at every source/destination alignment, between buffers in .bss. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define BUF    (64 * 1024)
#define ROUNDS 90

static unsigned char src[BUF + 64];
static unsigned char dst[BUF + 64];
static uint64_t checksum = 0xcbf29ce484222325ULL;

static const size_t sizes[] = { 1, 2, 3, 7, 8, 15, 16, 31, 33, 64, 100, 255, 256, 1000,
                                4096, 5000, 16384 };
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void mix(uint64_t v)
{
    checksum = (checksum ^ v) * 0x100000001b3ULL;
}

static uint64_t sample(const unsigned char *p, size_t n)
{
    uint64_t h = n;
    for (size_t i = 0; i < n; i += 1 + n / 16)
        h = h * 31 + p[i];
    return h + p[n - 1];
}

int main(void)
{
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (unsigned char)(i * 131 + (i >> 8) * 7 + 1);

    for (int round = 0; round < ROUNDS; round++) {
        for (size_t s = 0; s < NSIZES; s++) {
            size_t n = sizes[s];
            for (int so = 0; so < 8; so++)
                for (int doff = 0; doff < 8; doff += 3) {
                    size_t where = (round * 4099 + s * 257) % (BUF - n);
                    memcpy(dst + where + doff, src + so + (round & 15), n);
                    if (memcmp(dst + where + doff, src + so + (round & 15), n) != 0) {
                        printf("memcpy: mismatch n=%u\n", (unsigned)n);
                        return 1;
                    }
                    mix(sample(dst + where + doff, n));
                }
            /* overlapping moves, forwards and backwards */
            size_t at = (round * 613 + s * 97) % (BUF - 2 * n - 16);
            memmove(dst + at + 5, dst + at, n);
            mix(sample(dst + at, n + 5));
            memmove(dst + at, dst + at + 3, n);
            mix(sample(dst + at, n + 3));
            /* fills */
            memset(dst + at + (s & 7), (int)(round + s), n);
            mix(sample(dst + at, n + 8));
        }
        /* one big copy and compare of the whole buffer */
        memcpy(dst, src + (round & 7), BUF);
        mix((uint64_t)memcmp(dst, src, BUF));
        memset(src + BUF, round, 64);
    }
    printf("memcpy: %d rounds of %u sizes\n", ROUNDS, (unsigned)NSIZES);
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)checksum);
    return 0;
}
