"""The one RV64GC decoder: instruction word -> :class:`Decoded`.

The interpreter, the block translator and the JIT all consume this decoded form, so an
encoding is understood in exactly one place: the integer instructions' (ALU, branches,
loads and stores, jumps, atomics), the F and D instructions and the system ones (fences,
ECALL, trap returns, WFI, SFENCE.VMA, CSR accesses) all come from their description in
isa/spec.py. Compressed (RVC)
halfwords are first expanded to their 32-bit equivalent (isa/compressed.py) and decoded
like any other word; ``length`` and ``raw`` keep what was really fetched.
"""

from __future__ import annotations

from typing import NamedTuple

from . import spec
from .compressed import expand

PAUSE = 0x0100000F  # Zihintpause: fence w, 0 (a hint; the engines end a slice on it)
# Linux's cpu_relax() on a kernel built without Zihintpause (arch/riscv/include/asm/
# vdso/processor.h: "In lieu of a halt instruction, induce a long-latency stall"):
# ``div rd, rd, zero``, in every spin-wait loop (ticket locks, csd_lock_wait, udelay).
# Any DIV by x0 matches (opcode OP, funct3 4, funct7 1, rs2 0): nothing computes a
# quotient it knows to be -1 on purpose but such a stall.
RELAX_MASK = 0xFFF0707F
RELAX_DIV = 0x02004033


def spin_hint(raw: int) -> bool:
    """Whether the instruction word ``raw`` says its hart is waiting for another one:
    PAUSE, or Linux's DIV-by-zero stall. Where harts take turns on one host thread,
    the engines hand the rest of the slice over after it (what it computes still
    happens: the DIV writes -1)."""
    return raw == PAUSE or raw & RELAX_MASK == RELAX_DIV


class Decoded(NamedTuple):
    name: str  # mnemonic as in isa/spec.py, e.g. "addi", "amoadd.w"; or "illegal"
    rd: int
    rs1: int
    rs2: int
    rs3: int
    imm: int  # sign-extended immediate (a Python int, may be negative)
    rm: int  # funct3: rounding mode for FP, aq/rl not needed by a sequential machine
    csr: int
    raw: int  # the instruction as fetched (16 or 32 bits)
    length: int  # 2 or 4


def decode32(w: int) -> tuple[str, int]:
    """Name and immediate of a 32-bit instruction word ("illegal" if undefined)."""
    op = w & 0x7F
    if op in spec.DECODED_OPCODES:  # the integer instructions: isa/spec.py
        return spec.decode(w)
    if op in spec.SYS_OPCODES:  # fences, system instructions, CSRs: isa/spec.py
        return spec.decode_sys(w)
    if op in spec.FP_OPCODES:  # F and D: isa/spec.py
        return spec.decode_fp(w)
    return "illegal", 0


def decode(word: int, length: int = 4) -> Decoded:
    """Decode a fetched instruction: a 32-bit word, or a 16-bit RVC halfword (length 2)."""
    raw = word
    if length == 2:
        word = expand(word & 0xFFFF)
        if word == 0:
            return Decoded("illegal", 0, 0, 0, 0, 0, 0, 0, raw, 2)
    name, imm = decode32(word)
    return Decoded(
        name,
        (word >> 7) & 31,
        (word >> 15) & 31,
        (word >> 20) & 31,
        word >> 27,
        imm,
        (word >> 12) & 7,
        word >> 20,
        raw,
        length,
    )
