/* paging: Sv39 and Sv48 address translation, run from S-mode (entered with
 * mret and satp set), page faults delegated to S via medeleg.
 *  - 4 KiB pages, 2 MiB megapages, 1 GiB gigapages (and a 512 GiB page in Sv48)
 *  - load/store/instruction page faults (13/15/12) with scause/stval/sepc
 *  - read-only page, X-only page + MXR, W-without-R (reserved) PTE
 *  - U bit: S access to U page faults without SUM, works with SUM; S never
 *    executes U pages; U-mode access to a non-U page faults
 *  - hardware A/D updates, sfence.vma after changing a PTE
 *  - misaligned superpages, non-canonical virtual addresses
 *  - M-mode MPRV loads through the S translation
 *  - satp is WARL: writing an unsupported MODE leaves satp unchanged. */
#include "common.h"

TEST_NAME("paging");

#define PTE_V 0x01UL
#define PTE_R 0x02UL
#define PTE_W 0x04UL
#define PTE_X 0x08UL
#define PTE_U 0x10UL
#define PTE_G 0x20UL
#define PTE_A 0x40UL
#define PTE_D 0x80UL
#define PTE(pa, fl) ((((uint64_t)(pa) >> 12) << 10) | (fl))
#define LEAF_RW  (PTE_V | PTE_R | PTE_W | PTE_A | PTE_D)
#define LEAF_RWX (PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D)

#define SATP_MODE_SV39 8UL
#define SATP_MODE_SV48 9UL

#define PG __attribute__((aligned(4096)))
static uint64_t root39[512] PG, l1a[512] PG, l0a[512] PG;
static uint64_t root48[512] PG, l2b[512] PG;
static volatile uint64_t pgA[512] PG, pgB[512] PG, pgC[512] PG, pgD[512] PG, pgE[512] PG;
static volatile uint64_t magic_var = 0x6d61676963766172ULL;    /* in .data */

/* virtual addresses (see build_tables) */
#define VA_A       0x40000000UL     /* 4K -> pgA, RW */
#define VA_B       0x40001000UL     /* 4K -> pgB, R only */
#define VA_C       0x40002000UL     /* 4K -> pgC, RW + U */
#define VA_D       0x40003000UL     /* 4K -> pgD, X only */
#define VA_E       0x40004000UL     /* 4K -> pgE, RW, A = D = 0 */
#define VA_HOLE    0x40005000UL     /* 4K, invalid PTE */
#define VA_WONLY   0x40006000UL     /* 4K -> pgA, W without R (reserved) */
#define VA_SWAP    0x40007000UL     /* 4K -> pgA, later pgB (sfence.vma test) */
#define VA_UCODE   0x40008000UL     /* 4K -> upage, R X U */
#define VA_A_NOU   0x40009000UL     /* 4K -> pgA, RW, no U (U-mode access faults) */
#define VA_SCODE   0x4000a000UL     /* 4K -> upage, R X, no U */
#define VA_MEGA    0x40200000UL     /* 2M -> 0x80000000 */
#define VA_UNMAP2M 0x40400000UL     /* invalid level-1 PTE */
#define VA_MISMEGA 0x40600000UL     /* 2M leaf with misaligned PPN */
#define VA_GIGA    0xc0000000UL     /* 1G -> 0x80000000 */
#define VA_MISGIGA 0x100000000UL    /* 1G leaf with misaligned PPN */
#define VA_SV48_A  0x8040000000UL   /* Sv48 only: -> pgA through a second L3 entry */
#define VA_TERA    0x10000000000UL  /* Sv48 only: 512G leaf -> PA 0 */
#define VA_MISTERA 0x18000000000UL  /* Sv48 only: misaligned 512G leaf */

/* the page with code for U-mode (u_code) and an S-executable alias (s_code) */
__asm__(
    ".section .text.upage, \"ax\", @progbits\n"
    ".balign 4096\n"
    ".globl upage, u_code, u_code_ecall, s_code\n"
    "upage:\n"
    ".option push\n.option norvc\n"
    "u_code:\n"                       /* a0 = *(uint64_t *)a0, back to M */
    "  ld a0, 0(a0)\n"
    "u_code_ecall:\n"
    "  li a7, " "0x5EC0DE" "\n"
    "  ecall\n"
    ".balign 64\n"
    "s_code:\n"                       /* a0 + 1 */
    "  addi a0, a0, 1\n"
    "  ret\n"
    ".option pop\n"
    ".balign 4096\n"
    ".text\n");
extern char upage[], u_code[], u_code_ecall[], s_code[];
_Static_assert(MAGIC_EXIT == 0x5EC0DE, "u_code hardcodes MAGIC_EXIT");

static void build_tables(void)
{
    memset(root39, 0, sizeof root39);
    memset(l1a, 0, sizeof l1a);
    memset(l0a, 0, sizeof l0a);
    memset(root48, 0, sizeof root48);
    memset(l2b, 0, sizeof l2b);

    root39[0] = PTE(0x00000000UL, LEAF_RW);                 /* MMIO identity */
    root39[1] = PTE(l1a, PTE_V);
    root39[2] = PTE(0x80000000UL, LEAF_RWX);                /* RAM identity */
    root39[3] = PTE(0x80000000UL, LEAF_RW);                 /* alias gigapage */
    root39[4] = PTE(0x80200000UL, LEAF_RW);                 /* misaligned 1G */

    l1a[0] = PTE(l0a, PTE_V);
    l1a[1] = PTE(0x80000000UL, LEAF_RW);                    /* megapage */
    l1a[3] = PTE(0x80001000UL, LEAF_RW);                    /* misaligned 2M */

    l0a[0]  = PTE(pgA, LEAF_RW);
    l0a[1]  = PTE(pgB, PTE_V | PTE_R | PTE_A);
    l0a[2]  = PTE(pgC, LEAF_RW | PTE_U);
    l0a[3]  = PTE(pgD, PTE_V | PTE_X | PTE_A);
    l0a[4]  = PTE(pgE, PTE_V | PTE_R | PTE_W);              /* A = D = 0 */
    l0a[6]  = PTE(pgA, PTE_V | PTE_W | PTE_A | PTE_D);      /* reserved W-only */
    l0a[7]  = PTE(pgA, LEAF_RW);
    l0a[8]  = PTE(upage, PTE_V | PTE_R | PTE_X | PTE_U | PTE_A);
    l0a[9]  = PTE(pgA, LEAF_RW);
    l0a[10] = PTE(upage, PTE_V | PTE_R | PTE_X | PTE_A);

    root48[0] = PTE(root39, PTE_V);                        /* first 512G as in Sv39 */
    root48[1] = PTE(l2b, PTE_V);
    l2b[1]    = PTE(l1a, PTE_V);
    root48[2] = PTE(0x0UL, LEAF_RW);                        /* 512G page at PA 0 */
    root48[3] = PTE(0x80000000UL, LEAF_RW);                 /* misaligned 512G */

    for (int i = 0; i < 512; i++) {
        pgA[i] = 0xaaaa000000000000ULL | i;
        pgB[i] = 0xbbbb000000000000ULL | i;
        pgC[i] = 0xcccc000000000000ULL | i;
        pgD[i] = 0xdddd000000000000ULL | i;
        pgE[i] = 0xeeee000000000000ULL | i;
    }
    fence();
}

static inline uint64_t vload(uint64_t va)
{
    uint64_t v;
    __asm__ __volatile__("ld %0, 0(%1)" : "=r"(v) : "r"(va) : "memory");
    return v;
}

static inline void vstore(uint64_t va, uint64_t v)
{
    __asm__ __volatile__("sd %0, 0(%1)" :: "r"(v), "r"(va) : "memory");
}

static inline void sfence_all(void) { __asm__ __volatile__("sfence.vma" ::: "memory"); }

/* expect a page fault of `cause` for a load (is_store = 0) or store at va */
#define EXPECT_PF(is_store, va, cause, what) do { \
    uint64_t __va = (va); \
    EXPECT_TRAP(); \
    if (is_store) vstore(__va, 0x1234); else (void)vload(__va); \
    CHECK_EQ2(trap_mode, trap_cause, PRV_S, (cause), what ": delegated to S, scause"); \
    CHECK_EQ(trap_tval, __va, what ": stval = address"); \
} while (0)

static uint64_t s_body(uint64_t mode)
{
    uint64_t off = (uint64_t)&magic_var - 0x80000000UL;

    /* plain translation */
    CHECK_EQ(vload(VA_A + 8), 0xaaaa000000000001ULL, "4K page load");
    vstore(VA_A + 16, 0x5151515151515151ULL);
    CHECK_EQ(pgA[2], 0x5151515151515151ULL, "4K page store reaches physical page");
    CHECK_EQ(vload(VA_B + 8 * 511), 0xbbbb0000000001ffULL, "read-only page load");
    CHECK_EQ(vload(VA_MEGA + off), magic_var, "2M megapage load");
    CHECK_EQ(vload(VA_GIGA + off), magic_var, "1G gigapage load");
    vstore(VA_GIGA + off, 0x1122334455667788ULL);
    CHECK_EQ(magic_var, 0x1122334455667788ULL, "1G gigapage store");

    /* page faults */
    EXPECT_PF(0, VA_UNMAP2M + 0x123, EXC_LOAD_PAGE_FAULT, "load, invalid L1 PTE");
    EXPECT_PF(0, VA_HOLE + 0x8, EXC_LOAD_PAGE_FAULT, "load, invalid L0 PTE");
    EXPECT_PF(1, VA_HOLE + 0x10, EXC_STORE_PAGE_FAULT, "store, invalid L0 PTE");
    EXPECT_PF(1, VA_B + 0x18, EXC_STORE_PAGE_FAULT, "store to read-only page");
    CHECK_EQ(pgB[3], 0xbbbb000000000003ULL, "read-only page unchanged");
    EXPECT_PF(0, VA_WONLY, EXC_LOAD_PAGE_FAULT, "load, W-only (reserved) PTE");
    EXPECT_PF(1, VA_WONLY, EXC_STORE_PAGE_FAULT, "store, W-only (reserved) PTE");
    EXPECT_PF(0, VA_MISMEGA + 0x40, EXC_LOAD_PAGE_FAULT, "load, misaligned megapage");
    EXPECT_PF(0, VA_MISGIGA + 0x80, EXC_LOAD_PAGE_FAULT, "load, misaligned gigapage");
    if (mode == SATP_MODE_SV39) {
        EXPECT_PF(0, 0x0000004000000000UL, EXC_LOAD_PAGE_FAULT, "Sv39 non-canonical VA");
        EXPECT_PF(1, 0xffffff0000000000UL ^ 0x8000000000UL, EXC_STORE_PAGE_FAULT,
                  "Sv39 non-canonical VA (store)");
    } else {
        EXPECT_PF(0, 0x0000800000000000UL, EXC_LOAD_PAGE_FAULT, "Sv48 non-canonical VA");
        CHECK_EQ(vload(VA_SV48_A + 8), 0xaaaa000000000001ULL, "Sv48 4-level walk");
        CHECK_EQ(vload(VA_TERA + 0x80000000UL + off), magic_var, "Sv48 512G page load");
        EXPECT_PF(0, VA_MISTERA + 0x80000000UL, EXC_LOAD_PAGE_FAULT, "misaligned 512G page");
    }

    /* instruction fetch */
    uint64_t (*fn)(uint64_t) = (uint64_t (*)(uint64_t))(VA_SCODE + (s_code - upage));
    CHECK_EQ(fn(41), 42, "execute through a 4K mapping");
    EXPECT_TRAP();
    trap_resume = RESUME_AT_RA;
    ((void (*)(void))VA_A)();
    CHECK_EQ2(trap_mode, trap_cause, PRV_S, EXC_INSN_PAGE_FAULT, "fetch from non-X page: scause 12");
    CHECK_EQ2(trap_tval, trap_epc, VA_A, VA_A, "fetch from non-X page: stval/sepc");
    EXPECT_TRAP();
    trap_resume = RESUME_AT_RA;
    ((void (*)(void))(VA_HOLE + 0x20))();
    CHECK_EQ2(trap_cause, trap_tval, EXC_INSN_PAGE_FAULT, VA_HOLE + 0x20, "fetch from unmapped page");

    /* U pages from S-mode: SUM */
    csr_clear(sstatus, MSTATUS_SUM);
    EXPECT_PF(0, VA_C, EXC_LOAD_PAGE_FAULT, "S load from U page without SUM");
    EXPECT_PF(1, VA_C, EXC_STORE_PAGE_FAULT, "S store to U page without SUM");
    csr_set(sstatus, MSTATUS_SUM);
    CHECK_EQ(vload(VA_C + 0x28), 0xcccc000000000005ULL, "S load from U page with SUM");
    vstore(VA_C, 0xc0ffee);
    CHECK_EQ(pgC[0], 0xc0ffee, "S store to U page with SUM");
    EXPECT_TRAP();
    trap_resume = RESUME_AT_RA;
    ((void (*)(void))(VA_UCODE + (s_code - upage)))();
    CHECK_EQ2(trap_cause, trap_tval, EXC_INSN_PAGE_FAULT, VA_UCODE + (s_code - upage),
              "S fetch from U page faults even with SUM");
    csr_clear(sstatus, MSTATUS_SUM);

    /* MXR: X-only page readable only with MXR */
    EXPECT_PF(0, VA_D + 8, EXC_LOAD_PAGE_FAULT, "load from X-only page without MXR");
    csr_set(sstatus, MSTATUS_MXR);
    CHECK_EQ(vload(VA_D + 8), 0xdddd000000000001ULL, "load from X-only page with MXR");
    EXPECT_PF(1, VA_D + 8, EXC_STORE_PAGE_FAULT, "store to X-only page with MXR");
    csr_clear(sstatus, MSTATUS_MXR);

    /* hardware A/D update */
    volatile uint64_t *pteE = &l0a[4];
    CHECK_EQ(*pteE & (PTE_A | PTE_D), 0, "PTE starts with A = D = 0");
    CHECK_EQ(vload(VA_E + 8), 0xeeee000000000001ULL, "load from page with A = 0");
    CHECK_EQ(*pteE & (PTE_A | PTE_D), PTE_A, "load sets A only");
    vstore(VA_E + 8, 0xe1);
    CHECK_EQ(*pteE & (PTE_A | PTE_D), PTE_A | PTE_D, "store sets D");
    CHECK_EQ(pgE[1], 0xe1, "store through A/D-updated PTE");

    /* sfence.vma after changing a PTE */
    CHECK_EQ(vload(VA_SWAP + 0x30), 0xaaaa000000000006ULL, "VA_SWAP maps pgA");
    l0a[7] = PTE(pgB, LEAF_RW);
    __asm__ __volatile__("sfence.vma %0, zero" :: "r"(VA_SWAP) : "memory");
    CHECK_EQ(vload(VA_SWAP + 0x30), 0xbbbb000000000006ULL, "sfence.vma va: new mapping (pgB)");
    l0a[7] = 0;
    sfence_all();
    EXPECT_PF(0, VA_SWAP, EXC_LOAD_PAGE_FAULT, "sfence.vma: removed mapping faults");
    l0a[7] = PTE(pgA, LEAF_RW);
    sfence_all();
    CHECK_EQ(vload(VA_SWAP), pgA[0], "sfence.vma: restored mapping");

    return mode;
}

/* U-mode: u_code at VA_UCODE loads *(a0) and returns to M */
static uint64_t run_u_load(uint64_t va)
{
    return run_in_mode(PRV_U, (uint64_t (*)(uint64_t))VA_UCODE, va);
}

static void run_mode(uint64_t mode, const char *name)
{
    puts_("paging: ");
    puts_(name);
    uart_putc('\n');
    build_tables();
    uint64_t root = mode == SATP_MODE_SV39 ? (uint64_t)root39 : (uint64_t)root48;
    uint64_t satp = (mode << 60) | (root >> 12);
    csr_write(satp, satp);
    sfence_all();
    CHECK_EQ(csr_read(satp), satp, "satp accepts the mode");

    /* satp is WARL: unsupported modes leave it unchanged */
    static const uint64_t bad[] = { 1, 5, 7, 12 };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        csr_write(satp, (bad[i] << 60) | 0x1234);
        if (csr_read(satp) != satp) {
            puts_("  satp mode ");
            put_dec(bad[i]);
            puts_(" -> ");
            put_hex(csr_read(satp));
            uart_putc('\n');
            fail(__COUNTER__ + 1, "satp write with an unsupported mode changed satp");
        }
    }

    /* M-mode is not translated, except with MPRV through the MPP mode */
    uint64_t v;
    __asm__ __volatile__(
        "li t0, %2\n csrc mstatus, t0\n li t0, %3\n csrs mstatus, t0\n"
        "ld %0, 0(%1)\n"
        "li t0, %4\n csrc mstatus, t0\n"
        : "=&r"(v) : "r"(VA_A + 0x38), "i"(MSTATUS_MPP), "i"(MSTATUS_MPRV | (1UL << MPP_SHIFT)),
          "i"(MSTATUS_MPRV) : "t0", "memory");
    CHECK_EQ(v, 0xaaaa000000000007ULL, "M-mode MPRV=1 MPP=S load is translated");

    CHECK_EQ(run_in_mode(PRV_S, s_body, mode), mode, "S-mode paging body");

    /* U-mode accesses */
    CHECK_EQ(run_u_load(VA_C + 0x10), 0xcccc000000000002ULL, "U load from U page");
    EXPECT_TRAP();
    trap_resume = VA_UCODE + (u_code_ecall - upage);
    CHECK_EQ(run_u_load(VA_A_NOU), VA_A_NOU, "U load from non-U page: rd unchanged");
    CHECK_EQ2(trap_mode, trap_cause, PRV_S, EXC_LOAD_PAGE_FAULT, "U load from non-U page faults");
    CHECK_EQ2(trap_tval, trap_epc, VA_A_NOU, VA_UCODE, "U load from non-U page: stval/sepc");
    /* sstatus.SUM only affects S-mode: U loads from U pages still work */
    csr_set(sstatus, MSTATUS_SUM);
    CHECK_EQ(run_u_load(VA_C + 0x18), 0xcccc000000000003ULL, "U load from U page (SUM=1)");
    csr_clear(sstatus, MSTATUS_SUM);

    csr_write(satp, 0);
    sfence_all();
    CHECK_EQ(csr_read(satp), 0, "satp back to Bare");
    csr_write(satp, (5UL << 60) | 0x1234);
    CHECK_EQ(csr_read(satp), 0, "satp mode 5 from Bare is ignored");
}

int main(uint64_t hartid, uint64_t dtb)
{
    csr_write(stvec, (uint64_t)s_trap_entry);
    csr_write(medeleg, (1UL << EXC_INSN_PAGE_FAULT) | (1UL << EXC_LOAD_PAGE_FAULT) |
                           (1UL << EXC_STORE_PAGE_FAULT));
    run_mode(SATP_MODE_SV39, "Sv39");
    run_mode(SATP_MODE_SV48, "Sv48");
    csr_write(medeleg, 0);
    pass();
}

CHECK_COUNT_OK();
