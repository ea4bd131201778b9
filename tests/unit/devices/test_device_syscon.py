"""The sifive,test1 finisher: power-off and reset codes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyhv.devices.syscon import SifiveTest


def make():
    calls: list[tuple[str, int]] = []
    return SifiveTest(lambda action, code: calls.append((action, code))), calls


def test_pass():
    t, calls = make()
    t.write(0, 4, 0x5555)
    assert calls == [("poweroff", 0)]


def test_fail_with_code():
    t, calls = make()
    t.write(0, 4, (42 << 16) | 0x3333)
    assert calls == [("poweroff", 42)]


def test_reset():
    t, calls = make()
    t.write(0, 4, 0x7777)
    assert calls == [("reset", 0)]


def test_other_values_offsets_and_reads_ignored():
    t, calls = make()
    t.write(0, 4, 0x1234)
    t.write(4, 4, 0x5555)
    t.write(0, 1, 0x55)
    assert calls == []
    assert t.read(0, 4) == 0


def test_16bit_write_accepted():
    t, calls = make()
    t.write(0, 2, 0x5555)
    assert calls == [("poweroff", 0)]


@given(
    st.one_of(st.integers(0, 0xFFF), st.integers(-(2**64), 2**64)),
    st.sampled_from([1, 2, 4, 8, 0, 3, 16]),
    st.integers(0, 2**64 - 1),
)
def test_fuzz_no_exception(off, size, value):
    t, calls = make()
    t.write(off, size, value)
    assert t.read(off, size) == 0
    assert len(calls) <= 1
    for action, code in calls:
        assert action in ("poweroff", "reset") and 0 <= code <= 0xFFFF
