"""The in-host virtual switch: Ethernet between VMs on the same host, with no daemon.

Why it exists: each VM runs in its own OS process, and VMs started with the same
``--net switch=NAME`` must see each other's Ethernet frames as if plugged into one
switch. Nothing should have to be started first or stay running, so the switch is
*distributed*: every VM process holds one :class:`SwitchPort`, and the ports find each
other through a directory and talk to each other directly over UNIX sockets. The
virtio-net device calls :meth:`SwitchPort.send` with each frame the guest transmits and
:meth:`SwitchPort.receive` to collect what arrived; while the VM idles it waits on
:meth:`SwitchPort.fileno` with ``select``.

Directory protocol (version 1)
------------------------------

* The switch directory is ``<base>/switch-<NAME>/`` where ``<base>`` is the
  ``runtime_dir`` argument, else ``$XDG_RUNTIME_DIR/pyhv``, else ``/tmp/pyhv-<uid>``.
  NAME matches ``[A-Za-z0-9_.-]{1,64}``. The switch directory (and the default base)
  is created with mode 0700 and must belong to the current user, so only that user's
  VMs can join the switch. Directories are never removed (an empty one costs nothing
  and removing it would race with a port being created in it).
* Each port owns one socket file there, ``port-<pid>-<16 hex digits>.sock``: a listening
  ``SOCK_SEQPACKET`` socket. It is bound under a temporary name ``.bind-<pid>-<hex>.sock``,
  put into the listening state and only then renamed to its final name, so a ``port-*``
  file whose connection is refused (``ECONNREFUSED``) belongs to a port that is gone.
  Socket addresses hold only 107 bytes of path; when the directory is deeper than that
  a port reaches it through ``/proc/self/fd/<directory fd>/`` (Linux, as is ``epoll``).
* To send to a peer, a port connects to the peer's file and sends, as the first
  message, the hello ``b"pyhv-switch/1 " + <its own port file name>``; after that every
  message on the connection, in either direction, is exactly one Ethernet frame
  (14..65550 bytes). The accepting side learns from the hello who is at the other end
  and uses the same connection to send back, so a pair of ports usually shares one
  connection (two, harmlessly, if both connected at the same moment).
* Learning, as a hardware switch does it but at each port: a frame received from peer P
  teaches "source MAC -> P" (entries age out after ``mac_ageing`` seconds). Unicast to a
  learned MAC goes to that peer only; broadcast, multicast and unknown unicast go to
  every peer: those listed in the directory (the listing is cached and re-read every
  ``refresh_interval`` seconds, and after a peer is found gone) plus those connected.
* A peer is gone when its connection breaks and reconnecting fails: ``ENOENT`` (its file
  was removed: forget it) or ``ECONNREFUSED`` (its process died and left the file: the
  file is removed after a second refused connection to the same inode). Leftover
  ``.bind-*`` files older than a minute are removed too. Nothing here ever raises
  because a peer disappeared.

Why connected ``SOCK_SEQPACKET`` rather than one unconnected ``SOCK_DGRAM`` socket per
port: Linux lets at most ``net.unix.max_dgram_qlen`` (default 10) datagrams wait in the
queue of an unconnected datagram socket, so a burst of 12 frames towards a VM that is
busy running guest code (or descheduled by the host scheduler) already loses frames,
which stalls guest TCP in retransmission timeouts. On a connected pair the queue is only
bounded by the sender's ``SO_SNDBUF`` (about 900 frames of 1514 bytes with the 1 MiB
asked for here), and the message boundaries are kept as with datagrams.

Flow control: :meth:`SwitchPort.send` never blocks. When a peer's queue is full the
frame is dropped for that peer and counted in ``stats["tx_dropped"]``: every copy of a
frame meant for a peer that is still on the switch is either in that peer's socket queue
or counted there (a copy for a peer found gone meanwhile is not: that peer has left).
Each call takes a lock, so a port may be shared by threads, but one VM process owns it.
"""

from __future__ import annotations

import os
import re
import secrets
import select
import socket
import stat
import threading
import time
import weakref
from dataclasses import dataclass

from ..errors import ConfigError

MIN_FRAME = 14  # an Ethernet header: destination MAC, source MAC, EtherType
MAX_FRAME = 14 + 65536  # the largest frame virtio-net hands over (offloads on)

SWITCH_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
PORT_NAME_RE = re.compile(r"port-([0-9]{1,10})-([0-9a-f]{16})\.sock")
_BIND_PREFIX = ".bind-"
_HELLO = b"pyhv-switch/1 "
_SUN_PATH_MAX = 107  # bytes of sockaddr_un.sun_path usable for a path (108 with the NUL)
_LONGEST_NAME = len(".bind-4294967295-0123456789abcdef.sock")
_BIND_LEFTOVER_AGE = 60.0  # seconds; a live port holds a .bind- name for microseconds
_FDB_MAX = 4096  # learned MACs per port; a guest spraying source MACs cannot grow it
_LISTEN_BACKLOG = 128

_SENT, _FULL, _GONE = 0, 1, 2

_STAT_KEYS = (
    "tx_frames",  # valid frames handed to send()
    "tx_bytes",
    "tx_flooded",  # of those, sent to every peer (broadcast, multicast, unknown unicast)
    "tx_dropped",  # copies not delivered: a peer's queue full, refused frames, port closed
    "tx_invalid",  # frames refused for their size (also counted in tx_dropped)
    "rx_frames",  # frames returned by receive()
    "rx_bytes",
    "rx_invalid",  # messages that were not a valid frame or hello, discarded
    "connects",  # connections opened to peers
    "peers_reaped",  # stale socket files of dead peers removed
)


def check_switch_name(switch: object) -> str:
    """Return ``switch`` if it is a valid switch name, else raise :class:`ConfigError`."""
    if not isinstance(switch, str) or not SWITCH_NAME_RE.fullmatch(switch):
        raise ConfigError(
            f"switch name {switch!r} is invalid: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
        )
    return switch


def default_runtime_dir() -> str:
    """The base directory of all switches: ``$XDG_RUNTIME_DIR/pyhv`` or ``/tmp/pyhv-<uid>``."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        return os.path.join(xdg, "pyhv")
    return f"/tmp/pyhv-{os.getuid()}"


def _private_dir(path: str) -> None:
    """Create ``path`` (mode 0700) or check that the existing one is the user's own."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} exists and is not a directory")
    if st.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def switch_directory(switch: str, runtime_dir: str | None = None) -> str:
    """The directory of switch ``switch``, created (mode 0700) if it does not exist."""
    check_switch_name(switch)
    try:
        if runtime_dir is None:
            base = default_runtime_dir()
            _private_dir(base)
        else:
            base = os.path.abspath(runtime_dir)
            os.makedirs(base, mode=0o700, exist_ok=True)
        path = os.path.join(base, f"switch-{switch}")
        _private_dir(path)
    except OSError as e:
        raise ConfigError(f"switch {switch!r}: cannot use its directory: {e}") from None
    return path


def _unlink_if_same(dirfd: int, name: str, ino: tuple[int, int]) -> bool:
    """Remove ``name`` if it is still the file ``ino`` (st_dev, st_ino); True if removed."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        if (st.st_dev, st.st_ino) == ino:
            os.unlink(name, dir_fd=dirfd)
            return True
    except OSError:
        pass
    return False


def _release(dirfd: int, name: str, ino: tuple[int, int]) -> None:
    """A port's last rites: remove its socket file (if still its own), close its directory."""
    _unlink_if_same(dirfd, name, ino)
    _close_fd(dirfd)


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


@dataclass(eq=False)
class _Conn:
    """One connection to a peer; ``name`` is the peer's port file, None until its hello."""

    sock: socket.socket
    fd: int
    name: str | None


class SwitchPort:
    """One VM's port on the in-host virtual switch ``switch`` (see the module docstring).

    ``send(frame)`` and ``receive()`` move whole Ethernet frames (bytes-like, 14..65550
    bytes); neither blocks. ``fileno()`` becomes readable when frames (or new peers)
    wait. ``stats`` counts what went through and what was dropped.
    """

    def __init__(
        self,
        switch: str,
        *,
        runtime_dir: str | None = None,
        buffer_size: int = 1 << 20,
        refresh_interval: float = 1.0,
        mac_ageing: float = 300.0,
    ) -> None:
        self.switch = check_switch_name(switch)
        self.directory = switch_directory(switch, runtime_dir)
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._buffer_size = buffer_size
        self._refresh_interval = refresh_interval
        self._ageing = mac_ageing
        self._lock = threading.Lock()
        self._closed = False
        self._out: dict[str, _Conn] = {}  # peer name -> connection used to send to it
        self._by_fd: dict[int, _Conn] = {}  # every connection, inbound and outbound
        self._peers: set[str] = set()  # flood targets (directory listing + connected)
        self._next_refresh = 0.0
        self._fdb: dict[bytes, tuple[str, float]] = {}  # MAC -> (peer name, last seen)
        self._rxbuf = bytearray(MAX_FRAME + 1)  # one more byte: detects oversized messages
        self._rxview = memoryview(self._rxbuf)

        token = secrets.token_hex(8)
        pid = os.getpid()
        self.name = f"port-{pid}-{token}.sock"
        self.path = os.path.join(self.directory, self.name)
        bind_name = f"{_BIND_PREFIX}{pid}-{token}.sock"
        try:
            self._dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ConfigError(f"switch {switch!r}: cannot open {self.directory}: {e}") from None
        listener: socket.socket | None = None
        try:
            # sockaddr_un holds 107 path bytes; reach a deeper directory through our fd.
            if len(os.fsencode(self.directory)) + 1 + _LONGEST_NAME <= _SUN_PATH_MAX:
                self._addr_dir = self.directory
            elif os.path.isdir(f"/proc/self/fd/{self._dirfd}"):
                self._addr_dir = f"/proc/self/fd/{self._dirfd}"
            else:
                raise ConfigError(
                    f"switch {switch!r}: {self.directory} is too long a path for a UNIX socket"
                )
            listener = self._new_socket()
            listener.bind(f"{self._addr_dir}/{bind_name}")
            listener.listen(_LISTEN_BACKLOG)
            os.rename(bind_name, self.name, src_dir_fd=self._dirfd, dst_dir_fd=self._dirfd)
            st = os.stat(self.name, dir_fd=self._dirfd, follow_symlinks=False)
            self._ep = select.epoll()
            self._ep.register(listener.fileno(), select.EPOLLIN)
        except OSError as e:
            if listener is not None:
                listener.close()
            for leftover in (bind_name, self.name):
                try:
                    os.unlink(leftover, dir_fd=self._dirfd)
                except OSError:
                    pass
            _close_fd(self._dirfd)
            raise ConfigError(
                f"switch {switch!r}: cannot open a port in {self.directory}: {e}"
            ) from None
        except BaseException:
            if listener is not None:
                listener.close()
            _close_fd(self._dirfd)
            raise
        self._listener = listener
        self._lfd = listener.fileno()
        self._ino = (st.st_dev, st.st_ino)
        # Remove our file even if the process exits (or drops the port) without close().
        self._finalizer = weakref.finalize(self, _release, self._dirfd, self.name, self._ino)

    # -- public API -----------------------------------------------------------------

    def send(self, frame: bytes | bytearray | memoryview) -> None:
        """Send one Ethernet frame to the right peer(s); never blocks, never raises."""
        n = len(frame)
        st = self.stats
        if n < MIN_FRAME or n > MAX_FRAME:
            st["tx_invalid"] += 1
            st["tx_dropped"] += 1
            return
        with self._lock:
            if self._closed:
                st["tx_dropped"] += 1
                return
            st["tx_frames"] += 1
            st["tx_bytes"] += n
            now = time.monotonic()
            if not frame[0] & 1:  # unicast destination
                dst = bytes(frame[:6])
                entry = self._fdb.get(dst)
                if entry is not None:
                    if now - entry[1] <= self._ageing:
                        r = self._send_to(entry[0], frame)
                        if r == _SENT:
                            return
                        if r == _FULL:
                            st["tx_dropped"] += 1
                            return
                        # The learned peer is gone (and forgotten): flood instead.
                    else:
                        del self._fdb[dst]
            self._flood(frame, now)

    def receive(self, limit: int | None = None) -> list[bytes]:
        """Every frame waiting now (at most ``limit``), oldest first per peer; never blocks.

        Frames not taken stay queued in the kernel, which pushes back on the senders.
        """
        out: list[bytes] = []
        cap = limit if limit is not None else 1 << 62
        if cap <= 0:
            return out
        with self._lock:
            if self._closed:
                return out
            now = time.monotonic()
            for fd, _events in self._ep.poll(0):
                if len(out) >= cap:
                    break
                if fd == self._lfd:
                    self._accept(out, cap, now)
                else:
                    conn = self._by_fd.get(fd)
                    if conn is not None:
                        self._read(conn, out, cap, now)
        return out

    def fileno(self) -> int:
        """A descriptor that polls readable while frames or new peers wait (-1 once closed)."""
        return -1 if self._closed else self._ep.fileno()

    def refresh(self) -> None:
        """Re-read the switch directory now (it is also re-read every ``refresh_interval``)."""
        with self._lock:
            if not self._closed:
                self._refresh(time.monotonic())

    def peers(self) -> list[str]:
        """Port file names of the peers this port currently floods to."""
        with self._lock:
            return sorted(self._peers)

    def close(self) -> None:
        """Close every socket and remove this port's socket file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._close_sockets()
            self._finalizer()  # removes our file if it is still ours

    def __enter__(self) -> SwitchPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._peers)} peers"
        return f"<SwitchPort {self.switch} {self.name} {state}>"

    # -- internals ------------------------------------------------------------------

    def _abandon(self) -> None:
        """Close every socket but leave the socket file behind, as a killed process does."""
        with self._lock:
            if not self._closed:
                self._close_sockets()
                self._finalizer.detach()
                _close_fd(self._dirfd)

    def _close_sockets(self) -> None:
        self._closed = True
        for conn in list(self._by_fd.values()):
            conn.sock.close()
        self._by_fd.clear()
        self._out.clear()
        self._peers.clear()
        self._fdb.clear()
        self._listener.close()
        self._ep.close()

    def _new_socket(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.setblocking(False)
        self._tune(s)
        return s

    def _tune(self, s: socket.socket) -> None:
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, self._buffer_size)
            except OSError:
                pass

    def _register(self, conn: _Conn) -> None:
        self._by_fd[conn.fd] = conn
        self._ep.register(conn.fd, select.EPOLLIN)

    def _drop_conn(self, conn: _Conn) -> None:
        if self._by_fd.pop(conn.fd, None) is None:
            return
        try:
            self._ep.unregister(conn.fd)
        except OSError:
            pass
        conn.sock.close()
        name = conn.name
        if name is not None and self._out.get(name) is conn:
            del self._out[name]
            for other in self._by_fd.values():  # a second connection to the same peer
                if other.name == name:
                    self._out[name] = other
                    break

    def _forget(self, name: str) -> None:
        """The peer ``name`` is gone: stop flooding to it and forget its MACs."""
        self._peers.discard(name)
        conn = self._out.get(name)
        if conn is not None:
            self._drop_conn(conn)
        stale = [mac for mac, (peer, _seen) in self._fdb.items() if peer == name]
        for mac in stale:
            del self._fdb[mac]
        self._next_refresh = 0.0  # re-read the directory before the next flood

    def _refresh(self, now: float) -> None:
        names: set[str] = set()
        try:
            with os.scandir(self._dirfd) as it:
                for entry in it:
                    n = entry.name
                    if n == self.name:
                        continue
                    if PORT_NAME_RE.fullmatch(n):
                        names.add(n)
                    elif n.startswith(_BIND_PREFIX):
                        self._reap_bind_leftover(n)
        except OSError:
            pass
        names.update(self._out)  # connected peers, even if their file was removed
        self._peers = names
        self._next_refresh = now + self._refresh_interval

    def _reap_bind_leftover(self, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=self._dirfd, follow_symlinks=False)
            if stat.S_ISSOCK(st.st_mode) and time.time() - st.st_mtime > _BIND_LEFTOVER_AGE:
                os.unlink(name, dir_fd=self._dirfd)
        except OSError:
            pass

    def _connect(self, name: str) -> _Conn | int:
        """Open a connection to peer ``name``: the connection, or _FULL / _GONE."""
        s = self._new_socket()
        try:
            s.connect(f"{self._addr_dir}/{name}")
        except BlockingIOError:  # its listen backlog is full: alive, not accepting yet
            s.close()
            return _FULL
        except ConnectionRefusedError:
            s.close()
            self._reap(name)
            return _GONE
        except OSError:  # ENOENT and anything else: the peer is not there
            s.close()
            self._forget(name)
            return _GONE
        try:
            s.send(_HELLO + self.name.encode(), socket.MSG_NOSIGNAL)
        except OSError:
            s.close()
            return _GONE
        conn = _Conn(s, s.fileno(), name)
        self._register(conn)
        self._out[name] = conn
        self._peers.add(name)
        self.stats["connects"] += 1
        return conn

    def _reap(self, name: str) -> None:
        """``name`` refused a connection: remove its file if it still does, then forget it."""
        try:
            st = os.stat(name, dir_fd=self._dirfd, follow_symlinks=False)
        except OSError:
            self._forget(name)
            return
        if stat.S_ISSOCK(st.st_mode):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            probe.setblocking(False)
            try:
                probe.connect(f"{self._addr_dir}/{name}")
            except ConnectionRefusedError:  # refused twice: nobody listens behind that file
                if _unlink_if_same(self._dirfd, name, (st.st_dev, st.st_ino)):
                    self.stats["peers_reaped"] += 1
            except OSError:
                pass
            finally:
                probe.close()
        self._forget(name)

    def _send_to(self, name: str, frame: bytes | bytearray | memoryview) -> int:
        conn = self._out.get(name)
        for _attempt in range(2):
            if conn is None:
                c = self._connect(name)
                if not isinstance(c, _Conn):
                    return c
                conn = c
            try:
                conn.sock.send(frame, socket.MSG_NOSIGNAL)
                return _SENT
            except BlockingIOError:
                return _FULL
            except OSError:  # EPIPE, ECONNRESET: the peer closed; try its file once more
                self._drop_conn(conn)
                conn = None
        return _GONE

    def _flood(self, frame: bytes | bytearray | memoryview, now: float) -> None:
        st = self.stats
        st["tx_flooded"] += 1
        if now >= self._next_refresh:
            self._refresh(now)
        for name in tuple(self._peers):
            if self._send_to(name, frame) == _FULL:
                st["tx_dropped"] += 1

    def _accept(self, out: list[bytes], cap: int, now: float) -> None:
        while True:
            try:
                s, _addr = self._listener.accept()
            except OSError:  # EAGAIN: none left; EMFILE and the like: try next time
                return
            s.setblocking(False)
            self._tune(s)
            conn = _Conn(s, s.fileno(), None)
            self._register(conn)
            if len(out) < cap:
                self._read(conn, out, cap, now)

    def _hello(self, conn: _Conn, msg: memoryview) -> bool:
        data = bytes(msg)
        if not data.startswith(_HELLO):
            return False
        try:
            name = data[len(_HELLO) :].decode("ascii")
        except UnicodeDecodeError:
            return False
        if not PORT_NAME_RE.fullmatch(name) or name == self.name:
            return False
        conn.name = name
        self._out.setdefault(name, conn)
        self._peers.add(name)
        return True

    def _read(self, conn: _Conn, out: list[bytes], cap: int, now: float) -> None:
        sock = conn.sock
        view = self._rxview
        st = self.stats
        fdb = self._fdb
        while len(out) < cap:
            try:
                n = sock.recv_into(self._rxbuf)
            except BlockingIOError:
                return
            except OSError:
                self._drop_conn(conn)
                return
            if n == 0:  # the peer closed the connection (or died)
                self._drop_conn(conn)
                return
            if conn.name is None:
                if not self._hello(conn, view[:n]):
                    st["rx_invalid"] += 1
                    self._drop_conn(conn)
                    return
                continue
            if n < MIN_FRAME or n > MAX_FRAME:
                st["rx_invalid"] += 1
                continue
            frame = bytes(view[:n])
            src = frame[6:12]
            if not src[0] & 1:  # learn unicast source addresses only
                if src not in fdb and len(fdb) >= _FDB_MAX:
                    del fdb[next(iter(fdb))]
                fdb[src] = (conn.name, now)
            out.append(frame)
            st["rx_frames"] += 1
            st["rx_bytes"] += n
