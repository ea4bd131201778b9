/* init: the workload, as a shell would run it.  Every round: fork + exec + wait of
 * strings, sort and sieve one after another; every 4th round the forker (which forks
 * and execs children of its own); every 2nd round a fork-only child that runs a
 * function of init's own code in its copy of init; every 8th round a batch of
 * CONCURRENT long-running children (exec'd, preempted by the timer, yielding) waited
 * for in order.  The children's exit codes fold into init's output and exit code. */
#include "ulib.h"

#ifndef ROUNDS
#define ROUNDS 400
#endif
#define CONCURRENT 6
#ifndef BATCH_EVERY
#define BATCH_EVERY 8
#endif
#define LONG_RUN (1L << 20)	/* arg flag: a worker repeats its work and yields */

static u64 acc = 0xcbf29ce484222325UL;	/* .data, next to the code */
static long failures;

static void fold(long code)
{
	acc = (acc ^ (u64)code) * 0x100000001b3UL;
	acc ^= acc >> 29;
}

static long run(long prog, long arg)
{
	long pid = sys_fork();
	if (pid == 0) {
		sys_exec(prog, arg);
		sys_exit(-100);			/* exec failed */
	}
	if (pid < 0) {
		failures++;
		return -1;
	}
	return sys_wait(pid);
}

/* runs in a fork-only child: init's own code in the child's copy of init's pages */
static long collatz(long n)
{
	long steps = 0, best = 0;
	for (long k = n; k < n + 40; k++) {
		long x = k, s = 0;
		while (x != 1) {
			x = (x & 1) ? 3 * x + 1 : x / 2;
			s++;
		}
		if (s > best)
			best = s;
		steps += s;
	}
	acc += (u64)steps;	/* the child's own copy of acc */
	return (steps ^ best) & 0xffff;
}

long main(void)
{
	struct line l = {.n = 0};
	for (long r = 0; r < ROUNDS; r++) {
		for (long prog = PROG_STRINGS; prog <= PROG_SIEVE; prog++)
			fold(run(prog, r * 4 + prog));
		if (r % 4 == 0)
			fold(run(PROG_FORKER, r));
		if (r % 2 == 1) {
			long pid = sys_fork();
			if (pid == 0)
				sys_exit(collatz(r * 7 + 1));
			fold(sys_wait(pid));
		}
		if (r % BATCH_EVERY == 3) {
			long pids[CONCURRENT];
			for (int i = 0; i < CONCURRENT; i++) {
				pids[i] = sys_fork();
				if (pids[i] == 0) {
					sys_exec(PROG_STRINGS + i % 3, LONG_RUN | (r + i));
					sys_exit(-100);
				}
			}
			for (int i = 0; i < CONCURRENT; i++)
				fold(pids[i] > 0 ? sys_wait(pids[i]) : -1);
		}
		if (r % 32 == 0) {
			l_str(&l, "init: round ");
			l_dec(&l, r);
			l_str(&l, " acc ");
			l_hex(&l, acc);
			l_send(&l);
		}
	}
	l_str(&l, "init: done, acc ");
	l_hex(&l, acc);
	l_str(&l, " failures ");
	l_dec(&l, failures);
	l_send(&l);
	return failures ? 1000 + failures : (long)(acc & 0xff);
}
