/* A hostile guest: drives every virtio-mmio device it finds with the requests a
 * careful device must survive, forever (the host stops it with a timeout).
 *
 * Each round, for every device (virtio-blk, -net, -console, -rng, -balloon...):
 *   - initialise it (reset, features, every queue at its largest size, DRIVER_OK);
 *   - fill every queue with the largest chains the rules allow: indirect tables of 1,024
 *     buffers of 256 KiB each (256 MiB per request, over one 256 KiB area of RAM),
 *     readable in even rounds, writable in odd ones (a virtio-blk request gets a
 *     read header first and a status byte last: 255.5 MiB reads), and notify;
 *   - then one malformed request of the round's kind (a loop, a zero-length buffer, an
 *     indirect table of 4 M descriptors, a chain of 1,025, an available index far
 *     ahead, a descriptor outside RAM), and a storm of notifies.
 * With two harts, hart 1 rewrites the descriptors and rings of the first device's
 * queue 0 with random values and notifies, racing hart 0.
 * It prints one line per round, "hostile: round N", and keeps N at 0x80ff1000.
 */
#include "common.h"

TEST_NAME("hostile");

#define VIRTIO_BASE   0x10001000UL
#define VIRTIO_SLOTS  8
#define R_MAGIC       0x000
#define R_VERSION     0x004
#define R_DEVICE_ID   0x008
#define R_DEV_FEAT    0x010
#define R_DEV_FEAT_SEL 0x014
#define R_DRV_FEAT    0x020
#define R_DRV_FEAT_SEL 0x024
#define R_QUEUE_SEL   0x030
#define R_QUEUE_MAX   0x034
#define R_QUEUE_NUM   0x038
#define R_QUEUE_READY 0x044
#define R_NOTIFY      0x050
#define R_INT_STATUS  0x060
#define R_INT_ACK     0x064
#define R_STATUS      0x070
#define R_DESC_LO     0x080
#define R_DESC_HI     0x084
#define R_AVAIL_LO    0x090
#define R_AVAIL_HI    0x094
#define R_USED_LO     0x0a0
#define R_USED_HI     0x0a4

#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

#define MAX_Q 4
#define QSIZE_MAX 256
#define RINGS      0x80400000UL      /* per slot and queue: 16 KiB (desc, avail, used) */
#define TABLES     0x80800000UL      /* indirect tables: 16 KiB each */
#define BUFFER     0x81000000UL      /* the one 256 KiB area every buffer points at */
#define BUF_LEN    (256u * 1024u)
#define FAR_TABLE  0x82000000UL      /* a 4 M-entry "table" (64 MiB: mostly untouched) */
#define BLK_HEADER 0x80ff0000UL      /* a virtio-blk read request's header: sector 0 */
#define ROUNDS     0x80ff1000UL      /* rounds done, for the host to read (8 bytes) */

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

static volatile uint64_t first_slot = ~0UL;
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uintptr_t reg(int slot, unsigned off) { return VIRTIO_BASE + 0x1000UL * slot + off; }
static uintptr_t ring(int slot, int q) { return RINGS + (uint64_t)(slot * MAX_Q + q) * 0x4000; }

static unsigned qnum[VIRTIO_SLOTS][MAX_Q];  /* each queue's size (QueueNum is write-only) */

static unsigned init_device(int slot)
{
    mmio_w32(reg(slot, R_STATUS), 0);
    mmio_w32(reg(slot, R_STATUS), S_ACK | S_DRIVER);
    mmio_w32(reg(slot, R_DEV_FEAT_SEL), 1);
    uint32_t hi = mmio_r32(reg(slot, R_DEV_FEAT));
    mmio_w32(reg(slot, R_DEV_FEAT_SEL), 0);
    uint32_t lo = mmio_r32(reg(slot, R_DEV_FEAT));
    mmio_w32(reg(slot, R_DRV_FEAT_SEL), 1);
    mmio_w32(reg(slot, R_DRV_FEAT), hi & 1);             /* VERSION_1 */
    mmio_w32(reg(slot, R_DRV_FEAT_SEL), 0);
    mmio_w32(reg(slot, R_DRV_FEAT), lo & (1u << 28));    /* INDIRECT_DESC */
    mmio_w32(reg(slot, R_STATUS), S_ACK | S_DRIVER | S_FEATURES_OK);
    unsigned queues = 0;
    for (int q = 0; q < MAX_Q; q++) {
        mmio_w32(reg(slot, R_QUEUE_SEL), q);
        uint32_t max = mmio_r32(reg(slot, R_QUEUE_MAX));
        if (max == 0)
            break;
        if (max > QSIZE_MAX)
            max = QSIZE_MAX;
        uintptr_t base = ring(slot, q);
        for (unsigned i = 0; i < 0x4000; i += 8)
            mmio_w64(base + i, 0);
        mmio_w32(reg(slot, R_QUEUE_NUM), max);
        qnum[slot][q] = max;
        mmio_w32(reg(slot, R_DESC_LO), (uint32_t)base);
        mmio_w32(reg(slot, R_DESC_HI), 0);
        mmio_w32(reg(slot, R_AVAIL_LO), (uint32_t)(base + 0x1000));
        mmio_w32(reg(slot, R_AVAIL_HI), 0);
        mmio_w32(reg(slot, R_USED_LO), (uint32_t)(base + 0x2000));
        mmio_w32(reg(slot, R_USED_HI), 0);
        mmio_w32(reg(slot, R_QUEUE_READY), 1);
        queues++;
    }
    mmio_w32(reg(slot, R_STATUS), S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    return queues;
}

/* An indirect table of n buffers of BUF_LEN (flags for all; a blk request gets a
 * readable 16-byte header first and a 1-byte writable status last). */
static uint64_t make_table(int index, unsigned n, uint16_t flags, int blk)
{
    struct desc *t = (struct desc *)(TABLES + 0x4000UL * index);
    for (unsigned i = 0; i < n; i++) {
        t[i].addr = BUFFER;
        t[i].len = BUF_LEN;
        t[i].flags = flags | (i + 1 < n ? F_NEXT : 0);
        t[i].next = i + 1;
    }
    if (blk) {  /* a read of 255.5 MiB in writable rounds (from a big enough disk) */
        mmio_w64(BLK_HEADER, 0);       /* type 0 (IN), reserved */
        mmio_w64(BLK_HEADER + 8, 0);   /* sector 0 */
        t[0].addr = BLK_HEADER;
        t[0].len = 16;
        t[0].flags = F_NEXT;
        t[n - 1].len = 1;
        t[n - 1].flags = F_WRITE;
        t[n - 1].addr = BUFFER + 64;
    }
    return (uint64_t)t;
}

static void publish(int slot, int q, unsigned num, uint64_t table, uint32_t table_len)
{
    uintptr_t base = ring(slot, q);
    struct desc *d = (struct desc *)base;
    volatile uint16_t *avail = (volatile uint16_t *)(base + 0x1000);
    uint16_t idx = avail[1];
    for (unsigned i = 0; i < num; i++) {
        d[i].addr = table;
        d[i].len = table_len;
        d[i].flags = F_INDIRECT;
        d[i].next = 0;
        avail[2 + (idx + i) % num] = i;
    }
    fence();
    avail[1] = idx + num;
    fence();
    mmio_w32(reg(slot, R_NOTIFY), q);
}

static void malformed(int slot, unsigned round)
{
    uintptr_t base = ring(slot, 0);
    struct desc *d = (struct desc *)base;
    volatile uint16_t *avail = (volatile uint16_t *)(base + 0x1000);
    uint16_t idx = avail[1];
    switch (round % 6) {
    case 0:  /* a loop: 0 -> 1 -> 0 */
        d[0] = (struct desc){BUFFER, 64, F_NEXT, 1};
        d[1] = (struct desc){BUFFER, 64, F_NEXT, 0};
        break;
    case 1:  /* a zero-length buffer */
        d[0] = (struct desc){BUFFER, 0, 0, 0};
        break;
    case 2:  /* an indirect table of 4 M descriptors */
        d[0] = (struct desc){FAR_TABLE, 16u << 22, F_INDIRECT, 0};
        break;
    case 3: { /* 1,025 buffers */
        struct desc *t = (struct desc *)(TABLES + 0x4000UL * 8);
        for (unsigned i = 0; i < 1025; i++)
            t[i] = (struct desc){BUFFER, 64, (uint16_t)(i < 1024 ? F_NEXT : 0), (uint16_t)(i + 1)};
        d[0] = (struct desc){(uint64_t)t, 1025 * 16, F_INDIRECT, 0};
        break;
    }
    case 4:  /* the available index far ahead */
        avail[1] = idx + 40000;
        fence();
        mmio_w32(reg(slot, R_NOTIFY), 0);
        return;
    default: /* a buffer outside RAM */
        d[0] = (struct desc){0x40000000UL, 4096, 0, 0};
        break;
    }
    avail[2] = 0;
    fence();
    avail[1] = idx + 1;
    fence();
    mmio_w32(reg(slot, R_NOTIFY), 0);
}

void secondary_main(uint64_t hartid, uint64_t dtb)
{
    (void)dtb;
    uint64_t x = 0x12345678u + hartid;
    for (;;) {
        uint64_t slot = first_slot;
        if (slot >= VIRTIO_SLOTS)
            continue;
        uintptr_t base = ring((int)slot, 0);
        for (int i = 0; i < 64; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            unsigned off = (unsigned)(x % 0x3000) & ~7u;
            mmio_w64(base + off, x);
        }
        mmio_w32(reg((int)slot, R_NOTIFY), (uint32_t)(x & 3));
    }
}

int main(uint64_t hartid, uint64_t dtb)
{
    (void)hartid;
    (void)dtb;
    int slots[VIRTIO_SLOTS];
    int nslots = 0;
    for (int s = 0; s < VIRTIO_SLOTS; s++)
        if (mmio_r32(reg(s, R_MAGIC)) == 0x74726976 && mmio_r32(reg(s, R_DEVICE_ID)) != 0)
            slots[nslots++] = s;
    if (nslots)
        first_slot = (uint64_t)slots[0];
    for (unsigned round = 0;; round++) {
        mmio_w64(ROUNDS, round);
        puts_("hostile: round ");
        put_dec(round);
        puts_("\n");
        for (int k = 0; k < nslots; k++) {
            int slot = slots[k];
            int blk = mmio_r32(reg(slot, R_DEVICE_ID)) == 2;
            unsigned queues = init_device(slot);
            uint16_t flags = (round & 1) ? F_WRITE : 0;
            uint64_t table = make_table(k, 1024, flags, blk);
            for (unsigned q = 0; q < queues; q++)
                publish(slot, (int)q, qnum[slot][q], table, 1024 * 16);
            for (int i = 0; i < 1000; i++)
                mmio_w32(reg(slot, R_NOTIFY), (uint32_t)(rnd() % (queues + 1)));
            mmio_w32(reg(slot, R_INT_ACK), mmio_r32(reg(slot, R_INT_STATUS)));
            malformed(slot, round + (unsigned)k);
        }
    }
}

CHECK_COUNT_OK();
