/* The user programs' system calls and small library (ulib.c). */
#ifndef ULIB_H
#define ULIB_H

#include <stddef.h>
#include <stdint.h>
#include "syscalls.h"

typedef uint64_t u64;
typedef int64_t i64;

static inline long syscall2(long nr, long a0, long a1)
{
	register long r_a0 __asm__("a0") = a0;
	register long r_a1 __asm__("a1") = a1;
	register long r_a7 __asm__("a7") = nr;
	__asm__ volatile("ecall" : "+r"(r_a0) : "r"(r_a1), "r"(r_a7) : "memory");
	return r_a0;
}

static inline void __attribute__((noreturn)) sys_exit(long code)
{
	syscall2(SYS_EXIT, code, 0);
	__builtin_unreachable();
}
static inline long sys_write(const void *buf, long len)
{
	return syscall2(SYS_WRITE, (long)buf, len);
}
static inline long sys_getpid(void) { return syscall2(SYS_GETPID, 0, 0); }
static inline long sys_yield(void) { return syscall2(SYS_YIELD, 0, 0); }
static inline long sys_fork(void) { return syscall2(SYS_FORK, 0, 0); }
static inline long sys_wait(long pid) { return syscall2(SYS_WAIT, pid, 0); }
static inline long sys_exec(long prog, long arg) { return syscall2(SYS_EXEC, prog, arg); }

void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
size_t strlen(const char *s);
char *strcpy(char *d, const char *s);
int strcmp(const char *a, const char *b);

/* a line being built for write() */
struct line {
	char buf[120];
	int n;
};
void l_str(struct line *l, const char *s);
void l_dec(struct line *l, long v);
void l_hex(struct line *l, u64 v);
void l_send(struct line *l);	/* writes it (with a newline) and empties it */

u64 hash_bytes(u64 h, const void *p, size_t n);

#endif
