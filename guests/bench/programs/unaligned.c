/* Words read at byte offsets: a 64-bit hash over a byte stream that loads 8, 4 and 2
 * bytes at every offset through cast pointers (as hash functions and packet or file
 * parsers written for x86 do), and a parser of variable-length records whose fields sit
 * at odd offsets, writing its output the same way; the checksum folds the results. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define SIZE   65536
#define ROUNDS 1600

static uint8_t buf[SIZE + 16];
static uint8_t out[SIZE + 16];

static uint64_t hash(const uint8_t *p, unsigned n, uint64_t h)
{
    for (unsigned i = 0; i + 8 <= n; i += 3) {
        h ^= *(const uint64_t *)(p + i);
        h *= 0x100000001b3ULL;
        h ^= *(const uint32_t *)(p + i + 1) + *(const uint16_t *)(p + i + 5);
        h = (h << 13) | (h >> 51);
    }
    return h;
}

static uint64_t parse(const uint8_t *p, unsigned n, uint8_t *o)
{
    uint64_t sum = 0;
    unsigned i = 0, w = 0;
    while (i + 8 <= n) {
        unsigned type = p[i];
        unsigned len = *(const uint16_t *)(p + i + 1) % 13 + 1;  /* 1..13 bytes */
        uint32_t value = *(const uint32_t *)(p + i + 3);
        sum += type * value + len;
        *(uint32_t *)(o + w) = value ^ (uint32_t)sum;  /* output at odd offsets too */
        w = (w + 5) % (SIZE - 8);
        i += len + 3;
    }
    return sum;
}

int main(void)
{
    uint64_t seed = 0x9e3779b97f4a7c15ULL, check = 0xcbf29ce484222325ULL;
    for (unsigned i = 0; i < sizeof buf; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (uint8_t)(seed >> 56);
    }
    for (int r = 0; r < ROUNDS; r++) {
        check = hash(buf + (r & 7), SIZE - 8, check);
        check ^= parse(buf + (r % 5), SIZE - 8, out + (r & 3));
        memcpy(buf + 1000 + r, out + 3 * r, 64);  /* feed the output back */
    }
    check = hash(out, SIZE, check);
    printf("unaligned: %d rounds over %d bytes\n", ROUNDS, SIZE);
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)check);
    return 0;
}
