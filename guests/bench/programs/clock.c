/* Timing: a benchmark harness that times every operation of its workload with the
 * clock a bare-metal program has, the CLINT's mtime register (what a board's clock()
 * reads: a load from 0x200bff8), and keeps a latency histogram. The workload is a
 * binary-heap priority queue (an event scheduler: pop the earliest event, push one or
 * two later ones). The checksum covers the work and how the clock behaved (it never
 * went back, and moved), not the times themselves, which differ between machines. */
#include <stdint.h>
#include <stdio.h>

#define MTIME   ((volatile uint64_t *)0x200bff8UL)
#define EVENTS  4096
#define ROUNDS  24
#define OPS     40000

static uint64_t heap[EVENTS * 2];
static unsigned n;
static uint64_t histogram[16];
static uint64_t checksum = 0xcbf29ce484222325ULL;
static uint64_t seed = 88172645463325252ULL;

static void mix(uint64_t v)
{
    checksum = (checksum ^ v) * 1099511628211ULL;
}

static uint64_t next(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
}

static void push(uint64_t v)
{
    unsigned i = n++;
    while (i > 0) {
        unsigned parent = (i - 1) / 2;
        if (heap[parent] <= v)
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = v;
}

static uint64_t pop(void)
{
    uint64_t top = heap[0], last = heap[--n];
    unsigned i = 0;
    for (;;) {
        unsigned child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && heap[child + 1] < heap[child])
            child++;
        if (heap[child] >= last)
            break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = last;
    return top;
}

static unsigned bucket(uint64_t ticks)
{
    unsigned b = 0;
    while (ticks > 1 && b < 15) {
        ticks >>= 1;
        b++;
    }
    return b;
}

int main(void)
{
    uint64_t backwards = 0, reads = 0, first = *MTIME, last = first;

    for (int round = 0; round < ROUNDS; round++) {
        n = 0;
        for (unsigned i = 0; i < EVENTS; i++)
            push(next() >> 20);
        uint64_t sum = 0;
        for (unsigned op = 0; op < OPS; op++) {
            uint64_t t0 = *MTIME;
            uint64_t now = pop();
            sum += now;
            push(now + (next() & 0xffff));
            if ((op & 7) == 0 && n > 1)
                sum ^= pop();
            else if (n < EVENTS)
                push(now + (next() & 0xfffff));
            uint64_t t1 = *MTIME;
            reads += 2;
            if (t0 < last || t1 < t0)
                backwards++;
            last = t1;
            histogram[bucket(t1 - t0)]++;
        }
        mix(sum);
        mix(n);
    }
    uint64_t timed = 0;
    for (unsigned b = 0; b < 16; b++)
        timed += histogram[b];
    mix(backwards);
    mix(reads);
    mix(timed);
    mix(last > first);
    printf("clock: %d rounds of %d timed operations, %llu clock reads, %llu backwards\n",
           ROUNDS, OPS, (unsigned long long)reads, (unsigned long long)backwards);
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)checksum);
    return 0;
}
