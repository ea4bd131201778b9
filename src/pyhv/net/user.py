"""User-mode networking: a NIC's way out to the host and the world through libslirp.

Why: a VM on the in-host switch reaches only other VMs. With ``--net user`` the NIC's
frames go to a private libslirp instance (``pyhv.net.slirp``) instead, which gives the
guest what QEMU's ``-netdev user`` gives it: DHCP hands out 10.0.2.15/24 with the gateway
10.0.2.2 (the host: a connection to 10.0.2.2:PORT reaches the host's 127.0.0.1:PORT), DNS
at 10.0.2.3 (forwarded to the first nameserver of the host's /etc/resolv.conf), TCP and
UDP to anywhere through ordinary host sockets, and host ports forwarded to the guest.

Threading: libslirp is not thread safe and wants a poll loop over its own sockets and
timers, while the VM's loop only waits on one descriptor per NIC. So each
:class:`UserPort` owns a thread that alone calls into libslirp: frames the guest sends
(:meth:`UserPort.send`, on the VM's thread) are queued to it and an eventfd wakes its
``poll``; frames libslirp produces for the guest are queued the other way and a second
eventfd, :meth:`UserPort.fileno`, wakes the VM. ctypes drops the GIL during every call
into the library, so the loop costs the VM's thread nothing while it waits.

Both queues are bounded: a guest that stops reading loses frames as a real NIC would
(TCP retransmits), and a flood from the guest cannot grow the host's memory.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import select
import threading
import time
from collections import deque
from dataclasses import dataclass

from ..errors import ConfigError
from . import slirp

log = logging.getLogger(__name__)

GUEST_ADDR = "10.0.2.15"  # the first DHCP lease, and the default target of a hostfwd
HOST_ADDR = "10.0.2.2"
DNS_ADDR = "10.0.2.3"
MIN_FRAME = 14
MAX_FRAME = 14 + 65536
QUEUE_FRAMES = 4096  # frames waiting in either direction

_STAT_KEYS = ("tx_frames", "tx_bytes", "tx_dropped", "rx_frames", "rx_bytes", "rx_dropped",
              "guest_errors")


@dataclass(frozen=True)
class Forward:
    """One port forward: ``host_addr:host_port`` on the host to ``guest_port`` in the guest."""

    udp: bool
    host_addr: str
    host_port: int
    guest_addr: str
    guest_port: int
    option: str  # as the user wrote it, for error messages


_HOSTFWD_RE = re.compile(r"(tcp|udp|):([^:]*):([0-9]{1,5})-([^:]*):([0-9]{1,5})")
_GUEST_NET = ipaddress.IPv4Network("10.0.2.0/24")


def parse_hostfwd(text: str) -> Forward:
    """A QEMU ``hostfwd=`` value, ``[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT``
    (``tcp::2222-:22``). The host address defaults to 127.0.0.1 (loopback: only the host's
    own users reach the guest; QEMU's default is every interface), the guest's to 10.0.2.15.
    ConfigError naming ``text`` for anything else."""
    m = _HOSTFWD_RE.fullmatch(text)
    if m is None:
        raise ConfigError(f"hostfwd={text}: expected [tcp|udp]:[HOSTADDR]:HOSTPORT-"
                          "[GUESTADDR]:GUESTPORT, such as tcp::2222-:22")
    proto, haddr, hport, gaddr, gport = m.groups()
    haddr = haddr or "127.0.0.1"
    gaddr = gaddr or GUEST_ADDR
    try:
        ipaddress.IPv4Address(haddr)
    except ValueError:
        raise ConfigError(f"hostfwd={text}: host address '{haddr}' is not an IPv4 "
                          "address") from None
    try:
        guest = ipaddress.IPv4Address(gaddr)
    except ValueError:
        raise ConfigError(f"hostfwd={text}: guest address '{gaddr}' is not an IPv4 "
                          "address") from None
    if guest not in _GUEST_NET or gaddr in (HOST_ADDR, DNS_ADDR) or guest in (
            _GUEST_NET.network_address, _GUEST_NET.broadcast_address):
        raise ConfigError(f"hostfwd={text}: guest address {gaddr} is not a guest's address "
                          f"in {_GUEST_NET}")
    for port in (hport, gport):
        if not 1 <= int(port) <= 65535:
            raise ConfigError(f"hostfwd={text}: port {port} is out of range (1 to 65535)")
    return Forward(proto == "udp", haddr, int(hport), gaddr, int(gport), text)


def _poll_mask(events: int) -> int:
    mask = 0
    if events & slirp.POLL_IN:
        mask |= select.POLLIN
    if events & slirp.POLL_OUT:
        mask |= select.POLLOUT
    if events & slirp.POLL_PRI:
        mask |= select.POLLPRI
    return mask


def _slirp_mask(revents: int) -> int:
    mask = 0
    if revents & select.POLLIN:
        mask |= slirp.POLL_IN
    if revents & select.POLLOUT:
        mask |= slirp.POLL_OUT
    if revents & select.POLLPRI:
        mask |= slirp.POLL_PRI
    if revents & (select.POLLERR | select.POLLNVAL):
        mask |= slirp.POLL_ERR
    if revents & select.POLLHUP:
        mask |= slirp.POLL_HUP
    return mask


def _clock_ns() -> int:
    return time.monotonic_ns()


class UserPort:
    """A NIC's port into its own libslirp network (see the module docstring).

    The same interface as :class:`~pyhv.net.switch.SwitchPort`: ``send(frame)`` and
    ``receive(limit)`` move whole Ethernet frames and never block; ``fileno()`` polls
    readable while frames for the guest wait. Port forwards are set up before the
    constructor returns: a host port in use raises :class:`ConfigError` naming it, and
    nothing is left running.
    """

    def __init__(self, forwards: tuple[Forward, ...] = (), *, restrict: bool = False) -> None:
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self.guest_errors: deque[str] = deque(maxlen=16)
        self._lock = threading.Lock()
        self._rx: deque[bytes] = deque()  # libslirp -> guest
        self._tx: deque[bytes] = deque()  # guest -> libslirp
        self._closed = False
        self._rx_event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            # This thread owns the instance until the loop thread starts (which orders
            # every call made here before the loop's).
            self._slirp = slirp.Slirp(on_frame=self._to_guest, clock_ns=_clock_ns,
                                      on_guest_error=self._guest_error, restricted=restrict)
            try:
                for fwd in forwards:
                    err = self._slirp.add_hostfwd(fwd.udp, fwd.host_addr, fwd.host_port,
                                                  fwd.guest_addr, fwd.guest_port)
                    if err:
                        why = (os.strerror(err) if err > 0 else "refused")
                        if err == errno.EADDRINUSE:
                            why = "the port is already in use"
                        raise ConfigError(
                            f"--net user: hostfwd={fwd.option}: cannot listen on "
                            f"{fwd.host_addr}:{fwd.host_port} ({why})")
            except BaseException:
                self._slirp.cleanup()
                raise
        except BaseException:
            os.close(self._rx_event)
            os.close(self._wake)
            raise
        self._thread = threading.Thread(target=self._loop, name="pyhv-slirp", daemon=True)
        self._thread.start()

    # -- the Port interface (the VM's thread) ------------------------------------------

    def send(self, frame: bytes | bytearray | memoryview) -> None:
        """Queue one Ethernet frame from the guest for libslirp; never blocks."""
        n = len(frame)
        st = self.stats
        with self._lock:
            if self._closed or not MIN_FRAME <= n <= MAX_FRAME or len(self._tx) >= QUEUE_FRAMES:
                st["tx_dropped"] += 1
                return
            was_empty = not self._tx
            self._tx.append(bytes(frame))
            st["tx_frames"] += 1
            st["tx_bytes"] += n
        if was_empty:
            os.eventfd_write(self._wake, 1)

    def receive(self, limit: int | None = None) -> list[bytes]:
        """The frames for the guest waiting now (at most ``limit``), oldest first."""
        cap = limit if limit is not None else QUEUE_FRAMES
        out: list[bytes] = []
        with self._lock:
            rx = self._rx
            while rx and len(out) < cap:
                out.append(rx.popleft())
            if not rx and not self._closed:
                try:
                    os.eventfd_read(self._rx_event)
                except BlockingIOError:
                    pass
        self.stats["rx_frames"] += len(out)
        self.stats["rx_bytes"] += sum(map(len, out))
        return out

    def fileno(self) -> int:
        """Polls readable while frames for the guest wait (-1 once closed)."""
        return -1 if self._closed else self._rx_event

    def close(self) -> None:
        """Stop the loop; libslirp closes every socket (forwards and NAT connections)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        os.eventfd_write(self._wake, 1)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        os.close(self._rx_event)
        os.close(self._wake)

    # -- the loop thread: the only caller of libslirp after construction -----------------

    def _to_guest(self, frame: bytes) -> None:
        with self._lock:
            if len(self._rx) >= QUEUE_FRAMES:
                self.stats["rx_dropped"] += 1
                return
            was_empty = not self._rx
            self._rx.append(frame)
            if was_empty and not self._closed:
                os.eventfd_write(self._rx_event, 1)

    def _guest_error(self, msg: str) -> None:
        self.stats["guest_errors"] += 1
        self.guest_errors.append(msg)
        log.debug("libslirp: guest error: %s", msg)

    def _loop(self) -> None:
        s = self._slirp
        poller = select.poll
        try:
            while not self._closed:
                with self._lock:
                    frames = list(self._tx)
                    self._tx.clear()
                for frame in frames:
                    s.input(frame)
                fds, timeout_ms = s.pollfds_fill()
                next_timer = s.run_timers(time.monotonic_ns() // 1_000_000)
                wait = None if timeout_ms == 0xFFFFFFFF else timeout_ms
                if next_timer is not None:
                    left = max(0, next_timer - time.monotonic_ns() // 1_000_000)
                    wait = left if wait is None else min(wait, left)
                masks: dict[int, int] = {self._wake: select.POLLIN}
                for fd, events in fds:  # libslirp may list one fd more than once
                    masks[fd] = masks.get(fd, 0) | _poll_mask(events)
                p = poller()
                for fd, mask in masks.items():
                    p.register(fd, mask)
                try:
                    ready = dict(p.poll(wait))
                    error = False
                except InterruptedError:
                    ready, error = {}, True
                if ready.pop(self._wake, 0):
                    try:
                        os.eventfd_read(self._wake)
                    except BlockingIOError:
                        pass
                s.pollfds_poll([_slirp_mask(ready.get(fd, 0)) for fd, _e in fds], error)
        except Exception:  # a bug here must not take the VM down: the NIC goes quiet
            log.exception("user-mode networking stopped")
        finally:
            s.cleanup()
