/* procs: a tiny multi-process kernel, as a benchmark guest ("exec-heavy").
 *
 * M-mode (m_main, m_trap): PMP open to S/U, exceptions and S interrupts delegated to
 * S-mode, a small SBI-like ecall interface for the S-kernel (set the timer, put a
 * character, power off, report a fault); the CLINT timer interrupt is forwarded as
 * STIP.  S-mode (s_main, s_trap): processes with their own Sv39 page tables (user pages
 * with U; text R+X, data/bss/stack R+W, the page text and data share R+W+X; the kernel
 * a global, S-only gigapage at 0x80000000), system calls by ecall, fork (copies every
 * page), exec (a program's image copied into freshly allocated pages: the free list is
 * LIFO, so pages that last held another process's data, stack or page tables now hold
 * code), wait, exit, and round-robin scheduling on a 1 ms timer tick and on yield().
 * Each exit folds the process's pid, exit code and everything it wrote into the
 * checksum (a sum, so the order processes finish in does not matter); when the last
 * process is gone the kernel prints BENCH-CHECKSUM and powers off.  Any unexpected
 * trap prints mcause/mepc/mtval/scause/sepc/stval and exits with status 3. */
#include <stdint.h>
#include <stddef.h>
#include "syscalls.h"

typedef uint64_t u64;
typedef int64_t i64;
typedef uint8_t u8;

#define UART_BASE	0x10000000UL
#define TEST_BASE	0x00100000UL
#define CLINT_MTIMECMP	0x02004000UL
#define TICK		10000UL		/* 1 ms of the 10 MHz timebase */

#define PAGE		4096UL
#define KERNEL_BASE	0x80000000UL
#define USER_BASE	0x10000UL
#define USER_STACK_TOP	0x100000UL
#define USER_STACK_PAGES 2
#define MAX_IMAGE_PAGES	12
#define MAXUP		(MAX_IMAGE_PAGES + USER_STACK_PAGES)
#define NPROC		24
#define OUTBUF		256

#define PTE_V (1UL << 0)
#define PTE_R (1UL << 1)
#define PTE_W (1UL << 2)
#define PTE_X (1UL << 3)
#define PTE_U (1UL << 4)
#define PTE_G (1UL << 5)
#define PTE_A (1UL << 6)
#define PTE_D (1UL << 7)

#define SBI_SET_TIMER	0
#define SBI_PUTCHAR	1
#define SBI_SHUTDOWN	8
#define SBI_FAULT	9

#define csr_read(name) ({ u64 v_; __asm__ volatile("csrr %0, " #name : "=r"(v_)); v_; })
#define csr_write(name, v) __asm__ volatile("csrw " #name ", %0" :: "r"((u64)(v)))
#define csr_set(name, v) __asm__ volatile("csrs " #name ", %0" :: "r"((u64)(v)))
#define csr_clear(name, v) __asm__ volatile("csrc " #name ", %0" :: "r"((u64)(v)))

struct tf {
	u64 x[32];	/* x[2] is the user sp */
	u64 pc;
};

extern void mtrap_entry(void), strap_entry(void);
extern void user_return(struct tf *) __attribute__((noreturn));
extern u8 __pool_start[], __pool_end[];
extern char mstack_top[];
extern const u8 blob_init[], blob_strings[], blob_sort[], blob_sieve[], blob_forker[],
	blob_end[];

/* gcc may call these for struct copies and loops; 8 bytes at a time when aligned */
void *memset(void *d, int c, size_t n)
{
	u8 *p = d;
	if (!(((u64)p | n) & 7)) {
		u64 v = (u8)c * 0x0101010101010101UL;
		for (u64 *w = d; n; n -= 8)
			*w++ = v;
		return d;
	}
	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	u8 *p = d;
	const u8 *q = s;
	if (!(((u64)p | (u64)q | n) & 7)) {
		u64 *w = d;
		const u64 *v = s;
		for (; n; n -= 8)
			*w++ = *v++;
		return d;
	}
	while (n--)
		*p++ = *q++;
	return d;
}

/* ---------------------------------------------------------------- M-mode ---- */

static void m_putc(char c)
{
	volatile u8 *uart = (volatile u8 *)UART_BASE;
	while (!(uart[5] & 0x20))
		;
	uart[0] = (u8)c;
}

static void m_puts(const char *s)
{
	while (*s)
		m_putc(*s++);
}

static void m_hex(u64 v)
{
	for (int i = 60; i >= 0; i -= 4)
		m_putc("0123456789abcdef"[(v >> i) & 0xf]);
}

static void __attribute__((noreturn)) m_poweroff(u64 code)
{
	volatile uint32_t *test = (volatile uint32_t *)TEST_BASE;
	__asm__ volatile("fence" ::: "memory");
	*test = code == 0 ? 0x5555u : 0x3333u | ((uint32_t)(code & 0xffff) << 16);
	for (;;)
		__asm__ volatile("wfi");
}

static void __attribute__((noreturn)) m_fault(const char *why)
{
	m_puts("\nprocs: UNEXPECTED TRAP (");
	m_puts(why);
	m_puts(")\n mcause=0x");
	m_hex(csr_read(mcause));
	m_puts(" mepc=0x");
	m_hex(csr_read(mepc));
	m_puts(" mtval=0x");
	m_hex(csr_read(mtval));
	m_puts("\n scause=0x");
	m_hex(csr_read(scause));
	m_puts(" sepc=0x");
	m_hex(csr_read(sepc));
	m_puts(" stval=0x");
	m_hex(csr_read(stval));
	m_puts("\n");
	m_poweroff(3);
}

void m_trap(u64 *regs)
{
	u64 cause = csr_read(mcause);
	if (cause == ((1UL << 63) | 7)) {		/* machine timer: on to S-mode */
		csr_clear(mie, 1UL << 7);
		csr_set(mip, 1UL << 5);
		return;
	}
	if (cause != 9)					/* only ecalls from S-mode */
		m_fault("M-mode");
	switch (regs[17]) {
	case SBI_SET_TIMER:
		*(volatile u64 *)CLINT_MTIMECMP = regs[10];
		csr_clear(mip, 1UL << 5);
		csr_set(mie, 1UL << 7);
		regs[10] = 0;
		break;
	case SBI_PUTCHAR:
		m_putc((char)regs[10]);
		regs[10] = 0;
		break;
	case SBI_SHUTDOWN:
		m_poweroff(regs[10]);
	case SBI_FAULT:
		m_fault((const char *)regs[10]);
	default:
		m_fault("unknown SBI call");
	}
	csr_write(mepc, csr_read(mepc) + 4);
}

void s_main(void) __attribute__((noreturn));

void __attribute__((noreturn)) m_main(void)
{
	csr_write(mtvec, (u64)mtrap_entry);
	csr_write(mscratch, (u64)mstack_top);
	/* S and U may access everything */
	csr_write(pmpaddr0, ~0UL >> 10);
	csr_write(pmpcfg0, 0x1f);			/* NAPOT, R+W+X */
	/* every exception S-mode handles (not ecalls from S: those are for M) */
	csr_write(medeleg, (1UL << 0) | (1UL << 1) | (1UL << 2) | (1UL << 3) |
		  (1UL << 4) | (1UL << 5) | (1UL << 6) | (1UL << 7) | (1UL << 8) |
		  (1UL << 12) | (1UL << 13) | (1UL << 15));
	csr_write(mideleg, (1UL << 1) | (1UL << 5) | (1UL << 9));
	csr_write(mcounteren, 7);
	*(volatile u64 *)CLINT_MTIMECMP = ~0UL;
	csr_write(mie, 0);
	csr_write(satp, 0);
	u64 ms = csr_read(mstatus);
	ms &= ~((3UL << 11) | (1UL << 7) | (1UL << 3) | (3UL << 13));	/* MPP, MPIE, MIE, FS */
	ms |= 1UL << 11;				/* MPP = S */
	csr_write(mstatus, ms);
	csr_write(mepc, (u64)s_main);
	__asm__ volatile("mret");
	__builtin_unreachable();
}

/* ---------------------------------------------------------------- S-mode ---- */

static u64 sbi(u64 fn, u64 a0)
{
	register u64 r_a0 __asm__("a0") = a0;
	register u64 r_a7 __asm__("a7") = fn;
	__asm__ volatile("ecall" : "+r"(r_a0) : "r"(r_a7) : "memory");
	return r_a0;
}

static void putc_(char c) { sbi(SBI_PUTCHAR, (u8)c); }

static void puts_(const char *s)
{
	while (*s)
		putc_(*s++);
}

static void put_hex(u64 v)
{
	for (int i = 60; i >= 0; i -= 4)
		putc_("0123456789abcdef"[(v >> i) & 0xf]);
}

static void put_dec(u64 v)
{
	char b[24];
	int n = 0;
	do {
		b[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		putc_(b[--n]);
}

static void __attribute__((noreturn)) panic(const char *why)
{
	puts_("\nprocs: PANIC: ");
	puts_(why);
	puts_("\n scause=0x");
	put_hex(csr_read(scause));
	puts_(" sepc=0x");
	put_hex(csr_read(sepc));
	puts_(" stval=0x");
	put_hex(csr_read(stval));
	sbi(SBI_FAULT, (u64)why);		/* M-mode prints all six and exits */
	for (;;)
		;
}

void s_kernel_fault(void) __attribute__((noreturn));
void s_kernel_fault(void) { panic("trap in S-mode"); }

static u64 mix(u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdUL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53UL;
	x ^= x >> 33;
	return x;
}

/* physical pages: a LIFO free list threaded through the pages themselves */
static u64 free_list, free_count, pool_pages, pages_allocated;

static u64 alloc_page(void)
{
	u64 pa = free_list;
	if (!pa)
		panic("out of pages");
	free_list = *(u64 *)pa;
	free_count--;
	pages_allocated++;
	return pa;
}

static void free_page(u64 pa)
{
	*(u64 *)pa = free_list;
	free_list = pa;
	free_count++;
}

static void zero_page(u64 pa)
{
	u64 *p = (u64 *)pa;
	for (unsigned i = 0; i < PAGE / 8; i++)
		p[i] = 0;
}

static void copy_page(u64 dst, u64 src)
{
	u64 *d = (u64 *)dst;
	const u64 *s = (const u64 *)src;
	for (unsigned i = 0; i < PAGE / 8; i++)
		d[i] = s[i];
}

enum { P_FREE, P_RUNNABLE, P_WAITING, P_ZOMBIE };

struct proc {
	struct tf tf;		/* first: the trap path saves registers here */
	int state;
	u64 pid;
	struct proc *parent;
	u64 wait_pid;
	u64 nforks;
	i64 exit_code;
	u64 root, l1, l0;	/* page-table pages */
	int npages;
	u64 va[MAXUP], pa[MAXUP], perm[MAXUP];
	u64 out_hash, out_bytes;
	unsigned out_pos;
	char out[OUTBUF];	/* what write() wrote (a ring) */
};

static struct proc procs[NPROC];
static struct proc *cur;
static u64 loaded_root, kernel_root;
static int need_fence_i;

/* statistics: the deterministic ones go into the checksum */
static u64 n_procs, n_forks, n_execs, n_exits, n_syscalls, n_bytes, n_yields;
static u64 sum_exits;
static u64 n_ticks, n_switches;	/* timing-dependent: printed, not summed */

struct prog {
	const u8 *start, *end;
	const char *name;
};

static const struct prog progs[NPROGS] = {
	[PROG_INIT] = {blob_init, blob_strings, "init"},
	[PROG_STRINGS] = {blob_strings, blob_sort, "strings"},
	[PROG_SORT] = {blob_sort, blob_sieve, "sort"},
	[PROG_SIEVE] = {blob_sieve, blob_forker, "sieve"},
	[PROG_FORKER] = {blob_forker, blob_end, "forker"},
};

struct uhdr {
	u64 magic, entry, text_end, data_start, data_end, bss_end;
};
#define UHDR_MAGIC 0x31564850534f5250UL

static void switch_to(u64 root)
{
	if (root == loaded_root)
		return;
	loaded_root = root;
	csr_write(satp, (8UL << 60) | (root >> 12));
	__asm__ volatile("sfence.vma zero, zero" ::: "memory");
}

static void new_tables(struct proc *p)
{
	p->root = alloc_page();
	p->l1 = alloc_page();
	p->l0 = alloc_page();
	zero_page(p->root);
	zero_page(p->l1);
	zero_page(p->l0);
	u64 *root = (u64 *)p->root, *l1 = (u64 *)p->l1;
	root[0] = (p->l1 >> 12) << 10 | PTE_V;
	l1[0] = (p->l0 >> 12) << 10 | PTE_V;
	root[2] = ((u64 *)kernel_root)[2];		/* the kernel: global, S-only */
	p->npages = 0;
}

static void map_user(struct proc *p, u64 va, u64 pa, u64 perm)
{
	if (va >= (1UL << 21) || p->npages >= MAXUP)
		panic("map_user");
	((u64 *)p->l0)[va >> 12] = (pa >> 12) << 10 | perm | PTE_U | PTE_V | PTE_A | PTE_D;
	p->va[p->npages] = va;
	p->pa[p->npages] = pa;
	p->perm[p->npages] = perm;
	p->npages++;
}

/* Frees the pages of an address space that is not loaded. */
static void free_space(u64 root, u64 l1, u64 l0, int npages, const u64 *pa)
{
	if (root == loaded_root)
		panic("freeing the loaded page table");
	for (int i = 0; i < npages; i++)
		free_page(pa[i]);
	free_page(l0);
	free_page(l1);
	free_page(root);
}

/* Software walk of a process's page table: the kernel's address for user va, or 0. */
static u64 user_pa(struct proc *p, u64 va, u64 need)
{
	u64 *t = (u64 *)p->root;
	for (int level = 2; level >= 0; level--) {
		u64 pte = t[(va >> (12 + 9 * level)) & 511];
		if (!(pte & PTE_V))
			return 0;
		if (pte & (PTE_R | PTE_X)) {
			if (level || (pte & (PTE_U | need)) != (PTE_U | need))
				return 0;
			return ((pte >> 10) << 12) | (va & (PAGE - 1));
		}
		t = (u64 *)((pte >> 10) << 12);
	}
	return 0;
}

/* Loads program prog into a fresh address space for p (its old one is freed). */
static int exec_into(struct proc *p, u64 prog, u64 arg)
{
	if (prog >= NPROGS)
		return -1;
	const struct prog *pr = &progs[prog];
	const struct uhdr *h = (const struct uhdr *)pr->start;
	u64 filesz = h->data_end - USER_BASE;
	if (h->magic != UHDR_MAGIC || filesz > (u64)(pr->end - pr->start) ||
	    h->bss_end > USER_BASE + MAX_IMAGE_PAGES * PAGE)
		panic("bad program image");

	u64 old_root = p->root, old_l1 = p->l1, old_l0 = p->l0;
	int old_n = p->npages;
	u64 old_pa[MAXUP];
	for (int i = 0; i < old_n; i++)
		old_pa[i] = p->pa[i];

	new_tables(p);
	for (u64 va = USER_BASE; va < h->bss_end; va += PAGE) {
		u64 pa = alloc_page();
		u64 off = va - USER_BASE, n = 0;
		if (off < filesz) {
			n = filesz - off < PAGE ? filesz - off : PAGE;
			memcpy((void *)pa, pr->start + off, n);
		}
		memset((u8 *)pa + n, 0, PAGE - n);
		u64 perm = PTE_R;
		if (va < h->text_end)
			perm |= PTE_X;
		if (va + PAGE > h->data_start)
			perm |= PTE_W;
		map_user(p, va, pa, perm);
	}
	for (int i = 1; i <= USER_STACK_PAGES; i++) {
		u64 pa = alloc_page();
		zero_page(pa);
		map_user(p, USER_STACK_TOP - i * PAGE, pa, PTE_R | PTE_W);
	}
	need_fence_i = 1;
	for (int i = 0; i < 32; i++)
		p->tf.x[i] = 0;
	p->tf.x[2] = USER_STACK_TOP;
	p->tf.x[10] = arg;
	p->tf.pc = h->entry;
	n_execs++;

	if (old_root) {
		if (old_root == loaded_root)
			switch_to(p->root);
		free_space(old_root, old_l1, old_l0, old_n, old_pa);
	}
	return 0;
}

static struct proc *alloc_proc(struct proc *parent, u64 pid)
{
	for (int i = 0; i < NPROC; i++) {
		struct proc *p = &procs[i];
		if (p->state != P_FREE)
			continue;
		memset(p, 0, sizeof *p);
		p->pid = pid;
		p->parent = parent;
		p->state = P_RUNNABLE;
		p->out_hash = 0xcbf29ce484222325UL;
		n_procs++;
		return p;
	}
	return 0;
}

static i64 sys_fork(struct proc *p)
{
	if (p->nforks >= 0xffff)
		return -1;
	struct proc *c = alloc_proc(p, (p->pid << 16) | ++p->nforks);
	if (!c)
		return -1;
	new_tables(c);
	for (int i = 0; i < p->npages; i++) {
		u64 pa = alloc_page();
		copy_page(pa, p->pa[i]);
		map_user(c, p->va[i], pa, p->perm[i]);
	}
	need_fence_i = 1;
	c->tf = p->tf;
	c->tf.x[10] = 0;
	n_forks++;
	return (i64)c->pid;
}

static void reap(struct proc *c)
{
	c->state = P_FREE;
}

static void sys_exit(struct proc *p, i64 code)
{
	p->exit_code = code;
	if (p->root == loaded_root)
		switch_to(kernel_root);
	free_space(p->root, p->l1, p->l0, p->npages, p->pa);
	p->root = 0;
	p->npages = 0;
	n_exits++;
	sum_exits += mix(p->pid * 0x9e3779b97f4a7c15UL ^ mix((u64)code + p->out_hash) ^
			 p->out_bytes);
	for (int i = 0; i < NPROC; i++) {		/* orphans */
		struct proc *c = &procs[i];
		if (c->state != P_FREE && c->parent == p) {
			c->parent = 0;
			if (c->state == P_ZOMBIE)
				reap(c);
		}
	}
	struct proc *parent = p->parent;
	if (!parent) {
		reap(p);
	} else if (parent->state == P_WAITING && parent->wait_pid == p->pid) {
		parent->tf.x[10] = (u64)code;
		parent->state = P_RUNNABLE;
		reap(p);
	} else {
		p->state = P_ZOMBIE;
	}
}

/* 1: the caller goes on, 0: it now waits */
static int sys_wait(struct proc *p, u64 pid)
{
	for (int i = 0; i < NPROC; i++) {
		struct proc *c = &procs[i];
		if (c->state == P_FREE || c->parent != p || c->pid != pid)
			continue;
		if (c->state == P_ZOMBIE) {
			p->tf.x[10] = (u64)c->exit_code;
			reap(c);
			return 1;
		}
		p->state = P_WAITING;
		p->wait_pid = pid;
		return 0;
	}
	p->tf.x[10] = (u64)-1;
	return 1;
}

static i64 sys_write(struct proc *p, u64 va, u64 len)
{
	if (len > 4096)
		return -1;
	for (u64 i = 0; i < len; i++) {
		u64 pa = user_pa(p, va + i, PTE_R);
		if (!pa)
			panic("write: bad user address");
		u8 b = *(u8 *)pa;
		p->out[p->out_pos++ % OUTBUF] = (char)b;
		p->out_hash = (p->out_hash ^ b) * 0x100000001b3UL;
	}
	p->out_bytes += len;
	n_bytes += len;
	return (i64)len;
}

static void __attribute__((noreturn)) finish(void)
{
	switch_to(kernel_root);
	if (free_count != pool_pages)
		panic("pages leaked");
	u64 sum = mix(sum_exits ^ mix(n_procs) ^ mix(n_forks << 1) ^ mix(n_execs << 2) ^
		      mix(n_bytes << 3) ^ mix(n_syscalls << 4) ^ mix(n_yields << 5));
	puts_("procs: ");
	put_dec(n_procs);
	puts_(" processes, ");
	put_dec(n_forks);
	puts_(" forks, ");
	put_dec(n_execs);
	puts_(" execs, ");
	put_dec(n_syscalls);
	puts_(" system calls, ");
	put_dec(n_bytes);
	puts_(" bytes written, ");
	put_dec(pages_allocated);
	puts_(" pages allocated\nprocs: ");
	put_dec(n_ticks);
	puts_(" timer ticks, ");
	put_dec(n_switches);
	puts_(" address-space switches\nBENCH-CHECKSUM 0x");
	put_hex(sum);
	puts_("\n");
	sbi(SBI_SHUTDOWN, 0);
	for (;;)
		;
}

/* Back to user mode: code that exec or fork wrote is fetched only after a fence.i. */
static struct tf *resume(struct tf *tf)
{
	if (need_fence_i) {
		__asm__ volatile("fence.i" ::: "memory");
		need_fence_i = 0;
	}
	return tf;
}

/* The next runnable process after cur, round robin; its address space loaded. */
static struct tf *schedule(void)
{
	int start = cur ? (int)(cur - procs) : NPROC - 1;
	struct proc *next = 0;
	for (int k = 1; k <= NPROC; k++) {
		struct proc *p = &procs[(start + k) % NPROC];
		if (p->state == P_RUNNABLE) {
			next = p;
			break;
		}
	}
	if (!next) {
		for (int i = 0; i < NPROC; i++)
			if (procs[i].state != P_FREE)
				panic("deadlock: nothing runnable");
		finish();
	}
	if (next->root != loaded_root)
		n_switches++;
	switch_to(next->root);
	cur = next;
	return resume(&next->tf);
}

static void syscall(struct proc *p)
{
	struct tf *tf = &p->tf;
	u64 a0 = tf->x[10], a1 = tf->x[11];
	n_syscalls++;
	switch (tf->x[17]) {
	case SYS_EXIT:
		sys_exit(p, (i64)a0);
		break;
	case SYS_WRITE:
		tf->x[10] = (u64)sys_write(p, a0, a1);
		break;
	case SYS_GETPID:
		tf->x[10] = p->pid;
		break;
	case SYS_YIELD:
		n_yields++;
		tf->x[10] = 0;
		break;
	case SYS_FORK:
		tf->x[10] = (u64)sys_fork(p);
		break;
	case SYS_WAIT:
		sys_wait(p, a0);
		break;
	case SYS_EXEC:
		if (exec_into(p, a0, a1) < 0)
			tf->x[10] = (u64)-1;
		break;
	default:
		panic("unknown system call");
	}
}

struct tf *s_trap(struct tf *tf)
{
	u64 cause = csr_read(scause);
	struct proc *p = cur;
	if (tf != &p->tf)
		panic("trap frame is not the current process's");
	if (cause == ((1UL << 63) | 5)) {		/* timer tick: preempt */
		n_ticks++;
		sbi(SBI_SET_TIMER, csr_read(time) + TICK);
		return schedule();
	}
	if (cause != 8)
		panic("unexpected trap from U-mode");
	tf->pc += 4;
	u64 nr = tf->x[17];
	syscall(p);
	if (p->state == P_RUNNABLE && nr != SYS_YIELD && nr != SYS_FORK)
		return resume(tf);	/* the caller goes on */
	return schedule();	/* it yielded, forked (round robin from here), waits or exited */
}

void __attribute__((noreturn)) s_main(void)
{
	csr_write(stvec, (u64)strap_entry);
	csr_write(sscratch, 0);
	u64 start = ((u64)__pool_start + PAGE - 1) & ~(PAGE - 1);
	for (u64 pa = (u64)__pool_end - PAGE; pa >= start; pa -= PAGE) {
		free_page(pa);
		pool_pages++;
	}
	kernel_root = alloc_page();
	pool_pages--;
	zero_page(kernel_root);
	((u64 *)kernel_root)[2] = (KERNEL_BASE >> 12) << 10 |
		PTE_V | PTE_R | PTE_W | PTE_X | PTE_G | PTE_A | PTE_D;
	switch_to(kernel_root);

	struct proc *init = alloc_proc(0, 1);
	if (exec_into(init, PROG_INIT, 0) < 0)
		panic("no init");
	csr_clear(sstatus, 1UL << 8);			/* SPP = U */
	csr_set(sstatus, 1UL << 5);			/* SPIE */
	csr_set(sie, 1UL << 5);				/* STIE */
	sbi(SBI_SET_TIMER, csr_read(time) + TICK);
	cur = 0;
	user_return(schedule());
}
