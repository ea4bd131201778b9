"""Disk backends for virtio-blk: raw images and copy-on-write overlays, with real files.

Every test uses real temporary files (locks, fsync and sparse files are the point), and
one group uses the real ext2 root file system the guests boot from, read-only.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyhv.devices.virtio import block_backend
from pyhv.devices.virtio.block_backend import (
    OVERLAY_HEADER_SIZE,
    OVERLAY_MAGIC,
    DiskBackend,
    DiskError,
    OverlayDisk,
    RawDisk,
    open_disk,
)
from pyhv.errors import PyhvError

ROOTFS = Path("/work/shared/guests/rootfs.ext2")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic, position-dependent bytes, so misplaced data is always noticed."""
    block = hashlib.sha256(str(seed).encode()).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(block + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:size])


def make_image(path: Path, size: int, seed: int = 1) -> Path:
    path.write_bytes(pattern(size, seed))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- raw


def test_raw_roundtrip_and_protocol(tmp_path: Path) -> None:
    img = make_image(tmp_path / "disk.img", 64 * 1024)
    disk = open_disk(str(img))
    assert isinstance(disk, RawDisk)
    assert isinstance(disk, DiskBackend)
    assert disk.size == 64 * 1024 and not disk.read_only
    assert disk.read(0, 1024) == pattern(64 * 1024)[:1024]
    disk.write(4096, b"\xab" * 1536)
    assert disk.read(4096, 1536) == b"\xab" * 1536
    assert disk.read(4096 - 512, 512) == pattern(64 * 1024)[4096 - 512 : 4096]
    assert disk.read(0, 0) == b""
    disk.close()


def test_raw_persists_after_reopen(tmp_path: Path) -> None:
    img = make_image(tmp_path / "disk.img", 8192)
    disk = open_disk(str(img))
    disk.write(512, b"hello".ljust(512, b"\0"))
    disk.flush()
    disk.close()
    disk.close()  # idempotent
    again = open_disk(str(img), read_only=True)
    assert again.read(512, 512)[:5] == b"hello"
    again.close()
    assert img.read_bytes()[512:517] == b"hello"


def test_raw_size_rounds_down_and_tail_untouched(tmp_path: Path) -> None:
    img = make_image(tmp_path / "odd.img", 1000)
    disk = open_disk(str(img))
    assert disk.size == 512
    with pytest.raises(DiskError, match="outside the disk"):
        disk.read(512, 512)
    disk.write(0, b"\0" * 512)
    disk.close()
    assert img.read_bytes()[512:] == pattern(1000)[512:]


def test_raw_flush_calls_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = make_image(tmp_path / "disk.img", 4096)
    calls: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    disk = open_disk(str(img))
    disk.write(0, b"x" * 512)
    assert calls == []
    disk.flush()
    assert len(calls) == 1
    disk.close()


def test_raw_read_only_refuses_writes(tmp_path: Path) -> None:
    img = make_image(tmp_path / "disk.img", 4096)
    before = sha256(img)
    disk = open_disk(str(img), read_only=True)
    assert disk.read_only
    with pytest.raises(DiskError, match="read-only"):
        disk.write(0, b"\0" * 512)
    with pytest.raises(DiskError, match="read-only"):
        disk.discard(0, 512)
    disk.flush()  # nothing to flush, no error
    disk.close()
    assert sha256(img) == before


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (1, 512),  # misaligned offset
        (0, 100),  # misaligned length
        (4096, 512),  # starts at the end
        (3584, 1024),  # runs past the end
        (-512, 512),  # negative
        (0, -512),
        (1 << 62, 512),  # huge
    ],
)
def test_raw_hostile_requests_refused(tmp_path: Path, offset: int, length: int) -> None:
    img = make_image(tmp_path / "disk.img", 4096)
    before = sha256(img)
    disk = open_disk(str(img))
    with pytest.raises(DiskError, match="disk.img"):
        disk.read(offset, length)
    if length >= 0:
        with pytest.raises(DiskError, match="disk.img"):
            disk.write(offset, b"\xff" * length)
    with pytest.raises(DiskError):
        disk.discard(offset, length)
    disk.close()
    assert sha256(img) == before
    assert img.stat().st_size == 4096


def test_raw_lock_refuses_second_writer(tmp_path: Path) -> None:
    img = make_image(tmp_path / "disk.img", 4096)
    first = open_disk(str(img))
    # Two opens in one process are two open file descriptions, and flock conflicts.
    with pytest.raises(DiskError, match=r"disk image '.*disk.img' is in use by another VM"):
        open_disk(str(img))
    with pytest.raises(DiskError, match="in use by another VM"):
        open_disk(str(img), read_only=True)
    first.close()
    second = open_disk(str(img))  # the lock went with the close
    second.close()


def test_raw_readers_share_but_exclude_writer(tmp_path: Path) -> None:
    img = make_image(tmp_path / "disk.img", 4096)
    r1 = open_disk(str(img), read_only=True)
    r2 = open_disk(str(img), read_only=True)
    with pytest.raises(DiskError, match="in use by another VM"):
        open_disk(str(img))
    r1.close()
    r2.close()


def test_raw_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.img"
    with pytest.raises(DiskError, match=r"'.*missing.img' does not exist"):
        open_disk(str(missing))
    with pytest.raises(DiskError, match=r"'.*' is a directory"):
        open_disk(str(tmp_path))
    with pytest.raises(DiskError, match=r"'.*' is a directory"):
        open_disk(str(tmp_path), read_only=True)
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    with pytest.raises(DiskError, match=r"'.*empty.img' is empty"):
        open_disk(str(empty))
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(b"x" * 100)
    with pytest.raises(DiskError, match=r"'.*tiny.img' is smaller than one 512-byte sector"):
        open_disk(str(tiny))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(DiskError, match="not a regular file"):
        open_disk(str(fifo), read_only=True)
    assert issubclass(DiskError, PyhvError)


def test_raw_refuses_write_open_of_write_protected_file(tmp_path: Path) -> None:
    # Also holds for root, who could open the file O_RDWR: no write bit means read-only.
    img = make_image(tmp_path / "base.img", 4096)
    img.chmod(0o444)
    with pytest.raises(DiskError, match=r"'.*base.img' is not writable"):
        open_disk(str(img))
    disk = open_disk(str(img), read_only=True)
    assert disk.read(0, 512) == pattern(4096)[:512]
    disk.close()


@pytest.mark.skipif(IS_ROOT, reason="root can read files without read permission")
def test_raw_unreadable_file(tmp_path: Path) -> None:
    img = make_image(tmp_path / "secret.img", 4096)
    img.chmod(0o000)
    with pytest.raises(DiskError, match=r"'.*secret.img': permission denied"):
        open_disk(str(img), read_only=True)


@pytest.mark.skipif(IS_ROOT, reason="root can write files in read-only directories")
def test_raw_write_open_without_permission(tmp_path: Path) -> None:
    img = make_image(tmp_path / "other.img", 4096)
    img.chmod(0o464)  # group-writable only, not by us
    with pytest.raises(DiskError, match=r"'.*other.img': permission denied"):
        open_disk(str(img))


def test_device_id(tmp_path: Path) -> None:
    img = make_image(tmp_path / "disk.img", 4096)
    with RawDisk(str(img)) as disk:
        assert disk.device_id() == b"disk.img"
    long_name = make_image(tmp_path / ("é" * 15 + ".img"), 4096)  # 30 UTF-8 bytes
    with RawDisk(str(long_name)) as disk:
        ident = disk.device_id()
        assert len(ident) <= 20
        assert ident.decode("utf-8") == "é" * 10


def test_closed_disk_refuses_requests(tmp_path: Path) -> None:
    img = make_image(tmp_path / "disk.img", 4096)
    disk = open_disk(str(img))
    disk.close()
    with pytest.raises(DiskError, match="closed"):
        disk.read(0, 512)


# ---------------------------------------------------------------------------- overlay

BASE_SIZE = 1024 * 1024  # 16 clusters of 64 KiB


@pytest.fixture
def base(tmp_path: Path) -> Path:
    img = make_image(tmp_path / "base.img", BASE_SIZE)
    img.chmod(0o444)  # like a shared golden image
    return img


def test_overlay_writes_land_in_overlay_only(tmp_path: Path, base: Path) -> None:
    before = sha256(base)
    ovl = tmp_path / "vm1.ovl"
    disk = open_disk(str(base), overlay=str(ovl))
    assert isinstance(disk, OverlayDisk) and isinstance(disk, DiskBackend)
    assert disk.size == BASE_SIZE and not disk.read_only
    assert ovl.read_bytes()[:8] == OVERLAY_MAGIC
    disk.write(0, b"\x11" * 65536)
    disk.write(300 * 1024, b"\x22" * 4096)
    assert disk.read(0, 65536) == b"\x11" * 65536
    assert disk.read(300 * 1024, 4096) == b"\x22" * 4096
    disk.close()
    assert sha256(base) == before
    assert base.stat().st_size == BASE_SIZE


def test_overlay_unwritten_areas_read_base(tmp_path: Path, base: Path) -> None:
    disk = open_disk(str(base), overlay=str(tmp_path / "vm.ovl"))
    assert disk.read(0, BASE_SIZE) == base.read_bytes()
    disk.write(128 * 1024, b"\x33" * 65536)  # exactly cluster 2
    expected = bytearray(base.read_bytes())
    expected[128 * 1024 : 192 * 1024] = b"\x33" * 65536
    # A read spanning base, overlay, base clusters.
    assert disk.read(0, BASE_SIZE) == bytes(expected)
    assert disk.read(127 * 1024, 2048) == bytes(expected[127 * 1024 : 129 * 1024])
    disk.close()


def test_overlay_partial_cluster_write_keeps_base_rest(tmp_path: Path, base: Path) -> None:
    disk = open_disk(str(base), overlay=str(tmp_path / "vm.ovl"))
    assert isinstance(disk, OverlayDisk)
    # One sector in the middle of cluster 3, and a write straddling clusters 5 and 6.
    disk.write(3 * 65536 + 4096, b"\x44" * 512)
    disk.write(6 * 65536 - 1024, b"\x55" * 2048)
    assert disk.allocated_clusters() == 3
    expected = bytearray(base.read_bytes())
    expected[3 * 65536 + 4096 : 3 * 65536 + 4608] = b"\x44" * 512
    expected[6 * 65536 - 1024 : 6 * 65536 + 1024] = b"\x55" * 2048
    assert disk.read(0, BASE_SIZE) == bytes(expected)
    disk.close()


def test_overlay_reopen_shows_previous_writes(tmp_path: Path, base: Path) -> None:
    ovl = tmp_path / "vm.ovl"
    disk = open_disk(str(base), overlay=str(ovl))
    disk.write(512, b"\x66" * 512)
    disk.write(BASE_SIZE - 512, b"\x77" * 512)  # the very last sector
    disk.close()
    again = open_disk(str(base), overlay=str(ovl), create_overlay=False)
    assert again.read(512, 512) == b"\x66" * 512
    assert again.read(BASE_SIZE - 512, 512) == b"\x77" * 512
    assert again.read(1024, 512) == base.read_bytes()[1024:1536]
    assert isinstance(again, OverlayDisk) and again.base_path == str(base)
    again.close()


def test_overlay_flush_orders_data_before_bitmap(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ovl = tmp_path / "vm.ovl"
    disk = open_disk(str(base), overlay=str(ovl))
    assert isinstance(disk, OverlayDisk)
    events: list[str] = []
    real_fsync, real_pwrite = os.fsync, os.pwrite

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        events.append("bitmap" if offset < disk._data_offset else "data")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "pwrite", pwrite)
    disk.write(0, b"\x01" * 512)
    # The cluster's data (the base's rest of it, then the write), then its bitmap byte
    # (no fsync: that is FLUSH's)
    assert events == ["data", "data", "bitmap"]
    assert ovl.read_bytes()[OVERLAY_HEADER_SIZE] == 1
    events.clear()
    disk.flush()
    assert events == ["fsync", "bitmap", "fsync"]
    assert ovl.read_bytes()[OVERLAY_HEADER_SIZE] == 1
    events.clear()
    disk.write(0, b"\x02" * 512)  # already allocated: nothing new to record
    disk.flush()
    assert events == ["data", "fsync"]
    disk.close()


def test_overlay_keeps_unflushed_writes_when_the_process_is_killed(
        tmp_path: Path, base: Path) -> None:
    """A VM process killed (SIGKILL) after its guest wrote, without a FLUSH (ext2's sync
    sends none): the overlay keeps the writes, as a raw image does."""
    ovl = tmp_path / "vm.ovl"
    script = (
        "import os, signal, sys\n"
        "from pyhv.devices.virtio.block_backend import open_disk\n"
        "d = open_disk(sys.argv[1], overlay=sys.argv[2])\n"
        "d.write(65536 + 512, b'\\x77' * 1024)\n"
        "d.write(3 * 65536, b'\\x66' * 65536)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(base), str(ovl)],
                          capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    again = open_disk(str(base), overlay=str(ovl))
    expected = bytearray(base.read_bytes())
    expected[65536 + 512:65536 + 1536] = b"\x77" * 1024
    expected[3 * 65536:4 * 65536] = b"\x66" * 65536
    assert again.read(0, 4 * 65536) == bytes(expected[:4 * 65536])
    again.close()


def test_overlay_stale_data_in_an_unmarked_cluster_never_leaks(
        tmp_path: Path, base: Path) -> None:
    """A crash between a cluster's data and its bitmap byte leaves data the bitmap does
    not name: it reads as the base, and a partial write rewrites the whole cluster."""
    ovl = tmp_path / "vm.ovl"
    disk = open_disk(str(base), overlay=str(ovl))
    assert isinstance(disk, OverlayDisk)
    os.pwrite(disk._fd, b"\x99" * 65536, disk._data_offset + 65536)  # data, no bitmap
    disk.close()
    again = open_disk(str(base), overlay=str(ovl))
    assert again.read(65536, 65536) == base.read_bytes()[65536:131072]
    again.write(65536 + 512, b"\x88" * 512)  # partial write: the rest must be the base
    expected = bytearray(base.read_bytes()[65536:131072])
    expected[512:1024] = b"\x88" * 512
    assert again.read(65536, 65536) == bytes(expected)
    again.close()


def test_two_overlays_over_one_base_are_independent(tmp_path: Path, base: Path) -> None:
    before = sha256(base)
    a = open_disk(str(base), overlay=str(tmp_path / "a.ovl"))
    b = open_disk(str(base), overlay=str(tmp_path / "b.ovl"))  # shared lock on the base
    a.write(0, b"\xaa" * 512)
    b.write(0, b"\xbb" * 512)
    b.write(70000 // 512 * 512, b"\xbc" * 512)
    assert a.read(0, 512) == b"\xaa" * 512
    assert b.read(0, 512) == b"\xbb" * 512
    assert a.read(70000 // 512 * 512, 512) == base.read_bytes()[69632:70144]
    assert a.device_id() == b"a.ovl" and b.device_id() == b"b.ovl"
    a.close()
    b.close()
    assert sha256(base) == before


def test_overlay_locks(tmp_path: Path, base: Path) -> None:
    ovl = tmp_path / "vm.ovl"
    first = open_disk(str(base), overlay=str(ovl))
    with pytest.raises(DiskError, match=r"'.*vm.ovl' is in use by another VM"):
        open_disk(str(base), overlay=str(ovl))
    base.chmod(0o644)
    # A VM using the base as its overlay's base excludes a writer of the base itself.
    with pytest.raises(DiskError, match=r"'.*base.img' is in use by another VM"):
        open_disk(str(base))
    first.close()
    writer = open_disk(str(base))
    with pytest.raises(DiskError, match="in use by another VM"):
        open_disk(str(base), overlay=str(ovl))
    writer.close()


def test_overlay_base_size_mismatch_refused(tmp_path: Path, base: Path) -> None:
    ovl = tmp_path / "vm.ovl"
    open_disk(str(base), overlay=str(ovl)).close()
    other = make_image(tmp_path / "other.img", BASE_SIZE * 2, seed=2)
    with pytest.raises(DiskError, match=r"overlay '.*vm.ovl' was made for a base of 1048576"):
        open_disk(str(other), overlay=str(ovl))


def test_overlay_option_errors(tmp_path: Path, base: Path) -> None:
    with pytest.raises(DiskError, match="makes no sense"):
        open_disk(str(base), read_only=True, overlay=str(tmp_path / "x.ovl"))
    with pytest.raises(DiskError, match=r"overlay '.*missing.ovl' does not exist"):
        open_disk(str(base), overlay=str(tmp_path / "missing.ovl"), create_overlay=False)
    assert not (tmp_path / "missing.ovl").exists()
    with pytest.raises(DiskError, match=r"'.*nobase.img' does not exist"):
        open_disk(str(tmp_path / "nobase.img"), overlay=str(tmp_path / "y.ovl"))
    assert not (tmp_path / "y.ovl").exists()
    with pytest.raises(DiskError, match="is the base image itself"):
        open_disk(str(base), overlay=str(base))
    with pytest.raises(DiskError, match="is a directory"):
        open_disk(str(base), overlay=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.img"]  # no temp files left


def test_overlay_rejects_foreign_or_corrupt_files(tmp_path: Path, base: Path) -> None:
    junk = tmp_path / "junk.ovl"
    junk.write_bytes(b"QFI\xfb" + b"\0" * 8188)
    with pytest.raises(DiskError, match="not a pyhv overlay"):
        open_disk(str(base), overlay=str(junk))

    ovl = tmp_path / "vm.ovl"
    open_disk(str(base), overlay=str(ovl)).close()
    raw = bytearray(ovl.read_bytes())

    newer = bytearray(raw)
    struct.pack_into("<I", newer, 8, 99)
    ovl.write_bytes(newer)
    with pytest.raises(DiskError, match="unsupported version 99"):
        open_disk(str(base), overlay=str(ovl))

    flipped = bytearray(raw)
    flipped[20] ^= 1  # flags, covered by the checksum
    ovl.write_bytes(flipped)
    with pytest.raises(DiskError, match="checksum"):
        open_disk(str(base), overlay=str(ovl))

    ovl.write_bytes(raw[: OVERLAY_HEADER_SIZE + 10])
    with pytest.raises(DiskError, match="truncated"):
        open_disk(str(base), overlay=str(ovl))


def test_overlay_hostile_requests(tmp_path: Path, base: Path) -> None:
    ovl = tmp_path / "vm.ovl"
    disk = open_disk(str(base), overlay=str(ovl))
    for offset, length in [(1, 512), (0, 7), (BASE_SIZE, 512), (BASE_SIZE - 512, 1024)]:
        with pytest.raises(DiskError, match="vm.ovl"):
            disk.read(offset, length)
        with pytest.raises(DiskError, match="vm.ovl"):
            disk.write(offset, b"\xee" * length)
    disk.close()
    assert OverlayDisk.open(str(base), str(ovl)).allocated_clusters() == 0


def test_overlay_is_sparse(tmp_path: Path) -> None:
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # a sparse 1 GiB base
    ovl = tmp_path / "vm.ovl"
    disk = open_disk(str(big), overlay=str(ovl))
    disk.write((1 << 30) - 4096, b"\x12" * 4096)
    disk.close()
    assert ovl.stat().st_blocks * 512 < 1 << 20  # only the header, bitmap, one cluster


# ---------------------------------------------------------------------------- model check

SECTORS_MODEL = 61  # 30.5 KiB disk, 4 KiB clusters: the last cluster is partial


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, int, int, int]]:
    ops = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["write", "write", "read", "flush", "reopen"]))
        sector = draw(st.integers(0, SECTORS_MODEL - 1))
        count = draw(st.integers(0, SECTORS_MODEL - sector))
        ops.append((kind, sector, count, draw(st.integers(0, 255))))
    return ops


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations())
def test_overlay_matches_bytearray_model(ops: list[tuple[str, int, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base_path = os.path.join(tmp, "base.img")
        ovl_path = os.path.join(tmp, "vm.ovl")
        base_bytes = pattern(SECTORS_MODEL * 512, seed=7)
        with open(base_path, "wb") as f:
            f.write(base_bytes)
        model = bytearray(base_bytes)
        disk = OverlayDisk.open(base_path, ovl_path, cluster_size=4096)
        try:
            for kind, sector, count, fill in ops:
                offset, length = sector * 512, count * 512
                if kind == "write":
                    data = bytes((fill + i) & 0xFF for i in range(length))
                    disk.write(offset, data)
                    model[offset : offset + length] = data
                elif kind == "read":
                    assert disk.read(offset, length) == bytes(model[offset : offset + length])
                elif kind == "flush":
                    disk.flush()
                else:
                    disk.close()
                    disk = OverlayDisk.open(base_path, ovl_path, create=False)
            assert disk.read(0, len(model)) == bytes(model)
        finally:
            disk.close()
        with open(base_path, "rb") as f:
            assert f.read() == base_bytes


# ---------------------------------------------------------------------------- real image


@pytest.mark.skipif(not ROOTFS.exists(), reason="guest rootfs.ext2 not built")
def test_real_ext2_image_read_only_and_overlay(tmp_path: Path) -> None:
    before = sha256(ROOTFS)
    disk = open_disk(str(ROOTFS), read_only=True)
    assert disk.size == ROOTFS.stat().st_size
    superblock_sector = disk.read(1024, 512)
    assert struct.unpack_from("<H", superblock_sector, 56)[0] == 0xEF53  # s_magic at 1080
    disk.close()

    ovl = tmp_path / "rootfs.ovl"
    with OverlayDisk.open(str(ROOTFS), str(ovl)) as over:
        assert over.read(1024, 512) == superblock_sector
        over.write(1024, b"\0" * 512)  # wipe the superblock, in the overlay only
        assert over.read(1024, 512) == b"\0" * 512
        assert over.read(0, 1024) == ROOTFS.read_bytes()[:1024]
    assert sha256(ROOTFS) == before
    reopened = open_disk(str(ROOTFS), overlay=str(ovl))
    assert reopened.read(1024, 512) == b"\0" * 512
    reopened.close()


def test_module_exports() -> None:
    assert block_backend.SECTOR_SIZE == 512
    assert block_backend.DEFAULT_CLUSTER_SIZE == 64 * 1024
