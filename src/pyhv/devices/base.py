"""What every device on the bus looks like.

Devices receive *offsets* within their own window, never absolute addresses: only the
board knows where things live (board/memmap.py). Interrupt outputs are :class:`IrqLine`
objects handed in by the board, so a device never reaches into the interrupt controller.
State is explicit: ``save()`` returns a plain dict and ``restore()`` takes it back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any


class Device(ABC):
    """Base class: an MMIO window of ``size`` bytes with read/write callbacks."""

    name: str = "device"
    size: int = 0x1000

    @abstractmethod
    def read(self, offset: int, size: int) -> int:
        """Read ``size`` (1, 2, 4 or 8) bytes at ``offset``; unknown registers read as 0."""

    @abstractmethod
    def write(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` bytes of ``value`` at ``offset``; unknown registers ignore writes."""

    def save(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:  # noqa: B027 - stateless by default
        """Take back what ``save()`` returned (stateless devices need nothing)."""


class IrqLine:
    """An interrupt wire from a device to an interrupt controller input.

    Every ``set`` reaches the controller, also when the level does not change (as
    QEMU's ``qemu_set_irq``): the PLIC makes a source pending each time its device
    raises the line, which is when the device's interrupt condition is (re)evaluated,
    not merely while the line is high."""

    __slots__ = ("_sink", "level")

    def __init__(self, sink: Callable[[bool], None] | None = None) -> None:
        self._sink = sink
        self.level = False

    def set(self, level: bool) -> None:
        level = bool(level)
        self.level = level
        if self._sink is not None:
            self._sink(level)
