/* UART receive interrupts through the PLIC and the host's power-off request, shared by
 * the scheduler test guests (idle.c, spin.c).
 *
 * The host asks a guest to power off with a serial BREAK on the console UART (LSR.BI;
 * Linux takes BREAK + a key as a Magic SysRq request). uart_irq_setup() enables the
 * UART's "received data" and "line status" interrupts (source 10, hart 0 M-mode
 * context); uart_irq_drain() reads every waiting byte, calls on_byte() for ordinary
 * bytes and sets poweroff_requested on a BREAK. */
#ifndef PYHV_SCHED_IRQ_H
#define PYHV_SCHED_IRQ_H

#include "common.h"

#define UART_IRQ 10
#define UART_RBR (UART0_BASE + 0)
#define UART_IER (UART0_BASE + 1)
#define UART_LSR (UART0_BASE + 5)
#define LSR_DR   0x01
#define LSR_BI   0x10
#define IER_ERBFI 0x01
#define IER_ELSI  0x04

#define PLIC_PRIO(src)       (PLIC_BASE + 4UL * (src))
#define PLIC_ENABLE(ctx)     (PLIC_BASE + 0x2000UL + 0x80UL * (ctx))
#define PLIC_THRESHOLD(ctx)  (PLIC_BASE + 0x200000UL + 0x1000UL * (ctx))
#define PLIC_CLAIM(ctx)      (PLIC_BASE + 0x200004UL + 0x1000UL * (ctx))

static volatile int poweroff_requested;

static void uart_irq_setup(void)
{
    mmio_w32(PLIC_PRIO(UART_IRQ), 1);
    mmio_w32(PLIC_ENABLE(0), 1u << UART_IRQ);
    mmio_w32(PLIC_THRESHOLD(0), 0);
    mmio_w8(UART_IER, IER_ERBFI | IER_ELSI);
    csr_set(mie, MIP_MEIP);
}

static void uart_irq_drain(void (*on_byte)(uint8_t))
{
    uint32_t id = mmio_r32(PLIC_CLAIM(0));
    for (;;) {
        uint8_t lsr = mmio_r8(UART_LSR);
        if (lsr & LSR_BI)
            poweroff_requested = 1;
        if (!(lsr & LSR_DR))
            break;
        uint8_t c = mmio_r8(UART_RBR);
        if (!(lsr & LSR_BI) && on_byte)
            on_byte(c);
    }
    if (id)
        mmio_w32(PLIC_CLAIM(0), id);
}

#endif
