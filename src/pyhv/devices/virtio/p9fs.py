"""A 9P2000.L file server over one host directory (the share behind virtio-9p, p9.py).

The protocol is the one the Linux v9fs client speaks with ``version=9p2000.L``: a
message is ``size[4] type[1] tag[2]`` and its fields, little-endian, strings as
``len[2]`` + UTF-8; every error is ``Rlerror`` with a Linux errno. The server is plain
Python with no guest in sight (``handle(request) -> reply``), so tests drive it directly.

Confinement is the point of this module: a guest must never reach outside the shared
directory. So no guest-supplied path string is ever handed to the host's path
resolution. Each fid holds a file descriptor (``O_PATH``) to its own file, and a walk
opens one component at a time relative to its parent's descriptor with ``O_NOFOLLOW``:
names holding ``/`` or NUL are refused, ``.`` stays put, and ``..`` is answered from the
fid's own path inside the share, so ``..`` at the root stays at the root. Symbolic
links are created and read as data but never followed by the server (the guest kernel
resolves them, in the guest's namespace). A fid keeps its descriptor when the guest or
the host renames or swaps what lies above it, so a race between two walks cannot steer a
later operation elsewhere. Opening a file for I/O reopens the fid's descriptor through
``/proc/self/fd`` (the inode itself, not a path), and only regular files and
directories are opened: a FIFO or a device node would block or reach host hardware.

Hot path: Tread/Twrite (one pread/pwrite each); the rest is written for clarity.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import time
from dataclasses import dataclass, field

# Message types (9P2000.L and the 9P2000 ones it keeps)
TLERROR, RLERROR = 6, 7
TSTATFS = 8
TLOPEN = 12
TLCREATE = 14
TSYMLINK = 16
TMKNOD = 18
TRENAME = 20
TREADLINK = 22
TGETATTR = 24
TSETATTR = 26
TXATTRWALK = 30
TXATTRCREATE = 32
TREADDIR = 40
TFSYNC = 50
TLOCK = 52
TGETLOCK = 54
TLINK = 70
TMKDIR = 72
TRENAMEAT = 74
TUNLINKAT = 76
TVERSION = 100
TAUTH = 102
TATTACH = 104
TFLUSH = 108
TWALK = 110
TREAD = 116
TWRITE = 118
TCLUNK = 120
TREMOVE = 122

NOTAG = 0xFFFF
NOFID = 0xFFFFFFFF
HEADER = 7  # size[4] type[1] tag[2]
MAX_WELEM = 16  # names in one Twalk (the protocol's limit)
MAX_MSIZE = 512 * 1024  # largest message the server accepts (Linux asks for 128 KiB)
MIN_MSIZE = 4096
MAX_FIDS = 65536  # fids of all shares together, at most (see _fid_cap)
FD_RESERVE = 1024  # descriptors left for the rest of the VMM whatever the guests do
VERSION_L = "9P2000.L"

QTDIR = 0x80
QTSYMLINK = 0x02
QTFILE = 0x00

P9_GETATTR_BASIC = 0x000007FF
SETATTR_MODE, SETATTR_UID, SETATTR_GID, SETATTR_SIZE = 0x1, 0x2, 0x4, 0x8
SETATTR_ATIME, SETATTR_MTIME, SETATTR_CTIME = 0x10, 0x20, 0x40
SETATTR_ATIME_SET, SETATTR_MTIME_SET = 0x80, 0x100
AT_REMOVEDIR = 0x200
V9FS_MAGIC = 0x01021997
P9_LOCK_SUCCESS = 0
F_UNLCK = 2

# Linux's generic open flags, as 9P2000.L carries them (the host's may differ in value)
L_O_ACCMODE = 0o3
L_O_CREAT = 0o100
L_O_EXCL = 0o200
L_O_TRUNC = 0o1000
L_O_APPEND = 0o2000
L_O_DIRECTORY = 0o200000

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HDR = struct.Struct("<IBH")
_QID = struct.Struct("<BIQ")


class P9Error(Exception):
    """A request answered with Rlerror ``errno``."""

    def __init__(self, err: int, why: str = "") -> None:
        super().__init__(why or os.strerror(err))
        self.errno = err


def _einval(why: str) -> P9Error:
    return P9Error(errno.EINVAL, why)


class Reader:
    """Fields of one message, every length checked against what is there."""

    def __init__(self, data: bytes | memoryview, pos: int = HEADER) -> None:
        self.data = data
        self.pos = pos

    def _take(self, n: int) -> bytes | memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise _einval("message shorter than its fields")
        piece = self.data[self.pos:end]
        self.pos = end
        return piece

    def u8(self) -> int:
        return int(_U8.unpack(self._take(1))[0])

    def u16(self) -> int:
        return int(_U16.unpack(self._take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self._take(8))[0])

    def string(self) -> str:
        raw = bytes(self._take(self.u16()))
        try:
            return raw.decode("utf-8", "surrogateescape")
        except UnicodeDecodeError:  # (surrogateescape takes any bytes; kept for mypy)
            raise _einval("string is not UTF-8") from None

    def blob(self, n: int) -> bytes | memoryview:
        return self._take(n)


def _s(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    return _U16.pack(len(raw)) + raw


def _qid(st: os.stat_result) -> bytes:
    if stat.S_ISDIR(st.st_mode):
        qtype = QTDIR
    elif stat.S_ISLNK(st.st_mode):
        qtype = QTSYMLINK
    else:
        qtype = QTFILE
    # version: what changes when the file does (the client's cache uses it)
    version = (st.st_mtime_ns ^ st.st_size) & 0xFFFFFFFF
    return _QID.pack(qtype, version, st.st_ino & 0xFFFFFFFFFFFFFFFF)


def _dt_type(mode: int) -> int:
    """The d_type of a directory entry (DT_* of dirent.h)."""
    for test, dt in ((stat.S_ISDIR, 4), (stat.S_ISREG, 8), (stat.S_ISLNK, 10),
                     (stat.S_ISCHR, 2), (stat.S_ISBLK, 6), (stat.S_ISFIFO, 1),
                     (stat.S_ISSOCK, 12)):
        if test(mode):
            return dt
    return 0


def check_name(name: str) -> str:
    """A single directory entry name from the guest: not empty, no ``/`` or NUL, and not
    ``.`` or ``..`` (which would name something other than a new entry)."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise P9Error(errno.EINVAL if name not in (".", "..") else errno.EEXIST,
                      f"bad file name {name[:40]!r}")
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        raise P9Error(errno.ENAMETOOLONG)
    return name


def _file_mode(mode: int) -> int:
    """Permission bits a guest may give a host file: never set-user-ID or set-group-ID,
    which would turn a guest's file into a privileged program for the host's users."""
    return mode & 0o1777


def _proc_fd(fd: int) -> str:
    """The inode behind ``fd`` as a path (a magic link: no name is looked up)."""
    return f"/proc/self/fd/{fd}"


@dataclass
class Fid:
    """The guest's handle on one file of the share: a descriptor to the file itself
    (O_PATH), its path inside the share (for ``..`` and snapshots), and, once Tlopen'd,
    a descriptor for I/O."""

    fd: int
    path: tuple[str, ...]
    mode: int  # st_mode when walked to
    io_fd: int | None = None
    open_flags: int | None = None  # the guest's Tlopen flags (Linux values)
    dir_entries: list[tuple[bytes, int, int, str]] | None = field(default=None, repr=False)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class P9Server:
    """The 9P2000.L server of one shared directory.

    ``read_only``: every request that would change the share fails with EROFS."""

    live_fids = 0  # fids of every server in this process (their cap is shared)

    def __init__(self, root: str, read_only: bool = False) -> None:
        self.root = root
        self.read_only = read_only
        self.root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.max_fids = _fid_cap()
        self.msize = MAX_MSIZE
        self.version = ""  # "" until Tversion
        self.fids: dict[int, Fid] = {}
        self.stats = {"requests": 0, "errors": 0, "read_bytes": 0, "write_bytes": 0}

    # -- the one entry point --------------------------------------------------------------

    def handle(self, request: bytes | memoryview) -> bytes:
        """The reply to one request message. Never raises: whatever the guest sent, the
        answer is a reply (Rlerror for anything wrong with it)."""
        self.stats["requests"] += 1
        tag = NOTAG
        try:
            if len(request) < HEADER:
                raise _einval("message shorter than its header")
            size, mtype, tag = _HDR.unpack_from(request)
            if size < HEADER or size > len(request):
                raise _einval(f"message size {size} does not fit {len(request)} bytes")
            if size > self.msize and mtype != TVERSION:
                raise _einval(f"message of {size} bytes is over msize {self.msize}")
            handler = _HANDLERS.get(mtype)
            if handler is None or mtype % 2:
                raise P9Error(errno.EOPNOTSUPP, f"message type {mtype}")
            if mtype != TVERSION and not self.version:
                raise _einval("no Tversion yet")
            body = handler(self, Reader(memoryview(request)[:size]))
            return _HDR.pack(HEADER + len(body), mtype + 1, tag) + body
        except P9Error as e:
            err = e.errno
        except OSError as e:
            err = e.errno or errno.EIO
        except (ValueError, OverflowError, struct.error):
            err = errno.EINVAL
        except Exception:  # a bug here must not become the guest's crash of the VMM
            err = errno.EIO
        self.stats["errors"] += 1
        return _HDR.pack(HEADER + 4, RLERROR, tag) + _U32.pack(err)

    # -- helpers --------------------------------------------------------------------------

    def _fid(self, fid: int) -> Fid:
        f = self.fids.get(fid)
        if f is None:
            raise P9Error(errno.EBADF, f"unknown fid {fid}")
        return f

    def _dir_fid(self, fid: int) -> Fid:
        f = self._fid(fid)
        if not f.is_dir:
            raise P9Error(errno.ENOTDIR)
        return f

    def _writable(self) -> None:
        if self.read_only:
            raise P9Error(errno.EROFS)

    def _new_fid(self, fid: int, f: Fid) -> None:
        if fid == NOFID:
            self._close(f)
            raise _einval("NOFID as a new fid")
        old = self.fids.pop(fid, None)
        if old is not None:
            self._close(old)
        elif P9Server.live_fids >= self.max_fids:
            self._close(f)
            raise P9Error(errno.EMFILE, "too many fids")
        else:
            P9Server.live_fids += 1
        self.fids[fid] = f

    def _drop_fid(self, fid: int) -> Fid | None:
        f = self.fids.pop(fid, None)
        if f is not None:
            P9Server.live_fids -= 1
            self._close(f)
        return f

    def _drop_all(self) -> None:
        for fid in list(self.fids):
            self._drop_fid(fid)

    @staticmethod
    def _close(f: Fid) -> None:
        for fd in (f.io_fd, f.fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        f.io_fd = None

    def _open_at(self, dir_fd: int, name: str) -> tuple[int, os.stat_result]:
        """An O_PATH descriptor to entry ``name`` of ``dir_fd``, never following a link."""
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            return fd, os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise

    def _walk_path(self, path: tuple[str, ...]) -> tuple[int, os.stat_result]:
        """A descriptor for ``path`` inside the share, walked from the root."""
        fd = os.dup(self.root_fd)
        st = os.fstat(fd)
        try:
            for name in path:
                if not stat.S_ISDIR(st.st_mode):
                    raise P9Error(errno.ENOTDIR)
                nfd, st = self._open_at(fd, name)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def _step(self, fd: int, path: tuple[str, ...], mode: int, name: str,
              ) -> tuple[int, tuple[str, ...], os.stat_result]:
        """One walk step from (fd, path): returns a new descriptor (the caller owns it)."""
        if name == "" or "/" in name or "\0" in name:
            raise P9Error(errno.ENOENT, f"bad name {name[:40]!r}")
        if not stat.S_ISDIR(mode):
            raise P9Error(errno.ENOTDIR)
        if name == ".":
            nfd = os.dup(fd)
            return nfd, path, os.fstat(nfd)
        if name == "..":
            # Answered from the fid's place in the share, never by the host's "..": the
            # root's parent is the root, as on any 9P server.
            parent = path[:-1]
            nfd, st = self._walk_path(parent)
            return nfd, parent, st
        check_name(name)
        nfd, st = self._open_at(fd, name)
        return nfd, (*path, name), st

    def _track_rename(self, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        """Fids at or below ``old`` now live at ``new`` (their descriptors followed)."""
        n = len(old)
        for f in self.fids.values():
            if f.path[:n] == old:
                f.path = new + f.path[n:]

    def _iounit(self) -> int:
        return self.msize - 24  # room for an Rread/Twrite header

    # -- messages -------------------------------------------------------------------------

    def t_version(self, r: Reader) -> bytes:
        msize = r.u32()
        version = r.string()
        if msize < MIN_MSIZE:
            raise _einval(f"msize {msize} is below {MIN_MSIZE}")
        # A new session: every fid of the old one goes (9P: Tversion aborts them).
        self._drop_all()
        self.msize = min(msize, MAX_MSIZE)
        self.version = VERSION_L if version == VERSION_L else ""
        return _U32.pack(self.msize) + _s(self.version or "unknown")

    def t_auth(self, r: Reader) -> bytes:
        raise P9Error(errno.EOPNOTSUPP, "no authentication needed")

    def t_attach(self, r: Reader) -> bytes:
        fid = r.u32()
        r.u32()  # afid
        r.string()  # uname
        r.string()  # aname: the share is one tree; what the guest names is ignored
        r.u32()  # n_uname
        fd = os.dup(self.root_fd)
        st = os.fstat(fd)
        self._new_fid(fid, Fid(fd, (), st.st_mode))
        return _qid(st)

    def t_flush(self, r: Reader) -> bytes:
        r.u16()  # oldtag: every request is answered before the next is read
        return b""

    def t_walk(self, r: Reader) -> bytes:
        fid, newfid, nwname = r.u32(), r.u32(), r.u16()
        if nwname > MAX_WELEM:
            raise _einval(f"walk of {nwname} names (at most {MAX_WELEM})")
        names = [r.string() for _ in range(nwname)]
        f = self._fid(fid)
        if newfid != fid and newfid in self.fids:
            raise P9Error(errno.EBADF, f"fid {newfid} is in use")
        if newfid == fid and f.io_fd is not None:
            raise P9Error(errno.EBADF, "walk of an open fid onto itself")
        fd = os.dup(f.fd)
        path, mode = f.path, f.mode
        qids: list[bytes] = []
        try:
            for name in names:
                try:
                    nfd, path, st = self._step(fd, path, mode, name)
                except (OSError, P9Error):
                    if not qids:
                        raise
                    os.close(fd)
                    return _U16.pack(len(qids)) + b"".join(qids)  # a partial walk
                os.close(fd)
                fd, mode = nfd, st.st_mode
                qids.append(_qid(st))
        except BaseException:
            os.close(fd)
            raise
        if newfid == fid:
            self._close(f)
            f.fd, f.path, f.mode, f.open_flags, f.dir_entries = fd, path, mode, None, None
        else:
            self._new_fid(newfid, Fid(fd, path, mode))
        return _U16.pack(len(qids)) + b"".join(qids)

    def _host_flags(self, flags: int) -> int:
        acc = flags & L_O_ACCMODE
        host = {0: os.O_RDONLY, 1: os.O_WRONLY, 2: os.O_RDWR}.get(acc)
        if host is None:
            raise _einval("bad access mode")
        if acc != 0 or flags & (L_O_TRUNC | L_O_APPEND):
            self._writable()
        if flags & L_O_TRUNC:
            host |= os.O_TRUNC
        if flags & L_O_APPEND:
            host |= os.O_APPEND
        return host | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK

    def t_lopen(self, r: Reader) -> bytes:
        fid, flags = r.u32(), r.u32()
        f = self._fid(fid)
        if f.io_fd is not None:
            raise P9Error(errno.EBADF, "fid already open")
        host = self._host_flags(flags)
        if f.is_dir:
            if host & (os.O_WRONLY | os.O_RDWR):
                raise P9Error(errno.EISDIR)
            host |= os.O_DIRECTORY
        elif not stat.S_ISREG(f.mode):
            # FIFOs would block the VMM, device nodes reach host hardware, and a symlink
            # is read with Treadlink, never opened (and so never followed).
            raise P9Error(errno.ELOOP if stat.S_ISLNK(f.mode) else errno.EACCES)
        io_fd = os.open(_proc_fd(f.fd), host)
        f.io_fd, f.open_flags, f.dir_entries = io_fd, flags, None
        return _qid(os.fstat(io_fd)) + _U32.pack(self._iounit())

    def t_lcreate(self, r: Reader) -> bytes:
        fid, name, flags, mode, _gid = r.u32(), r.string(), r.u32(), r.u32(), r.u32()
        f = self._dir_fid(fid)
        if f.io_fd is not None:
            raise P9Error(errno.EBADF, "fid already open")
        check_name(name)
        self._writable()
        host = self._host_flags(flags) | os.O_CREAT | os.O_NOFOLLOW
        if flags & L_O_EXCL:
            host |= os.O_EXCL
        io_fd = os.open(name, host, _file_mode(mode), dir_fd=f.fd)
        try:
            st = os.fstat(io_fd)
            if not stat.S_ISREG(st.st_mode):  # an existing FIFO or device under that name
                raise P9Error(errno.EACCES)
            path_fd = os.open(_proc_fd(io_fd), os.O_PATH | os.O_CLOEXEC)
        except BaseException:
            os.close(io_fd)
            raise
        os.close(f.fd)
        f.fd, f.path, f.mode = path_fd, (*f.path, name), st.st_mode
        f.io_fd, f.open_flags, f.dir_entries = io_fd, flags, None
        return _qid(st) + _U32.pack(self._iounit())

    def t_read(self, r: Reader) -> bytes:
        fid, offset, count = r.u32(), r.u64(), r.u32()
        f = self._fid(fid)
        if f.io_fd is None or f.is_dir:
            raise P9Error(errno.EBADF if f.io_fd is None else errno.EISDIR)
        if offset >= 1 << 63:
            raise _einval("offset")
        data = os.pread(f.io_fd, min(count, self.msize - 11), offset)
        self.stats["read_bytes"] += len(data)
        return _U32.pack(len(data)) + data

    def t_write(self, r: Reader) -> bytes:
        fid, offset, count = r.u32(), r.u64(), r.u32()
        data = r.blob(count)
        f = self._fid(fid)
        if f.io_fd is None:
            raise P9Error(errno.EBADF)
        self._writable()
        if offset >= 1 << 63:
            raise _einval("offset")
        n = os.pwrite(f.io_fd, data, offset)
        self.stats["write_bytes"] += n
        return _U32.pack(n)

    def t_clunk(self, r: Reader) -> bytes:
        if self._drop_fid(r.u32()) is None:
            raise P9Error(errno.EBADF)
        return b""

    def t_remove(self, r: Reader) -> bytes:
        fid = r.u32()
        f = self._fid(fid)
        try:
            self._writable()
            if not f.path:
                raise P9Error(errno.EBUSY, "the share's root")
            parent_fd, _ = self._walk_path(f.path[:-1])
            try:
                if f.is_dir:
                    os.rmdir(f.path[-1], dir_fd=parent_fd)
                else:
                    os.unlink(f.path[-1], dir_fd=parent_fd)
            finally:
                os.close(parent_fd)
        finally:  # Tremove clunks the fid whatever happens
            self._drop_fid(fid)
        return b""

    def t_getattr(self, r: Reader) -> bytes:
        fid, _mask = r.u32(), r.u64()
        st = os.fstat(self._fid(fid).fd)
        return struct.pack(
            "<Q13sIII15Q", P9_GETATTR_BASIC, _qid(st), st.st_mode,
            st.st_uid, st.st_gid, st.st_nlink, st.st_rdev, st.st_size, st.st_blksize,
            st.st_blocks, *_ts(st.st_atime_ns), *_ts(st.st_mtime_ns), *_ts(st.st_ctime_ns),
            0, 0, 0, 0)

    def t_setattr(self, r: Reader) -> bytes:
        fid, valid, mode, uid, gid = r.u32(), r.u32(), r.u32(), r.u32(), r.u32()
        size = r.u64()
        atime = (r.u64(), r.u64())
        mtime = (r.u64(), r.u64())
        f = self._fid(fid)
        if valid & ~SETATTR_CTIME:
            self._writable()
        is_link = stat.S_ISLNK(f.mode)
        target = _proc_fd(f.fd)  # the inode itself; a symlink's attributes are its own
        if valid & SETATTR_MODE and not is_link:
            # (a directory may keep set-group-ID: it only picks new files' group)
            os.chmod(target, mode & (0o3777 if f.is_dir else 0o1777))
        if valid & (SETATTR_UID | SETATTR_GID) and not is_link:
            os.chown(target, uid if valid & SETATTR_UID else -1,
                     gid if valid & SETATTR_GID else -1)
        if valid & SETATTR_SIZE:
            if f.is_dir:
                raise P9Error(errno.EISDIR)
            if is_link or not stat.S_ISREG(f.mode):
                raise _einval("truncate of a non-regular file")
            if f.io_fd is not None and f.open_flags is not None and f.open_flags & 3:
                os.ftruncate(f.io_fd, size)
            else:
                os.truncate(target, size)
        if valid & (SETATTR_ATIME | SETATTR_MTIME) and not is_link:
            st = os.fstat(f.fd)
            now = time.time_ns()
            # a time to change is the one given (its _SET bit) or else "now"; the other
            # keeps its value
            a = ((atime[0] * 10**9 + atime[1]) if valid & SETATTR_ATIME_SET else now
                 ) if valid & SETATTR_ATIME else st.st_atime_ns
            m = ((mtime[0] * 10**9 + mtime[1]) if valid & SETATTR_MTIME_SET else now
                 ) if valid & SETATTR_MTIME else st.st_mtime_ns
            os.utime(target, ns=(a, m))
        return b""

    def t_readdir(self, r: Reader) -> bytes:
        fid, offset, count = r.u32(), r.u64(), r.u32()
        f = self._fid(fid)
        if f.io_fd is None or not f.is_dir:
            raise P9Error(errno.EBADF if f.io_fd is None else errno.ENOTDIR)
        if f.dir_entries is None or offset == 0:
            f.dir_entries = self._list_dir(f)
        count = min(count, self.msize - 11)
        out = bytearray()
        # An entry's offset is its index + 1: what the client sends to continue.
        for i in range(min(offset, len(f.dir_entries)), len(f.dir_entries)):
            qid, dtype, _ino, name = f.dir_entries[i]
            entry = qid + _U64.pack(i + 1) + _U8.pack(dtype) + _s(name)
            if len(out) + len(entry) > count:
                if not out:
                    raise _einval("readdir buffer too small for one entry")
                break
            out += entry
        return _U32.pack(len(out)) + bytes(out)

    def _list_dir(self, f: Fid) -> list[tuple[bytes, int, int, str]]:
        assert f.io_fd is not None
        entries = []
        here = os.fstat(f.fd)
        entries.append((_qid(here), 4, here.st_ino, "."))
        parent_fd, parent = self._walk_path(f.path[:-1]) if f.path else (None, here)
        if parent_fd is not None:
            os.close(parent_fd)
        entries.append((_qid(parent), 4, parent.st_ino, ".."))
        for name in sorted(os.listdir(f.io_fd)):
            try:
                st = os.stat(name, dir_fd=f.io_fd, follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            entries.append((_qid(st), _dt_type(st.st_mode), st.st_ino, name))
        return entries

    def t_mkdir(self, r: Reader) -> bytes:
        fid, name, mode, _gid = r.u32(), r.string(), r.u32(), r.u32()
        f = self._dir_fid(fid)
        check_name(name)
        self._writable()
        os.mkdir(name, mode & 0o3777, dir_fd=f.fd)
        return _qid(os.stat(name, dir_fd=f.fd, follow_symlinks=False))

    def t_symlink(self, r: Reader) -> bytes:
        fid, name, target, _gid = r.u32(), r.string(), r.string(), r.u32()
        f = self._dir_fid(fid)
        check_name(name)
        self._writable()
        if "\0" in target or not target:
            raise _einval("symlink target")
        os.symlink(target, name, dir_fd=f.fd)  # stored as data; never followed here
        return _qid(os.stat(name, dir_fd=f.fd, follow_symlinks=False))

    def t_mknod(self, r: Reader) -> bytes:
        fid, name, mode, _major, _minor, _gid = (r.u32(), r.string(), r.u32(), r.u32(),
                                                 r.u32(), r.u32())
        f = self._dir_fid(fid)
        check_name(name)
        self._writable()
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISREG(mode)):
            raise P9Error(errno.EPERM, "device nodes are not created in a share")
        os.mknod(name, _file_mode(mode) | stat.S_IFMT(mode), dir_fd=f.fd)
        return _qid(os.stat(name, dir_fd=f.fd, follow_symlinks=False))

    def t_readlink(self, r: Reader) -> bytes:
        f = self._fid(r.u32())
        if not stat.S_ISLNK(f.mode):
            raise _einval("not a symbolic link")
        return _s(os.readlink("", dir_fd=f.fd))

    def t_link(self, r: Reader) -> bytes:
        dfid, fid, name = r.u32(), r.u32(), r.string()
        d = self._dir_fid(dfid)
        f = self._fid(fid)
        check_name(name)
        self._writable()
        if f.is_dir or stat.S_ISLNK(f.mode):
            raise P9Error(errno.EPERM)
        # linkat of the inode the fid holds (through its magic link): no name lookup
        os.link(_proc_fd(f.fd), name, dst_dir_fd=d.fd, follow_symlinks=True)
        return b""

    def t_renameat(self, r: Reader) -> bytes:
        olddir, oldname, newdir, newname = r.u32(), r.string(), r.u32(), r.string()
        od, nd = self._dir_fid(olddir), self._dir_fid(newdir)
        check_name(oldname)
        check_name(newname)
        self._writable()
        os.rename(oldname, newname, src_dir_fd=od.fd, dst_dir_fd=nd.fd)
        self._track_rename((*od.path, oldname), (*nd.path, newname))
        return b""

    def t_rename(self, r: Reader) -> bytes:
        fid, dfid, name = r.u32(), r.u32(), r.string()
        f = self._fid(fid)
        d = self._dir_fid(dfid)
        check_name(name)
        self._writable()
        if not f.path:
            raise P9Error(errno.EBUSY, "the share's root")
        parent_fd, _ = self._walk_path(f.path[:-1])
        try:
            os.rename(f.path[-1], name, src_dir_fd=parent_fd, dst_dir_fd=d.fd)
        finally:
            os.close(parent_fd)
        self._track_rename(f.path, (*d.path, name))
        return b""

    def t_unlinkat(self, r: Reader) -> bytes:
        fid, name, flags = r.u32(), r.string(), r.u32()
        f = self._dir_fid(fid)
        check_name(name)
        self._writable()
        if flags & AT_REMOVEDIR:
            os.rmdir(name, dir_fd=f.fd)
        else:
            os.unlink(name, dir_fd=f.fd)
        return b""

    def t_statfs(self, r: Reader) -> bytes:
        st = os.fstatvfs(self._fid(r.u32()).fd)
        return struct.pack("<IIQQQQQQI", V9FS_MAGIC, st.f_bsize, st.f_blocks, st.f_bfree,
                           st.f_bavail, st.f_files, st.f_ffree, st.f_fsid & (2**64 - 1),
                           st.f_namemax)

    def t_fsync(self, r: Reader) -> bytes:
        fid, _datasync = r.u32(), r.u32()
        f = self._fid(fid)
        if f.io_fd is None:
            raise P9Error(errno.EBADF)
        if not self.read_only:
            os.fsync(f.io_fd)
        return b""

    def t_lock(self, r: Reader) -> bytes:
        # Locks are the guest's business (one guest per share): every one is granted.
        fid = r.u32()
        r.u8(), r.u32(), r.u64(), r.u64(), r.u32(), r.string()
        self._fid(fid)
        return _U8.pack(P9_LOCK_SUCCESS)

    def t_getlock(self, r: Reader) -> bytes:
        fid = r.u32()
        r.u8()
        start, length, proc_id, client = r.u64(), r.u64(), r.u32(), r.string()
        self._fid(fid)
        return _U8.pack(F_UNLCK) + struct.pack("<QQI", start, length, proc_id) + _s(client)

    def t_xattrwalk(self, r: Reader) -> bytes:
        r.u32(), r.u32(), r.string()
        raise P9Error(errno.EOPNOTSUPP, "no extended attributes")

    def t_xattrcreate(self, r: Reader) -> bytes:
        raise P9Error(errno.EOPNOTSUPP, "no extended attributes")

    # -- lifetime and snapshots ---------------------------------------------------------------

    def reset(self) -> None:
        """The driver reset the device: every fid goes, a new session must start."""
        self._drop_all()
        self.version = ""
        self.msize = MAX_MSIZE

    def fid_paths(self) -> list[tuple[int, tuple[str, ...], int | None]]:
        """(fid, path in the share, Tlopen flags or None) of every fid, for a snapshot."""
        return [(n, f.path, f.open_flags) for n, f in sorted(self.fids.items())]

    def restore_fids(self, fids: list[tuple[int, tuple[str, ...], int | None]]) -> int:
        """Walk again (from the root, component by component) to the saved paths and open
        what was open; returns how many could not be found (those fids are gone, and the
        guest's next use of one gets EBADF)."""
        self.reset()
        self.version = VERSION_L
        lost = 0
        for fid, path, flags in fids:
            try:
                for name in path:
                    check_name(name)
                fd, st = self._walk_path(path)
            except (OSError, P9Error):
                lost += 1
                continue
            f = Fid(fd, path, st.st_mode)
            try:
                self._new_fid(fid, f)
            except P9Error:
                lost += 1
                continue
            if flags is not None:
                try:
                    host = self._host_flags(flags & ~(L_O_TRUNC | L_O_CREAT | L_O_EXCL))
                    if f.is_dir:
                        host |= os.O_DIRECTORY
                    elif not stat.S_ISREG(f.mode):
                        raise P9Error(errno.EACCES)
                    f.io_fd, f.open_flags = os.open(_proc_fd(fd), host), flags
                except (OSError, P9Error):
                    lost += 1
                    self._drop_fid(fid)
        return lost

    def close(self) -> None:
        self.reset()
        os.close(self.root_fd)


def _fid_cap() -> int:
    """How many fids all shares together may hold. Each holds up to two descriptors,
    and Linux keeps a fid per cached dentry, so a guest listing a large tree wants
    thousands: the soft RLIMIT_NOFILE (often 1,024) is raised to the hard one, as file
    servers do, and the fids may use what it gives less FD_RESERVE for the rest of the
    VMM. Past the cap the guest gets EMFILE; the VMM never runs out."""
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, min(MAX_FIDS, (soft - FD_RESERVE) // 2))


def _ts(ns: int) -> tuple[int, int]:
    sec, nsec = divmod(ns, 10**9)
    return sec & 0xFFFFFFFFFFFFFFFF, nsec


_HANDLERS = {
    TVERSION: P9Server.t_version, TAUTH: P9Server.t_auth, TATTACH: P9Server.t_attach,
    TFLUSH: P9Server.t_flush, TWALK: P9Server.t_walk, TLOPEN: P9Server.t_lopen,
    TLCREATE: P9Server.t_lcreate, TREAD: P9Server.t_read, TWRITE: P9Server.t_write,
    TCLUNK: P9Server.t_clunk, TREMOVE: P9Server.t_remove, TGETATTR: P9Server.t_getattr,
    TSETATTR: P9Server.t_setattr, TREADDIR: P9Server.t_readdir, TMKDIR: P9Server.t_mkdir,
    TSYMLINK: P9Server.t_symlink, TMKNOD: P9Server.t_mknod, TREADLINK: P9Server.t_readlink,
    TLINK: P9Server.t_link, TRENAMEAT: P9Server.t_renameat, TRENAME: P9Server.t_rename,
    TUNLINKAT: P9Server.t_unlinkat, TSTATFS: P9Server.t_statfs, TFSYNC: P9Server.t_fsync,
    TLOCK: P9Server.t_lock, TGETLOCK: P9Server.t_getlock, TXATTRWALK: P9Server.t_xattrwalk,
    TXATTRCREATE: P9Server.t_xattrcreate,
}
