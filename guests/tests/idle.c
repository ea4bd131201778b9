/* idle: an idle, interactive guest for the host daemon's tests and benchmarks.
 * Prints IDLE-READY, then sleeps in wfi. It wakes for a CLINT timer tick every
 * tick_ms milliseconds (default 100; "tick_ms=N" in the kernel command line, the DTB's
 * /chosen/bootargs, sets it; 0: no tick) and for UART input, which it echoes at once
 * from the interrupt handler. A serial BREAK (the host's power-off request) prints
 * IDLE-POWEROFF and powers off with exit 0. Runs until then. */
#include "sched_irq.h"

TEST_NAME("idle");

#define DEFAULT_TICK_MS 100
#define MTIME_PER_MS 10000UL   /* mtime runs at 10 MHz */

static volatile uint64_t ticks;
static uint64_t tick;          /* mtime units; 0: no tick */

static void echo(uint8_t c) { uart_putc((char)c); }

static int hook(struct trapframe *tf, uint64_t cause, int mode)
{
    if (cause == (CAUSE_INTR | IRQ_M_TIMER)) {
        uint64_t next = mmio_r64(CLINT_MTIMECMP(0)) + tick;
        uint64_t now = mmio_r64(CLINT_MTIME);
        if (next <= now)
            next = now + tick;      /* slept through ticks: no catching up */
        mmio_w64(CLINT_MTIMECMP(0), next);
        ticks++;
        return 1;
    }
    if (cause == (CAUSE_INTR | IRQ_M_EXT)) {
        uart_irq_drain(echo);
        return 1;
    }
    return 0;
}

int main(uint64_t hartid, uint64_t dtb)
{
    trap_hook = hook;
    tick = bootarg(fdt_bootargs((const void *)dtb), "tick_ms=", DEFAULT_TICK_MS) * MTIME_PER_MS;
    uart_irq_setup();
    if (tick) {
        mmio_w64(CLINT_MTIMECMP(0), mmio_r64(CLINT_MTIME) + tick);
        csr_set(mie, MIP_MTIP);
    }
    puts_("IDLE-READY tick_ms=");
    put_dec(tick / MTIME_PER_MS);
    uart_putc('\n');
    csr_set(mstatus, MSTATUS_MIE);
    while (!poweroff_requested)
        wfi();
    csr_clear(mstatus, MSTATUS_MIE);
    puts_("IDLE-POWEROFF\n");
    finisher_exit(0);
}

CHECK_COUNT_OK();
