/* exit_code: prints a FAIL line and exits with code 3 through the sifive,test
 * finisher (32-bit store of 0x3333 | 3 << 16 = 0x33333 to 0x100000), so the
 * host can check that the finisher's exit code propagates (exit status 3). */
#include "common.h"

TEST_NAME("exit_code");

int main(uint64_t hartid, uint64_t dtb)
{
    puts_("exit_code: exiting with code 3 on purpose\n");
    fail(3, "deliberate exit code 3");
}
