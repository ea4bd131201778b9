/* traps: privileged architecture basics.
 *  - boot state: a0 = mhartid = 0, a1 -> DTB, misa (RV64, IMAFDCSU), mhartid
 *  - ecall from M/S/U (causes 11/9/8, mepc, mtval = 0), ebreak / c.ebreak
 *    (cause 3, mepc, mtval 0 or pc), illegal instructions (cause 2, mtval =
 *    instruction bits or 0)
 *  - mstatus MIE/MPIE/MPP on trap entry and mret, SIE/SPIE/SPP on a delegated
 *    trap and sret, sstatus as a restricted view of mstatus
 *  - mret into S- and U-mode, medeleg delegation of U ecall to S (stvec
 *    handler runs, scause 8, sepc), delegated breakpoint from S
 *  - CSR instruction semantics (csrrw/rs/rc and immediate forms, rd=x0 and
 *    rs1=x0 rules, writes to read-only CSRs), privilege checks on CSRs and
 *    xRET from lower modes
 *  - mtvec vectored mode (interrupts jump to base + 4*cause, exceptions to base)
 *  - cycle/instret/time counters, misaligned ld/sd to RAM (no trap), access
 *    faults for unmapped physical addresses (causes 1, 5, 7 with mtval). */
#include "common.h"

TEST_NAME("traps");

#define NORVC(s) ".option push\n.option norvc\n" s "\n.option pop\n"

static volatile uint64_t insn_addr;     /* address of the trapping instruction */
volatile uint64_t vec_hit;              /* vector table entry taken (set by asm stubs) */

static uint64_t mpp_of(uint64_t st) { return (st & MSTATUS_MPP) >> MPP_SHIFT; }

/* ------------------------------------------------------------------ */
static void test_boot_state(uint64_t a0, uint64_t a1)
{
    CHECK_EQ(a0, 0, "a0 = hartid (0) at entry");
    CHECK_EQ(csr_read(mhartid), 0, "mhartid = 0 on the boot hart");
    CHECK(a1 != 0 && mmio_r32(a1) == 0xedfe0dd0u, "a1 points to a DTB (magic d00dfeed)");
    uint64_t misa = csr_read(misa);
    CHECK_EQ(misa >> 62, 2, "misa.MXL = 2 (RV64)");
#define EXT(c) (1UL << ((c) - 'A'))
    uint64_t need = EXT('I') | EXT('M') | EXT('A') | EXT('F') | EXT('D') | EXT('C') |
                    EXT('S') | EXT('U');
    CHECK_EQ(misa & need, need, "misa has I M A F D C S U");
    CHECK_EQ(misa & EXT('E'), 0, "misa.E clear");
}

/* ------------------------------------------------------------------ */
static void test_m_exceptions(void)
{
    uint64_t addr, r;

    /* ecall from M; MIE -> MPIE, MIE = 0, MPP = M; mret restores */
    csr_set(mstatus, MSTATUS_MIE);                 /* mie = 0: nothing can fire */
    EXPECT_TRAP();
    __asm__ __volatile__("li a7, 0\nla %0, 1f\n1: ecall" : "=&r"(addr) :: "a7", "memory");
    uint64_t after = csr_read(mstatus);
    csr_clear(mstatus, MSTATUS_MIE);
    CHECK_EQ(trap_cause, EXC_ECALL_M, "ecall from M: mcause 11");
    CHECK_EQ(trap_epc, addr, "ecall from M: mepc = address of ecall");
    CHECK_EQ(trap_tval, 0, "ecall: mtval = 0");
    CHECK_EQ(trap_mode, PRV_M, "ecall handled by M handler");
    CHECK_EQ(trap_status & (MSTATUS_MIE | MSTATUS_MPIE), MSTATUS_MPIE,
             "trap entry: MPIE = old MIE (1), MIE = 0");
    CHECK_EQ(mpp_of(trap_status), PRV_M, "trap entry: MPP = M");
    CHECK(after & MSTATUS_MIE, "mret: MIE = MPIE");
    CHECK(after & MSTATUS_MPIE, "mret: MPIE = 1");
    CHECK_EQ(mpp_of(after), PRV_U, "mret: MPP = U (least privileged mode)");

    /* ecall with MIE = 0 leaves MPIE = 0 */
    EXPECT_TRAP();
    __asm__ __volatile__("li a7, 0\necall" ::: "a7", "memory");
    CHECK_EQ(trap_status & (MSTATUS_MIE | MSTATUS_MPIE), 0, "trap entry with MIE=0: MPIE = 0");

    /* ebreak: cause 3, mepc = address; mtval = 0 or the pc */
    EXPECT_TRAP();
    __asm__ __volatile__(NORVC("la %0, 1f\n1: ebreak") : "=&r"(addr) :: "memory");
    CHECK_EQ(trap_cause, EXC_BREAKPOINT, "ebreak: mcause 3");
    CHECK_EQ(trap_epc, addr, "ebreak: mepc");
    CHECK(trap_tval == 0 || trap_tval == addr, "ebreak: mtval = 0 or pc");

    /* c.ebreak: 2-byte instruction, handler resumes at mepc + 2 */
    r = 0;
    EXPECT_TRAP();
    __asm__ __volatile__("la %0, 1f\n1: c.ebreak\n c.li %1, 7" : "=&r"(addr), "+r"(r) :: "memory");
    CHECK_EQ(trap_cause, EXC_BREAKPOINT, "c.ebreak: mcause 3");
    CHECK_EQ(trap_epc, addr, "c.ebreak: mepc");
    CHECK_EQ(r, 7, "execution continues after c.ebreak (mepc + 2)");

    /* illegal instructions */
    EXPECT_TRAP();
    __asm__ __volatile__(NORVC("la %0, 1f\n1: .word 0xc0001073") : "=&r"(addr) :: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "unimp (csrrw x0, cycle, x0): mcause 2");
    CHECK_EQ(trap_epc, addr, "unimp: mepc");
    CHECK(trap_tval == 0 || trap_tval == 0xc0001073u, "unimp: mtval = insn bits or 0");
    EXPECT_TRAP();
    __asm__ __volatile__(NORVC("la %0, 1f\n1: .word 0x0000000b") : "=&r"(addr) :: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "custom-0 opcode: mcause 2");
    CHECK(trap_tval == 0 || trap_tval == 0xb, "custom-0 opcode: mtval = insn bits or 0");
    r = 0;
    EXPECT_TRAP();
    __asm__ __volatile__("la %0, 1f\n1: .half 0\n c.li %1, 5" : "=&r"(addr), "+r"(r) :: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "c.illegal (0x0000): mcause 2");
    CHECK_EQ(trap_epc, addr, "c.illegal: mepc");
    CHECK_EQ(trap_tval, 0, "c.illegal: mtval = 0");
    CHECK_EQ(r, 5, "c.illegal is a 2-byte instruction");
    r = 0x77;
    EXPECT_TRAP();
    __asm__ __volatile__("csrr %0, 0x3ff" : "+r"(r) :: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "unimplemented CSR 0x3ff: mcause 2");
    CHECK_EQ(r, 0x77, "rd unchanged by a trapping csrr");
}

/* ------------------------------------------------------------------ */
static void test_csr_insns(void)
{
    uint64_t old, r;

    csr_write(mscratch, 0x1234);
    __asm__ __volatile__("csrrw %0, mscratch, %1" : "=r"(old) : "r"(0xff00UL) : "memory");
    CHECK_EQ2(old, csr_read(mscratch), 0x1234, 0xff00, "csrrw old/new");
    __asm__ __volatile__("csrrs %0, mscratch, %1" : "=r"(old) : "r"(0x0fUL) : "memory");
    CHECK_EQ2(old, csr_read(mscratch), 0xff00, 0xff0f, "csrrs old/new");
    __asm__ __volatile__("csrrc %0, mscratch, %1" : "=r"(old) : "r"(0xf00UL) : "memory");
    CHECK_EQ2(old, csr_read(mscratch), 0xff0f, 0xf00f, "csrrc old/new");
    __asm__ __volatile__("csrrwi %0, mscratch, 31" : "=r"(old) :: "memory");
    CHECK_EQ2(old, csr_read(mscratch), 0xf00f, 31, "csrrwi old/new");
    __asm__ __volatile__("csrrci %0, mscratch, 0x15" : "=r"(old) :: "memory");
    CHECK_EQ2(old, csr_read(mscratch), 31, 0x0a, "csrrci old/new");
    __asm__ __volatile__("csrrsi %0, mscratch, 0x10" : "=r"(old) :: "memory");
    CHECK_EQ2(old, csr_read(mscratch), 0x0a, 0x1a, "csrrsi old/new");
    __asm__ __volatile__("csrrw x0, mscratch, %0" :: "r"(-1UL) : "memory");
    CHECK_EQ(csr_read(mscratch), -1UL, "csrrw rd=x0 still writes");
    __asm__ __volatile__("csrrs %0, mscratch, x0\ncsrrc %0, mscratch, x0" : "=r"(old) :: "memory");
    CHECK_EQ2(old, csr_read(mscratch), -1UL, -1UL, "csrrs/csrrc rs1=x0 read without writing");
    csr_write(mscratch, 0);

    /* read-only CSRs: reads (no write) are fine, any write attempt is illegal */
    uint64_t vid;
    __asm__ __volatile__("csrrs %0, mvendorid, x0" : "=r"(vid) :: "memory");
    __asm__ __volatile__("csrrsi %0, mhartid, 0" : "=r"(r) :: "memory");
    CHECK_EQ(r, 0, "csrrsi rd, mhartid, 0 does not trap");
    __asm__ __volatile__("csrrci %0, mhartid, 0\ncsrrc %0, mhartid, x0" : "=r"(r) :: "memory");
    CHECK_EQ(r, 0, "csrrci/csrrc with zero source on mhartid do not trap");
    EXPECT_TRAP();
    __asm__ __volatile__("csrrw x0, mvendorid, %0" :: "r"(vid) : "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "csrrw x0, mvendorid -> illegal (rd=x0 still writes)");
    r = 0x55;
    EXPECT_TRAP();
    __asm__ __volatile__("csrrs %0, mhartid, %1" : "+r"(r) : "r"(1UL) : "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "csrrs mhartid, nonzero -> illegal");
    CHECK_EQ(r, 0x55, "trapping csrrs leaves rd unchanged");
    EXPECT_TRAP();
    __asm__ __volatile__("csrrwi x0, mhartid, 0" ::: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "csrrwi x0, mhartid, 0 -> illegal");
    EXPECT_TRAP();
    __asm__ __volatile__("csrw cycle, %0" :: "r"(0UL) : "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "write to cycle (user read-only) -> illegal");

    /* sstatus is a restricted view of mstatus */
    csr_set(sstatus, MSTATUS_SUM);
    CHECK(csr_read(mstatus) & MSTATUS_SUM, "sstatus.SUM write visible in mstatus");
    csr_clear(mstatus, MSTATUS_SUM);
    CHECK(!(csr_read(sstatus) & MSTATUS_SUM), "mstatus.SUM clear visible in sstatus");
    csr_set(mstatus, MSTATUS_MPP | MSTATUS_MPIE);
    CHECK_EQ(csr_read(sstatus) & (MSTATUS_MPP | MSTATUS_MPIE | MSTATUS_MIE), 0,
             "sstatus hides MPP/MPIE/MIE");
    csr_clear(mstatus, MSTATUS_MPP);
}

/* ------------------------------------------------------------------ */
/* code run in S- or U-mode through run_in_mode()                      */
static uint64_t lower_ecall_fn(uint64_t arg)
{
    __asm__ __volatile__("li a7, 0\nla t0, 1f\nsd t0, 0(%0)\n1: ecall"
                         :: "r"(&insn_addr) : "a7", "t0", "memory");
    return arg + 1;
}

static uint64_t s_priv_fn(uint64_t arg)
{
    uint64_t r = 0x99;
    EXPECT_TRAP();
    __asm__ __volatile__("csrr %0, mstatus" : "+r"(r) :: "memory");
    CHECK_EQ2(trap_cause, trap_mode, EXC_ILLEGAL, PRV_M, "S-mode csrr mstatus -> illegal (to M)");
    CHECK_EQ(r, 0x99, "S-mode csrr mstatus: rd unchanged");
    CHECK_EQ(mpp_of(trap_status), PRV_S, "trap from S: MPP = S");
    EXPECT_TRAP();
    __asm__ __volatile__("csrw mscratch, %0" :: "r"(1UL) : "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "S-mode csrw mscratch -> illegal");
    EXPECT_TRAP();
    __asm__ __volatile__("csrr %0, mhartid" : "+r"(r) :: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "S-mode csrr mhartid -> illegal");
    EXPECT_TRAP();
    __asm__ __volatile__("mret" ::: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "mret in S-mode -> illegal");
    /* S CSRs work */
    csr_write(sscratch, 0xabc);
    CHECK_EQ(csr_read(sscratch), 0xabc, "S-mode sscratch read/write");
    uint64_t sst = csr_read(sstatus);
    CHECK_EQ(sst & MSTATUS_MPP, 0, "S-mode sstatus read works");
    return arg * 2;
}

static uint64_t u_priv_fn(uint64_t arg)
{
    uint64_t r = 0x99;
    EXPECT_TRAP();
    __asm__ __volatile__("csrr %0, sstatus" : "+r"(r) :: "memory");
    CHECK_EQ2(trap_cause, trap_mode, EXC_ILLEGAL, PRV_M, "U-mode csrr sstatus -> illegal (to M)");
    CHECK_EQ(mpp_of(trap_status), PRV_U, "trap from U: MPP = U");
    EXPECT_TRAP();
    __asm__ __volatile__("sret" ::: "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "sret in U-mode -> illegal");
    EXPECT_TRAP();
    __asm__ __volatile__("csrw sscratch, %0" :: "r"(1UL) : "memory");
    CHECK_EQ(trap_cause, EXC_ILLEGAL, "U-mode csrw sscratch -> illegal");
    return arg + 100;
}

/* S-mode: ebreak delegated to S, check SPP/SPIE/SIE and sret */
static uint64_t s_ebreak_fn(uint64_t arg)
{
    uint64_t addr;
    csr_set(sstatus, MSTATUS_SIE);                   /* sie = 0: nothing can fire */
    EXPECT_TRAP();
    __asm__ __volatile__(NORVC("la %0, 1f\n1: ebreak") : "=&r"(addr) :: "memory");
    uint64_t after = csr_read(sstatus);
    csr_clear(sstatus, MSTATUS_SIE);
    CHECK_EQ2(trap_mode, trap_cause, PRV_S, EXC_BREAKPOINT, "delegated ebreak handled in S (mode/cause)");
    CHECK_EQ(trap_epc, addr, "delegated ebreak: sepc");
    CHECK_EQ(trap_status & (MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP), MSTATUS_SPIE | MSTATUS_SPP,
             "S trap entry from S: SPP = 1, SPIE = old SIE, SIE = 0");
    CHECK_EQ(after & (MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP), MSTATUS_SIE | MSTATUS_SPIE,
             "sret: SIE = SPIE, SPIE = 1, SPP = U");
    return arg;
}

static void test_modes(void)
{
    uint64_t r;

    /* mret to S, ecall from S */
    EXPECT_TRAP();
    r = run_in_mode(PRV_S, lower_ecall_fn, 41);
    CHECK_EQ(r, 42, "S-mode function ran and returned through mret");
    CHECK_EQ2(trap_cause, trap_mode, EXC_ECALL_S, PRV_M, "ecall from S: mcause 9 (M handler)");
    CHECK_EQ(trap_epc, insn_addr, "ecall from S: mepc");
    CHECK_EQ(mpp_of(trap_status), PRV_S, "ecall from S: MPP = S");

    /* mret to U, ecall from U */
    EXPECT_TRAP();
    r = run_in_mode(PRV_U, lower_ecall_fn, 7);
    CHECK_EQ(r, 8, "U-mode function ran and returned");
    CHECK_EQ2(trap_cause, trap_mode, EXC_ECALL_U, PRV_M, "ecall from U: mcause 8 (M handler)");
    CHECK_EQ(trap_epc, insn_addr, "ecall from U: mepc");
    CHECK_EQ(mpp_of(trap_status), PRV_U, "ecall from U: MPP = U");

    CHECK_EQ(run_in_mode(PRV_S, s_priv_fn, 21), 42, "S-mode privilege checks");
    CHECK_EQ(run_in_mode(PRV_U, u_priv_fn, 1), 101, "U-mode privilege checks");

    /* delegate U ecall to S */
    csr_write(stvec, (uint64_t)s_trap_entry);
    csr_write(medeleg, 1UL << EXC_ECALL_U);
    CHECK_EQ(csr_read(medeleg), 1UL << EXC_ECALL_U, "medeleg bit 8 writable");
    csr_set(sstatus, MSTATUS_SIE);
    EXPECT_TRAP();
    r = run_in_mode(PRV_U, lower_ecall_fn, 100);
    csr_clear(sstatus, MSTATUS_SIE);
    CHECK_EQ(r, 101, "U function continues after delegated ecall (sret)");
    CHECK_EQ2(trap_mode, trap_cause, PRV_S, EXC_ECALL_U, "delegated U ecall: S handler, scause 8");
    CHECK_EQ(trap_epc, insn_addr, "delegated U ecall: sepc");
    CHECK_EQ(trap_status & (MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP), MSTATUS_SPIE,
             "S trap from U: SPP = 0, SPIE = old SIE, SIE = 0");
    CHECK_EQ(csr_read(scause), EXC_ECALL_U, "scause readable from M");
    /* not delegated -> still M */
    csr_write(medeleg, 0);
    EXPECT_TRAP();
    run_in_mode(PRV_U, lower_ecall_fn, 0);
    CHECK_EQ2(trap_mode, trap_cause, PRV_M, EXC_ECALL_U, "medeleg=0: U ecall goes to M");

    /* delegated breakpoint from S to S */
    csr_write(medeleg, 1UL << EXC_BREAKPOINT);
    CHECK_EQ(run_in_mode(PRV_S, s_ebreak_fn, 3), 3, "S-mode delegated ebreak");
    csr_write(medeleg, 0);
}

/* ------------------------------------------------------------------ */
/* vectored mtvec: each stub records its index then enters the common handler */
__asm__(
    ".text\n"
    ".align 8\n"
    "vec_table:\n"
    ".option push\n.option norvc\n"
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11\n"
    "  j vec_stub_\\n\n"
    ".endr\n"
    ".option pop\n"
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11\n"
    "vec_stub_\\n:\n"
    "  addi sp, sp, -16\n"
    "  sd t0, 0(sp)\n"
    "  sd t1, 8(sp)\n"
    "  li t0, \\n\n"
    "  la t1, vec_hit\n"
    "  sd t0, 0(t1)\n"
    "  ld t0, 0(sp)\n"
    "  ld t1, 8(sp)\n"
    "  addi sp, sp, 16\n"
    "  j m_trap_entry\n"
    ".endr\n");
extern char vec_table[];

static volatile uint64_t irq_seen;

static int irq_hook(struct trapframe *tf, uint64_t cause, int mode)
{
    if (cause == (CAUSE_INTR | IRQ_M_SOFT)) {
        mmio_w32(CLINT_MSIP(0), 0);
        irq_seen++;
        return 1;
    }
    if (cause == (CAUSE_INTR | IRQ_M_TIMER)) {
        mmio_w64(CLINT_MTIMECMP(0), ~0UL);
        irq_seen++;
        return 1;
    }
    return 0;
}

static void wait_irq(void)
{
    for (int i = 0; i < 1000000 && !irq_seen; i++)
        barrier();
}

static void test_vectored(void)
{
    uint64_t base = (uint64_t)vec_table;
    csr_write(mtvec, base | 1);
    CHECK_EQ(csr_read(mtvec), base | 1, "mtvec vectored mode readback");

    vec_hit = ~0UL;
    EXPECT_TRAP();
    __asm__ __volatile__("li a7, 0\necall" ::: "a7", "memory");
    CHECK_EQ2(vec_hit, trap_cause, 0, EXC_ECALL_M, "vectored: exception goes to base");

    trap_hook = irq_hook;
    vec_hit = ~0UL;
    irq_seen = 0;
    mmio_w32(CLINT_MSIP(0), 1);
    csr_set(mie, MIP_MSIP);
    csr_set(mstatus, MSTATUS_MIE);
    wait_irq();
    csr_clear(mstatus, MSTATUS_MIE);
    csr_clear(mie, MIP_MSIP);
    CHECK_EQ(irq_seen, 1, "vectored: software interrupt taken");
    CHECK_EQ2(vec_hit, trap_cause, 3, CAUSE_INTR | IRQ_M_SOFT, "vectored: MSI -> base + 4*3");

    vec_hit = ~0UL;
    irq_seen = 0;
    mmio_w64(CLINT_MTIMECMP(0), 0);                   /* timer pending right away */
    csr_set(mie, MIP_MTIP);
    csr_set(mstatus, MSTATUS_MIE);
    wait_irq();
    csr_clear(mstatus, MSTATUS_MIE);
    csr_clear(mie, MIP_MTIP);
    CHECK_EQ(irq_seen, 1, "vectored: timer interrupt taken");
    CHECK_EQ2(vec_hit, trap_cause, 7, CAUSE_INTR | IRQ_M_TIMER, "vectored: MTI -> base + 4*7");

    trap_hook = 0;
    csr_write(mtvec, (uint64_t)m_trap_entry);
    CHECK_EQ(csr_read(mtvec), (uint64_t)m_trap_entry, "mtvec direct mode restored");
}

/* ------------------------------------------------------------------ */
static volatile uint8_t mbuf[32] __attribute__((aligned(16)));

static void test_counters_misaligned_faults(void)
{
    uint64_t a, b, r;

    __asm__ __volatile__("rdcycle %0" : "=r"(a));
    for (volatile int i = 0; i < 1000; i++)
        ;
    __asm__ __volatile__("rdcycle %0" : "=r"(b));
    CHECK(b > a, "cycle increases");
    __asm__ __volatile__("rdinstret %0" : "=r"(a));
    for (volatile int i = 0; i < 100; i++)
        ;
    __asm__ __volatile__("rdinstret %0" : "=r"(b));
    CHECK(b - a >= 300, "instret increases (>= 300 for a 100-iteration loop)");
    a = csr_read(mcycle);
    b = csr_read(mcycle);
    CHECK(b >= a, "mcycle readable and monotonic");
    a = csr_read(minstret);
    b = csr_read(minstret);
    CHECK(b > a, "minstret readable and increasing");
    __asm__ __volatile__("rdtime %0" : "=r"(a));
    b = a;
    for (int i = 0; i < 10000000 && b == a; i++)
        __asm__ __volatile__("rdtime %0" : "=r"(b));
    CHECK(b > a, "time increases");
    __asm__ __volatile__("rdtime %0" : "=r"(a));
    r = mmio_r64(CLINT_MTIME);
    CHECK(r >= a && r - a < 10000000, "time CSR tracks CLINT mtime");

    /* misaligned accesses to RAM complete without trapping */
    for (int i = 0; i < 32; i++)
        mbuf[i] = (uint8_t)i;
    __asm__ __volatile__("ld %0, 1(%1)" : "=r"(r) : "r"(mbuf) : "memory");
    CHECK_EQ(r, 0x0807060504030201ULL, "misaligned ld +1");
    __asm__ __volatile__("lw %0, 3(%1)" : "=r"(r) : "r"(mbuf) : "memory");
    CHECK_EQ(r, 0x06050403, "misaligned lw +3");
    __asm__ __volatile__("lh %0, 7(%1)" : "=r"(r) : "r"(mbuf) : "memory");
    CHECK_EQ(r, 0x0807, "misaligned lh +7");
    mbuf[14] = 0x80;
    __asm__ __volatile__("lh %0, 13(%1)" : "=r"(r) : "r"(mbuf) : "memory");
    CHECK_EQ(r, 0xffffffffffff800dULL, "misaligned lh sign-extends");
    __asm__ __volatile__("sd %0, 9(%1)" :: "r"(0x1122334455667788ULL), "r"(mbuf) : "memory");
    CHECK_EQ2(mbuf[9], mbuf[16], 0x88, 0x11, "misaligned sd +9 (first/last byte)");
    CHECK_EQ2(mbuf[8], mbuf[17], 8, 17, "misaligned sd +9 leaves neighbours");
    __asm__ __volatile__("sw %0, 22(%1)" :: "r"(0xaabbccddUL), "r"(mbuf) : "memory");
    __asm__ __volatile__("lwu %0, 22(%1)" : "=r"(r) : "r"(mbuf) : "memory");
    CHECK_EQ(r, 0xaabbccdd, "misaligned sw/lwu +22");
    __asm__ __volatile__("ld %0, 12(%1)" : "=r"(r) : "r"(mbuf) : "memory");
    CHECK_EQ(r, 0x1312111122334455ULL, "misaligned ld over sd data");

    /* access faults on unmapped physical addresses */
    r = 0x66;
    EXPECT_TRAP();
    __asm__ __volatile__("ld %0, 0(%1)" : "+r"(r) : "r"(0UL) : "memory");
    CHECK_EQ2(trap_cause, trap_tval, EXC_LOAD_ACCESS, 0, "load from 0x0: cause 5, mtval 0");
    CHECK_EQ(r, 0x66, "faulting load leaves rd unchanged");
    EXPECT_TRAP();
    __asm__ __volatile__("lw %0, 0(%1)" : "+r"(r) : "r"(0x20UL) : "memory");
    CHECK_EQ2(trap_cause, trap_tval, EXC_LOAD_ACCESS, 0x20, "load from 0x20: cause 5, mtval 0x20");
    EXPECT_TRAP();
    __asm__ __volatile__("sd %0, 0(%1)" :: "r"(r), "r"(0x8UL) : "memory");
    CHECK_EQ2(trap_cause, trap_tval, EXC_STORE_ACCESS, 8, "store to 0x8: cause 7, mtval 8");
    EXPECT_TRAP();
    trap_resume = RESUME_AT_RA;
    ((void (*)(void))0x10UL)();
    CHECK_EQ2(trap_cause, trap_tval, EXC_INSN_ACCESS, 0x10, "jump to 0x10: cause 1, mtval 0x10");
    CHECK_EQ(trap_epc, 0x10, "jump to 0x10: mepc = 0x10");
}

int main(uint64_t hartid, uint64_t dtb)
{
    test_boot_state(hartid, dtb);
    test_m_exceptions();
    test_csr_insns();
    test_modes();
    test_vectored();
    test_counters_misaligned_faults();
    pass();
}

CHECK_COUNT_OK();
