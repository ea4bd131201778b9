"""The QEMU ``virt`` memory map: the one table every other part reads.

Addresses, sizes and PLIC interrupt numbers are QEMU's (hw/riscv/virt.c, QEMU 7.2), so
software built for that board finds its devices where it expects them. The DTB is
generated from this same table, so the two can never disagree.
"""

from __future__ import annotations

# the devices' own figures, which the board's device tree publishes
from ..devices.clint import CLINT_TIMEBASE_HZ  # noqa: F401
from ..devices.plic import PLIC_NUM_PRIORITIES, PLIC_NUM_SOURCES  # noqa: F401
from ..lightdata import dataclass


@dataclass(frozen=True)
class Region:
    name: str
    base: int
    size: int
    irq: int | None = None  # PLIC source number


BOOT_ROM = Region("mrom", 0x0000_1000, 0x1000)
TEST = Region("test", 0x0010_0000, 0x1000)
RTC = Region("rtc", 0x0010_1000, 0x1000, irq=11)
# pyhv's own: the VM generation ID (devices/vmgenid.py), present only when the machine
# has one. QEMU's virt board has nothing at 0x0010_2000 nor on PLIC source 12 (its
# sources: virtio 1..8, UART 10, RTC 11, PCIe 32..35, platform bus 64..95).
VMGENID = Region("vmgenid", 0x0010_2000, 0x1000, irq=12)
CLINT = Region("clint", 0x0200_0000, 0x10000)
PLIC = Region("plic", 0x0C00_0000, 0x60_0000)
UART0 = Region("uart", 0x1000_0000, 0x100, irq=10)
VIRTIO_BASE = 0x1000_1000
VIRTIO_STRIDE = 0x1000
VIRTIO_COUNT = 8
VIRTIO = tuple(
    Region(f"virtio_mmio{n}", VIRTIO_BASE + n * VIRTIO_STRIDE, 0x1000, irq=1 + n)
    for n in range(VIRTIO_COUNT)
)
DRAM_BASE = 0x8000_0000

UART_CLOCK_HZ = 3_686_400
MAX_HARTS = 8

# The firmware/kernel placement QEMU uses.
KERNEL_OFFSET_WITH_FIRMWARE = 0x20_0000  # payload at DRAM_BASE + 2 MiB (rv64)
FDT_ALIGN = 2 * 1024 * 1024
