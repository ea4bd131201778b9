/* Board support for the benchmark programs: QEMU's virt board, bare metal, M-mode,
 * -bios none.  picolibc's stdout goes to the NS16550A UART; _exit() powers the
 * machine off through the sifive,test device (status 0 -> 0x5555, else
 * 0x3333 | status << 16); a trap prints its cause and exits with status 3. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define UART_BASE 0x10000000UL
#define TEST_BASE 0x00100000UL

static void uart_putc(char c)
{
    volatile uint8_t *uart = (volatile uint8_t *)UART_BASE;
    while (!(uart[5] & 0x20))   /* LSR.THRE */
        ;
    uart[0] = (uint8_t)c;
}

static int board_put(char c, FILE *f)
{
    (void)f;
    uart_putc(c);
    return (unsigned char)c;
}

static FILE board_stdout = FDEV_SETUP_STREAM(board_put, NULL, NULL, _FDEV_SETUP_WRITE);
FILE *const stdout = &board_stdout;
FILE *const stderr = &board_stdout;

void _exit(int status)
{
    volatile uint32_t *test = (volatile uint32_t *)TEST_BASE;
    __asm__ volatile("fence" ::: "memory");
    *test = status == 0 ? 0x5555u : 0x3333u | ((uint32_t)(status & 0xffff) << 16);
    for (;;)
        __asm__ volatile("wfi");
}

static void put_hex(uint64_t v)
{
    for (int i = 60; i >= 0; i -= 4)
        uart_putc("0123456789abcdef"[(v >> i) & 0xf]);
}

__attribute__((interrupt("machine"), aligned(4)))
static void board_trap(void)
{
    uint64_t cause, epc, tval;
    __asm__ volatile("csrr %0, mcause" : "=r"(cause));
    __asm__ volatile("csrr %0, mepc" : "=r"(epc));
    __asm__ volatile("csrr %0, mtval" : "=r"(tval));
    const char *s = "\nTRAP mcause=0x";
    while (*s)
        uart_putc(*s++);
    put_hex(cause);
    s = " mepc=0x";
    while (*s)
        uart_putc(*s++);
    put_hex(epc);
    s = " mtval=0x";
    while (*s)
        uart_putc(*s++);
    put_hex(tval);
    uart_putc('\n');
    _exit(3);
}

__attribute__((constructor))
static void board_init(void)
{
    __asm__ volatile("csrw mtvec, %0" :: "r"(board_trap));
}
