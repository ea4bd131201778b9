"""An empty virtio-mmio slot: the transport registers with no device behind them.

Why it exists: the QEMU ``virt`` board always has eight virtio-mmio windows
(0x1000_1000 + n*0x1000, PLIC sources 1..8) and always lists them in the device tree,
whether or not a device is plugged in. Linux's virtio_mmio driver probes each one; an
unplugged slot must answer so that the probe is skipped quietly, which is what QEMU's
transport does with no backend (hw/virtio/virtio-mmio.c, ``if (!vdev)``).

What it follows: the virtio 1.x MMIO register layout. MagicValue (0x000) reads
0x74726976 ("virt"), Version (0x004) 2 (the modern transport; QEMU reports 1 unless
``force-legacy=false``, which is why the version is a parameter), DeviceID (0x008) 0,
meaning "no device" (the driver returns -ENODEV), VendorID (0x00c) 0x554d4551 ("QEMU").
Everything else reads 0 and every write is ignored. Like QEMU, only 32-bit accesses to
these registers answer; other sizes read 0.
"""

from __future__ import annotations

from .base import Device

MAGIC_VALUE = 0x000
VERSION = 0x004
DEVICE_ID = 0x008
VENDOR_ID = 0x00C

VIRT_MAGIC = 0x7472_6976  # "virt", little-endian
VIRT_VENDOR = 0x554D_4551  # "QEMU", little-endian


class EmptyVirtioSlot(Device):
    """virtio-mmio transport answering the probe with DeviceID 0 (no device)."""

    name = "virtio_mmio"
    size = 0x1000

    def __init__(self, version: int = 2) -> None:
        self.version = version

    def read(self, offset: int, size: int) -> int:
        if size != 4:
            return 0
        if offset == MAGIC_VALUE:
            return VIRT_MAGIC
        if offset == VERSION:
            return self.version
        if offset == VENDOR_ID:
            return VIRT_VENDOR
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        pass
