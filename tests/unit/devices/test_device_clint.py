"""The CLINT as OpenSBI sees it: msip, mtimecmp, mtime; driven by a FakeClock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyhv.clock import FakeClock
from pyhv.cpu.trap import MIP_MSIP, MIP_MTIP
from pyhv.devices.clint import MTIME, MTIMECMP_BASE, Clint

HZ = 10_000_000
TICK_NS = 100  # one mtime tick at 10 MHz


class Mip:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bool]] = []
        self.bits: dict[int, int] = {}

    def __call__(self, hart: int, mask: int, level: bool) -> None:
        self.calls.append((hart, mask, level))
        if level:
            self.bits[hart] = self.bits.get(hart, 0) | mask
        else:
            self.bits[hart] = self.bits.get(hart, 0) & ~mask

    def has(self, hart: int, mask: int) -> bool:
        return bool(self.bits.get(hart, 0) & mask)


def make(harts: int = 2, start: int = 5_000):
    clock = FakeClock(start_ns=start)
    mip = Mip()
    return Clint(harts, clock, mip, HZ), clock, mip


def test_mtime_counts_at_timebase():
    c, clock, _ = make()
    assert c.mtime() == 0
    assert c.read(MTIME, 8) == 0
    clock.advance(1_000_000_000)
    assert c.mtime() == HZ
    assert c.read(MTIME, 8) == HZ
    assert c.read(MTIME, 4) == HZ
    assert c.read(MTIME + 4, 4) == 0
    clock.advance(99)  # less than a tick
    assert c.mtime() == HZ


def test_mtimecmp_resets_to_all_ones_and_nothing_fires():
    c, clock, mip = make()
    assert c.read(MTIMECMP_BASE, 8) == 2**64 - 1
    assert c.read(MTIMECMP_BASE + 4, 4) == 0xFFFF_FFFF
    clock.advance(10**12)
    c.poll()
    assert mip.calls == []
    assert c.next_deadline_ns() is None


def test_timer_fires_on_poll():
    c, clock, mip = make()
    c.write(MTIMECMP_BASE + 8, 8, 1000)  # hart 1, 1000 ticks = 100 us
    assert not mip.has(1, MIP_MTIP)
    assert c.next_deadline_ns() == 5_000 + 1000 * TICK_NS
    clock.advance(1000 * TICK_NS - 1)
    c.poll()
    assert not mip.has(1, MIP_MTIP)
    clock.advance(1)
    c.poll()
    assert mip.has(1, MIP_MTIP)
    assert not mip.has(0, MIP_MTIP)
    assert c.next_deadline_ns() is None
    # Writing mtimecmp into the future lowers MTIP immediately.
    c.write(MTIMECMP_BASE + 8, 8, 5000)
    assert not mip.has(1, MIP_MTIP)
    assert c.next_deadline_ns() == 5_000 + 5000 * TICK_NS


def test_mtimecmp_in_the_past_fires_at_once():
    c, clock, mip = make()
    clock.advance(10_000)
    c.write(MTIMECMP_BASE, 8, 50)
    assert mip.has(0, MIP_MTIP)
    assert mip.calls == [(0, MIP_MTIP, True)]


def test_mtimecmp_32bit_halves():
    c, clock, mip = make(1)
    # The RV32 sequence: hi = -1, lo = value, hi = value_hi.
    c.write(MTIMECMP_BASE + 4, 4, 0xFFFF_FFFF)
    c.write(MTIMECMP_BASE, 4, 0x10)
    c.write(MTIMECMP_BASE + 4, 4, 0x2)
    assert c.read(MTIMECMP_BASE, 8) == 0x2_0000_0010
    assert c.read(MTIMECMP_BASE, 4) == 0x10
    assert c.read(MTIMECMP_BASE + 4, 4) == 0x2
    assert not mip.has(0, MIP_MTIP)


def test_mtime_write_moves_time_and_reevaluates():
    c, clock, mip = make(1)
    c.write(MTIMECMP_BASE, 8, 1_000_000)
    c.write(MTIME, 8, 999_999)
    assert c.mtime() == 999_999
    assert not mip.has(0, MIP_MTIP)
    c.write(MTIME, 8, 1_000_000)
    assert mip.has(0, MIP_MTIP)
    clock.advance(10 * TICK_NS)
    assert c.mtime() == 1_000_010
    c.write(MTIME + 4, 4, 1)
    assert c.mtime() == (1 << 32) | 1_000_010
    c.write(MTIME, 4, 7)
    assert c.mtime() == (1 << 32) | 7
    c.write(MTIME, 8, 0)
    assert not mip.has(0, MIP_MTIP)


def test_msip():
    c, _, mip = make(2)
    c.write(4, 4, 1)
    assert mip.has(1, MIP_MSIP) and not mip.has(0, MIP_MSIP)
    assert c.read(4, 4) == 1
    assert c.read(0, 4) == 0
    c.write(4, 4, 0xFFFF_FFFE)  # only bit 0 counts
    assert not mip.has(1, MIP_MSIP)
    assert c.read(4, 4) == 0
    c.write(8, 4, 1)  # no hart 2: ignored
    assert c.read(8, 4) == 0
    assert all(h < 2 for h, _, _ in mip.calls)


def test_earliest_deadline_across_harts():
    c, clock, mip = make(3)
    c.write(MTIMECMP_BASE + 0, 8, 300)
    c.write(MTIMECMP_BASE + 8, 8, 100)
    c.write(MTIMECMP_BASE + 16, 8, 200)
    assert c.next_deadline_ns() == 5_000 + 100 * TICK_NS
    clock.now = c.next_deadline_ns()
    c.poll()
    assert mip.has(1, MIP_MTIP)
    assert c.next_deadline_ns() == 5_000 + 200 * TICK_NS


def test_non_integral_timebase_deadline_is_exact():
    clock = FakeClock(start_ns=0)
    mip = Mip()
    c = Clint(1, clock, mip, 3_000_000)  # 333.33 ns per tick
    c.write(MTIMECMP_BASE, 8, 7)
    deadline = c.next_deadline_ns()
    clock.now = deadline - 1
    assert c.mtime() < 7
    c.poll()
    assert not mip.has(0, MIP_MTIP)
    clock.now = deadline
    assert c.mtime() == 7
    c.poll()
    assert mip.has(0, MIP_MTIP)


def test_save_restore_continues_guest_time():
    c, clock, mip = make(2)
    clock.advance(123_456_700)
    c.write(MTIMECMP_BASE + 8, 8, 2_000_000)
    c.write(0, 4, 1)
    state = c.save()
    clock2 = FakeClock(start_ns=10**15)
    mip2 = Mip()
    d = Clint(2, clock2, mip2, HZ)
    d.restore(state)
    assert d.mtime() == c.mtime()
    assert mip2.has(0, MIP_MSIP)
    assert d.read(MTIMECMP_BASE + 8, 8) == 2_000_000
    clock2.advance((2_000_000 - d.mtime()) * TICK_NS)
    d.poll()
    assert mip2.has(1, MIP_MTIP)


def test_bad_sizes_ignored():
    c, _, mip = make(1)
    c.write(0, 1, 1)
    c.write(MTIMECMP_BASE, 2, 0)
    assert mip.calls == []
    assert c.read(MTIME, 1) == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(
                st.integers(0, 0xFFFF),
                st.integers(-(2**64), 2**64),
                st.sampled_from([0, 4, 0x4000, 0x4004, 0x4008, 0xBFF8, 0xBFFC]),
            ),
            st.sampled_from([1, 2, 4, 8, 0, 3, 16]),
            st.integers(0, 2**64 - 1),
            st.integers(0, 10**10),
        ),
        max_size=60,
    )
)
def test_fuzz_no_exception(ops):
    c, clock, mip = make(2)
    for is_write, off, size, value, dt in ops:
        clock.advance(dt)
        if is_write:
            c.write(off, size, value)
        else:
            assert 0 <= c.read(off, size) < 2**64
        c.poll()
        d = c.next_deadline_ns()
        assert d is None or d > clock.now
        for h in range(2):
            if c.mtime() >= c.mtimecmp[h]:
                assert mip.has(h, MIP_MTIP)
    assert all(h in (0, 1) for h, _, _ in mip.calls)
