"""The virtio-mmio transport, version 2 ("modern", virtio 1.1 section 4.2).

One transport serves every device model: it owns the registers, feature negotiation,
the queues and the interrupt. A slot with no device reads DeviceID 0, so the driver
skips it, exactly as on QEMU's virt board. A driver that breaks the rules (a malformed
descriptor chain, a queue outside RAM) gets DEVICE_NEEDS_RESET and a configuration-change
interrupt for that device; nothing reaches the host.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

from ...records import U8, U32, U64, MaxLen, Record, StateError, record
from ..base import Device, IrqLine
from .device import (
    VIRTIO_F_RING_EVENT_IDX,
    VIRTIO_F_RING_INDIRECT_DESC,
    VIRTIO_F_VERSION_1,
    VirtioDevice,
)
from .dma import DmaError, GuestDMA
from .queue import QueueState, Virtqueue, VirtqueueError

if TYPE_CHECKING:
    import logging


def _log() -> logging.Logger:
    """This module's logger; ``logging`` is imported only where something is logged
    (~8 ms of every run's start otherwise)."""
    import logging

    return logging.getLogger(__name__)
LOG_BURST = 5  # malformed requests logged per device and LOG_WINDOW (see fail)
LOG_WINDOW = 10.0  # seconds

MAGIC = 0x74726976  # "virt"
VENDOR_QEMU = 0x554D4551  # "QEMU": what QEMU's virt board reports

# Registers
MAGIC_VALUE, VERSION, DEVICE_ID, VENDOR_ID = 0x000, 0x004, 0x008, 0x00C
DEVICE_FEATURES, DEVICE_FEATURES_SEL = 0x010, 0x014
DRIVER_FEATURES, DRIVER_FEATURES_SEL = 0x020, 0x024
QUEUE_SEL, QUEUE_NUM_MAX, QUEUE_NUM, QUEUE_READY = 0x030, 0x034, 0x038, 0x044
QUEUE_NOTIFY = 0x050
INTERRUPT_STATUS, INTERRUPT_ACK = 0x060, 0x064
STATUS = 0x070
QUEUE_DESC_LOW, QUEUE_DESC_HIGH = 0x080, 0x084
QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH = 0x090, 0x094
QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH = 0x0A0, 0x0A4
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100

# Status bits
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK = 1, 2, 4, 8
DEVICE_NEEDS_RESET, FAILED = 64, 128

INT_USED_BUFFER, INT_CONFIG_CHANGE = 1, 2

TRANSPORT_FEATURES = VIRTIO_F_VERSION_1 | VIRTIO_F_RING_INDIRECT_DESC | VIRTIO_F_RING_EVENT_IDX


class VirtioMmio(Device):
    """One virtio-mmio window (0x1000 bytes) with an optional device behind it."""

    size = 0x1000
    native_access = True  # (see Device)

    def __init__(self, irq: IrqLine, dma: GuestDMA, device: VirtioDevice | None = None) -> None:
        self.irq = irq
        self.dma = dma
        self.device = device
        self.name = f"virtio-mmio ({device.name if device else 'empty'})"
        nq = device.num_queues if device else 0
        qmax = device.queue_max_size if device else 0
        self.queues = [Virtqueue(dma, qmax) for _ in range(nq)]
        for q in self.queues:
            q.budget = device.round_bytes if device is not None else 0
        if device is not None:
            device.transport = self
        self.errors = 0  # malformed requests seen (for metrics and tests)
        self._log_window = -LOG_WINDOW  # see fail()
        self._log_count = 0
        self._log_suppressed = 0
        self._reset_registers()

    def _reset_registers(self) -> None:
        self.status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        self.interrupt_status = 0
        self.config_generation = 0
        for q in self.queues:
            q.reset()
        self.irq.set(False)

    def reset(self) -> None:
        self._reset_registers()
        if self.device is not None:
            self.device.driver_features = 0
            self.device.reset()

    # -- features --------------------------------------------------------------------

    def offered_features(self) -> int:
        if self.device is None:
            return 0
        return self.device.device_features() | TRANSPORT_FEATURES

    # -- interrupts ------------------------------------------------------------------------

    def notify_used(self, index: int) -> None:
        q = self.queues[index]
        if q.needs_interrupt():
            self.interrupt_status |= INT_USED_BUFFER
            self.irq.set(True)

    def notify_config(self) -> None:
        self.config_generation = (self.config_generation + 1) & 0xFFFFFFFF
        if self.status & DRIVER_OK or self.status & DEVICE_NEEDS_RESET:
            self.interrupt_status |= INT_CONFIG_CHANGE
            self.irq.set(True)

    def fail(self, reason: str) -> None:
        """The driver broke the protocol: DEVICE_NEEDS_RESET (virtio 1.1, 2.1.2). Logged
        at most LOG_BURST times per LOG_WINDOW seconds per device (then counted): a
        guest that breaks it in a loop must not flood the host's logs."""
        self.errors += 1
        now = time.monotonic()
        if now - self._log_window >= LOG_WINDOW:
            if self._log_suppressed:
                _log().warning("%s: %d more malformed requests (not logged)", self.name,
                            self._log_suppressed)
            self._log_window, self._log_count, self._log_suppressed = now, 0, 0
        if self._log_count < LOG_BURST:
            self._log_count += 1
            _log().warning("%s: %s", self.name, reason)
        else:
            self._log_suppressed += 1
        if not self.status & DEVICE_NEEDS_RESET:
            self.status |= DEVICE_NEEDS_RESET
            self.notify_config()

    # -- registers ---------------------------------------------------------------------------

    def _q(self) -> Virtqueue | None:
        if 0 <= self.queue_sel < len(self.queues):
            return self.queues[self.queue_sel]
        return None

    def read(self, offset: int, size: int) -> int:
        dev = self.device
        if offset >= CONFIG:
            if dev is None:
                return 0
            cfg = dev.config_bytes()
            start = offset - CONFIG
            if start + size > len(cfg):
                return 0
            return int.from_bytes(cfg[start : start + size], "little")
        if size != 4 or offset & 3:
            return 0
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION:
            return 2
        if offset == DEVICE_ID:
            return dev.device_id if dev else 0
        if offset == VENDOR_ID:
            return VENDOR_QEMU
        if dev is None:
            return 0
        if offset == DEVICE_FEATURES:
            if self.device_features_sel > 1:
                return 0
            return (self.offered_features() >> (32 * self.device_features_sel)) & 0xFFFFFFFF
        q = self._q()
        if offset == QUEUE_NUM_MAX:
            return q.max_size if q else 0
        if offset == QUEUE_READY:
            return int(q.ready) if q else 0
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return self.status
        if offset == CONFIG_GENERATION:
            return self.config_generation
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        dev = self.device
        if dev is None:
            return
        if offset >= CONFIG:
            if self.status & DRIVER_OK or self.status & DRIVER:
                mask = (1 << (8 * size)) - 1
                dev.config_write(offset - CONFIG, (value & mask).to_bytes(size, "little"))
            return
        if size != 4 or offset & 3:
            return
        q = self._q()
        if offset == DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == DRIVER_FEATURES:
            if self.status & FEATURES_OK or self.driver_features_sel > 1:
                return  # features are frozen once accepted
            shift = 32 * self.driver_features_sel
            self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | (
                value << shift
            )
        elif offset == QUEUE_SEL:
            self.queue_sel = value
        elif offset == QUEUE_NUM:
            if q is not None and not q.ready and 0 < value <= q.max_size:
                q.num = value
        elif offset == QUEUE_READY:
            if q is not None:
                if value & 1:
                    q.event_idx = bool(self.driver_features & VIRTIO_F_RING_EVENT_IDX)
                    if not self._queue_in_ram(q):
                        self.fail(f"queue {self.queue_sel} rings lie outside guest RAM")
                        return
                q.ready = bool(value & 1)
        elif offset == QUEUE_NOTIFY:
            self._notify(value & 0xFFFF)
        elif offset == INTERRUPT_ACK:
            self.interrupt_status &= ~value
            if not self.interrupt_status:
                self.irq.set(False)
        elif offset == STATUS:
            self._write_status(value & 0xFF)
        elif q is not None and not q.ready:
            self._queue_address(q, offset, value)

    def _queue_address(self, q: Virtqueue, offset: int, value: int) -> None:
        lo = 0xFFFFFFFF
        if offset == QUEUE_DESC_LOW:
            q.desc_addr = (q.desc_addr & ~lo) | value
        elif offset == QUEUE_DESC_HIGH:
            q.desc_addr = (q.desc_addr & lo) | value << 32
        elif offset == QUEUE_DRIVER_LOW:
            q.avail_addr = (q.avail_addr & ~lo) | value
        elif offset == QUEUE_DRIVER_HIGH:
            q.avail_addr = (q.avail_addr & lo) | value << 32
        elif offset == QUEUE_DEVICE_LOW:
            q.used_addr = (q.used_addr & ~lo) | value
        elif offset == QUEUE_DEVICE_HIGH:
            q.used_addr = (q.used_addr & lo) | value << 32

    def _queue_in_ram(self, q: Virtqueue) -> bool:
        extra = 2 if self.driver_features & VIRTIO_F_RING_EVENT_IDX else 0
        try:
            self.dma.check(q.desc_addr, 16 * q.num)
            self.dma.check(q.avail_addr, 4 + 2 * q.num + extra)
            self.dma.check(q.used_addr, 4 + 8 * q.num + extra)
        except DmaError:
            return False
        return True

    def _write_status(self, value: int) -> None:
        dev = self.device
        assert dev is not None
        if value == 0:
            self.reset()
            return
        if value & FEATURES_OK and not self.status & FEATURES_OK:
            accepted = self.driver_features
            # Features it was not offered are refused. A driver that leaves VERSION_1 out
            # (one that writes only the low 32 feature bits, never selecting the high
            # word) is accepted, as QEMU 7.2's modern virtio-mmio does; the devices then
            # use the legacy layouts where they differ (virtio-net's 10-byte header).
            if accepted & ~self.offered_features():
                value &= ~FEATURES_OK  # refuse: the driver sees FEATURES_OK clear
            else:
                dev.driver_features = accepted
        was_ok = self.status & DRIVER_OK
        self.status = value | (self.status & DEVICE_NEEDS_RESET)
        if value & DRIVER_OK and not was_ok:
            try:
                dev.activate()
                # Drivers may post buffers and notify before DRIVER_OK (Linux's balloon
                # posts its stats buffer during probe): serve what is already queued.
                for index, q in enumerate(self.queues):
                    if q.ready and q.has_work():
                        dev.queue_notify(index, q)
            except (VirtqueueError, DmaError) as e:
                self.fail(str(e))

    def _notify(self, index: int) -> None:
        dev = self.device
        if dev is None or not 0 <= index < len(self.queues):
            return
        if not self.status & DRIVER_OK or self.status & DEVICE_NEEDS_RESET:
            return
        q = self.queues[index]
        if not q.ready:
            return
        try:
            dev.queue_notify(index, q)
        except (VirtqueueError, DmaError) as e:
            self.fail(f"queue {index}: {e}")

    @property
    def busy(self) -> bool:
        """Whether a queue has work left over from a round whose budget ran out."""
        return any(q.deferred for q in self.queues)

    def poll(self) -> None:
        """Once per round of the machine loop: refill the queues' work budgets, serve
        what earlier rounds left over, then the device's host-side events."""
        dev = self.device
        if dev is None:
            return
        for q in self.queues:
            q.budget = dev.round_bytes
        if not self.status & DRIVER_OK or self.status & DEVICE_NEEDS_RESET:
            return
        try:
            for index, q in enumerate(self.queues):
                if q.deferred:
                    q.deferred = False
                    if q.ready:
                        dev.queue_notify(index, q)
            dev.poll()
        except (VirtqueueError, DmaError) as e:
            self.fail(str(e))

    def save(self) -> TransportState:
        """The transport's registers and queues (the device's own state is its
        device's ``save``: a snapshot keeps the two in separate sections)."""
        return TransportState(self.status, self.driver_features, self.interrupt_status,
                              self.config_generation, self.device_features_sel,
                              self.driver_features_sel, self.queue_sel,
                              [q.save(self.device.inflight(i) if self.device else 0)
                               for i, q in enumerate(self.queues)])

    def restore(self, state: TransportState) -> None:
        if len(state.queues) != len(self.queues):
            raise StateError(f"{self.name}: {len(state.queues)} queues saved, "
                             f"{len(self.queues)} here")
        if state.driver_features & ~self.offered_features():
            raise StateError(f"{self.name}: features the device does not offer")
        for q, qs in zip(self.queues, state.queues, strict=True):
            q.restore(qs)
        self.status = state.status
        self.driver_features = state.driver_features
        self.interrupt_status = state.interrupt_status
        self.config_generation = state.config_generation
        self.device_features_sel = state.device_features_sel
        self.driver_features_sel = state.driver_features_sel
        self.queue_sel = state.queue_sel
        if self.device is not None:
            self.device.driver_features = self.driver_features
        for q in self.queues:
            # look at each ready ring at the next poll: a request saved as not yet taken
            # (Virtqueue.save's inflight) was notified before the snapshot, not after
            q.deferred = q.ready
        self.irq.set(bool(self.interrupt_status))


@record
class TransportState(Record):
    """A virtio-mmio window's registers and its queues."""

    status: U8
    driver_features: U64
    interrupt_status: U32
    config_generation: U32
    device_features_sel: U32
    driver_features_sel: U32
    queue_sel: U32
    queues: Annotated[list[QueueState], MaxLen(64)]
