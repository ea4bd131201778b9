"""The host side of a virtual disk: raw images and copy-on-write overlays.

Why it exists: virtio-blk (``blk.py``) speaks sectors to the guest; something has to turn
those sectors into bytes in host files, and do it without ever letting a guest reach
bytes outside its own image. This module is that something. It knows nothing about
virtqueues: the device model calls :meth:`DiskBackend.read` / ``write`` / ``flush`` /
``discard`` with byte offsets, and every refusal is a :class:`DiskError`, which the device
turns into ``VIRTIO_BLK_S_IOERR`` for that one request.

Two backends, chosen by :func:`open_disk`:

* :class:`RawDisk` -- a raw image file (or block device) used as it is. It is opened once
  and accessed with ``os.pread`` / ``os.pwrite`` on whole ranges (no file position, no
  Python-level buffering), so a multi-megabyte guest read costs one system call.
* :class:`OverlayDisk` -- copy-on-write over a read-only base image, so one base image
  serves many VMs: writes land only in a per-VM overlay file, reads come from the
  overlay where a cluster was written and from the base elsewhere.

Both take an advisory ``flock`` on the image (exclusive to write, shared to read), so
two VMs can never write the same image, and a base in use read-write by one VM cannot
serve as the base of another VM's overlay at the same time. ``flock`` locks belong to
the open file description, so two opens in one process conflict too.

Guest-supplied offsets and lengths are hostile: each request must be sector aligned
(512 bytes) and lie entirely inside the disk, or it is refused before any I/O.

Overlay file format, version 1 (all integers little-endian)::

    offset 0     header, 4096 bytes
                   0  magic          8 bytes  b"PYHV-OVL"
                   8  version        u32      1
                  12  header_size    u32      4096
                  16  cluster_size   u32      power of two, 4 KiB .. 2 MiB (default 64 KiB)
                  20  flags          u32      0 (reserved)
                  24  base_size      u64      size in bytes of the base disk (multiple of
                                              512); also the overlay's virtual size
                  32  bitmap_offset  u64      4096
                  40  bitmap_size    u64      ceil(clusters / 8), rounded up to 4096
                  48  data_offset    u64      bitmap end rounded up to cluster_size
                  56  base_path_len  u32      length of the UTF-8 base path that follows
                  60  header_crc32   u32      zlib.crc32 of the 4096-byte header with
                                              this field set to 0
                  64  base_path      bytes    the base path as given when created
                                              (informational; the size is what is checked)
    bitmap_offset  allocation bitmap: bit (i % 8) of byte (i // 8) set = cluster i lives
                   in the overlay
    data_offset    data area: cluster i at data_offset + i * cluster_size, i.e. at its
                   virtual offset; the file is sparse, so unwritten clusters cost nothing

Why this design: a sparse data area at the virtual offset plus a bitmap is the simplest
copy-on-write layout that is robust. There is no allocation table to corrupt, runs of
allocated clusters are contiguous in the file (one ``pread`` for a long read), and the
only metadata that ever changes is bits going from 0 to 1.

Crash safety: a cluster is first written completely (a partial-cluster write copies the
rest of the cluster from the base first), then its bitmap bytes are written (not
fsynced): like a raw image, everything the guest wrote survives the VM process being
killed, FLUSH or not. :meth:`OverlayDisk.flush` fsyncs the data, *then* writes the
changed bitmap pages again and fsyncs, so after a FLUSH the data and the bitmap naming
it are durable in that order. A host crash (power loss) can lose writes the guest never
flushed, as a real disk's write cache can; a cluster first written since the last FLUSH
may then also read back as zeros outside the bytes the guest wrote. Stale data left in
an unmarked cluster by a crash is harmless: the next write to that cluster rewrites all
of it. ``close`` flushes.

Performance: this is on the disk I/O path (moderately hot). Reads and writes are split
only at boundaries where the allocation state changes, never per sector.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import threading
import zlib
from typing import Protocol, runtime_checkable

from pyhv.errors import PyhvError

SECTOR_SIZE = 512

OVERLAY_MAGIC = b"PYHV-OVL"
OVERLAY_VERSION = 1
OVERLAY_HEADER_SIZE = 4096
DEFAULT_CLUSTER_SIZE = 64 * 1024
MIN_CLUSTER_SIZE = 4 * 1024
MAX_CLUSTER_SIZE = 2 * 1024 * 1024
# magic, version, header_size, cluster_size, flags, base_size, bitmap_offset,
# bitmap_size, data_offset, base_path_len, header_crc32
_HEADER = struct.Struct("<8sIIIIQQQQII")
_CRC_OFFSET = 60
_MAX_BASE_PATH = OVERLAY_HEADER_SIZE - _HEADER.size
_BITMAP_PAGE = 4096

# VIRTIO_BLK_T_GET_ID returns at most 20 bytes (virtio 1.1, section 5.2.6).
VIRTIO_BLK_ID_BYTES = 20


class DiskError(PyhvError):
    """A disk image cannot be used, or a request to it is invalid (one line, names the file)."""


@runtime_checkable
class DiskBackend(Protocol):
    """What virtio-blk needs from a disk: sector-aligned byte ranges of a fixed-size disk."""

    path: str
    size: int
    read_only: bool

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def flush(self) -> None: ...

    def discard(self, offset: int, length: int) -> None: ...

    def close(self) -> None: ...

    def device_id(self) -> bytes: ...


# ---------------------------------------------------------------------------- helpers


def _pread_exact(fd: int, length: int, offset: int, name: str) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    # Short reads happen above ~2 GiB per call, or if the file shrank under us.
    parts = [data]
    got = len(data)
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            raise DiskError(
                f"disk image '{name}': short read at offset {offset + got:#x} "
                f"(file truncated while in use?)"
            )
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view = view[done:]
        offset += done


def _device_id_from(path: str) -> bytes:
    """The file's base name, cut to 20 bytes without splitting a UTF-8 character."""
    raw = os.path.basename(os.path.normpath(path)).encode("utf-8", "replace")
    return raw[:VIRTIO_BLK_ID_BYTES].decode("utf-8", "ignore").encode("utf-8")


def _lock(fd: int, shared: bool, path: str) -> None:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DiskError(f"disk image '{path}' is in use by another VM") from None
    except OSError as exc:
        raise DiskError(f"disk image '{path}': cannot lock: {exc.strerror}") from None


def _open_error(path: str, exc: OSError, what: str = "disk image") -> DiskError:
    if exc.errno == errno.ENOENT:
        return DiskError(f"{what} '{path}' does not exist")
    if exc.errno == errno.EISDIR:
        return DiskError(f"{what} '{path}' is a directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return DiskError(f"{what} '{path}': permission denied")
    if exc.errno == errno.EROFS:
        return DiskError(f"{what} '{path}' is on a read-only file system")
    return DiskError(f"{what} '{path}': {exc.strerror}")


def check_request(name: str, size: int, offset: int, length: int) -> None:
    """Refuse a guest request that is misaligned or not entirely inside the disk."""
    if offset % SECTOR_SIZE or length % SECTOR_SIZE:
        raise DiskError(
            f"disk image '{name}': request offset {offset:#x} length {length:#x} "
            f"is not a multiple of {SECTOR_SIZE} bytes"
        )
    if offset < 0 or length < 0 or offset + length > size:
        raise DiskError(
            f"disk image '{name}': request offset {offset:#x} length {length:#x} "
            f"is outside the disk ({size:#x} bytes)"
        )


# ---------------------------------------------------------------------------- raw


class RawDisk:
    """A raw image file (or host block device), used sector for sector.

    The file is opened once, ``O_RDWR`` (or ``O_RDONLY`` when ``read_only``), and locked;
    ``size`` is the file size rounded down to 512 bytes, so trailing bytes of an odd-sized
    file are never touched.
    """

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        # Refuse FIFOs, sockets and character devices before open() can block on them.
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _open_error(path, exc) from None
        if stat.S_ISDIR(st.st_mode):
            raise DiskError(f"disk image '{path}' is a directory")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise DiskError(f"disk image '{path}' is not a regular file or block device")
        if not read_only and not st.st_mode & 0o222:
            # A file with no write bit is an image someone marked read-only; root could
            # still open it O_RDWR, so refuse explicitly rather than silently modify it.
            raise DiskError(
                f"disk image '{path}' is not writable (no write permission); "
                f"use it read-only or through an overlay"
            )
        try:
            self._fd = os.open(path, os.O_RDONLY if read_only else os.O_RDWR)
        except OSError as exc:
            raise _open_error(path, exc) from None
        try:
            st = os.fstat(self._fd)  # the file actually opened, not the one stat()ed
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                raise DiskError(f"disk image '{path}' is not a regular file or block device")
            _lock(self._fd, read_only, path)
            # lseek works for block devices too, whose st_size is 0.
            file_size = os.lseek(self._fd, 0, os.SEEK_END)
            if file_size == 0:
                raise DiskError(f"disk image '{path}' is empty")
            if file_size < SECTOR_SIZE:
                raise DiskError(
                    f"disk image '{path}' is smaller than one {SECTOR_SIZE}-byte sector "
                    f"({file_size} bytes)"
                )
        except BaseException:
            os.close(self._fd)
            raise
        self.file_size = file_size
        self.size = file_size - file_size % SECTOR_SIZE
        self._closed = False

    def __repr__(self) -> str:
        mode = "ro" if self.read_only else "rw"
        return f"RawDisk({self.path!r}, {mode}, size={self.size})"

    def _check_open(self) -> None:
        if self._closed:
            raise DiskError(f"disk image '{self.path}' is closed")

    def read(self, offset: int, length: int) -> bytes:
        self._check_open()
        check_request(self.path, self.size, offset, length)
        return _pread_exact(self._fd, length, offset, self.path)

    def write(self, offset: int, data: bytes) -> None:
        self._check_open()
        if self.read_only:
            raise DiskError(f"disk image '{self.path}' is read-only")
        check_request(self.path, self.size, offset, len(data))
        try:
            _pwrite_all(self._fd, data, offset)
        except OSError as exc:
            raise DiskError(f"disk image '{self.path}': write failed: {exc.strerror}") from None

    def flush(self) -> None:
        self._check_open()
        if self.read_only:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise DiskError(f"disk image '{self.path}': flush failed: {exc.strerror}") from None

    def discard(self, offset: int, length: int) -> None:
        """Validate the range; the space is not reclaimed (discard is only a hint)."""
        self._check_open()
        if self.read_only:
            raise DiskError(f"disk image '{self.path}' is read-only")
        check_request(self.path, self.size, offset, length)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)  # also drops the flock

    def device_id(self) -> bytes:
        return _device_id_from(self.path)

    def __enter__(self) -> RawDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- overlay


def _layout(base_size: int, cluster_size: int) -> tuple[int, int, int]:
    """(bitmap_offset, bitmap_size, data_offset) of a version-1 overlay."""
    clusters = -(-base_size // cluster_size)
    bitmap_bytes = -(-clusters // 8)
    bitmap_size = max(1, -(-bitmap_bytes // _BITMAP_PAGE)) * _BITMAP_PAGE
    bitmap_offset = OVERLAY_HEADER_SIZE
    data_offset = -(-(bitmap_offset + bitmap_size) // cluster_size) * cluster_size
    return bitmap_offset, bitmap_size, data_offset


def _pack_header(cluster_size: int, base_size: int, base_path: str) -> bytes:
    path_bytes = base_path.encode("utf-8", "surrogateescape")
    if len(path_bytes) > _MAX_BASE_PATH:
        raise DiskError(f"base image path '{base_path}' is too long for an overlay header")
    bitmap_offset, bitmap_size, data_offset = _layout(base_size, cluster_size)
    header = bytearray(OVERLAY_HEADER_SIZE)
    _HEADER.pack_into(
        header,
        0,
        OVERLAY_MAGIC,
        OVERLAY_VERSION,
        OVERLAY_HEADER_SIZE,
        cluster_size,
        0,
        base_size,
        bitmap_offset,
        bitmap_size,
        data_offset,
        len(path_bytes),
        0,
    )
    header[_HEADER.size : _HEADER.size + len(path_bytes)] = path_bytes
    struct.pack_into("<I", header, _CRC_OFFSET, zlib.crc32(header))
    return bytes(header)


class OverlayDisk:
    """Copy-on-write overlay over a read-only base image (format: see the module docstring).

    The base is opened read-only with a shared lock and never written; the overlay file
    is locked exclusively. ``size`` is the base disk's size. Use :meth:`open` (create or
    reuse) rather than the constructor.
    """

    read_only = False

    def __init__(
        self, base: RawDisk, overlay_path: str, fd: int, header: tuple[int, ...], bitmap: bytearray
    ) -> None:
        self.base = base
        self.path = overlay_path
        self._fd = fd
        (
            _,
            _,
            _,
            self.cluster_size,
            _,
            self.size,
            self._bitmap_offset,
            _,
            self._data_offset,
            _,
            _,
        ) = header
        self._bitmap = bitmap
        self._dirty_pages: set[int] = set()  # bitmap pages changed since the last flush
        self._lock = threading.Lock()  # one writer at a time (allocation is read-modify-write)
        self._closed = False

    # -- creating and opening

    @classmethod
    def open(
        cls,
        base_path: str,
        overlay_path: str,
        *,
        create: bool = True,
        cluster_size: int = DEFAULT_CLUSTER_SIZE,
    ) -> OverlayDisk:
        """Open ``overlay_path`` over ``base_path``, creating it first if missing and ``create``.

        ``cluster_size`` only applies to a new overlay; an existing one keeps its own.
        """
        if (
            cluster_size & (cluster_size - 1)
            or not MIN_CLUSTER_SIZE <= cluster_size <= MAX_CLUSTER_SIZE
        ):
            raise DiskError(
                f"overlay cluster size {cluster_size} is not a power of two "
                f"between {MIN_CLUSTER_SIZE} and {MAX_CLUSTER_SIZE}"
            )
        if os.path.exists(overlay_path) and os.path.exists(base_path):
            if os.path.samefile(overlay_path, base_path):
                raise DiskError(f"overlay '{overlay_path}' is the base image itself")
        base = RawDisk(base_path, read_only=True)
        try:
            if not os.path.lexists(overlay_path):
                if not create:
                    raise DiskError(f"overlay '{overlay_path}' does not exist")
                cls._create(base, overlay_path, cluster_size)
            return cls._open_existing(base, overlay_path)
        except BaseException:
            base.close()
            raise

    @staticmethod
    def _create(base: RawDisk, overlay_path: str, cluster_size: int) -> None:
        """Write a new, empty overlay atomically: a temporary file, fsynced, then linked.

        ``os.link`` fails if the name exists, so two VMs racing to create the same
        overlay end up sharing one file (and the exclusive lock refuses the second).
        """
        header = _pack_header(cluster_size, base.size, base.path)
        _, bitmap_size, _ = _layout(base.size, cluster_size)
        directory = os.path.dirname(os.path.abspath(overlay_path))
        tmp = f"{overlay_path}.tmp-{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            raise DiskError(
                f"overlay '{overlay_path}': cannot create: directory '{directory}' does not exist"
            ) from None
        except OSError as exc:
            raise _open_error(overlay_path, exc, "overlay") from None
        try:
            try:
                _pwrite_all(fd, header, 0)
                # The bitmap is all zeros: extending the file makes it a hole.
                os.ftruncate(fd, OVERLAY_HEADER_SIZE + bitmap_size)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, overlay_path)
            except FileExistsError:
                pass  # someone else created it meanwhile; use theirs
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise DiskError(f"overlay '{overlay_path}': cannot create: {exc.strerror}") from None
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    @classmethod
    def _open_existing(cls, base: RawDisk, overlay_path: str) -> OverlayDisk:
        try:
            st = os.stat(overlay_path)
        except OSError as exc:
            raise _open_error(overlay_path, exc, "overlay") from None
        if stat.S_ISDIR(st.st_mode):
            raise DiskError(f"overlay '{overlay_path}' is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise DiskError(f"overlay '{overlay_path}' is not a regular file")
        if not st.st_mode & 0o222:
            raise DiskError(f"overlay '{overlay_path}' is not writable (no write permission)")
        try:
            fd = os.open(overlay_path, os.O_RDWR)
        except OSError as exc:
            raise _open_error(overlay_path, exc, "overlay") from None
        try:
            _lock(fd, False, overlay_path)
            header = cls._read_header(fd, overlay_path)
            base_size = header[5]
            if base_size != base.size:
                raise DiskError(
                    f"overlay '{overlay_path}' was made for a base of {base_size} bytes, "
                    f"but '{base.path}' has {base.size} bytes"
                )
            bitmap_offset, bitmap_size = header[6], header[7]
            raw = os.pread(fd, bitmap_size, bitmap_offset)
            if len(raw) != bitmap_size:
                raise DiskError(f"overlay '{overlay_path}' is truncated (bitmap incomplete)")
            return cls(base, overlay_path, fd, header, bytearray(raw))
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _read_header(fd: int, path: str) -> tuple[int, ...]:
        raw = os.pread(fd, OVERLAY_HEADER_SIZE, 0)
        if len(raw) < _HEADER.size or raw[:8] != OVERLAY_MAGIC:
            raise DiskError(f"overlay '{path}' is not a pyhv overlay (bad magic)")
        header = _HEADER.unpack_from(raw)
        (
            _,
            version,
            header_size,
            cluster_size,
            flags,
            base_size,
            bitmap_offset,
            bitmap_size,
            data_offset,
            path_len,
            crc,
        ) = header
        if version != OVERLAY_VERSION:
            raise DiskError(f"overlay '{path}' has unsupported version {version}")
        if len(raw) != OVERLAY_HEADER_SIZE or header_size != OVERLAY_HEADER_SIZE:
            raise DiskError(f"overlay '{path}' has a truncated or malformed header")
        check = bytearray(raw)
        struct.pack_into("<I", check, _CRC_OFFSET, 0)
        if zlib.crc32(check) != crc:
            raise DiskError(f"overlay '{path}' has a corrupt header (checksum mismatch)")
        if (
            flags != 0
            or cluster_size & (cluster_size - 1)
            or not MIN_CLUSTER_SIZE <= cluster_size <= MAX_CLUSTER_SIZE
            or base_size % SECTOR_SIZE
            or (bitmap_offset, bitmap_size, data_offset) != _layout(base_size, cluster_size)
            or path_len > _MAX_BASE_PATH
        ):
            raise DiskError(f"overlay '{path}' has inconsistent header fields")
        return header

    @property
    def base_path(self) -> str:
        """The base path recorded in the overlay header when it was created."""
        raw = os.pread(self._fd, OVERLAY_HEADER_SIZE, 0)
        length = _HEADER.unpack_from(raw)[9]
        return raw[_HEADER.size : _HEADER.size + length].decode("utf-8", "surrogateescape")

    def __repr__(self) -> str:
        return f"OverlayDisk({self.path!r} over {self.base.path!r}, size={self.size})"

    # -- allocation bitmap

    def _allocated(self, cluster: int) -> bool:
        return bool(self._bitmap[cluster >> 3] >> (cluster & 7) & 1)

    def _mark(self, first: int, last: int) -> None:
        bitmap = self._bitmap
        for cluster in range(first, last + 1):
            bitmap[cluster >> 3] |= 1 << (cluster & 7)
        for page in range((first >> 3) // _BITMAP_PAGE, (last >> 3) // _BITMAP_PAGE + 1):
            self._dirty_pages.add(page)

    def _runs(self, offset: int, end: int) -> list[tuple[int, int, bool]]:
        """Split [offset, end) into maximal (start, stop, allocated) runs."""
        cs = self.cluster_size
        runs: list[tuple[int, int, bool]] = []
        cluster = offset // cs
        last = (end - 1) // cs
        start = offset
        state = self._allocated(cluster)
        while cluster < last:
            cluster += 1
            now = self._allocated(cluster)
            if now != state:
                boundary = cluster * cs
                runs.append((start, boundary, state))
                start, state = boundary, now
        runs.append((start, end, state))
        return runs

    # -- DiskBackend

    def _check_open(self) -> None:
        if self._closed:
            raise DiskError(f"overlay '{self.path}' is closed")

    def read(self, offset: int, length: int) -> bytes:
        self._check_open()
        check_request(self.path, self.size, offset, length)
        if length == 0:
            return b""
        parts = []
        for start, stop, allocated in self._runs(offset, offset + length):
            if allocated:
                parts.append(
                    _pread_exact(self._fd, stop - start, self._data_offset + start, self.path)
                )
            else:
                parts.append(self.base.read(start, stop - start))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, offset: int, data: bytes) -> None:
        self._check_open()
        end = offset + len(data)
        check_request(self.path, self.size, offset, len(data))
        if not data:
            return
        view = memoryview(data)
        cs = self.cluster_size
        fd, data_offset = self._fd, self._data_offset
        try:
            with self._lock:
                for start, stop, allocated in self._runs(offset, end):
                    if not allocated:
                        # Copy-on-write: the partial first/last clusters of the run get the
                        # base's bytes around the new data, so the whole cluster is valid
                        # before it is marked allocated.
                        c_start = start - start % cs
                        c_end = min(-(-stop // cs) * cs, self.size)
                        if c_start < start:
                            _pwrite_all(
                                fd, self.base.read(c_start, start - c_start), data_offset + c_start
                            )
                        if stop < c_end:
                            _pwrite_all(fd, self.base.read(stop, c_end - stop), data_offset + stop)
                    _pwrite_all(fd, view[start - offset : stop - offset], data_offset + start)
                    if not allocated:
                        first, last = start // cs, (stop - 1) // cs
                        self._mark(first, last)
                        # The bitmap bytes go to the file now (the page cache), after the
                        # data: a killed VM process keeps what its guest wrote, as with a
                        # raw image (a guest need not FLUSH: ext2 never does).
                        lo, hi = first >> 3, (last >> 3) + 1
                        _pwrite_all(fd, self._bitmap[lo:hi], self._bitmap_offset + lo)
        except OSError as exc:
            raise DiskError(f"overlay '{self.path}': write failed: {exc.strerror}") from None

    def flush(self) -> None:
        """Make every completed write durable: data first, then the bitmap that names it."""
        self._check_open()
        with self._lock:
            try:
                os.fsync(self._fd)
                if not self._dirty_pages:
                    return
                for page in sorted(self._dirty_pages):
                    lo = page * _BITMAP_PAGE
                    _pwrite_all(
                        self._fd, self._bitmap[lo : lo + _BITMAP_PAGE], self._bitmap_offset + lo
                    )
                os.fsync(self._fd)
                self._dirty_pages.clear()
            except OSError as exc:
                raise DiskError(f"overlay '{self.path}': flush failed: {exc.strerror}") from None

    def discard(self, offset: int, length: int) -> None:
        """Validate the range; nothing is reclaimed (discard is only a hint)."""
        self._check_open()
        check_request(self.path, self.size, offset, length)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            os.close(self._fd)
            self.base.close()

    def device_id(self) -> bytes:
        return _device_id_from(self.path)

    def allocated_clusters(self) -> int:
        """How many clusters live in the overlay (for tools and tests)."""
        return sum(bin(byte).count("1") for byte in self._bitmap)

    def __enter__(self) -> OverlayDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- entry point


def open_disk(
    path: str,
    *,
    read_only: bool = False,
    overlay: str | None = None,
    create_overlay: bool = True,
) -> DiskBackend:
    """Open the disk image ``path`` for a VM, through a copy-on-write ``overlay`` if given.

    With ``overlay``, ``path`` is the base (opened read-only, never modified) and the
    overlay file is created when missing (if ``create_overlay``) or reused.
    """
    if overlay is not None:
        if read_only:
            raise DiskError(
                f"disk image '{path}': read-only with an overlay makes no sense "
                f"(--disk ...,ro,overlay); the overlay is what takes the writes"
            )
        return OverlayDisk.open(path, overlay, create=create_overlay)
    return RawDisk(path, read_only=read_only)
