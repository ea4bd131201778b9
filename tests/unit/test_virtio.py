"""The virtio-mmio transport, the split virtqueue, virtio-blk and virtio-rng, driven
through the real registers and rings; plus a fuzz of the guest-facing surface."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from virtio_driver import QSIZE, RAM_BASE, Driver  # noqa: E402

from pyhv.devices.virtio import mmio as R  # noqa: E402
from pyhv.devices.virtio.blk import VirtioBlk  # noqa: E402
from pyhv.devices.virtio.block_backend import open_disk  # noqa: E402
from pyhv.devices.virtio.rng import VirtioRng  # noqa: E402


def blk_driver(tmp_path: Path, read_only: bool = False, size: int = 64 * 1024) -> Driver:
    img = tmp_path / "disk.img"
    if not img.exists():
        img.write_bytes(bytes(range(256)) * (size // 256))
    d = Driver(VirtioBlk(open_disk(str(img), read_only=read_only)))
    d.setup(1)
    return d


def blk_req(rtype: int, sector: int) -> bytes:
    return struct.pack("<IIQ", rtype, 0, sector)


def test_empty_slot_probes_as_no_device() -> None:
    d = Driver(None)
    assert (d.r(R.MAGIC_VALUE), d.r(R.VERSION), d.r(R.DEVICE_ID)) == (0x74726976, 2, 0)


def test_blk_identity_features_and_capacity(tmp_path: Path) -> None:
    d = blk_driver(tmp_path)
    assert d.r(R.DEVICE_ID) == 2
    assert d.dev.read(R.CONFIG, 8) == 64 * 1024 // 512
    d.w(R.DEVICE_FEATURES_SEL, 1)
    assert d.r(R.DEVICE_FEATURES) & 1  # VIRTIO_F_VERSION_1


def test_blk_read_write_flush(tmp_path: Path) -> None:
    d = blk_driver(tmp_path)
    data_addr, status = d.add(0, [blk_req(0, 2)], [1024, 1])
    d.kick(0)
    assert d.used(0) == [(0, 1025)]
    assert d.ram.read_bytes(status, 1) == b"\0"
    assert d.ram.read_bytes(data_addr, 1024) == (bytes(range(256)) * 4)
    assert d.irq_levels[-1] is True and d.r(R.INTERRUPT_STATUS) & 1
    d.w(R.INTERRUPT_ACK, 1)
    assert d.irq_levels[-1] is False
    (status,) = d.add(0, [blk_req(1, 4), b"\xab" * 512], [1])
    d.kick(0)
    assert d.ram.read_bytes(status, 1) == b"\0"
    (status,) = d.add(0, [blk_req(4, 0)], [1])
    d.kick(0)
    assert d.ram.read_bytes(status, 1) == b"\0"
    assert (tmp_path / "disk.img").read_bytes()[4 * 512 : 5 * 512] == b"\xab" * 512


def test_blk_errors_are_per_request(tmp_path: Path) -> None:
    d = blk_driver(tmp_path, read_only=True)
    (status,) = d.add(0, [blk_req(1, 0), b"x" * 512], [1])  # write to a read-only disk
    d.kick(0)
    assert d.ram.read_bytes(status, 1) == b"\x01"  # IOERR
    _, status = d.add(0, [blk_req(0, 10_000)], [512, 1])  # beyond the end
    d.kick(0)
    assert d.ram.read_bytes(status, 1) == b"\x01"
    (status,) = d.add(0, [blk_req(99, 0)], [1])  # unknown request type
    d.kick(0)
    assert d.ram.read_bytes(status, 1) == b"\x02"  # UNSUPP
    assert not d.r(R.STATUS) & R.DEVICE_NEEDS_RESET  # the device keeps working
    ident, status = d.add(0, [blk_req(8, 0)], [20, 1])
    d.kick(0)
    assert d.ram.read_bytes(ident, 20).rstrip(b"\0") == b"disk.img"


def test_rng_fills_buffers() -> None:
    d = Driver(VirtioRng())
    d.setup(1)
    (buf,) = d.add(0, [], [64])
    d.kick(0)
    assert d.used(0) == [(0, 64)]
    assert d.ram.read_bytes(buf, 64) != bytes(64)


def test_descriptor_loop_marks_device_needs_reset(tmp_path: Path) -> None:
    d = blk_driver(tmp_path)
    q = d.queues[0]
    # descriptor 0 -> 1 -> 0 ...
    d.ram.write_bytes(q["desc"], struct.pack("<QIHH", RAM_BASE + 0x9000, 16, 1, 1))
    d.ram.write_bytes(q["desc"] + 16, struct.pack("<QIHH", RAM_BASE + 0x9000, 16, 1, 0))
    d.ram.write(q["avail"] + 4, 2, 0)
    d.ram.write(q["avail"] + 2, 2, 1)
    d.kick(0)
    assert d.r(R.STATUS) & R.DEVICE_NEEDS_RESET
    assert d.r(R.INTERRUPT_STATUS) & 2  # configuration change
    d.w(R.STATUS, 0)  # the driver resets the device: usable again
    assert d.r(R.STATUS) == 0


def test_queue_outside_ram_is_refused(tmp_path: Path) -> None:
    d = blk_driver(tmp_path)
    d.w(R.STATUS, 0)
    d.w(R.STATUS, R.ACKNOWLEDGE | R.DRIVER)
    d.w(R.DRIVER_FEATURES_SEL, 1)
    d.w(R.DRIVER_FEATURES, 1)
    d.w(R.STATUS, R.ACKNOWLEDGE | R.DRIVER | R.FEATURES_OK)
    d.w(R.QUEUE_SEL, 0)
    d.w(R.QUEUE_DESC_LOW, 0x1000)  # far below RAM
    d.w(R.QUEUE_READY, 1)
    assert d.r(R.QUEUE_READY) == 0
    assert d.r(R.STATUS) & R.DEVICE_NEEDS_RESET


def test_driver_accepting_only_low_feature_bits_is_accepted_as_by_qemu(tmp_path: Path) -> None:
    """A driver that writes only the low 32 feature bits (xv6's) never accepts
    VERSION_1: QEMU 7.2's modern virtio-mmio still sets FEATURES_OK, and so does pyhv;
    features it was not offered are still refused."""
    d = Driver(VirtioRng())
    d.w(R.STATUS, R.ACKNOWLEDGE | R.DRIVER)
    d.w(R.STATUS, R.ACKNOWLEDGE | R.DRIVER | R.FEATURES_OK)
    assert d.r(R.STATUS) & R.FEATURES_OK
    d = Driver(VirtioRng())
    d.w(R.STATUS, R.ACKNOWLEDGE | R.DRIVER)
    d.w(R.DRIVER_FEATURES_SEL, 0)
    d.w(R.DRIVER_FEATURES, 1 << 5)  # not offered by virtio-rng
    d.w(R.STATUS, R.ACKNOWLEDGE | R.DRIVER | R.FEATURES_OK)
    assert not d.r(R.STATUS) & R.FEATURES_OK


def test_net_without_version_1_uses_the_legacy_header(tmp_path: Path) -> None:
    """virtio-net's header is 10 bytes when VERSION_1 (and MRG_RXBUF) is not
    negotiated, as QEMU makes it: a frame follows at byte 10 both ways."""
    from pyhv.devices.virtio.net import VirtioNet
    from pyhv.net import SwitchPort

    peer = SwitchPort("lan", runtime_dir=str(tmp_path))
    port = SwitchPort("lan", runtime_dir=str(tmp_path))
    try:
        d = Driver(VirtioNet(port, bytes.fromhex("525400000001")), features=1 << 5)
        d.setup(2)
        frame = b"\xff" * 6 + bytes.fromhex("525400000002") + b"\x88\xb5" + b"hello"
        peer.send(frame)
        (buf,) = d.add(0, [], [1600])
        d.kick(0)
        assert d.used(0) == [(0, 10 + len(frame))]
        assert d.ram.read_bytes(buf, 10) == bytes(10) and \
            d.ram.read_bytes(buf + 10, len(frame)) == frame
        out = b"\xff" * 6 + bytes.fromhex("525400000001") + b"\x88\xb5" + b"back!"
        d.add(1, [bytes(10) + out], [])
        d.kick(1)
        assert peer.receive() == [out]
    finally:
        peer.close()
        port.close()


def test_indirect_descriptors(tmp_path: Path) -> None:
    d = blk_driver(tmp_path)
    q = d.queues[0]
    hdr = d.alloc(blk_req(0, 1))
    data = d.alloc(512)
    status = d.alloc(1)
    table = d.alloc(
        struct.pack("<QIHH", hdr, 16, 1, 1)
        + struct.pack("<QIHH", data, 512, 3, 2)
        + struct.pack("<QIHH", status, 1, 2, 0)
    )
    d.ram.write_bytes(q["desc"], struct.pack("<QIHH", table, 48, 4, 0))
    d.ram.write(q["avail"] + 4, 2, 0)
    d.ram.write(q["avail"] + 2, 2, 1)
    d.kick(0)
    assert d.ram.read_bytes(status, 1) == b"\0"
    assert d.ram.read_bytes(data, 512) == bytes(range(256)) * 2


def _indirect_request(d: Driver, table_bytes: bytes) -> None:
    q = d.queues[0]
    table = d.alloc(table_bytes)
    d.ram.write_bytes(q["desc"], struct.pack("<QIHH", table, len(table_bytes), 4, 0))
    d.ram.write(q["avail"] + 4, 2, 0)
    d.ram.write(q["avail"] + 2, 2, 1)
    d.kick(0)


def test_chain_of_more_than_1024_descriptors_is_refused(tmp_path: Path) -> None:
    """A guest-sized indirect table cannot make the device walk (and remember) more
    than 1,024 descriptors per request (as QEMU): the request is malformed."""
    d = blk_driver(tmp_path, size=1 << 20)
    buf = d.alloc(1)
    hdr = d.alloc(blk_req(0, 0))
    entries = [struct.pack("<QIHH", hdr, 16, 1, 1)]
    entries += [struct.pack("<QIHH", buf, 1, 3, i + 2) for i in range(1024)]
    entries[-1] = struct.pack("<QIHH", buf, 1, 2, 0)
    _indirect_request(d, b"".join(entries))  # 1,025 descriptors
    assert d.r(R.STATUS) & R.DEVICE_NEEDS_RESET
    assert d.used(0) == []


def test_chain_of_1024_descriptors_is_served(tmp_path: Path) -> None:
    d = blk_driver(tmp_path, size=1 << 20)
    hdr = d.alloc(blk_req(0, 0))
    data = d.alloc(1024)
    status = d.alloc(1)
    entries = [struct.pack("<QIHH", hdr, 16, 1, 1)]  # 1 + 1,021 + 1 + 1 descriptors
    entries += [struct.pack("<QIHH", data + i, 1, 3, i + 2) for i in range(1021)]
    entries.append(struct.pack("<QIHH", data + 1021, 3, 3, 1023))
    entries.append(struct.pack("<QIHH", status, 1, 2, 0))
    _indirect_request(d, b"".join(entries))
    assert not d.r(R.STATUS) & R.DEVICE_NEEDS_RESET
    assert d.ram.read_bytes(status, 1) == b"\0"
    assert d.ram.read_bytes(data, 1024) == bytes(range(256)) * 4


def test_zero_length_descriptor_is_refused(tmp_path: Path) -> None:
    """Zero-length buffers cost the device work and move no data: QEMU refuses them,
    and so does pyhv (a table of millions of them used to cost gigabytes)."""
    d = blk_driver(tmp_path)
    hdr = d.alloc(blk_req(0, 0))
    status = d.alloc(1)
    _indirect_request(d, struct.pack("<QIHH", hdr, 16, 1, 1)
                      + struct.pack("<QIHH", hdr, 0, 1, 2)
                      + struct.pack("<QIHH", status, 1, 2, 0))
    assert d.r(R.STATUS) & R.DEVICE_NEEDS_RESET


def test_huge_indirect_table_is_refused_before_it_is_walked(tmp_path: Path) -> None:
    """An indirect descriptor claiming a 4 M-entry table (64 MiB of zero-length
    descriptors) is refused from its length alone."""
    d = Driver(VirtioBlk(open_disk(str(_disk(tmp_path)))), ram_size=80 << 20)
    d.setup(1)
    q = d.queues[0]
    table = RAM_BASE + (8 << 20)
    d.ram.write_bytes(q["desc"], struct.pack("<QIHH", table, 16 << 22, 4, 0))
    d.ram.write(q["avail"] + 4, 2, 0)
    d.ram.write(q["avail"] + 2, 2, 1)
    d.kick(0)
    assert d.r(R.STATUS) & R.DEVICE_NEEDS_RESET


def _disk(tmp_path: Path) -> Path:
    img = tmp_path / "big.img"
    img.write_bytes(bytes(64 * 1024))
    return img


FUZZ_CASES = 0


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    descs=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 2**64 - 1), st.integers(RAM_BASE - 64, RAM_BASE + (1 << 20))),
            st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 4096)),
            st.integers(0, 7),
            st.integers(0, 40),
        ),
        min_size=1,
        max_size=QSIZE,
    ),
    heads=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4),
    avail_idx=st.integers(0, 0xFFFF),
    regs=st.lists(st.tuples(st.integers(0, 0x1FF), st.sampled_from([1, 2, 4, 8]),
                            st.integers(0, 2**64 - 1)), max_size=12),
    device=st.sampled_from(["blk", "rng"]),
)
def test_fuzz_hostile_rings_and_registers(tmp_path_factory, descs, heads, avail_idx, regs,
                                          device) -> None:
    global FUZZ_CASES
    FUZZ_CASES += 1
    tmp = tmp_path_factory.mktemp("fuzz")
    img = tmp / "d.img"
    img.write_bytes(os.urandom(16 * 1024))
    before = img.read_bytes()
    dev = VirtioBlk(open_disk(str(img))) if device == "blk" else VirtioRng()
    d = Driver(dev)
    d.setup(1)
    writes: list[tuple[int, int]] = []
    real_write = d.dma.write

    def record(addr, data):  # every device write into guest memory is recorded
        writes.append((addr, len(data)))
        real_write(addr, data)

    d.dma.write = record  # type: ignore[method-assign]
    q = d.queues[0]
    for i, (addr, length, flags, nxt) in enumerate(descs):
        d.ram.write_bytes(q["desc"] + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))
    for i, head in enumerate(heads):
        d.ram.write(q["avail"] + 4 + 2 * i, 2, head)
    d.ram.write(q["avail"] + 2, 2, avail_idx)
    d.kick(0)
    for off, size, value in regs:
        d.dev.write(off, size, value & ((1 << (8 * size)) - 1))
        d.dev.read(off, size)
    d.kick(0)
    for addr, length in writes:
        assert RAM_BASE <= addr and addr + length <= RAM_BASE + d.ram.size
    assert img.stat().st_size == len(before)  # the image never grows or shrinks
    dev.close()


def test_net_flood_without_receive_buffers_is_left_in_the_kernel(tmp_path: Path) -> None:
    """A guest that posts no receive buffers (idle, no driver): the device takes at most
    its backlog of frames from the switch, then stops watching the port, so a broadcast
    flood costs its VM process nothing until the driver posts buffers."""
    import select

    from pyhv.devices.virtio.net import RX_BACKLOG, VirtioNet
    from pyhv.net import SwitchPort

    flooder = SwitchPort("lan", runtime_dir=str(tmp_path))
    port = SwitchPort("lan", runtime_dir=str(tmp_path))
    try:
        nic = VirtioNet(port, bytes.fromhex("525400000001"))
        d = Driver(nic)
        d.setup(2)
        frame = b"\xff" * 6 + bytes.fromhex("525400000002") + b"\x88\xb5" + bytes(50)
        for _ in range(4):
            for _ in range(200):
                flooder.send(frame)
            nic.poll()
        assert len(nic.backlog) == RX_BACKLOG
        assert nic.wait_fds() == []  # the idle loop sleeps until a timer or a notify
        assert select.select([port.fileno()], [], [], 0)[0]  # the rest waits in the kernel
        # The driver posts buffers: 8 frames go in, and the round's poll takes 8 more
        # from the kernel's queue.
        bufs = [d.add(0, [], [1600])[0] for _ in range(8)]
        d.w(R.QUEUE_NOTIFY, 0)
        assert len(d.used(0)) == 8 and len(nic.backlog) == RX_BACKLOG - 8
        assert nic.wait_fds() == [port.fileno()]
        d.dev.poll()
        assert len(nic.backlog) == RX_BACKLOG  # refilled from the kernel's queue
        assert d.ram.read_bytes(bufs[0] + 12, len(frame)) == frame
    finally:
        flooder.close()
        port.close()


def test_one_notify_moves_at_most_a_rounds_budget(tmp_path: Path) -> None:
    """Eight 4 MiB reads queued at once: one notify serves what fits in the round's work
    budget (16 MiB), the transport says it is busy (the machine does not sleep), and
    the next rounds serve the rest. A guest cannot make one notify cost the host
    seconds, and the host's memory does not grow with a request's size."""
    from pyhv.devices.virtio.device import VirtioDevice

    img = tmp_path / "big.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    d = Driver(VirtioBlk(open_disk(str(img))), ram_size=64 << 20)
    d.setup(1)
    q = d.queues[0]
    data = RAM_BASE + (16 << 20)
    size = 4 << 20
    for i in range(8):
        hdr = d.alloc(blk_req(0, i * (size // 512)))
        status = d.alloc(1)
        table = d.alloc(struct.pack("<QIHH", hdr, 16, 1, 1)
                        + struct.pack("<QIHH", data, size, 3, 2)
                        + struct.pack("<QIHH", status, 1, 2, 0))
        d.ram.write_bytes(q["desc"] + 16 * i, struct.pack("<QIHH", table, 48, 4, 0))
        d.ram.write(q["avail"] + 4 + 2 * i, 2, i)
    d.ram.write(q["avail"] + 2, 2, 8)
    d.w(R.QUEUE_NOTIFY, 0)  # the guest's notify, within one round
    first = len(d.used(0))
    assert 0 < first < 8 and first * size <= VirtioDevice.round_bytes + size
    assert d.dev.busy
    rounds = 0
    while d.dev.busy:
        d.dev.poll()  # the next rounds of the machine loop
        rounds += 1
    assert first + len(d.used(0)) == 8 and rounds >= 1  # (used(): the ones new since)
    assert not d.r(R.STATUS) & R.DEVICE_NEEDS_RESET
