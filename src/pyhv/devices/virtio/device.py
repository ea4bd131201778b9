"""What a virtio device model implements; the transport (mmio.py) does the rest.

A device model only handles its requests: it names its device ID, feature bits, queue
count and config space, and is told when a queue has work. Feature negotiation, queue
setup, interrupts, status and reset belong to the one shared transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...records import Record, record

if TYPE_CHECKING:
    from .mmio import VirtioMmio
    from .queue import Virtqueue

# Device IDs (virtio 1.1, section 5)
VIRTIO_ID_NET = 1
VIRTIO_ID_BLOCK = 2
VIRTIO_ID_CONSOLE = 3
VIRTIO_ID_RNG = 4
VIRTIO_ID_BALLOON = 5
VIRTIO_ID_9P = 9

# Transport feature bits the shared code implements for every device.
VIRTIO_F_RING_INDIRECT_DESC = 1 << 28
VIRTIO_F_RING_EVENT_IDX = 1 << 29
VIRTIO_F_VERSION_1 = 1 << 32


@record
class NoState(Record):
    """A device with no state of its own beyond its queues."""


class VirtioDevice:
    """Base class of device models behind a :class:`~.mmio.VirtioMmio` transport."""

    device_id = 0
    num_queues = 1
    queue_max_size = 256
    name = "virtio"
    # Bytes a queue may move per round of the machine loop (Virtqueue.budget): ~10 ms
    # of the host's work at most, after which the rest waits for the next round.
    round_bytes = 16 << 20

    def __init__(self) -> None:
        self.transport: VirtioMmio | None = None
        self.driver_features = 0

    # -- what subclasses provide --------------------------------------------------------

    def device_features(self) -> int:
        """Device-specific feature bits offered (the transport adds its own)."""
        return 0

    def config_bytes(self) -> bytes:
        """The device configuration space, as the driver reads it."""
        return b""

    def config_write(self, offset: int, data: bytes) -> None:
        """A driver write into the configuration space (most devices ignore it)."""

    def queue_notify(self, index: int, queue: Virtqueue) -> None:
        """The driver says queue ``index`` has new buffers."""

    def activate(self) -> None:
        """DRIVER_OK: the driver finished setting up; start host-side work."""

    def reset(self) -> None:
        """The driver reset the device: drop in-flight state."""

    def poll(self) -> None:
        """Called by the machine loop: deliver host-side events (input, frames)."""

    def wait_fds(self) -> list[int]:
        """File descriptors whose readiness should wake an idle machine."""
        return []

    def io_deadline(self) -> float | None:
        """When a request held back by the device's I/O budget may go (host monotonic
        seconds): an idle machine sleeps until then, not longer."""
        return None

    def inflight(self, index: int) -> int:
        """Requests of queue ``index`` taken from the ring but not answered yet (held
        back by a budget, or half served): a snapshot saves the queue as if they had
        not been taken, and the restored device serves them again from the start."""
        return 0

    def close(self) -> None:
        """The VM is going away: release host resources (files, sockets)."""

    # The device's own state (beyond its transport's): a record type, and the record.
    STATE: type[Record] = NoState

    def save(self) -> Record:
        return NoState()

    def restore(self, state: Record) -> None:
        pass

    # -- helpers for subclasses -------------------------------------------------------

    def queue(self, index: int) -> Virtqueue:
        assert self.transport is not None
        return self.transport.queues[index]

    def used_buffers(self, index: int) -> None:
        """Interrupt the driver (if it wants one) after pushing to queue ``index``."""
        if self.transport is not None:
            self.transport.notify_used(index)

    def config_changed(self) -> None:
        if self.transport is not None:
            self.transport.notify_config()

