"""The integer instructions, described once: encoding, operand form, extension, semantics.

Every engine takes these instructions from here: the decoder (isa/decoder.py) their
encodings; the interpreter and the Python block translator their semantics as Python
expressions (:func:`python`); the JIT's code generator, its native interpreter and the
baseline tier's stencils the same semantics as LLVM IR (:func:`llvm`). Adding one of
these instructions is one line in :data:`INSNS` (and its extension in the ISA string).

Semantics are expressions in a small language with Python's syntax and 64-bit unsigned
*register* semantics (arithmetic wraps; ``>>`` is logical): the operands ``a`` (x[rs1]),
``b`` (x[rs2]) and ``imm`` (the immediate, sign-extended to 64 bits), integer
constants, the operators ``+ - * & | ^ << >> ~`` and the functions of :data:`FUNCS`.
Shift amounts are masked by the semantics themselves (``b & 63``), as the ISA says.
The value is what the instruction writes to rd; for a branch, whether it is taken. The
loads and stores name their access (``memN``: N bytes at a + imm, a load's value
extended as written), which the engines' own memory paths (soft TLB, MMU, devices) do;
the jumps and upper immediates their rd value (``pc``, ``npc``: this instruction's pc
and the next), which the engines' control flow uses.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from functools import cache

from ..lightdata import dataclass

M64 = (1 << 64) - 1

# Operand forms: how the word's fields give the operands and immediate, and which bits
# an encoding fixes beyond opcode and funct3.
#   R      rd, rs1, rs2; funct7 fixed
#   I      rd, rs1, imm = sign-extended imm[11:0]
#   SH6    rd, rs1, imm = shamt[5:0]; imm[11:6] fixed
#   SH5    rd, rs1, imm = shamt[4:0]; imm[11:5] fixed
#   U      rd, rs1; all of imm[11:0] fixed (unary operations: clz, rev8, ...)
#   B      rs1, rs2; imm = the sign-extended branch offset
#   S      rs1, rs2; imm = the sign-extended store offset
#   UP     rd; imm = the sign-extended upper immediate (imm[31:12] << 12)
#   J      rd; imm = the sign-extended jump offset
#   AMO    rd, rs1 (the address), rs2; funct5 fixed (aq and rl: any)
#   LR     rd, rs1; funct5 fixed, rs2 = 0
FORMS = {"R": 0xFE00707F, "I": 0x0000707F, "SH6": 0xFC00707F, "SH5": 0xFE00707F,
         "U": 0xFFF0707F, "B": 0x0000707F, "S": 0x0000707F, "UP": 0x0000007F,
         "J": 0x0000007F, "AMO": 0xF800707F, "LR": 0xF9F0707F}
OP, OP_IMM, OP_32, OP_IMM_32, BRANCH = 0x33, 0x13, 0x3B, 0x1B, 0x63
LOAD, STORE, LUI, AUIPC, JAL, JALR, ATOMIC = 0x03, 0x23, 0x37, 0x17, 0x6F, 0x67, 0x2F


@dataclass(frozen=True)
class Insn:
    name: str
    ext: str  # the extension that defines it (I, M, Zba, Zbb, Zbs, Zicond)
    form: str
    opcode: int
    funct3: int
    fixed: int  # funct7 (R, SH5), imm[11:6] (SH6), imm[11:0] (U); 0 otherwise
    sem: str

    @property
    def mask(self) -> int:
        return FORMS[self.form]

    @property
    def match(self) -> int:
        shift = {"R": 25, "SH5": 25, "SH6": 26, "U": 20, "AMO": 27, "LR": 27}.get(self.form)
        fixed = self.fixed << shift if shift is not None else 0
        f3 = self.funct3 << 12 if self.form not in ("UP", "J") else 0
        return fixed | f3 | self.opcode

    @property
    def size(self) -> int:
        """A load's or store's access size in bytes (its semantics: ``mem1`` ... ``mem8``,
        a load's value sign-extended with ``sext``)."""
        return int(self.sem.split("mem")[1][0])

    @property
    def signed(self) -> bool:
        """Whether a load sign-extends what it read."""
        return self.sem.startswith("sext")


def _atomics() -> list[tuple[str, str, str, int, int, int, str]]:
    rows = []
    for width, f3, mem in (("w", 2, "mem4"), ("d", 3, "mem8")):
        v = "sext32(b)" if width == "w" else "b"
        rows += [
            (f"lr.{width}", "A", "LR", ATOMIC, f3, 0b00010,
             f"sext32({mem})" if width == "w" else mem),
            (f"sc.{width}", "A", "AMO", ATOMIC, f3, 0b00011, f"{mem} = b"),
            (f"amoswap.{width}", "A", "AMO", ATOMIC, f3, 0b00001, v),
            (f"amoadd.{width}", "A", "AMO", ATOMIC, f3, 0b00000, "m + b"),
            (f"amoxor.{width}", "A", "AMO", ATOMIC, f3, 0b00100, "m ^ b"),
            (f"amoand.{width}", "A", "AMO", ATOMIC, f3, 0b01100, "m & b"),
            (f"amoor.{width}", "A", "AMO", ATOMIC, f3, 0b01000, "m | b"),
            (f"amomin.{width}", "A", "AMO", ATOMIC, f3, 0b10000, f"select(lt(m, {v}), m, {v})"),
            (f"amomax.{width}", "A", "AMO", ATOMIC, f3, 0b10100, f"select(lt(m, {v}), {v}, m)"),
            (f"amominu.{width}", "A", "AMO", ATOMIC, f3, 0b11000,
             f"select(ltu(m, {v}), m, {v})"),
            (f"amomaxu.{width}", "A", "AMO", ATOMIC, f3, 0b11100,
             f"select(ltu(m, {v}), {v}, m)"),
        ]
    return rows


def _table() -> list[Insn]:
    rows: list[tuple[str, str, str, int, int, int, str]] = [
        # RV64I: register-register
        ("add", "I", "R", OP, 0, 0x00, "a + b"),
        ("sub", "I", "R", OP, 0, 0x20, "a - b"),
        ("sll", "I", "R", OP, 1, 0x00, "a << (b & 63)"),
        ("slt", "I", "R", OP, 2, 0x00, "lt(a, b)"),
        ("sltu", "I", "R", OP, 3, 0x00, "ltu(a, b)"),
        ("xor", "I", "R", OP, 4, 0x00, "a ^ b"),
        ("srl", "I", "R", OP, 5, 0x00, "a >> (b & 63)"),
        ("sra", "I", "R", OP, 5, 0x20, "sra(a, b & 63)"),
        ("or", "I", "R", OP, 6, 0x00, "a | b"),
        ("and", "I", "R", OP, 7, 0x00, "a & b"),
        # RV64I: register-immediate
        ("addi", "I", "I", OP_IMM, 0, 0, "a + imm"),
        ("slti", "I", "I", OP_IMM, 2, 0, "lt(a, imm)"),
        ("sltiu", "I", "I", OP_IMM, 3, 0, "ltu(a, imm)"),
        ("xori", "I", "I", OP_IMM, 4, 0, "a ^ imm"),
        ("ori", "I", "I", OP_IMM, 6, 0, "a | imm"),
        ("andi", "I", "I", OP_IMM, 7, 0, "a & imm"),
        ("slli", "I", "SH6", OP_IMM, 1, 0x00, "a << imm"),
        ("srli", "I", "SH6", OP_IMM, 5, 0x00, "a >> imm"),
        ("srai", "I", "SH6", OP_IMM, 5, 0x10, "sra(a, imm)"),
        # RV64I: 32-bit operations
        ("addiw", "I", "I", OP_IMM_32, 0, 0, "sext32(a + imm)"),
        ("slliw", "I", "SH5", OP_IMM_32, 1, 0x00, "sext32(a << imm)"),
        ("srliw", "I", "SH5", OP_IMM_32, 5, 0x00, "sext32(zext32(a) >> imm)"),
        ("sraiw", "I", "SH5", OP_IMM_32, 5, 0x20, "sra(sext32(a), imm)"),
        ("addw", "I", "R", OP_32, 0, 0x00, "sext32(a + b)"),
        ("subw", "I", "R", OP_32, 0, 0x20, "sext32(a - b)"),
        ("sllw", "I", "R", OP_32, 1, 0x00, "sext32(a << (b & 31))"),
        ("srlw", "I", "R", OP_32, 5, 0x00, "sext32(zext32(a) >> (b & 31))"),
        ("sraw", "I", "R", OP_32, 5, 0x20, "sra(sext32(a), b & 31)"),
        # M
        ("mul", "M", "R", OP, 0, 0x01, "a * b"),
        ("mulh", "M", "R", OP, 1, 0x01, "mulh(a, b)"),
        ("mulhsu", "M", "R", OP, 2, 0x01, "mulhsu(a, b)"),
        ("mulhu", "M", "R", OP, 3, 0x01, "mulhu(a, b)"),
        ("div", "M", "R", OP, 4, 0x01, "div(a, b)"),
        ("divu", "M", "R", OP, 5, 0x01, "divu(a, b)"),
        ("rem", "M", "R", OP, 6, 0x01, "rem(a, b)"),
        ("remu", "M", "R", OP, 7, 0x01, "remu(a, b)"),
        ("mulw", "M", "R", OP_32, 0, 0x01, "sext32(a * b)"),
        ("divw", "M", "R", OP_32, 4, 0x01, "divw(a, b)"),
        ("divuw", "M", "R", OP_32, 5, 0x01, "divuw(a, b)"),
        ("remw", "M", "R", OP_32, 6, 0x01, "remw(a, b)"),
        ("remuw", "M", "R", OP_32, 7, 0x01, "remuw(a, b)"),
        # Zba: address generation
        ("sh1add", "Zba", "R", OP, 2, 0x10, "(a << 1) + b"),
        ("sh2add", "Zba", "R", OP, 4, 0x10, "(a << 2) + b"),
        ("sh3add", "Zba", "R", OP, 6, 0x10, "(a << 3) + b"),
        ("add.uw", "Zba", "R", OP_32, 0, 0x04, "zext32(a) + b"),
        ("sh1add.uw", "Zba", "R", OP_32, 2, 0x10, "(zext32(a) << 1) + b"),
        ("sh2add.uw", "Zba", "R", OP_32, 4, 0x10, "(zext32(a) << 2) + b"),
        ("sh3add.uw", "Zba", "R", OP_32, 6, 0x10, "(zext32(a) << 3) + b"),
        ("slli.uw", "Zba", "SH6", OP_IMM_32, 1, 0x02, "zext32(a) << imm"),
        # Zbb: basic bit manipulation
        ("andn", "Zbb", "R", OP, 7, 0x20, "a & ~b"),
        ("orn", "Zbb", "R", OP, 6, 0x20, "a | ~b"),
        ("xnor", "Zbb", "R", OP, 4, 0x20, "~(a ^ b)"),
        ("clz", "Zbb", "U", OP_IMM, 1, 0x600, "clz(a)"),
        ("ctz", "Zbb", "U", OP_IMM, 1, 0x601, "ctz(a)"),
        ("cpop", "Zbb", "U", OP_IMM, 1, 0x602, "cpop(a)"),
        ("sext.b", "Zbb", "U", OP_IMM, 1, 0x604, "sext8(a)"),
        ("sext.h", "Zbb", "U", OP_IMM, 1, 0x605, "sext16(a)"),
        ("clzw", "Zbb", "U", OP_IMM_32, 1, 0x600, "clz32(a)"),
        ("ctzw", "Zbb", "U", OP_IMM_32, 1, 0x601, "ctz32(a)"),
        ("cpopw", "Zbb", "U", OP_IMM_32, 1, 0x602, "cpop(zext32(a))"),
        ("zext.h", "Zbb", "U", OP_32, 4, 0x080, "a & 0xFFFF"),
        ("max", "Zbb", "R", OP, 6, 0x05, "select(lt(a, b), b, a)"),
        ("maxu", "Zbb", "R", OP, 7, 0x05, "select(ltu(a, b), b, a)"),
        ("min", "Zbb", "R", OP, 4, 0x05, "select(lt(a, b), a, b)"),
        ("minu", "Zbb", "R", OP, 5, 0x05, "select(ltu(a, b), a, b)"),
        ("rol", "Zbb", "R", OP, 1, 0x30, "rol(a, b & 63)"),
        ("ror", "Zbb", "R", OP, 5, 0x30, "ror(a, b & 63)"),
        ("rori", "Zbb", "SH6", OP_IMM, 5, 0x18, "ror(a, imm)"),
        ("rolw", "Zbb", "R", OP_32, 1, 0x30, "sext32(rol32(a, b & 31))"),
        ("rorw", "Zbb", "R", OP_32, 5, 0x30, "sext32(ror32(a, b & 31))"),
        ("roriw", "Zbb", "SH5", OP_IMM_32, 5, 0x30, "sext32(ror32(a, imm))"),
        ("rev8", "Zbb", "U", OP_IMM, 5, 0x6B8, "bswap(a)"),
        ("orc.b", "Zbb", "U", OP_IMM, 5, 0x287, "orcb(a)"),
        # Zbs: single-bit operations
        ("bclr", "Zbs", "R", OP, 1, 0x24, "a & ~(1 << (b & 63))"),
        ("bclri", "Zbs", "SH6", OP_IMM, 1, 0x12, "a & ~(1 << imm)"),
        ("bext", "Zbs", "R", OP, 5, 0x24, "(a >> (b & 63)) & 1"),
        ("bexti", "Zbs", "SH6", OP_IMM, 5, 0x12, "(a >> imm) & 1"),
        ("binv", "Zbs", "R", OP, 1, 0x34, "a ^ (1 << (b & 63))"),
        ("binvi", "Zbs", "SH6", OP_IMM, 1, 0x1A, "a ^ (1 << imm)"),
        ("bset", "Zbs", "R", OP, 1, 0x14, "a | (1 << (b & 63))"),
        ("bseti", "Zbs", "SH6", OP_IMM, 1, 0x0A, "a | (1 << imm)"),
        # Zicond: conditional zero
        ("czero.eqz", "Zicond", "R", OP, 5, 0x07, "select(eq(b, 0), 0, a)"),
        ("czero.nez", "Zicond", "R", OP, 7, 0x07, "select(ne(b, 0), 0, a)"),
        # loads and stores: the access at a + imm (memN: its N bytes, zero-extended)
        ("lb", "I", "I", LOAD, 0, 0, "sext8(mem1)"),
        ("lh", "I", "I", LOAD, 1, 0, "sext16(mem2)"),
        ("lw", "I", "I", LOAD, 2, 0, "sext32(mem4)"),
        ("ld", "I", "I", LOAD, 3, 0, "mem8"),
        ("lbu", "I", "I", LOAD, 4, 0, "mem1"),
        ("lhu", "I", "I", LOAD, 5, 0, "mem2"),
        ("lwu", "I", "I", LOAD, 6, 0, "mem4"),
        ("sb", "I", "S", STORE, 0, 0, "mem1 = b"),
        ("sh", "I", "S", STORE, 1, 0, "mem2 = b"),
        ("sw", "I", "S", STORE, 2, 0, "mem4 = b"),
        ("sd", "I", "S", STORE, 3, 0, "mem8 = b"),
        # upper immediates and jumps: rd's value (pc: this instruction's; npc: the next)
        ("lui", "I", "UP", LUI, 0, 0, "imm"),
        ("auipc", "I", "UP", AUIPC, 0, 0, "pc + imm"),
        ("jal", "I", "J", JAL, 0, 0, "npc"),  # to pc + imm
        ("jalr", "I", "I", JALR, 0, 0, "npc"),  # to (a + imm) & ~1
        # A: load-reserved, store-conditional, and the AMOs' new memory value from m
        # (the old one, as the instruction reads it: a word sign-extended) and b
        *_atomics(),
        # branches: the condition
        ("beq", "I", "B", BRANCH, 0, 0, "eq(a, b)"),
        ("bne", "I", "B", BRANCH, 1, 0, "ne(a, b)"),
        ("blt", "I", "B", BRANCH, 4, 0, "lt(a, b)"),
        ("bge", "I", "B", BRANCH, 5, 0, "ge(a, b)"),
        ("bltu", "I", "B", BRANCH, 6, 0, "ltu(a, b)"),
        ("bgeu", "I", "B", BRANCH, 7, 0, "geu(a, b)"),
    ]
    return [Insn(*r) for r in rows]


INSNS: dict[str, Insn] = {i.name: i for i in _table()}
_CONTROL = (BRANCH, LOAD, STORE, LUI, AUIPC, JAL, JALR, ATOMIC)
ALU = {n: i for n, i in INSNS.items() if i.opcode not in _CONTROL}  # rd from a, b, imm
BRANCHES = {n: i for n, i in INSNS.items() if i.opcode == BRANCH}
LOADS = {n: i for n, i in INSNS.items() if i.opcode == LOAD}
STORES = {n: i for n, i in INSNS.items() if i.opcode == STORE}
# the read-modify-write AMOs (not lr, sc): their semantics give the new memory value
AMOS = {n: i for n, i in INSNS.items() if i.opcode == ATOMIC and n[:2] not in ("lr", "sc")}
EXTENSIONS = ("Zba", "Zbb", "Zbs", "Zicond")  # beyond RV64GC, advertised in riscv,isa

# The functions of the language: name -> number of arguments.
FUNCS = {
    "sext32": 1, "zext32": 1, "sext8": 1, "sext16": 1, "sra": 2, "lt": 2, "ltu": 2,
    "eq": 2, "ne": 2, "ge": 2, "geu": 2, "select": 3, "mulh": 2, "mulhsu": 2, "mulhu": 2,
    "div": 2, "divu": 2, "rem": 2, "remu": 2, "divw": 2, "divuw": 2, "remw": 2, "remuw": 2,
    "clz": 1, "ctz": 1, "cpop": 1, "clz32": 1, "ctz32": 1, "rol": 2, "ror": 2, "rol32": 2,
    "ror32": 2, "bswap": 1, "orcb": 1,
}
_CMP = {"lt", "ltu", "eq", "ne", "ge", "geu"}


# -- decoding ---------------------------------------------------------------------------------

def _buckets() -> dict[tuple[int, int], list[Insn]]:
    out: dict[tuple[int, int], list[Insn]] = {}
    for i in INSNS.values():
        for f3 in range(8) if i.form in ("UP", "J") else (i.funct3,):  # no funct3 field
            out.setdefault((i.opcode, f3), []).append(i)
    for rows in out.values():  # the most specific encoding first
        rows.sort(key=lambda i: -bin(i.mask).count("1"))
    return out


_BUCKETS = _buckets()
DECODED_OPCODES = frozenset(i.opcode for i in INSNS.values())


def _sx(value: int, bits: int) -> int:
    sign = 1 << (bits - 1)
    return (value & (sign - 1)) - (value & sign)


def decode(w: int) -> tuple[str, int]:
    """Name and immediate of a word of one of DECODED_OPCODES ("illegal" if none)."""
    for i in _BUCKETS.get((w & 0x7F, (w >> 12) & 7), ()):
        if w & i.mask == i.match:
            form = i.form
            if form == "I":
                return i.name, _sx(w >> 20, 12)
            if form == "SH6":
                return i.name, (w >> 20) & 63
            if form == "SH5":
                return i.name, (w >> 20) & 31
            if form == "B":
                imm = (((w >> 31) & 1) << 12 | ((w >> 7) & 1) << 11 | ((w >> 25) & 0x3F) << 5
                       | ((w >> 8) & 0xF) << 1)
                return i.name, _sx(imm, 13)
            if form == "S":
                return i.name, _sx(((w >> 25) << 5) | ((w >> 7) & 31), 12)
            if form == "UP":
                return i.name, _sx(w & 0xFFFFF000, 32)
            if form == "J":
                imm = (((w >> 31) & 1) << 20 | ((w >> 12) & 0xFF) << 12 | ((w >> 20) & 1) << 11
                       | ((w >> 21) & 0x3FF) << 1)
                return i.name, _sx(imm, 21)
            return i.name, 0
    return "illegal", 0


# -- the F and D instructions ------------------------------------------------------------------
#
# Each is one application of an IEEE 754 operation, in single ("s") or double ("d")
# precision, with the rounding mode of its rm field (7: frm) where it rounds. The
# operations (``FpInsn.op``), what they compute, and their parameter ``arg``:
#   add sub mul div   f[rd] = fs1 (op) fs2, rounded
#   sqrt              f[rd] = sqrt(fs1), rounded
#   minnum maxnum     f[rd] = IEEE 754-2019 minimumNumber / maximumNumber of fs1, fs2
#   fma               f[rd] = (+-)(fs1 * fs2) (+-) fs3, rounded once; arg bit 0 negates
#                     the product, bit 1 the addend
#   sgnj              f[rd] = |fs1| with the sign of fs2 (arg 0), of -fs2 (1), or fs1's
#                     sign xor fs2's (2); raw bits, no flags
#   eq lt le          x[rd] = the comparison (eq quiet, lt and le signalling)
#   class             x[rd] = the 10-bit class mask of fs1
#   to_int            x[rd] = fs1 converted to an integer of arg bits, signed or not,
#                     rounded, saturating (a 32-bit result sign-extended)
#   from_int          f[rd] = x[rs1] as an integer of arg bits (the low ones), signed or
#                     not, rounded to the format
#   cvt               f[rd] = fs1 converted from the other format (s <-> d), rounded
#   mv_x              x[rd] = the raw bits of fs1 (of a single: its low 32, sign-extended)
#   mv_f              f[rd] = the raw bits of x[rs1] (of a single: the low 32, NaN-boxed)
#   load store        f[rd] = arg bytes at x[rs1] + imm (a single NaN-boxed); or store
#                     fs2's low arg bytes there
# A single in an f register is NaN-boxed (the upper 32 bits all ones); an operation that
# reads one that is not sees the canonical NaN. A NaN result is the canonical NaN.
OP_FP, LOAD_FP, STORE_FP = 0x53, 0x07, 0x27
FMADD, FMSUB, FNMSUB, FNMADD = 0x43, 0x47, 0x4B, 0x4F
FP_OPS = ("add", "sub", "mul", "div", "sqrt", "minnum", "maxnum", "fma", "sgnj", "eq", "lt", "le",
          "class", "to_int", "from_int", "cvt", "mv_x", "mv_f", "load", "store")
# The fixed bits of each encoding shape: funct7 (fmt in its low two bits), and
#   FR   funct3 is rm           FR3  funct3 fixed
#   FU   rs2 fixed, rm          FU3  rs2 and funct3 fixed
#   R4   fused: fmt only (rs3 in funct7's upper five bits, funct3 rm)
#   FL   flw/fld: funct3 (I-immediate)   FS  fsw/fsd: funct3 (S-immediate)
FP_FORMS = {"FR": 0xFE00007F, "FR3": 0xFE00707F, "FU": 0xFFF0007F, "FU3": 0xFFF0707F,
            "R4": 0x0600007F, "FL": 0x0000707F, "FS": 0x0000707F}


@dataclass(frozen=True)
class FpInsn:
    name: str
    op: str  # one of FP_OPS
    fmt: str  # "s" or "d": the format it computes in (cvt: the result's)
    form: str  # one of FP_FORMS
    opcode: int
    funct7: int  # (FR, FR3, FU, FU3; R4: the fmt bits)
    funct3: int  # (FR3, FU3, FL, FS)
    rs2: int  # (FU, FU3)
    arg: int = 0  # the operation's parameter (see above)
    signed: bool = False  # to_int, from_int

    @property
    def ext(self) -> str:
        return "F" if self.fmt == "s" else "D"

    @property
    def mask(self) -> int:
        return FP_FORMS[self.form]

    @property
    def match(self) -> int:
        m = self.opcode | (self.funct7 << 25)
        if self.form in ("FR3", "FU3", "FL", "FS"):
            m |= self.funct3 << 12
        if self.form in ("FU", "FU3"):
            m |= self.rs2 << 20
        return m


def _fp_table() -> list[FpInsn]:
    rows: list[FpInsn] = []
    for fmt, f in (("s", 0), ("d", 1)):
        def r(name: str, op: str, form: str, f5: int, f3: int = 0, rs2: int = 0,
              arg: int = 0, signed: bool = False, fmt: str = fmt, f: int = f) -> None:
            rows.append(FpInsn(f"{name}.{fmt}" if "." not in name else name, op, fmt, form,
                               OP_FP, f5 << 2 | f, f3, rs2, arg, signed))
        for f5, op in enumerate(("add", "sub", "mul", "div")):
            r("f" + op, op, "FR", f5)
        r("fsqrt", "sqrt", "FU", 0b01011)
        for k, nm in enumerate(("fsgnj", "fsgnjn", "fsgnjx")):
            r(nm, "sgnj", "FR3", 0b00100, k, arg=k)
        r("fmin", "minnum", "FR3", 0b00101, 0)
        r("fmax", "maxnum", "FR3", 0b00101, 1)
        r("fle", "le", "FR3", 0b10100, 0)
        r("flt", "lt", "FR3", 0b10100, 1)
        r("feq", "eq", "FR3", 0b10100, 2)
        for k, (iname, bits, sg) in enumerate((("w", 32, True), ("wu", 32, False),
                                               ("l", 64, True), ("lu", 64, False))):
            r(f"fcvt.{iname}.{fmt}", "to_int", "FU", 0b11000, rs2=k, arg=bits, signed=sg)
            r(f"fcvt.{fmt}.{iname}", "from_int", "FU", 0b11010, rs2=k, arg=bits, signed=sg)
        r(f"fcvt.{fmt}.{'d' if fmt == 's' else 's'}", "cvt", "FU", 0b01000, rs2=1 - f)
        r(f"fmv.x.{'w' if fmt == 's' else 'd'}", "mv_x", "FU3", 0b11100, 0)
        r("fclass", "class", "FU3", 0b11100, 1)
        r(f"fmv.{'w' if fmt == 's' else 'd'}.x", "mv_f", "FU3", 0b11110, 0)
        for opcode, nm, neg in ((FMADD, "fmadd", 0), (FMSUB, "fmsub", 2),
                                (FNMSUB, "fnmsub", 1), (FNMADD, "fnmadd", 3)):
            rows.append(FpInsn(f"{nm}.{fmt}", "fma", fmt, "R4", opcode, f, 0, 0, neg))
        size = 4 if fmt == "s" else 8
        ls = "w" if fmt == "s" else "d"
        rows.append(FpInsn(f"fl{ls}", "load", fmt, "FL", LOAD_FP, 0, 2 + f, 0, size))
        rows.append(FpInsn(f"fs{ls}", "store", fmt, "FS", STORE_FP, 0, 2 + f, 0, size))
    return rows


FP: dict[str, FpInsn] = {i.name: i for i in _fp_table()}
_FP_BUCKETS: dict[int, list[FpInsn]] = {}
for _i in FP.values():
    _FP_BUCKETS.setdefault(_i.opcode, []).append(_i)
FP_OPCODES = frozenset(_FP_BUCKETS)


def decode_fp(w: int) -> tuple[str, int]:
    """Name and immediate of a word of one of FP_OPCODES ("illegal" if none)."""
    for i in _FP_BUCKETS.get(w & 0x7F, ()):
        if w & i.mask == i.match:
            if i.form == "FL":
                return i.name, _sx(w >> 20, 12)
            if i.form == "FS":
                return i.name, _sx(((w >> 25) << 5) | ((w >> 7) & 31), 12)
            return i.name, 0
    return "illegal", 0


# -- the system instructions ---------------------------------------------------------------
#
# Fences, environment calls, trap returns, WFI, SFENCE.VMA and the CSR instructions. What
# they do is privileged state (cpu/hart.py: CSRs, traps, the TLB); here are their encodings
# and which of those operations each is (``SysInsn.op``):
#   fence fence_i ecall ebreak wfi sfence_vma
#   xret    return from a trap taken to privilege ``arg`` (3 mret, 1 sret)
#   csr     x[rd] = the CSR (imm[11:0]); then write it with x[rs1], or the 5-bit immediate
#           in the rs1 field (``uimm``), as ``arg``: 1 write, 2 set bits, 3 clear bits
MISC_MEM, SYSTEM = 0x0F, 0x73
SYS_FORMS = {"W": 0xFFFFFFFF, "F3": 0x0000707F, "SFV": 0xFE007FFF}


@dataclass(frozen=True)
class SysInsn:
    name: str
    ext: str
    op: str
    form: str  # W: the whole word fixed; F3: opcode and funct3; SFV: funct7, rd, funct3
    match: int
    arg: int = 0
    uimm: bool = False

    @property
    def mask(self) -> int:
        return SYS_FORMS[self.form]


def _sys_table() -> list[SysInsn]:
    rows = [
        SysInsn("fence", "I", "fence", "F3", MISC_MEM),
        SysInsn("fence.i", "Zifencei", "fence_i", "F3", MISC_MEM | 1 << 12),
        SysInsn("ecall", "I", "ecall", "W", 0x00000073),
        SysInsn("ebreak", "I", "ebreak", "W", 0x00100073),
        SysInsn("mret", "Priv", "xret", "W", 0x30200073, arg=3),
        SysInsn("sret", "Priv", "xret", "W", 0x10200073, arg=1),
        SysInsn("wfi", "Priv", "wfi", "W", 0x10500073),
        SysInsn("sfence.vma", "Priv", "sfence_vma", "SFV", 0b0001001 << 25 | SYSTEM),
    ]
    for f3, nm in ((1, "csrrw"), (2, "csrrs"), (3, "csrrc")):
        rows.append(SysInsn(nm, "Zicsr", "csr", "F3", SYSTEM | f3 << 12, arg=f3))
        rows.append(SysInsn(nm + "i", "Zicsr", "csr", "F3", SYSTEM | (f3 + 4) << 12, arg=f3,
                            uimm=True))
    return rows


SYS: dict[str, SysInsn] = {i.name: i for i in _sys_table()}
SYS_OPCODES = frozenset({MISC_MEM, SYSTEM})


def decode_sys(w: int) -> tuple[str, int]:
    """Name (and immediate, 0) of a word of one of SYS_OPCODES ("illegal" if none)."""
    for i in SYS.values():
        if w & i.mask == i.match:
            return i.name, 0
    return "illegal", 0


# -- semantics ---------------------------------------------------------------------------------

@cache
def _tree(sem: str) -> ast.expr:
    node = ast.parse(sem, mode="eval").body
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            if not isinstance(n.func, ast.Name) or FUNCS.get(n.func.id) != len(n.args):
                raise ValueError(f"spec: bad call in {sem!r}")
        elif isinstance(n, ast.Name) and n.id not in ("a", "b", "imm", "pc", "npc", "m") \
                and n.id not in FUNCS:
            raise ValueError(f"spec: unknown name {n.id} in {sem!r}")
    return node


def _int(n: ast.Constant) -> int:
    if not isinstance(n.value, int):
        raise ValueError(f"spec: {n.value!r} is not an integer")
    return n.value


@cache
def uses(name: str, operand: str) -> bool:
    """Whether the semantics of ``name`` read ``operand`` ("a", "b" or "imm")."""
    return any(isinstance(n, ast.Name) and n.id == operand
               for n in ast.walk(_tree(INSNS[name].sem)))


@cache
def operands(name: str) -> tuple[bool, bool]:
    """Whether the semantics of ``name`` read x[rs1], x[rs2]."""
    return uses(name, "a"), uses(name, "b")


# Python: an expression over a, b (unsigned 64-bit ints) and i (the immediate as one),
# whose value is the result as one; helpers (names starting with "_") are in PY_HELPERS.
_SX32 = "(((((%s) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) & M64)"
_SIGNED = "(%s - ((%s & SIGN) << 1))"


def _py(n: ast.expr, exact: bool = False) -> str:
    """``n`` rendered; with ``exact``, its low 32 bits suffice (no masking to 64 bits of
    the operations that carry upward only: + - * <<)."""
    if isinstance(n, ast.Name):
        return "i" if n.id == "imm" else n.id
    if isinstance(n, ast.Constant):
        return hex(_int(n) & M64)
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Invert):
        return f"({_py(n.operand)} ^ M64)"
    if isinstance(n, ast.BinOp):
        ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.LShift: "<<", ast.RShift: ">>",
               ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^"}
        sym = ops[type(n.op)]
        carries = sym in ("+", "-", "*", "<<")
        inner = exact and carries
        left, right = _py(n.left, inner), _py(n.right, False)
        if sym == ">>":
            return f"({left} >> {right})"
        if carries and not exact:
            return f"(({left} {sym} {right}) & M64)"
        return f"({left} {sym} {right})"
    assert isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    f, args = n.func.id, n.args
    if f == "sext32":
        return _SX32 % _strip(_py(args[0], True))
    if f == "zext32":
        return f"({_py(args[0])} & 0xFFFFFFFF)"
    if f == "sra":
        x = _py(args[0])
        return f"(({_SIGNED % (x, x)} >> {_py(args[1])}) & M64)"
    if f in _CMP:
        return f"int({_cond(n)})"
    if f == "select":
        return f"({_py(args[1])} if {_cond(args[0])} else {_py(args[2])})"
    return f"_{f}({', '.join(_py(x) for x in args)})"


def _strip(s: str) -> str:
    return s[1:-1] if s.startswith("(") and s.endswith(")") and _balanced(s[1:-1]) else s


def _balanced(s: str) -> bool:
    depth = 0
    for c in s:
        depth += (c == "(") - (c == ")")
        if depth < 0:
            return False
    return depth == 0


def _cond(n: ast.expr) -> str:
    """A condition (a comparison) as a Python bool expression."""
    if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _CMP):
        return f"({_py(n)} != 0)"
    x, y = (_py(a) for a in n.args)
    return {"lt": f"({x} ^ SIGN) < ({y} ^ SIGN)", "ge": f"({x} ^ SIGN) >= ({y} ^ SIGN)",
            "ltu": f"{x} < {y}", "geu": f"{x} >= {y}", "eq": f"{x} == {y}",
            "ne": f"{x} != {y}"}[n.func.id]


def python(name: str) -> str:
    """The value an ALU instruction writes to rd, or a branch's condition, in Python."""
    node = _tree(INSNS[name].sem)
    return _cond(node) if name in BRANCHES else _py(node)


def _s(x: int) -> int:
    return x - ((x & (1 << 63)) << 1)


def _s32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - ((x & (1 << 31)) << 1)


def _div(a: int, b: int) -> int:
    if b == 0:
        return M64
    sa, sb = _s(a), _s(b)
    q = abs(sa) // abs(sb)
    return (-q if (sa < 0) != (sb < 0) else q) & M64


def _rem(a: int, b: int) -> int:
    if b == 0:
        return a
    sa, sb = _s(a), _s(b)
    r = abs(sa) % abs(sb)
    return (-r if sa < 0 else r) & M64


def _divw(a: int, b: int) -> int:
    if b & 0xFFFFFFFF == 0:
        return M64
    sa, sb = _s32(a), _s32(b)
    q = abs(sa) // abs(sb)
    return _s32(-q if (sa < 0) != (sb < 0) else q) & M64


def _remw(a: int, b: int) -> int:
    if b & 0xFFFFFFFF == 0:
        return _s32(a) & M64
    sa, sb = _s32(a), _s32(b)
    r = abs(sa) % abs(sb)
    return _s32(-r if sa < 0 else r) & M64


def _divuw(a: int, b: int) -> int:
    a, b = a & 0xFFFFFFFF, b & 0xFFFFFFFF
    return M64 if b == 0 else _s32(a // b) & M64


def _remuw(a: int, b: int) -> int:
    a, b = a & 0xFFFFFFFF, b & 0xFFFFFFFF
    return _s32(a if b == 0 else a % b) & M64


def _clz(x: int) -> int:
    return 64 - x.bit_length()


def _ctz(x: int) -> int:
    return 64 if x == 0 else (x & -x).bit_length() - 1


def _rol32(x: int, s: int) -> int:
    x &= 0xFFFFFFFF
    return ((x << s) | (x >> (32 - s))) & 0xFFFFFFFF if s else x


PY_HELPERS: dict[str, Callable[..., int]] = {
    "_mulh": lambda a, b: (_s(a) * _s(b) >> 64) & M64,
    "_mulhsu": lambda a, b: (_s(a) * b >> 64) & M64,
    "_mulhu": lambda a, b: (a * b) >> 64,
    "_div": _div, "_divu": lambda a, b: a // b if b else M64,
    "_rem": _rem, "_remu": lambda a, b: a % b if b else a,
    "_divw": _divw, "_divuw": _divuw, "_remw": _remw, "_remuw": _remuw,
    "_clz": _clz, "_ctz": _ctz, "_cpop": lambda x: x.bit_count(),
    "_clz32": lambda x: 32 - (x & 0xFFFFFFFF).bit_length(),
    "_ctz32": lambda x: min(_ctz(x), 32),
    "_rol": lambda x, s: ((x << s) | (x >> (64 - s))) & M64 if s else x,
    "_ror": lambda x, s: ((x >> s) | (x << (64 - s))) & M64 if s else x,
    "_rol32": _rol32, "_ror32": lambda x, s: _rol32(x, (32 - s) & 31),
    "_bswap": lambda x: int.from_bytes(x.to_bytes(8, "little"), "big"),
    "_orcb": lambda x: int.from_bytes(bytes(0xFF if c else 0 for c in x.to_bytes(8, "little")),
                                      "little"),
    "_sext8": lambda x: ((x & 0xFF) ^ 0x80) - 0x80 & M64,
    "_sext16": lambda x: ((x & 0xFFFF) ^ 0x8000) - 0x8000 & M64,
}


# LLVM: i64 SSA values; ``op(expr)`` emits ``%v = expr`` and returns %v.
LLVM_DECLS = [
    "declare i64 @llvm.ctlz.i64(i64, i1)", "declare i64 @llvm.cttz.i64(i64, i1)",
    "declare i64 @llvm.ctpop.i64(i64)", "declare i32 @llvm.ctlz.i32(i32, i1)",
    "declare i32 @llvm.cttz.i32(i32, i1)", "declare i64 @llvm.fshl.i64(i64, i64, i64)",
    "declare i64 @llvm.fshr.i64(i64, i64, i64)", "declare i32 @llvm.fshl.i32(i32, i32, i32)",
    "declare i32 @llvm.fshr.i32(i32, i32, i32)", "declare i64 @llvm.bswap.i64(i64)",
]


def llvm(name: str, op: Callable[[str], str], a: str = "", b: str = "", imm: str = "",
         m: str = "") -> str:
    """The value an ALU instruction writes to rd (i64), a branch's condition (i1), or an
    AMO's new memory value (i64; ``m`` the old one as read), as LLVM IR emitted through
    ``op``; ``a``, ``b``, ``imm``: i64 operands (as the semantics use them: :func:`uses`)."""
    env = {"a": a, "b": b, "imm": imm, "m": m}
    node = _tree(INSNS[name].sem)
    if name in BRANCHES:
        return _ll_cond(node, op, env)
    return _ll(node, op, env)


_LL_BIN = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.LShift: "shl",
           ast.RShift: "lshr", ast.BitAnd: "and", ast.BitOr: "or", ast.BitXor: "xor"}
_LL_CMP = {"lt": "slt", "ltu": "ult", "eq": "eq", "ne": "ne", "ge": "sge", "geu": "uge"}


def _const(v: int) -> str:
    v &= M64
    return str(v - (1 << 64) if v >> 63 else v)


def _ll_cond(n: ast.expr, op: Callable[[str], str], env: dict[str, str]) -> str:
    if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _CMP:
        x, y = (_ll(a, op, env) for a in n.args)
        return op(f"icmp {_LL_CMP[n.func.id]} i64 {x}, {y}")
    return op(f"icmp ne i64 {_ll(n, op, env)}, 0")


def _ll(n: ast.expr, op: Callable[[str], str], env: dict[str, str]) -> str:
    if isinstance(n, ast.Name):
        return env[n.id]
    if isinstance(n, ast.Constant):
        return _const(_int(n))
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Invert):
        return op(f"xor i64 {_ll(n.operand, op, env)}, -1")
    if isinstance(n, ast.BinOp):
        x, y = _ll(n.left, op, env), _ll(n.right, op, env)
        return op(f"{_LL_BIN[type(n.op)]} i64 {x}, {y}")
    assert isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    f = n.func.id
    args = n.args
    if f in _CMP:
        return op(f"zext i1 {_ll_cond(n, op, env)} to i64")
    if f == "select":
        c = _ll_cond(args[0], op, env)
        x, y = _ll(args[1], op, env), _ll(args[2], op, env)
        return op(f"select i1 {c}, i64 {x}, i64 {y}")
    xs = [_ll(a, op, env) for a in args]
    x = xs[0]

    def low(v: str, bits: int = 32) -> str:
        return op(f"trunc i64 {v} to i{bits}")

    if f in ("sext32", "sext8", "sext16"):
        bits = {"sext32": 32, "sext8": 8, "sext16": 16}[f]
        return op(f"sext i{bits} {low(x, bits)} to i64")
    if f == "zext32":
        return op(f"and i64 {x}, 4294967295")
    if f == "sra":
        return op(f"ashr i64 {x}, {xs[1]}")
    if f in ("mulh", "mulhsu", "mulhu"):
        ea, eb = {"mulh": ("sext", "sext"), "mulhsu": ("sext", "zext"),
                  "mulhu": ("zext", "zext")}[f]
        p = op(f"mul i128 {op(f'{ea} i64 {x} to i128')}, {op(f'{eb} i64 {xs[1]} to i128')}")
        return op(f"trunc i128 {op(f'lshr i128 {p}, 64')} to i64")
    if f in ("div", "divu", "rem", "remu", "divw", "divuw", "remw", "remuw"):
        return _ll_div(f, x, xs[1], op)
    if f in ("clz", "ctz"):
        return op(f"call i64 @llvm.{'ctlz' if f == 'clz' else 'cttz'}.i64(i64 {x}, i1 false)")
    if f in ("clz32", "ctz32"):
        r = op(f"call i32 @llvm.{'ctlz' if f == 'clz32' else 'cttz'}.i32(i32 {low(x)}, i1 false)")
        return op(f"zext i32 {r} to i64")
    if f == "cpop":
        return op(f"call i64 @llvm.ctpop.i64(i64 {x})")
    if f in ("rol", "ror"):
        fn = "fshl" if f == "rol" else "fshr"
        return op(f"call i64 @llvm.{fn}.i64(i64 {x}, i64 {x}, i64 {xs[1]})")
    if f in ("rol32", "ror32"):
        fn = "fshl" if f == "rol32" else "fshr"
        v = low(x)
        r = op(f"call i32 @llvm.{fn}.i32(i32 {v}, i32 {v}, i32 {low(xs[1])})")
        return op(f"zext i32 {r} to i64")
    if f == "bswap":
        return op(f"call i64 @llvm.bswap.i64(i64 {x})")
    if f == "orcb":  # each byte: all ones if it is not zero
        t = op(f"and i64 {x}, 9187201950435737471")  # 0x7f7f...
        t = op(f"add i64 {t}, 9187201950435737471")
        t = op(f"or i64 {t}, {x}")
        t = op(f"and i64 {t}, -9187201950435737472")  # 0x8080...
        t = op(f"lshr i64 {t}, 7")
        return op(f"mul i64 {t}, 255")
    raise ValueError(f"spec: no LLVM for {f}")


def _ll_div(f: str, a: str, b: str, op: Callable[[str], str]) -> str:
    """RISC-V division: x / 0 = all ones, x % 0 = x, MIN / -1 = MIN, MIN % -1 = 0 (no
    trap); the 32-bit forms on the low words, sign-extended."""
    w = f.endswith("w")
    ty = "i32" if w else "i64"
    if w:
        a, b = op(f"trunc i64 {a} to i32"), op(f"trunc i64 {b} to i32")
    signed = f in ("div", "rem", "divw", "remw")
    is_rem = f.startswith("rem")
    zero = op(f"icmp eq {ty} {b}, 0")
    minv = "-2147483648" if w else "-9223372036854775808"
    ovf = ""
    bad = zero
    if signed:
        amin = op(f"icmp eq {ty} {a}, {minv}")
        bneg = op(f"icmp eq {ty} {b}, -1")
        ovf = op(f"and i1 {amin}, {bneg}")
        bad = op(f"or i1 {zero}, {ovf}")
    safe = op(f"select i1 {bad}, {ty} 1, {ty} {b}")
    q = op(f"{('s' if signed else 'u') + ('rem' if is_rem else 'div')} {ty} {a}, {safe}")
    if is_rem:
        r = op(f"select i1 {zero}, {ty} {a}, {ty} {q}")
        if signed:
            r = op(f"select i1 {ovf}, {ty} 0, {ty} {r}")
    else:
        r = op(f"select i1 {zero}, {ty} -1, {ty} {q}")
        if signed:
            r = op(f"select i1 {ovf}, {ty} {a}, {ty} {r}")
    return op(f"sext i32 {r} to i64") if w else r


__all__ = ["INSNS", "ALU", "BRANCHES", "LOADS", "STORES", "AMOS", "EXTENSIONS", "decode",
           "python",
           "llvm", "uses",
           "operands",
           "PY_HELPERS", "LLVM_DECLS", "DECODED_OPCODES", "FP", "FpInsn", "FP_OPS",
           "FP_OPCODES", "decode_fp", "SYS", "SysInsn", "SYS_OPCODES", "decode_sys"]
