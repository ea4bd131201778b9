"""The split virtqueue (virtio 1.1, section 2.6), shared by every virtio device.

The driver publishes descriptor chains in the available ring; a device takes them with
:meth:`Virtqueue.pop`, reads its requests from the chain's readable buffers, writes its
replies into the writable ones and returns the chain with :meth:`Virtqueue.push`.
Indirect descriptors and event-index notification suppression are supported.

Everything the driver wrote is hostile: descriptor indices, chain lengths, loops,
addresses and lengths are all checked (GuestDMA checks every buffer against guest RAM),
and a malformed chain raises :class:`VirtqueueError`; the transport then marks the
device DEVICE_NEEDS_RESET for that guest, as the spec prescribes.
"""

from __future__ import annotations

import struct

from ...lightdata import dataclass, field
from ...records import U16, U64, Record, StateError, record
from .dma import DmaError, GuestDMA

VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1

_DESC = struct.Struct("<QIHH")
MAX_CHAIN_BYTES = 1 << 28  # no single request may describe more than 256 MiB
# Buffers in one chain, direct and indirect (QEMU's VIRTQUEUE_MAX_SIZE): what a guest
# can make the device walk per request, whatever size its tables claim.
MAX_CHAIN_DESCRIPTORS = 1024
POP_COST = 256  # budget bytes one chain costs, however little data it moves (see budget)
DESC_COST = 1024  # ... and each of its descriptors (a 1,024-buffer walk: 1 MiB's worth)


class VirtqueueError(Exception):
    """The driver put something malformed in the queue."""


@dataclass
class Chain:
    """One descriptor chain: driver-to-device buffers, then device-to-driver buffers."""

    head: int
    readable: list[tuple[int, int]] = field(default_factory=list)  # (guest addr, length)
    writable: list[tuple[int, int]] = field(default_factory=list)

    @property
    def readable_len(self) -> int:
        return sum(n for _, n in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(n for _, n in self.writable)


class Virtqueue:
    """Device side of one split virtqueue."""

    def __init__(self, dma: GuestDMA, max_size: int = 256) -> None:
        self.dma = dma
        self.max_size = max_size
        # Work left in this round of the machine loop, in bytes moved (the transport
        # refills it each round): when it runs out, pop() says there is nothing more and
        # marks the queue ``deferred``, and the rest is served in later rounds. So a
        # guest cannot make one notify cost the host seconds, whatever it queues.
        self.budget = 1 << 62
        self.deferred = False
        self.reset()

    def reset(self) -> None:
        self.num = self.max_size
        self.ready = False
        self.deferred = False
        self.desc_addr = 0
        self.avail_addr = 0
        self.used_addr = 0
        self.last_avail = 0
        self.used_idx = 0
        self.event_idx = False  # VIRTIO_F_RING_EVENT_IDX negotiated
        self.signalled_used = 0  # used_idx when the driver was last interrupted
        self.signalled_valid = False

    # -- rings ---------------------------------------------------------------------

    def _avail_idx(self) -> int:
        return self.dma.read_u16(self.avail_addr + 2)

    def has_work(self) -> bool:
        return self.ready and self._avail_idx() != self.last_avail

    def pop(self) -> Chain | None:
        """The next available chain, or None. Raises VirtqueueError for a malformed one."""
        if not self.ready:
            return None
        if self.budget <= 0:
            self.deferred = True
            return None
        try:
            avail_idx = self._avail_idx()
            if avail_idx == self.last_avail:
                return None
            if (avail_idx - self.last_avail) & 0xFFFF > self.num:
                raise VirtqueueError(
                    f"available index {avail_idx} is more than {self.num} ahead of "
                    f"{self.last_avail}"
                )
            slot = self.avail_addr + 4 + 2 * (self.last_avail % self.num)
            head = self.dma.read_u16(slot)
            self.last_avail = (self.last_avail + 1) & 0xFFFF
            if self.event_idx:  # avail_event: tell the driver to notify at the next one
                self.dma.write_u16(self.used_addr + 4 + 8 * self.num, self.last_avail)
            self.budget -= POP_COST
            return self._walk(head)
        except DmaError as e:
            raise VirtqueueError(str(e)) from None

    def _walk(self, head: int) -> Chain:
        """The chain at ``head``. An indirect table is read once, whole (a snapshot: the
        driver changing it meanwhile cannot make the walk see two versions), and every
        buffer is checked against guest RAM. Each descriptor costs DESC_COST of the
        round's budget: walking is work too."""
        if head >= self.num:
            raise VirtqueueError(f"descriptor index {head} out of range (queue size {self.num})")
        chain = Chain(head)
        readable, writable = chain.readable, chain.writable
        dma = self.dma
        ram_lo, ram_hi = dma._base, dma._end
        table: bytes | None = None  # the indirect table, once in one
        size = self.num
        index = head
        seen = 0
        total = 0
        walked = 0  # buffers of this chain, direct and indirect
        unpack = _DESC.unpack_from
        try:
            while True:
                seen += 1
                walked += 1
                if seen > size:
                    raise VirtqueueError("descriptor chain loops or is longer than its table")
                if walked > MAX_CHAIN_DESCRIPTORS:
                    raise VirtqueueError(
                        f"descriptor chain longer than {MAX_CHAIN_DESCRIPTORS} descriptors")
                if table is None:
                    addr, length, flags, nxt = _DESC.unpack(dma.read(self.desc_addr + 16 * index,
                                                                     16))
                else:
                    addr, length, flags, nxt = unpack(table, 16 * index)
                if flags & VIRTQ_DESC_F_INDIRECT:
                    if table is not None:
                        raise VirtqueueError("nested indirect descriptor table")
                    if flags & VIRTQ_DESC_F_NEXT:
                        raise VirtqueueError("indirect descriptor with NEXT flag")
                    if length == 0 or length % 16:
                        raise VirtqueueError(
                            f"indirect table length {length} is not a multiple of 16")
                    if length // 16 > MAX_CHAIN_DESCRIPTORS:
                        raise VirtqueueError(f"indirect table of {length // 16} descriptors "
                                             f"(at most {MAX_CHAIN_DESCRIPTORS})")
                    table = dma.read(addr, length)
                    size, index, seen = length // 16, 0, 0
                    walked -= 1  # (buffers are counted, not the pointer to their table)
                    continue
                if length == 0:  # as QEMU: a zero-sized buffer is a malformed request
                    raise VirtqueueError("zero-length descriptor")
                if addr < ram_lo or addr + length > ram_hi:
                    raise VirtqueueError(
                        f"guest buffer {addr:#x}+{length:#x} is outside guest RAM")
                total += length
                if total > MAX_CHAIN_BYTES:
                    raise VirtqueueError("descriptor chain describes more than 256 MiB")
                if flags & VIRTQ_DESC_F_WRITE:
                    writable.append((addr, length))
                else:
                    if writable:
                        raise VirtqueueError("readable descriptor after a writable one")
                    readable.append((addr, length))
                if not flags & VIRTQ_DESC_F_NEXT:
                    return chain
                if nxt >= size:
                    raise VirtqueueError(f"next descriptor {nxt} out of range ({size})")
                index = nxt
        finally:
            self.budget -= DESC_COST * walked

    def push(self, chain: Chain, written: int) -> None:
        """Return a chain to the driver, saying how many bytes were written into it."""
        try:
            slot = self.used_addr + 4 + 8 * (self.used_idx % self.num)
            self.dma.write(slot, struct.pack("<II", chain.head, written))
            self.used_idx = (self.used_idx + 1) & 0xFFFF
            self.dma.write_u16(self.used_addr + 2, self.used_idx)
        except DmaError as e:
            raise VirtqueueError(str(e)) from None

    def needs_interrupt(self) -> bool:
        """Whether the driver wants to hear about the buffers pushed since last time."""
        try:
            if self.event_idx:
                used_event = self.dma.read_u16(self.avail_addr + 4 + 2 * self.num)
                old = self.signalled_used
                new = self.used_idx
                valid = self.signalled_valid
                self.signalled_used = new
                self.signalled_valid = True
                if not valid:
                    return True
                # vring_need_event (virtio 1.1, 2.6.7.2)
                return ((new - used_event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)
            flags = self.dma.read_u16(self.avail_addr)
            return not flags & VIRTQ_AVAIL_F_NO_INTERRUPT
        except DmaError:
            return True

    # -- chain data helpers ------------------------------------------------------------

    def read_chain(self, chain: Chain, limit: int | None = None, skip: int = 0) -> bytes:
        """The readable bytes of a chain from byte ``skip`` (at most ``limit`` of them)."""
        out = bytearray()
        pos = 0
        for addr, length in chain.readable:
            if pos + length <= skip:
                pos += length
                continue
            start = max(0, skip - pos)
            pos += length
            length -= start
            if limit is not None:
                length = min(length, limit - len(out))
                if length <= 0:
                    break
            out += self.dma.read(addr + start, length)
        self.budget -= len(out)
        return bytes(out)

    def write_chain(self, chain: Chain, data: bytes, skip: int = 0) -> int:
        """Write ``data`` into the chain's writable buffers from byte ``skip``; return the
        number of bytes written (less than len(data) if the buffers are too small)."""
        done = 0
        pos = 0
        view = memoryview(data)  # (pieces without copies: a 1 MiB read is 256 of them)
        for addr, length in chain.writable:
            if pos + length <= skip:
                pos += length
                continue
            start = max(0, skip - pos)
            room = length - start
            piece = view[done : done + room]
            if piece:
                self.dma.write(addr + start, piece)
                done += len(piece)
            pos += length
            if done >= len(data):
                break
        self.budget -= done
        return done

    def save(self, inflight: int = 0) -> QueueState:
        """The queue's state; ``inflight`` requests popped but not pushed are saved as
        still in the ring (the device serves them again after a restore)."""
        return QueueState(self.num, self.ready, self.desc_addr, self.avail_addr,
                          self.used_addr, (self.last_avail - inflight) & 0xFFFF,
                          self.used_idx, self.event_idx, self.signalled_used,
                          self.signalled_valid)

    def restore(self, state: QueueState) -> None:
        if not 1 <= state.num <= self.max_size:
            raise StateError(f"virtqueue: size {state.num}, at most {self.max_size} here")
        self.num = state.num
        self.ready = state.ready
        self.desc_addr = state.desc_addr
        self.avail_addr = state.avail_addr
        self.used_addr = state.used_addr
        self.last_avail = state.last_avail
        self.used_idx = state.used_idx
        self.event_idx = state.event_idx
        self.signalled_used = state.signalled_used
        self.signalled_valid = state.signalled_valid
        self.deferred = False


@record
class QueueState(Record):
    """A split virtqueue as the driver set it up, and how far the device got (the ring
    addresses are checked when used, as on every request)."""

    num: U16
    ready: bool
    desc_addr: U64
    avail_addr: U64
    used_addr: U64
    last_avail: U16
    used_idx: U16
    event_idx: bool
    signalled_used: U16
    signalled_valid: bool
