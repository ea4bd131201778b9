"""The one RV64GC decoder: instruction word -> :class:`Decoded`.

The interpreter, the block translator and the JIT all consume this decoded form, so an
encoding is understood in exactly one place: the integer instructions' (ALU, branches,
loads and stores, jumps, atomics) come from their description in isa/spec.py, the rest
(F, D, system, CSRs) is decoded here. Compressed (RVC)
halfwords are first expanded to their 32-bit equivalent (isa/compressed.py) and decoded
like any other word; ``length`` and ``raw`` keep what was really fetched.
"""

from __future__ import annotations

from typing import NamedTuple

from . import spec
from .compressed import expand

PAUSE = 0x0100000F  # Zihintpause: fence w, 0 (a hint; the engines end a slice on it)


class Decoded(NamedTuple):
    name: str  # mnemonic as in the spec, e.g. "addi", "fmadd.d", "amoadd.w", "illegal"
    rd: int
    rs1: int
    rs2: int
    rs3: int
    imm: int  # sign-extended immediate (a Python int, may be negative)
    rm: int  # funct3: rounding mode for FP, aq/rl not needed by a sequential machine
    csr: int
    raw: int  # the instruction as fetched (16 or 32 bits)
    length: int  # 2 or 4


def _sx(value: int, bits: int) -> int:
    sign = 1 << (bits - 1)
    return (value & (sign - 1)) - (value & sign)


_FMA = {0x43: "fmadd", 0x47: "fmsub", 0x4B: "fnmsub", 0x4F: "fnmadd"}
_FMT = {0: "s", 1: "d"}
_FCVT_INT = {0: "w", 1: "wu", 2: "l", 3: "lu"}
_CSR = {1: "csrrw", 2: "csrrs", 3: "csrrc", 5: "csrrwi", 6: "csrrsi", 7: "csrrci"}


def _op_fp(w: int, f3: int, rs2: int) -> str | None:
    f7 = w >> 25
    fmt = _FMT.get(f7 & 3)
    if fmt is None:
        return None
    f5 = f7 >> 2
    if f5 <= 3:
        return ("fadd", "fsub", "fmul", "fdiv")[f5] + "." + fmt
    if f5 == 0b01011:
        return f"fsqrt.{fmt}" if rs2 == 0 else None
    if f5 == 0b00100:
        return {0: "fsgnj", 1: "fsgnjn", 2: "fsgnjx"}.get(f3, "") + "." + fmt if f3 < 3 else None
    if f5 == 0b00101:
        return {0: "fmin", 1: "fmax"}[f3] + "." + fmt if f3 < 2 else None
    if f5 == 0b01000:  # fcvt.s.d / fcvt.d.s
        if fmt == "s" and rs2 == 1:
            return "fcvt.s.d"
        if fmt == "d" and rs2 == 0:
            return "fcvt.d.s"
        return None
    if f5 == 0b10100:
        return {0: "fle", 1: "flt", 2: "feq"}[f3] + "." + fmt if f3 < 3 else None
    if f5 == 0b11000:
        return f"fcvt.{_FCVT_INT[rs2]}.{fmt}" if rs2 < 4 else None
    if f5 == 0b11010:
        return f"fcvt.{fmt}.{_FCVT_INT[rs2]}" if rs2 < 4 else None
    if f5 == 0b11100 and rs2 == 0:
        if f3 == 0:
            return "fmv.x.w" if fmt == "s" else "fmv.x.d"
        if f3 == 1:
            return f"fclass.{fmt}"
        return None
    if f5 == 0b11110 and rs2 == 0 and f3 == 0:
        return "fmv.w.x" if fmt == "s" else "fmv.d.x"
    return None


def decode32(w: int) -> tuple[str, int]:
    """Name and immediate of a 32-bit instruction word ("illegal" if undefined)."""
    op = w & 0x7F
    f3 = (w >> 12) & 7
    rs2 = (w >> 20) & 31
    if op in spec.DECODED_OPCODES:  # the integer instructions: isa/spec.py
        return spec.decode(w)
    if op == 0x0F:
        if f3 == 0:
            return "fence", 0
        if f3 == 1:
            return "fence.i", 0
        return "illegal", 0
    if op == 0x73:
        if f3 == 0:
            rd = (w >> 7) & 31
            rs1 = (w >> 15) & 31
            if w == 0x00000073:
                return "ecall", 0
            if w == 0x00100073:
                return "ebreak", 0
            if w == 0x30200073:
                return "mret", 0
            if w == 0x10200073:
                return "sret", 0
            if w == 0x10500073:
                return "wfi", 0
            if (w >> 25) == 0b0001001 and rd == 0:
                return "sfence.vma", 0
            del rs1
            return "illegal", 0
        csr_name = _CSR.get(f3)
        return (csr_name or "illegal"), 0
    if op == 0x07:
        return {2: "flw", 3: "fld"}.get(f3, "illegal"), _sx(w >> 20, 12)
    if op == 0x27:
        imm = _sx(((w >> 25) << 5) | ((w >> 7) & 31), 12)
        return {2: "fsw", 3: "fsd"}.get(f3, "illegal"), imm
    if op in _FMA:
        fmt = _FMT.get((w >> 25) & 3)
        return (f"{_FMA[op]}.{fmt}" if fmt else "illegal"), 0
    if op == 0x53:
        return (_op_fp(w, f3, rs2) or "illegal"), 0
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
