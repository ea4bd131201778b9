/* debugme: the gdb stub's test program (tests/integration/test_gdb.py). Built with
 * -g -O0 and not stripped, so gdb finds the function ``compute`` by symbol, its local
 * ``total`` on the stack, and the global ``result``, written once ``compute`` returns
 * (a watchpoint on it stops at that store). Exits 0 through the finisher when the sum
 * is right, 1 otherwise. */
#include "common.h"

TEST_NAME("debugme");

volatile uint64_t result;      /* written once, after compute() returns */
uint64_t rounds = 10;          /* gdb may change it before compute() runs */

uint64_t compute(uint64_t n)
{
    uint64_t total = 0;
    for (uint64_t i = 1; i <= n; i++)
        total += i * i;
    return total;
}

int main(uint64_t hartid, uint64_t dtb)
{
    uint64_t sum = compute(rounds);
    result = sum;
    puts_("debugme: sum of squares ");
    put_dec(result);
    uart_putc('\n');
    if (result != 385)
        fail(1, "wrong sum");
    pass();
}
