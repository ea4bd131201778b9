"""virtio-balloon (virtio 1.1, section 5.5): take memory back from a running guest.

Why: a VM's RAM is one mmap sized at boot (memory/ram.py) and never grows, but a guest
that no longer needs all of it can hand pages back. The host sets a target
(:meth:`VirtioBalloon.set_target`, a configuration-change interrupt tells the driver),
the guest driver allocates that many pages and lists their page frame numbers on the
inflate queue, and the device releases the host memory behind each one (``page_release``,
by default ``madvise(MADV_DONTNEED)`` via :func:`madvise_release`), so the host gets the
memory back while the mapping, and the VM's fixed ceiling, stay as they were. A page the
guest touches again simply reads as zeros. Deflating lists pages the guest takes back.

Every PFN is guest data and hostile: it is a 4 KiB page frame number of a guest physical
address (u32, little endian), and one that does not lie inside guest RAM is ignored and
counted; nothing outside the RAM window is ever released. Inflated pages are kept in a
bitmap, so a PFN listed twice counts once and deflating a page never inflated does not
make the count go negative.

Offered features: VIRTIO_BALLOON_F_STATS_VQ (the driver keeps one buffer of le16 tag /
le64 value pairs on the stats queue; the device holds it and returns it when the host
calls :meth:`~VirtioBalloon.request_stats`, and the driver refills it, as QEMU does) and
VIRTIO_BALLOON_F_DEFLATE_ON_OOM (the guest may deflate under memory pressure rather
than fail). Host-side methods must be called from the thread that runs the machine.
"""

from __future__ import annotations

import logging
import mmap
import struct
import sys
from array import array
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from ...records import U16, U32, U64, MaxLen, Record, StateError, record
from .device import VIRTIO_ID_BALLOON, VirtioDevice
from .dma import DmaError
from .mmio import DEVICE_NEEDS_RESET, DRIVER_OK
from .queue import Chain, Virtqueue, VirtqueueError

log = logging.getLogger(__name__)

VIRTIO_BALLOON_F_MUST_TELL_HOST = 1 << 0  # not offered
VIRTIO_BALLOON_F_STATS_VQ = 1 << 1
VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 1 << 2

INFLATEQ, DEFLATEQ, STATSQ = 0, 1, 2

PAGE_SHIFT = 12  # VIRTIO_BALLOON_PFN_SHIFT: balloon pages are 4 KiB whatever the guest uses
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PFN_BYTES = 64 * 1024  # PFN list bytes read per request (Linux sends at most 1 KiB)
MAX_STATS_BYTES = 4096  # stats bytes read per report (Linux sends ~100)

STAT_NAMES = {
    0: "swap_in",
    1: "swap_out",
    2: "major_faults",
    3: "minor_faults",
    4: "free_memory",
    5: "total_memory",
    6: "available_memory",
    7: "disk_caches",
    8: "hugetlb_allocations",
    9: "hugetlb_failures",
    # Newer Linux (VIRTIO_BALLOON_S_OOM_KILL ...); unknown tags are kept as "tag_<n>".
    10: "oom_kills",
    11: "alloc_stalls",
    12: "async_scans",
    13: "direct_scans",
    14: "async_reclaims",
    15: "direct_reclaims",
}

_CONFIG = struct.Struct("<II")  # num_pages, actual
_STAT = struct.Struct("<HQ")  # packed: 10 bytes


class RamLike(Protocol):
    base: int
    size: int


PageRelease = Callable[[int], object]


def madvise_release(ram: Any) -> PageRelease:
    """A ``page_release`` for an mmap'ed GuestRAM: ``madvise(MADV_DONTNEED)`` on the
    4 KiB page of the given PFN, so the host frees it and the guest later reads zeros.

    The returned callable returns True when the page was released and False when it
    could not be (PFN outside RAM, RAM closed, no madvise on this platform, or a host
    page larger than 4 KiB, where a single guest page cannot be dropped); it never
    raises. (For a shared, file- or memfd-backed RAM, MADV_DONTNEED would not free the
    memory; such a RAM needs MADV_REMOVE instead.)
    """
    buf = getattr(ram, "buf", None)
    madvise = getattr(buf, "madvise", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    base, size = ram.base, ram.size

    if madvise is None or advice is None:
        def unsupported(pfn: int) -> bool:
            return False

        return unsupported

    def release(pfn: int) -> bool:
        off = (pfn << PAGE_SHIFT) - base
        if off < 0 or off + PAGE_SIZE > size:
            return False
        try:
            madvise(advice, off, PAGE_SIZE)
        except (OSError, ValueError):
            return False
        return True

    return release


def _u32s(data: bytes) -> array:
    words = array("I")
    if words.itemsize != 4:  # pragma: no cover - every supported host has 32-bit "I"
        words = array("L")
    words.frombytes(data[: len(data) - len(data) % 4])
    if sys.byteorder != "little":  # pragma: no cover
        words.byteswap()
    return words


class VirtioBalloon(VirtioDevice):
    device_id = VIRTIO_ID_BALLOON
    num_queues = 3
    name = "virtio-balloon"
    # Each PFN is a page to give back (an madvise each): one full request's worth
    # (16 K pages, tens of ms) per round of the machine loop at most.
    round_bytes = MAX_PFN_BYTES

    def __init__(self, ram: RamLike, page_release: PageRelease | None = None) -> None:
        """``ram`` gives the guest RAM window (``.base``, ``.size``); ``page_release(pfn)``
        frees the host memory of one inflated page (None: only count). A callable that
        raises or returns False counts as a failed release; it is never fatal."""
        super().__init__()
        self.ram = ram
        self.page_release = page_release
        self.first_pfn = ram.base >> PAGE_SHIFT
        self.ram_pages = ram.size >> PAGE_SHIFT
        self.target_pages = 0  # num_pages: the host's wish
        self.actual = 0  # actual: what the driver says it has given
        self._bitmap = bytearray((self.ram_pages + 7) // 8)
        self._inflated = 0
        self._stats: dict[str, int] = {}
        self._stats_chain: Chain | None = None  # the driver's stats buffer, held
        self.counters = {"inflate_requests": 0, "deflate_requests": 0, "stats_reports": 0,
                         "bad_pfns": 0, "ignored_pfns": 0, "released_pages": 0,
                         "release_errors": 0}

    # -- host side -------------------------------------------------------------------------

    def set_target(self, bytes_: int) -> None:
        """Ask the guest to leave the balloon holding ``bytes_`` (rounded down to pages,
        clamped to RAM); the driver hears it through a configuration-change interrupt."""
        self.target_pages = min(max(bytes_, 0) >> PAGE_SHIFT, self.ram_pages)
        self.config_changed()

    def target_bytes(self) -> int:
        return self.target_pages << PAGE_SHIFT

    def actual_bytes(self) -> int:
        """What the driver reports it has given back (its ``actual`` config field)."""
        return self.actual << PAGE_SHIFT

    def inflated_pages(self) -> int:
        """Pages currently in the balloon, counted from the inflate and deflate lists."""
        return self._inflated

    def is_inflated(self, pfn: int) -> bool:
        idx = pfn - self.first_pfn
        return 0 <= idx < self.ram_pages and bool(self._bitmap[idx >> 3] & (1 << (idx & 7)))

    @property
    def bad_pfns(self) -> int:
        """PFNs outside guest RAM that the driver listed (ignored)."""
        return self.counters["bad_pfns"]

    def stats(self) -> dict[str, int]:
        """The latest statistics report from the driver, {name: value}."""
        return dict(self._stats)

    def request_stats(self) -> bool:
        """Give the held stats buffer back so the driver refills it with fresh figures
        (the new report arrives on a later notification). False if none is held."""
        chain = self._stats_chain
        if chain is None or not self._live(STATSQ):
            return False
        self._stats_chain = None
        try:
            self.queue(STATSQ).push(chain, 0)
        except (VirtqueueError, DmaError) as e:
            assert self.transport is not None
            self.transport.fail(f"queue {STATSQ}: {e}")
            return False
        self.used_buffers(STATSQ)
        return True

    # -- VirtioDevice ---------------------------------------------------------------------

    def device_features(self) -> int:
        return VIRTIO_BALLOON_F_STATS_VQ | VIRTIO_BALLOON_F_DEFLATE_ON_OOM

    def config_bytes(self) -> bytes:
        return _CONFIG.pack(self.target_pages, self.actual)

    def config_write(self, offset: int, data: bytes) -> None:
        # Only ``actual`` (bytes 4..7) is driver-writable; merge any overlapping bytes.
        cfg = bytearray(_CONFIG.pack(self.target_pages, self.actual))
        for i, b in enumerate(data):
            if 4 <= offset + i < 8:
                cfg[offset + i] = b
        self.actual = int.from_bytes(cfg[4:8], "little")

    def queue_notify(self, index: int, queue: Virtqueue) -> None:
        if index == STATSQ:
            self._receive_stats(queue)
            return
        inflate = index == INFLATEQ
        pushed = False
        while (chain := queue.pop()) is not None:
            pfns = _u32s(queue.read_chain(chain, MAX_PFN_BYTES))
            self.counters["ignored_pfns"] += max(0, chain.readable_len - MAX_PFN_BYTES) // 4
            if inflate:
                self.counters["inflate_requests"] += 1
                self._inflate(pfns)
            else:
                self.counters["deflate_requests"] += 1
                self._deflate(pfns)
            queue.push(chain, 0)
            pushed = True
        if pushed:
            self.used_buffers(index)

    def activate(self) -> None:
        # Linux posts its first stats buffer and notifies before DRIVER_OK, when the
        # transport still drops notifications: pick up whatever is already queued.
        assert self.transport is not None
        if self.transport.status & DEVICE_NEEDS_RESET:
            return
        for index in range(self.num_queues):
            try:
                q = self.queue(index)
                if q.has_work():
                    self.queue_notify(index, q)
            except (VirtqueueError, DmaError) as e:
                self.transport.fail(f"queue {index}: {e}")
                return

    def reset(self) -> None:
        # A reset driver (or rebooted guest) owns all its RAM again; the host's target
        # stays. Released pages stay released on the host until the guest touches them.
        self.actual = 0
        self._bitmap = bytearray(len(self._bitmap))
        self._inflated = 0
        self._stats_chain = None
        self._stats = {}

    def save(self) -> BalloonState:
        chain = self._stats_chain
        return BalloonState(
            self.target_pages, self.actual, bytes(self._bitmap), dict(self._stats),
            None if chain is None else StatsChain(
                chain.head, [list(x) for x in chain.readable],
                [list(x) for x in chain.writable]),
            dict(self.counters))

    def restore(self, state: Record) -> None:
        assert isinstance(state, BalloonState)
        self.target_pages = min(state.target_pages, self.ram_pages)
        self.actual = state.actual
        bitmap = bytearray(state.bitmap)
        if len(bitmap) != len(self._bitmap):
            raise StateError("balloon: saved for another RAM size")
        if self.ram_pages % 8:  # no bits beyond the last page
            bitmap[-1] &= (1 << (self.ram_pages % 8)) - 1
        self._bitmap = bitmap
        self._inflated = int.from_bytes(bitmap, "little").bit_count()
        self._stats = dict(state.stats)
        c = state.stats_chain
        if c is not None and any(len(x) != 2 for x in c.readable + c.writable):
            raise StateError("balloon: a stats buffer is not (address, length)")
        self._stats_chain = None if c is None else Chain(
            c.head, [(a, n) for a, n in c.readable], [(a, n) for a, n in c.writable])
        self.counters.update({k: v for k, v in state.counters.items() if k in self.counters})

    # -- internals -------------------------------------------------------------------------

    def _live(self, index: int) -> bool:
        t = self.transport
        return (t is not None and bool(t.status & DRIVER_OK)
                and not t.status & DEVICE_NEEDS_RESET and t.queues[index].ready)

    def _inflate(self, pfns: array) -> None:
        bitmap, first, npages = self._bitmap, self.first_pfn, self.ram_pages
        for pfn in pfns:
            idx = pfn - first
            if not 0 <= idx < npages:
                self.counters["bad_pfns"] += 1
                continue
            bit = 1 << (idx & 7)
            if bitmap[idx >> 3] & bit:
                self.counters["ignored_pfns"] += 1  # already in the balloon
                continue
            bitmap[idx >> 3] |= bit
            self._inflated += 1
            self._release(pfn)

    def _deflate(self, pfns: array) -> None:
        bitmap, first, npages = self._bitmap, self.first_pfn, self.ram_pages
        for pfn in pfns:
            idx = pfn - first
            if not 0 <= idx < npages:
                self.counters["bad_pfns"] += 1
                continue
            bit = 1 << (idx & 7)
            if not bitmap[idx >> 3] & bit:
                self.counters["ignored_pfns"] += 1  # not in the balloon
                continue
            bitmap[idx >> 3] &= ~bit & 0xFF
            self._inflated -= 1

    def _release(self, pfn: int) -> None:
        if self.page_release is not None:
            try:
                ok = self.page_release(pfn) is not False
            except Exception as e:  # a host-side failure must not reach the guest
                log.debug("%s: releasing PFN %#x failed: %s", self.name, pfn, e)
                ok = False
            self.counters["released_pages" if ok else "release_errors"] += 1
        # The page's contents may have changed under the CPU: drop code decoded from it.
        t = self.transport
        code = t.dma.code if t is not None else None
        if code is not None and code.pages:
            code.invalidate_range(pfn << PAGE_SHIFT, PAGE_SIZE)

    def _receive_stats(self, queue: Virtqueue) -> None:
        pushed = False
        while (chain := queue.pop()) is not None:
            data = queue.read_chain(chain, MAX_STATS_BYTES)
            report: dict[str, int] = {}
            for tag, value in _STAT.iter_unpack(data[: len(data) - len(data) % _STAT.size]):
                report[STAT_NAMES.get(tag, f"tag_{tag}")] = value
            self._stats = report
            self.counters["stats_reports"] += 1
            if self._stats_chain is not None:  # a driver posting a second buffer
                queue.push(self._stats_chain, 0)
                pushed = True
            self._stats_chain = chain
        if pushed:
            self.used_buffers(STATSQ)


@record
class StatsChain(Record):
    """The driver's statistics buffer the device holds (a descriptor chain)."""

    head: U16
    readable: Annotated[list[Annotated[list[U64], MaxLen(2)]], MaxLen(256)]
    writable: Annotated[list[Annotated[list[U64], MaxLen(2)]], MaxLen(256)]


@record
class BalloonState(Record):
    """The host's target, the driver's answer, which pages are in the balloon, the
    guest's last statistics and the buffer for the next."""

    target_pages: U32
    actual: U32
    bitmap: Annotated[bytes, MaxLen(1 << 26)]
    stats: Annotated[dict[str, U64], MaxLen(64)]
    stats_chain: StatsChain | None
    counters: Annotated[dict[str, U64], MaxLen(64)]


VirtioBalloon.STATE = BalloonState
