"""The PLIC as OpenSBI and Linux's irq-sifive-plic driver see it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyhv.cpu.trap import MIP_MEIP, MIP_SEIP
from pyhv.devices.plic import CONTEXT_BASE, ENABLE_BASE, PENDING_BASE, Plic


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


def make(harts: int = 2):
    mip = Mip()
    return Plic(harts, mip), mip


def prio(p: Plic, src: int, value: int) -> None:
    p.write(4 * src, 4, value)


def enable(p: Plic, ctx: int, *sources: int) -> None:
    words: dict[int, int] = {}
    for s in sources:
        words[s // 32] = words.get(s // 32, 0) | 1 << (s % 32)
    for w, bits in words.items():
        p.write(ENABLE_BASE + 0x80 * ctx + 4 * w, 4, bits)


def threshold(p: Plic, ctx: int, value: int) -> None:
    p.write(CONTEXT_BASE + 0x1000 * ctx, 4, value)


def claim(p: Plic, ctx: int) -> int:
    return p.read(CONTEXT_BASE + 0x1000 * ctx + 4, 4)


def complete(p: Plic, ctx: int, src: int) -> None:
    p.write(CONTEXT_BASE + 0x1000 * ctx + 4, 4, src)


def test_construction_drives_nothing():
    p, mip = make()
    assert mip.calls == []
    assert p.read(0, 4) == 0


def test_claim_complete_cycle_on_s_context():
    p, mip = make(1)
    uart = p.irq_line(10)
    assert p.irq_line(10) is uart
    prio(p, 10, 1)
    enable(p, 1, 10)  # hart 0 S-mode
    uart.set(True)
    assert mip.has(0, MIP_SEIP)
    assert not mip.has(0, MIP_MEIP)
    assert p.read(PENDING_BASE, 4) == 1 << 10
    assert claim(p, 1) == 10
    assert not mip.has(0, MIP_SEIP)
    assert p.read(PENDING_BASE, 4) == 0
    assert claim(p, 1) == 0  # nothing else
    uart.set(False)
    complete(p, 1, 10)
    assert not mip.has(0, MIP_SEIP)
    assert p.read(PENDING_BASE, 4) == 0


def test_a_line_left_high_does_not_pend_again_at_complete():
    """As QEMU 7.2: completion only ends the claim. A device that leaves its line high
    without raising it again (a 16550's THR-empty left standing) interrupts once."""
    p, mip = make(1)
    line = p.irq_line(3)
    prio(p, 3, 2)
    enable(p, 0, 3)
    line.set(True)
    assert claim(p, 0) == 3
    assert not mip.has(0, MIP_MEIP)
    complete(p, 0, 3)
    assert not mip.has(0, MIP_MEIP)
    assert p.read(PENDING_BASE, 4) == 0
    assert claim(p, 0) == 0


def test_raising_again_pends_even_while_claimed():
    """Each raise is a request (QEMU's qemu_set_irq, level unchanged or not): one made
    while the source is claimed is delivered after the completion."""
    p, mip = make(1)
    line = p.irq_line(3)
    prio(p, 3, 2)
    enable(p, 0, 3)
    line.set(True)
    assert claim(p, 0) == 3
    line.set(True)  # the device re-evaluated its condition: still interrupting
    assert p.read(PENDING_BASE, 4) == 1 << 3
    assert not mip.has(0, MIP_MEIP)  # claimed: not delivered yet
    complete(p, 0, 3)
    assert mip.has(0, MIP_MEIP)
    assert claim(p, 0) == 3


def test_line_dropping_before_claim_withdraws_request():
    p, mip = make(1)
    line = p.irq_line(5)
    prio(p, 5, 1)
    enable(p, 0, 5)
    line.set(True)
    assert mip.has(0, MIP_MEIP)
    line.set(False)
    assert not mip.has(0, MIP_MEIP)
    assert claim(p, 0) == 0


def test_priority_order_and_ties():
    p, mip = make(1)
    for s in (4, 7, 9, 40):
        p.irq_line(s).set(True)
    prio(p, 4, 3)
    prio(p, 7, 5)
    prio(p, 9, 5)
    prio(p, 40, 6)
    enable(p, 0, 4, 7, 9, 40)
    assert [claim(p, 0) for _ in range(5)] == [40, 7, 9, 4, 0]


def test_priority_zero_never_interrupts_and_threshold():
    p, mip = make(1)
    p.irq_line(1).set(True)
    p.irq_line(2).set(True)
    enable(p, 0, 1, 2)
    assert not mip.has(0, MIP_MEIP)  # priorities are 0
    prio(p, 1, 2)
    prio(p, 2, 4)
    assert mip.has(0, MIP_MEIP)
    threshold(p, 0, 4)
    assert p.read(CONTEXT_BASE, 4) == 4
    assert not mip.has(0, MIP_MEIP)  # 4 is not > 4
    assert claim(p, 0) == 0
    threshold(p, 0, 3)
    assert claim(p, 0) == 2
    assert not mip.has(0, MIP_MEIP)  # source 1 (prio 2) is below threshold 3
    threshold(p, 0, 0)
    assert claim(p, 0) == 1


def test_priority_register_is_three_bits_and_source_zero_reads_zero():
    p, _ = make()
    prio(p, 3, 0xFF)
    assert p.read(12, 4) == 7
    prio(p, 0, 5)
    assert p.read(0, 4) == 0
    threshold(p, 1, 0x1F)
    assert p.read(CONTEXT_BASE + 0x1000, 4) == 7


def test_m_and_s_contexts_per_hart():
    p, mip = make(2)
    line = p.irq_line(8)
    prio(p, 8, 1)
    enable(p, 3, 8)  # hart 1 S-mode only
    line.set(True)
    assert mip.has(1, MIP_SEIP)
    assert not mip.has(1, MIP_MEIP)
    assert not mip.has(0, MIP_SEIP) and not mip.has(0, MIP_MEIP)
    enable(p, 2, 8)  # hart 1 M-mode too
    assert mip.has(1, MIP_MEIP)
    assert claim(p, 2) == 8  # M claims: both outputs drop
    assert not mip.has(1, MIP_MEIP) and not mip.has(1, MIP_SEIP)
    assert claim(p, 3) == 0
    complete(p, 2, 8)
    assert not mip.has(1, MIP_SEIP) and not mip.has(1, MIP_MEIP)
    line.set(True)  # raised again: both contexts see it
    assert mip.has(1, MIP_SEIP) and mip.has(1, MIP_MEIP)


def test_enable_registers_read_back():
    p, _ = make(2)
    enable(p, 3, 1, 33, 95)
    assert p.read(ENABLE_BASE + 0x80 * 3, 4) == 1 << 1
    assert p.read(ENABLE_BASE + 0x80 * 3 + 4, 4) == 1 << 1
    assert p.read(ENABLE_BASE + 0x80 * 3 + 8, 4) == 1 << 31
    p.write(ENABLE_BASE, 4, 0xFFFF_FFFF)
    assert p.read(ENABLE_BASE, 4) == 0xFFFF_FFFE  # source 0 does not exist
    assert p.read(ENABLE_BASE + 0x80 * 4, 4) == 0  # no context 4 with 2 harts


def test_pending_is_read_only_and_sources_above_32():
    p, _ = make(1)
    p.irq_line(70).set(True)
    assert p.read(PENDING_BASE + 8, 4) == 1 << (70 - 64)
    p.write(PENDING_BASE + 8, 4, 0)
    assert p.read(PENDING_BASE + 8, 4) == 1 << (70 - 64)


def test_irq_line_range():
    p, _ = make()
    with pytest.raises(ValueError):
        p.irq_line(0)
    with pytest.raises(ValueError):
        p.irq_line(97)  # sources are 1..96 as on QEMU 7.2 (riscv,ndev = 96)


def test_save_restore():
    p, mip = make(1)
    line = p.irq_line(10)
    prio(p, 10, 1)
    enable(p, 1, 10)
    line.set(True)
    state = p.save()
    mip2 = Mip()
    q = Plic(1, mip2)
    line2 = q.irq_line(10)
    q.restore(state)
    assert line2.level
    assert mip2.has(0, MIP_SEIP)
    assert q.save() == state
    assert claim(q, 1) == 10
    line2.set(False)
    complete(q, 1, 10)
    assert not mip2.has(0, MIP_SEIP)


def test_reset_lowers_outputs():
    p, mip = make(1)
    p.irq_line(2).set(True)
    prio(p, 2, 1)
    enable(p, 0, 2)
    assert mip.has(0, MIP_MEIP)
    p.reset()
    assert not mip.has(0, MIP_MEIP)
    assert p.read(PENDING_BASE, 4) == 1 << 2  # the line is still high


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.one_of(
                st.integers(0, 0x60_0000),
                st.integers(-(2**64), 2**64),
                st.sampled_from([0x28, 0x1000, 0x2000, 0x2080, 0x200000, 0x200004, 0x201004]),
            ),
            st.sampled_from([1, 2, 4, 8, 0, 3, 16]),
            st.integers(0, 2**64 - 1),
            st.integers(1, 95),
        ),
        max_size=80,
    )
)
def test_fuzz_no_exception(ops):
    p, mip = make(2)
    for kind, off, size, value, src in ops:
        if kind == 0:
            p.write(off, size, value)
        elif kind == 1:
            assert 0 <= p.read(off, size) <= 0xFFFF_FFFF
        elif kind == 2:
            p.irq_line(src).set(value & 1)
        else:
            p.write(CONTEXT_BASE + 0x1000 * (value % 4) + 4, 4, src)
        for ctx in range(4):
            assert mip.has(ctx >> 1, MIP_SEIP if ctx & 1 else MIP_MEIP) == p.outputs[ctx]
    assert all(h in (0, 1) for h, _, _ in mip.calls)
