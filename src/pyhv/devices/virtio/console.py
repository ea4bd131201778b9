"""virtio-console (virtio 1.1, section 5.3): a paravirtual console, the guest's /dev/hvc0.

Why a second console next to the 16550 UART: a virtqueue moves a whole buffer per
notification instead of one MMIO trap per character, so guest output is cheap, and it
needs no baud-rate emulation. One port and no VIRTIO_CONSOLE_F_MULTIPORT keeps the
device to its two data queues; Linux binds it to hvc0 all the same.

- transmitq (queue 1): the driver's readable buffers are handed to ``output(bytes)``.
  Linux busy-waits for each transmit buffer to come back, so it is served synchronously
  in the notification.
- receiveq (queue 0): host input from :meth:`VirtioConsole.send` (or an optional
  ``input_source`` polled by the machine loop) waits in a bounded buffer until the
  driver has posted writable buffers, then fills them. Input beyond the bound is
  dropped and counted rather than letting a stalled guest grow host memory.
- VIRTIO_CONSOLE_F_EMERG_WRITE: a driver write to ``emerg_wr`` prints one character
  without any queue, which works before the driver is set up and after it has crashed.
- VIRTIO_CONSOLE_F_SIZE is offered only when the host gives a size.

Host-side methods (:meth:`send`, :meth:`resize`) must be called from the thread that
runs the machine; another thread hands input over through ``input_source`` instead.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Annotated, Any

from ...records import U16, U64, MaxLen, Record, record
from .device import VIRTIO_ID_CONSOLE, VirtioDevice
from .dma import DmaError
from .mmio import DEVICE_NEEDS_RESET, DRIVER_OK
from .queue import Virtqueue, VirtqueueError

log = logging.getLogger(__name__)

VIRTIO_CONSOLE_F_SIZE = 1 << 0
VIRTIO_CONSOLE_F_MULTIPORT = 1 << 1  # not offered
VIRTIO_CONSOLE_F_EMERG_WRITE = 1 << 2

RECEIVEQ = 0
TRANSMITQ = 1

EMERG_WR_OFFSET = 8
MAX_PENDING_INPUT = 64 * 1024  # host bytes held while the guest posts no receive buffers
MAX_TX_CHAIN = 1 << 20  # bytes of one transmit request that reach the output (Linux: a page)
OUTPUT_CHUNK = 64 * 1024  # transmit data reaches ``output`` in pieces of at most this

_CONFIG = struct.Struct("<HHII")  # cols, rows, max_nr_ports, emerg_wr


class VirtioConsole(VirtioDevice):
    device_id = VIRTIO_ID_CONSOLE
    num_queues = 2
    name = "virtio-console"

    def __init__(
        self,
        output: Callable[[bytes], Any],
        input_source: Callable[[], bytes | None] | None = None,
        *,
        size: tuple[int, int] | None = None,
        input_fd: int | None = None,
    ) -> None:
        """``output`` receives what the guest writes; ``input_source`` (optional) is
        called from :meth:`poll` and returns host input (b"" or None when there is none);
        ``size`` = (cols, rows) offers VIRTIO_CONSOLE_F_SIZE; ``input_fd`` is reported by
        :meth:`wait_fds` so that input wakes an idle machine."""
        super().__init__()
        self.output = output
        self.input_source = input_source
        self.input_fd = input_fd
        self.size = size
        self.pending = bytearray()  # host input not yet delivered to the guest
        self.stats = {"tx_bytes": 0, "rx_bytes": 0, "rx_dropped": 0, "emerg_bytes": 0,
                      "output_errors": 0, "tx_dropped": 0}

    # -- VirtioDevice ---------------------------------------------------------------------

    def device_features(self) -> int:
        features = VIRTIO_CONSOLE_F_EMERG_WRITE
        if self.size is not None:
            features |= VIRTIO_CONSOLE_F_SIZE
        return features

    def config_bytes(self) -> bytes:
        cols, rows = self.size if self.size is not None else (0, 0)
        return _CONFIG.pack(cols & 0xFFFF, rows & 0xFFFF, 1, 0)

    def config_write(self, offset: int, data: bytes) -> None:
        # Only emerg_wr is driver-writable; whatever width the write has, the byte that
        # lands on emerg_wr's first byte is the character.
        if offset <= EMERG_WR_OFFSET < offset + len(data):
            self.stats["emerg_bytes"] += 1
            self._output(bytes((data[EMERG_WR_OFFSET - offset],)))

    def queue_notify(self, index: int, queue: Virtqueue) -> None:
        if index == TRANSMITQ:
            self._transmit(queue)
        elif index == RECEIVEQ:
            self._deliver()

    def activate(self) -> None:
        # Input that arrived before DRIVER_OK goes out now if buffers are already posted
        # (a driver may post and notify before DRIVER_OK; that notification is dropped).
        self._deliver_guarded()

    def poll(self) -> None:
        if self.input_source is not None:
            try:
                data = self.input_source()
            except OSError as e:  # a host pipe that went away: no more input
                log.debug("%s: input failed: %s", self.name, e)
                data = None
            if data:
                self._enqueue(data)
        self._deliver()

    def wait_fds(self) -> list[int]:
        return [] if self.input_fd is None else [self.input_fd]

    def reset(self) -> None:
        # Host input that has not reached the guest stays queued for the next driver.
        pass

    def save(self) -> ConsoleState:
        return ConsoleState(bytes(self.pending), dict(self.stats),
                            list(self.size) if self.size is not None else None)

    def restore(self, state: Record) -> None:
        assert isinstance(state, ConsoleState)
        self.pending = bytearray(state.pending)
        self.stats.update({k: v for k, v in state.stats.items() if k in self.stats})
        size = state.size
        self.size = (size[0], size[1]) if size and len(size) == 2 else None

    # -- host side ----------------------------------------------------------------------------

    def send(self, data: bytes) -> int:
        """Queue host input for the guest; deliver it now if the driver has buffers
        posted. Returns the number of bytes accepted (the rest is dropped and counted)."""
        accepted = self._enqueue(data)
        self._deliver_guarded()
        return accepted

    def resize(self, cols: int, rows: int) -> None:
        """Change the console size (only meaningful when constructed with ``size``)."""
        if self.size is None:
            return
        self.size = (cols & 0xFFFF, rows & 0xFFFF)
        self.config_changed()

    @property
    def pending_input(self) -> int:
        return len(self.pending)

    # -- internals -------------------------------------------------------------------------

    def _enqueue(self, data: bytes) -> int:
        room = MAX_PENDING_INPUT - len(self.pending)
        take = min(len(data), max(room, 0))
        if take:
            self.pending += data[:take]
        self.stats["rx_dropped"] += len(data) - take
        return take

    def _output(self, data: bytes) -> None:
        try:
            self.output(data)
        except OSError as e:  # a closed host pipe must not take the guest down
            self.stats["output_errors"] += 1
            log.debug("%s: output failed: %s", self.name, e)

    def _transmit(self, queue: Virtqueue) -> None:
        pushed = False
        while (chain := queue.pop()) is not None:
            left = MAX_TX_CHAIN  # beyond it, a chain's bytes are counted and dropped
            for addr, length in chain.readable:
                for off in range(0, min(length, left), OUTPUT_CHUNK):
                    piece = queue.dma.read(addr + off, min(OUTPUT_CHUNK, length - off, left))
                    left -= len(piece)
                    queue.budget -= len(piece)
                    self.stats["tx_bytes"] += len(piece)
                    self._output(piece)
            self.stats["tx_dropped"] += max(0, chain.readable_len - MAX_TX_CHAIN)
            queue.push(chain, 0)
            pushed = True
        if pushed:
            self.used_buffers(TRANSMITQ)

    def _live(self) -> bool:
        """Whether the receive queue may be used now (driver up, queue set up, no error)."""
        t = self.transport
        if t is None:
            return False
        return (bool(t.status & DRIVER_OK) and not t.status & DEVICE_NEEDS_RESET
                and t.queues[RECEIVEQ].ready)

    def _deliver(self) -> None:
        """Fill posted receive buffers with pending input. Raises VirtqueueError/DmaError
        for a malformed queue (the transport's callers turn that into DEVICE_NEEDS_RESET)."""
        if not self.pending or not self._live():
            return
        queue = self.queue(RECEIVEQ)
        pushed = False
        # Only pop while there is input: a popped chain cannot be given back unused.
        while self.pending and (chain := queue.pop()) is not None:
            written = queue.write_chain(chain, bytes(self.pending)) if chain.writable else 0
            del self.pending[:written]
            self.stats["rx_bytes"] += written
            queue.push(chain, written)
            pushed = True
        if pushed:
            self.used_buffers(RECEIVEQ)

    def _deliver_guarded(self) -> None:
        """_deliver() from a path the transport does not guard (host calls, activate)."""
        try:
            self._deliver()
        except (VirtqueueError, DmaError) as e:
            assert self.transport is not None
            self.transport.fail(f"queue {RECEIVEQ}: {e}")


@record
class ConsoleState(Record):
    """Host input not yet taken by the guest, the counters, the console's size."""

    pending: Annotated[bytes, MaxLen(MAX_PENDING_INPUT)]
    stats: Annotated[dict[str, U64], MaxLen(64)]
    size: Annotated[list[U16], MaxLen(2)] | None


VirtioConsole.STATE = ConsoleState
