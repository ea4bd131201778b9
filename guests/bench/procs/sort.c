/* sort: fills an array (on the stack) from a generator whose state is in .data (the
 * same page as the code), seeded by the argument, sorts it with a comparison function called through a
 * pointer (insertion sort, then a Shell sort of a second pattern), checks the order,
 * and reports a checksum. */
#include "ulib.h"

#define LONG_RUN (1L << 20)
#define N 64

static u64 seed = 0x9e3779b97f4a7c15UL;
static long compares = 1, sorts = 1;
static long local_compares;

static u64 next(void)
{
	seed ^= seed << 13;
	seed ^= seed >> 7;
	seed ^= seed << 17;
	return seed;
}

static int cmp_up(long a, long b) { local_compares++; return a < b ? -1 : a > b; }
static int cmp_down(long a, long b) { local_compares++; return a > b ? -1 : a < b; }

static void insertion(long *a, int n, int (*cmp)(long, long))
{
	for (int i = 1; i < n; i++) {
		long v = a[i];
		int j = i - 1;
		while (j >= 0 && cmp(a[j], v) > 0) {
			a[j + 1] = a[j];
			j--;
		}
		a[j + 1] = v;
	}
}

static void shell(long *a, int n, int (*cmp)(long, long))
{
	static const int gaps[] = {40, 13, 4, 1};
	for (int g = 0; g < 4; g++) {
		int gap = gaps[g];
		for (int i = gap; i < n; i++) {
			long v = a[i];
			int j = i;
			while (j >= gap && cmp(a[j - gap], v) > 0) {
				a[j] = a[j - gap];
				j -= gap;
			}
			a[j] = v;
		}
	}
}

static int sorted(const long *a, int n, int (*cmp)(long, long))
{
	for (int i = 1; i < n; i++)
		if (cmp(a[i - 1], a[i]) > 0)
			return 0;
	return 1;
}

long main(long arg)
{
	long data[N];
	long reps = arg & LONG_RUN ? 6 : 1;
	seed += (u64)(arg & 0xffff) * 0x2545f4914f6cdd1dUL;
	u64 sum = 0;
	long ok = 0;
	for (long rep = 0; rep < reps; rep++) {
		for (int i = 0; i < N; i++)
			data[i] = (long)(next() % 10000) - 5000;
		insertion(data, N, cmp_up);
		ok += sorted(data, N, cmp_up);
		for (int i = 0; i < N; i++)
			sum = sum * 31 + (u64)data[i];
		for (int i = 0; i < N; i++)
			data[i] = (long)(next() & 0xffff);
		shell(data, N, cmp_down);
		ok += sorted(data, N, cmp_down);
		sum ^= (u64)data[0] << 16 | (u64)data[N - 1];
		compares += local_compares;
		local_compares = 0;
		sorts += 2;
		if (arg & LONG_RUN && rep % 2 == 1)
			sys_yield();
	}
	struct line l = {.n = 0};
	l_str(&l, "sort ");
	l_dec(&l, sys_getpid());
	l_str(&l, ": sum ");
	l_hex(&l, sum);
	l_str(&l, " sorted ");
	l_dec(&l, ok);
	l_str(&l, " compares ");
	l_dec(&l, compares);
	l_str(&l, " sorts ");
	l_dec(&l, sorts);
	l_send(&l);
	return ok == 2 * reps ? (long)(sum & 0x7fff) : -1;
}
