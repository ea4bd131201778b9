"""Synchronous exceptions and interrupt numbers (privileged spec, mcause values).

Instruction handlers raise :class:`Trap` (or a subclass); the hart's run loop catches it
at the faulting instruction's pc and takes the trap, so every side effect before the
faulting instruction is kept and none after it happens (precise traps).
"""

from __future__ import annotations

# Exception causes (mcause with interrupt bit clear).
INSN_MISALIGNED = 0
INSN_ACCESS_FAULT = 1
ILLEGAL_INSN = 2
BREAKPOINT = 3
LOAD_MISALIGNED = 4
LOAD_ACCESS_FAULT = 5
STORE_MISALIGNED = 6
STORE_ACCESS_FAULT = 7
ECALL_FROM_U = 8
ECALL_FROM_S = 9
ECALL_FROM_M = 11
INSN_PAGE_FAULT = 12
LOAD_PAGE_FAULT = 13
STORE_PAGE_FAULT = 15

# Interrupt numbers (bit positions in mip/mie; mcause with the interrupt bit set).
IRQ_S_SOFT = 1
IRQ_M_SOFT = 3
IRQ_S_TIMER = 5
IRQ_M_TIMER = 7
IRQ_S_EXT = 9
IRQ_M_EXT = 11

MIP_SSIP = 1 << IRQ_S_SOFT
MIP_MSIP = 1 << IRQ_M_SOFT
MIP_STIP = 1 << IRQ_S_TIMER
MIP_MTIP = 1 << IRQ_M_TIMER
MIP_SEIP = 1 << IRQ_S_EXT
MIP_MEIP = 1 << IRQ_M_EXT
MIE_MASK = MIP_SSIP | MIP_MSIP | MIP_STIP | MIP_MTIP | MIP_SEIP | MIP_MEIP  # mie's bits
MIP_SW_MASK = MIP_SSIP | MIP_STIP | MIP_SEIP  # bits M-mode software may write in mip

# Order in which pending-and-enabled interrupts are taken (priv spec 3.1.9).
IRQ_PRIORITY = (IRQ_M_EXT, IRQ_M_SOFT, IRQ_M_TIMER, IRQ_S_EXT, IRQ_S_SOFT, IRQ_S_TIMER)


class Trap(Exception):
    """A synchronous exception raised by the instruction at the current pc."""

    __slots__ = ("cause", "tval")

    def __init__(self, cause: int, tval: int = 0) -> None:
        self.cause = cause
        self.tval = tval


class IllegalInstruction(Trap):
    """Raised for undefined encodings, bad CSR accesses and privilege violations."""

    def __init__(self, insn: int = 0) -> None:
        super().__init__(ILLEGAL_INSN, insn)
