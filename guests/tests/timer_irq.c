/* timer_irq: CLINT timer and software interrupts, interrupt delegation.
 *  - mip.MTIP follows mtime >= mtimecmp; M timer interrupt via wfi
 *    (mcause 0x8000000000000007); wfi wakes with MIE = 0 without trapping
 *  - M software interrupt via msip (mcause ...03) and clearing it
 *  - priority: MSI is taken before MTI when both are pending
 *  - mideleg WARL (S bits writable, M bits not)
 *  - S timer interrupt delegated with mideleg: the M timer handler sets
 *    mip.STIP, S takes scause 0x8000000000000005
 *  - S external (mip.SEIP set by M, scause ...09) and S software (sip.SSIP,
 *    scause ...01) interrupts delegated to S
 *  - `time` CSR from S/U: legal only with mcounteren.TM (and scounteren.TM for U). */
#include "common.h"

TEST_NAME("timer_irq");

static volatile uint64_t seen_mti, seen_msi, seen_sti, seen_sei, seen_ssi;
static volatile uint64_t order[4];
static volatile int norder;
static volatile int stip_on_mti;
static volatile uint64_t irq_time, s_sip_at_sti, sti_mode;

static int hook(struct trapframe *tf, uint64_t cause, int mode)
{
    if (!(cause & CAUSE_INTR))
        return 0;
    if (norder < 4)
        order[norder++] = cause;
    switch (cause & 0xff) {
    case IRQ_M_TIMER:
        irq_time = mmio_r64(CLINT_MTIME);
        mmio_w64(CLINT_MTIMECMP(0), ~0UL);
        if (stip_on_mti)
            csr_set(mip, MIP_STIP);
        seen_mti++;
        return 1;
    case IRQ_M_SOFT:
        mmio_w32(CLINT_MSIP(0), 0);
        seen_msi++;
        return 1;
    case IRQ_S_TIMER:
        csr_clear(sie, MIP_STIP);
        s_sip_at_sti = csr_read(sip);
        sti_mode = mode;
        seen_sti++;
        return 1;
    case IRQ_S_EXT:
        csr_clear(sie, MIP_SEIP);
        seen_sei++;
        return 1;
    case IRQ_S_SOFT:
        csr_clear(sip, MIP_SSIP);
        seen_ssi++;
        return 1;
    }
    return 0;
}

static void reset_seen(void)
{
    seen_mti = seen_msi = seen_sti = seen_sei = seen_ssi = 0;
    norder = 0;
    order[0] = order[1] = order[2] = order[3] = 0;
}

/* wait (with wfi) until *flag becomes nonzero or ~5 s of mtime pass */
static void wait_flag(volatile uint64_t *flag)
{
    uint64_t t0 = mmio_r64(CLINT_MTIME);
    while (!*flag && mmio_r64(CLINT_MTIME) - t0 < 50000000UL)
        wfi();
}

static void test_m_timer(void)
{
    mmio_w64(CLINT_MTIMECMP(0), 0);
    CHECK(csr_read(mip) & MIP_MTIP, "mip.MTIP set when mtime >= mtimecmp");
    mmio_w64(CLINT_MTIMECMP(0), ~0UL);
    CHECK(!(csr_read(mip) & MIP_MTIP), "mip.MTIP clear when mtimecmp = max");
    CHECK_EQ(mmio_r64(CLINT_MTIMECMP(0)), ~0UL, "mtimecmp 64-bit read back");

    /* timer interrupt about 1 ms ahead, waited for with wfi */
    reset_seen();
    uint64_t cmp = mmio_r64(CLINT_MTIME) + 10000;
    mmio_w64(CLINT_MTIMECMP(0), cmp);
    csr_set(mie, MIP_MTIP);
    csr_set(mstatus, MSTATUS_MIE);
    wait_flag(&seen_mti);
    csr_clear(mstatus, MSTATUS_MIE);
    csr_clear(mie, MIP_MTIP);
    CHECK_EQ(seen_mti, 1, "M timer interrupt taken once");
    CHECK_EQ2(trap_cause, trap_mode, CAUSE_INTR | IRQ_M_TIMER, PRV_M, "mcause = 0x8000000000000007");
    CHECK(irq_time >= cmp, "timer interrupt not before mtimecmp");
    CHECK_EQ(trap_tval, 0, "mtval = 0 for interrupts");

    /* wfi wakes up on a pending enabled interrupt even with MIE = 0 */
    reset_seen();
    uint64_t count = trap_count;
    mmio_w64(CLINT_MTIMECMP(0), mmio_r64(CLINT_MTIME) + 2000);
    csr_set(mie, MIP_MTIP);
    uint64_t t0 = mmio_r64(CLINT_MTIME);
    while (!(csr_read(mip) & MIP_MTIP) && mmio_r64(CLINT_MTIME) - t0 < 50000000UL)
        wfi();
    CHECK(csr_read(mip) & MIP_MTIP, "MTIP pending after wfi with MIE=0");
    CHECK_EQ(trap_count, count, "no trap taken with MIE=0");
    mmio_w64(CLINT_MTIMECMP(0), ~0UL);
    csr_clear(mie, MIP_MTIP);
}

static void test_m_soft(void)
{
    reset_seen();
    mmio_w32(CLINT_MSIP(0), 1);
    CHECK_EQ(mmio_r32(CLINT_MSIP(0)), 1, "msip reads back 1");
    CHECK(csr_read(mip) & MIP_MSIP, "mip.MSIP set by CLINT msip");
    csr_set(mie, MIP_MSIP);
    csr_set(mstatus, MSTATUS_MIE);
    wait_flag(&seen_msi);
    csr_clear(mstatus, MSTATUS_MIE);
    csr_clear(mie, MIP_MSIP);
    CHECK_EQ(seen_msi, 1, "M software interrupt taken");
    CHECK_EQ(trap_cause, CAUSE_INTR | IRQ_M_SOFT, "mcause = 0x8000000000000003");
    CHECK_EQ(mmio_r32(CLINT_MSIP(0)), 0, "msip cleared");
    CHECK(!(csr_read(mip) & MIP_MSIP), "mip.MSIP clear after msip = 0");

    /* both pending: MSI has priority over MTI */
    reset_seen();
    mmio_w32(CLINT_MSIP(0), 1);
    mmio_w64(CLINT_MTIMECMP(0), 0);
    csr_set(mie, MIP_MSIP | MIP_MTIP);
    csr_set(mstatus, MSTATUS_MIE);
    wait_flag(&seen_mti);
    csr_clear(mstatus, MSTATUS_MIE);
    csr_clear(mie, MIP_MSIP | MIP_MTIP);
    CHECK_EQ(norder, 2, "two interrupts taken");
    CHECK_EQ2(order[0], order[1], CAUSE_INTR | IRQ_M_SOFT, CAUSE_INTR | IRQ_M_TIMER,
              "interrupt priority: MSI before MTI");
}

static uint64_t s_wait_sti(uint64_t arg)
{
    csr_set(sie, MIP_STIP);
    csr_set(sstatus, MSTATUS_SIE);
    for (int i = 0; i < 1000000 && !seen_sti; i++)
        wfi();
    csr_clear(sstatus, MSTATUS_SIE);
    return seen_sti;
}

static uint64_t s_enable_sei(uint64_t arg)
{
    csr_set(sie, MIP_SEIP);
    csr_set(sstatus, MSTATUS_SIE);           /* SEIP already pending: traps here */
    for (int i = 0; i < 1000 && !seen_sei; i++)
        barrier();
    csr_clear(sstatus, MSTATUS_SIE);
    return seen_sei;
}

static uint64_t s_self_ssi(uint64_t arg)
{
    csr_set(sie, MIP_SSIP);
    csr_set(sip, MIP_SSIP);
    CHECK(csr_read(sip) & MIP_SSIP, "sip.SSIP writable by S");
    csr_set(sstatus, MSTATUS_SIE);
    for (int i = 0; i < 1000 && !seen_ssi; i++)
        barrier();
    csr_clear(sstatus, MSTATUS_SIE);
    csr_clear(sie, MIP_SSIP);
    return seen_ssi;
}

static void test_delegation(void)
{
    csr_write(mideleg, ~0UL);
    uint64_t d = csr_read(mideleg);
    CHECK_EQ(d & (MIP_SSIP | MIP_STIP | MIP_SEIP), MIP_SSIP | MIP_STIP | MIP_SEIP,
             "mideleg: S interrupt bits writable");
    CHECK_EQ(d & (MIP_MSIP | MIP_MTIP | MIP_MEIP), 0, "mideleg: M interrupt bits read-only 0");
    csr_write(mideleg, 0);
    /* (with the H extension, as on QEMU 7.2, the VS bits 2/6/10/12 read as 1) */
    CHECK_EQ(csr_read(mideleg) & (MIP_SSIP | MIP_STIP | MIP_SEIP), 0, "mideleg S bits cleared");

    csr_write(stvec, (uint64_t)s_trap_entry);

    /* S timer: M timer fires while in S, its handler sets mip.STIP */
    reset_seen();
    csr_write(mideleg, MIP_STIP);
    stip_on_mti = 1;
    mmio_w64(CLINT_MTIMECMP(0), mmio_r64(CLINT_MTIME) + 5000);
    csr_set(mie, MIP_MTIP);                  /* M interrupts are always on in S */
    uint64_t r = run_in_mode(PRV_S, s_wait_sti, 0);
    stip_on_mti = 0;
    csr_clear(mie, MIP_MTIP);
    CHECK_EQ2(seen_mti, r, 1, 1, "M timer then S timer interrupt (counts)");
    CHECK_EQ2(order[0], order[1], CAUSE_INTR | IRQ_M_TIMER, CAUSE_INTR | IRQ_S_TIMER,
              "order: MTI (M) then STI (S)");
    CHECK_EQ(sti_mode, PRV_S, "STI handled by the S handler");
    CHECK_EQ(csr_read(scause), CAUSE_INTR | IRQ_S_TIMER, "scause = 0x8000000000000005");
    CHECK(s_sip_at_sti & MIP_STIP, "sip.STIP visible to S while pending");
    CHECK(csr_read(mip) & MIP_STIP, "mip.STIP stays set until M clears it");
    csr_clear(mip, MIP_STIP);
    CHECK(!(csr_read(mip) & MIP_STIP), "mip.STIP cleared by M");

    /* S external: M sets mip.SEIP */
    reset_seen();
    csr_write(mideleg, MIP_SEIP);
    csr_set(mip, MIP_SEIP);
    CHECK(csr_read(mip) & MIP_SEIP, "mip.SEIP writable by M");
    r = run_in_mode(PRV_S, s_enable_sei, 0);
    csr_clear(mip, MIP_SEIP);
    CHECK_EQ(r, 1, "delegated S external interrupt taken");
    CHECK_EQ2(trap_cause, trap_mode, CAUSE_INTR | IRQ_S_EXT, PRV_S, "scause = 0x8000000000000009");

    /* S software: S sets sip.SSIP itself */
    reset_seen();
    csr_write(mideleg, MIP_SSIP);
    r = run_in_mode(PRV_S, s_self_ssi, 0);
    CHECK_EQ(r, 1, "delegated S software interrupt taken");
    CHECK_EQ2(trap_cause, trap_mode, CAUSE_INTR | IRQ_S_SOFT, PRV_S, "scause = 0x8000000000000001");
    CHECK(!(csr_read(mip) & MIP_SSIP), "sip.SSIP cleared by S");

    /* not delegated and MIE = 0: a pending enabled SSI does not trap in M */
    reset_seen();
    csr_write(mideleg, 0);
    uint64_t count = trap_count;
    csr_set(mie, MIP_SSIP);
    csr_set(mip, MIP_SSIP);
    for (int i = 0; i < 1000; i++)
        barrier();
    csr_clear(mip, MIP_SSIP);
    csr_clear(mie, MIP_SSIP);
    CHECK_EQ(trap_count, count, "pending SSI with MIE=0 in M: no trap");
}

static volatile uint64_t time_seen;

static uint64_t read_time_fn(uint64_t arg)
{
    uint64_t t = 0;
    __asm__ __volatile__("rdtime %0" : "+r"(t) :: "memory");
    return t;
}

static void test_time_csr(void)
{
    uint64_t t;

    csr_write(mcounteren, 0);
    EXPECT_TRAP();
    t = run_in_mode(PRV_S, read_time_fn, 0);
    CHECK_EQ2(trap_cause, trap_mode, EXC_ILLEGAL, PRV_M, "S rdtime with mcounteren.TM=0 -> illegal");
    CHECK_EQ(t, 0, "trapping rdtime leaves rd unchanged");

    csr_write(mcounteren, 1UL << 1);          /* TM */
    CHECK_EQ(csr_read(mcounteren) & 2, 2, "mcounteren.TM writable");
    uint64_t before = mmio_r64(CLINT_MTIME);
    t = run_in_mode(PRV_S, read_time_fn, 0);
    uint64_t after = mmio_r64(CLINT_MTIME);
    CHECK(t >= before && t <= after, "S rdtime with mcounteren.TM=1 reads mtime");

    csr_write(scounteren, 0);
    EXPECT_TRAP();
    run_in_mode(PRV_U, read_time_fn, 0);
    CHECK_EQ2(trap_cause, trap_mode, EXC_ILLEGAL, PRV_M, "U rdtime with scounteren.TM=0 -> illegal");
    csr_write(scounteren, 1UL << 1);
    before = mmio_r64(CLINT_MTIME);
    t = run_in_mode(PRV_U, read_time_fn, 0);
    after = mmio_r64(CLINT_MTIME);
    CHECK(t >= before && t <= after, "U rdtime with mcounteren.TM=scounteren.TM=1");
    csr_write(mcounteren, 0);
    EXPECT_TRAP();
    run_in_mode(PRV_U, read_time_fn, 0);
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "U rdtime with mcounteren.TM=0 -> illegal");
    csr_write(scounteren, 0);
}

int main(uint64_t hartid, uint64_t dtb)
{
    trap_hook = hook;
    test_m_timer();
    test_m_soft();
    test_delegation();
    test_time_csr();
    trap_hook = 0;
    pass();
}

CHECK_COUNT_OK();
