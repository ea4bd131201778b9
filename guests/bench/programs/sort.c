/* Sorting: libc qsort on an array of structs and on ints, and a merge sort with
 * insertion sort for short runs (stable, by a double field), every round on fresh
 * pseudo-random data; checks the order and folds the result into a checksum. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N      4000
#define ROUNDS 48

struct record {
    uint32_t key;
    uint32_t id;
    double score;
    char tag[8];
};

static struct record records[N];
static struct record scratch[N];
static int numbers[N];
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t checksum = 1469598103934665603ULL;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void mix(uint64_t v)
{
    checksum = (checksum ^ v) * 1099511628211ULL;
}

static int by_key(const void *a, const void *b)
{
    const struct record *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return strcmp(x->tag, y->tag);
}

static int by_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int score_less(const struct record *a, const struct record *b)
{
    return a->score < b->score;
}

static void insertion_sort(struct record *a, int n)
{
    for (int i = 1; i < n; i++) {
        struct record r = a[i];
        int j = i - 1;
        while (j >= 0 && score_less(&r, &a[j])) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = r;
    }
}

static void merge_sort(struct record *a, struct record *tmp, int n)
{
    if (n <= 16) {
        insertion_sort(a, n);
        return;
    }
    int h = n / 2;
    merge_sort(a, tmp, h);
    merge_sort(a + h, tmp, n - h);
    int i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = score_less(&a[j], &a[i]) ? a[j++] : a[i++];
    while (i < h)
        tmp[k++] = a[i++];
    while (j < n)
        tmp[k++] = a[j++];
    memcpy(a, tmp, (size_t)n * sizeof *a);
}

static void fill(void)
{
    for (int i = 0; i < N; i++) {
        uint64_t r = next();
        records[i].key = (uint32_t)(r % 1000);   /* many equal keys */
        records[i].id = (uint32_t)i;
        records[i].score = (double)(r >> 20) / 4096.0 - (double)(r & 0xff);
        for (int c = 0; c < 7; c++)
            records[i].tag[c] = (char)('a' + (r >> (8 + 3 * c)) % 26);
        records[i].tag[7] = 0;
        numbers[i] = (int)(next() >> 33) - (1 << 30);
    }
}

int main(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        fill();

        qsort(records, N, sizeof records[0], by_key);
        for (int i = 1; i < N; i++)
            if (by_key(&records[i - 1], &records[i]) > 0) {
                printf("qsort: out of order at %d\n", i);
                return 1;
            }
        for (int i = 0; i < N; i += 7)
            mix(records[i].id);

        merge_sort(records, scratch, N);
        for (int i = 1; i < N; i++)
            if (score_less(&records[i], &records[i - 1])) {
                printf("merge sort: out of order at %d\n", i);
                return 1;
            }
        for (int i = 0; i < N; i += 5)
            mix(records[i].id ^ ((uint64_t)records[i].key << 32));

        qsort(numbers, N, sizeof numbers[0], by_int);
        for (int i = 1; i < N; i++)
            if (numbers[i - 1] > numbers[i]) {
                printf("qsort int: out of order at %d\n", i);
                return 1;
            }
        mix((uint64_t)numbers[N / 3]);
    }
    printf("sort: %d rounds of %d records\n", ROUNDS, N);
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)checksum);
    return 0;
}
