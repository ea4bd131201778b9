/* Hashing: an open-addressing hash table (linear probing, FNV-1a over string keys,
 * tombstones on delete) filled with formatted keys, then looked up (hits and misses),
 * updated and partly deleted, round after round. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS   8192            /* power of two */
#define KEYS    5000
#define KEYLEN  24
#define ROUNDS  18

struct slot {
    const char *key;            /* NULL: empty; &tombstone: deleted */
    uint32_t hash;
    int64_t value;
};

static struct slot table[SLOTS];
static char keys[KEYS][KEYLEN];
static const char tombstone[] = "";
static unsigned used, probes;
static uint64_t checksum = 0xcbf29ce484222325ULL;

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 16777619u;
    }
    return h;
}

static struct slot *find(const char *key, uint32_t h, int for_insert)
{
    struct slot *grave = NULL;
    for (uint32_t i = h & (SLOTS - 1);; i = (i + 1) & (SLOTS - 1)) {
        struct slot *s = &table[i];
        probes++;
        if (s->key == NULL)
            return for_insert ? (grave ? grave : s) : NULL;
        if (s->key == tombstone) {
            if (!grave)
                grave = s;
        } else if (s->hash == h && strcmp(s->key, key) == 0) {
            return s;
        }
    }
}

static void put(const char *key, int64_t value)
{
    uint32_t h = fnv1a(key);
    struct slot *s = find(key, h, 1);
    if (s->key == NULL || s->key == tombstone) {
        s->key = key;
        s->hash = h;
        used++;
    }
    s->value = value;
}

static int get(const char *key, int64_t *value)
{
    struct slot *s = find(key, fnv1a(key), 0);
    if (!s)
        return 0;
    *value = s->value;
    return 1;
}

static int del(const char *key)
{
    struct slot *s = find(key, fnv1a(key), 0);
    if (!s)
        return 0;
    s->key = tombstone;
    used--;
    return 1;
}

static void mix(uint64_t v)
{
    checksum = (checksum ^ v) * 0x100000001b3ULL;
}

int main(void)
{
    static const char *const words[] = {
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
        "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    };
    char probe[KEYLEN];

    for (int i = 0; i < KEYS; i++)
        snprintf(keys[i], KEYLEN, "%s-%d/%x", words[i % 16], i * 7919 % 10007, i);

    for (int round = 0; round < ROUNDS; round++) {
        memset(table, 0, sizeof table);
        used = 0;
        for (int i = 0; i < KEYS; i++)
            put(keys[i], (int64_t)i * (round + 3));
        for (int pass = 0; pass < 4; pass++) {
            int64_t v, sum = 0;
            int hits = 0;
            for (int i = 0; i < KEYS; i++) {
                int k = (i * 31 + pass * 977) % KEYS;
                if (get(keys[k], &v)) {
                    hits++;
                    sum += v;
                }
                /* a miss: a key of the same shape that was never inserted */
                strcpy(probe, keys[k]);
                probe[0] ^= 0x20;
                if (get(probe, &v))
                    hits += 1000;
            }
            mix((uint64_t)sum);
            mix((uint64_t)hits);
            for (int i = pass; i < KEYS; i += 5)
                put(keys[i], (int64_t)i ^ (int64_t)(pass << 20));
        }
        for (int i = round % 3; i < KEYS; i += 3)
            if (!del(keys[i])) {
                printf("delete: %s missing\n", keys[i]);
                return 1;
            }
        for (int i = 0; i < KEYS; i += 2)
            put(keys[i], -i);
        int64_t v, sum = 0;
        for (int i = 0; i < KEYS; i++)
            if (get(keys[i], &v))
                sum += v;
        mix((uint64_t)sum);
        mix(used);
    }
    mix(probes);
    printf("hash: %d rounds, %d keys, %u probes\n", ROUNDS, KEYS, probes);
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)checksum);
    return 0;
}
