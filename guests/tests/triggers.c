/* triggers: the debug trigger module (Sdtrig) as QEMU 7.2's virt hart has it: two
 * address/data match triggers (type 2, mcontrol) behind tselect/tdata1/tdata2/tdata3
 * and tinfo, M-mode only CSRs.
 *  - tselect: 0 and 1 stick, 2 and above are ignored; tdata1 resets to type 2, off;
 *    tinfo says types 2 and 6; tdata1's fields are WARL as QEMU 7.2 keeps them (type 2
 *    or 6, the U/S/M and execute/store/load bits, a supported size, type 6's VS/VU;
 *    chain, action, dmode read 0; other types ignored); tdata3 reads 0
 *  - an execute trigger (M bit) raises a breakpoint exception (cause 3) before the
 *    instruction at tdata2 runs; mepc = that pc, mtval 0
 *  - load and store triggers raise it before the access at tdata2 (the default size:
 *    8 bytes from tdata2), mtval 0; other addresses do not
 *  - a trigger without the current mode's bit does not fire (U only, run in M)
 *  - the second trigger works independently of the first. */
#include "common.h"

TEST_NAME("triggers");

#define TYPE2      (2UL << 60)
#define MC_M       (1UL << 6)
#define MC_S       (1UL << 4)
#define MC_U       (1UL << 3)
#define MC_EXECUTE (1UL << 2)
#define MC_STORE   (1UL << 1)
#define MC_LOAD    (1UL << 0)

static volatile uint64_t data1 = 1, data2 = 2;

extern char bp_here[];
static __attribute__((noinline)) uint64_t run_bp(void)
{
    uint64_t v;
    __asm__ __volatile__(
        ".option push\n.option norvc\n"
        "li %0, 0\n"
        ".globl bp_here\n"
        "bp_here: li %0, 7\n"              /* skipped by the handler when the trigger fires */
        ".option pop\n" : "=r"(v));
    return v;
}

static void expect_bp(uint64_t epc, uint64_t tval, const char *what)
{
    CHECK_EQ2(trap_cause, trap_epc, EXC_BREAKPOINT, epc, what);
    CHECK_EQ(trap_tval, tval, what);
}

int main(uint64_t hartid, uint64_t dtb)
{
    csr_write(tselect, 0);
    CHECK_EQ(csr_read(tselect), 0, "tselect 0");
    csr_write(tselect, 1);
    CHECK_EQ(csr_read(tselect), 1, "tselect 1");
    csr_write(tselect, 2);
    CHECK_EQ(csr_read(tselect), 1, "tselect 2 ignored: two triggers");
    csr_write(tselect, 0);
    CHECK_EQ(csr_read(tdata1), TYPE2, "tdata1 resets to an unarmed type-2 trigger");
    CHECK_EQ(csr_read(tdata2), 0, "tdata2 resets to 0");
    CHECK_EQ(csr_read(tinfo), (1UL << 2) | (1UL << 6), "tinfo: types 2 and 6");
    csr_write(tdata1, (3UL << 60) | MC_M | MC_EXECUTE);
    CHECK_EQ(csr_read(tdata1), TYPE2, "a type-3 write is ignored");
    csr_write(tdata1, TYPE2 | MC_M | MC_EXECUTE | (1UL << 11) | (1UL << 12) | (1UL << 59));
    CHECK_EQ(csr_read(tdata1), TYPE2 | MC_M | MC_EXECUTE, "chain, action, dmode read 0");
    csr_write(tdata1, (6UL << 60) | MC_M | MC_EXECUTE | (1UL << 24) | (1UL << 23));
    CHECK_EQ(csr_read(tdata1), (6UL << 60) | (3UL << 23) | MC_M | MC_EXECUTE,
             "type 6 (mcontrol6) with its VS/VU bits");
    csr_write(tdata1, TYPE2 | MC_M | MC_LOAD | (3UL << 16) | (1UL << 21));
    CHECK_EQ(csr_read(tdata1), TYPE2 | MC_M | MC_LOAD, "an unsupported size reads 0 (any)");
    csr_write(tdata1, TYPE2 | MC_M | MC_LOAD | (3UL << 16));
    CHECK_EQ(csr_read(tdata1), TYPE2 | MC_M | MC_LOAD | (3UL << 16), "size 4 kept");
    csr_write(tdata3, ~0UL);
    CHECK_EQ(csr_read(tdata3), 0, "tdata3 reads 0");
    csr_write(tdata1, TYPE2);

    /* execute */
    CHECK_EQ(run_bp(), 7, "no trigger armed: the instruction runs");
    csr_write(tdata2, (uint64_t)bp_here);
    csr_write(tdata1, TYPE2 | MC_M | MC_EXECUTE);
    CHECK_EQ(csr_read(tdata1), TYPE2 | MC_M | MC_EXECUTE, "execute trigger reads back");
    trap_expected = 1;
    uint64_t count = trap_count;
    uint64_t v = run_bp();
    CHECK_EQ(trap_count, count + 1, "the execute trigger fired once");
    CHECK_EQ(v, 0, "the instruction at tdata2 did not run");
    expect_bp((uint64_t)bp_here, 0, "breakpoint at tdata2 (mtval 0, as QEMU)");
    csr_write(tdata1, TYPE2 | MC_U | MC_EXECUTE);   /* U only: not in M-mode */
    CHECK_EQ(run_bp(), 7, "a U-mode trigger does not fire in M-mode");

    /* load */
    csr_write(tdata1, TYPE2 | MC_M | MC_LOAD);
    csr_write(tdata2, (uint64_t)&data1);
    trap_expected = 1;
    count = trap_count;
    uint64_t got = data1;
    CHECK_EQ(trap_count, count + 1, "the load trigger fired");
    CHECK_EQ(trap_cause, EXC_BREAKPOINT, "load trigger: breakpoint");
    CHECK_EQ(trap_tval, 0, "load trigger: mtval 0 (as QEMU)");
    (void)got;
    count = trap_count;
    CHECK_EQ(data2, 2, "another address loads normally");
    CHECK_EQ(trap_count, count, "no trigger on another address");
    data1 = 5;                                       /* a store: not watched */
    CHECK_EQ(trap_count, count, "a load trigger ignores stores");

    /* store, on the second trigger, the first disarmed */
    csr_write(tdata1, TYPE2);
    csr_write(tselect, 1);
    csr_write(tdata2, (uint64_t)&data2);
    csr_write(tdata1, TYPE2 | MC_M | MC_STORE);
    trap_expected = 1;
    count = trap_count;
    data2 = 9;
    CHECK_EQ(trap_count, count + 1, "the store trigger fired");
    CHECK_EQ(trap_tval, 0, "store trigger: mtval 0 (as QEMU)");
    csr_write(tdata1, TYPE2);
    CHECK_EQ(data2, 2, "the store did not happen");
    data2 = 3;
    CHECK_EQ(data2, 3, "disarmed: stores again");
    csr_write(tselect, 0);
    pass();
}

CHECK_COUNT_OK();
