"""The in-host virtual switch (pyhv.net.switch): ports in one or several processes.

Every test uses ``tmp_path`` as the runtime directory, so nothing touches the user's
real switches. Within one process a frame is in the receiver's kernel queue as soon as
``send`` returns, so most tests need no waiting; the two-process tests wait with
``select`` on ``fileno()`` as a VM does.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pyhv.errors import ConfigError
from pyhv.net import MAX_FRAME, MIN_FRAME, SwitchPort, switch_directory

BCAST = b"\xff" * 6
MAC_A = bytes.fromhex("525400000001")
MAC_B = bytes.fromhex("525400000002")
MAC_C = bytes.fromhex("525400000003")
MAC_X = bytes.fromhex("525400000099")  # nobody has it
MCAST = bytes.fromhex("01005e000001")
ETHERTYPE = b"\x88\xb5"  # local experimental


def eth(dst: bytes, src: bytes, payload: bytes = b"") -> bytes:
    return dst + src + ETHERTYPE + payload


def padded(dst: bytes, src: bytes, seq: int, size: int = 1514) -> bytes:
    head = eth(dst, src, seq.to_bytes(4, "big"))
    return head + bytes((seq + i) & 0xFF for i in range(size - len(head)))


def wait_frames(port: SwitchPort, count: int, timeout: float = 5.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        select.select([port], [], [], left)
        got += port.receive()
    return got


PortFactory = Callable[..., SwitchPort]


@pytest.fixture
def make_port(tmp_path: Path) -> Iterator[PortFactory]:
    made: list[SwitchPort] = []

    def make(switch: str = "lan", **kw: object) -> SwitchPort:
        port = SwitchPort(switch, runtime_dir=str(tmp_path), **kw)  # type: ignore[arg-type]
        made.append(port)
        return port

    yield make
    for port in made:
        port.close()


def test_directory_and_port_file(tmp_path: Path, make_port: PortFactory) -> None:
    a = make_port("lan")
    d = tmp_path / "switch-lan"
    assert a.directory == str(d) and a.path == str(d / a.name)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_ISSOCK((d / a.name).stat().st_mode)
    assert a.name.startswith(f"port-{os.getpid()}-") and a.name.endswith(".sock")
    assert os.listdir(d) == [a.name]  # the temporary .bind- name is gone
    assert switch_directory("lan", str(tmp_path)) == str(d)
    a.close()
    a.close()  # idempotent
    assert os.listdir(d) == []
    assert a.fileno() == -1 and a.receive() == []
    a.send(eth(BCAST, MAC_A))  # a closed port drops and counts, never raises
    assert a.stats["tx_dropped"] == 1


@pytest.mark.parametrize("name", ["", "a" * 65, "a/b", "lan 1", "lan\n", "ü", "..\x00", 5, None])
def test_bad_switch_names_are_refused(tmp_path: Path, name: object) -> None:
    with pytest.raises(ConfigError):
        SwitchPort(name, runtime_dir=str(tmp_path))  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_longest_name_works_past_the_sun_path_limit(make_port: PortFactory) -> None:
    # "switch-" + 64 characters pushes the socket path past sockaddr_un's 107 bytes.
    name = "Z_.-" * 16
    a, b = make_port(name), make_port(name)
    assert len(b.path) > 107
    a.send(eth(BCAST, MAC_A, b"long"))
    assert b.receive() == [eth(BCAST, MAC_A, b"long")]


def test_switch_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to chown")
    d = tmp_path / "switch-lan"
    d.mkdir(mode=0o700)
    os.chown(d, 12345, 12345)
    with pytest.raises(ConfigError, match="another user"):
        SwitchPort("lan", runtime_dir=str(tmp_path))


def test_broadcast_then_learned_unicast(make_port: PortFactory) -> None:
    a, b, c = make_port(), make_port(), make_port()

    a.send(eth(BCAST, MAC_A, b"who is there"))
    assert b.receive() == [eth(BCAST, MAC_A, b"who is there")]
    assert c.receive() == [eth(BCAST, MAC_A, b"who is there")]

    # B learned MAC_A -> A from the broadcast: its reply goes to A only.
    b.send(eth(MAC_A, MAC_B, b"B here"))
    assert a.receive() == [eth(MAC_A, MAC_B, b"B here")]
    assert c.receive() == []

    # A learned MAC_B -> B: unicast to B only, many times.
    for i in range(5):
        a.send(eth(MAC_B, MAC_A, b"to B %d" % i))
    assert b.receive() == [eth(MAC_B, MAC_A, b"to B %d" % i) for i in range(5)]
    assert c.receive() == []

    # Unknown unicast and multicast are flooded to every other port.
    a.send(eth(MAC_X, MAC_A, b"unknown"))
    a.send(eth(MCAST, MAC_A, b"multicast"))
    want = [eth(MAC_X, MAC_A, b"unknown"), eth(MCAST, MAC_A, b"multicast")]
    assert b.receive() == want and c.receive() == want
    assert a.receive() == []  # never back to the sender

    assert a.stats["tx_frames"] == 8 and a.stats["tx_flooded"] == 3
    assert b.stats["tx_flooded"] == 0
    assert a.stats["tx_dropped"] == b.stats["tx_dropped"] == 0
    assert b.stats["rx_frames"] == 8
    assert a.stats["connects"] == 2 and b.stats["connects"] == 0  # B answered on A's link


def test_switches_are_isolated(tmp_path: Path, make_port: PortFactory) -> None:
    a, b, other = make_port("lan"), make_port("lan"), make_port("lan2")
    a.send(eth(BCAST, MAC_A, b"1"))
    other.send(eth(BCAST, MAC_C, b"2"))
    assert b.receive() == [eth(BCAST, MAC_A, b"1")]
    assert other.receive() == []
    assert a.receive() == []
    assert sorted(os.listdir(tmp_path)) == ["switch-lan", "switch-lan2"]
    assert a.peers() == [b.name]


def test_frame_sizes(make_port: PortFactory) -> None:
    a, b = make_port(), make_port()
    a.send(b"\xff" * (MIN_FRAME - 1))
    a.send(b"\xff" * (MAX_FRAME + 1))
    assert a.stats["tx_invalid"] == 2 and a.stats["tx_dropped"] == 2
    assert a.stats["tx_frames"] == 0
    smallest = eth(BCAST, MAC_A)
    largest = padded(BCAST, MAC_A, 7, MAX_FRAME)
    a.send(smallest)
    a.send(bytearray(largest))
    a.send(memoryview(largest))
    assert b.receive() == [smallest, largest, largest]
    assert a.stats["tx_bytes"] == MIN_FRAME + 2 * MAX_FRAME


def test_receive_limit_and_fileno(make_port: PortFactory) -> None:
    a, b = make_port(), make_port()
    assert select.select([b], [], [], 0)[0] == []
    frames = [eth(BCAST, MAC_A, bytes([i])) for i in range(10)]
    for f in frames:
        a.send(f)
    assert select.select([b], [], [], 1)[0] == [b]
    assert b.receive(limit=3) == frames[:3]
    assert select.select([b], [], [], 0)[0] == [b]  # the rest still waits
    assert b.receive() == frames[3:]
    assert select.select([b], [], [], 0)[0] == []


def test_peer_closed_without_unlinking_is_reaped(make_port: PortFactory) -> None:
    a, b, c = make_port(), make_port(), make_port()
    a.send(eth(BCAST, MAC_A))
    assert len(b.receive()) == 1 and len(c.receive()) == 1
    b.send(eth(MAC_A, MAC_B))  # B knows MAC_A: to A only; A learns MAC_B -> B
    assert len(a.receive()) == 1 and c.receive() == []
    b._abandon()  # as a killed process: sockets gone, socket file left behind
    assert os.path.exists(b.path)

    a.send(eth(MAC_B, MAC_A, b"to the dead"))  # learned peer gone: flooded instead
    assert c.receive() == [eth(MAC_B, MAC_A, b"to the dead")]
    assert not os.path.exists(b.path)
    assert a.stats["peers_reaped"] == 1
    assert a.peers() == [c.name]

    # A port that died before anybody talked to it is found in the directory and reaped.
    d = make_port()
    d._abandon()
    a.refresh()
    a.send(eth(BCAST, MAC_A, b"again"))
    assert c.receive() == [eth(BCAST, MAC_A, b"again")]
    assert not os.path.exists(d.path)
    assert a.stats["peers_reaped"] == 2
    assert a.stats["tx_dropped"] == 0
    assert set(os.listdir(a.directory)) == {a.name, c.name}


def test_peer_file_unlinked(make_port: PortFactory) -> None:
    a, b, c = make_port(), make_port(), make_port()
    a.send(eth(BCAST, MAC_A, b"1"))
    assert len(b.receive()) == 1 and len(c.receive()) == 1
    os.unlink(b.path)  # someone removed B's file: established links keep working
    a.refresh()
    a.send(eth(BCAST, MAC_A, b"2"))
    assert b.receive() == [eth(BCAST, MAC_A, b"2")]
    assert c.receive() == [eth(BCAST, MAC_A, b"2")]

    e = make_port()  # a newcomer cannot find B any more, and does not trip over it
    e.send(eth(BCAST, MAC_C, b"3"))
    assert b.receive() == [] and len(c.receive()) == 1 and len(a.receive()) == 1

    b.close()  # its file is already gone: close removes nothing else
    assert sorted(os.listdir(a.directory)) == sorted([a.name, c.name, e.name])
    a.send(eth(BCAST, MAC_A, b"4"))
    assert c.receive() == [eth(BCAST, MAC_A, b"4")]
    assert b.name not in a.peers()


def test_new_ports_are_found(make_port: PortFactory) -> None:
    a = make_port(refresh_interval=1000.0)
    a.send(eth(BCAST, MAC_A, b"alone"))  # listing cached: nobody
    b = make_port()
    a.send(eth(BCAST, MAC_A, b"cached"))
    assert b.receive() == []  # A has not re-read the directory yet
    b.send(eth(BCAST, MAC_B, b"hello"))  # B's link tells A about B at once
    assert a.receive() == [eth(BCAST, MAC_B, b"hello")]
    a.send(eth(BCAST, MAC_A, b"now"))
    assert b.receive() == [eth(BCAST, MAC_A, b"now")]

    fast = make_port(refresh_interval=0.05)
    fast.send(eth(BCAST, MAC_C, b"x"))
    late = make_port()
    time.sleep(0.06)
    fast.send(eth(BCAST, MAC_C, b"periodic"))
    assert late.receive() == [eth(BCAST, MAC_C, b"periodic")]


def test_burst_is_delivered_or_counted(make_port: PortFactory) -> None:
    a, b = make_port(), make_port()
    n = 2000
    frames = [padded(MAC_B, MAC_A, i) for i in range(n)]
    for f in frames:  # B does not read while the burst goes out
        a.send(f)
    got = b.receive()
    assert len(got) + a.stats["tx_dropped"] == n
    assert got == frames[: len(got)]  # in order, intact, the tail dropped
    assert len(got) > 100  # far deeper than a datagram socket's 10-frame queue
    assert a.stats["tx_frames"] == n

    # Read as it comes (every 100 frames) and nothing is lost.
    a2, b2 = make_port("lan2"), make_port("lan2")
    got = []
    for i, f in enumerate(frames):
        a2.send(f)
        if i % 100 == 99:
            got += b2.receive()
    got += b2.receive()
    assert got == frames and a2.stats["tx_dropped"] == 0


def test_flood_drops_only_for_the_full_peer(make_port: PortFactory) -> None:
    a, slow, quick = make_port(), make_port(), make_port()
    n = 1500
    got_quick: list[bytes] = []
    for i in range(n):
        a.send(padded(BCAST, MAC_A, i))
        if i % 50 == 49:
            got_quick += quick.receive()
    got_quick += quick.receive()
    got_slow = slow.receive()
    assert len(got_quick) == n
    assert 0 < len(got_slow) < n
    assert a.stats["tx_dropped"] == n - len(got_slow)


def test_garbage_connection_is_dropped(make_port: PortFactory) -> None:
    a, b = make_port(), make_port()
    rogue = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    rogue.connect(a.path)
    rogue.send(b"not a hello at all")
    assert a.receive() == []
    assert a.stats["rx_invalid"] == 1
    rogue.close()
    b.send(eth(BCAST, MAC_B, b"still fine"))
    assert a.receive() == [eth(BCAST, MAC_B, b"still fine")]


def test_bind_leftover_is_removed(make_port: PortFactory) -> None:
    a = make_port()
    leftover = os.path.join(a.directory, ".bind-1-0123456789abcdef.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(leftover)
    s.close()
    a.refresh()
    assert os.path.exists(leftover)  # young: maybe a port being born
    old = time.time() - 3600
    os.utime(leftover, (old, old), follow_symlinks=False)
    a.refresh()
    assert not os.path.exists(leftover)


CHILD_ECHO = r"""
import select, sys, time
from pyhv.net.switch import SwitchPort
port = SwitchPort(sys.argv[1], runtime_dir=sys.argv[2])
mac = bytes.fromhex(sys.argv[3])
print(port.name, flush=True)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    select.select([port], [], [], 0.5)
    for f in port.receive():
        if f[14:] == b"quit":
            sys.exit(0)  # no close(): the exit handler must remove the socket file
        port.send(f[6:12] + mac + f[12:])
sys.exit(3)
"""

CHILD_SLEEP = r"""
import sys, time
from pyhv.net.switch import SwitchPort
port = SwitchPort(sys.argv[1], runtime_dir=sys.argv[2])
print(port.name, flush=True)
time.sleep(30)
"""


@contextmanager
def spawned(script: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A child ``python -c script args``; yields it and the port name it printed."""
    with subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            name = proc.stdout.readline().strip()
            assert name.startswith("port-"), f"child failed to start (exit {proc.poll()})"
            yield proc, name
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_two_processes_round_trip(tmp_path: Path, make_port: PortFactory) -> None:
    a = make_port("lan")
    with spawned(CHILD_ECHO, "lan", str(tmp_path), MAC_C.hex()) as (proc, child_name):
        a.send(eth(BCAST, MAC_A, b"ping"))
        assert wait_frames(a, 1) == [eth(MAC_A, MAC_C, b"ping")]
        frames = [padded(MAC_C, MAC_A, i) for i in range(300)]
        echoed: list[bytes] = []
        for start in range(0, len(frames), 50):  # windows of 50, as a guest's TCP would
            for f in frames[start : start + 50]:
                a.send(f)
            echoed += wait_frames(a, 50)
        assert echoed == [MAC_A + MAC_C + f[12:] for f in frames]
        assert a.stats["tx_flooded"] == 1  # everything after the ping went by unicast
        assert a.stats["tx_dropped"] == 0
        assert a.peers() == [child_name]
        a.send(eth(MAC_C, MAC_A, b"quit"))
        assert proc.wait(timeout=10) == 0
    assert not (tmp_path / "switch-lan" / child_name).exists()


def test_killed_process_is_reaped(tmp_path: Path, make_port: PortFactory) -> None:
    a, c = make_port("lan"), make_port("lan")
    with spawned(CHILD_SLEEP, "lan", str(tmp_path)) as (proc, child_name):
        a.refresh()
        a.send(eth(BCAST, MAC_A, b"before"))  # links A to the child
        assert a.peers() == sorted([c.name, child_name])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    child_file = tmp_path / "switch-lan" / child_name
    assert child_file.exists()  # a killed process cleans nothing up
    a.send(eth(BCAST, MAC_A, b"after"))
    assert c.receive() == [eth(BCAST, MAC_A, b"before"), eth(BCAST, MAC_A, b"after")]
    assert not child_file.exists()
    assert a.stats["peers_reaped"] == 1 and a.peers() == [c.name]
