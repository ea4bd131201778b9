"""The physical address space outside RAM: MMIO windows mapped to devices.

Lookups go through a page-indexed dict (every virt device window is page aligned), so a
UART poll costs one dict lookup. Devices see offsets, never absolute addresses. An access
that hits no device returns ``None`` and the CPU raises an access fault for the guest.
"""

from __future__ import annotations

from ..errors import ConfigError
from .device import Device


class Bus:
    def __init__(self) -> None:
        self._pages: dict[int, tuple[int, int, Device]] = {}
        self.windows: list[tuple[int, int, Device]] = []

    def attach(self, base: int, size: int, device: Device) -> None:
        end = base + size
        for b, e, d in self.windows:
            if base < e and b < end:
                raise ConfigError(
                    f"{device.name} at {base:#x}+{size:#x} overlaps {d.name} at {b:#x}"
                )
        self.windows.append((base, end, device))
        for page in range(base >> 12, (end + 0xFFF) >> 12):
            self._pages[page] = (base, end, device)

    def find(self, paddr: int, size: int) -> tuple[Device, int] | None:
        hit = self._pages.get(paddr >> 12)
        if hit is None:
            return None
        base, end, dev = hit
        if paddr < base or paddr + size > end:
            return None
        return dev, paddr - base

    def read(self, paddr: int, size: int) -> int | None:
        hit = self.find(paddr, size)
        if hit is None:
            return None
        dev, off = hit
        return dev.read(off, size) & ((1 << (8 * size)) - 1)

    def write(self, paddr: int, size: int, value: int) -> bool:
        hit = self.find(paddr, size)
        if hit is None:
            return False
        dev, off = hit
        dev.write(off, size, value & ((1 << (8 * size)) - 1))
        return True
