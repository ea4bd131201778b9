"""I/O budgets (devices/io_budget.py): token buckets hold a rate and a burst, with a
large request taken as debt; bad terms are errors naming the term."""

from __future__ import annotations

import pytest

from pyhv.devices.io_budget import IoBudget, Limits
from pyhv.errors import ConfigError
from pyhv.vm.config import parse_disk_option


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def drain(budget: IoBudget, clock: Clock, nbytes: int, seconds: float) -> int:
    """Requests of ``nbytes`` as fast as the budget lets them go for ``seconds``."""
    end, done = clock.t + seconds, 0
    while clock.t < end:
        wait = budget.admit(nbytes)
        if wait:
            clock.t += wait
        else:
            done += 1
    return done


def test_a_byte_rate_holds_after_its_burst():
    clock = Clock()
    b = IoBudget(Limits(bps=2 << 20), clock)
    # the first second's worth goes at once (the burst), then 2 MiB/s
    assert drain(b, clock, 64 << 10, 0.0001) == 32
    n = drain(b, clock, 64 << 10, 10.0)
    assert abs(n * (64 << 10) / 10.0 - (2 << 20)) / (2 << 20) < 0.02
    assert b.throttled > 0 and b.throttled_seconds > 9


def test_ops_and_bytes_both_hold_and_a_larger_burst_is_honoured():
    clock = Clock()
    b = IoBudget(Limits(bps=10 << 20, ops=200, ops_burst=50), clock)
    assert drain(b, clock, 4096, 0.0001) == 50  # the op burst
    n = drain(b, clock, 4096, 5.0)
    assert abs(n / 5.0 - 200) < 200 * 0.02  # ops bind (200 x 4 KiB < 10 MiB/s)


def test_a_request_larger_than_the_burst_goes_as_debt():
    clock = Clock()
    b = IoBudget(Limits(bps=1 << 20), clock)
    assert b.admit(4 << 20) == 0.0  # a full bucket lets it go ...
    wait = b.admit(4096)
    assert wait == pytest.approx((3 << 20) / (1 << 20) + 4096 / (1 << 20), rel=1e-6)


def test_a_live_change_takes_effect_at_once():
    clock = Clock()
    b = IoBudget(Limits(bps=1 << 20), clock)
    drain(b, clock, 64 << 10, 2.0)
    b.change(Limits(bps=4 << 20))
    n = drain(b, clock, 64 << 10, 4.0)
    assert abs(n * (64 << 10) / 4.0 - (4 << 20) * 5 / 4) / (4 << 20) < 0.05  # + burst
    b.change(Limits())
    assert b.admit(1 << 30) == 0.0


@pytest.mark.parametrize("text,words", [
    ("d.img,bps=0", ["bps", "positive"]),
    ("d.img,iops=-5", ["iops", "positive"]),
    ("d.img,bps=fast", ["bps", "fast"]),
    ("d.img,bps_burst=4M", ["bps_burst needs bps"]),
])
def test_bad_terms_are_errors_naming_them(text, words):
    with pytest.raises(ConfigError) as e:
        parse_disk_option(text)
    for w in words:
        assert w in str(e.value)


def test_disk_terms_parse():
    spec = parse_disk_option("d.img,bps=2M,iops=200,bps_burst=4M")
    assert spec.limits == Limits(2 << 20, 200, 4 << 20, None)


def test_a_nic_budget_paces_both_directions(tmp_path):
    """virtio-net with tx and rx budgets (frames/s here): the guest's frames beyond the
    budget are held and go out as tokens come; frames for the guest wait in the
    backlog; nothing is dropped; an unlimited direction is not slowed."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from virtio_driver import Driver

    from pyhv.devices.virtio.net import VirtioNet
    from pyhv.net import SwitchPort

    clock = Clock()
    peer = SwitchPort("lan", runtime_dir=str(tmp_path))
    port = SwitchPort("lan", runtime_dir=str(tmp_path))
    try:
        nic = VirtioNet(port, bytes.fromhex("525400000001"))
        nic.tx_budget = IoBudget(Limits(ops=10), clock)
        nic.rx_budget = IoBudget(Limits(ops=5), clock)
        d = Driver(nic)
        d.setup(2)
        out = b"\xff" * 6 + bytes.fromhex("525400000001") + b"\x88\xb5" + bytes(50)
        for _ in range(15):
            d.add(1, [bytes(12) + out], [])
        d.kick(1)
        assert len(peer.receive()) == 10  # the burst: one second's worth
        assert nic.io_deadline() is not None and nic.inflight(1) == 1
        clock.t += 0.3
        nic.poll()
        assert len(peer.receive()) == 3  # 10 a second
        clock.t += 1.0
        nic.poll()
        assert len(peer.receive()) == 2 and nic.io_deadline() is None
        frame = b"\xff" * 6 + bytes.fromhex("525400000002") + b"\x88\xb5" + bytes(50)
        for _ in range(12):
            peer.send(frame)
        for _ in range(12):
            d.add(0, [], [1600])
        nic.poll()
        assert len(d.used(0)) == 5 and len(nic.backlog) == 7  # 5 a second
        clock.t += 1.0
        nic.poll()
        assert len(d.used(0)) == 5 and len(nic.backlog) == 2  # 5 more a second later
        assert nic.stats["rx_dropped"] == nic.stats["tx_dropped"] == 0
    finally:
        peer.close()
        port.close()


def test_net_terms_parse():
    from pyhv.vm.config import parse_net_option

    spec = parse_net_option("switch=lan,tx_bps=1M,rx_pps=100")
    assert spec.tx_limits == Limits(1 << 20) and spec.rx_limits == Limits(None, 100)
    with pytest.raises(ConfigError, match="rx_bps"):
        parse_net_option("switch=lan,rx_bps=0")


def test_guest_ram_is_offered_to_ksm():
    """Guest RAM is marked mergeable (QEMU's mem-merge=on default): the host's KSM, when
    it runs, may merge identical pages; the kernel flags the mapping 'mg'."""
    from pyhv.memory.ram import GuestRAM

    ram = GuestRAM(0x8000_0000, 4 << 20)
    try:
        assert ram.mergeable
        addr = ram.host_address()
        flags: list[str] = []
        inside = False
        with open("/proc/self/smaps") as fh:
            for line in fh:
                head = line.split()
                if head and "-" in head[0] and not head[0].endswith(":"):
                    inside = int(head[0].split("-")[0], 16) == addr
                elif inside and line.startswith("VmFlags"):
                    flags = head[1:]
        assert "mg" in flags
        merged = GuestRAM.ksm_merged_pages()  # what the VM process reports as shared
        assert merged is None or isinstance(merged, int)
    finally:
        ram.close()
