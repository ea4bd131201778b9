"""A ctypes binding to libslirp, the user-mode TCP/IP stack QEMU uses for ``-netdev user``.

Why a binding rather than a TCP/IP stack of our own: libslirp is well kept, used by QEMU,
podman and others, and does DHCP, DNS forwarding, TCP/UDP NAT through ordinary host
sockets and port forwarding. Debian ships it as ``libslirp0``; nothing needs compiling.

Only what pyhv uses is bound, after the public header ``libslirp.h`` of libslirp 4.x:
``slirp_new`` with a ``SlirpConfig`` (version 1 fields plus ``disable_dns`` of version 3),
the ``SlirpCb`` callbacks, ``slirp_input``, ``slirp_pollfds_fill``/``slirp_pollfds_poll``,
``slirp_add_hostfwd`` and ``slirp_cleanup``. libslirp is not thread safe: one
:class:`Slirp` must only ever be called from one thread (``pyhv.net.user`` drives it
from the VM's).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import sys
from collections.abc import Callable

from ..errors import ConfigError

LIBRARY = "libslirp.so.0"
INSTALL_HINT = "install the Debian package libslirp0 (apt-get install libslirp0)"

# SLIRP_POLL_* (libslirp.h)
POLL_IN, POLL_OUT, POLL_PRI, POLL_ERR, POLL_HUP = 1, 2, 4, 8, 16
CONFIG_VERSION = 3  # up to disable_dns; libslirp 4.3 (2020) and later accept it


class InAddr(ctypes.Structure):
    """struct in_addr: an IPv4 address in network byte order."""

    _fields_ = [("s_addr", ctypes.c_uint32)]


class In6Addr(ctypes.Structure):
    _fields_ = [("s6_addr", ctypes.c_uint8 * 16)]


def in_addr(dotted: str) -> InAddr:
    """The struct in_addr of a dotted IPv4 address (ValueError for anything else)."""
    try:
        raw = socket.inet_pton(socket.AF_INET, dotted)
    except OSError:
        raise ValueError(f"'{dotted}' is not an IPv4 address") from None
    return InAddr(int.from_bytes(raw, sys.byteorder))


class SlirpConfig(ctypes.Structure):
    """struct SlirpConfig, versions 1 to 3 (libslirp.h)."""

    _fields_ = [
        ("version", ctypes.c_uint32),
        # version 1
        ("restricted", ctypes.c_int),
        ("in_enabled", ctypes.c_bool),
        ("vnetwork", InAddr),
        ("vnetmask", InAddr),
        ("vhost", InAddr),
        ("in6_enabled", ctypes.c_bool),
        ("vprefix_addr6", In6Addr),
        ("vprefix_len", ctypes.c_uint8),
        ("vhost6", In6Addr),
        ("vhostname", ctypes.c_char_p),
        ("tftp_server_name", ctypes.c_char_p),
        ("tftp_path", ctypes.c_char_p),
        ("bootfile", ctypes.c_char_p),
        ("vdhcp_start", InAddr),
        ("vnameserver", InAddr),
        ("vnameserver6", In6Addr),
        ("vdnssearch", ctypes.POINTER(ctypes.c_char_p)),
        ("vdomainname", ctypes.c_char_p),
        ("if_mtu", ctypes.c_size_t),
        ("if_mru", ctypes.c_size_t),
        ("disable_host_loopback", ctypes.c_bool),
        ("enable_emu", ctypes.c_bool),
        # version 2
        ("outbound_addr", ctypes.c_void_p),
        ("outbound_addr6", ctypes.c_void_p),
        # version 3
        ("disable_dns", ctypes.c_bool),
    ]


SEND_PACKET = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_size_t,
                               ctypes.c_void_p)
GUEST_ERROR = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)
CLOCK_GET_NS = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)
TIMER_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
TIMER_NEW = ctypes.CFUNCTYPE(ctypes.c_void_p, TIMER_CB, ctypes.c_void_p, ctypes.c_void_p)
TIMER_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
TIMER_MOD = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p)
POLL_FD = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)
NOTIFY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
ADD_POLL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
GET_REVENTS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


class SlirpCb(ctypes.Structure):
    """struct SlirpCb up to ``notify`` (the fields of config versions below 4)."""

    _fields_ = [
        ("send_packet", SEND_PACKET),
        ("guest_error", GUEST_ERROR),
        ("clock_get_ns", CLOCK_GET_NS),
        ("timer_new", TIMER_NEW),
        ("timer_free", TIMER_FREE),
        ("timer_mod", TIMER_MOD),
        ("register_poll_fd", POLL_FD),
        ("unregister_poll_fd", POLL_FD),
        ("notify", NOTIFY),
    ]


_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libslirp, loaded once with its function prototypes; ConfigError if it is missing."""
    global _lib
    if _lib is not None:
        return _lib
    names = [LIBRARY]
    found = ctypes.util.find_library("slirp")
    if found and found != LIBRARY:
        names.append(found)
    lib = None
    for name in names:
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            break
        except OSError:
            continue
    if lib is None:
        raise ConfigError(f"user-mode networking needs libslirp ({LIBRARY}): {INSTALL_HINT}")
    vp = ctypes.c_void_p
    lib.slirp_new.argtypes = [ctypes.POINTER(SlirpConfig), ctypes.POINTER(SlirpCb), vp]
    lib.slirp_new.restype = vp
    lib.slirp_cleanup.argtypes = [vp]
    lib.slirp_cleanup.restype = None
    lib.slirp_input.argtypes = [vp, ctypes.c_char_p, ctypes.c_int]
    lib.slirp_input.restype = None
    lib.slirp_pollfds_fill.argtypes = [vp, ctypes.POINTER(ctypes.c_uint32), ADD_POLL, vp]
    lib.slirp_pollfds_fill.restype = None
    lib.slirp_pollfds_poll.argtypes = [vp, ctypes.c_int, GET_REVENTS, vp]
    lib.slirp_pollfds_poll.restype = None
    lib.slirp_add_hostfwd.argtypes = [vp, ctypes.c_int, InAddr, ctypes.c_int, InAddr,
                                      ctypes.c_int]
    lib.slirp_add_hostfwd.restype = ctypes.c_int
    lib.slirp_version_string.argtypes = []
    lib.slirp_version_string.restype = ctypes.c_char_p
    _lib = lib
    return lib


def version() -> str:
    """libslirp's version string, such as "4.7.0"."""
    return (library().slirp_version_string() or b"").decode()


class Timer:
    """A libslirp timer: its callback and when it is due (ms of :func:`clock_ms`), if armed."""

    def __init__(self, cb: Callable[[int | None], None], cb_opaque: int | None) -> None:
        self.cb = cb
        self.cb_opaque = cb_opaque
        self.expire_ms: int | None = None


class Slirp:
    """One libslirp instance (one virtual network with its own NAT), with the callbacks
    wired to Python. Every method must be called from the thread that owns the instance.

    ``on_frame(frame)`` receives each Ethernet frame for the guest; ``clock_ns()`` is the
    clock libslirp's timers run on; ``on_guest_error(msg)`` hears about guest misbehaviour.
    """

    def __init__(self, *, on_frame: Callable[[bytes], None], clock_ns: Callable[[], int],
                 on_guest_error: Callable[[str], None], restricted: bool = False,
                 network: str = "10.0.2.0", netmask: str = "255.255.255.0",
                 host: str = "10.0.2.2", dhcp_start: str = "10.0.2.15",
                 nameserver: str = "10.0.2.3", mtu: int = 1500) -> None:
        self._lib = lib = library()
        self._on_frame = on_frame
        self._clock_ns = clock_ns
        self._on_guest_error = on_guest_error
        self.timers: dict[int, Timer] = {}
        self._next_timer = 1
        self._pollfds: list[tuple[int, int]] = []
        self._revents: list[int] = []
        cfg = SlirpConfig()
        cfg.version = CONFIG_VERSION
        cfg.restricted = int(restricted)
        cfg.in_enabled = True
        cfg.vnetwork = in_addr(network)
        cfg.vnetmask = in_addr(netmask)
        cfg.vhost = in_addr(host)
        cfg.in6_enabled = False  # the guest kernel has no IPv6
        cfg.vdhcp_start = in_addr(dhcp_start)
        cfg.vnameserver = in_addr(nameserver)
        cfg.if_mtu = cfg.if_mru = mtu
        self._cfg = cfg
        # The CFUNCTYPE objects must live as long as the instance: libslirp keeps them.
        cb = SlirpCb()
        cb.send_packet = SEND_PACKET(self._send_packet)
        cb.guest_error = GUEST_ERROR(self._guest_error)
        cb.clock_get_ns = CLOCK_GET_NS(lambda _opaque: self._clock_ns())
        cb.timer_new = TIMER_NEW(self._timer_new)
        cb.timer_free = TIMER_FREE(self._timer_free)
        cb.timer_mod = TIMER_MOD(self._timer_mod)
        cb.register_poll_fd = POLL_FD(lambda _fd, _opaque: None)  # only Windows needs them
        cb.unregister_poll_fd = POLL_FD(lambda _fd, _opaque: None)
        cb.notify = NOTIFY(lambda _opaque: None)  # the owner polls again after every call
        self._cb = cb
        self._add_poll = ADD_POLL(self._add_poll_cb)
        self._get_revents = GET_REVENTS(self._get_revents_cb)
        self._timeout = ctypes.c_uint32()
        handle = lib.slirp_new(ctypes.byref(cfg), ctypes.byref(cb), None)
        if not handle:
            raise ConfigError("libslirp refused its configuration (slirp_new failed)")
        self._handle: int | None = handle

    # -- callbacks from libslirp (on the owner's thread, inside one of its calls) ----------

    def _send_packet(self, buf: int, length: int, _opaque: int) -> int:
        self._on_frame(ctypes.string_at(buf, length))
        return length

    def _guest_error(self, msg: bytes | None, _opaque: int) -> None:
        self._on_guest_error((msg or b"").decode("utf-8", "replace"))

    def _timer_new(self, cb: Callable[[int | None], None], cb_opaque: int | None,
                   _opaque: int) -> int:
        tid = self._next_timer
        self._next_timer += 1
        # ``cb`` arrives as a CFUNCTYPE instance wrapping the C function pointer
        self.timers[tid] = Timer(cb, cb_opaque)
        return tid

    def _timer_free(self, timer: int | None, _opaque: int) -> None:
        if timer is not None:
            self.timers.pop(timer, None)

    def _timer_mod(self, timer: int | None, expire_ms: int, _opaque: int) -> None:
        t = self.timers.get(timer or 0)
        if t is not None:
            t.expire_ms = expire_ms

    def _add_poll_cb(self, fd: int, events: int, _opaque: int) -> int:
        self._pollfds.append((fd, events))
        return len(self._pollfds) - 1

    def _get_revents_cb(self, idx: int, _opaque: int) -> int:
        return self._revents[idx] if 0 <= idx < len(self._revents) else 0

    # -- calls into libslirp -----------------------------------------------------------

    def _live(self) -> int:
        if self._handle is None:
            raise RuntimeError("libslirp instance already cleaned up")
        return self._handle

    def input(self, frame: bytes) -> None:
        """Hand libslirp one Ethernet frame the guest sent."""
        self._lib.slirp_input(self._live(), frame, len(frame))

    def pollfds_fill(self) -> tuple[list[tuple[int, int]], int]:
        """The descriptors libslirp wants watched, as (fd, SLIRP_POLL_* events), and the
        longest it wants the wait to last in ms (0xFFFFFFFF: no limit)."""
        self._pollfds = []
        self._timeout.value = 0xFFFFFFFF
        self._lib.slirp_pollfds_fill(self._live(), ctypes.byref(self._timeout),
                                     self._add_poll, None)
        return self._pollfds, self._timeout.value

    def pollfds_poll(self, revents: list[int], error: bool = False) -> None:
        """Tell libslirp what happened to the descriptors of the last ``pollfds_fill``
        (one SLIRP_POLL_* mask each, in that order); it reads, writes, accepts."""
        self._revents = revents
        self._lib.slirp_pollfds_poll(self._live(), int(error), self._get_revents, None)
        self._revents = []

    def run_timers(self, now_ms: int) -> int | None:
        """Fire the timers that are due; the next one's due time in ms, if any."""
        nxt: int | None = None
        for t in list(self.timers.values()):
            if t.expire_ms is None:
                continue
            if t.expire_ms <= now_ms:
                t.expire_ms = None
                t.cb(t.cb_opaque)
                if t.expire_ms is None:
                    continue
            if nxt is None or t.expire_ms < nxt:
                nxt = t.expire_ms
        return nxt

    def next_timer(self) -> int | None:
        """The due time (ms of the clock) of the earliest armed timer, if any."""
        due = [t.expire_ms for t in self.timers.values() if t.expire_ms is not None]
        return min(due) if due else None

    def add_hostfwd(self, udp: bool, host_addr: str, host_port: int, guest_addr: str,
                    guest_port: int) -> int:
        """Forward ``host_addr:host_port`` to the guest; 0, or the errno of the failure."""
        ctypes.set_errno(0)
        rc = self._lib.slirp_add_hostfwd(self._live(), int(udp), in_addr(host_addr), host_port,
                                         in_addr(guest_addr), guest_port)
        if rc == 0:
            return 0
        return ctypes.get_errno() or -1

    def cleanup(self) -> None:
        """Close every socket of the instance and free it (idempotent)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            self._lib.slirp_cleanup(handle)
            self.timers.clear()
