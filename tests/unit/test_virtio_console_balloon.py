"""virtio-console and virtio-balloon, driven through the real virtio-mmio transport.

The test plays the guest driver: it negotiates features through the MMIO registers,
lays out split virtqueues in a real GuestRAM and posts descriptor chains, so the device
models are exercised exactly as a guest exercises them. Hostile-driver tests throw random
descriptors at both devices and check that nothing escapes the transport and that no
byte outside the guest RAM window is written or released.
"""

from __future__ import annotations

import mmap
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyhv.devices.base import IrqLine
from pyhv.devices.virtio.balloon import (
    DEFLATEQ,
    INFLATEQ,
    STATSQ,
    VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
    VIRTIO_BALLOON_F_STATS_VQ,
    VirtioBalloon,
    madvise_release,
)
from pyhv.devices.virtio.console import (
    MAX_PENDING_INPUT,
    RECEIVEQ,
    TRANSMITQ,
    VIRTIO_CONSOLE_F_EMERG_WRITE,
    VIRTIO_CONSOLE_F_MULTIPORT,
    VIRTIO_CONSOLE_F_SIZE,
    VirtioConsole,
)
from pyhv.devices.virtio.device import VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1
from pyhv.devices.virtio.dma import GuestDMA
from pyhv.devices.virtio.mmio import (
    ACKNOWLEDGE,
    CONFIG,
    CONFIG_GENERATION,
    DEVICE_FEATURES,
    DEVICE_FEATURES_SEL,
    DEVICE_ID,
    DEVICE_NEEDS_RESET,
    DRIVER,
    DRIVER_FEATURES,
    DRIVER_FEATURES_SEL,
    DRIVER_OK,
    FEATURES_OK,
    INT_CONFIG_CHANGE,
    INT_USED_BUFFER,
    INTERRUPT_ACK,
    INTERRUPT_STATUS,
    QUEUE_DESC_HIGH,
    QUEUE_DESC_LOW,
    QUEUE_DEVICE_HIGH,
    QUEUE_DEVICE_LOW,
    QUEUE_DRIVER_HIGH,
    QUEUE_DRIVER_LOW,
    QUEUE_NOTIFY,
    QUEUE_NUM,
    QUEUE_READY,
    QUEUE_SEL,
    STATUS,
    VirtioMmio,
)
from pyhv.memory.ram import GuestRAM

RAM_BASE = 0x8000_0000
RAM_SIZE = 1 << 20
RAM_END = RAM_BASE + RAM_SIZE
QSIZE = 16
DATA_BASE = RAM_BASE + 0x10000  # driver data buffers grow from here
SPARE_PAGES = RAM_BASE + 0x80000  # pages the balloon tests give away
DESC = struct.Struct("<QIHH")


class SpyDMA(GuestDMA):
    """GuestDMA that records every write the device makes into guest memory."""

    def __init__(self, ram: GuestRAM) -> None:
        super().__init__(ram)
        self.writes: list[tuple[int, int]] = []

    def write(self, addr, data):
        super().write(addr, data)  # raises before writing if outside RAM
        self.writes.append((addr, len(data)))


class Driver:
    """A minimal virtio-mmio guest driver over a real GuestRAM."""

    def __init__(self, device, *, ram: GuestRAM | None = None) -> None:
        self.ram = ram if ram is not None else GuestRAM(RAM_BASE, RAM_SIZE)
        self.dma = SpyDMA(self.ram)
        self.irq = IrqLine()
        self.dev = device
        self.t = VirtioMmio(self.irq, self.dma, device)
        self.next_data = DATA_BASE
        self.avail_idx = [0] * device.num_queues
        self.next_desc = [0] * device.num_queues
        self.last_used = [0] * device.num_queues
        self.writable: dict[tuple[int, int], list[tuple[int, int]]] = {}

    # -- registers --------------------------------------------------------------------

    def w(self, off: int, val: int) -> None:
        self.t.write(off, 4, val)

    def r(self, off: int) -> int:
        return self.t.read(off, 4)

    def offered(self) -> int:
        self.w(DEVICE_FEATURES_SEL, 0)
        lo = self.r(DEVICE_FEATURES)
        self.w(DEVICE_FEATURES_SEL, 1)
        return lo | self.r(DEVICE_FEATURES) << 32

    def start(self, *, want: int | None = None, driver_ok: bool = True) -> int:
        """Reset, negotiate (everything offered except EVENT_IDX, unless ``want``), set
        up every queue and (unless told otherwise) set DRIVER_OK. Returns the features."""
        self.w(STATUS, 0)
        self.w(STATUS, ACKNOWLEDGE)
        self.w(STATUS, ACKNOWLEDGE | DRIVER)
        offered = self.offered()
        assert offered & VIRTIO_F_VERSION_1
        accept = offered & ~VIRTIO_F_RING_EVENT_IDX if want is None else want
        accept |= VIRTIO_F_VERSION_1
        self.w(DRIVER_FEATURES_SEL, 0)
        self.w(DRIVER_FEATURES, accept & 0xFFFFFFFF)
        self.w(DRIVER_FEATURES_SEL, 1)
        self.w(DRIVER_FEATURES, accept >> 32)
        self.w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)
        assert self.r(STATUS) & FEATURES_OK
        for q in range(self.dev.num_queues):
            self.setup_queue(q)
        if driver_ok:
            self.driver_ok()
        return accept

    def driver_ok(self) -> None:
        self.w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)

    def ring_addrs(self, q: int) -> tuple[int, int, int]:
        base = RAM_BASE + 0x4000 * q
        return base, base + 0x1000, base + 0x2000

    def setup_queue(self, q: int) -> None:
        """Fresh, zeroed rings for queue ``q`` (as a driver allocates after a reset)."""
        desc, avail, used = self.ring_addrs(q)
        self.ram.write_bytes(desc, bytes(0x3000))
        self.avail_idx[q] = self.next_desc[q] = self.last_used[q] = 0
        self.w(QUEUE_SEL, q)
        self.w(QUEUE_NUM, QSIZE)
        for lo, hi, addr in ((QUEUE_DESC_LOW, QUEUE_DESC_HIGH, desc),
                             (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, avail),
                             (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH, used)):
            self.w(lo, addr & 0xFFFFFFFF)
            self.w(hi, addr >> 32)
        self.w(QUEUE_READY, 1)
        assert self.r(QUEUE_READY) == 1

    # -- buffers ----------------------------------------------------------------------

    def alloc(self, n: int) -> int:
        addr = self.next_data
        self.next_data += (max(n, 1) + 15) & ~15
        assert self.next_data <= SPARE_PAGES
        return addr

    def add_buffer(self, q: int, readable=(), writable=()) -> int:
        """Post one chain (readable byte strings, then writable sizes); return its head."""
        desc_table, avail, _ = self.ring_addrs(q)
        parts = [(d, 0) for d in readable] + [(n, 2) for n in writable]
        assert parts
        indices = [(self.next_desc[q] + i) % QSIZE for i in range(len(parts))]
        self.next_desc[q] = (self.next_desc[q] + len(parts)) % QSIZE
        wbufs = []
        for i, ((item, flags), index) in enumerate(zip(parts, indices, strict=True)):
            if flags:
                addr, length = self.alloc(item), item
                wbufs.append((addr, length))
            else:
                addr, length = self.alloc(len(item)), len(item)
                self.ram.write_bytes(addr, bytes(item))
            nxt = indices[i + 1] if i + 1 < len(parts) else 0
            flags |= 1 if i + 1 < len(parts) else 0
            self.ram.write_bytes(desc_table + 16 * index, DESC.pack(addr, length, flags, nxt))
        head = indices[0]
        slot = self.avail_idx[q] % QSIZE
        self.ram.write(avail + 4 + 2 * slot, 2, head)
        self.avail_idx[q] = (self.avail_idx[q] + 1) & 0xFFFF
        self.ram.write(avail + 2, 2, self.avail_idx[q])
        self.writable[(q, head)] = wbufs
        return head

    def kick(self, q: int) -> None:
        self.w(QUEUE_NOTIFY, q)

    def used(self, q: int) -> list[tuple[int, int]]:
        """New used entries (head, written) since the last call."""
        _, _, used = self.ring_addrs(q)
        idx = self.ram.read(used + 2, 2)
        out = []
        while self.last_used[q] != idx:
            slot = used + 4 + 8 * (self.last_used[q] % QSIZE)
            out.append(struct.unpack("<II", self.ram.read_bytes(slot, 8)))
            self.last_used[q] = (self.last_used[q] + 1) & 0xFFFF
        return out

    def written(self, q: int, head: int, n: int) -> bytes:
        out = b""
        for addr, length in self.writable[(q, head)]:
            out += self.ram.read_bytes(addr, min(length, n - len(out)))
        return out

    def ack(self) -> int:
        status = self.r(INTERRUPT_STATUS)
        self.w(INTERRUPT_ACK, status)
        return status

    def config(self, off: int, size: int = 4) -> int:
        return self.t.read(CONFIG + off, size)


# -- virtio-console -------------------------------------------------------------------------


def make_console(**kw) -> tuple[Driver, list[bytes]]:
    out: list[bytes] = []
    drv = Driver(VirtioConsole(out.append, **kw))
    return drv, out


def test_console_identity_features_config():
    drv, _ = make_console()
    assert drv.r(DEVICE_ID) == 3
    offered = drv.offered()
    assert offered & VIRTIO_CONSOLE_F_EMERG_WRITE
    assert not offered & VIRTIO_CONSOLE_F_MULTIPORT
    assert not offered & VIRTIO_CONSOLE_F_SIZE
    drv.start()
    assert drv.config(4) == 1  # max_nr_ports
    assert drv.config(0, 2) == 0 and drv.config(2, 2) == 0


def test_console_transmit_reaches_output():
    drv, out = make_console()
    drv.start()
    drv.ack()
    head = drv.add_buffer(TRANSMITQ, readable=[b"hello ", b"world\n"])
    drv.kick(TRANSMITQ)
    assert b"".join(out) == b"hello world\n"
    assert drv.used(TRANSMITQ) == [(head, 0)]
    assert drv.ack() & INT_USED_BUFFER
    assert drv.irq.level is False
    assert drv.dev.stats["tx_bytes"] == 12


def test_console_input_held_until_buffers_posted():
    drv, _ = make_console()
    drv.start()
    assert drv.dev.send(b"abc") == 3
    assert drv.dev.pending_input == 3
    assert drv.used(RECEIVEQ) == []
    head = drv.add_buffer(RECEIVEQ, writable=[16])
    drv.kick(RECEIVEQ)
    assert drv.used(RECEIVEQ) == [(head, 3)]
    assert drv.written(RECEIVEQ, head, 3) == b"abc"
    assert drv.dev.pending_input == 0
    assert drv.ack() & INT_USED_BUFFER


def test_console_input_delivered_immediately_into_posted_buffers():
    drv, _ = make_console()
    drv.start()
    h1 = drv.add_buffer(RECEIVEQ, writable=[4])
    h2 = drv.add_buffer(RECEIVEQ, writable=[2, 2])
    h3 = drv.add_buffer(RECEIVEQ, writable=[8])
    drv.kick(RECEIVEQ)  # no input yet: buffers stay posted
    assert drv.used(RECEIVEQ) == []
    drv.ack()
    drv.dev.send(b"0123456789")  # spans three buffers
    assert drv.used(RECEIVEQ) == [(h1, 4), (h2, 4), (h3, 2)]
    assert drv.written(RECEIVEQ, h1, 4) == b"0123"
    assert drv.written(RECEIVEQ, h2, 4) == b"4567"
    assert drv.written(RECEIVEQ, h3, 2) == b"89"
    assert drv.irq.level
    # Further input with no buffer left waits.
    drv.dev.send(b"more")
    assert drv.dev.pending_input == 4
    h4 = drv.add_buffer(RECEIVEQ, writable=[64])
    drv.t.poll()  # poll() delivers too
    assert drv.used(RECEIVEQ) == [(h4, 4)]
    assert drv.written(RECEIVEQ, h4, 4) == b"more"


def test_console_input_before_driver_ok_and_before_reset():
    drv, _ = make_console()
    drv.dev.send(b"early")  # no driver at all yet
    drv.start(driver_ok=False)
    head = drv.add_buffer(RECEIVEQ, writable=[16])
    drv.kick(RECEIVEQ)  # dropped by the transport: not DRIVER_OK yet
    assert drv.used(RECEIVEQ) == []
    drv.driver_ok()  # activate() delivers to the already posted buffer
    assert drv.used(RECEIVEQ) == [(head, 5)]
    assert drv.written(RECEIVEQ, head, 5) == b"early"


def test_console_input_bounded():
    drv, _ = make_console()
    drv.start()
    assert drv.dev.send(b"x" * (MAX_PENDING_INPUT + 100)) == MAX_PENDING_INPUT
    assert drv.dev.send(b"y") == 0
    assert drv.dev.pending_input == MAX_PENDING_INPUT
    assert drv.dev.stats["rx_dropped"] == 101


def test_console_emergency_write():
    drv, out = make_console()
    drv.start(driver_ok=False)  # works before DRIVER_OK too
    drv.t.write(CONFIG + 8, 4, ord("E"))
    drv.driver_ok()
    drv.t.write(CONFIG + 8, 1, ord("!"))
    drv.t.write(CONFIG + 4, 4, 0x41)  # max_nr_ports is read-only: nothing printed
    assert out == [b"E", b"!"]
    assert drv.dev.stats["emerg_bytes"] == 2


def test_console_input_source_polled():
    chunks = [b"from ", b"", b"pipe"]
    drv, _ = make_console(input_source=lambda: chunks.pop(0) if chunks else b"")
    drv.start()
    head = drv.add_buffer(RECEIVEQ, writable=[32])
    drv.kick(RECEIVEQ)
    for _ in range(4):
        drv.t.poll()
    assert drv.used(RECEIVEQ) == [(head, 5)]
    h2 = drv.add_buffer(RECEIVEQ, writable=[32])
    drv.kick(RECEIVEQ)
    assert drv.used(RECEIVEQ) == [(h2, 4)]
    assert drv.written(RECEIVEQ, h2, 4) == b"pipe"


def test_console_size_feature_and_resize():
    drv, _ = make_console(size=(80, 25))
    assert drv.offered() & VIRTIO_CONSOLE_F_SIZE
    drv.start()
    assert (drv.config(0, 2), drv.config(2, 2)) == (80, 25)
    drv.ack()
    drv.dev.resize(132, 43)
    assert drv.ack() & INT_CONFIG_CHANGE
    assert (drv.config(0, 2), drv.config(2, 2)) == (132, 43)


def test_console_output_error_is_not_fatal():
    def broken(_data):
        raise BrokenPipeError

    drv = Driver(VirtioConsole(broken))
    drv.start()
    head = drv.add_buffer(TRANSMITQ, readable=[b"lost"])
    drv.kick(TRANSMITQ)
    assert drv.used(TRANSMITQ) == [(head, 0)]
    assert drv.dev.stats["output_errors"] == 1


def through_json(rec):
    """A state record as a snapshot file carries it: dumped to JSON, checked on load."""
    import json

    from pyhv import records

    return records.load(type(rec), json.loads(json.dumps(records.dump(rec))), "test")


def test_console_save_restore():
    drv, _ = make_console()
    drv.start()
    drv.dev.send(b"keep me")
    state = through_json(drv.t.save()), through_json(drv.dev.save())
    drv2, _ = make_console()
    drv2.t.restore(state[0])
    drv2.dev.restore(state[1])
    assert drv2.dev.pending_input == 7
    assert drv2.dev.save() == drv.dev.save()


# -- virtio-balloon -------------------------------------------------------------------------


def pfn_of(addr: int) -> int:
    return addr >> 12


def pfn_list(*pfns: int) -> bytes:
    return struct.pack(f"<{len(pfns)}I", *pfns)


def make_balloon(page_release=None) -> Driver:
    ram = GuestRAM(RAM_BASE, RAM_SIZE)
    return Driver(VirtioBalloon(ram, page_release), ram=ram)


def test_balloon_identity_and_features():
    drv = make_balloon()
    assert drv.r(DEVICE_ID) == 5
    offered = drv.offered()
    assert offered & VIRTIO_BALLOON_F_STATS_VQ
    assert offered & VIRTIO_BALLOON_F_DEFLATE_ON_OOM
    drv.start()
    assert drv.config(0) == 0 and drv.config(4) == 0


def test_balloon_target_raises_config_interrupt():
    drv = make_balloon()
    drv.start()
    drv.ack()
    gen = drv.r(CONFIG_GENERATION)
    drv.dev.set_target(256 * 1024 + 100)
    assert drv.irq.level
    assert drv.r(INTERRUPT_STATUS) & INT_CONFIG_CHANGE
    assert drv.config(0) == 64  # num_pages
    assert drv.r(CONFIG_GENERATION) != gen
    drv.ack()
    drv.dev.set_target(1 << 40)  # clamped to RAM
    assert drv.config(0) == RAM_SIZE // 4096
    drv.dev.set_target(-5)
    assert drv.config(0) == 0


def test_balloon_actual_written_by_driver():
    drv = make_balloon()
    drv.start()
    drv.t.write(CONFIG + 4, 4, 17)
    assert drv.dev.actual_bytes() == 17 * 4096
    assert drv.config(4) == 17
    drv.t.write(CONFIG + 0, 4, 999)  # num_pages is the host's: ignored
    assert drv.config(0) == 0
    drv.t.write(CONFIG + 5, 1, 1)  # a partial write merges into actual
    assert drv.config(4) == 17 + 256


def test_balloon_inflate_deflate_and_bad_pfns():
    released: list[int] = []
    drv = make_balloon(released.append)
    drv.start()
    drv.ack()
    p = [pfn_of(SPARE_PAGES) + i for i in range(4)]
    head = drv.add_buffer(INFLATEQ, readable=[pfn_list(*p)])
    drv.kick(INFLATEQ)
    assert drv.used(INFLATEQ) == [(head, 0)]
    assert drv.ack() & INT_USED_BUFFER
    assert drv.dev.inflated_pages() == 4
    assert released == p

    # Outside RAM (below, at the end, far away) or listed twice: ignored, counted.
    bad = [pfn_of(RAM_BASE) - 1, pfn_of(RAM_END), 0, 0xFFFFFFFF]
    drv.add_buffer(INFLATEQ, readable=[pfn_list(*bad, p[0])])
    drv.kick(INFLATEQ)
    assert drv.dev.inflated_pages() == 4
    assert drv.dev.bad_pfns == 4
    assert released == p

    head = drv.add_buffer(DEFLATEQ, readable=[pfn_list(p[1], p[3], p[3])])
    drv.kick(DEFLATEQ)
    assert drv.used(DEFLATEQ) == [(head, 0)]
    assert drv.dev.inflated_pages() == 2
    assert drv.dev.is_inflated(p[0]) and not drv.dev.is_inflated(p[1])

    # A reset driver owns all its memory again.
    drv.start()
    assert drv.dev.inflated_pages() == 0


@pytest.mark.skipif(
    mmap.PAGESIZE != 4096 or not hasattr(mmap, "MADV_DONTNEED"),
    reason="needs madvise and 4 KiB host pages",
)
def test_balloon_madvise_release_zeroes_page():
    ram = GuestRAM(RAM_BASE, RAM_SIZE)
    drv = Driver(VirtioBalloon(ram, madvise_release(ram)), ram=ram)
    drv.start()
    page = SPARE_PAGES + 0x3000
    for addr in (page - 4096, page, page + 4096):
        ram.write_bytes(addr, b"\xa5" * 4096)
    drv.add_buffer(INFLATEQ, readable=[pfn_list(pfn_of(page))])
    drv.kick(INFLATEQ)
    assert drv.dev.counters["released_pages"] == 1
    assert ram.read_bytes(page, 4096) == bytes(4096)
    assert ram.read_bytes(page - 4096, 4096) == b"\xa5" * 4096
    assert ram.read_bytes(page + 4096, 4096) == b"\xa5" * 4096


def test_madvise_release_refuses_outside_ram():
    ram = GuestRAM(RAM_BASE, RAM_SIZE)
    release = madvise_release(ram)
    assert release(pfn_of(RAM_END)) is False
    assert release(pfn_of(RAM_BASE) - 1) is False
    ram.close()
    assert release(pfn_of(RAM_BASE)) is False  # closed mapping: no exception


def test_balloon_release_failure_is_not_fatal():
    def failing(_pfn):
        raise OSError("nope")

    drv = make_balloon(failing)
    drv.start()
    drv.add_buffer(INFLATEQ, readable=[pfn_list(pfn_of(SPARE_PAGES))])
    drv.kick(INFLATEQ)
    assert drv.dev.inflated_pages() == 1
    assert drv.dev.counters["release_errors"] == 1
    assert not drv.r(STATUS) & DEVICE_NEEDS_RESET


def stats_buffer(**values: int) -> bytes:
    tags = {"swap_in": 0, "free_memory": 4, "total_memory": 5, "available_memory": 6}
    return b"".join(struct.pack("<HQ", tags[k], v) for k, v in values.items())


def test_balloon_stats():
    drv = make_balloon()
    assert drv.dev.request_stats() is False  # nothing held yet
    # Linux primes the stats queue and notifies before DRIVER_OK.
    drv.start(driver_ok=False)
    head = drv.add_buffer(STATSQ, readable=[stats_buffer(free_memory=1000, total_memory=4000)
                                            + b"\x07\x00"])  # a torn trailing entry
    drv.kick(STATSQ)
    drv.driver_ok()
    assert drv.dev.stats() == {"free_memory": 1000, "total_memory": 4000}
    assert drv.used(STATSQ) == []  # held by the device
    drv.ack()

    assert drv.dev.request_stats() is True
    assert drv.used(STATSQ) == [(head, 0)]
    assert drv.ack() & INT_USED_BUFFER
    assert drv.dev.request_stats() is False  # given back already

    drv.add_buffer(STATSQ, readable=[stats_buffer(swap_in=3, available_memory=77)
                                     + struct.pack("<HQ", 200, 5)])
    drv.kick(STATSQ)
    assert drv.dev.stats() == {"swap_in": 3, "available_memory": 77, "tag_200": 5}
    assert drv.dev.counters["stats_reports"] == 2


def test_balloon_save_restore():
    drv = make_balloon()
    drv.start()
    drv.add_buffer(STATSQ, readable=[stats_buffer(free_memory=1)])
    drv.kick(STATSQ)
    drv.add_buffer(INFLATEQ, readable=[pfn_list(pfn_of(SPARE_PAGES), pfn_of(SPARE_PAGES) + 7)])
    drv.kick(INFLATEQ)
    drv.dev.set_target(8 * 4096)
    state = through_json(drv.t.save()), through_json(drv.dev.save())
    drv2 = make_balloon()
    drv2.t.restore(state[0])
    drv2.dev.restore(state[1])
    assert drv2.dev.inflated_pages() == 2
    assert drv2.dev.is_inflated(pfn_of(SPARE_PAGES) + 7)
    assert drv2.config(0) == 8
    assert drv2.dev.stats() == {"free_memory": 1}
    assert drv2.dev.request_stats() is True  # the held buffer survived


# -- hostile drivers ------------------------------------------------------------------------

# A hostile queue: well-formed chains (so requests reach the device model), then raw
# corruption of the descriptor table and available ring with arbitrary bytes (so every
# malformation is tried: addresses and lengths outside RAM, loops, bad indices,
# indirect tables, readable-after-writable, wild available indexes).
segment = st.tuples(st.integers(0, 4096), st.integers(0, 512), st.booleans())
chains = st.lists(st.lists(segment, min_size=1, max_size=4), max_size=4)
corruption = st.lists(
    st.tuples(st.booleans(), st.integers(0, 16 * QSIZE + 3), st.binary(min_size=1, max_size=8)),
    max_size=4,
)
queue_contents = st.tuples(chains, corruption)
mmio_op = st.tuples(
    st.sampled_from([CONFIG, CONFIG + 4, CONFIG + 8, CONFIG + 9, QUEUE_NOTIFY, QUEUE_SEL,
                     STATUS, INTERRUPT_ACK, QUEUE_READY]),
    st.sampled_from([1, 2, 4]),
    st.integers(0, 2**32 - 1),
)


def load_queue(drv: Driver, q: int, chain_list, corrupt) -> None:
    desc, avail, _ = drv.ring_addrs(q)
    index = 0
    for n, chain in enumerate(chain_list):
        drv.ram.write(avail + 4 + 2 * n, 2, index % QSIZE)
        for i, (offset, length, writable) in enumerate(chain):
            flags = (2 if writable else 0) | (1 if i + 1 < len(chain) else 0)
            drv.ram.write_bytes(desc + 16 * (index % QSIZE),
                                DESC.pack(DATA_BASE + offset, length, flags, (index + 1) % QSIZE))
            index += 1
    drv.ram.write(avail + 2, 2, len(chain_list))
    for in_desc, offset, data in corrupt:
        base = desc if in_desc else avail
        drv.ram.write_bytes(base + offset, data)


def hostile_run(drv: Driver, queues, junk: bytes, ops, host_action) -> None:
    drv.ram.write_bytes(DATA_BASE, junk)
    for q, (chain_list, corrupt) in enumerate(queues):
        drv.start(want=drv.offered())  # afresh per queue, EVENT_IDX too
        load_queue(drv, q, chain_list, corrupt)
        drv.kick(q)
        host_action()
    for off, size, value in ops:
        drv.t.write(off, size, value & ((1 << (8 * size)) - 1))
        host_action()
        drv.t.poll()
    for addr, length in drv.dma.writes:
        assert RAM_BASE <= addr and addr + length <= RAM_END


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(queue_contents, min_size=2, max_size=2),
    st.binary(min_size=0, max_size=4608),
    st.lists(mmio_op, max_size=8),
    st.binary(min_size=0, max_size=64),
)
def test_console_hostile_driver(queues, junk, ops, host_input):
    out: list[bytes] = []
    drv = Driver(VirtioConsole(out.append))
    try:
        hostile_run(drv, queues, junk, ops, lambda: drv.dev.send(host_input))
        assert drv.dev.pending_input <= MAX_PENDING_INPUT
    finally:
        drv.ram.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(queue_contents, min_size=3, max_size=3),
    st.lists(st.integers(0, 2**32 - 1)
             | st.integers(RAM_BASE >> 12, (RAM_END >> 12) - 1), max_size=1200),
    st.lists(mmio_op, max_size=8),
    st.integers(-(2**33), 2**33),
)
def test_balloon_hostile_driver(queues, pfns, ops, target):
    released: list[int] = []
    ram = GuestRAM(RAM_BASE, RAM_SIZE)
    madvise = madvise_release(ram)

    def release(pfn: int) -> object:
        released.append(pfn)
        return madvise(pfn)

    drv = Driver(VirtioBalloon(ram, release), ram=ram)

    def host_action():
        drv.dev.set_target(target)
        drv.dev.request_stats()

    try:
        hostile_run(drv, queues, pfn_list(*pfns), ops, host_action)
        assert all(RAM_BASE >> 12 <= p < RAM_END >> 12 for p in released)
        assert 0 <= drv.dev.inflated_pages() <= RAM_SIZE // 4096
        assert 0 <= drv.config(0) <= RAM_SIZE // 4096
    finally:
        ram.close()
