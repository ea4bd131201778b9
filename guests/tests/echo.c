/* echo: an interactive console check.  Prints ECHO-READY, then echoes every byte
 * typed on the UART (polling LSR.DR) until it sees 'q', prints ECHO-DONE and exits 0.
 * The host types into a pseudo-terminal and checks the echo (tests/integration). */
#include "common.h"

TEST_NAME("echo");

#define UART_RBR 0
#define UART_LSR 5
#define LSR_DR   0x01

static int uart_getc(void)
{
    volatile uint8_t *uart = (volatile uint8_t *)UART0_BASE;
    while (!(uart[UART_LSR] & LSR_DR))
        ;
    return uart[UART_RBR];
}

int main(uint64_t hartid, uint64_t dtb)
{
    puts_("ECHO-READY\n");
    for (;;) {
        int c = uart_getc();
        if (c == 'q')
            break;
        uart_putc((char)c);
    }
    puts_("\nECHO-DONE\n");
    pass();
}
