/* forker: a process tree of its own.  Forks a child that computes a Fibonacci number
 * by recursion (calls within the copied text, results in .data), forks a second
 * child that execs strings, does some work itself, and waits for both. */
#include "ulib.h"

static long calls = 1;		/* .data, written by every call */
static long memo[4] = {1};

static long fib(long n)
{
	calls++;
	return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

long main(long arg)
{
	long a_pid = sys_fork();
	if (a_pid == 0) {
		long f = fib(11 + arg % 4);
		memo[arg & 3] = f;
		struct line l = {.n = 0};
		l_str(&l, "forker child ");
		l_dec(&l, sys_getpid());
		l_str(&l, ": fib ");
		l_dec(&l, f);
		l_str(&l, " calls ");
		l_dec(&l, calls);
		l_send(&l);
		sys_exit(f & 0xffff);
	}
	long b_pid = sys_fork();
	if (b_pid == 0) {
		sys_exec(PROG_STRINGS, arg + 1000);
		sys_exit(-100);
	}
	long own = fib(9 + arg % 3);
	long a = sys_wait(a_pid), b = sys_wait(b_pid);
	struct line l = {.n = 0};
	l_str(&l, "forker ");
	l_dec(&l, sys_getpid());
	l_str(&l, ": children ");
	l_dec(&l, a_pid);
	l_str(&l, " ");
	l_dec(&l, b_pid);
	l_str(&l, " -> ");
	l_dec(&l, a);
	l_str(&l, " ");
	l_dec(&l, b);
	l_str(&l, " own ");
	l_dec(&l, own);
	l_send(&l);
	return (a * 3 + b + own + memo[arg & 3]) & 0x7fff;
}
