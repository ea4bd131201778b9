/* spin: a CPU-bound guest that never idles, for the host scheduler's tests and
 * benchmarks. Prints SPIN-READY, then runs an integer loop (an LCG and a checksum)
 * forever, with UART interrupts enabled: a serial BREAK (the host's power-off
 * request) prints SPIN-POWEROFF and powers off with exit 0; other input is ignored. */
#include "sched_irq.h"

TEST_NAME("spin");

static int hook(struct trapframe *tf, uint64_t cause, int mode)
{
    if (cause == (CAUSE_INTR | IRQ_M_EXT)) {
        uart_irq_drain(0);
        return 1;
    }
    return 0;
}

volatile uint64_t sink;

int main(uint64_t hartid, uint64_t dtb)
{
    trap_hook = hook;
    uart_irq_setup();
    puts_("SPIN-READY\n");
    csr_set(mstatus, MSTATUS_MIE);
    uint64_t x = 1, sum = 0;
    while (!poweroff_requested) {
        for (int i = 0; i < 1000; i++) {
            x = x * 6364136223846793005UL + 1442695040888963407UL;
            sum += (x >> 33) ^ (sum << 1);
        }
        sink = sum;
    }
    csr_clear(mstatus, MSTATUS_MIE);
    puts_("SPIN-POWEROFF\n");
    finisher_exit(0);
}

CHECK_COUNT_OK();
