"""What every device on the bus looks like.

Devices receive *offsets* within their own window, never absolute addresses: only the
board knows where things live (board/memmap.py). Interrupt outputs are :class:`IrqLine`
objects handed in by the board, so a device never reaches into the interrupt controller.
State is explicit: ``save()`` returns a plain dict and ``restore()`` takes it back.
"""

from __future__ import annotations

from collections.abc import Callable

from ..memory.device import Device

__all__ = ["Device", "IrqLine"]


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
