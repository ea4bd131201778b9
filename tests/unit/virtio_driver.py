"""A minimal virtio-mmio *driver* for tests: sets up a device the way Linux does and
builds descriptor chains in guest RAM by hand, so device models are driven through the
real transport, registers and rings."""

from __future__ import annotations

import struct

from pyhv.devices.base import IrqLine
from pyhv.devices.virtio import mmio as R
from pyhv.devices.virtio.device import VirtioDevice
from pyhv.devices.virtio.dma import GuestDMA
from pyhv.devices.virtio.mmio import VirtioMmio
from pyhv.memory.ram import GuestRAM

RAM_BASE = 0x8000_0000
QSIZE = 16


class Driver:
    def __init__(self, device: VirtioDevice | None, ram_size: int = 1 << 20,
                 features: int = (1 << 32) | (1 << 28)) -> None:
        self.ram = GuestRAM(RAM_BASE, ram_size)
        self.irq_levels: list[bool] = []
        self.irq = IrqLine(self.irq_levels.append)
        self.dma = GuestDMA(self.ram)
        self.dev = VirtioMmio(self.irq, self.dma, device)
        self.heap = RAM_BASE + 0x1_0000  # data buffers are allocated from here
        self.queues: dict[int, dict[str, int]] = {}
        self.features = features

    # registers
    def r(self, off: int) -> int:
        return self.dev.read(off, 4)

    def w(self, off: int, value: int) -> None:
        self.dev.write(off, 4, value)

    def setup(self, nqueues: int) -> None:
        self.w(R.STATUS, 0)
        self.w(R.STATUS, R.ACKNOWLEDGE | R.DRIVER)
        offered = 0
        for sel in (0, 1):
            self.w(R.DEVICE_FEATURES_SEL, sel)
            offered |= self.r(R.DEVICE_FEATURES) << (32 * sel)
        accept = offered & self.features
        for sel in (0, 1):
            self.w(R.DRIVER_FEATURES_SEL, sel)
            self.w(R.DRIVER_FEATURES, (accept >> (32 * sel)) & 0xFFFFFFFF)
        self.w(R.STATUS, R.ACKNOWLEDGE | R.DRIVER | R.FEATURES_OK)
        assert self.r(R.STATUS) & R.FEATURES_OK
        for q in range(nqueues):
            base = RAM_BASE + 0x1000 * (q + 1) * 4
            desc, avail, used = base, base + 0x400, base + 0x800
            self.w(R.QUEUE_SEL, q)
            assert self.r(R.QUEUE_NUM_MAX) >= QSIZE
            self.w(R.QUEUE_NUM, QSIZE)
            for off, addr in ((R.QUEUE_DESC_LOW, desc), (R.QUEUE_DRIVER_LOW, avail),
                              (R.QUEUE_DEVICE_LOW, used)):
                self.w(off, addr & 0xFFFFFFFF)
                self.w(off + 4, addr >> 32)
            self.w(R.QUEUE_READY, 1)
            self.queues[q] = {"desc": desc, "avail": avail, "used": used, "next": 0,
                              "avail_idx": 0, "used_seen": 0}
        self.w(R.STATUS, R.ACKNOWLEDGE | R.DRIVER | R.FEATURES_OK | R.DRIVER_OK)

    def alloc(self, data: bytes | int) -> int:
        size = data if isinstance(data, int) else len(data)
        addr = self.heap
        self.heap += (size + 15) & ~15
        if not isinstance(data, int):
            self.ram.write_bytes(addr, data)
        return addr

    def add(self, q: int, readable: list[bytes], writable: list[int]) -> list[int]:
        """Publish a chain; returns the guest addresses of the writable buffers."""
        st = self.queues[q]
        bufs = [(self.alloc(b), len(b), 0) for b in readable]
        outs = [(self.alloc(n), n, 2) for n in writable]
        chain = bufs + outs
        head = st["next"]
        for i, (addr, length, flags) in enumerate(chain):
            idx = (head + i) % QSIZE
            nxt = (head + i + 1) % QSIZE
            more = 1 if i + 1 < len(chain) else 0
            self.ram.write_bytes(st["desc"] + 16 * idx,
                                 struct.pack("<QIHH", addr, length, flags | more, nxt))
        st["next"] = (head + len(chain)) % QSIZE
        slot = st["avail"] + 4 + 2 * (st["avail_idx"] % QSIZE)
        self.ram.write(slot, 2, head)
        st["avail_idx"] = (st["avail_idx"] + 1) & 0xFFFF
        self.ram.write(st["avail"] + 2, 2, st["avail_idx"])
        return [a for a, _, _ in outs]

    def kick(self, q: int) -> None:
        """Notify, then end the machine loop's round (the transport's poll)."""
        self.w(R.QUEUE_NOTIFY, q)
        self.dev.poll()

    def used(self, q: int) -> list[tuple[int, int]]:
        st = self.queues[q]
        idx = self.ram.read(st["used"] + 2, 2)
        out = []
        while st["used_seen"] != idx:
            e = st["used"] + 4 + 8 * (st["used_seen"] % QSIZE)
            out.append(struct.unpack("<II", self.ram.read_bytes(e, 8)))
            st["used_seen"] = (st["used_seen"] + 1) & 0xFFFF
        return out
