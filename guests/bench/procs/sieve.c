/* sieve: primes below a limit set by the argument (a byte array in .bss, on pages of
 * its own); counts them, sums them, keeps the last few in .data next to the code. */
#include "ulib.h"

#define LONG_RUN (1L << 20)
#define MAXN 7000

static unsigned char composite[MAXN] __attribute__((aligned(4096)));
static long last[8] = {1};
static long rounds_done = 1;

static long sieve(long n, u64 *sum)
{
	long count = 0;
	for (long i = 0; i < n; i++)
		composite[i] = 0;
	for (long i = 2; i < n; i++) {
		if (composite[i])
			continue;
		count++;
		*sum += (u64)i;
		if (i * 8 > n * 7)
			last[count & 7] = i;
		for (long j = i * i; j < n; j += i)
			composite[j] = 1;
	}
	rounds_done++;
	return count;
}

long main(long arg)
{
	long reps = arg & LONG_RUN ? 4 : 1;
	long n = 1000 + (arg & 15) * 200;
	u64 sum = 0;
	long count = 0;
	for (long rep = 0; rep < reps; rep++) {
		count += sieve(n - rep * 7, &sum);
		if (arg & LONG_RUN && rep % 2 == 1)
			sys_yield();
	}
	struct line l = {.n = 0};
	l_str(&l, "sieve ");
	l_dec(&l, sys_getpid());
	l_str(&l, ": ");
	l_dec(&l, count);
	l_str(&l, " primes below ");
	l_dec(&l, n);
	l_str(&l, ", last ");
	for (int i = 0; i < 8; i++) {
		l_dec(&l, last[i]);
		l_str(&l, " ");
	}
	l_send(&l);
	return (long)((sum + (u64)count + (u64)rounds_done) & 0x7fff);
}
