"""The Linux guest on user-mode networking (``--net user``, libslirp), as a user of
QEMU's ``-netdev user`` would try it: ``udhcpc`` gets 10.0.2.15, ``wget`` fetches a
20 MiB file from a web server on the host's 127.0.0.1 through 10.0.2.2 (sha256 checked
in the guest), a host client reaches the guest's ``httpd`` through ``hostfwd``, a file
put and got back with ``tftp`` makes a UDP echo, and DNS through 10.0.2.3 resolves a
name served by the test's own responder. Every server is on 127.0.0.1.

The DNS test runs the VM in a user, network and mount namespace of its own
(``unshare -rnm``): libslirp forwards 10.0.2.3 to the first nameserver of
/etc/resolv.conf on port 53 and offers no way to name another one, so the test
bind-mounts a resolv.conf saying 127.0.0.1 and runs its responder on 127.0.0.1:53 of
that namespace (which has only a loopback interface). Skipped where namespaces cannot
be created. Also here: user networking across a snapshot and a live migration, and the
TAP backend (``--net tap,ifname=``) in a namespace of its own. Marked slow: real
kernels boot.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .linux_guest import IMAGE, INITRD, PROMPT, GuestProcess, needs_linux

pytestmark = [pytest.mark.slow, needs_linux]
BOOT_TIMEOUT = float(os.environ.get("PYHV_TEST_BOOT_TIMEOUT", "900"))
HERE = Path(__file__).resolve().parent
# udhcpc only reports a lease; this script (udhcpc -s) configures it, as distributions'
# default.script does.
DHCP_SCRIPT = (r"printf '#!/bin/sh\ncase $1 in bound) ip addr add $ip/$mask dev $interface;"
               r" ip route add default via $router; echo nameserver $dns > /etc/resolv.conf;;"
               r" esac\n' > /tmp/dhcp.sh && chmod +x /tmp/dhcp.sh")
UDHCPC = "ip link set eth0 up && udhcpc -i eth0 -q -n -t 5 -s /tmp/dhcp.sh"


def pyhv_run(net: str) -> list[str]:
    return [sys.executable, "-m", "pyhv.cli.main", "run", "--kernel", str(IMAGE),
            "--initrd", str(INITRD), "--append", "console=ttyS0", "--net", net]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    (root / "blob.bin").write_bytes(os.urandom(20 << 20))
    return root


@pytest.fixture(scope="module")
def web_server(web_root: Path) -> Iterator[int]:
    """Python's HTTP server on 127.0.0.1, in a process of its own."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             str(port)], cwd=web_root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the test's HTTP server did not start")
            time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def guest() -> Iterator[tuple[GuestProcess, int]]:
    """One guest on user networking with port 80 forwarded from a free host port,
    booted once for the module; (guest, forwarded host port)."""
    hport = free_port()
    g = GuestProcess(pyhv_run(f"user,hostfwd=tcp::{hport}-:80"))
    try:
        g.expect(PROMPT, BOOT_TIMEOUT)
        g.run(DHCP_SCRIPT)
        yield g, hport
    finally:
        g.stop()


def test_udhcpc_gets_the_lease(guest: tuple[GuestProcess, int]) -> None:
    g, _ = guest
    out = g.run(UDHCPC, timeout=60)
    assert "lease of 10.0.2.15 obtained from 10.0.2.2" in out, out
    out = g.run("ip addr show eth0; ip route; cat /etc/resolv.conf")
    assert "mtu 65520" in out, out  # the NIC's MTU (VIRTIO_NET_F_MTU), as slirp4netns
    assert "inet 10.0.2.15/24" in out, out
    assert "default via 10.0.2.2" in out, out
    assert "nameserver 10.0.2.3" in out, out


def test_wget_fetches_20_mib_from_the_hosts_loopback(
        guest: tuple[GuestProcess, int], web_server: int, web_root: Path) -> None:
    g, _ = guest
    want = hashlib.sha256((web_root / "blob.bin").read_bytes()).hexdigest()
    out = g.run(f"wget -q -O /tmp/blob.bin http://10.0.2.2:{web_server}/blob.bin; "
                "echo rc=$?; sha256sum /tmp/blob.bin; rm -f /tmp/blob.bin", timeout=120)
    assert "rc=0" in out, out
    assert f"{want}  /tmp/blob.bin" in out, out


def test_a_host_client_reaches_the_guests_httpd_through_hostfwd(
        guest: tuple[GuestProcess, int]) -> None:
    g, hport = guest
    g.run("mkdir -p /www && echo hello-from-the-guest-$((6*7)) > /www/index.html && "
          "httpd -p 80 -h /www")
    with socket.create_connection(("127.0.0.1", hport), timeout=30) as s:
        s.sendall(b"GET /index.html HTTP/1.0\r\nHost: guest\r\n\r\n")
        s.settimeout(30)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n")[0], reply
    assert reply.endswith(b"\r\n\r\nhello-from-the-guest-42\n"), reply


def test_a_udp_echo_round_trips(guest: tuple[GuestProcess, int]) -> None:
    """busybox has no UDP nc: the guest puts a file on the host's TFTP server (UDP) and
    gets it back, then compares."""
    from .net_servers import TftpEcho

    g, _ = guest
    server = TftpEcho()
    try:
        out = g.run("head -c 3000 /dev/urandom > /tmp/udp.out && "
                    f"tftp -p -l /tmp/udp.out -r echo.bin 10.0.2.2 {server.port} && "
                    f"tftp -g -l /tmp/udp.in -r echo.bin 10.0.2.2 {server.port} && "
                    "cmp /tmp/udp.out /tmp/udp.in && echo UDP-ECHO-OK; sha256sum /tmp/udp.in",
                    timeout=60)
    finally:
        server.close()
    assert "UDP-ECHO-OK" in out, out
    assert len(server.files["echo.bin"]) == 3000
    assert hashlib.sha256(server.files["echo.bin"]).hexdigest() in out
    assert server.peers == {"127.0.0.1"}  # libslirp's NAT: the host sees loopback


def test_dns_through_10_0_2_3_resolves_a_name_the_test_serves(tmp_path: Path) -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.skip("needs unshare(1) and ip(8) (util-linux, iproute2)")
    # user, network, mount and PID namespaces: the responder dies with the VM
    namespaces = [unshare, "-rnmpf", "--kill-child"]
    probe = subprocess.run([*namespaces, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create user+network+mount namespaces: {probe.stderr.strip()}")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    ready = tmp_path / "dns-ready"
    script = (
        f"{ip} link set lo up && mount --bind {resolv} /etc/resolv.conf && "
        f"{sys.executable} {HERE / 'net_servers.py'} dns 127.0.0.1 53 {ready} "
        "pyhv-test.example=192.0.2.42 & "
        f"while [ ! -e {ready} ]; do sleep 0.05; done; exec \"$@\"")
    g = GuestProcess([*namespaces, "sh", "-c", script, "sh", *pyhv_run("user")])
    try:
        g.expect(PROMPT, BOOT_TIMEOUT)
        g.run(DHCP_SCRIPT)
        out = g.run(UDHCPC, timeout=60)
        assert "lease of 10.0.2.15" in out, out
        out = g.run("nslookup pyhv-test.example 10.0.2.3", timeout=60)
        assert "192.0.2.42" in out, out
        out = g.run("nslookup not-there.example 10.0.2.3", timeout=60)
        assert "192.0.2.42" not in out and "NXDOMAIN" in out, out
    finally:
        g.stop()


def _user_net_machine(hport: int, mtu: int = 65520):  # type: ignore[no-untyped-def]
    from pyhv import BufferConsole, Machine, MachineConfig
    from pyhv.vm.config import NetSpec, UserNetSpec

    cfg = MachineConfig(kernel=str(IMAGE), initrd=str(INITRD), append="console=ttyS0",
                        devices=(NetSpec(None, "52:54:00:12:34:60",
                                         user=UserNetSpec((f"tcp::{hport}-:80",), mtu=mtu)),))
    console = BufferConsole()
    return Machine(cfg, console=console), console


def _fetch(hport: int) -> bytes:
    with socket.create_connection(("127.0.0.1", hport), timeout=30) as s:
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        s.settimeout(30)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply


def _fetch_while_running(vm, hport: int) -> bytes:  # type: ignore[no-untyped-def]
    """GET / through the forward while the in-process VM runs on a thread to answer."""
    import threading

    done = threading.Event()
    runner = threading.Thread(target=lambda: vm.run(timeout=60, stop_when=done.is_set))
    runner.start()
    try:
        return _fetch(hport)
    finally:
        done.set()
        runner.join(60)


def test_a_restored_vm_gets_a_fresh_nat_and_its_forwards_back(
        tmp_path: Path, web_server: int) -> None:
    """Snapshot/restore: libslirp's state is not saved (connections are lost, as behind
    a new NAT), but the restored guest, with the address it had, reaches the host
    again and its forward listens again."""
    from pyhv import BufferConsole, Machine

    from .linux_guest import shell

    hport = free_port()
    vm, console = _user_net_machine(hport, mtu=1500)  # QEMU's MTU, on this one
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        assert "mtu 1500" in shell(vm, console, "ip link show eth0")
        shell(vm, console, DHCP_SCRIPT)
        assert "lease of 10.0.2.15" in shell(vm, console, UDHCPC, timeout=60)
        shell(vm, console, "mkdir -p /www && echo before-snapshot > /www/index.html && "
                           "httpd -p 80 -h /www")
        vm.snapshot(str(tmp_path / "net.snap"))
    finally:
        vm.close()
    console2 = BufferConsole()
    vm2 = Machine.restore(str(tmp_path / "net.snap"), console=console2)
    try:
        out = shell(vm2, console2, f"wget -q -O - http://10.0.2.2:{web_server}/ | head -c 200;"
                                   " echo; echo rc=$?", timeout=60)
        assert "rc=0" in out and "Directory listing" in out, out
        assert _fetch_while_running(vm2, hport).endswith(b"before-snapshot\n")
    finally:
        vm2.close()


def test_a_migrated_vm_keeps_its_forward_on_the_same_host() -> None:
    """Live migration on one host: the source closes its user network (and the forward's
    listening socket) before the destination opens its own on the same port."""
    import threading

    from pyhv import BufferConsole
    from pyhv.vm.migration import migrate, receive

    from .linux_guest import shell

    hport = free_port()
    src, console = _user_net_machine(hport)
    a, b = socket.socketpair()
    box: dict[str, object] = {}
    try:
        assert src.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        shell(src, console, DHCP_SCRIPT)
        assert "lease of 10.0.2.15" in shell(src, console, UDHCPC, timeout=60)
        shell(src, console, "mkdir -p /www && echo migrated > /www/index.html && "
                            "httpd -p 80 -h /www")
        thread = threading.Thread(target=lambda: box.update(vm=receive(b, BufferConsole())))
        thread.start()
        result = migrate(src, a)
        thread.join(120)
        assert result.ok, result
    finally:
        src.close()
        a.close()
        b.close()
    dst = box["vm"]
    try:
        assert _fetch_while_running(dst, hport).endswith(b"\r\n\r\nmigrated\n")
    finally:
        dst.close()  # type: ignore[attr-defined]


def test_a_guest_on_a_tap_interface_reaches_the_host(tmp_path: Path) -> None:
    """``--net tap,ifname=tap0`` in a user+network+mount namespace the test makes (root
    there: it creates tap0 and gives the host side 10.0.3.1/24; nothing in the
    namespace reaches any other network): the guest pings the host and fetches a file
    from a web server bound to 10.0.3.1 in that namespace."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.skip("needs unshare(1) and ip(8) (util-linux, iproute2)")
    namespaces = [unshare, "-rnmpf", "--kill-child"]
    probe = subprocess.run([*namespaces, ip, "tuntap", "add", "dev", "probe0", "mode", "tap"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a TAP interface in a namespace: {probe.stderr.strip()}")
    (tmp_path / "hello.txt").write_text("hello over tap\n")
    script = (
        f"{ip} tuntap add dev tap0 mode tap && {ip} addr add 10.0.3.1/24 dev tap0 && "
        f"{ip} link set tap0 up && {ip} link set lo up && "
        f"{sys.executable} -m http.server --bind 10.0.3.1 --directory {tmp_path} 8000 "
        ">/dev/null 2>&1 & exec \"$@\"")
    g = GuestProcess([*namespaces, "sh", "-c", script, "sh", *pyhv_run("tap,ifname=tap0")])
    try:
        g.expect(PROMPT, BOOT_TIMEOUT)
        g.run("ip addr add 10.0.3.2/24 dev eth0 && ip link set eth0 up")
        out = g.run("ping -c 2 -W 10 10.0.3.1", timeout=60)
        assert "2 packets transmitted, 2 packets received" in out, out
        out = g.run("for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - "
                    "http://10.0.3.1:8000/hello.txt && break; sleep 1; done", timeout=60)
        assert "hello over tap" in out, out
    finally:
        g.stop()


def test_vms_on_a_switch_share_one_nat_gateway(web_server: int) -> None:
    """``pyhv uplink SWITCH``: two VMs on one in-host switch get their own leases from
    the one gateway, see each other, both reach the host, and a forward reaches the
    second guest by its address."""
    switch = f"uplink-{os.getpid()}"
    hport = free_port()
    up = subprocess.Popen([sys.executable, "-m", "pyhv.cli.main", "uplink", switch,
                           "--hostfwd", f"tcp::{hport}-10.0.2.16:80"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    vms: list[GuestProcess] = []
    try:
        assert up.stdout is not None
        assert b"ready" in up.stdout.readline()
        for mac in ("52:54:00:00:01:0a", "52:54:00:00:01:0b"):
            vms.append(GuestProcess(pyhv_run(f"switch={switch},mac={mac}")))
        for g, addr in zip(vms, ("10.0.2.15", "10.0.2.16"), strict=True):
            g.expect(PROMPT, BOOT_TIMEOUT)
            g.run(DHCP_SCRIPT)
            out = g.run(UDHCPC, timeout=60)
            assert f"lease of {addr} obtained from 10.0.2.2" in out, out
            out = g.run(f"wget -q -O - http://10.0.2.2:{web_server}/ | grep -c blob.bin")
            assert "\n1\r\n" in out, out
        out = vms[0].run("ping -c 2 -W 10 10.0.2.16", timeout=60)
        assert "2 packets received" in out, out
        vms[1].run("mkdir -p /www && echo second-guest > /www/index.html && "
                   "httpd -p 80 -h /www")
        with socket.create_connection(("127.0.0.1", hport), timeout=30) as s:
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            s.settimeout(30)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.endswith(b"\r\n\r\nsecond-guest\n"), reply
    finally:
        for g in vms:
            g.stop()
        up.terminate()
        up.wait(30)
    assert up.returncode == 0  # SIGTERM: a clean stop
