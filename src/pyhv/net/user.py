"""User-mode networking: a NIC's way out to the host and the world through libslirp.

Why: a VM on the in-host switch reaches only other VMs. With ``--net user`` the NIC's
frames go to a private libslirp instance (``pyhv.net.slirp``) instead, which gives the
guest what QEMU's ``-netdev user`` gives it: DHCP hands out 10.0.2.15/24 with the gateway
10.0.2.2 (the host: a connection to 10.0.2.2:PORT reaches the host's 127.0.0.1:PORT), DNS
at 10.0.2.3 (forwarded to the first nameserver of the host's /etc/resolv.conf), TCP and
UDP to anywhere through ordinary host sockets, and host ports forwarded to the guest.

How it runs: libslirp is not thread safe and wants a poll loop over its own sockets and
timers. It runs on the VM's own thread, driven by the virtio-net device: a frame the
guest sends goes straight into ``slirp_input``; every :meth:`UserPort.receive` (the
device's poll, once a round of the VM loop) lets libslirp serve its sockets and timers
and hands over the frames it made for the guest. Between rounds the sockets libslirp
watches sit in an epoll set, whose descriptor is :meth:`UserPort.fileno`, so an idle VM
sleeps until one of them (or a frame for the guest) is ready, or until libslirp's next
timer (:meth:`UserPort.deadline`). A helper thread would have cost a GIL hand-over per
burst of frames: that took guest->host TCP from about 10 MiB/s here down to 6.

Frames for the guest wait in a bounded queue: a guest that stops reading loses frames
as a real NIC would (TCP retransmits).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import select
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
QUEUE_FRAMES = 4096  # frames waiting for the guest

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
    """SLIRP_POLL_* interest as an epoll mask."""
    mask = 0
    if events & slirp.POLL_IN:
        mask |= select.EPOLLIN
    if events & slirp.POLL_OUT:
        mask |= select.EPOLLOUT
    if events & slirp.POLL_PRI:
        mask |= select.EPOLLPRI
    return mask


def _slirp_mask(revents: int) -> int:
    """What epoll reported, as SLIRP_POLL_* bits."""
    mask = 0
    if revents & select.EPOLLIN:
        mask |= slirp.POLL_IN
    if revents & select.EPOLLOUT:
        mask |= slirp.POLL_OUT
    if revents & select.EPOLLPRI:
        mask |= slirp.POLL_PRI
    if revents & select.EPOLLERR:
        mask |= slirp.POLL_ERR
    if revents & select.EPOLLHUP:
        mask |= slirp.POLL_HUP
    return mask


def _clock_ns() -> int:
    return time.monotonic_ns()


class UserPort:
    """A NIC's port into its own libslirp network (see the module docstring).

    The same interface as :class:`~pyhv.net.switch.SwitchPort`: ``send(frame)`` and
    ``receive(limit)`` move whole Ethernet frames and never block; ``fileno()`` polls
    readable while libslirp has something to do. Every call must come from one thread
    (the VM's). Port forwards are set up before the constructor returns: a host port in
    use raises :class:`ConfigError` naming it, and nothing is left open.
    """

    def __init__(self, forwards: tuple[Forward, ...] = (), *, restrict: bool = False,
                 mtu: int = 1500, where: str = "--net user") -> None:
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self.guest_errors: deque[str] = deque(maxlen=16)
        self._rx: deque[bytes] = deque()  # libslirp -> guest
        self._closed = False
        self._fds: list[tuple[int, int]] = []  # libslirp's last pollfds_fill
        self._watched: set[int] = set()  # fds in the epoll set besides _rx_event
        self._deadline: float | None = None
        self._stale = False
        self._rx_event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ep = select.epoll()
        try:
            self._ep.register(self._rx_event, select.EPOLLIN)
            self._slirp = slirp.Slirp(on_frame=self._to_guest, clock_ns=_clock_ns,
                                      on_guest_error=self._guest_error, restricted=restrict,
                                      mtu=mtu)
            try:
                for fwd in forwards:
                    err = self._slirp.add_hostfwd(fwd.udp, fwd.host_addr, fwd.host_port,
                                                  fwd.guest_addr, fwd.guest_port)
                    if err:
                        why = os.strerror(err) if err > 0 else "refused"
                        if err == errno.EADDRINUSE:
                            why = "the port is already in use"
                        raise ConfigError(
                            f"{where}: hostfwd={fwd.option}: cannot listen on "
                            f"{fwd.host_addr}:{fwd.host_port} ({why})")
                self._fill()
            except BaseException:
                self._slirp.cleanup()
                raise
        except BaseException:
            self._ep.close()
            os.close(self._rx_event)
            raise

    # -- the Port interface --------------------------------------------------------------

    def send(self, frame: bytes | bytearray | memoryview) -> None:
        """Hand one Ethernet frame from the guest to libslirp; never blocks."""
        n = len(frame)
        st = self.stats
        if self._closed or not MIN_FRAME <= n <= MAX_FRAME:
            st["tx_dropped"] += 1
            return
        st["tx_frames"] += 1
        st["tx_bytes"] += n
        self._slirp.input(bytes(frame))
        self._stale = True  # it may have opened a socket: fill again before a wait

    def receive(self, limit: int | None = None) -> list[bytes]:
        """Let libslirp serve its sockets and timers, then return the frames for the
        guest waiting now (at most ``limit``), oldest first."""
        if self._closed:
            return []
        self._service()
        cap = limit if limit is not None else QUEUE_FRAMES
        rx = self._rx
        out: list[bytes] = []
        while rx and len(out) < cap:
            out.append(rx.popleft())
        if not rx:
            try:
                os.eventfd_read(self._rx_event)
            except BlockingIOError:
                pass
        if out:
            self.stats["rx_frames"] += len(out)
            self.stats["rx_bytes"] += sum(map(len, out))
        return out

    def fileno(self) -> int:
        """Polls readable while libslirp has a socket to serve or a frame waits for the
        guest (-1 once closed). Asked right before a wait, so the watched set is
        brought up to date here if the guest sent frames since the last fill."""
        if self._closed:
            return -1
        if self._stale:
            self._fill()
        return self._ep.fileno()

    def deadline(self) -> float | None:
        """When libslirp's next timer is due (``time.monotonic()`` seconds), if any: an
        idle VM must poll by then (TCP's delayed ACKs and retransmissions)."""
        return None if self._closed else self._deadline

    def close(self) -> None:
        """Close every socket (forwards and NAT connections) and free the instance."""
        if self._closed:
            return
        self._closed = True
        self._slirp.cleanup()
        self._ep.close()
        os.close(self._rx_event)

    # -- libslirp's side -----------------------------------------------------------------

    def _to_guest(self, frame: bytes) -> None:
        rx = self._rx
        if len(rx) >= QUEUE_FRAMES:
            self.stats["rx_dropped"] += 1
            return
        if not rx:
            os.eventfd_write(self._rx_event, 1)
        rx.append(frame)

    def _guest_error(self, msg: str) -> None:
        self.stats["guest_errors"] += 1
        self.guest_errors.append(msg)
        log.debug("libslirp: guest error: %s", msg)

    def _service(self) -> None:
        """One turn of libslirp's loop, without waiting: what its sockets have to say
        (as of the last fill), its due timers, then a fresh fill for the next wait.
        Skipped when no socket is ready, no timer is due and the guest sent nothing."""
        ready = dict(self._ep.poll(0))
        if not ready and not self._stale and (
                self._deadline is None or time.monotonic() < self._deadline):
            return  # nothing to serve: the common case while the guest computes
        s = self._slirp
        if self._fds:
            s.pollfds_poll([_slirp_mask(ready.get(fd, 0)) for fd, _e in self._fds])
        s.run_timers(time.monotonic_ns() // 1_000_000)
        self._fill()

    def _fill(self) -> None:
        """Ask libslirp what to watch; bring the epoll set and the deadline in line.
        Every fd is (re)registered each time: one libslirp closed may have been reused
        for a new socket since, and epoll forgets a closed file by itself."""
        fds, timeout_ms = self._slirp.pollfds_fill()
        self._fds = fds
        self._stale = False
        masks: dict[int, int] = {}
        for fd, events in fds:  # libslirp may list one fd more than once
            masks[fd] = masks.get(fd, 0) | _poll_mask(events)
        ep = self._ep
        for fd in self._watched - masks.keys():
            try:
                ep.unregister(fd)
            except OSError:  # closed meanwhile: epoll dropped it already
                pass
        for fd, mask in masks.items():
            try:
                ep.modify(fd, mask)
            except FileNotFoundError:
                ep.register(fd, mask)
        self._watched = set(masks)
        now_ms = time.monotonic_ns() // 1_000_000
        due = None if timeout_ms == 0xFFFFFFFF else now_ms + timeout_ms
        nxt = self._slirp.next_timer()
        if nxt is not None:
            due = nxt if due is None else min(due, nxt)
        self._deadline = None if due is None else due / 1000.0
