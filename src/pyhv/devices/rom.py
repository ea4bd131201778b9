"""A read-only memory window (the boot ROM holding QEMU's reset vector)."""

from __future__ import annotations

from .base import Device


class Rom(Device):
    def __init__(self, name: str, size: int, content: bytes = b"") -> None:
        self.name = name
        self.size = size
        self.data = bytearray(size)
        self.load(content)

    def load(self, content: bytes) -> None:
        if len(content) > self.size:
            raise ValueError(f"{self.name}: {len(content)} bytes do not fit in {self.size}")
        self.data[:] = bytes(self.size)
        self.data[: len(content)] = content

    def read(self, offset: int, size: int) -> int:
        if offset < 0 or offset + size > self.size:
            return 0
        return int.from_bytes(self.data[offset : offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        pass  # ROM: writes are ignored, as on QEMU's mrom
