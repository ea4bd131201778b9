/* Shared runtime for the pyhv bare-metal guest tests: UART output, the
 * sifive,test finisher, check reporting, the C side of the M/S trap handlers
 * and a few libc-ish helpers. */
#include "common.h"

/* ------------------------------------------------------------------ */
/* output                                                              */
/* ------------------------------------------------------------------ */
void uart_putc(char c)
{
    while (!(mmio_r8(UART0_BASE + 5) & 0x20))   /* LSR.THRE */
        ;
    mmio_w8(UART0_BASE + 0, (uint8_t)c);
}

void puts_(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

void put_hex(uint64_t v)
{
    puts_("0x");
    for (int i = 60; i >= 0; i -= 4)
        uart_putc("0123456789abcdef"[(v >> i) & 0xf]);
}

void put_hex_short(uint64_t v)
{
    char buf[17];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v & 0xf];
        v >>= 4;
    } while (v);
    puts_("0x");
    while (n)
        uart_putc(buf[--n]);
}

void put_dec(uint64_t v)
{
    char buf[21];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        uart_putc(buf[--n]);
}

void finisher_exit(unsigned code)
{
    fence();
    if (code == 0)
        mmio_w32(FINISHER_BASE, FINISHER_PASS);
    else
        mmio_w32(FINISHER_BASE, FINISHER_FAIL | ((code & 0xffff) << 16));
    for (;;)
        wfi();
}

void pass(void)
{
    puts_("PASS ");
    puts_(test_name);
    uart_putc('\n');
    finisher_exit(0);
}

void fail(unsigned code, const char *what)
{
    puts_("FAIL ");
    puts_(test_name);
    puts_(": ");
    puts_(what);
    uart_putc('\n');
    finisher_exit(code);
}

void fail_val(unsigned code, const char *what, uint64_t got, uint64_t exp)
{
    puts_("  got ");
    put_hex(got);
    puts_(" expected ");
    put_hex(exp);
    uart_putc('\n');
    fail(code, what);
}

void fail_val2(unsigned code, const char *what, uint64_t got, uint64_t got2,
               uint64_t exp, uint64_t exp2)
{
    puts_("  got ");
    put_hex(got);
    puts_("/");
    put_hex(got2);
    puts_(" expected ");
    put_hex(exp);
    puts_("/");
    put_hex(exp2);
    uart_putc('\n');
    fail(code, what);
}

void main_returned(int ret)
{
    if (ret == 0)
        pass();
    fail(CODE_MAIN_RETURNED, "main returned nonzero");
}

__attribute__((weak)) void secondary_main(uint64_t hartid, uint64_t dtb)
{
    (void)hartid;
    (void)dtb;
    for (;;)
        wfi();
}

/* ------------------------------------------------------------------ */
/* traps                                                               */
/* ------------------------------------------------------------------ */
volatile uint64_t trap_count;
volatile uint64_t trap_cause, trap_epc, trap_tval, trap_status;
volatile int trap_mode;
volatile int trap_expected;
volatile uint64_t trap_resume;
volatile trap_hook_t trap_hook;

static volatile int m_nest[8];
static volatile int s_nest;

extern char rim_return[];

static void report_trap(const char *kind, uint64_t cause, uint64_t epc, uint64_t tval, int mode)
{
    puts_(kind);
    puts_(mode == PRV_M ? " (M handler) cause=" : " (S handler) cause=");
    put_hex(cause);
    puts_(" epc=");
    put_hex(epc);
    puts_(" tval=");
    put_hex(tval);
    uart_putc('\n');
}

/* Returns the new xepc, or 0 if the hook handled everything (xepc untouched). */
static uint64_t handle(struct trapframe *tf, uint64_t cause, uint64_t epc, uint64_t tval, int mode)
{
    trap_hook_t h = trap_hook;
    if (h && h(tf, cause, mode))
        return 0;
    if (cause & CAUSE_INTR) {
        report_trap("unexpected interrupt", cause, epc, tval, mode);
        fail(CODE_UNEXPECTED_IRQ, "unexpected interrupt");
    }
    if (!trap_expected) {
        report_trap("unexpected trap", cause, epc, tval, mode);
        fail(CODE_UNEXPECTED_TRAP, "unexpected trap");
    }
    trap_expected = 0;
    uint64_t r = trap_resume;
    trap_resume = 0;
    if (r == 0) {
        uint16_t insn = *(volatile uint16_t *)epc;
        return epc + ((insn & 3) == 3 ? 4 : 2);
    }
    if (r == RESUME_AT_RA)
        return tf->x[TF_RA];
    return r;
}

static int is_ecall(uint64_t cause)
{
    return cause == EXC_ECALL_U || cause == EXC_ECALL_S || cause == EXC_ECALL_M;
}

void m_trap_c(struct trapframe *tf)
{
    uint64_t cause = csr_read(mcause);
    if (is_ecall(cause) && tf->x[TF_A7] == MAGIC_EXIT) {
        /* back to run_in_mode()'s caller, in M-mode, a0 preserved */
        csr_write(mepc, (uint64_t)rim_return);
        csr_set(mstatus, MSTATUS_MPP);
        return;
    }
    uint64_t epc = csr_read(mepc), tval = csr_read(mtval), st = csr_read(mstatus);
    uint64_t hart = csr_read(mhartid) & 7;
    if (m_nest[hart]) {
        report_trap("nested trap", cause, epc, tval, PRV_M);
        fail(CODE_NESTED_TRAP, "nested trap in M handler");
    }
    m_nest[hart] = 1;
    trap_cause = cause;
    trap_epc = epc;
    trap_tval = tval;
    trap_status = st;
    trap_mode = PRV_M;
    trap_count++;
    uint64_t ne = handle(tf, cause, epc, tval, PRV_M);
    if (ne)
        csr_write(mepc, ne);
    m_nest[hart] = 0;
}

void s_trap_c(struct trapframe *tf)
{
    uint64_t cause = csr_read(scause);
    if (is_ecall(cause) && tf->x[TF_A7] == MAGIC_EXIT)
        lower_exit(tf->x[TF_A0]);     /* re-issue from S-mode -> M handler */
    uint64_t epc = csr_read(sepc), tval = csr_read(stval), st = csr_read(sstatus);
    if (s_nest) {
        report_trap("nested trap", cause, epc, tval, PRV_S);
        fail(CODE_NESTED_TRAP, "nested trap in S handler");
    }
    s_nest = 1;
    trap_cause = cause;
    trap_epc = epc;
    trap_tval = tval;
    trap_status = st;
    trap_mode = PRV_S;
    trap_count++;
    uint64_t ne = handle(tf, cause, epc, tval, PRV_S);
    if (ne)
        csr_write(sepc, ne);
    s_nest = 0;
}

/* ------------------------------------------------------------------ */
/* misc                                                                */
/* ------------------------------------------------------------------ */
void delay_ticks(uint64_t ticks)
{
    uint64_t t0 = rdtime_mmio();
    while (rdtime_mmio() - t0 < ticks)
        ;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static size_t strlen_(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int fdt_count_cpus(const void *fdt)
{
    const uint8_t *base = fdt;
    if (!base || be32(base) != 0xd00dfeed)
        return -1;
    const uint8_t *p = base + be32(base + 8);
    int depth = 0, in_cpus = 0, count = 0;
    for (int guard = 0; guard < 100000; guard++) {
        uint32_t tok = be32(p);
        p += 4;
        if (tok == 1) {                 /* FDT_BEGIN_NODE */
            const char *name = (const char *)p;
            size_t len = strlen_(name);
            depth++;
            if (depth == 2 && len == 4 && !memcmp(name, "cpus", 4))
                in_cpus = 1;
            else if (depth == 3 && in_cpus && len > 4 && !memcmp(name, "cpu@", 4))
                count++;
            p += (len + 1 + 3) & ~(size_t)3;
        } else if (tok == 2) {          /* FDT_END_NODE */
            if (depth == 2)
                in_cpus = 0;
            depth--;
        } else if (tok == 3) {          /* FDT_PROP */
            uint32_t len = be32(p);
            p += 8 + ((len + 3) & ~3u);
        } else if (tok == 4) {          /* FDT_NOP */
        } else {
            break;                      /* FDT_END or garbage */
        }
    }
    return count;
}

static int streq_(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

const char *fdt_bootargs(const void *fdt)
{
    const uint8_t *base = fdt;
    if (!base || be32(base) != 0xd00dfeed)
        return 0;
    const uint8_t *p = base + be32(base + 8);
    const char *strings = (const char *)base + be32(base + 12);
    int depth = 0, in_chosen = 0;
    for (int guard = 0; guard < 100000; guard++) {
        uint32_t tok = be32(p);
        p += 4;
        if (tok == 1) {                 /* FDT_BEGIN_NODE */
            const char *name = (const char *)p;
            depth++;
            if (depth == 2 && streq_(name, "chosen"))
                in_chosen = 1;
            p += (strlen_(name) + 1 + 3) & ~(size_t)3;
        } else if (tok == 2) {          /* FDT_END_NODE */
            if (depth == 2)
                in_chosen = 0;
            depth--;
        } else if (tok == 3) {          /* FDT_PROP: len, nameoff, value */
            uint32_t len = be32(p);
            if (in_chosen && depth == 2 && streq_(strings + be32(p + 4), "bootargs"))
                return (const char *)p + 8;
            p += 8 + ((len + 3) & ~3u);
        } else if (tok != 4) {          /* not FDT_NOP: FDT_END or garbage */
            break;
        }
    }
    return 0;
}

uint64_t bootarg(const char *args, const char *key, uint64_t dflt)
{
    for (const char *s = args; s && *s; s++) {
        int i = 0;
        while (key[i] && s[i] == key[i])
            i++;
        if (key[i] || (s != args && s[-1] != ' '))
            continue;
        uint64_t n = 0;
        for (s += i; *s >= '0' && *s <= '9'; s++)
            n = n * 10 + (uint64_t)(*s - '0');
        return n;
    }
    return dflt;
}

void *memset(void *d, int c, size_t n)
{
    volatile uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    volatile uint8_t *dp = d;
    const uint8_t *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    volatile uint8_t *dp = d;
    const uint8_t *sp = s;
    if (dp < sp) {
        while (n--)
            *dp++ = *sp++;
    } else {
        while (n--)
            dp[n] = sp[n];
    }
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}
