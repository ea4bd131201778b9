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

/* /chosen/bootargs of the flattened device tree, or 0 */
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
        if (tok == 1) {                 /* FDT_BEGIN_NODE */
            const char *name = (const char *)p;
            size_t len = 0;
            while (name[len])
                len++;
            depth++;
            if (depth == 2 && streq(name, "chosen"))
                in_chosen = 1;
            p += (len + 1 + 3) & ~(size_t)3;
        } else if (tok == 2) {          /* FDT_END_NODE */
            if (depth == 2)
                in_chosen = 0;
            depth--;
        } else if (tok == 3) {          /* FDT_PROP: len, nameoff, value */
            uint32_t len = be32(p);
            if (in_chosen && depth == 2 && streq(strings + be32(p + 4), "bootargs"))
                return (const char *)p + 8;
            p += 8 + ((len + 3) & ~3u);
        } else if (tok != 4) {          /* not FDT_NOP: FDT_END or garbage */
            break;
        }
    }
    return 0;
}

/* the N of "tick_ms=N" in the command line, else DEFAULT_TICK_MS */
static uint64_t tick_ms(const char *args)
{
    static const char key[] = "tick_ms=";
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
    return DEFAULT_TICK_MS;
}

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
    tick = tick_ms(fdt_bootargs((const uint8_t *)dtb)) * MTIME_PER_MS;
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
