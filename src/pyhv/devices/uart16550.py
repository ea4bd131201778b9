"""The console UART: an NS16550A as QEMU models it (hw/char/serial.c).

Why it exists: the QEMU ``virt`` board has one ``ns16550a`` at 0x1000_0000 (PLIC source
10), and it is the console of every guest that runs there: OpenSBI and U-Boot print
through it and Linux's 8250 driver (``console=ttyS0``, ``earlycon``) drives it, with
interrupts for input and for "transmitter empty".

What it follows: the 16550 register set with ``reg-shift`` 0 and byte accesses (any
other access size is treated as a byte access at that offset). Registers, in the
datasheet's words: RBR/THR (0), IER (1), IIR/FCR (2), LCR (3), MCR (4), LSR (5),
MSR (6), SCR (7); DLL/DLM replace RBR/THR and IER while LCR.DLAB is set. Reset values,
the IER write rule (THRE re-armed when IER.ETBEI goes 0->1 with THR empty), the FCR
flush rules and the IIR priority order are QEMU's:

1. receiver line status (IER.ELSI, LSR has OE/PE/FE/BI)  IIR 0x06
2. received data available (IER.ERBFI, LSR.DR)           IIR 0x04
3. transmitter holding register empty (IER.ETBEI)        IIR 0x02
4. modem status (IER.EDSSI, MSR delta bits)              IIR 0x00
   nothing pending                                       IIR 0x01

IIR bits 7:6 read 0b11 while the FIFOs are enabled (FCR bit 0). The IRQ line is high
whenever IIR reports a source; like QEMU, MCR.OUT2 does not gate it.

Differences from the hardware, all invisible to a driver: transmission is instantaneous
(a THR write calls ``output`` at once and THR/TSR are empty again immediately, so the
THRE interrupt is re-raised right after the write); the receive FIFO trigger level and
the character-timeout interrupt are not modelled: "received data available" is reported
as soon as one byte is waiting, whatever the trigger level. Host input goes into a
bounded queue (``RX_CAPACITY`` bytes) that stands for both the 16-byte FIFO and the
host-side backlog QEMU's chardev keeps; ``rx_space()`` tells the host how much more it
may deliver. Bytes delivered beyond that are dropped and flagged as an overrun (LSR.OE).
An FCR "clear receive FIFO" discards only what the hardware would hold: up to 16 bytes
with the FIFOs enabled, the RBR's one byte without. MCR loopback is supported: THR
writes come back as received bytes and MSR reflects MCR's outputs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Annotated

from ..records import U8, U16, MaxLen, Record, record
from .base import Device, IrqLine

# Register offsets (reg-shift 0).
RBR_THR_DLL = 0
IER_DLM = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

# IER bits.
IER_ERBFI = 0x01  # received data available
IER_ETBEI = 0x02  # transmitter holding register empty
IER_ELSI = 0x04  # receiver line status
IER_EDSSI = 0x08  # modem status

# IIR values (bits 3:0) and the FIFO-enabled bits.
IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_ID_MASK = 0x0F
IIR_FIFO_ENABLED = 0xC0

# FCR bits.
FCR_FE = 0x01  # FIFO enable
FCR_RFR = 0x02  # receiver FIFO reset
FCR_XFR = 0x04  # transmitter FIFO reset

# LCR bits.
LCR_DLAB = 0x80

# MCR bits.
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10

# LSR bits.
LSR_DR = 0x01
LSR_OE = 0x02
LSR_PE = 0x04
LSR_FE = 0x08
LSR_BI = 0x10
LSR_THRE = 0x20
LSR_TEMT = 0x40
LSR_INT_ANY = LSR_OE | LSR_PE | LSR_FE | LSR_BI

# MSR bits.
MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
MSR_ANY_DELTA = 0x0F

FIFO_DEPTH = 16
RX_CAPACITY = 4096


class Uart16550(Device):
    """NS16550A UART; ``output`` receives transmitted bytes, ``receive`` feeds input."""

    name = "uart"
    native_access = True  # (see Device)
    size = 0x100

    def __init__(self, irq: IrqLine, output: Callable[[bytes], None]) -> None:
        self.irq = irq
        self.output = output
        self.rx: deque[int] = deque()
        self.reset()

    # -- host side -------------------------------------------------------------------

    def reset(self) -> None:
        """Power-on state (QEMU serial_reset): 9600 8N1, OUT2 set, THR empty."""
        self.gen = getattr(self, "gen", 0) + 1
        self.ier = 0
        self.iir = IIR_NO_INT
        self.fcr = 0
        self.lcr = 0
        self.mcr = MCR_OUT2
        self.lsr = LSR_TEMT | LSR_THRE
        self.msr = MSR_DCD | MSR_DSR | MSR_CTS
        self.scr = 0
        self.divisor = 0x0C
        self.thr_ipending = False
        self.rx.clear()
        self._update_irq()

    def rx_space(self) -> int:
        """How many more bytes ``receive`` accepts without dropping any.

        0 while MCR loopback is on: the receiver is then cut off from the outside, so
        the host should hold its input back rather than have it dropped.
        """
        if self.mcr & MCR_LOOP:
            return 0
        return RX_CAPACITY - len(self.rx)

    def receive(self, data: bytes) -> None:
        """Deliver host input; bytes past the queue's capacity are dropped (LSR.OE)."""
        self.gen += 1
        if not data:
            return
        if self.mcr & MCR_LOOP:
            # In loopback mode the receiver is disconnected from the outside world
            # (rx_space() is 0, so a well-behaved host sends nothing now).
            return
        self._rx_push(data)
        self._update_irq()

    # -- internals -------------------------------------------------------------------

    def _rx_push(self, data: bytes) -> None:
        room = RX_CAPACITY - len(self.rx)
        if len(data) > room:
            data = data[:room]
            self.lsr |= LSR_OE
        if data:
            self.rx.extend(data)
            self.lsr |= LSR_DR

    def _update_irq(self) -> None:
        ier = self.ier
        lsr = self.lsr
        if (ier & IER_ELSI) and (lsr & LSR_INT_ANY):
            iid = IIR_RLSI
        elif (ier & IER_ERBFI) and (lsr & LSR_DR):
            iid = IIR_RDI
        elif (ier & IER_ETBEI) and self.thr_ipending:
            iid = IIR_THRI
        elif (ier & IER_EDSSI) and (self.msr & MSR_ANY_DELTA):
            iid = IIR_MSI
        else:
            iid = IIR_NO_INT
        self.iir = iid | (self.iir & 0xF0)
        self.irq.set(iid != IIR_NO_INT)

    def _transmit(self, byte: int) -> None:
        if self.mcr & MCR_LOOP:
            self._rx_push(bytes((byte,)))
        else:
            self.output(bytes((byte,)))
        # The byte has left at once: THR and the shift register are empty again.
        self.lsr |= LSR_THRE | LSR_TEMT
        self.thr_ipending = True

    # -- native fast window ---------------------------------------------------------
    # A console's two busiest accesses, polling LSR and writing THR (one each per byte
    # a guest prints), may be done by the JIT's native code without a trip to Python
    # while they have no effect beyond the byte sent: the JIT asks before each native
    # run and hands the bytes written over after it (``transmitted``). ``gen`` counts
    # the calls that may change the state, so the JIT asks again only after one.

    def native_window(self) -> tuple[int, int]:
        """(what native code may do, LSR): bit 0 read LSR (no error bit that a read
        clears), bit 1 write THR (a transmitted byte, and not in loopback or
        divisor-latch mode, where a write changes what the guest sees). The bits are
        the JIT's ``state.UART_READ_LSR`` and ``UART_WRITE_THR``."""
        lsr = self.lsr
        flags = 0 if lsr & (LSR_BI | LSR_OE) else 1
        if (not (self.lcr & LCR_DLAB or self.mcr & MCR_LOOP)
                and lsr & LSR_THRE and lsr & LSR_TEMT
                and (self.thr_ipending or not self.ier & IER_ETBEI)):
            flags |= 2
        return flags, lsr

    def transmitted(self, data: bytes) -> None:
        """Bytes native code wrote to THR under ``native_window``'s terms: the state
        after them is what writing them one at a time leaves."""
        self.gen += 1
        self.output(data)
        self.lsr |= LSR_THRE | LSR_TEMT
        self.thr_ipending = True
        self._update_irq()

    # -- MMIO ------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        self.gen += 1
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                return self.divisor & 0xFF
            if self.rx:
                value = self.rx.popleft()
            else:
                value = 0
            if not self.rx:
                self.lsr &= ~(LSR_DR | LSR_BI)
            self._update_irq()
            return value
        if offset == IER_DLM:
            if self.lcr & LCR_DLAB:
                return (self.divisor >> 8) & 0xFF
            return self.ier
        if offset == IIR_FCR:
            value = self.iir
            if (value & IIR_ID_MASK) == IIR_THRI:
                self.thr_ipending = False
                self._update_irq()
            return value
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            value = self.lsr
            if value & (LSR_BI | LSR_OE):
                self.lsr &= ~(LSR_BI | LSR_OE)
                self._update_irq()
            return value
        if offset == MSR:
            mcr = self.mcr
            if mcr & MCR_LOOP:
                # DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                return ((mcr & 0x0C) << 4) | ((mcr & MCR_RTS) << 3) | ((mcr & MCR_DTR) << 5)
            value = self.msr
            if value & MSR_ANY_DELTA:
                self.msr &= 0xF0
                self._update_irq()
            return value
        if offset == SCR:
            return self.scr
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.gen += 1
        value &= 0xFF
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0xFF00) | value
                return
            self.thr_ipending = False
            self._transmit(value)
            self._update_irq()
        elif offset == IER_DLM:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0x00FF) | (value << 8)
                return
            changed = (self.ier ^ value) & 0x0F
            self.ier = value & 0x0F
            if changed & IER_ETBEI:
                # Enabling ETBEI with THR empty raises THRE even if an IIR read had
                # acknowledged it before (QEMU, and real parts, behave so).
                self.thr_ipending = bool((self.ier & IER_ETBEI) and (self.lsr & LSR_THRE))
            if changed:
                self._update_irq()
        elif offset == IIR_FCR:
            if (value ^ self.fcr) & FCR_FE:
                # Enabling or disabling the FIFOs flushes both of them.
                value |= FCR_XFR | FCR_RFR
            if value & FCR_RFR:
                depth = FIFO_DEPTH if (self.fcr & FCR_FE) else 1
                for _ in range(min(depth, len(self.rx))):
                    self.rx.popleft()
                if not self.rx:
                    self.lsr &= ~(LSR_DR | LSR_BI)
            if value & FCR_XFR:
                self.lsr |= LSR_THRE
                self.thr_ipending = True
            self.fcr = value & 0xC9
            if self.fcr & FCR_FE:
                self.iir |= IIR_FIFO_ENABLED
            else:
                self.iir &= ~IIR_FIFO_ENABLED
            self._update_irq()
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            old = self.mcr
            self.mcr = value & 0x1F
            if (old ^ self.mcr) & MCR_LOOP and not (self.mcr & MCR_LOOP):
                self._update_irq()
        elif offset == SCR:
            self.scr = value
        # LSR and MSR writes are ignored, as are offsets past the eight registers.

    # -- snapshot ------------------------------------------------------------------

    def save(self) -> UartState:
        return UartState(self.ier, self.iir, self.fcr, self.lcr, self.mcr, self.lsr,
                         self.msr, self.scr, self.divisor, self.thr_ipending, bytes(self.rx))

    def restore(self, state: UartState) -> None:
        self.gen += 1
        self.ier = state.ier & 0x0F
        self.iir = state.iir
        self.fcr = state.fcr & 0xC9
        self.lcr = state.lcr
        self.mcr = state.mcr & 0x1F
        self.lsr = state.lsr
        self.msr = state.msr
        self.scr = state.scr
        self.divisor = state.divisor
        self.thr_ipending = state.thr_ipending
        self.rx = deque(state.rx)
        self._update_irq()


@record
class UartState(Record):
    """The 16550's registers and the bytes received but not yet read."""

    ier: U8
    iir: U8
    fcr: U8
    lcr: U8
    mcr: U8
    lsr: U8
    msr: U8
    scr: U8
    divisor: U16
    thr_ipending: bool
    rx: Annotated[bytes, MaxLen(RX_CAPACITY)]
