"""The TAP backend (pyhv.net.tap): its options and errors, and a TapPort attached for real
to a TAP interface in a network namespace of its own (``unshare -rn``: the test is root
there, makes the interface, and no frame can leave it), where the host kernel answers
an ARP request the "guest" sends. Skipped, saying why, where namespaces cannot be made.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyhv.cli.qemu_compat import config_from_args
from pyhv.errors import ConfigError
from pyhv.host.definition import VMDefinition
from pyhv.host.errors import DefinitionError
from pyhv.net.tap import TapPort
from pyhv.vm.config import NetSpec, parse_net_option

SRC = Path(__file__).resolve().parents[2] / "src"


def test_net_tap_option() -> None:
    spec = parse_net_option("tap,ifname=tap0,mac=52:54:00:00:00:09,rx_bps=1M")
    assert spec.tap == "tap0" and spec.switch is None and spec.user is None
    assert spec.mac == "52:54:00:00:00:09" and spec.rx_bps == 1 << 20


@pytest.mark.parametrize(("text", "words"), [
    ("tap", "a TAP NIC is tap,ifname=NAME"),
    ("switch=lan,ifname=tap0", "ifname= belongs to tap"),
    ("ifname=tap0", "a TAP NIC is tap,ifname=NAME"),
    ("tap,ifname=a-name-far-too-long", "'a-name-far-too-long' is invalid"),
    ("tap,ifname=tap0,user", "choose one of"),
    ("tap,ifname=tap0,hostfwd=tcp::1-:2", "belong to user networking"),
])
def test_bad_tap_options_name_the_option(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_net_option(text)


def test_qemu_netdev_tap() -> None:
    base = ["-bios", "none", "-kernel", "/dev/null", "-device",
            "virtio-net-device,netdev=n0,mac=52:54:00:00:00:0a"]
    config, _ = config_from_args([*base, "-netdev",
                                  "tap,id=n0,ifname=tap7,script=no,downscript=no"])
    assert config.devices == (NetSpec(None, "52:54:00:00:00:0a", tap="tap7"),)
    with pytest.raises(ConfigError, match="script=/etc/qemu-ifup is not supported"):
        config_from_args([*base, "-netdev", "tap,id=n0,ifname=tap7,script=/etc/qemu-ifup"])
    with pytest.raises(ConfigError, match="ifname=NAME is required"):
        config_from_args([*base, "-netdev", "tap,id=n0"])


def test_definition_with_a_tap_nic() -> None:
    text = 'name = "t"\n[boot]\nkernel = "/boot/Image"\n[[net]]\ntap = "tap3"\n'
    d = VMDefinition.from_toml(text, "vm.toml", base_dir="/vms")
    assert d.nets[0].tap == "tap3"
    assert VMDefinition.from_toml(d.to_toml(), "again.toml", base_dir="/vms").nets == d.nets
    (nic,) = d.to_machine_config().devices
    assert nic == NetSpec(None, tap="tap3")
    with pytest.raises(DefinitionError, match=r"net\[0\]\.tap"):
        VMDefinition.from_toml(text + 'switch = "lan"\n', "vm.toml", base_dir="/vms")
    with pytest.raises(DefinitionError, match=r"net\[0\]\.hostfwd: belongs to user"):
        VMDefinition.from_toml(text + 'hostfwd = ["tcp::1-:2"]\n', "vm.toml", base_dir="/vms")
    with pytest.raises(DefinitionError, match=r"net\[0\]\.tap: .* is invalid"):
        VMDefinition.from_toml(text.replace("tap3", "t/3"), "vm.toml", base_dir="/vms")


def test_no_tun_device_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--net tap,ifname=tap0: cannot open .*nope"):
        TapPort("tap0", device=str(tmp_path / "nope"))


# The part run as root of a fresh network namespace: attach (creating the interface),
# give the host side 10.0.3.1, send an ARP request for it from the "guest" and wait for
# the kernel's reply.
IN_NAMESPACE = r"""
import select, socket, struct, subprocess, sys
from pyhv.net.tap import TapPort
port = TapPort("pyhvtap0")
subprocess.run(["ip", "addr", "add", "10.0.3.1/24", "dev", "pyhvtap0"], check=True)
subprocess.run(["ip", "link", "set", "pyhvtap0", "up"], check=True)
mac = bytes.fromhex("525400000042")
arp = b"\xff" * 6 + mac + b"\x08\x06" + struct.pack(
    "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton("10.0.3.2"), bytes(6),
    socket.inet_aton("10.0.3.1"))
for _attempt in range(50):
    port.send(arp)
    if select.select([port.fileno()], [], [], 0.1)[0]:
        for frame in port.receive():
            if frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02":
                print("ARP-REPLY", socket.inet_ntoa(frame[28:32]), frame[32:38].hex())
                sys.exit(0)
print("no reply", port.stats)
sys.exit(1)
"""


def test_a_tap_port_exchanges_frames_with_the_host_kernel() -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.skip("needs unshare(1) and ip(8) (util-linux, iproute2)")
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a user+network namespace: {probe.stderr.strip()}")
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun on this host")
    result = subprocess.run([unshare, "-rn", sys.executable, "-c", IN_NAMESPACE],
                            capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/sbin:/sbin:/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ARP-REPLY 10.0.3.1 525400000042" in result.stdout, result.stdout
