"""Device access to guest RAM (DMA), checked against the guest's own RAM.

Every address and length a guest hands a device is untrusted: each access is checked to
lie entirely inside guest RAM before a byte moves, and a failed check raises
:class:`DmaError`, which the device turns into an error for that guest. Writes also drop
any decoded instructions of the pages they touch, so the CPU never runs stale code.
"""

from __future__ import annotations

from ...cpu.mmu import CodeWatch
from ...memory.ram import GuestRAM


class DmaError(Exception):
    """A guest-supplied address range lies (partly) outside guest RAM."""


class GuestDMA:
    def __init__(self, ram: GuestRAM, code: CodeWatch | None = None) -> None:
        self.ram = ram
        self.code = code
        self._base = ram.base
        self._end = ram.end
        self._mv = ram.mv

    def check(self, addr: int, length: int) -> int:
        """Offset of [addr, addr+length) in RAM, or DmaError."""
        if length < 0 or addr < self._base or addr + length > self._end:
            raise DmaError(f"guest buffer {addr:#x}+{length:#x} is outside guest RAM")
        return addr - self._base

    def read(self, addr: int, length: int) -> bytes:
        off = self.check(addr, length)
        return bytes(self._mv[off : off + length])

    def view(self, addr: int, length: int) -> memoryview:
        """A zero-copy read-only view (valid until the RAM is closed)."""
        off = self.check(addr, length)
        return self._mv[off : off + length].toreadonly()

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        off = self.check(addr, len(data))
        self._mv[off : off + len(data)] = data
        if self.code is not None and self.code.pages:
            self.code.invalidate_range(addr, len(data))

    def read_u16(self, addr: int) -> int:
        off = self.check(addr, 2)
        return self._mv[off] | self._mv[off + 1] << 8

    def write_u16(self, addr: int, value: int) -> None:
        self.write(addr, (value & 0xFFFF).to_bytes(2, "little"))
