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

int main(uint64_t hartid, uint64_t dtb)
{
    const char *args = fdt_bootargs((const void *)dtb);
    uint64_t count = bootarg(args, "count=", 300);
    int dirty = bootarg(args, "dirty=", 0) != 0;
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
