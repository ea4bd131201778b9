"""The goldfish RTC as Linux's rtc-goldfish driver sees it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyhv.clock import FakeClock
from pyhv.devices.base import IrqLine
from pyhv.devices.rtc_goldfish import (
    ALARM_HIGH,
    ALARM_LOW,
    ALARM_STATUS,
    CLEAR_ALARM,
    CLEAR_INTERRUPT,
    IRQ_ENABLED,
    TIME_HIGH,
    TIME_LOW,
    GoldfishRtc,
)

WALL = 1_700_000_000 * 10**9


def make():
    clock = FakeClock(start_ns=0, wall_start_ns=WALL)
    irq = IrqLine()
    return GoldfishRtc(irq, clock), clock, irq


def read_time(r: GoldfishRtc) -> int:
    low = r.read(TIME_LOW, 4)  # latches TIME_HIGH
    return (r.read(TIME_HIGH, 4) << 32) | low


def set_alarm(r: GoldfishRtc, ns: int) -> None:
    r.write(ALARM_HIGH, 4, ns >> 32)
    r.write(ALARM_LOW, 4, ns & 0xFFFF_FFFF)


def test_reads_host_wall_time():
    r, clock, _ = make()
    assert read_time(r) == WALL
    clock.advance(1_234)
    assert read_time(r) == WALL + 1_234


def test_time_low_latches_high():
    r, clock, _ = make()
    low = r.read(TIME_LOW, 4)
    clock.advance(10 * 2**32)  # the high half moves on, the latch does not
    assert r.read(TIME_HIGH, 4) == WALL >> 32
    assert low == WALL & 0xFFFF_FFFF


def test_guest_sets_time_as_offset():
    r, clock, _ = make()
    target = 1_000_000_000 * 10**9
    r.write(TIME_HIGH, 4, target >> 32)
    r.write(TIME_LOW, 4, target & 0xFFFF_FFFF)
    assert read_time(r) == target
    clock.advance(500)
    assert read_time(r) == target + 500
    assert clock.wall_ns() == WALL + 500  # the host clock is untouched


def test_alarm_fires_on_poll():
    r, clock, irq = make()
    r.write(IRQ_ENABLED, 4, 1)
    set_alarm(r, WALL + 1_000_000)
    assert r.read(ALARM_STATUS, 4) == 1
    assert r.read(ALARM_LOW, 4) == (WALL + 1_000_000) & 0xFFFF_FFFF
    assert r.next_deadline_ns() == 1_000_000
    clock.advance(999_999)
    r.poll()
    assert not irq.level
    clock.advance(1)
    r.poll()
    assert irq.level
    assert r.read(ALARM_STATUS, 4) == 0
    assert r.next_deadline_ns() is None
    r.write(CLEAR_INTERRUPT, 4, 1)
    assert not irq.level


def test_alarm_in_past_fires_immediately_and_irq_enable_gates():
    r, clock, irq = make()
    set_alarm(r, WALL - 1)
    assert not irq.level  # IRQ_ENABLED is 0
    assert r.read(ALARM_STATUS, 4) == 0
    r.write(IRQ_ENABLED, 4, 1)
    assert irq.level
    assert r.read(IRQ_ENABLED, 4) == 1
    r.write(IRQ_ENABLED, 4, 0)
    assert not irq.level


def test_clear_alarm():
    r, clock, irq = make()
    r.write(IRQ_ENABLED, 4, 1)
    set_alarm(r, WALL + 100)
    r.write(CLEAR_ALARM, 4, 1)
    assert r.read(ALARM_STATUS, 4) == 0
    clock.advance(1000)
    r.poll()
    assert not irq.level


def test_save_restore():
    r, clock, irq = make()
    r.write(TIME_LOW, 4, 0)
    r.write(IRQ_ENABLED, 4, 1)
    set_alarm(r, read_time(r) + 50)
    state = r.save()
    s, clock2, irq2 = make()
    s.restore(state)
    assert s.save() == state
    clock2.advance(50)
    s.poll()
    assert irq2.level


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.integers(0, 0x40), st.integers(-(2**64), 2**64)),
            st.sampled_from([1, 2, 4, 8, 0, 3, 16]),
            st.integers(0, 2**64 - 1),
            st.integers(0, 10**12),
        ),
        max_size=60,
    )
)
def test_fuzz_no_exception(ops):
    r, clock, irq = make()
    for is_write, off, size, value, dt in ops:
        clock.advance(dt)
        if is_write:
            r.write(off, size, value)
        else:
            assert 0 <= r.read(off, size) <= 0xFFFF_FFFF
        r.poll()
        assert irq.level == (r.irq_pending and r.irq_enabled)
