"""The 16550 UART as a driver (OpenSBI, U-Boot, Linux 8250) sees it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyhv.devices.base import IrqLine
from pyhv.devices.uart16550 import (
    IER_DLM,
    IIR_FCR,
    LCR,
    LSR,
    MCR,
    MSR,
    RBR_THR_DLL,
    RX_CAPACITY,
    SCR,
    Uart16550,
)


def make():
    out: list[bytes] = []
    irq = IrqLine()
    return Uart16550(irq, out.append), irq, out


def test_reset_values():
    u, irq, _ = make()
    assert u.read(LSR, 1) == 0x60  # THRE | TEMT
    assert u.read(IIR_FCR, 1) == 0x01  # no interrupt
    assert u.read(IER_DLM, 1) == 0
    assert u.read(MCR, 1) == 0x08  # OUT2
    assert u.read(MSR, 1) == 0xB0  # DCD | DSR | CTS
    assert not irq.level


def test_transmit_calls_output_and_thr_stays_empty():
    u, _, out = make()
    for b in b"hi\n":
        u.write(RBR_THR_DLL, 1, b)
        assert u.read(LSR, 1) & 0x60 == 0x60
    assert b"".join(out) == b"hi\n"
    assert all(len(chunk) == 1 for chunk in out)


def test_receive_and_echo():
    u, _, out = make()
    assert u.read(LSR, 1) & 0x01 == 0
    u.receive(b"ok")
    assert u.read(LSR, 1) & 0x01
    echoed = []
    while u.read(LSR, 1) & 0x01:
        c = u.read(RBR_THR_DLL, 1)
        echoed.append(c)
        u.write(RBR_THR_DLL, 1, c)
    assert bytes(echoed) == b"ok"
    assert b"".join(out) == b"ok"
    assert u.read(LSR, 1) & 0x01 == 0


def test_rx_interrupt():
    u, irq, _ = make()
    u.write(IER_DLM, 1, 0x01)  # ERBFI
    assert not irq.level
    u.receive(b"x")
    assert irq.level
    assert u.read(IIR_FCR, 1) == 0x04
    assert u.read(RBR_THR_DLL, 1) == ord("x")
    assert not irq.level
    assert u.read(IIR_FCR, 1) == 0x01


def test_rx_interrupt_with_fifo_enabled():
    u, irq, _ = make()
    u.write(IIR_FCR, 1, 0x07)  # enable + clear both FIFOs
    assert u.read(IIR_FCR, 1) == 0xC1
    u.write(IER_DLM, 1, 0x01)
    u.receive(b"ab")
    assert irq.level
    assert u.read(IIR_FCR, 1) == 0xC4
    u.read(RBR_THR_DLL, 1)
    assert irq.level  # one byte still waiting
    u.read(RBR_THR_DLL, 1)
    assert not irq.level
    assert u.read(IIR_FCR, 1) == 0xC1


def test_thre_interrupt_on_enable_and_ack_by_iir_read():
    u, irq, _ = make()
    u.write(IER_DLM, 1, 0x02)  # ETBEI 0 -> 1 with THR empty
    assert irq.level
    assert u.read(IIR_FCR, 1) == 0x02  # reading IIR acknowledges THRE
    assert not irq.level
    assert u.read(IIR_FCR, 1) == 0x01
    # Re-raised when THR becomes empty again, i.e. right after a write.
    u.write(RBR_THR_DLL, 1, ord("a"))
    assert irq.level
    assert u.read(IIR_FCR, 1) == 0x02
    assert not irq.level
    # Toggling ETBEI re-arms it too (Linux relies on this to start transmission).
    u.write(IER_DLM, 1, 0x00)
    u.write(IER_DLM, 1, 0x02)
    assert irq.level
    # Writing IER with the same ETBEI value does not re-arm after an ack.
    u.read(IIR_FCR, 1)
    u.write(IER_DLM, 1, 0x02)
    assert not irq.level


def test_iir_priority_rx_before_thre():
    u, irq, _ = make()
    u.write(IER_DLM, 1, 0x03)
    u.receive(b"z")
    assert u.read(IIR_FCR, 1) == 0x04  # received data outranks THRE
    u.read(RBR_THR_DLL, 1)
    assert irq.level
    assert u.read(IIR_FCR, 1) == 0x02  # now THRE is reported
    assert not irq.level


def test_line_status_outranks_data_and_overrun_cleared_by_lsr_read():
    u, irq, _ = make()
    u.write(IER_DLM, 1, 0x05)  # ELSI | ERBFI
    u.receive(b"a" * (RX_CAPACITY + 5))
    assert u.read(IIR_FCR, 1) == 0x06
    lsr = u.read(LSR, 1)
    assert lsr & 0x02  # OE
    assert u.read(LSR, 1) & 0x02 == 0
    assert u.read(IIR_FCR, 1) == 0x04
    assert irq.level


def test_rx_space_and_bounded_queue():
    u, _, _ = make()
    assert u.rx_space() == RX_CAPACITY
    u.receive(b"12345")
    assert u.rx_space() == RX_CAPACITY - 5
    u.receive(b"x" * RX_CAPACITY)
    assert u.rx_space() == 0
    count = 0
    while u.read(LSR, 1) & 1:
        u.read(RBR_THR_DLL, 1)
        count += 1
    assert count == RX_CAPACITY


def test_fcr_clear_rx():
    u, _, _ = make()
    u.write(IIR_FCR, 1, 0x01)
    u.receive(b"abc")
    u.write(IIR_FCR, 1, 0x03)  # FIFO stays on, clear RX
    assert u.read(LSR, 1) & 0x01 == 0
    # Only the 16-byte hardware FIFO is flushed; the host backlog refills it.
    u.receive(b"0123456789abcdefXY")
    u.write(IIR_FCR, 1, 0x03)
    assert u.read(LSR, 1) & 0x01
    assert u.read(RBR_THR_DLL, 1) == ord("X")


def test_dlab_divisor_latch():
    u, _, out = make()
    u.write(LCR, 1, 0x83)  # DLAB | 8N1
    assert u.read(RBR_THR_DLL, 1) == 0x0C  # QEMU default: 9600 baud
    u.write(RBR_THR_DLL, 1, 0x01)
    u.write(IER_DLM, 1, 0x00)
    assert u.read(RBR_THR_DLL, 1) == 0x01
    assert u.read(IER_DLM, 1) == 0x00
    assert out == []  # divisor writes are not transmitted
    u.write(LCR, 1, 0x03)
    assert u.read(IER_DLM, 1) == 0  # IER untouched by DLM writes
    assert u.read(LCR, 1) == 0x03
    u.write(RBR_THR_DLL, 1, 0x41)
    assert out == [b"A"]


def test_scratch_and_wide_access():
    u, _, out = make()
    u.write(SCR, 1, 0x5A)
    assert u.read(SCR, 1) == 0x5A
    u.write(RBR_THR_DLL, 4, 0x1234_5642)  # treated as a byte write
    assert out == [b"B"]
    assert u.read(LSR, 4) == 0x60
    assert u.read(0x20, 1) == 0


def test_loopback():
    u, irq, out = make()
    u.write(MCR, 1, 0x10 | 0x03)  # LOOP | RTS | DTR
    assert u.rx_space() == 0
    u.write(RBR_THR_DLL, 1, 0x55)
    assert out == []
    assert u.read(LSR, 1) & 1
    assert u.read(RBR_THR_DLL, 1) == 0x55
    assert u.read(MSR, 1) & 0x30 == 0x30  # RTS->CTS, DTR->DSR


def test_save_restore_roundtrip():
    u, irq, _ = make()
    u.write(IIR_FCR, 1, 0x01)
    u.write(IER_DLM, 1, 0x01)
    u.write(SCR, 1, 7)
    u.receive(b"hey")
    state = u.save()
    v, irq2, _ = make()
    v.restore(state)
    assert irq2.level
    assert v.save() == state
    assert bytes(v.read(RBR_THR_DLL, 1) for _ in range(3)) == b"hey"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.integers(0, 0x1FF), st.integers(-(2**64), 2**64)),
            st.sampled_from([1, 2, 4, 8, 3, 0, 16]),
            st.integers(0, 2**64 - 1),
            st.binary(max_size=8),
        ),
        max_size=60,
    )
)
def test_fuzz_no_exception(ops):
    u, irq, _ = make()
    for is_write, off, size, value, data in ops:
        if data:
            u.receive(data)
        if is_write:
            u.write(off, size, value)
        else:
            assert 0 <= u.read(off, size) <= 0xFF
        assert 0 <= u.rx_space() <= RX_CAPACITY
        assert irq.level == ((u.iir & 0x0F) != 0x01)
    v, _, _ = make()
    v.restore(u.save())
    assert v.save() == u.save()


# -- the JIT's native window (polling LSR and writing THR without Python) -------------------

_REG_WRITES = st.lists(st.tuples(st.sampled_from([IER_DLM, IIR_FCR, LCR, MCR, SCR]),
                                 st.integers(0, 255)), max_size=6)


def _window_state(ops, reads_iir: bool, rx: bytes):
    u, irq, out = make()
    for reg, value in ops:
        u.write(reg, 1, value)
    if rx:
        u.receive(rx)
    if reads_iir:
        u.read(IIR_FCR, 1)
    return u, irq, out


def test_native_window_at_reset_allows_both():
    u, _, _ = make()
    flags, lsr = u.native_window()
    assert flags == 3 and lsr == u.read(LSR, 1) == 0x60


def test_native_window_closes_where_a_write_or_read_has_more_effect():
    u, _, _ = make()
    u.write(LCR, 1, 0x80)  # divisor latch: THR is DLL
    assert u.native_window()[0] == 1
    u.write(LCR, 1, 0x03)
    u.write(MCR, 1, 0x10)  # loopback: the byte comes back as input
    assert u.native_window()[0] == 1
    u.write(MCR, 1, 0x08)
    u.write(IER_DLM, 1, 0x02)  # THRE interrupt on, then acknowledged by an IIR read
    assert u.read(IIR_FCR, 1) & 0x0F == 0x02
    assert u.native_window()[0] == 1  # a write would raise THRE again
    u.write(IER_DLM, 1, 0)
    u.receive(b"x" * (RX_CAPACITY + 1))  # an overrun: reading LSR clears OE
    assert u.native_window()[0] & 1 == 0


def test_gen_counts_every_state_change():
    u, _, _ = make()
    seen = u.gen
    for act in (lambda: u.write(SCR, 1, 1), lambda: u.read(LSR, 1), lambda: u.receive(b"a"),
                lambda: u.transmitted(b"b"), lambda: u.restore(u.save()), u.reset):
        act()
        assert u.gen > seen
        seen = u.gen


@settings(max_examples=200, deadline=None)
@given(ops=_REG_WRITES, reads_iir=st.booleans(), rx=st.binary(max_size=3),
       data=st.binary(min_size=1, max_size=20))
def test_transmitted_is_byte_by_byte_thr_writes(ops, reads_iir, rx, data):
    """Whenever the window allows THR writes, handing the bytes over at once leaves the
    UART, its output and its interrupt line as writing them one by one does; and an
    LSR read it allows has no side effect."""
    a, irq_a, out_a = _window_state(ops, reads_iir, rx)
    b, irq_b, out_b = _window_state(ops, reads_iir, rx)
    flags, lsr = a.native_window()
    if flags & 1:
        assert a.read(LSR, 1) == lsr
        assert a.save() == b.save()
    if not flags & 2:
        return
    a.transmitted(data)
    for byte in data:
        b.write(RBR_THR_DLL, 1, byte)
    assert a.save() == b.save()
    assert b"".join(out_a) == b"".join(out_b)
    assert irq_a.level == irq_b.level
