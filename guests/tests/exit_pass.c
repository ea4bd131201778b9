/* exit_pass: prints PASS and exits 0 through the sifive,test finisher
 * (32-bit store of 0x5555 to 0x100000).  The host checks exit status 0. */
#include "common.h"

TEST_NAME("exit_pass");

int main(uint64_t hartid, uint64_t dtb)
{
    puts_("exit_pass: hello from hart ");
    put_dec(hartid);
    uart_putc('\n');
    pass();
}
