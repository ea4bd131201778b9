/* mtime_write: the guest sets the CLINT's mtime (MMIO) and reads the time CSR, in hot
 * loops (so that, under the JIT, the reads run natively): time continues from the value
 * written, every round. */
#include "common.h"

TEST_NAME("mtime_write");

int main(uint64_t hartid, uint64_t dtb)
{
    uint64_t odd = 0;
    for (int i = 0; i < 50000; i++)            /* hot: the JIT takes over */
        odd += csr_read(time) & 1;
    for (uint64_t round = 1; round <= 5; round++) {
        uint64_t want = round << 36;
        mmio_w64(CLINT_MTIME, want);
        uint64_t got = csr_read(time);
        CHECK(got >= want && got - want < 100000000UL, "time continues from the mtime written");
        uint64_t low = ~0UL;
        for (int i = 0; i < 20000; i++) {
            uint64_t v = csr_read(time);
            if (v < low)
                low = v;
        }
        CHECK(low >= want && low - want < 100000000UL, "every later read too");
    }
    (void)odd;
    pass();
}

CHECK_COUNT_OK();
