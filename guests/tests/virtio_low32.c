/* virtio_low32: a small teaching kernel's virtio-blk driver (xv6's pattern). It expects
 * its disk at 0x10001000 (QEMU puts it there with bus=virtio-mmio-bus.0), writes only
 * the low 32 feature bits (it never selects the high word, so VERSION_1 is not
 * accepted), insists on FEATURES_OK, then reads sector 0 by polling the used ring and
 * checks it begins with "pyhv-low32-disk". Secondary harts park. */
#include "common.h"

TEST_NAME("virtio_low32");

#define VIRTIO0 0x10001000UL
#define R(off) (VIRTIO0 + (off))
#define MMIO_MAGIC 0x000
#define MMIO_VERSION 0x004
#define MMIO_DEVICE_ID 0x008
#define MMIO_VENDOR_ID 0x00c
#define MMIO_DEVICE_FEATURES 0x010
#define MMIO_DRIVER_FEATURES 0x020
#define MMIO_QUEUE_SEL 0x030
#define MMIO_QUEUE_NUM_MAX 0x034
#define MMIO_QUEUE_NUM 0x038
#define MMIO_QUEUE_READY 0x044
#define MMIO_QUEUE_NOTIFY 0x050
#define MMIO_INTERRUPT_STATUS 0x060
#define MMIO_INTERRUPT_ACK 0x064
#define MMIO_STATUS 0x070
#define MMIO_QUEUE_DESC_LOW 0x080
#define MMIO_QUEUE_DESC_HIGH 0x084
#define MMIO_DRIVER_DESC_LOW 0x090
#define MMIO_DRIVER_DESC_HIGH 0x094
#define MMIO_DEVICE_DESC_LOW 0x0a0
#define MMIO_DEVICE_DESC_HIGH 0x0a4

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

#define BLK_F_RO 5
#define BLK_F_SCSI 7
#define BLK_F_CONFIG_WCE 11
#define BLK_F_MQ 12
#define F_ANY_LAYOUT 27
#define RING_F_INDIRECT_DESC 28
#define RING_F_EVENT_IDX 29

#define NUM 8

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[NUM], unused; };
struct used_elem { uint32_t id, len; };
struct used { uint16_t flags; volatile uint16_t idx; struct used_elem ring[NUM]; };
struct blk_req { uint32_t type, reserved; uint64_t sector; };

static struct desc descs[NUM] __attribute__((aligned(4096)));
static struct avail avail __attribute__((aligned(4096)));
static struct used used __attribute__((aligned(4096)));
static struct blk_req req;
static uint8_t data[512] __attribute__((aligned(16)));
static volatile uint8_t status_byte;

int main(uint64_t hartid, uint64_t dtb)
{
    CHECK_EQ(mmio_r32(R(MMIO_MAGIC)), 0x74726976, "magic at 0x10001000");
    CHECK_EQ(mmio_r32(R(MMIO_VERSION)), 2, "modern virtio-mmio");
    CHECK_EQ(mmio_r32(R(MMIO_DEVICE_ID)), 2, "a virtio-blk at 0x10001000 (bus=virtio-mmio-bus.0)");
    CHECK_EQ(mmio_r32(R(MMIO_VENDOR_ID)), 0x554d4551, "vendor QEMU");

    uint32_t status = 0;
    mmio_w32(R(MMIO_STATUS), status);
    status |= S_ACKNOWLEDGE;
    mmio_w32(R(MMIO_STATUS), status);
    status |= S_DRIVER;
    mmio_w32(R(MMIO_STATUS), status);
    uint32_t features = mmio_r32(R(MMIO_DEVICE_FEATURES));   /* the low word only */
    features &= ~(1u << BLK_F_RO);
    features &= ~(1u << BLK_F_SCSI);
    features &= ~(1u << BLK_F_CONFIG_WCE);
    features &= ~(1u << BLK_F_MQ);
    features &= ~(1u << F_ANY_LAYOUT);
    features &= ~(1u << RING_F_EVENT_IDX);
    features &= ~(1u << RING_F_INDIRECT_DESC);
    mmio_w32(R(MMIO_DRIVER_FEATURES), features);
    status |= S_FEATURES_OK;
    mmio_w32(R(MMIO_STATUS), status);
    status = mmio_r32(R(MMIO_STATUS));
    CHECK(status & S_FEATURES_OK, "FEATURES_OK kept with only the low 32 bits accepted");

    mmio_w32(R(MMIO_QUEUE_SEL), 0);
    CHECK_EQ(mmio_r32(R(MMIO_QUEUE_READY)), 0, "queue 0 not ready yet");
    CHECK(mmio_r32(R(MMIO_QUEUE_NUM_MAX)) >= NUM, "queue 0 large enough");
    mmio_w32(R(MMIO_QUEUE_NUM), NUM);
    mmio_w32(R(MMIO_QUEUE_DESC_LOW), (uint64_t)descs);
    mmio_w32(R(MMIO_QUEUE_DESC_HIGH), (uint64_t)descs >> 32);
    mmio_w32(R(MMIO_DRIVER_DESC_LOW), (uint64_t)&avail);
    mmio_w32(R(MMIO_DRIVER_DESC_HIGH), (uint64_t)&avail >> 32);
    mmio_w32(R(MMIO_DEVICE_DESC_LOW), (uint64_t)&used);
    mmio_w32(R(MMIO_DEVICE_DESC_HIGH), (uint64_t)&used >> 32);
    mmio_w32(R(MMIO_QUEUE_READY), 1);
    status |= S_DRIVER_OK;
    mmio_w32(R(MMIO_STATUS), status);

    req.type = 0;   /* VIRTIO_BLK_T_IN */
    req.sector = 0;
    status_byte = 0xff;
    descs[0] = (struct desc){(uint64_t)&req, sizeof req, 1, 1};
    descs[1] = (struct desc){(uint64_t)data, 512, 1 | 2, 2};
    descs[2] = (struct desc){(uint64_t)&status_byte, 1, 2, 0};
    avail.ring[avail.idx % NUM] = 0;
    fence();
    avail.idx += 1;
    fence();
    mmio_w32(R(MMIO_QUEUE_NOTIFY), 0);
    uint64_t t0 = mmio_r64(CLINT_MTIME);
    while (used.idx == 0 && mmio_r64(CLINT_MTIME) - t0 < 100000000UL)
        ;
    CHECK_EQ(used.idx, 1, "the read completed");
    CHECK_EQ(status_byte, 0, "status OK");
    const char *want = "pyhv-low32-disk";
    for (int i = 0; want[i]; i++)
        CHECK_EQ(data[i], (uint8_t)want[i], "sector 0 holds the expected bytes");
    mmio_w32(R(MMIO_INTERRUPT_ACK), mmio_r32(R(MMIO_INTERRUPT_STATUS)) & 3);
    pass();
}

CHECK_COUNT_OK();
