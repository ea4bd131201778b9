"""Differential-testing harness: random RV64GC programs run on pyhv and on unicorn.

A *program* is straight-line code made of *units* (one or a few instructions that must
stay together, e.g. ``addi t, s0, off`` + ``amoadd.w``). Branch units jump forward over
0-3 whole units, so every program terminates. The program ends with ``j .``; pyhv runs
with a budget of (instructions + 1) (or ``Program.budget`` for the hand-written loops),
so it finishes parked on that loop, while unicorn stops with ``until=end``. Both start
from the same x/f registers, frm/fflags and a 4 KiB data window, and afterwards every x
register, every f register (raw bits), fflags, frm, the data window and the final pc are
compared.

Encodings are built here from the formats of the unprivileged spec (R/I/S/B/U/J/R4 and
the compressed CI/CSS/CIW/CL/CS/CA/CB/CJ/CR formats); ``llvm-mc`` agrees with them (see
``test_encodings_match_llvm_mc``).

unicorn 2.1.4 is QEMU 5.0's TCG, which predates NaN-boxing (unprivileged spec, F
extension 2.2, section "NaN Boxing of Narrower Values"): it writes single-precision
results zero-extended and reads single operands from the low 32 bits without checking
the box. :class:`_SpecAdapter` puts that rule back around each instruction so unicorn
serves as a spec oracle:

* before an instruction that reads single-precision operands (every .s instruction
  except the pure transfers fmv.x.w and fsw), an operand that is not NaN-boxed is
  replaced by the boxed canonical NaN 0x7fc00000 (what the spec says it reads as);
* after an instruction with a single-precision result, that register is NaN-boxed, and
  the replaced operands are restored (unless one of them was the destination).

QEMU 5.0 also implements fmin/fmax as IEEE 754-2008 minNum/maxNum, which return the
canonical NaN when one operand is a signalling NaN. Since F 2.2 the spec requires
IEEE 754-2019 minimumNumber/maximumNumber: "If only one operand is a NaN, the result is
the non-NaN operand. Signaling NaN inputs set the invalid operation exception flag, even
when the result is not NaN." The adapter substitutes the non-NaN operand in that case
(the invalid flag QEMU raises is already right).

Finally, the spec says "The fused multiply-add instructions must set the invalid
operation exception flag when the multiplicands are infinity and zero, even when the
addend is a quiet NaN" (IEEE 754 leaves that case to the implementation); QEMU 5.0 does
not, so the adapter raises NV for fmadd/fmsub/fnmsub/fnmadd with those operands.

Deliberately not generated, because unicorn cannot serve as an oracle there:

* trapping instructions: unicorn reports an exception as ``UcError`` (or through
  UC_HOOK_INTR with a raw QEMU exception number, a post-instruction pc and without
  setting mcause/mepc), and QEMU 5.0 reports a misaligned AMO as a load-misaligned
  fault (cause 4) where the spec says store/AMO-misaligned (6). Memory accesses stay
  inside the data window, AMO/LR/SC addresses are aligned, rounding modes are valid,
  and a generated pyhv trap shows up as a pc mismatch;
* an LR and its SC separated by other memory accesses, or of different widths: QEMU's SC
  compares the loaded value (cmpxchg) instead of tracking a reservation, and the spec
  leaves those cases implementation-defined. LR/SC come as adjacent pairs in one unit,
  so a branch never skips half a pair.

The harness is exposed to tests via the ``harness`` fixture (this module itself).
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

CODE = 0x8000_0000
RAM_SIZE = 1 << 20
DATA = 0x8008_0000
DATA_SIZE = 4096
TRAP_PC = 0x8004_0000  # mtvec: a `j .` so a pyhv trap parks at a known pc
M64 = (1 << 64) - 1
M32 = 0xFFFF_FFFF
BOX = 0xFFFF_FFFF_0000_0000
CANON_NAN_S_BOXED = BOX | 0x7FC0_0000
J_SELF = 0x0000_006F  # jal x0, 0

# Registers that hold data-window addresses and are never written by generated code.
SP_VAL = DATA + 1024  # x2: c.lwsp/c.ldsp/c.swsp/c.sdsp/c.fldsp/c.fsdsp/c.addi4spn
S0_VAL = DATA + 2048  # x8: 12-bit offsets reach the whole window
S1_VAL = DATA  # x9: window start (unsigned compressed offsets)
RESERVED = {2: SP_VAL, 8: S0_VAL, 9: S1_VAL}
WRITABLE = [r for r in range(32) if r not in RESERVED]  # includes x0 (writes vanish)
WRITABLE_NZ = [r for r in WRITABLE if r]
CREG_RD = [10, 11, 12, 13, 14, 15]  # rd' choices (x8, x9 are reserved)
CREG = list(range(8, 16))


# -- encodings --------------------------------------------------------------------------------


def enc_r(op: int, rd: int, f3: int, rs1: int, rs2: int, f7: int) -> int:
    return f7 << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | rd << 7 | op


def enc_i(op: int, rd: int, f3: int, rs1: int, imm: int) -> int:
    return (imm & 0xFFF) << 20 | rs1 << 15 | f3 << 12 | rd << 7 | op


def enc_s(op: int, f3: int, rs1: int, rs2: int, imm: int) -> int:
    imm &= 0xFFF
    return (imm >> 5) << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | (imm & 31) << 7 | op


def enc_b(f3: int, rs1: int, rs2: int, imm: int) -> int:
    imm &= 0x1FFF
    return (
        (imm >> 12 & 1) << 31 | (imm >> 5 & 0x3F) << 25 | rs2 << 20 | rs1 << 15 | f3 << 12
        | (imm >> 1 & 0xF) << 8 | (imm >> 11 & 1) << 7 | 0x63
    )


def enc_u(op: int, rd: int, imm20: int) -> int:
    return (imm20 & 0xFFFFF) << 12 | rd << 7 | op


def enc_j(rd: int, imm: int) -> int:
    imm &= 0x1FFFFF
    return (
        (imm >> 20 & 1) << 31 | (imm >> 1 & 0x3FF) << 21 | (imm >> 11 & 1) << 20
        | (imm >> 12 & 0xFF) << 12 | rd << 7 | 0x6F
    )


def enc_r4(op: int, rd: int, rm: int, rs1: int, rs2: int, rs3: int, fmt: int) -> int:
    return rs3 << 27 | fmt << 25 | rs2 << 20 | rs1 << 15 | rm << 12 | rd << 7 | op


# Compressed formats (quadrant in the low two bits).
def c_ci(f3: int, rd: int, imm6: int, quadrant: int) -> int:
    return f3 << 13 | (imm6 >> 5 & 1) << 12 | rd << 7 | (imm6 & 31) << 2 | quadrant


def c_cr(f4: int, rd: int, rs2: int) -> int:
    return f4 << 12 | rd << 7 | rs2 << 2 | 2


def c_cl_w(f3: int, rdp: int, rs1p: int, u: int) -> int:  # c.lw / c.sw (word offsets)
    return (
        f3 << 13 | (u >> 3 & 7) << 10 | (rs1p - 8) << 7 | (u >> 2 & 1) << 6 | (u >> 6 & 1) << 5
        | (rdp - 8) << 2
    )


def c_cl_d(f3: int, rdp: int, rs1p: int, u: int) -> int:  # c.ld/c.sd/c.fld/c.fsd
    return f3 << 13 | (u >> 3 & 7) << 10 | (rs1p - 8) << 7 | (u >> 6 & 3) << 5 | (rdp - 8) << 2


def c_addi4spn(rdp: int, u: int) -> int:
    return (u >> 4 & 3) << 11 | (u >> 6 & 15) << 7 | (u >> 2 & 1) << 6 | (u >> 3 & 1) << 5 | (
        rdp - 8
    ) << 2


def c_lwsp(rd: int, u: int) -> int:
    return 2 << 13 | (u >> 5 & 1) << 12 | rd << 7 | (u >> 2 & 7) << 4 | (u >> 6 & 3) << 2 | 2


def c_ldsp(f3: int, rd: int, u: int) -> int:  # c.ldsp (3) / c.fldsp (1)
    return f3 << 13 | (u >> 5 & 1) << 12 | rd << 7 | (u >> 3 & 3) << 5 | (u >> 6 & 7) << 2 | 2


def c_swsp(rs2: int, u: int) -> int:
    return 6 << 13 | (u >> 2 & 15) << 9 | (u >> 6 & 3) << 7 | rs2 << 2 | 2


def c_sdsp(f3: int, rs2: int, u: int) -> int:  # c.sdsp (7) / c.fsdsp (5)
    return f3 << 13 | (u >> 3 & 7) << 10 | (u >> 6 & 7) << 7 | rs2 << 2 | 2


def c_addi16sp(imm: int) -> int:
    i = imm & 0x3FF
    return (
        3 << 13 | (i >> 9 & 1) << 12 | 2 << 7 | (i >> 4 & 1) << 6 | (i >> 6 & 1) << 5
        | (i >> 7 & 3) << 3 | (i >> 5 & 1) << 2 | 1
    )


def c_cb_shift(f2: int, rdp: int, imm6: int) -> int:  # c.srli (0) / c.srai (1) / c.andi (2)
    return 4 << 13 | (imm6 >> 5 & 1) << 12 | f2 << 10 | (rdp - 8) << 7 | (imm6 & 31) << 2 | 1


def c_ca(bit12: int, f2: int, rdp: int, rs2p: int) -> int:
    return 4 << 13 | bit12 << 12 | 3 << 10 | (rdp - 8) << 7 | f2 << 5 | (rs2p - 8) << 2 | 1


def c_j(imm: int) -> int:
    i = imm & 0xFFF
    return (
        5 << 13 | (i >> 11 & 1) << 12 | (i >> 4 & 1) << 11 | (i >> 8 & 3) << 9
        | (i >> 10 & 1) << 8 | (i >> 6 & 1) << 7 | (i >> 7 & 1) << 6 | (i >> 1 & 7) << 3
        | (i >> 5 & 1) << 2 | 1
    )


def c_bz(f3: int, rs1p: int, imm: int) -> int:  # c.beqz (6) / c.bnez (7)
    i = imm & 0x1FF
    return (
        f3 << 13 | (i >> 8 & 1) << 12 | (i >> 3 & 3) << 10 | (rs1p - 8) << 7
        | (i >> 6 & 3) << 5 | (i >> 1 & 3) << 3 | (i >> 5 & 1) << 2 | 1
    )


# -- programs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Insn:
    word: int
    size: int  # 2 or 4 bytes
    text: str
    s_in: tuple[int, ...] = ()  # f registers read as (NaN-boxed) single-precision values
    f_out: int | None = None  # f register written
    s_out: bool = False  # the f result is single precision (must end up NaN-boxed)
    minmax: tuple[int, int] | None = None  # fmin/fmax source registers
    fused: tuple[int, int, int] | None = None  # fmadd & co. source registers


@dataclass(frozen=True)
class Fixup:
    """An instruction whose encoding depends on its pc, its unit's start and the target."""

    size: int
    build: Callable[[int, int, int], Insn]  # (pc, unit_start, target) -> Insn


@dataclass
class Unit:
    items: list[Insn | Fixup]
    skip: int = 0  # branch units: how many following units the taken branch skips


@dataclass
class Program:
    units: list[Unit]
    x: list[int]
    f: list[int]
    frm: int
    fflags: int
    data: bytes
    budget: int | None = None  # instructions to run; default: every instruction once

    def assemble(self) -> tuple[bytes, list[tuple[int, Insn]], int]:
        starts = []
        pc = CODE
        for u in self.units:
            starts.append(pc)
            pc += sum(it.size for it in u.items)
        end = pc
        placed: list[tuple[int, Insn]] = []
        for i, u in enumerate(self.units):
            j = i + 1 + u.skip
            target = starts[j] if j < len(self.units) else end
            pc = starts[i]
            for it in u.items:
                ins = it.build(pc, starts[i], target) if isinstance(it, Fixup) else it
                assert ins.size == it.size
                placed.append((pc, ins))
                pc += ins.size
        code = b"".join(ins.word.to_bytes(ins.size, "little") for _, ins in placed)
        return code + J_SELF.to_bytes(4, "little"), placed, end

    def with_units(self, units: list[Unit]) -> Program:
        return Program(units, self.x, self.f, self.frm, self.fflags, self.data, self.budget)

    def steps(self) -> int:
        return self.budget if self.budget is not None else self.n_insns()

    def n_insns(self) -> int:
        return sum(len(u.items) for u in self.units)


@dataclass
class Result:
    x: list[int]
    f: list[int]
    fflags: int
    frm: int
    data: bytes
    pc: int
    trap: str | None = None


# -- the two machines -------------------------------------------------------------------------


def run_pyhv(prog: Program) -> Result:
    from pyhv.cpu.hart import Hart
    from pyhv.cpu.interp import Interpreter
    from pyhv.cpu.mmu import CodeWatch
    from pyhv.memory.bus import Bus
    from pyhv.memory.ram import GuestRAM

    code, placed, end = prog.assemble()
    ram = GuestRAM(CODE, RAM_SIZE)
    watch = CodeWatch()
    hart = Hart(0, ram, Bus(), watch)
    interp = Interpreter(hart, watch)
    ram.write_bytes(CODE, code)
    ram.write_bytes(DATA, prog.data)
    ram.write_bytes(TRAP_PC, J_SELF.to_bytes(4, "little"))
    hart.x[:] = prog.x
    hart.x[0] = 0
    hart.f[:] = prog.f
    hart.mstatus |= 0x6000  # FS = dirty: FP enabled
    hart.frm = prog.frm
    hart.fflags = prog.fflags
    hart.mtvec = TRAP_PC
    hart.pc = CODE
    interp.run(prog.steps() + 1)
    trap = None
    if hart.pc != end:
        trap = f"pc={hart.pc:#x} mcause={hart.mcause} mepc={hart.mepc:#x} mtval={hart.mtval:#x}"
    return Result(
        list(hart.x), list(hart.f), hart.fflags, hart.frm,
        ram.read_bytes(DATA, DATA_SIZE), hart.pc, trap,
    )


class _SpecAdapter:
    """Applies the F-extension rules that QEMU 5.0 (unicorn) lacks; see the module doc."""

    def __init__(self, meta: dict[int, Insn], f0: int, fflags: int) -> None:
        self.meta = meta
        self.f0 = f0
        self.fflags = fflags
        self.pending: Insn | None = None
        self.saved: dict[int, int] = {}
        self.minmax_in: tuple[int, int] | None = None
        self.fused_in: tuple[int, int, int] | None = None

    def hook(self, uc, addr: int, size: int, _user) -> None:
        self.finish(uc)
        ins = self.meta.get(addr)
        if ins is None:
            return
        for r in set(ins.s_in):
            v = uc.reg_read(self.f0 + r)
            if v >> 32 != M32:
                self.saved[r] = v
                uc.reg_write(self.f0 + r, CANON_NAN_S_BOXED)
        if ins.minmax:
            a, b = ins.minmax
            self.minmax_in = (uc.reg_read(self.f0 + a), uc.reg_read(self.f0 + b))
        if ins.fused:
            a, b, c = (uc.reg_read(self.f0 + r) for r in ins.fused)
            self.fused_in = (a, b, c)
        self.pending = ins

    def finish(self, uc) -> None:
        ins = self.pending
        if ins is None:
            return
        for r, v in self.saved.items():
            if r != ins.f_out:
                uc.reg_write(self.f0 + r, v)
        self.saved.clear()
        if self.minmax_in is not None:
            assert ins.f_out is not None
            a, b = self.minmax_in
            self.minmax_in = None
            nan_a, nan_b = _nan_kind(a, ins.s_out), _nan_kind(b, ins.s_out)
            if nan_a == "s" and not nan_b:
                uc.reg_write(self.f0 + ins.f_out, b)
            elif nan_b == "s" and not nan_a:
                uc.reg_write(self.f0 + ins.f_out, a)
        if self.fused_in is not None:
            a, b, c = self.fused_in
            self.fused_in = None
            single = ins.s_out
            kinds = {_special(a, single), _special(b, single)}
            if kinds == {"inf", "zero"} and _nan_kind(c, single) == "q":
                uc.reg_write(self.fflags, uc.reg_read(self.fflags) | 0x10)  # NV
        if ins.s_out:
            assert ins.f_out is not None
            v = uc.reg_read(self.f0 + ins.f_out)
            uc.reg_write(self.f0 + ins.f_out, (v & M32) | BOX)
        self.pending = None


def _special(v: int, single: bool) -> str:
    """'inf', 'zero' or '' for the magnitude of a float's bits."""
    mag = v & 0x7FFF_FFFF if single else v & ((1 << 63) - 1)
    if mag == 0:
        return "zero"
    return "inf" if mag == (0x7F80_0000 if single else 0x7FF << 52) else ""


def _nan_kind(v: int, single: bool) -> str:
    """'s' for a signalling NaN, 'q' for a quiet NaN, '' otherwise."""
    if single:
        exp, frac, quiet = v >> 23 & 0xFF, v & 0x7F_FFFF, 1 << 22
        top = 0xFF
    else:
        exp, frac, quiet = v >> 52 & 0x7FF, v & ((1 << 52) - 1), 1 << 51
        top = 0x7FF
    if exp != top or not frac:
        return ""
    return "q" if frac & quiet else "s"


def run_unicorn(prog: Program, spec_fixes: bool = True) -> Result:
    """Run on unicorn; ``spec_fixes`` applies :class:`_SpecAdapter` (see module doc)."""
    from unicorn import UC_ARCH_RISCV, UC_HOOK_CODE, UC_MODE_RISCV64, Uc, UcError
    from unicorn import riscv_const as R

    code, placed, end = prog.assemble()
    uc = Uc(UC_ARCH_RISCV, UC_MODE_RISCV64)
    uc.mem_map(CODE, RAM_SIZE)
    uc.mem_write(CODE, code)
    uc.mem_write(DATA, prog.data)
    uc.reg_write(R.UC_RISCV_REG_MSTATUS, uc.reg_read(R.UC_RISCV_REG_MSTATUS) | 0x6000)
    for i in range(1, 32):
        uc.reg_write(R.UC_RISCV_REG_X0 + i, prog.x[i])
    for i in range(32):
        uc.reg_write(R.UC_RISCV_REG_F0 + i, prog.f[i])
    uc.reg_write(R.UC_RISCV_REG_FRM, prog.frm)
    uc.reg_write(R.UC_RISCV_REG_FFLAGS, prog.fflags)
    adapter = None
    if spec_fixes:
        meta = {pc: ins for pc, ins in placed if ins.s_in or ins.s_out or ins.minmax or ins.fused}
        if meta:
            adapter = _SpecAdapter(meta, R.UC_RISCV_REG_F0, R.UC_RISCV_REG_FFLAGS)
            uc.hook_add(UC_HOOK_CODE, adapter.hook)
    trap = None
    try:
        uc.emu_start(CODE, end, count=prog.steps() + 1)
    except UcError as e:
        trap = f"UcError {e} at pc={uc.reg_read(R.UC_RISCV_REG_PC):#x}"
    if adapter is not None:
        adapter.finish(uc)
    pc = uc.reg_read(R.UC_RISCV_REG_PC)
    if trap is None and pc != end:
        trap = f"stopped at pc={pc:#x}"
    return Result(
        [0] + [uc.reg_read(R.UC_RISCV_REG_X0 + i) for i in range(1, 32)],
        [uc.reg_read(R.UC_RISCV_REG_F0 + i) for i in range(32)],
        uc.reg_read(R.UC_RISCV_REG_FFLAGS),
        uc.reg_read(R.UC_RISCV_REG_FRM),
        bytes(uc.mem_read(DATA, DATA_SIZE)),
        pc,
        trap,
    )


def compare(a: Result, b: Result) -> list[str]:
    """Differences between pyhv (a) and unicorn (b), as readable lines."""
    out = []
    if a.trap or b.trap:
        out.append(f"trap: pyhv={a.trap} unicorn={b.trap}")
        return out
    for i in range(1, 32):
        if a.x[i] != b.x[i]:
            out.append(f"x{i}: pyhv={a.x[i]:#018x} unicorn={b.x[i]:#018x}")
    for i in range(32):
        if a.f[i] != b.f[i]:
            out.append(f"f{i}: pyhv={a.f[i]:#018x} unicorn={b.f[i]:#018x}")
    if a.fflags != b.fflags:
        out.append(f"fflags: pyhv={a.fflags:#04x} unicorn={b.fflags:#04x}")
    if a.frm != b.frm:
        out.append(f"frm: pyhv={a.frm} unicorn={b.frm}")
    if a.data != b.data:
        offs = [i for i in range(DATA_SIZE) if a.data[i] != b.data[i]]
        lo = offs[0] & ~7
        out.append(
            f"data differs at {len(offs)} bytes from {DATA + offs[0]:#x}: "
            f"pyhv={a.data[lo:lo + 16].hex()} unicorn={b.data[lo:lo + 16].hex()} "
            f"(from {DATA + lo:#x})"
        )
    return out


def check(prog: Program) -> list[str]:
    return compare(run_pyhv(prog), run_unicorn(prog))


def minimize(prog: Program) -> Program:
    """Greedily drop units while pyhv and unicorn still disagree."""
    units = list(prog.units)
    trapped = any(d.startswith("trap:") for d in check(prog))
    changed = True
    while changed:
        changed = False
        for i in range(len(units) - 1, -1, -1):
            trial = units[:i] + units[i + 1:]
            diffs = check(prog.with_units(trial)) if trial else []
            if diffs and (trapped or not diffs[0].startswith("trap:")):
                units = trial
                changed = True
    return prog.with_units(units)


def describe(prog: Program, diffs: list[str] | None = None) -> str:
    _code, placed, end = prog.assemble()
    lines = []
    for pc, ins in placed:
        w = f"{ins.word:08x}" if ins.size == 4 else f"    {ins.word:04x}"
        lines.append(f"  {pc:#x}: {w}  {ins.text}")
    text = " ".join(ins.text for _, ins in placed)
    used_x = sorted({int(m) for m in re.findall(r"\bx(\d+)\b", text)} - {0})
    used_f = sorted({int(m) for m in re.findall(r"\bf(\d+)\b", text)})
    init = [f"x{r}={prog.x[r]:#x}" for r in used_x] + [f"f{r}={prog.f[r]:#018x}" for r in used_f]
    init.append(f"frm={prog.frm} fflags={prog.fflags:#x}")
    lines.append("  initial: " + ", ".join(init))
    if any(t in text for t in ("(x8)", "(x9)", "(x2)", "amo", "lr.", "sc.", "sp)", "s0", "s1")):
        lines.append(f"  data window at {DATA:#x} (x2={SP_VAL:#x} x8={S0_VAL:#x} x9={S1_VAL:#x})")
    if diffs is None:
        diffs = check(prog)
    lines += ["  " + d for d in diffs]
    return "\n".join(lines)


# -- value pools ------------------------------------------------------------------------------

INT_VALUES = [
    0, 1, 2, 3, 7, 0xFF, M64, M64 - 1, 1 << 63, (1 << 63) - 1, (1 << 63) + 1,
    0x8000_0000, 0xFFFF_FFFF_8000_0000, 0x7FFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFE,
    0x1_0000_0000, 0xFFFF_FFFF_0000_0000, 0x0000_0001_FFFF_FFFF, 0x8000, 0xFFFF_FFFF_FFFF_8000,
    0x1F, 0x20, 0x3F, 0x40, 0x41,
]

F32_VALUES = [
    0x0000_0000, 0x8000_0000, 0x7F80_0000, 0xFF80_0000,  # ±0, ±inf
    0x7FC0_0000, 0xFFC0_0000, 0x7FC0_1234,  # qNaN (canonical, negative, payload)
    0x7FA0_0000, 0xFF80_0001, 0x7F80_0001,  # sNaN
    0x0000_0001, 0x007F_FFFF, 0x8000_0001, 0x807F_FFFF,  # subnormals
    0x0080_0000, 0x8080_0000, 0x7F7F_FFFF, 0xFF7F_FFFF,  # min/max normal
    0x3F80_0000, 0xBF80_0000, 0x3EAA_AAAB, 0x4049_0FDB,  # 1, -1, 1/3, pi
    0x3F00_0000, 0xBF00_0000, 0x3FC0_0000, 0x4020_0000, 0xC020_0000,  # .5 -.5 1.5 2.5 -2.5
    0x4F00_0000, 0xCF00_0000, 0x4F80_0000, 0x5F00_0000, 0xDF00_0000, 0x5F80_0000,  # 2^31..
    0x4EFF_FFFF, 0x4F7F_FFFF, 0x5EFF_FFFF, 0xBF7F_FFFF, 0x3380_0000, 0x4B00_0001,
    0x00FF_FFFF, 0x0080_0001, 0x3F7F_FFFF, 0x3F80_0001, 0x1F80_0000, 0x5F7F_FFFF,  # boundaries
]

F64_VALUES = [
    0, 1 << 63, 0x7FF0_0000_0000_0000, 0xFFF0_0000_0000_0000,
    0x7FF8_0000_0000_0000, 0xFFF8_0000_0000_0000, 0x7FF8_0000_0000_1234,
    0x7FF4_0000_0000_0000, 0xFFF0_0000_0000_0001, 0x7FF0_0000_0000_0001,
    1, 0x000F_FFFF_FFFF_FFFF, 0x8000_0000_0000_0001, 0x800F_FFFF_FFFF_FFFF,
    0x0010_0000_0000_0000, 0x8010_0000_0000_0000, 0x7FEF_FFFF_FFFF_FFFF, 0xFFEF_FFFF_FFFF_FFFF,
    0x3FF0_0000_0000_0000, 0xBFF0_0000_0000_0000, 0x3FD5_5555_5555_5555, 0x4009_21FB_5444_2D18,
    0x3FE0_0000_0000_0000, 0xBFE0_0000_0000_0000, 0x3FF8_0000_0000_0000, 0x4004_0000_0000_0000,
    0xC004_0000_0000_0000,
    0x41E0_0000_0000_0000, 0xC1E0_0000_0000_0000, 0x41DF_FFFF_FFC0_0000,  # ±2^31, 2^31-1
    0x41F0_0000_0000_0000, 0x41EF_FFFF_FFE0_0000, 0xC1E0_0000_0020_0000,  # 2^32, .., -2^31-1
    0x43E0_0000_0000_0000, 0xC3E0_0000_0000_0000, 0x43F0_0000_0000_0000, 0x43DF_FFFF_FFFF_FFFF,
    0x47EF_FFFF_E000_0000, 0x47EF_FFFF_F000_0000, 0x47F0_0000_0000_0000,  # float max & beyond
    0x36A0_0000_0000_0000, 0x3690_0000_0000_0000, 0x3810_0000_0000_0000,  # float subnormal edge
    0x380F_FFFF_F000_0000, 0x3FF0_0000_1000_0000, 0x3FF0_0000_1000_0001,  # rounding ties
    0x3FF0_0000_3000_0000, 0xBFF0_0000_1000_0000,
    0x001F_FFFF_FFFF_FFFF, 0x0010_0000_0000_0001, 0x3FEF_FFFF_FFFF_FFFF,  # boundaries
    0x3FF0_0000_0000_0001, 0x1FF0 << 48, 0x5FEF_FFFF_FFFF_FFFF,
]


def rand_int(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.45:
        return rng.choice(INT_VALUES)
    if r < 0.6:
        return rng.randint(-20, 20) & M64
    if r < 0.75:
        v = rng.getrandbits(32)
        return (v ^ 0x8000_0000) - 0x8000_0000 & M64
    return rng.getrandbits(64)


def rand_f32(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.55:
        return rng.choice(F32_VALUES)
    if r < 0.8:  # moderate exponents: arithmetic stays finite, results are inexact
        return rng.getrandbits(1) << 31 | rng.randint(100, 154) << 23 | rng.getrandbits(23)
    return rng.getrandbits(32)


def rand_f64(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.55:
        return rng.choice(F64_VALUES)
    if r < 0.65:  # doubles exactly representable as singles, or close to it
        s = rand_f32(rng)
        return _f32_to_f64_bits(s) ^ (rng.getrandbits(3) if rng.random() < 0.5 else 0)
    if r < 0.85:
        return rng.getrandbits(1) << 63 | rng.randint(980, 1070) << 52 | rng.getrandbits(52)
    return rng.getrandbits(64)


def _f32_to_f64_bits(v: int) -> int:
    import struct

    if (v >> 23 & 0xFF) == 0xFF and v & 0x7F_FFFF:  # keep NaNs NaN (struct would quiet them)
        return (v >> 31) << 63 | 0x7FF << 52 | (v & 0x7F_FFFF) << 29
    return struct.unpack("<Q", struct.pack("<d", struct.unpack("<f", v.to_bytes(4, "little"))[0]))[
        0
    ]


# -- unit generators --------------------------------------------------------------------------

ALU_RR = {  # name: (opcode, funct3, funct7)
    "add": (0x33, 0, 0), "sub": (0x33, 0, 0x20), "sll": (0x33, 1, 0), "slt": (0x33, 2, 0),
    "sltu": (0x33, 3, 0), "xor": (0x33, 4, 0), "srl": (0x33, 5, 0), "sra": (0x33, 5, 0x20),
    "or": (0x33, 6, 0), "and": (0x33, 7, 0),
    "addw": (0x3B, 0, 0), "subw": (0x3B, 0, 0x20), "sllw": (0x3B, 1, 0),
    "srlw": (0x3B, 5, 0), "sraw": (0x3B, 5, 0x20),
}
MUL_DIV = {
    "mul": (0x33, 0, 1), "mulh": (0x33, 1, 1), "mulhsu": (0x33, 2, 1), "mulhu": (0x33, 3, 1),
    "div": (0x33, 4, 1), "divu": (0x33, 5, 1), "rem": (0x33, 6, 1), "remu": (0x33, 7, 1),
    "mulw": (0x3B, 0, 1), "divw": (0x3B, 4, 1), "divuw": (0x3B, 5, 1), "remw": (0x3B, 6, 1),
    "remuw": (0x3B, 7, 1),
}
ALU_IMM = {"addi": (0x13, 0), "slti": (0x13, 2), "sltiu": (0x13, 3), "xori": (0x13, 4),
           "ori": (0x13, 6), "andi": (0x13, 7), "addiw": (0x1B, 0)}
SHIFT_IMM = {  # name: (opcode, funct3, high bits of imm[11:0], shamt bits)
    "slli": (0x13, 1, 0, 6), "srli": (0x13, 5, 0, 6), "srai": (0x13, 5, 0x400, 6),
    "slliw": (0x1B, 1, 0, 5), "srliw": (0x1B, 5, 0, 5), "sraiw": (0x1B, 5, 0x400, 5),
}
BRANCHES = {"beq": 0, "bne": 1, "blt": 4, "bge": 5, "bltu": 6, "bgeu": 7}
LOADS = {"lb": (0, 1), "lh": (1, 2), "lw": (2, 4), "ld": (3, 8), "lbu": (4, 1), "lhu": (5, 2),
         "lwu": (6, 4)}
STORES = {"sb": (0, 1), "sh": (1, 2), "sw": (2, 4), "sd": (3, 8)}
AQRL = ("", ".rl", ".aq", ".aqrl")
AMOS = {"amoswap": 1, "amoadd": 0, "amoxor": 4, "amoand": 12, "amoor": 8, "amomin": 16,
        "amomax": 20, "amominu": 24, "amomaxu": 28}
RMS = [0, 1, 2, 3, 4, 7, 7]  # static modes and dynamic (weighted)
RM_NAME = {0: "rne", 1: "rtz", 2: "rdn", 3: "rup", 4: "rmm", 7: "dyn"}


def I(word: int, text: str, **kw) -> Insn:  # noqa: E743
    return Insn(word, 4, text, **kw)


def C(word: int, text: str, **kw) -> Insn:
    return Insn(word, 2, text, **kw)


def _imm12(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.3:
        return rng.choice([0, 1, -1, 2047, -2048, 0x7F0, -2, 31, 32, 63, 64])
    if r < 0.6:
        return rng.randint(-16, 16)
    return rng.randint(-2048, 2047)


INT_FMTS = ("w", "wu", "l", "lu")
_FP_FUNCT5 = {"fadd": 0, "fsub": 1, "fmul": 2, "fdiv": 3, "fsqrt": 0x0B}
_FP_FUNCT3 = {"fsgnj": (4, 0), "fsgnjn": (4, 1), "fsgnjx": (4, 2), "fmin": (5, 0),
              "fmax": (5, 1), "feq": (0x14, 2), "flt": (0x14, 1), "fle": (0x14, 0),
              "fclass": (0x1C, 1)}
_FP_FUSED = {"fmadd": 0x43, "fmsub": 0x47, "fnmsub": 0x4B, "fnmadd": 0x4F}


def fp_insn(mn: str, rd: int, rs1: int, rs2: int = 0, rs3: int = 0, rm: int = 0) -> Insn:
    """Encode an F/D computational instruction by mnemonic (``fadd.s``, ``fcvt.wu.d``,
    ``fcvt.d.lu``, ``fmv.x.w``, ``fnmadd.d`` ...), with the metadata the unicorn adapter
    needs. ``rs1`` is an x register for fcvt.fmt.int and fmv.fmt.x, ``rd`` an x register
    for compares, fclass, fcvt.int.fmt and fmv.x.fmt; ``rm`` is ignored where funct3
    selects the operation."""
    parts = mn.split(".")
    base, sfx = parts[0], parts[-1]
    rmt = f", {RM_NAME[rm]}"
    if base == "fcvt":
        dst, src = parts[1], parts[2]
        if dst in INT_FMTS:  # fcvt.int.fmt: f -> x
            fmt = 0 if src == "s" else 1
            word = enc_r(0x53, rd, rm, rs1, INT_FMTS.index(dst), 0x18 << 2 | fmt)
            return I(word, f"{mn} x{rd}, f{rs1}{rmt}", s_in=(rs1,) if src == "s" else ())
        if src in INT_FMTS:  # fcvt.fmt.int: x -> f
            fmt = 0 if dst == "s" else 1
            word = enc_r(0x53, rd, rm, rs1, INT_FMTS.index(src), 0x1A << 2 | fmt)
            return I(word, f"{mn} f{rd}, x{rs1}{rmt}", f_out=rd, s_out=dst == "s")
        if (dst, src) == ("s", "d"):
            return I(enc_r(0x53, rd, rm, rs1, 1, 0x20), f"{mn} f{rd}, f{rs1}{rmt}", f_out=rd,
                     s_out=True)
        assert (dst, src) == ("d", "s"), mn
        return I(enc_r(0x53, rd, rm, rs1, 0, 0x21), f"{mn} f{rd}, f{rs1}{rmt}", s_in=(rs1,),
                 f_out=rd)
    if base == "fmv":
        if parts[1] == "x":  # fmv.x.w / fmv.x.d: raw move, no NaN-box check
            fmt = 0 if sfx == "w" else 1
            return I(enc_r(0x53, rd, 0, rs1, 0, 0x1C << 2 | fmt), f"{mn} x{rd}, f{rs1}")
        fmt = 0 if parts[1] == "w" else 1
        return I(enc_r(0x53, rd, 0, rs1, 0, 0x1E << 2 | fmt), f"{mn} f{rd}, x{rs1}", f_out=rd,
                 s_out=fmt == 0)
    fmt = 0 if sfx == "s" else 1
    single = fmt == 0

    def sin(*regs: int) -> tuple[int, ...]:
        return regs if single else ()

    if base in _FP_FUSED:
        word = enc_r4(_FP_FUSED[base], rd, rm, rs1, rs2, rs3, fmt)
        return I(word, f"{mn} f{rd}, f{rs1}, f{rs2}, f{rs3}{rmt}", s_in=sin(rs1, rs2, rs3),
                 f_out=rd, s_out=single, fused=(rs1, rs2, rs3))
    if base == "fsqrt":
        return I(enc_r(0x53, rd, rm, rs1, 0, 0x0B << 2 | fmt), f"{mn} f{rd}, f{rs1}{rmt}",
                 s_in=sin(rs1), f_out=rd, s_out=single)
    if base in _FP_FUNCT5:
        return I(enc_r(0x53, rd, rm, rs1, rs2, _FP_FUNCT5[base] << 2 | fmt),
                 f"{mn} f{rd}, f{rs1}, f{rs2}{rmt}", s_in=sin(rs1, rs2), f_out=rd,
                 s_out=single)
    f5, f3 = _FP_FUNCT3[base]
    if base == "fclass":
        return I(enc_r(0x53, rd, f3, rs1, 0, f5 << 2 | fmt), f"{mn} x{rd}, f{rs1}",
                 s_in=sin(rs1))
    word = enc_r(0x53, rd, f3, rs1, rs2, f5 << 2 | fmt)
    if base in ("feq", "flt", "fle"):
        return I(word, f"{mn} x{rd}, f{rs1}, f{rs2}", s_in=sin(rs1, rs2))
    return I(word, f"{mn} f{rd}, f{rs1}, f{rs2}", s_in=sin(rs1, rs2), f_out=rd, s_out=single,
             minmax=(rs1, rs2) if base in ("fmin", "fmax") else None)


def flags_capture(rd: int) -> Insn:
    """csrrw rd, fflags, x0: read the accrued flags into rd and clear them."""
    return I(enc_i(0x73, rd, 1, 0, 1), f"csrrw x{rd}, fflags, x0")


class Gen:
    """Generates one random program; tracks which f registers hold singles or doubles."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.fkind: list[str] = []

    # register choice
    def rd(self) -> int:
        return self.rng.choice(WRITABLE) if self.rng.random() < 0.9 else 0

    def rdnz(self) -> int:
        return self.rng.choice(WRITABLE_NZ)

    def rs(self) -> int:
        return self.rng.randrange(32)

    def fr(self, kind: str) -> int:
        rng = self.rng
        if rng.random() < 0.85:
            match = [i for i, k in enumerate(self.fkind) if k == kind]
            if match:
                return rng.choice(match)
        return rng.randrange(32)

    def fset(self, r: int, kind: str) -> None:
        self.fkind[r] = kind

    # -- integer -------------------------------------------------------------------------------

    def alu_rr(self) -> Unit:
        name = self.rng.choice(list(ALU_RR))
        op, f3, f7 = ALU_RR[name]
        rd, a, b = self.rd(), self.rs(), self.rs()
        return Unit([I(enc_r(op, rd, f3, a, b, f7), f"{name} x{rd}, x{a}, x{b}")])

    def bitmanip(self) -> Unit:
        """Zba, Zbb, Zbs and Zicond: encoded from their description (isa/spec.py; the
        encodings themselves are checked against the assembler in tests/unit/test_spec.py),
        operands often the edge values bit operations care about."""
        from pyhv.isa import spec

        rng = self.rng
        i = rng.choice([i for i in spec.ALU.values() if i.ext in spec.EXTENSIONS])
        rd, a, b = self.rd(), self.rs(), self.rs()
        if i.form == "R":
            word = enc_r(i.opcode, rd, i.funct3, a, b, i.fixed)
            return Unit([I(word, f"{i.name} x{rd}, x{a}, x{b}")])
        if i.form == "U":
            return Unit([I(enc_i(i.opcode, rd, i.funct3, a, i.fixed), f"{i.name} x{rd}, x{a}")])
        bits = 6 if i.form == "SH6" else 5
        sh = rng.choice([0, 1, (1 << bits) - 1, rng.randrange(1 << bits)])
        word = enc_i(i.opcode, rd, i.funct3, a, (i.fixed << bits) | sh)
        return Unit([I(word, f"{i.name} x{rd}, x{a}, {sh}")])

    def muldiv(self) -> Unit:
        name = self.rng.choice(list(MUL_DIV))
        op, f3, f7 = MUL_DIV[name]
        rd, a, b = self.rd(), self.rs(), self.rs()
        return Unit([I(enc_r(op, rd, f3, a, b, f7), f"{name} x{rd}, x{a}, x{b}")])

    def alu_imm(self) -> Unit:
        rng = self.rng
        if rng.random() < 0.6:
            name = rng.choice(list(ALU_IMM))
            op, f3 = ALU_IMM[name]
            rd, a, imm = self.rd(), self.rs(), _imm12(rng)
            return Unit([I(enc_i(op, rd, f3, a, imm), f"{name} x{rd}, x{a}, {imm}")])
        name = rng.choice(list(SHIFT_IMM))
        op, f3, hi, bits = SHIFT_IMM[name]
        sh = rng.choice([0, 1, (1 << bits) - 1, rng.randrange(1 << bits)])
        rd, a = self.rd(), self.rs()
        return Unit([I(enc_i(op, rd, f3, a, hi | sh), f"{name} x{rd}, x{a}, {sh}")])

    def upper(self) -> Unit:
        rng = self.rng
        imm = rng.choice([0, 1, 0x80000, 0xFFFFF, 0x7FFFF, rng.getrandbits(20)])
        rd = self.rd()
        if rng.random() < 0.5:
            return Unit([I(enc_u(0x37, rd, imm), f"lui x{rd}, {imm:#x}")])
        return Unit([I(enc_u(0x17, rd, imm), f"auipc x{rd}, {imm:#x}")])

    def branch(self) -> Unit:
        rng = self.rng
        skip = rng.randint(0, 3)
        kind = rng.random()
        if kind < 0.5:
            name = rng.choice(list(BRANCHES))
            a = self.rs()
            b = a if rng.random() < 0.2 else self.rs()
            f3 = BRANCHES[name]

            def build(pc: int, _u: int, t: int, name=name, a=a, b=b, f3=f3) -> Insn:
                return I(enc_b(f3, a, b, t - pc), f"{name} x{a}, x{b}, {t - pc:+d}")

            return Unit([Fixup(4, build)], skip)
        if kind < 0.6:
            rd = self.rd()

            def build_j(pc: int, _u: int, t: int, rd=rd) -> Insn:
                return I(enc_j(rd, t - pc), f"jal x{rd}, {t - pc:+d}")

            return Unit([Fixup(4, build_j)], skip)
        if kind < 0.7:  # auipc t, 0 ; jalr rd, off(t)
            t_reg = self.rdnz()
            rd = self.rd()

            def build_jalr(pc: int, u: int, t: int, rd=rd, tr=t_reg) -> Insn:
                return I(enc_i(0x67, rd, 0, tr, t - u), f"jalr x{rd}, {t - u}(x{tr})")

            return Unit([I(enc_u(0x17, t_reg, 0), f"auipc x{t_reg}, 0"), Fixup(4, build_jalr)],
                        skip)
        if kind < 0.78:  # auipc t, 0 ; addi t, t, off ; c.jr t / c.jalr t
            t_reg = self.rdnz()
            link = rng.random() < 0.5

            def build_addi(pc: int, u: int, t: int, tr=t_reg) -> Insn:
                return I(enc_i(0x13, tr, 0, tr, t - u), f"addi x{tr}, x{tr}, {t - u}")

            last = (C(0x9002 | t_reg << 7, f"c.jalr x{t_reg}") if link
                    else C(0x8002 | t_reg << 7, f"c.jr x{t_reg}"))
            return Unit([I(enc_u(0x17, t_reg, 0), f"auipc x{t_reg}, 0"), Fixup(4, build_addi),
                         last], skip)
        if kind < 0.85:

            def build_cj(pc: int, _u: int, t: int) -> Insn:
                return C(c_j(t - pc), f"c.j {t - pc:+d}")

            return Unit([Fixup(2, build_cj)], skip)
        r = rng.choice(CREG)
        nz = rng.random() < 0.5

        def build_cb(pc: int, _u: int, t: int, r=r, nz=nz) -> Insn:
            return C(c_bz(7 if nz else 6, r, t - pc),
                     f"c.{'bnez' if nz else 'beqz'} x{r}, {t - pc:+d}")

        return Unit([Fixup(2, build_cb)], skip)

    def misc(self) -> Unit:
        k = self.rng.randrange(4)
        if k == 0:
            return Unit([I(0x0FF0_000F, "fence iorw, iorw")])
        if k == 1:
            return Unit([I(0x0000_100F, "fence.i")])
        if k == 2:
            return Unit([I(0x0330_000F, "fence rw, rw")])
        return Unit([I(0x0000_0013, "addi x0, x0, 0")])

    # -- memory --------------------------------------------------------------------------------

    def _offset(self, width: int, lo: int = -2048, hi: int = 2047) -> int:
        """An offset from x8 (= window + 2048) keeping the access inside the window."""
        hi = min(hi, 2048 - width)
        if self.rng.random() < 0.5:
            return self.rng.randrange(lo // width, hi // width + 1) * width
        return self.rng.randint(lo, hi)

    def load_store(self) -> Unit:
        rng = self.rng
        store = rng.random() < 0.45
        name = rng.choice(list(STORES if store else LOADS))
        f3, width = (STORES if store else LOADS)[name]
        if rng.random() < 0.7:
            base, pre = 8, []
            off = self._offset(width)
        else:  # computed base: addi t, x9, a ; access off(t)
            base = self.rdnz()
            a = rng.randint(0, 2047)
            pre = [I(enc_i(0x13, base, 0, 9, a), f"addi x{base}, x9, {a}")]
            off = rng.randint(max(-2048, -a), min(2047, DATA_SIZE - width - a))
        if store:
            src = self.rs()
            ins = I(enc_s(0x23, f3, base, src, off), f"{name} x{src}, {off}(x{base})")
        else:
            rd = self.rd()
            ins = I(enc_i(0x03, rd, f3, base, off), f"{name} x{rd}, {off}(x{base})")
        return Unit([*pre, ins])

    def amo(self) -> Unit:
        rng = self.rng
        wide = rng.random() < 0.5
        width = 8 if wide else 4
        sfx = "d" if wide else "w"
        f3 = 3 if wide else 2
        t = self.rdnz()
        off = self._offset(width, -2048, 2047) // width * width
        pre = I(enc_i(0x13, t, 0, 8, off), f"addi x{t}, x8, {off}")
        aqrl = rng.randrange(4)
        if rng.random() < 0.25:  # lr/sc pair (nothing that touches memory in between)
            rd1 = rng.choice([r for r in WRITABLE_NZ if r != t])
            lr = I(enc_r(0x2F, rd1, f3, t, 0, 2 << 2 | aqrl),
                   f"lr.{sfx}{AQRL[aqrl]} x{rd1}, (x{t})")
            items: list[Insn | Fixup] = [pre, lr]
            base = t
            if rng.random() < 0.3:  # sc to a different address: fails
                base = rng.choice([r for r in WRITABLE_NZ if r != rd1])
                off2 = off + width if off + width <= 2048 - width else off - width
                items.append(I(enc_i(0x13, base, 0, 8, off2), f"addi x{base}, x8, {off2}"))
            rd2, src = self.rd(), self.rs()
            items.append(I(enc_r(0x2F, rd2, f3, base, src, 3 << 2 | aqrl),
                           f"sc.{sfx}{AQRL[aqrl]} x{rd2}, x{src}, (x{base})"))
            return Unit(items)
        if rng.random() < 0.1:  # a lone sc fails (no reservation)
            rd2, src = self.rd(), self.rs()
            return Unit([pre, I(enc_r(0x2F, rd2, f3, t, src, 3 << 2 | aqrl),
                                f"sc.{sfx}{AQRL[aqrl]} x{rd2}, x{src}, (x{t})")])
        name = rng.choice(list(AMOS))
        rd, src = self.rd(), self.rs()
        word = enc_r(0x2F, rd, f3, t, src, AMOS[name] << 2 | aqrl)
        return Unit([pre, I(word, f"{name}.{sfx}{AQRL[aqrl]} x{rd}, x{src}, (x{t})")])

    # -- compressed ----------------------------------------------------------------------------

    def compressed(self) -> Unit:
        rng = self.rng
        k = rng.randrange(25)
        imm6 = rng.choice([1, -1, 31, -32, rng.randint(-32, 31)]) or 1
        if k == 0:
            rd = self.rdnz()
            return Unit([C(c_ci(0, rd, imm6, 1), f"c.addi x{rd}, {imm6}")])
        if k == 1:
            rd = self.rdnz()
            return Unit([C(c_ci(2, rd, imm6, 1), f"c.li x{rd}, {imm6}")])
        if k == 2:
            rd = self.rdnz()
            return Unit([C(c_ci(3, rd, imm6, 1), f"c.lui x{rd}, {imm6 & 0xFFFFF:#x}")])
        if k == 3:
            rd, rs = self.rdnz(), rng.randrange(1, 32)
            return Unit([C(c_cr(8, rd, rs), f"c.mv x{rd}, x{rs}")])
        if k == 4:
            rd, rs = self.rdnz(), rng.randrange(1, 32)
            return Unit([C(c_cr(9, rd, rs), f"c.add x{rd}, x{rs}")])
        if k in (5, 6, 7, 8, 9, 10):
            bit12, f2, name = [(0, 0, "sub"), (0, 1, "xor"), (0, 2, "or"), (0, 3, "and"),
                               (1, 0, "subw"), (1, 1, "addw")][k - 5]
            rd, rs = rng.choice(CREG_RD), rng.choice(CREG)
            return Unit([C(c_ca(bit12, f2, rd, rs), f"c.{name} x{rd}, x{rs}")])
        if k == 11:
            rd, sh = self.rdnz(), rng.randint(1, 63)
            return Unit([C(c_ci(0, rd, sh, 2), f"c.slli x{rd}, {sh}")])
        if k in (12, 13):
            rd, sh = rng.choice(CREG_RD), rng.randint(1, 63)
            name = ("srli", "srai")[k - 12]
            return Unit([C(c_cb_shift(k - 12, rd, sh), f"c.{name} x{rd}, {sh}")])
        if k == 14:
            rd = rng.choice(CREG_RD)
            return Unit([C(c_cb_shift(2, rd, imm6 & 0x3F), f"c.andi x{rd}, {imm6}")])
        if k == 15:
            rd = self.rdnz()
            return Unit([C(c_ci(1, rd, imm6 & 0x3F, 1), f"c.addiw x{rd}, {imm6}")])
        if k == 16:
            rd, u = rng.choice(CREG_RD), rng.randrange(1, 256) * 4
            return Unit([C(c_addi4spn(rd, u), f"c.addi4spn x{rd}, sp, {u}")])
        if k in (17, 18):  # c.lw/c.sw/c.ld/c.sd off(x8|x9)
            base = rng.choice([8, 9])
            wide = rng.random() < 0.5
            u = rng.randrange(32) * 8 if wide else rng.randrange(32) * 4
            if k == 17:
                rd = rng.choice(CREG_RD)
                word = c_cl_d(3, rd, base, u) if wide else c_cl_w(2, rd, base, u)
                return Unit([C(word, f"c.l{'d' if wide else 'w'} x{rd}, {u}(x{base})")])
            src = rng.choice(CREG)
            word = c_cl_d(7, src, base, u) if wide else c_cl_w(6, src, base, u)
            return Unit([C(word, f"c.s{'d' if wide else 'w'} x{src}, {u}(x{base})")])
        if k in (19, 20):  # sp-relative
            wide = rng.random() < 0.5
            u = rng.randrange(64) * 8 if wide else rng.randrange(64) * 4
            if k == 19:
                rd = self.rdnz()
                word = c_ldsp(3, rd, u) if wide else c_lwsp(rd, u)
                return Unit([C(word, f"c.l{'d' if wide else 'w'}sp x{rd}, {u}(sp)")])
            src = self.rs()
            word = c_sdsp(7, src, u) if wide else c_swsp(src, u)
            return Unit([C(word, f"c.s{'d' if wide else 'w'}sp x{src}, {u}(sp)")])
        if k == 21:  # c.fld / c.fsd
            base = rng.choice([8, 9])
            u = rng.randrange(32) * 8
            r = rng.choice(CREG)
            if rng.random() < 0.5:
                self.fset(r, "d")
                return Unit([C(c_cl_d(1, r, base, u), f"c.fld f{r}, {u}(x{base})", f_out=r)])
            return Unit([C(c_cl_d(5, r, base, u), f"c.fsd f{r}, {u}(x{base})")])
        if k == 22:  # c.fldsp / c.fsdsp
            u = rng.randrange(64) * 8
            r = rng.randrange(32)
            if rng.random() < 0.5:
                self.fset(r, "d")
                return Unit([C(c_ldsp(1, r, u), f"c.fldsp f{r}, {u}(sp)", f_out=r)])
            return Unit([C(c_sdsp(5, r, u), f"c.fsdsp f{r}, {u}(sp)")])
        if k == 23:  # c.addi16sp n; an sp-relative access; c.addi16sp -n (sp stays in the window)
            n = rng.choice([-496, 496, 16, -16, rng.randrange(-31, 32) * 16 or 16])
            u = rng.randrange(64) * 8
            if rng.random() < 0.5:
                rd = self.rdnz()
                mid = C(c_ldsp(3, rd, u), f"c.ldsp x{rd}, {u}(sp)")
            else:
                src = self.rs()
                mid = C(c_sdsp(7, src, u), f"c.sdsp x{src}, {u}(sp)")
            return Unit([C(c_addi16sp(n), f"c.addi16sp sp, {n}"), mid,
                         C(c_addi16sp(-n), f"c.addi16sp sp, {-n}")])
        return Unit([C(0x0001, "c.nop")])

    # -- floating point ------------------------------------------------------------------------

    def fp(self) -> Unit:
        """One F/D instruction, sometimes followed by ``csrrw xN, fflags, x0`` so that the
        flags it raised are compared on their own rather than accumulated."""
        unit = self._fp()
        if self.rng.random() < 0.35:
            unit.items.append(flags_capture(self.rdnz()))
        return unit

    def _fp(self) -> Unit:
        rng = self.rng
        k = rng.random()
        sfx = rng.choice("sd")
        single = sfx == "s"
        rm = rng.choice(RMS)
        fr = self.fr
        if k < 0.87:
            if k < 0.25:
                mn = rng.choice(["fadd", "fsub", "fmul", "fdiv"])
                srcs = (fr(sfx), fr(sfx))
            elif k < 0.30:
                mn, srcs = "fsqrt", (fr(sfx),)
            elif k < 0.42:
                mn = rng.choice(["fmadd", "fmsub", "fnmsub", "fnmadd"])
                srcs = (fr(sfx), fr(sfx), fr(sfx))
            elif k < 0.50:
                mn = rng.choice(["fsgnj", "fsgnjn", "fsgnjx", "fmin", "fmax"])
                srcs = (fr(sfx), fr(sfx))
            elif k < 0.57:
                mn = rng.choice(["feq", "flt", "fle", "fclass"])
                srcs = (fr(sfx),) if mn == "fclass" else (fr(sfx), fr(sfx))
            elif k < 0.67:
                mn, srcs = f"fcvt.{rng.choice(INT_FMTS)}", (fr(sfx),)
            elif k < 0.75:
                mn = f"fcvt.{sfx}.{rng.choice(INT_FMTS)}"
                srcs = (self.rs(),)
            elif k < 0.81:
                mn = "fcvt.s.d" if single else "fcvt.d.s"
                srcs = (fr("d" if single else "s"),)
            elif rng.random() < 0.5:
                mn, srcs = ("fmv.x.w" if single else "fmv.x.d"), (fr(sfx),)
            else:
                mn, srcs = ("fmv.w.x" if single else "fmv.d.x"), (self.rs(),)
            if not mn.startswith(("fcvt.s.", "fcvt.d.", "fmv.")):
                mn = f"{mn}.{sfx}"
            ins = fp_insn(mn, rng.randrange(32), *srcs, rm=rm)
            if ins.f_out is None:  # integer destination: pick a writable x register
                ins = fp_insn(mn, self.rd(), *srcs, rm=rm)
            else:
                self.fset(ins.f_out, "s" if ins.s_out else "d")
            return Unit([ins])
        if k < 0.95:  # flw/fld/fsw/fsd off(x8)
            width = 4 if single else 8
            off = self._offset(width)
            f3 = 2 if single else 3
            if rng.random() < 0.5:
                rd = rng.randrange(32)
                self.fset(rd, sfx)
                nm = "flw" if single else "fld"
                return Unit([I(enc_i(0x07, rd, f3, 8, off), f"{nm} f{rd}, {off}(x8)",
                               f_out=rd, s_out=single)])
            src = self.fr(sfx)
            nm = "fsw" if single else "fsd"
            return Unit([I(enc_s(0x27, f3, 8, src, off), f"{nm} f{src}, {off}(x8)")])
        # fflags / frm / fcsr access (frm stays a valid rounding mode)
        rd = self.rd()
        c = rng.randrange(7)
        if c == 0:
            csr = rng.choice([1, 2, 3])
            name = ("fflags", "frm", "fcsr")[csr - 1]
            return Unit([I(enc_i(0x73, rd, 2, 0, csr), f"csrrs x{rd}, {name}, x0")])
        if c == 1:
            v = rng.randint(0, 4)
            return Unit([I(enc_i(0x73, rd, 5, v, 2), f"csrrwi x{rd}, frm, {v}")])
        if c == 2:
            v = rng.randrange(32)
            return Unit([I(enc_i(0x73, rd, 7, v, 2), f"csrrci x{rd}, frm, {v}")])
        if c == 3:
            v, f3 = rng.randrange(32), rng.choice([5, 6, 7])
            return Unit([I(enc_i(0x73, rd, f3, v, 1), f"csrr{'wsc'[f3 - 5]}i x{rd}, fflags, {v}")])
        if c == 4:
            a, f3 = self.rs(), rng.choice([1, 2, 3])
            return Unit([I(enc_i(0x73, rd, f3, a, 1), f"csrr{'wsc'[f3 - 1]} x{rd}, fflags, x{a}")])
        if c == 5:
            v = rng.randrange(32)
            return Unit([I(enc_i(0x73, rd, 5, v, 3), f"csrrwi x{rd}, fcsr, {v}")])
        return Unit([I(enc_i(0x73, rd, 2, 0, 3), f"csrrs x{rd}, fcsr, x0")])


CATEGORIES: dict[str, dict[str, float]] = {
    "int": {"alu_rr": 3, "alu_imm": 3, "upper": 1, "muldiv": 2, "branch": 1.5, "misc": 0.3},
    "muldiv": {"muldiv": 6, "alu_imm": 1, "alu_rr": 1},
    "mem": {"load_store": 5, "amo": 3, "alu_rr": 1, "alu_imm": 1, "branch": 0.5},
    "rvc": {"compressed": 6, "alu_imm": 1, "branch": 1},
    "fp": {"fp": 8, "load_store": 0.5, "alu_imm": 0.5},
    "all": {"alu_rr": 2, "alu_imm": 2, "upper": 0.5, "muldiv": 1.5, "branch": 1,
            "load_store": 2, "amo": 1, "compressed": 2, "fp": 4, "misc": 0.2},
}


# Categories the engines are compared on among themselves only: unicorn (QEMU 5.0) has
# no bit-manipulation extensions.
ENGINE_CATEGORIES: dict[str, dict[str, float]] = {
    "bitmanip": {"bitmanip": 6, "alu_rr": 1, "alu_imm": 1, "branch": 0.5},
}


def generate(rng: random.Random, category: str = "all") -> Program:
    """A random program of 5-40 instructions drawn from ``category``."""
    weights = CATEGORIES.get(category) or ENGINE_CATEGORIES[category]
    gen = Gen(rng)
    x = [0] + [rand_int(rng) for _ in range(31)]
    for r, v in RESERVED.items():
        x[r] = v
    f = []
    for _ in range(32):
        r = rng.random()
        if r < 0.45:
            f.append(BOX | rand_f32(rng))
            gen.fkind.append("s")
        elif r < 0.9:
            f.append(rand_f64(rng))
            gen.fkind.append("d")
        else:  # a single that is not (properly) NaN-boxed
            hi = rng.choice([0, 0xFFFF_FFFE, 0x7FFF_FFFF, rng.getrandbits(32)])
            f.append(hi << 32 | rand_f32(rng))
            gen.fkind.append("u")
    # The data window comes from one seed (cheap under hypothesis, where every draw counts).
    local = random.Random(rng.getrandbits(32))
    data = bytearray(local.randbytes(DATA_SIZE))
    for _ in range(48):  # interesting values at aligned places in the window
        if local.random() < 0.5:
            off = local.randrange(DATA_SIZE // 8) * 8
            v = rand_f64(local) if local.random() < 0.5 else rand_int(local)
            data[off:off + 8] = v.to_bytes(8, "little")
        else:
            off = local.randrange(DATA_SIZE // 4) * 4
            data[off:off + 4] = rand_f32(local).to_bytes(4, "little")
    target = rng.randint(5, 40)
    units: list[Unit] = []
    names, w = list(weights), list(weights.values())
    n = 0
    while n < target:
        u = getattr(gen, rng.choices(names, w)[0])()
        units.append(u)
        n += len(u.items)
    return Program(units, x, f, rng.randint(0, 4), rng.randrange(32), bytes(data))


TALLY = {"programs": 0, "instructions": 0}


def record(prog: Program) -> None:
    TALLY["programs"] += 1
    TALLY["instructions"] += prog.n_insns()


def run_and_check(prog: Program) -> None:
    """Assert pyhv and unicorn agree on ``prog``; on failure report a minimised program."""
    record(prog)
    diffs = check(prog)
    if diffs:
        small = minimize(prog)
        raise AssertionError(
            "pyhv and unicorn disagree.\nMinimised reproducer:\n" + describe(small)
            + "\nOriginal program:\n" + describe(prog, diffs)
        )


@pytest.fixture(scope="session")
def harness():
    """This module; prints how many programs were compared when the session ends."""
    pytest.importorskip("unicorn")
    yield sys.modules[__name__]
    print(
        f"\n[differential] compared {TALLY['programs']} programs "
        f"({TALLY['instructions']} instructions) between pyhv and unicorn"
    )
