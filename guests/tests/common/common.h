/* Shared helpers for the pyhv bare-metal guest tests (freestanding C). */
#ifndef PYHV_GUEST_COMMON_H
#define PYHV_GUEST_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include "asm.h"

/* ---- QEMU virt memory map ---- */
#define FINISHER_BASE   0x00100000UL
#define CLINT_BASE      0x02000000UL
#define CLINT_MSIP(h)       (CLINT_BASE + 4UL * (h))
#define CLINT_MTIMECMP(h)   (CLINT_BASE + 0x4000UL + 8UL * (h))
#define CLINT_MTIME         (CLINT_BASE + 0xbff8UL)
#define PLIC_BASE       0x0c000000UL
#define UART0_BASE      0x10000000UL
#define RAM_BASE        0x80000000UL

#define FINISHER_PASS   0x5555u
#define FINISHER_FAIL   0x3333u

/* ---- mstatus / interrupt bits ---- */
#define MSTATUS_SIE   (1UL << 1)
#define MSTATUS_MIE   (1UL << 3)
#define MSTATUS_SPIE  (1UL << 5)
#define MSTATUS_MPIE  (1UL << 7)
#define MSTATUS_SPP   (1UL << 8)
#define MSTATUS_MPP   (3UL << 11)
#define MSTATUS_FS    (3UL << 13)
#define MSTATUS_MPRV  (1UL << 17)
#define MSTATUS_SUM   (1UL << 18)
#define MSTATUS_MXR   (1UL << 19)
#define MSTATUS_SD    (1UL << 63)
#define MPP_SHIFT     11

#define IRQ_S_SOFT   1
#define IRQ_M_SOFT   3
#define IRQ_S_TIMER  5
#define IRQ_M_TIMER  7
#define IRQ_S_EXT    9
#define IRQ_M_EXT    11
#define MIP_SSIP (1UL << IRQ_S_SOFT)
#define MIP_MSIP (1UL << IRQ_M_SOFT)
#define MIP_STIP (1UL << IRQ_S_TIMER)
#define MIP_MTIP (1UL << IRQ_M_TIMER)
#define MIP_SEIP (1UL << IRQ_S_EXT)
#define MIP_MEIP (1UL << IRQ_M_EXT)
#define CAUSE_INTR   (1UL << 63)

/* exception causes */
#define EXC_INSN_MISALIGNED   0
#define EXC_INSN_ACCESS       1
#define EXC_ILLEGAL           2
#define EXC_BREAKPOINT        3
#define EXC_LOAD_MISALIGNED   4
#define EXC_LOAD_ACCESS       5
#define EXC_STORE_MISALIGNED  6
#define EXC_STORE_ACCESS      7
#define EXC_ECALL_U           8
#define EXC_ECALL_S           9
#define EXC_ECALL_M           11
#define EXC_INSN_PAGE_FAULT   12
#define EXC_LOAD_PAGE_FAULT   13
#define EXC_STORE_PAGE_FAULT  15

#define PRV_U 0
#define PRV_S 1
#define PRV_M 3

/* ---- CSR access ---- */
#define csr_read(csr) ({ uint64_t __v; \
    __asm__ __volatile__("csrr %0, " #csr : "=r"(__v) :: "memory"); __v; })
#define csr_write(csr, val) ({ uint64_t __w = (uint64_t)(val); \
    __asm__ __volatile__("csrw " #csr ", %0" :: "r"(__w) : "memory"); })
#define csr_set(csr, val) ({ uint64_t __w = (uint64_t)(val); \
    __asm__ __volatile__("csrs " #csr ", %0" :: "r"(__w) : "memory"); })
#define csr_clear(csr, val) ({ uint64_t __w = (uint64_t)(val); \
    __asm__ __volatile__("csrc " #csr ", %0" :: "r"(__w) : "memory"); })
#define csr_swap(csr, val) ({ uint64_t __v, __w = (uint64_t)(val); \
    __asm__ __volatile__("csrrw %0, " #csr ", %1" : "=r"(__v) : "r"(__w) : "memory"); __v; })

#define barrier() __asm__ __volatile__("" ::: "memory")
#define fence()   __asm__ __volatile__("fence rw, rw" ::: "memory")
#define wfi()     __asm__ __volatile__("wfi" ::: "memory")

static inline void mmio_w8(uintptr_t a, uint8_t v)   { *(volatile uint8_t *)a = v; }
static inline uint8_t mmio_r8(uintptr_t a)           { return *(volatile uint8_t *)a; }
static inline void mmio_w32(uintptr_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline uint32_t mmio_r32(uintptr_t a)         { return *(volatile uint32_t *)a; }
static inline void mmio_w64(uintptr_t a, uint64_t v) { *(volatile uint64_t *)a = v; }
static inline uint64_t mmio_r64(uintptr_t a)         { return *(volatile uint64_t *)a; }

/* ---- output / finishing ---- */
extern const char test_name[];      /* defined with TEST_NAME("...") */
#define TEST_NAME(n) const char test_name[] = n

void uart_putc(char c);
void puts_(const char *s);             /* no newline added */
void put_hex(uint64_t v);              /* 0x%016lx */
void put_hex_short(uint64_t v);        /* 0x%lx */
void put_dec(uint64_t v);
void finisher_exit(unsigned code) __attribute__((noreturn));   /* 0 = pass */
void pass(void) __attribute__((noreturn));
void fail(unsigned code, const char *what) __attribute__((noreturn));
void fail_val(unsigned code, const char *what, uint64_t got, uint64_t exp)
    __attribute__((noreturn));
void fail_val2(unsigned code, const char *what, uint64_t got, uint64_t got2,
               uint64_t exp, uint64_t exp2) __attribute__((noreturn));

/* Exit codes reserved by the framework (checks use 1..239). */
#define CODE_UNEXPECTED_TRAP   255
#define CODE_UNEXPECTED_IRQ    254
#define CODE_NESTED_TRAP       253
#define CODE_MAIN_RETURNED     252

/* Each CHECK site gets its own exit code (__COUNTER__ + 1). */
#define CHECK(cond, what) do { if (!(cond)) fail(__COUNTER__ + 1, (what)); } while (0)
#define CHECK_EQ(got, exp, what) do { uint64_t __g = (uint64_t)(got), __e = (uint64_t)(exp); \
    if (__g != __e) fail_val(__COUNTER__ + 1, (what), __g, __e); } while (0)
/* two values checked under one exit code (e.g. result + flags, rd + memory) */
#define CHECK_EQ2(got, got2, exp, exp2, what) do { \
    uint64_t __g = (uint64_t)(got), __g2 = (uint64_t)(got2); \
    uint64_t __e = (uint64_t)(exp), __e2 = (uint64_t)(exp2); \
    if (__g != __e || __g2 != __e2) fail_val2(__COUNTER__ + 1, (what), __g, __g2, __e, __e2); \
} while (0)
/* place at the end of every program */
#define CHECK_COUNT_OK() _Static_assert(__COUNTER__ < 240, "too many checks for distinct 8-bit exit codes")

/* ---- traps ---- */
struct trapframe { uint64_t x[32]; };   /* x[2] = sp before the trap */
#define TF_RA 1
#define TF_SP 2
#define TF_A0 10
#define TF_A7 17

extern volatile uint64_t trap_count;
extern volatile uint64_t trap_cause, trap_epc, trap_tval, trap_status;
extern volatile int trap_mode;            /* 3 = taken by M handler, 1 = by S handler */
extern volatile int trap_expected;        /* set before an expected exception */
extern volatile uint64_t trap_resume;     /* 0: skip insn, 1: resume at ra, else: address */
/* Called for every trap (after recording).  Return 1 if handled (xepc is left
 * as is); 0 to fall back to the default handling. */
typedef int (*trap_hook_t)(struct trapframe *tf, uint64_t cause, int mode);
extern volatile trap_hook_t trap_hook;

#define RESUME_AT_RA 1UL
#define EXPECT_TRAP() do { trap_cause = ~0UL; trap_epc = ~0UL; trap_tval = ~0UL; \
    trap_status = ~0UL; trap_mode = -1; trap_expected = 1; barrier(); } while (0)

void m_trap_entry(void);
void s_trap_entry(void);
uint64_t run_in_mode(int mode, uint64_t (*fn)(uint64_t), uint64_t arg);
void lower_exit(uint64_t v) __attribute__((noreturn));

/* ---- misc ---- */
static inline uint64_t rdtime_mmio(void) { return mmio_r64(CLINT_MTIME); }
void delay_ticks(uint64_t ticks);          /* busy wait using CLINT mtime */
int fdt_count_cpus(const void *fdt);       /* number of /cpus/cpu@N nodes */
const char *fdt_bootargs(const void *fdt); /* /chosen/bootargs, or 0 */
/* the N of "key=N" (key given with its '=') in a command line, else dflt */
uint64_t bootarg(const char *args, const char *key, uint64_t dflt);

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

int main(uint64_t hartid, uint64_t dtb);
void main_returned(int ret) __attribute__((noreturn));
void m_trap_c(struct trapframe *tf);
void s_trap_c(struct trapframe *tf);
void secondary_main(uint64_t hartid, uint64_t dtb);

#endif
