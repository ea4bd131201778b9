/* counter: a guest for live migration tests (tests/unit/test_migration.py).
 * Prints "COUNT n" every 10 ms of guest time (mtime), n = 0, 1, 2, ..., and powers off
 * (exit 0) after "count=N" lines (default 300). With "dirty=1" in the command line it
 * also writes memory as fast as it can between the lines: one word in every 64 bytes of
 * a 16 MiB region, round after round, so that every page of the region is dirty again
 * within a few milliseconds; otherwise it waits in wfi for the next line's time. */
#include "common.h"

TEST_NAME("counter");

#define MTIME_PER_MS 10000UL   /* mtime runs at 10 MHz */
#define REGION ((volatile uint64_t *)(RAM_BASE + (16UL << 20)))
#define REGION_WORDS ((16UL << 20) / 8)

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static const char *fdt_bootargs(const uint8_t *fdt)
{
    if (!fdt || be32(fdt) != 0xd00dfeed)
        return 0;
    const uint8_t *p = fdt + be32(fdt + 8);
    const char *strings = (const char *)fdt + be32(fdt + 12);
    int depth = 0, in_chosen = 0;
    for (int guard = 0; guard < 100000; guard++) {
        uint32_t tok = be32(p);
        p += 4;
        if (tok == 1) {
            const char *name = (const char *)p;
            size_t len = 0;
            while (name[len])
                len++;
            depth++;
            if (depth == 2 && streq(name, "chosen"))
                in_chosen = 1;
            p += (len + 1 + 3) & ~(size_t)3;
        } else if (tok == 2) {
            if (depth == 2)
                in_chosen = 0;
            depth--;
        } else if (tok == 3) {
            uint32_t len = be32(p);
            if (in_chosen && depth == 2 && streq(strings + be32(p + 4), "bootargs"))
                return (const char *)p + 8;
            p += 8 + ((len + 3) & ~3u);
        } else if (tok != 4) {
            break;
        }
    }
    return 0;
}

/* the N of "key=N" in the command line, else dflt */
static uint64_t arg(const char *args, const char *key, uint64_t dflt)
{
    for (const char *s = args; s && *s; s++) {
        int i = 0;
        while (key[i] && s[i] == key[i])
            i++;
        if (key[i] || (s != args && s[-1] != ' '))
            continue;
        uint64_t n = 0;
        for (s += i; *s >= '0' && *s <= '9'; s++)
            n = n * 10 + (uint64_t)(*s - '0');
        return n;
    }
    return dflt;
}

int main(uint64_t hartid, uint64_t dtb)
{
    const char *args = fdt_bootargs((const uint8_t *)dtb);
    uint64_t count = arg(args, "count=", 300);
    int dirty = arg(args, "dirty=", 0) != 0;
    uint64_t next = mmio_r64(CLINT_MTIME);
    uint64_t w = 0, round = 0;
    for (uint64_t n = 0; n < count; n++) {
        puts_("COUNT ");
        put_dec(n);
        uart_putc('\n');
        next += 10 * MTIME_PER_MS;
        if (dirty) {
            while (mmio_r64(CLINT_MTIME) < next) {
                for (int k = 0; k < 512; k++) {
                    REGION[w] = round ^ w;
                    w += 8;
                    if (w >= REGION_WORDS) {
                        w = 0;
                        round++;
                    }
                }
            }
        } else {
            mmio_w64(CLINT_MTIMECMP(0), next);
            csr_set(mie, MIP_MTIP);
            while (mmio_r64(CLINT_MTIME) < next)
                wfi();
            csr_clear(mie, MIP_MTIP);
        }
    }
    puts_("COUNT-DONE\n");
    finisher_exit(0);
}
