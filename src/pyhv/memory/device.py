"""What every device on the bus looks like: the interface the bus calls.

Devices receive *offsets* within their own window, never absolute addresses: only the
board knows where things live (board/memmap.py). State is explicit: ``save()`` returns the
device's state record (pyhv.records: typed, versioned, checked when a snapshot is loaded)
and ``restore()`` takes it back. (It lives with the bus, the lowest layer that needs it;
device models, in ``pyhv.devices``, implement it.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Device(ABC):
    """Base class: an MMIO window of ``size`` bytes with read/write callbacks."""

    name: str = "device"
    size: int = 0x1000
    # True: an access may be made from inside a running hart's native code (the JIT's
    # device callback): it changes nothing of the machine but the device and the
    # interrupt wires (no power event, no stop request, no hart's state)
    native_access: bool = False

    def native_store(self, offset: int) -> bool:
        """With ``native_access``: whether a store at ``offset`` may be made from native
        code too (a register whose write has effects beyond the device and the wires,
        such as moving the clock native code reads, says no)."""
        return True

    @abstractmethod
    def read(self, offset: int, size: int) -> int:
        """Read ``size`` (1, 2, 4 or 8) bytes at ``offset``; unknown registers read as 0."""

    @abstractmethod
    def write(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` bytes of ``value`` at ``offset``; unknown registers ignore writes."""

    def save(self) -> Any:
        """The device's state record (stateless devices: None)."""
        return None

    def restore(self, state: Any) -> None:  # noqa: B027 - stateless by default
        """Take back what ``save()`` returned, a ``Record`` (stateless devices need
        nothing)."""
