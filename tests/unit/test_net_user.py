"""User-mode networking (pyhv.net.user over libslirp), without a guest.

The options (``--net user,...``, ``-netdev user,...``, ``[[net]] user = true``) and their
errors; then the libslirp binding brought up for real and spoken to with hand-built
frames, as a guest's driver would: a DHCP DISCOVER gets an OFFER of 10.0.2.15, an ARP
for the gateway is answered, UDP from the guest reaches a socket on the host's loopback
and the answer comes back, a host client reaching a forwarded port makes the guest see
a SYN, a forwarded port already in use is refused by name, and frames for a guest that
does not read are bounded.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from pyhv.cli.qemu_compat import config_from_args
from pyhv.errors import ConfigError
from pyhv.host.definition import VMDefinition
from pyhv.net import slirp
from pyhv.net.user import Forward, UserPort, parse_hostfwd
from pyhv.vm.config import MachineConfig, NetSpec, UserNetSpec, parse_net_option
from pyhv.vm.snapshot import config_data, config_from_data

GUEST_MAC = bytes.fromhex("525400123456")
BCAST = b"\xff" * 6


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -------------------------------------------------------------------------- options


def test_net_user_option() -> None:
    spec = parse_net_option("user,hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.2:5353-10.0.2.15:53,"
                            "restrict=on,mac=52:54:00:00:00:01,tx_bps=1M")
    assert spec.switch is None and spec.mac == "52:54:00:00:00:01" and spec.tx_bps == 1 << 20
    assert spec.user == UserNetSpec(("tcp::2222-:22", "udp:127.0.0.2:5353-10.0.2.15:53"), True)
    assert parse_net_option("user").user == UserNetSpec()
    assert parse_net_option("switch=lan").user is None  # the switch stays as it was
    assert UserNetSpec().mtu == 65520 and parse_net_option("user,mtu=1500").user == \
        UserNetSpec(mtu=1500)


def test_hostfwd_defaults_to_loopback_and_the_first_lease() -> None:
    assert parse_hostfwd("tcp::2222-:22") == Forward(False, "127.0.0.1", 2222, "10.0.2.15",
                                                     22, "tcp::2222-:22")
    assert parse_hostfwd(":0.0.0.0:80-10.0.2.20:8080").udp is False
    assert parse_hostfwd("udp::53-:53").udp is True


@pytest.mark.parametrize(("text", "words"), [
    ("user,hostfwd=tcp::2222:22", "hostfwd=tcp::2222:22: expected"),
    ("user,hostfwd=sctp::1-:2", "hostfwd=sctp::1-:2: expected"),
    ("user,hostfwd=tcp::70000-:22", "port 70000 is out of range"),
    ("user,hostfwd=tcp::0-:22", "port 0 is out of range"),
    ("user,hostfwd=tcp:localhost:22-:22", "host address 'localhost' is not an IPv4"),
    ("user,hostfwd=tcp::2222-192.168.1.5:22", "192.168.1.5 is not a guest's address"),
    ("user,hostfwd=tcp::2222-10.0.2.2:22", "10.0.2.2 is not a guest's address"),
    ("user,dns=127.0.0.1", "unknown option 'dns=127.0.0.1'"),
    ("user,restrict=maybe", "restrict= takes on or off"),
    ("user,switch=lan", "choose one of switch=NAME, user and tap"),
    ("switch=lan,hostfwd=tcp::2222-:22", "belong to user networking"),
    ("mac=52:54:00:00:00:01", "switch=NAME, user or tap,ifname=NAME is required"),
    ("user,mtu=70000", "mtu=70000: the link MTU is 576 to 65520"),
    ("user,mtu=big", "mtu= takes a number of bytes"),
    ("switch=lan,mtu=9000", "belong to user networking"),
])
def test_bad_net_user_options_name_the_option(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        parse_net_option(text)
    assert f"--net '{text}'" in str(info.value)


def test_qemu_netdev_user_with_repeated_hostfwd() -> None:
    config, _ = config_from_args([
        "-bios", "none", "-kernel", "/dev/null", "-nographic",
        "-netdev", "user,id=n0,hostfwd=tcp::2222-:22,hostfwd=tcp:127.0.0.1:8080-:80,restrict=on",
        "-device", "virtio-net-device,netdev=n0,mac=52:54:00:00:00:07"])
    (net,) = config.devices
    assert isinstance(net, NetSpec) and net.mac == "52:54:00:00:00:07"
    assert net.user == UserNetSpec(("tcp::2222-:22", "tcp:127.0.0.1:8080-:80"), True)
    with pytest.raises(ConfigError, match="-netdev user,id=n0,hostfwd=x: hostfwd=x: expected"):
        config_from_args(["-bios", "none", "-kernel", "/dev/null", "-netdev",
                          "user,id=n0,hostfwd=x"])


def test_definition_with_user_networking_round_trips() -> None:
    text = ('name = "web"\n[boot]\nkernel = "/boot/Image"\n[[net]]\nuser = true\n'
            'hostfwd = ["tcp::2222-:22", "udp::5353-:53"]\nrestrict = true\nmtu = 9000\n'
            '[[net]]\nswitch = "lan"\n')
    d = VMDefinition.from_toml(text, "vm.toml", base_dir="/vms")
    assert d.nets[0].user and d.nets[0].hostfwd == ("tcp::2222-:22", "udp::5353-:53")
    again = VMDefinition.from_toml(d.to_toml(), "again.toml", base_dir="/vms")
    assert again.nets == d.nets
    user, switch = d.to_machine_config().devices
    assert isinstance(user, NetSpec) and isinstance(switch, NetSpec)
    assert user.user == UserNetSpec(("tcp::2222-:22", "udp::5353-:53"), True, 9000)
    assert switch.switch == "lan" and switch.user is None
    back = VMDefinition.from_machine_config(d.to_machine_config(), "web")
    assert back.nets[0].user and back.nets[0].hostfwd == d.nets[0].hostfwd
    assert back.nets[0].mtu == 9000


def test_the_nic_offers_the_links_mtu() -> None:
    from pyhv.devices.virtio.net import (
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_MTU,
        VirtioNet,
    )

    nic = VirtioNet.on_user_network(mtu=9000)
    try:
        assert nic.device_features() & VIRTIO_NET_F_MTU
        assert nic.device_features() & VIRTIO_NET_F_GUEST_CSUM  # libslirp's sums are good
        assert nic.device_features() & VIRTIO_NET_F_CSUM  # and the NIC completes the guest's
        assert nic.config_bytes()[6:12] == struct.pack("<HHH", 1, 1, 9000)
        assert nic.max_frame == 9018
    finally:
        nic.close()
    plain = VirtioNet.on_user_network(mtu=1500)  # QEMU's view: no MTU feature
    try:
        assert not plain.device_features() & VIRTIO_NET_F_MTU and plain.max_frame == 1518
    finally:
        plain.close()


@pytest.mark.parametrize(("net", "field", "words"), [
    ('user = true\nhostfwd = ["tcp::22-22"]', "net[0].hostfwd", "expected"),
    ('user = true\nhostfwd = "tcp::22-:22"', "net[0].hostfwd", "a list of forwards"),
    ('user = true\nswitch = "lan"', "net[0].switch", "not both"),
    ('switch = "lan"\nhostfwd = ["tcp::2222-:22"]', "net[0].hostfwd", "user networking"),
    ('user = false', "net[0].switch", "missing"),
    ('user = true\nmtu = 100', "net[0].mtu", "576 to 65520"),
    ('switch = "lan"\nmtu = 9000', "net[0].mtu", "user networking"),
])
def test_definition_errors_name_the_field(net: str, field: str, words: str) -> None:
    from pyhv.host.errors import DefinitionError

    text = f'name = "web"\n[boot]\nkernel = "/boot/Image"\n[[net]]\n{net}\n'
    with pytest.raises(DefinitionError, match=words) as info:
        VMDefinition.from_toml(text, "vm.toml", base_dir="/vms")
    assert field in str(info.value)


def test_snapshot_config_keeps_user_networking() -> None:
    config = MachineConfig(kernel="/boot/Image", devices=(
        parse_net_option("user,hostfwd=tcp::2222-:22,mac=52:54:00:00:00:01,mtu=4000"),
        parse_net_option("switch=lan")))
    back = config_from_data(json.loads(json.dumps(config_data(config))))
    assert back == config


# ------------------------------------------------------------- libslirp, no guest


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet with its checksum (libslirp checks it when it is not 0)."""
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    head = struct.pack("!HHHH", sport, dport, length, 0)
    csum = checksum(pseudo + head + payload) or 0xFFFF
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, length, csum) + payload)


def ether(dst: bytes, ethertype: int, payload: bytes, src: bytes = GUEST_MAC) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def dhcp(msg_type: int, xid: int = 0x1234ABCD, mac: bytes = GUEST_MAC) -> bytes:
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                        bytes(4), bytes(4), bytes(4), bytes(4), mac.ljust(16, b"\0"),
                        b"", b"")
    bootp += bytes.fromhex("63825363") + bytes([53, 1, msg_type, 255])
    return ether(BCAST, 0x0800, udp("0.0.0.0", 68, "255.255.255.255", 67, bootp), mac)


def arp_request(target: str) -> bytes:
    return ether(BCAST, 0x0806, struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, GUEST_MAC, socket.inet_aton("10.0.2.15"),
        bytes(6), socket.inet_aton(target)))


def dhcp_options(frame: bytes) -> dict[int, bytes]:
    opts = frame[14 + 20 + 8 + 240:]
    out: dict[int, bytes] = {}
    i = 0
    while i < len(opts) and opts[i] != 255:
        if opts[i] == 0:
            i += 1
            continue
        out[opts[i]] = opts[i + 2:i + 2 + opts[i + 1]]
        i += 2 + opts[i + 1]
    return out


def frames_until(port, want, timeout: float = 5.0) -> bytes:  # type: ignore[no-untyped-def]
    """The first frame for the guest that ``want(frame)`` accepts (waiting on fileno())."""
    deadline = time.monotonic() + timeout
    seen: list[bytes] = []
    while time.monotonic() < deadline:
        select.select([port.fileno()], [], [], max(0.0, deadline - time.monotonic()))
        for frame in port.receive():
            if want(frame):
                return frame
            seen.append(frame)
    raise AssertionError(f"no such frame; got {[f[:64].hex() for f in seen]}")


@pytest.fixture
def port() -> Iterator[UserPort]:
    p = UserPort()
    yield p
    p.close()


def test_libslirp_is_there() -> None:
    assert slirp.version().split(".")[0] == "4"


def test_dhcp_discover_gets_an_offer_of_10_0_2_15(port: UserPort) -> None:
    port.send(dhcp(1))
    offer = frames_until(port, lambda f: f[12:14] == b"\x08\x00" and f[23] == 17
                         and f[34:38] == struct.pack("!HH", 67, 68))
    assert socket.inet_ntoa(offer[14 + 28 + 16:14 + 28 + 20]) == "10.0.2.15"  # yiaddr
    opts = dhcp_options(offer)
    assert opts[53] == b"\x02"  # DHCPOFFER
    assert socket.inet_ntoa(opts[1]) == "255.255.255.0"
    assert socket.inet_ntoa(opts[3]) == "10.0.2.2"  # router
    assert socket.inet_ntoa(opts[6]) == "10.0.2.3"  # DNS


@pytest.mark.parametrize("address", ["10.0.2.2", "10.0.2.3"])
def test_arp_for_the_gateway_and_dns_is_answered(port: UserPort, address: str) -> None:
    port.send(arp_request(address))
    reply = frames_until(port, lambda f: f[12:14] == b"\x08\x06")
    op, sha, spa, tha, tpa = struct.unpack("!6xH6s4s6s4s", reply[14:42])
    assert op == 2 and socket.inet_ntoa(spa) == address and tha == GUEST_MAC
    assert reply[:6] == GUEST_MAC and socket.inet_ntoa(tpa) == "10.0.2.15"


def test_udp_from_the_guest_reaches_the_hosts_loopback_and_back(port: UserPort) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        sport = server.getsockname()[1]
        port.send(arp_request("10.0.2.2"))  # libslirp learns the guest's MAC from it
        frames_until(port, lambda f: f[12:14] == b"\x08\x06")
        port.send(ether(bytes.fromhex("525500000000"), 0x0800,
                        udp("10.0.2.15", 40000, "10.0.2.2", sport, b"ping from the guest")))
        data, peer = server.recvfrom(100)
        assert data == b"ping from the guest" and peer[0] == "127.0.0.1"
        server.sendto(b"pong from the host", peer)
        reply = frames_until(port, lambda f: f[12:14] == b"\x08\x00" and f[23] == 17)
    assert reply[:6] == GUEST_MAC
    assert socket.inet_ntoa(reply[26:30]) == "10.0.2.2"
    assert struct.unpack("!HH", reply[34:38]) == (sport, 40000)
    assert reply[42:] == b"pong from the host"


def test_restrict_keeps_the_guest_in_but_dhcp_works() -> None:
    p = UserPort(restrict=True)
    try:
        p.send(dhcp(1))
        offer = frames_until(p, lambda f: f[12:14] == b"\x08\x00" and f[23] == 17)
        assert socket.inet_ntoa(offer[14 + 28 + 16:14 + 28 + 20]) == "10.0.2.15"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind(("127.0.0.1", 0))
            server.settimeout(1.0)
            p.send(ether(bytes.fromhex("525500000000"), 0x0800, udp(
                "10.0.2.15", 40000, "10.0.2.2", server.getsockname()[1], b"let me out")))
            for _ in range(5):
                select.select([p.fileno()], [], [], 0.1)
                p.receive()
            with pytest.raises(TimeoutError):
                server.recvfrom(100)
    finally:
        p.close()


def test_hostfwd_connection_reaches_the_guest_as_a_syn() -> None:
    hport = free_port()
    p = UserPort((parse_hostfwd(f"tcp::{hport}-:8080"),))
    try:
        p.send(arp_request("10.0.2.2"))
        frames_until(p, lambda f: f[12:14] == b"\x08\x06")
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", hport))
        syn = frames_until(p, lambda f: f[12:14] == b"\x08\x00" and f[23] == 6)
        client.close()
    finally:
        p.close()
    assert socket.inet_ntoa(syn[30:34]) == "10.0.2.15"
    dport, flags = struct.unpack("!2xH9xB", syn[34:48])
    assert dport == 8080 and flags & 0x02  # SYN
    # closing the port closed its listening socket: the host port is free again
    with socket.socket() as again:
        again.bind(("127.0.0.1", hport))


def test_hostfwd_on_a_port_in_use_is_refused_by_name() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        hport = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"hostfwd=tcp::{hport}-:22: cannot listen on "
                           rf"127.0.0.1:{hport} \(the port is already in use\)"):
            UserPort((parse_hostfwd("tcp::2222-:23"), parse_hostfwd(f"tcp::{hport}-:22")))


def test_frames_for_a_guest_that_does_not_read_are_bounded(port: UserPort) -> None:
    """5000 ARP requests, never a receive(): libslirp answers each, the port keeps at
    most QUEUE_FRAMES of the answers and counts the rest as dropped."""
    from pyhv.net.user import QUEUE_FRAMES

    for _ in range(5000):
        port.send(arp_request("10.0.2.2"))
    port.send(b"short")  # not a frame: refused
    assert port.stats["tx_frames"] == 5000 and port.stats["tx_dropped"] == 1
    assert port.stats["rx_dropped"] == 5000 - QUEUE_FRAMES
    assert len(port.receive()) == QUEUE_FRAMES


def test_missing_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slirp, "_lib", None)
    monkeypatch.setattr(slirp, "LIBRARY", "libslirp-not-here.so.0")
    monkeypatch.setattr(slirp.ctypes.util, "find_library", lambda _name: None)
    with pytest.raises(ConfigError, match="install the Debian package libslirp0"):
        UserPort()


def test_a_switch_uplink_gives_each_vm_on_the_switch_its_own_lease(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``pyhv uplink``: two "VMs" (switch ports) on one switch, one libslirp behind it:
    each MAC gets its own address from the shared gateway."""
    import threading

    from pyhv.net import SwitchPort
    from pyhv.net.uplink import SwitchUplink

    up = SwitchUplink("uplinktest", runtime_dir=str(tmp_path))
    runner = threading.Thread(target=up.serve, kwargs={"timeout": 30})
    runner.start()
    vms = [SwitchPort("uplinktest", runtime_dir=str(tmp_path)) for _ in range(2)]
    macs = [bytes.fromhex("5254000000a1"), bytes.fromhex("5254000000a2")]
    try:
        leases = []
        for vm, mac in zip(vms, macs, strict=True):
            vm.refresh()
            vm.send(dhcp(1, mac=mac))
            offer = frames_until(vm, lambda f, m=mac: f[12:14] == b"\x08\x00"
                                 and f[23] == 17 and f[14 + 28 + 28:14 + 28 + 34] == m)
            leases.append(socket.inet_ntoa(offer[14 + 28 + 16:14 + 28 + 20]))
        assert leases == ["10.0.2.15", "10.0.2.16"]
    finally:
        up.stop()
        runner.join(10)
        up.close()
        for vm in vms:
            vm.close()


# ------------------------------------------------- checksum offload (VIRTIO_NET_F_CSUM)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 57, 1472, 65000, 65001])
def test_the_nic_completes_a_partial_checksum_as_the_reference_sum(length: int) -> None:
    """complete_checksum against the word-by-word sum of RFC 1071, on random UDP
    payloads of even and odd lengths: the driver seeds the field with the pseudo-header's
    folded sum (as Linux does), the device sums the rest."""
    import random

    from pyhv.devices.virtio.net import complete_checksum

    rng = random.Random(length)
    payload = rng.randbytes(length)
    want = udp("10.0.2.15", 40000, "10.0.2.2", 9, payload)
    ulen = 8 + length
    pseudo = socket.inet_aton("10.0.2.15") + socket.inet_aton("10.0.2.2") + \
        struct.pack("!BBH", 0, 17, ulen)
    seed = ~checksum(pseudo) & 0xFFFF  # the folded, not inverted, pseudo-header sum
    partial = bytearray(want)
    partial[26:28] = struct.pack("!H", seed)
    hdr = struct.pack("<BBHHHHH", 1, 0, 0, 0, 34, 6, 1)  # NEEDS_CSUM: UDP at 14+20
    frame = ether(bytes(6), 0x0800, bytes(partial))
    done = complete_checksum(hdr, frame)
    assert done == ether(bytes(6), 0x0800, want)
    assert complete_checksum(struct.pack("<BBHHHHH", 1, 0, 0, 0, 14 + 20 + ulen, 6, 1),
                             frame) is None  # pointing past the frame


def test_a_frame_the_guest_left_to_the_nic_to_checksum_reaches_the_host() -> None:
    """Through the real transport: a UDP frame whose checksum field holds only the
    pseudo-header's sum (NEEDS_CSUM, split over two buffers as Linux's scatter-gather
    sends it) arrives at a host socket; the same frame without the flag is dropped by
    libslirp's own check, so the device did the sum."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from virtio_driver import Driver

    from pyhv.devices.virtio.net import VIRTIO_NET_F_CSUM, VirtioNet

    nic = VirtioNet.on_user_network(mac="52:54:00:12:34:56")
    d = Driver(nic, features=(1 << 32) | VIRTIO_NET_F_CSUM)
    d.setup(2)
    try:
        assert d.dev.driver_features & VIRTIO_NET_F_CSUM
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind(("127.0.0.1", 0))
            server.settimeout(2)
            sport = server.getsockname()[1]
            d.add(1, [bytes(12) + arp_request("10.0.2.2")], [])
            d.kick(1)

            def partial(text: bytes) -> bytes:
                full = udp("10.0.2.15", 40000, "10.0.2.2", sport, text)
                pseudo = socket.inet_aton("10.0.2.15") + socket.inet_aton("10.0.2.2") + \
                    struct.pack("!BBH", 0, 17, 8 + len(text))
                return full[:26] + struct.pack("!H", ~checksum(pseudo) & 0xFFFF) + full[28:]

            for flags, text in ((0, b"unsummed, unflagged"), (1, b"summed by the NIC")):
                frame = ether(bytes.fromhex("525500000000"), 0x0800, partial(text))
                hdr = struct.pack("<BBHHHHH", flags, 0, 0, 0, 34, 6, 1)
                d.add(1, [hdr + frame[:40], frame[40:]], [])
                d.kick(1)
            data, _ = server.recvfrom(100)
            assert data == b"summed by the NIC"
    finally:
        nic.close()
