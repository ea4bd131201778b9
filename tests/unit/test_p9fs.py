"""The 9P2000.L server of a host directory share (devices/virtio/p9fs.py), driven as the
Linux v9fs client drives it but without a guest: walks, I/O, directory changes, and
above all that nothing outside the shared directory can be reached (``..``, absolute
and escaping symlinks, a directory swapped for a symlink between two walks), that a
read-only share refuses every change, and that malformed messages get errors.

The device around it (devices/virtio/p9.py) is driven through the real virtio-mmio
transport at the end."""

from __future__ import annotations

import errno
import os
import struct
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from virtio_driver import Driver  # noqa: E402

from pyhv.devices.virtio import p9fs as P  # noqa: E402
from pyhv.devices.virtio.p9 import Virtio9p  # noqa: E402
from pyhv.devices.virtio.p9fs import P9Server  # noqa: E402
from pyhv.errors import ConfigError  # noqa: E402
from pyhv.vm.config import MachineConfig, ShareSpec, parse_share_option  # noqa: E402


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<H", len(raw)) + raw


class Lerror(Exception):
    def __init__(self, err: int) -> None:
        super().__init__(f"Rlerror {errno.errorcode.get(err, err)}")
        self.errno = err


class Client:
    """Builds requests the way Linux's net/9p/client.c lays them out, parses replies."""

    def __init__(self, server: P9Server) -> None:
        self.server = server
        self.tag = 0
        self.next_fid = 1

    def raw(self, mtype: int, body: bytes) -> bytes:
        self.tag = (self.tag + 1) & 0x7FFF
        msg = struct.pack("<IBH", 7 + len(body), mtype, self.tag) + body
        reply = self.server.handle(msg)
        size, rtype, tag = struct.unpack_from("<IBH", reply)
        assert size == len(reply) and tag == self.tag
        if rtype == P.RLERROR:
            raise Lerror(struct.unpack_from("<I", reply, 7)[0])
        assert rtype == mtype + 1
        return reply[7:]

    def fid(self) -> int:
        self.next_fid += 1
        return self.next_fid

    def version(self, msize: int = 128 * 1024) -> tuple[int, str]:
        r = self.raw(P.TVERSION, struct.pack("<I", msize) + s("9P2000.L"))
        return struct.unpack_from("<I", r)[0], r[6:].decode()

    def attach(self) -> int:
        self.version()
        fid = 1
        self.raw(P.TATTACH, struct.pack("<II", fid, P.NOFID) + s("root") + s("")
                 + struct.pack("<I", 0))
        return fid

    def walk(self, fid: int, *names: str, newfid: int | None = None) -> tuple[int, int]:
        """Walk; returns (newfid, number of qids)."""
        nf = self.fid() if newfid is None else newfid
        r = self.raw(P.TWALK, struct.pack("<IIH", fid, nf, len(names))
                     + b"".join(s(n) for n in names))
        return nf, struct.unpack_from("<H", r)[0]

    def walk_all(self, fid: int, *names: str) -> int:
        nf, n = self.walk(fid, *names)
        if n != len(names):
            raise Lerror(errno.ENOENT)
        return nf

    def lopen(self, fid: int, flags: int = 0) -> None:
        self.raw(P.TLOPEN, struct.pack("<II", fid, flags))

    def lcreate(self, dfid: int, name: str, flags: int = 2, mode: int = 0o644) -> None:
        self.raw(P.TLCREATE, struct.pack("<I", dfid) + s(name)
                 + struct.pack("<III", flags, mode, 0))

    def read(self, fid: int, offset: int = 0, count: int = 65536) -> bytes:
        r = self.raw(P.TREAD, struct.pack("<IQI", fid, offset, count))
        n = struct.unpack_from("<I", r)[0]
        return r[4:4 + n]

    def write(self, fid: int, data: bytes, offset: int = 0) -> int:
        r = self.raw(P.TWRITE, struct.pack("<IQI", fid, offset, len(data)) + data)
        return int(struct.unpack_from("<I", r)[0])

    def clunk(self, fid: int) -> None:
        self.raw(P.TCLUNK, struct.pack("<I", fid))

    def getattr(self, fid: int) -> dict[str, int]:
        r = self.raw(P.TGETATTR, struct.pack("<IQ", fid, P.P9_GETATTR_BASIC))
        f = struct.unpack("<Q13sIII15Q", r)
        return {"qtype": f[1][0], "mode": f[2], "uid": f[3], "nlink": f[5], "size": f[7],
                "mtime": f[12]}

    def setattr(self, fid: int, valid: int, mode: int = 0, size: int = 0,
                mtime: int = 0) -> None:
        self.raw(P.TSETATTR, struct.pack("<IIIIIQQQQQ", fid, valid, mode, 0, 0, size, 0, 0,
                                         mtime, 0))

    def readdir(self, fid: int) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        offset = 0
        while True:
            r = self.raw(P.TREADDIR, struct.pack("<IQI", fid, offset, 200))
            n = struct.unpack_from("<I", r)[0]
            if n == 0:
                return out
            pos = 4
            while pos < 4 + n:
                offset = struct.unpack_from("<Q", r, pos + 13)[0]
                dtype = r[pos + 21]
                ln = struct.unpack_from("<H", r, pos + 22)[0]
                out.append((r[pos + 24:pos + 24 + ln].decode(), dtype))
                pos += 24 + ln

    def mkdir(self, dfid: int, name: str) -> None:
        self.raw(P.TMKDIR, struct.pack("<I", dfid) + s(name) + struct.pack("<II", 0o755, 0))

    def symlink(self, dfid: int, name: str, target: str) -> None:
        self.raw(P.TSYMLINK, struct.pack("<I", dfid) + s(name) + s(target)
                 + struct.pack("<I", 0))

    def readlink(self, fid: int) -> str:
        r = self.raw(P.TREADLINK, struct.pack("<I", fid))
        return r[2:].decode()

    def renameat(self, od: int, old: str, nd: int, new: str) -> None:
        self.raw(P.TRENAMEAT, struct.pack("<I", od) + s(old) + struct.pack("<I", nd) + s(new))

    def unlinkat(self, dfid: int, name: str, flags: int = 0) -> None:
        self.raw(P.TUNLINKAT, struct.pack("<I", dfid) + s(name) + struct.pack("<I", flags))


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    root.mkdir()
    (root / "hello.txt").write_text("hello from the host\n")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_text("inner\n")
    (tmp_path / "secret.txt").write_text("HOST SECRET\n")  # outside the share
    return root


@pytest.fixture
def client(share: Path) -> Client:
    server = P9Server(str(share))
    yield Client(server)
    server.close()


# -- the session and plain file work ------------------------------------------------------


def test_version_negotiates_msize_and_protocol(client: Client) -> None:
    assert client.version(128 * 1024) == (128 * 1024, "9P2000.L")
    assert client.version(8 << 20) == (P.MAX_MSIZE, "9P2000.L")
    r = client.raw(P.TVERSION, struct.pack("<I", 8192) + s("9P2000.u"))
    assert r[6:] == b"unknown"


def test_requests_before_version_are_refused(client: Client) -> None:
    with pytest.raises(Lerror) as e:
        client.raw(P.TATTACH, struct.pack("<II", 1, P.NOFID) + s("") + s("") + bytes(4))
    assert e.value.errno == errno.EINVAL


def test_walk_open_read(client: Client) -> None:
    root = client.attach()
    fid = client.walk_all(root, "hello.txt")
    assert client.getattr(fid)["size"] == 20
    client.lopen(fid, 0)
    assert client.read(fid) == b"hello from the host\n"
    assert client.read(fid, offset=6, count=4) == b"from"
    client.clunk(fid)
    with pytest.raises(Lerror) as e:
        client.read(fid)
    assert e.value.errno == errno.EBADF


def test_walk_partial_and_missing(client: Client) -> None:
    root = client.attach()
    nf, n = client.walk(root, "sub", "nope", "deeper")
    assert n == 1  # a partial walk: one qid, and no new fid
    with pytest.raises(Lerror):
        client.getattr(nf)
    with pytest.raises(Lerror) as e:
        client.walk(root, "nope")
    assert e.value.errno == errno.ENOENT


def test_create_write_and_the_host_sees_it(client: Client, share: Path) -> None:
    root = client.attach()
    d = client.walk_all(root)  # a clone of the root, which lcreate turns into the file
    client.lcreate(d, "new.bin", flags=2)
    data = os.urandom(100_000)
    done = 0
    while done < len(data):
        done += client.write(d, data[done:done + 60_000], done)
    assert (share / "new.bin").read_bytes() == data
    assert client.read(d, 99_990, 100) == data[99_990:]
    client.clunk(d)


def test_setattr_truncate_chmod_mtime(client: Client, share: Path) -> None:
    root = client.attach()
    fid = client.walk_all(root, "hello.txt")
    client.setattr(fid, P.SETATTR_SIZE, size=5)
    assert (share / "hello.txt").read_text() == "hello"
    client.setattr(fid, P.SETATTR_MODE, mode=0o600)
    assert (share / "hello.txt").stat().st_mode & 0o777 == 0o600
    client.setattr(fid, P.SETATTR_MTIME | P.SETATTR_MTIME_SET, mtime=1_000_000)
    assert client.getattr(fid)["mtime"] == 1_000_000
    assert (share / "hello.txt").stat().st_mtime == 1_000_000


def test_readdir_lists_entries_with_types(client: Client, share: Path) -> None:
    for i in range(30):  # more than one 200-byte Treaddir
        (share / f"file-{i:02}").write_text("x")
    (share / "link").symlink_to("hello.txt")
    root = client.attach()
    d = client.walk_all(root)
    client.lopen(d, 0)
    entries = dict(client.readdir(d))
    assert entries["."] == 4 and entries[".."] == 4
    assert entries["sub"] == 4 and entries["hello.txt"] == 8 and entries["link"] == 10
    assert sum(1 for n in entries if n.startswith("file-")) == 30


def test_mkdir_rename_unlink(client: Client, share: Path) -> None:
    root = client.attach()
    client.mkdir(root, "dir")
    assert (share / "dir").is_dir()
    f = client.walk_all(root, "dir")
    client.lcreate(f, "a.txt")
    client.write(f, b"moved")
    d = client.walk_all(root, "dir")
    client.renameat(d, "a.txt", root, "b.txt")
    assert (share / "b.txt").read_text() == "moved"
    assert client.read(f) == b"moved"  # the open fid followed its file
    client.unlinkat(root, "b.txt")
    client.unlinkat(root, "dir", P.AT_REMOVEDIR)
    assert not (share / "b.txt").exists() and not (share / "dir").exists()
    with pytest.raises(Lerror) as e:
        client.unlinkat(root, "sub", P.AT_REMOVEDIR)
    assert e.value.errno == errno.ENOTEMPTY


def test_symlink_is_stored_as_data_and_read_back(client: Client, share: Path) -> None:
    root = client.attach()
    client.symlink(root, "abs", "/etc/passwd")
    assert os.readlink(share / "abs") == "/etc/passwd"
    fid = client.walk_all(root, "abs")
    assert client.readlink(fid) == "/etc/passwd"
    assert client.getattr(fid)["qtype"] == P.QTSYMLINK


def test_statfs_fsync_lock_and_xattr(client: Client) -> None:
    root = client.attach()
    r = client.raw(P.TSTATFS, struct.pack("<I", root))
    assert struct.unpack_from("<I", r)[0] == P.V9FS_MAGIC
    fid = client.walk_all(root, "hello.txt")
    client.lopen(fid, 2)
    client.raw(P.TFSYNC, struct.pack("<II", fid, 0))
    r = client.raw(P.TLOCK, struct.pack("<IBIQQI", fid, 1, 0, 0, 0, 1) + s("guest"))
    assert r == b"\0"
    with pytest.raises(Lerror) as e:
        client.raw(P.TXATTRWALK, struct.pack("<II", root, client.fid()) + s("user.x"))
    assert e.value.errno == errno.EOPNOTSUPP


# -- confinement ---------------------------------------------------------------------------


def test_dotdot_at_the_root_stays_at_the_root(client: Client, share: Path) -> None:
    root = client.attach()
    fid = client.walk_all(root, "..", "..", "..")
    assert client.getattr(fid)["mode"] == (share.stat().st_mode)
    client.lopen(fid)
    names = {n for n, _ in client.readdir(fid)}
    assert "hello.txt" in names and "secret.txt" not in names
    with pytest.raises(Lerror):
        client.walk_all(root, "..", "secret.txt")
    sub = client.walk_all(root, "sub", "..", "..", "sub", "inner.txt")
    client.lopen(sub)
    assert client.read(sub) == b"inner\n"


def test_names_with_slashes_are_refused(client: Client) -> None:
    root = client.attach()
    for bad in ("sub/inner.txt", "../secret.txt", "/etc/passwd", "a\0b"):
        with pytest.raises(Lerror):
            client.walk_all(root, bad)
        with pytest.raises(Lerror):
            client.lcreate(client.walk_all(root), bad)
    with pytest.raises(Lerror):
        client.mkdir(root, "..")


def test_absolute_and_escaping_symlinks_are_not_followed(client: Client, share: Path,
                                                         tmp_path: Path) -> None:
    (share / "to-secret").symlink_to(tmp_path / "secret.txt")
    (share / "to-etc").symlink_to("/etc")
    (share / "up").symlink_to("../")
    root = client.attach()
    for link in ("to-secret", "to-etc", "up"):
        fid = client.walk_all(root, link)
        assert client.getattr(fid)["qtype"] == P.QTSYMLINK
        with pytest.raises(Lerror) as e:
            client.lopen(fid)
        assert e.value.errno == errno.ELOOP
    with pytest.raises(Lerror):
        client.walk_all(root, "to-etc", "passwd")
    with pytest.raises(Lerror):
        client.walk_all(root, "up", "secret.txt")
    # creating through a symlink: O_NOFOLLOW on the last component, ENOTDIR on the others
    with pytest.raises(Lerror):
        client.lcreate(client.walk_all(root), "to-secret", flags=2)
    assert (tmp_path / "secret.txt").read_text() == "HOST SECRET\n"


def test_directory_swapped_for_a_symlink_between_walks(client: Client, share: Path,
                                                       tmp_path: Path) -> None:
    """The guest walks to sub/; the host (or a racing guest rename) swaps sub for a
    symlink to a directory outside; walks from the fid it holds still reach the old
    directory, and fresh walks meet the symlink, which is not followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "inner.txt").write_text("OUTSIDE\n")
    root = client.attach()
    sub = client.walk_all(root, "sub")
    os.rename(share / "sub", share / "sub.old")
    (share / "sub").symlink_to(outside)
    f = client.walk_all(sub, "inner.txt")
    client.lopen(f)
    assert client.read(f) == b"inner\n"
    with pytest.raises(Lerror):
        client.walk_all(root, "sub", "inner.txt")
    # ".." from the held fid is answered from its path in the share, never by the host
    up = client.walk_all(sub, "..")
    client.lopen(up)
    assert "secret.txt" not in {n for n, _ in client.readdir(up)}


def test_walks_racing_a_directory_flipped_to_a_symlink_never_leave(client: Client,
                                                                   share: Path,
                                                                   tmp_path: Path) -> None:
    """A host thread swaps sub/ for a symlink to an outside directory and back, over and
    over, while the guest walks to sub/inner.txt and reads it: every read gets the inner
    file or an error, never the outside one."""
    import threading

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "inner.txt").write_text("OUTSIDE\n")
    (share / "link").symlink_to(outside)
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            os.rename(share / "sub", share / "sub.real")
            os.rename(share / "link", share / "sub")  # sub is now the symlink
            os.rename(share / "sub", share / "link")
            os.rename(share / "sub.real", share / "sub")
            time.sleep(0)  # let the walker run between flips too (a loaded host)

    root = client.attach()
    flipper = threading.Thread(target=flip)
    flipper.start()
    got = set()
    try:
        tries = 0
        # 2,000 walks, and on until one found the inner file (bounded: a loaded host may
        # keep the flipper running through many walks in a row)
        while tries < 2000 or (b"inner\n" not in got and tries < 50_000):
            tries += 1
            try:
                f = client.walk_all(root, "sub", "inner.txt")
                client.lopen(f)
                got.add(client.read(f))
                client.clunk(f)
            except Lerror:
                got.add(b"error")
    finally:
        stop.set()
        flipper.join()
    assert b"OUTSIDE\n" not in got
    assert b"inner\n" in got


def test_directory_moved_out_of_the_share_keeps_dotdot_inside(client: Client, share: Path,
                                                              tmp_path: Path) -> None:
    root = client.attach()
    sub = client.walk_all(root, "sub")
    os.rename(share / "sub", tmp_path / "moved-out")  # the host moves it away
    f = client.walk_all(sub, "..", "hello.txt")  # ".." is the share's root, not tmp_path
    client.lopen(f)
    assert client.read(f) == b"hello from the host\n"
    with pytest.raises(Lerror):
        client.walk_all(sub, "..", "secret.txt")


def test_hard_link_to_a_symlink_or_dir_is_refused(client: Client, share: Path,
                                                  tmp_path: Path) -> None:
    (share / "to-secret").symlink_to(tmp_path / "secret.txt")
    root = client.attach()
    link = client.walk_all(root, "to-secret")
    with pytest.raises(Lerror):
        client.raw(P.TLINK, struct.pack("<II", root, link) + s("hard"))
    f = client.walk_all(root, "hello.txt")
    client.raw(P.TLINK, struct.pack("<II", root, f) + s("hard"))
    assert (share / "hard").read_text() == "hello from the host\n"


def test_fifo_and_device_nodes_are_not_opened(client: Client, share: Path) -> None:
    os.mkfifo(share / "fifo")
    root = client.attach()
    fid = client.walk_all(root, "fifo")
    with pytest.raises(Lerror):
        client.lopen(fid)  # would block the VMM forever
    for flags in (1, 2):  # O_WRONLY (ENXIO: no reader, not a wait), O_RDWR
        with pytest.raises(Lerror) as e:
            client.lcreate(client.walk_all(root), "fifo", flags=flags)
        assert e.value.errno in (errno.EACCES, errno.ENXIO)
    with pytest.raises(Lerror) as e:
        client.raw(P.TMKNOD, struct.pack("<I", root) + s("null")
                   + struct.pack("<IIII", 0o20666, 1, 3, 0))
    assert e.value.errno == errno.EPERM


def test_guest_cannot_make_set_id_programs_on_the_host(client: Client, share: Path) -> None:
    root = client.attach()
    f = client.walk_all(root)
    client.lcreate(f, "suid", mode=0o4755)
    assert (share / "suid").stat().st_mode & 0o7777 == 0o755
    client.setattr(f, P.SETATTR_MODE, mode=0o6755)
    assert (share / "suid").stat().st_mode & 0o7777 == 0o755
    client.mkdir(root, "d")
    d = client.walk_all(root, "d")
    client.setattr(d, P.SETATTR_MODE, mode=0o2775)  # set-group-ID on a directory stays
    assert (share / "d").stat().st_mode & 0o7777 == 0o2775


def test_fids_past_the_cap_get_emfile_and_come_back_when_clunked(client: Client) -> None:
    root = client.attach()
    start = P9Server.live_fids
    client.server.max_fids = start + 10
    fids = [client.walk_all(root, "hello.txt") for _ in range(10)]
    with pytest.raises(Lerror) as e:
        client.walk_all(root, "hello.txt")
    assert e.value.errno == errno.EMFILE
    client.clunk(fids[0])
    client.walk_all(root, "sub")
    client.server.reset()
    assert P9Server.live_fids == start - 1  # (the root's fid went too)


# -- read-only shares ------------------------------------------------------------------------


def test_read_only_share_refuses_every_change(share: Path) -> None:
    c = Client(P9Server(str(share), read_only=True))
    root = c.attach()
    f = c.walk_all(root, "hello.txt")
    c.lopen(f, 0)
    assert c.read(f) == b"hello from the host\n"
    attempts = [
        lambda: c.lopen(c.walk_all(root, "hello.txt"), 2),
        lambda: c.lopen(c.walk_all(root, "hello.txt"), 0o1000),  # O_TRUNC
        lambda: c.lcreate(c.walk_all(root), "new"),
        lambda: c.mkdir(root, "d"),
        lambda: c.symlink(root, "l", "x"),
        lambda: c.renameat(root, "hello.txt", root, "x"),
        lambda: c.unlinkat(root, "hello.txt"),
        lambda: c.setattr(f, P.SETATTR_SIZE, size=0),
        lambda: c.setattr(f, P.SETATTR_MODE, mode=0o777),
        lambda: c.write(f, b"x"),
    ]
    for attempt in attempts:
        with pytest.raises(Lerror) as e:
            attempt()
        assert e.value.errno == errno.EROFS
    assert sorted(p.name for p in share.iterdir()) == ["hello.txt", "sub"]
    assert (share / "hello.txt").read_text() == "hello from the host\n"
    c.server.close()


# -- malformed messages -------------------------------------------------------------------


def _errno_of(reply: bytes) -> int:
    assert reply[4] == P.RLERROR
    return int(struct.unpack_from("<I", reply, 7)[0])


@pytest.mark.parametrize("msg", [
    b"",
    b"\x05\0\0\0",
    struct.pack("<IBH", 3, P.TVERSION, 1),  # size below the header
    struct.pack("<IBH", 999, P.TVERSION, 1) + bytes(8),  # size beyond the bytes
    struct.pack("<IBH", 9, P.TVERSION, 1) + b"\0\0",  # fields cut short
    struct.pack("<IBH", 7, 250, 1),  # unknown type
    struct.pack("<IBH", 7, P.RLERROR, 1),  # a reply type sent as a request
])
def test_malformed_messages_get_errors(client: Client, msg: bytes) -> None:
    reply = client.server.handle(msg)
    assert _errno_of(reply) in (errno.EINVAL, errno.EOPNOTSUPP)


def test_hostile_fields_get_errors_never_exceptions(client: Client) -> None:
    root = client.attach()
    srv = client.server
    bad = [
        # a string length running past the message
        struct.pack("<IBH", 7 + 12, P.TWALK, 2) + struct.pack("<IIHH", root, 9, 1, 5000),
        # a walk of 500 names
        struct.pack("<IBH", 7 + 10, P.TWALK, 3) + struct.pack("<IIH", root, 9, 500),
        # a write claiming more bytes than it carries
        struct.pack("<IBH", 7 + 16 + 4, P.TWRITE, 4) + struct.pack("<IQI", root, 0, 1 << 30)
        + b"abcd",
        # a read at an offset beyond any file
        struct.pack("<IBH", 7 + 16, P.TREAD, 5) + struct.pack("<IQI", root, 1 << 64 - 1, 10),
        # unknown fids, NOFID as a new fid
        struct.pack("<IBH", 7 + 10, P.TWALK, 6) + struct.pack("<IIH", 12345, 9, 0),
        struct.pack("<IBH", 7 + 10, P.TWALK, 7) + struct.pack("<IIH", root, P.NOFID, 0),
        struct.pack("<IBH", 7 + 12, P.TGETATTR, 8) + struct.pack("<IQ", 777, 0),
        # a message over the negotiated msize
        struct.pack("<IBH", 200_000, P.TWRITE, 9) + bytes(200_000 - 7),
    ]
    for msg in bad:
        assert _errno_of(srv.handle(msg)) in (errno.EINVAL, errno.EBADF, errno.ENOENT)
    assert client.getattr(root)["qtype"] == P.QTDIR  # and the session goes on


_TYPES = st.sampled_from(sorted(P._HANDLERS))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mtype=_TYPES, body=st.binary(max_size=64), fids=st.lists(
    st.sampled_from([1, 2, 3, P.NOFID]), max_size=3))
def test_fuzzed_requests_always_get_a_reply(client: Client, share: Path, mtype: int,
                                            body: bytes, fids: list[int]) -> None:
    """Whatever a hostile guest sends, the answer is a reply with its tag, and nothing
    outside the share changes (random bodies, fids that exist now and then)."""
    if not client.server.fids:
        client.attach()
    payload = b"".join(struct.pack("<I", f) for f in fids) + body
    msg = struct.pack("<IBH", 7 + len(payload), mtype, 0x1234) + payload
    reply = client.server.handle(msg)
    size, rtype, tag = struct.unpack_from("<IBH", reply)
    assert size == len(reply) and tag == 0x1234 and rtype in (P.RLERROR, mtype + 1)
    assert (share.parent / "secret.txt").read_text() == "HOST SECRET\n"
    assert sorted(p.name for p in share.parent.iterdir()) == ["secret.txt", "share"]


# -- snapshots --------------------------------------------------------------------------------


def test_fids_are_walked_again_after_a_restore(share: Path) -> None:
    c = Client(P9Server(str(share)))
    root = c.attach()
    f = c.walk_all(root, "sub", "inner.txt")
    c.lopen(f, 0)
    dev = Virtio9p(c.server, "host")
    state = dev.save()
    c.server.close()
    dev2 = Virtio9p(P9Server(str(share)), "host")
    dev2.restore(state)
    c2 = Client(dev2.server)
    assert c2.read(f) == b"inner\n"
    assert c2.getattr(root)["qtype"] == P.QTDIR
    dev2.close()


# -- the options and the device ---------------------------------------------------------------


def test_share_option_parsing_and_errors(share: Path, tmp_path: Path) -> None:
    spec = parse_share_option(f"{share},tag=host,ro")
    assert spec == ShareSpec(str(share), "host", True)
    for text, words in [
        (f"{tmp_path}/missing,tag=t", "does not exist"),
        (f"{share}/hello.txt,tag=t", "not a directory"),
        (f"{share}", "tag=TAG is required"),
        (f"{share},tag=" + "x" * 65, "1 to 64"),
        (f"{share},tag=", "1 to 64"),
        (f"{share},tag=t,rw", "unknown option 'rw'"),
    ]:
        with pytest.raises(ConfigError, match="--share") as e:
            parse_share_option(text)
        assert words in str(e.value)
    with pytest.raises(ConfigError, match="tag 'a' is given to two shares"):
        MachineConfig(devices=(ShareSpec(str(share), "a"), ShareSpec(str(share / "sub"), "a")))


def test_device_answers_through_the_virtio_transport(share: Path) -> None:
    dev = Virtio9p(P9Server(str(share)), "hostshare")
    d = Driver(dev)
    d.setup(1)
    assert dev.config_bytes() == b"\x09\x00hostshare"
    msg = struct.pack("<IBH", 7 + 4 + 10, P.TVERSION, 0xFFFF) + struct.pack("<I", 65536) \
        + s("9P2000.L")
    (buf,) = d.add(0, [msg[:5], msg[5:]], [64])  # the message split across buffers
    d.kick(0)
    ((_head, written),) = d.used(0)
    reply = d.ram.read_bytes(buf, written)
    assert reply[4] == P.TVERSION + 1 and reply[7:11] == struct.pack("<I", 65536)
    # a reply that does not fit the driver's buffer becomes an error that does
    attach = struct.pack("<IBH", 7 + 8 + 4 + 4, P.TATTACH, 2) + struct.pack(
        "<II", 1, P.NOFID) + s("") + s("") + bytes(4)
    (buf,) = d.add(0, [attach], [11])
    d.kick(0)
    ((_head, written),) = d.used(0)
    assert _errno_of(d.ram.read_bytes(buf, written)) == errno.ENOSPC
    dev.close()
