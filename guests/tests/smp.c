/* smp: multi-hart test, run with -smp 4 (works with any count >= 2; the
 * number of harts is read from the DTB /cpus node).
 *  - every hart increments one shared counter 1000 times with amoadd.d and
 *    another 1000 times with an LR/SC loop; hart 0 checks both totals
 *  - every hart records its mhartid in a shared mask (amoor.d)
 *  - hart 0 sends an IPI to hart 1 through CLINT msip; hart 1 takes the
 *    machine software interrupt, clears its msip and acknowledges in memory. */
#include "common.h"

TEST_NAME("smp");

#define ITERS 1000
#define TIMEOUT_TICKS 200000000UL   /* 20 s of mtime at 10 MHz */

static volatile uint64_t counter_amo, counter_lrsc, done_count, seen_mask;
static volatile uint64_t hart1_ready, ipi_ack;

static void work(uint64_t hartid)
{
    uint64_t tmp, ok;
    __asm__ __volatile__("amoor.d zero, %1, (%0)" :: "r"(&seen_mask), "r"(1UL << hartid) : "memory");
    for (int i = 0; i < ITERS; i++)
        __asm__ __volatile__("amoadd.d zero, %1, (%0)" :: "r"(&counter_amo), "r"(1UL) : "memory");
    for (int i = 0; i < ITERS; i++)
        __asm__ __volatile__("1: lr.d.aq %0, (%2)\n"
                             "   addi %0, %0, 1\n"
                             "   sc.d.rl %1, %0, (%2)\n"
                             "   bnez %1, 1b"
                             : "=&r"(tmp), "=&r"(ok) : "r"(&counter_lrsc) : "memory");
    __asm__ __volatile__("amoadd.d zero, %1, (%0)" :: "r"(&done_count), "r"(1UL) : "memory");
}

static int ipi_hook(struct trapframe *tf, uint64_t cause, int mode)
{
    if (cause != (CAUSE_INTR | IRQ_M_SOFT))
        return 0;
    uint64_t h = csr_read(mhartid);
    mmio_w32(CLINT_MSIP(h), 0);
    fence();
    ipi_ack = 0xacc0 | h;
    return 1;
}

void secondary_main(uint64_t a0, uint64_t dtb)
{
    uint64_t h = csr_read(mhartid);
    work(h);
    if (h == 1) {
        csr_set(mie, MIP_MSIP);
        fence();
        hart1_ready = 1;
        csr_set(mstatus, MSTATUS_MIE);
        while (!ipi_ack)
            wfi();
        csr_clear(mstatus, MSTATUS_MIE);
        csr_clear(mie, MIP_MSIP);
    }
    for (;;)
        wfi();
}

static int wait_for(volatile uint64_t *p, uint64_t value)
{
    uint64_t t0 = mmio_r64(CLINT_MTIME);
    while (*p != value)
        if (mmio_r64(CLINT_MTIME) - t0 > TIMEOUT_TICKS)
            return 0;
    return 1;
}

int main(uint64_t hartid, uint64_t dtb)
{
    trap_hook = ipi_hook;
    int n = fdt_count_cpus((const void *)dtb);
    puts_("smp: ");
    put_dec(n < 0 ? 0 : (uint64_t)n);
    puts_(" harts in the DTB\n");
    CHECK(n >= 2 && n <= 8, "needs 2..8 harts (run with -smp 4)");

    work(0);
    CHECK(wait_for(&done_count, (uint64_t)n), "not all harts finished their increments");
    fence();
    CHECK_EQ(counter_amo, (uint64_t)n * ITERS, "amoadd.d counter total");
    CHECK_EQ(counter_lrsc, (uint64_t)n * ITERS, "LR/SC counter total");
    CHECK_EQ(seen_mask, (1UL << n) - 1, "every hart ran with a distinct mhartid");

    CHECK(wait_for(&hart1_ready, 1), "hart 1 not ready for the IPI");
    mmio_w32(CLINT_MSIP(1), 1);
    CHECK(wait_for(&ipi_ack, 0xacc1), "hart 1 did not acknowledge the IPI");
    CHECK_EQ(mmio_r32(CLINT_MSIP(1)), 0, "hart 1 cleared its msip");
    CHECK_EQ(mmio_r32(CLINT_MSIP(0)), 0, "hart 0 msip untouched");
    puts_("smp: counters ");
    put_dec(counter_amo);
    puts_(" / ");
    put_dec(counter_lrsc);
    puts_(", IPI acknowledged\n");
    trap_hook = 0;
    pass();
}

CHECK_COUNT_OK();
