"""virtio-net (virtio 1.1, section 5.1): an Ethernet NIC on the in-host virtual switch,
on a user-mode network of its own (``pyhv.net.user``, libslirp) or on a host TAP
interface (``pyhv.net.tap``).

Two queues, receiveq (0) and transmitq (1), no control queue: every frame carries the
12-byte ``virtio_net_hdr`` (VERSION_1 layout, num_buffers = 1), which the device strips
on transmit and writes on receive. On a user-mode network the NIC offers the two checksum
offloads, because libslirp takes and makes whole frames: ``GUEST_CSUM`` (what it sends
the guest has checked sums) and ``CSUM`` (the guest may hand over a frame whose TCP/UDP
checksum is left partial; the device completes it before libslirp sees the frame).
``CSUM`` matters more than it looks: Linux turns scatter-gather on only with it, so
without it the guest computes every sum itself and copies each frame into one linear
buffer first. Frames travel through a
:class:`Port` (a :class:`~pyhv.net.switch.SwitchPort` or :class:`~pyhv.net.user.UserPort`);
frames that arrive while the driver has posted no receive buffers wait in a bounded
backlog; beyond it they are left in the port (the switch port's socket, where the kernel
drops what does not fit, or the user port's bounded queue: a real NIC's full ring), and
an idle VM does not wake for them until its driver posts buffers.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from typing import Annotated, Protocol

from ...net.mac import parse_mac
from ...records import U64, MaxLen, Record, StateError, record
from ..io_budget import IoBudget, Limits
from .device import VIRTIO_F_VERSION_1, VIRTIO_ID_NET, VirtioDevice
from .queue import Chain, Virtqueue

VIRTIO_NET_F_CSUM = 1 << 0
VIRTIO_NET_F_GUEST_CSUM = 1 << 1
VIRTIO_NET_F_MTU = 1 << 3
VIRTIO_NET_F_MAC = 1 << 5
VIRTIO_NET_F_STATUS = 1 << 16
VIRTIO_NET_S_LINK_UP = 1

HDR_LEN = 12  # struct virtio_net_hdr with num_buffers (VERSION_1)
RX_HEADER = struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 1)
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
_CSUM_FIELDS = struct.Struct("<BxxxxxHH")  # flags, (gso_type, hdr_len, gso_size), start, offset
RX_HEADER_VALID = struct.pack("<BBHHHHH", VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 0, 1)
LEGACY_HDR_LEN = 10  # without VERSION_1 (and no MRG_RXBUF): no num_buffers field
MAX_FRAME = 1514 + 4  # Ethernet frame with a VLAN tag; no TSO/GSO offloads negotiated
RX_BACKLOG = 256
RXQ, TXQ = 0, 1


class Port(Protocol):
    def send(self, frame: bytes) -> None: ...
    def receive(self, limit: int | None = None) -> list[bytes]: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class Unplugged:
    """A port to nowhere: what the guest sends is dropped, nothing comes (a machine run
    only to warm a process up must not reach the switch)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_CLOEXEC)  # an fd that never becomes readable

    def send(self, frame: bytes) -> None:
        pass

    def receive(self, limit: int | None = None) -> list[bytes]:
        return []

    def fileno(self) -> int:
        return self._r

    def close(self) -> None:
        for fd in (self._r, self._w):
            if fd >= 0:
                os.close(fd)
        self._r = self._w = -1


def complete_checksum(header: bytes, frame: bytes) -> bytes | None:
    """``frame`` with the partial checksum its virtio_net_hdr ``header`` points at
    completed (VIRTIO_NET_HDR_F_NEEDS_CSUM, virtio 1.1, 5.1.6.2): the one's complement
    sum of the frame from ``csum_start`` to its end, which the driver seeded with the
    pseudo-header's sum, folded, inverted and stored at ``csum_start + csum_offset``.
    None for a header that points outside the frame.

    The sum is taken as the frame's tail read as one big integer modulo 0xFFFF (2**16 is
    1 modulo 0xFFFF, so that is the sum of its 16-bit words, end-around carries
    included): C speed in two builtins, where a loop over words costs ten times more."""
    if len(header) < _CSUM_FIELDS.size:
        return None
    _flags, start, offset = _CSUM_FIELDS.unpack_from(header)
    at = start + offset
    if at + 2 > len(frame) or start >= len(frame):
        return None
    tail = memoryview(frame)[start:]
    total = int.from_bytes(tail, "big") << 8 if len(tail) & 1 else int.from_bytes(tail, "big")
    tail.release()
    # (a sum of 0 goes out as 0xFFFF, its other form: UDP reads 0 as "no checksum")
    csum = ((~(total % 0xFFFF) & 0xFFFF) or 0xFFFF).to_bytes(2, "big")
    return b"".join((frame[:at], csum, frame[at + 2:]))


def random_mac() -> bytes:
    """A locally administered unicast address in QEMU's 52:54:00 range."""
    return b"\x52\x54\x00" + os.urandom(3)


class VirtioNet(VirtioDevice):
    device_id = VIRTIO_ID_NET
    num_queues = 2
    name = "virtio-net"

    def __init__(self, port: Port, mac: bytes | None = None, tx: Limits | None = None,
                 rx: Limits | None = None, mtu: int | None = None,
                 checksums_valid: bool = False) -> None:
        super().__init__()
        self.port = port
        # An MTU beyond Ethernet's (VIRTIO_NET_F_MTU): fewer, larger frames, each costing
        # the guest one trip through its stack and the device one through the queue
        self.mtu = mtu
        self.max_frame = MAX_FRAME if mtu is None else max(MAX_FRAME, mtu + 18)
        # The port's frames carry checked checksums (libslirp makes every one itself):
        # with VIRTIO_NET_F_GUEST_CSUM the guest is told so (DATA_VALID) and skips a
        # pass over each received byte
        self.checksums_valid = checksums_valid
        self.mac = mac if mac is not None else random_mac()
        self.backlog: deque[bytes] = deque()
        self.stats = {"tx_frames": 0, "rx_frames": 0, "rx_dropped": 0, "tx_dropped": 0,
                      "tx_throttled_ms": 0, "rx_throttled_ms": 0, "tx_throttled_bytes": 0,
                      "rx_throttled_bytes": 0}
        # I/O budgets per direction (devices/io_budget.py): a frame the guest sends
        # beyond its budget is held (taken from the ring) until its tokens are there;
        # frames for the guest wait in the backlog, then in the switch port's socket
        self.tx_budget = IoBudget(tx or Limits())
        self.rx_budget = IoBudget(rx or Limits())
        self._tx_held: Chain | None = None

    @classmethod
    def on_switch(cls, switch: str, mac: str | None = None, tx: Limits | None = None,
                  rx: Limits | None = None) -> VirtioNet:
        from ...net.switch import SwitchPort

        raw = parse_mac(mac) if mac else None
        return cls(SwitchPort(switch), raw, tx, rx)

    @classmethod
    def on_tap(cls, ifname: str, mac: str | None = None, tx: Limits | None = None,
               rx: Limits | None = None) -> VirtioNet:
        """A NIC on the host's TAP interface ``ifname``."""
        from ...net.tap import TapPort

        raw = parse_mac(mac) if mac else None
        return cls(TapPort(ifname), raw, tx, rx)

    @classmethod
    def on_user_network(cls, hostfwd: tuple[str, ...] = (), restrict: bool = False,
                        mac: str | None = None, tx: Limits | None = None,
                        rx: Limits | None = None, mtu: int = 1500) -> VirtioNet:
        """A NIC on its own user-mode network (libslirp: DHCP, DNS, NAT, ``hostfwd``
        forwards as QEMU writes them) with link MTU ``mtu``."""
        from ...net.user import UserPort, parse_hostfwd

        raw = parse_mac(mac) if mac else None
        return cls(UserPort(tuple(parse_hostfwd(h) for h in hostfwd), restrict=restrict,
                            mtu=mtu), raw, tx, rx, mtu=mtu if mtu != 1500 else None,
                   checksums_valid=True)

    def device_features(self) -> int:
        mtu = VIRTIO_NET_F_MTU if self.mtu is not None else 0
        csum = VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_CSUM if self.checksums_valid else 0
        return VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | mtu | csum

    def config_bytes(self) -> bytes:
        # mac, status, max_virtqueue_pairs, mtu (virtio 1.1, 5.1.4)
        return self.mac + struct.pack("<HHH", VIRTIO_NET_S_LINK_UP, 1, self.mtu or 1500)

    def queue_notify(self, index: int, queue: Virtqueue) -> None:
        if index == TXQ:
            self._transmit(queue)
        elif index == RXQ:
            self._deliver()

    def _transmit(self, queue: Virtqueue) -> None:
        pushed = False
        while True:
            chain = self._tx_held if self._tx_held is not None else queue.pop()
            if chain is None:
                break
            self._tx_held = None
            hdr = self._hdr_len()
            if self.tx_budget.admit(max(0, chain.readable_len - hdr)) > 0:
                self._tx_held = chain  # on when the budget allows (poll)
                break
            header = queue.read_chain(chain, hdr)
            frame = queue.read_chain(chain, self.max_frame + 1, skip=hdr)
            if 14 <= len(frame) <= self.max_frame:
                out: bytes | None = frame
                if header and header[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM and \
                        self.driver_features & VIRTIO_NET_F_CSUM:
                    out = complete_checksum(header, frame)
                if out is None:
                    self.stats["tx_dropped"] += 1
                else:
                    self.port.send(out)
                    self.stats["tx_frames"] += 1
            else:
                self.stats["tx_dropped"] += 1
            queue.push(chain, 0)
            pushed = True
        if pushed:
            self.used_buffers(TXQ)

    def _hdr_len(self) -> int:
        return HDR_LEN if self.driver_features & VIRTIO_F_VERSION_1 else LEGACY_HDR_LEN

    def poll(self) -> None:
        if self._tx_held is not None and self.tx_budget.due() and self.transport is not None:
            self._transmit(self.queue(TXQ))
        self.stats["tx_throttled_ms"] = int(self.tx_budget.throttled_seconds * 1000)
        self.stats["rx_throttled_ms"] = int(self.rx_budget.throttled_seconds * 1000)
        self.stats["tx_throttled_bytes"] = self.tx_budget.throttled_bytes
        self.stats["rx_throttled_bytes"] = self.rx_budget.throttled_bytes
        # Only as many frames as the backlog has room for: the rest stay in the kernel,
        # which pushes back on the senders, instead of being read only to be dropped
        # (a flood kept an idle VM's process busy doing just that).
        room = RX_BACKLOG - len(self.backlog)
        if room > 0:
            self.backlog.extend(self.port.receive(room))
        if self.backlog:
            self._deliver()

    def _deliver(self) -> None:
        if self.transport is None:
            return
        queue = self.queue(RXQ)
        pushed = False
        while self.backlog:
            if self.rx_budget.admit(len(self.backlog[0]), take=False) > 0:
                break  # the frame waits in the backlog for its tokens
            chain = queue.pop()
            if chain is None:
                break
            frame = self.backlog.popleft()
            self.rx_budget.admit(len(frame))
            header = RX_HEADER_VALID if self.driver_features & VIRTIO_NET_F_GUEST_CSUM \
                else RX_HEADER
            hlen = self._hdr_len()
            if chain.writable_len < hlen + len(frame):
                self.stats["rx_dropped"] += 1
                queue.push(chain, 0)
            else:  # (header and frame written apart: no joined copy of the frame)
                written = queue.write_chain(chain, header[:hlen])
                written += queue.write_chain(chain, frame, skip=hlen)
                queue.push(chain, written)
                self.stats["rx_frames"] += 1
            pushed = True
        if pushed:
            self.used_buffers(RXQ)

    def wait_fds(self) -> list[int]:
        # A full backlog waits for the driver's receive buffers (a notify), not frames.
        fd = self.port.fileno()  # -1: a closed port (a migrated VM's)
        return [fd] if fd >= 0 and len(self.backlog) < RX_BACKLOG else []

    def reset(self) -> None:
        self.backlog.clear()
        self._tx_held = None

    def io_deadline(self) -> float | None:
        # a port with timers of its own (user networking: TCP's) says when they are due
        port_deadline = getattr(self.port, "deadline", None)
        times = [self.tx_budget.next_deadline() if self._tx_held is not None else None,
                 self.rx_budget.next_deadline() if self.backlog else None,
                 port_deadline() if port_deadline is not None else None]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def inflight(self, index: int) -> int:
        return int(index == TXQ and self._tx_held is not None)

    def set_limits(self, tx: Limits | None = None, rx: Limits | None = None) -> None:
        """New I/O terms per direction, at once (None: leave that direction as it is)."""
        if tx is not None:
            self.tx_budget.change(tx)
        if rx is not None:
            self.rx_budget.change(rx)

    def close(self) -> None:
        self.port.close()

    def save(self) -> NetState:
        return NetState(self.mac, dict(self.stats))

    def restore(self, state: Record) -> None:
        assert isinstance(state, NetState)
        if len(state.mac) != 6:
            raise StateError("virtio-net: a MAC address is 6 bytes")
        self.mac = state.mac
        self.stats.update({k: v for k, v in state.stats.items() if k in self.stats})


@record
class NetState(Record):
    """The NIC's MAC (the guest's driver read it; a clone is given a fresh one) and
    counters."""

    mac: Annotated[bytes, MaxLen(6)]
    stats: Annotated[dict[str, U64], MaxLen(64)]


VirtioNet.STATE = NetState
