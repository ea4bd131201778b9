"""A NIC on a host TAP interface (``--net tap,ifname=NAME``, QEMU's ``-netdev tap``).

Why: a TAP interface puts the guest on the host's own network stack as a peer, with
whatever bridging, routing or firewalling the host's administrator sets up around it
(libvirt's bridges, a routed /30, a namespace). pyhv runs no helper scripts: the
interface is made and configured beforehand (``ip tuntap add NAME mode tap user $USER``,
then addresses or a bridge), or, for a process with CAP_NET_ADMIN (root, or root of a
user namespace), attaching to a name that does not exist creates it for the process's
lifetime.

Linux's TUN/TAP driver: open ``/dev/net/tun``, ``TUNSETIFF`` with ``IFF_TAP | IFF_NO_PI``;
each ``read`` then returns one Ethernet frame the host sent to the interface and each
``write`` sends one to the host. The descriptor is non-blocking: a frame the host
cannot take now (its queue full, or the interface down) is dropped and counted, as a
NIC's cable would lose it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct

from ..errors import ConfigError

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # IFNAMSIZ is 16 with the NUL
MIN_FRAME = 14
MAX_FRAME = 14 + 65536

_STAT_KEYS = ("tx_frames", "tx_bytes", "tx_dropped", "rx_frames", "rx_bytes")


def check_ifname(name: object) -> str:
    """``name`` if it can name a network interface, else ConfigError."""
    if not isinstance(name, str) or not IFNAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"tap interface name {name!r} is invalid: 1 to 15 characters "
                          "from A-Z a-z 0-9 _ . -")
    return name


class TapPort:
    """One NIC's attachment to the host TAP interface ``ifname`` (the Port interface:
    ``send``, ``receive``, ``fileno``, ``close``; none of them blocks)."""

    def __init__(self, ifname: str, *, device: str = TUN_DEVICE) -> None:
        self.ifname = check_ifname(ifname)
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        where = f"--net tap,ifname={ifname}"
        try:
            fd = os.open(device, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise ConfigError(f"{where}: cannot open {device}: {e.strerror} (is the tun "
                              "module loaded, and may this user open it?)") from None
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(),
                                                   IFF_TAP | IFF_NO_PI))
        except OSError as e:
            os.close(fd)
            hint = ""
            if e.errno in (errno.EPERM, errno.EACCES):
                hint = (f" (create it for this user first: ip tuntap add {ifname} mode tap "
                        f"user {os.getuid()})")
            elif e.errno == errno.EBUSY:
                hint = " (another process is attached to it)"
            elif e.errno == errno.EINVAL:
                hint = " (is it a TUN interface rather than a TAP one?)"
            raise ConfigError(f"{where}: cannot attach to {ifname}: {e.strerror}{hint}") \
                from None
        self._fd = fd

    def send(self, frame: bytes | bytearray | memoryview) -> None:
        """Hand one frame from the guest to the host; dropped (and counted) if it cannot
        be taken now."""
        n = len(frame)
        st = self.stats
        if self._fd < 0 or not MIN_FRAME <= n <= MAX_FRAME:
            st["tx_dropped"] += 1
            return
        try:
            os.write(self._fd, frame)
        except OSError:  # EAGAIN (queue full), EIO (interface down): the wire loses it
            st["tx_dropped"] += 1
            return
        st["tx_frames"] += 1
        st["tx_bytes"] += n

    def receive(self, limit: int | None = None) -> list[bytes]:
        """The frames the host sent that wait now (at most ``limit``)."""
        out: list[bytes] = []
        cap = limit if limit is not None else 1 << 30
        while self._fd >= 0 and len(out) < cap:
            try:
                frame = os.read(self._fd, MAX_FRAME)
            except OSError:  # EAGAIN: nothing more
                break
            if len(frame) < MIN_FRAME:
                continue
            out.append(frame)
        if out:
            self.stats["rx_frames"] += len(out)
            self.stats["rx_bytes"] += sum(map(len, out))
        return out

    def fileno(self) -> int:
        """Readable while frames from the host wait (-1 once closed)."""
        return self._fd

    def close(self) -> None:
        """Detach (an interface this process created goes away with it)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
