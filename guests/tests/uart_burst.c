/* uart_burst: the interrupt-driven UART driver of a small teaching kernel (xv6's
 * pattern), against the 16550 and the PLIC.
 *
 * IER enables the receive and THR-empty interrupts. The interrupt handler claims,
 * reads LSR (and RBR while data waits), then sends the next byte of its transmit
 * buffer if THR is empty; with the buffer empty it returns WITHOUT writing THR or
 * reading IIR, so the UART's THR-empty condition (and its interrupt line) stays up.
 * QEMU delivers one interrupt per byte sent and then stays quiet: its PLIC makes a
 * source pending when the device raises its line, and a completion does not make
 * it pending again. Three bursts of 48 bytes; each must take about one interrupt per
 * byte, and none may follow once the buffer is empty (an interrupt storm crawled). */
#include "common.h"

TEST_NAME("uart_burst");

#define UART_IRQ 10
#define UART_RBR (UART0_BASE + 0)
#define UART_THR (UART0_BASE + 0)
#define UART_IER (UART0_BASE + 1)
#define UART_LSR (UART0_BASE + 5)
#define LSR_DR   0x01
#define LSR_THRE 0x20

#define PLIC_PRIO(src)        (PLIC_BASE + 4UL * (src))
#define PLIC_ENABLE(ctx)      (PLIC_BASE + 0x2000UL + 0x80UL * (ctx))
#define PLIC_THRESHOLD(ctx)   (PLIC_BASE + 0x200000UL + 0x1000UL * (ctx))
#define PLIC_CLAIM(ctx)       (PLIC_BASE + 0x200004UL + 0x1000UL * (ctx))

#define BURST 48

static char txbuf[64];
static volatile unsigned tx_r, tx_w;
static volatile uint64_t irqs, other_claims;

static void uartstart(void)
{
    while (tx_r != tx_w) {
        if (!(mmio_r8(UART_LSR) & LSR_THRE))
            return;                    /* the UART will interrupt when it is ready */
        mmio_w8(UART_THR, (uint8_t)txbuf[tx_r % sizeof txbuf]);
        tx_r++;
    }
}

static int hook(struct trapframe *tf, uint64_t cause, int mode)
{
    if (cause != (CAUSE_INTR | IRQ_M_EXT))
        return 0;
    uint32_t id = mmio_r32(PLIC_CLAIM(0));
    if (id == UART_IRQ) {
        irqs++;
        while (mmio_r8(UART_LSR) & LSR_DR)
            (void)mmio_r8(UART_RBR);
        uartstart();                   /* nothing to send: THR and IIR untouched */
    } else if (id) {
        other_claims++;
    }
    if (id)
        mmio_w32(PLIC_CLAIM(0), id);
    return 1;
}

static void queue_text(const char *s)
{
    while (*s) {
        while (tx_w - tx_r >= sizeof txbuf)
            ;
        txbuf[tx_w % sizeof txbuf] = *s++;
        tx_w++;
    }
}

/* A quiet period, counted in loop iterations (~3 instructions each), not in mtime: a
 * storm shows within a few hundred instructions, and polling the CLINT would make the
 * wait cost an MMIO access per iteration. */
static void quiet(unsigned iterations)
{
    for (volatile unsigned i = 0; i < iterations; i++)
        ;
}

int main(uint64_t hartid, uint64_t dtb)
{
    puts_("uart_burst: start\n");
    while (!(mmio_r8(UART_LSR) & 0x40))        /* transmitter idle */
        ;
    trap_hook = hook;
    mmio_w32(PLIC_PRIO(UART_IRQ), 1);
    mmio_w32(PLIC_THRESHOLD(0), 0);
    mmio_w32(PLIC_ENABLE(0), 1u << UART_IRQ);
    mmio_w8(UART_IER, 0x03);                   /* receive and THR-empty interrupts */
    csr_set(mie, MIP_MEIP);
    csr_set(mstatus, MSTATUS_MIE);
    quiet(30000);                              /* the interrupt IER raised, then quiet */
    uint64_t settled = irqs;
    CHECK(settled <= 2, "enabling THRE: at most a couple of interrupts");
    for (int burst = 0; burst < 3; burst++) {
        uint64_t before = irqs;
        /* 48 bytes: "burst N: " and a run of letters */
        char line[BURST + 1];
        const char *head = "burst ";
        int n = 0;
        while (*head)
            line[n++] = *head++;
        line[n++] = (char)('0' + burst);
        line[n++] = ':';
        line[n++] = ' ';
        while (n < BURST - 1) {
            line[n] = (char)('a' + n % 26);
            n++;
        }
        line[n++] = '\n';
        line[n] = 0;
        csr_clear(mstatus, MSTATUS_MIE);
        queue_text(line);
        uartstart();                           /* sends the first byte */
        csr_set(mstatus, MSTATUS_MIE);
        for (unsigned spins = 0; tx_r != tx_w && spins < 10000000u; spins++)
            ;
        CHECK(tx_r == tx_w, "the burst was sent");
        uint64_t drained = irqs;
        quiet(30000);
        CHECK(drained - before <= BURST + 2, "about one interrupt per byte sent");
        CHECK(irqs - drained <= 2, "no interrupt storm once the buffer is empty");
    }
    CHECK_EQ(other_claims, 0, "no other source claimed");
    csr_clear(mstatus, MSTATUS_MIE);
    csr_clear(mie, MIP_MEIP);
    mmio_w8(UART_IER, 0);
    trap_hook = 0;
    pass();
}

CHECK_COUNT_OK();
