"""virtio-blk (virtio 1.1, section 5.2): a disk backed by a host file.

Requests are handled synchronously when the driver notifies the queue: read the 16-byte
header, move the data between guest buffers and the backend (block_backend.py), write
the status byte. A request that is malformed, out of range or not sector aligned fails
with VIRTIO_BLK_S_IOERR for that request only; a broken chain resets the device.
FLUSH reaches the host disk (fsync), so a guest's `sync` really persists its data.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Iterator
from typing import Annotated

from ...records import U64, MaxLen, Record, record
from ..io_budget import IoBudget, Limits
from .block_backend import DiskBackend, DiskError, check_request
from .device import VIRTIO_ID_BLOCK, VirtioDevice
from .queue import Chain, Virtqueue

SECTOR = 512

VIRTIO_BLK_F_SEG_MAX = 1 << 2
VIRTIO_BLK_F_RO = 1 << 5
VIRTIO_BLK_F_BLK_SIZE = 1 << 6
VIRTIO_BLK_F_FLUSH = 1 << 9

VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8

VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

SEG_MAX = 126  # data segments per request (queue size 128 minus header and status)
_HEADER = struct.Struct("<IIQ")


IO_CHUNK = 1 << 20  # bytes read or written per step of one request


class VirtioBlk(VirtioDevice):
    device_id = VIRTIO_ID_BLOCK
    num_queues = 1
    queue_max_size = 128
    name = "virtio-blk"

    def __init__(self, disk: DiskBackend, serial: bytes | None = None,
                 limits: Limits | None = None) -> None:
        super().__init__()
        self.disk = disk
        # bytes/s and requests/s the guest may use (devices/io_budget.py); a request
        # that must wait is held here, taken from the ring, until its tokens are there
        self.budget = IoBudget(limits or Limits())
        self._held: Chain | None = None
        self.serial = serial  # GET_ID's answer (QEMU's serial=); None: from the disk file
        self.stats = {"reads": 0, "writes": 0, "flushes": 0, "read_bytes": 0,
                      "write_bytes": 0, "errors": 0, "throttled": 0, "throttled_ms": 0,
                      "throttled_bytes": 0}
        # The request being served, when the queue's work budget ran out in its middle:
        # (its chain, the steps left: a generator that moves IO_CHUNK bytes per step).
        self._current: tuple[Chain, Iterator[None]] | None = None

    def device_features(self) -> int:
        features = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH
        if self.disk.read_only:
            features |= VIRTIO_BLK_F_RO
        return features

    def config_bytes(self) -> bytes:
        capacity = self.disk.size // SECTOR
        # capacity, size_max, seg_max, geometry (c, h, s), blk_size
        return struct.pack("<QIIHBBI", capacity, 0, SEG_MAX, 0, 0, 0, SECTOR)

    def queue_notify(self, index: int, queue: Virtqueue) -> None:
        """Serve requests while the round's work budget lasts; a large request (up to a
        chain's 256 MiB) is served in IO_CHUNK steps, carried over to the next rounds
        if need be, so no round waits long for the disk."""
        pushed = False
        while True:
            if self._current is None:
                chain = self._held if self._held is not None else queue.pop()
                if chain is None:
                    break
                self._held = None
                wait = self.budget.admit(self._cost(queue, chain))
                self.stats["throttled"] = self.budget.throttled
                self.stats["throttled_ms"] = int(self.budget.throttled_seconds * 1000)
                self.stats["throttled_bytes"] = self.budget.throttled_bytes
                if wait > 0:
                    self._held = chain  # on when the budget allows (poll)
                    break
                self._current = (chain, self._request(queue, chain))
            chain, steps = self._current
            try:
                while queue.budget > 0:
                    next(steps)
            except StopIteration as done:
                self._current = None
                queue.push(chain, done.value)
                pushed = True
                continue
            queue.deferred = True  # the rest of this request in the next round
            break
        if pushed:
            self.used_buffers(index)

    def reset(self) -> None:
        self._current = None
        self._held = None

    def _cost(self, queue: Virtqueue, chain: Chain) -> int:
        """The bytes a request moves (what the byte budget counts)."""
        header = queue.read_chain(chain, _HEADER.size)
        if len(header) < _HEADER.size:
            return 0
        rtype = _HEADER.unpack(header)[0]
        if rtype == VIRTIO_BLK_T_IN:
            return max(0, chain.writable_len - 1)
        if rtype == VIRTIO_BLK_T_OUT:
            return max(0, chain.readable_len - _HEADER.size)
        return 0

    def poll(self) -> None:
        if self._held is not None and self.budget.due() and self.transport is not None:
            self.queue_notify(0, self.queue(0))

    def io_deadline(self) -> float | None:
        return self.budget.next_deadline() if self._held is not None else None

    def inflight(self, index: int) -> int:
        return int(self._held is not None or self._current is not None)

    def set_limits(self, limits: Limits) -> None:
        """New I/O terms, at once (a held request is tried again at the next poll)."""
        self.budget.change(limits)
        if self._held is not None and self.transport is not None:
            self.queue(0).deferred = True

    def _request(self, queue: Virtqueue, chain: Chain) -> Generator[None, None, int]:
        """Serve one request, a step (yield) per IO_CHUNK; return the number of bytes
        written into the chain."""
        if not chain.writable or chain.writable[-1][1] < 1:
            # No room for a status byte: nothing sensible can be reported.
            self.stats["errors"] += 1
            return 0
        status_addr = chain.writable[-1][0] + chain.writable[-1][1] - 1
        header = queue.read_chain(chain, _HEADER.size)
        if len(header) < _HEADER.size:
            return self._finish(queue, status_addr, VIRTIO_BLK_S_IOERR, 0)
        rtype, _reserved, sector = _HEADER.unpack(header)
        data_in = chain.writable_len - 1  # writable bytes before the status byte
        try:
            if rtype == VIRTIO_BLK_T_IN:
                if data_in % SECTOR:
                    raise DiskError(f"read of {data_in} bytes is not whole sectors")
                # In pieces: a request may be as large as a chain (256 MiB), and the
                # host's memory must not grow with what a guest asks for. The whole
                # request is checked first: one beyond the disk's end moves nothing.
                check_request(self.disk.path, self.disk.size, sector * SECTOR, data_in)
                for done in range(0, data_in, IO_CHUNK):
                    n = min(IO_CHUNK, data_in - done)
                    queue.write_chain(chain, self.disk.read(sector * SECTOR + done, n), done)
                    yield
                self.stats["reads"] += 1
                self.stats["read_bytes"] += data_in
                return self._finish(queue, status_addr, VIRTIO_BLK_S_OK, data_in)
            if rtype == VIRTIO_BLK_T_OUT:
                size = chain.readable_len - _HEADER.size
                if self.disk.read_only:
                    return self._finish(queue, status_addr, VIRTIO_BLK_S_IOERR, 0)
                if size % SECTOR:
                    raise DiskError(f"write of {size} bytes is not whole sectors")
                check_request(self.disk.path, self.disk.size, sector * SECTOR, size)
                for done in range(0, size, IO_CHUNK):
                    data = queue.read_chain(chain, min(IO_CHUNK, size - done),
                                            _HEADER.size + done)
                    self.disk.write(sector * SECTOR + done, data)
                    yield
                self.stats["writes"] += 1
                self.stats["write_bytes"] += size
                return self._finish(queue, status_addr, VIRTIO_BLK_S_OK, 0)
            if rtype == VIRTIO_BLK_T_FLUSH:
                if not self.disk.read_only:
                    self.disk.flush()
                self.stats["flushes"] += 1
                return self._finish(queue, status_addr, VIRTIO_BLK_S_OK, 0)
            if rtype == VIRTIO_BLK_T_GET_ID:
                ident = (self.serial if self.serial is not None
                         else self.disk.device_id())[:20].ljust(20, b"\0")
                n = min(20, data_in)
                queue.write_chain(chain, ident[:n])
                return self._finish(queue, status_addr, VIRTIO_BLK_S_OK, n)
        except DiskError:
            self.stats["errors"] += 1
            return self._finish(queue, status_addr, VIRTIO_BLK_S_IOERR, 0)
        return self._finish(queue, status_addr, VIRTIO_BLK_S_UNSUPP, 0)

    def _finish(self, queue: Virtqueue, status_addr: int, status: int, data: int) -> int:
        queue.dma.write(status_addr, bytes((status,)))
        return data + 1

    def close(self) -> None:
        self.disk.close()

    def save(self) -> BlkState:
        return BlkState(dict(self.stats))

    def restore(self, state: Record) -> None:
        assert isinstance(state, BlkState)
        self.stats.update({k: v for k, v in state.stats.items() if k in self.stats})


@record
class BlkState(Record):
    """The disk's request counters (its blocks are in its file, flushed at a snapshot)."""

    stats: Annotated[dict[str, U64], MaxLen(64)]


VirtioBlk.STATE = BlkState
