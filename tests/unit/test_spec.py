"""The one description of the integer instructions (pyhv.isa.spec): encodings against the
GNU assembler, semantics against known answers from the specifications, and every
engine's rendering of them against the interpreter's."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pyhv.cpu.engines import jit_unavailable_reason
from pyhv.isa import spec
from pyhv.isa.decoder import decode

M64 = (1 << 64) - 1
AS = shutil.which("riscv64-unknown-elf-as")
OBJDUMP = shutil.which("riscv64-unknown-elf-objdump")


def _operands(i: spec.Insn) -> str:
    if i.opcode in (spec.LOAD, spec.JALR):
        return "x5, -7(x6)"
    return {"R": "x5, x6, x7", "B": "x6, x7, .+16", "U": "x5, x6", "S": "x7, -7(x6)",
            "UP": "x5, 0x12345", "J": "x5, .+16", "AMO": "x5, x7, (x6)",
            "LR": "x5, (x6)"}.get(i.form) or (
        "x5, x6, 13" if i.form in ("SH5", "SH6") else "x5, x6, -7")


@pytest.mark.skipif(AS is None or OBJDUMP is None, reason="riscv64-unknown-elf binutils missing")
def _assembled(tmp_path: Path, lines: list[str], march: str) -> list[int]:
    """The 32-bit words GNU as makes of ``lines`` (one instruction each)."""
    (tmp_path / "t.s").write_text("\n".join(lines) + "\n")
    subprocess.run([AS, f"-march={march}", "-o", str(tmp_path / "t.o"), str(tmp_path / "t.s")],
                   check=True, capture_output=True)
    out = subprocess.run([OBJDUMP, "-d", str(tmp_path / "t.o")], check=True,
                         capture_output=True, text=True).stdout
    return [int(m, 16) for m in re.findall(r"^\s+[0-9a-f]+:\s+([0-9a-f]{8})\s", out, re.M)]


def test_encodings_are_the_assemblers(tmp_path: Path) -> None:
    """Every described instruction the assembler knows (binutils 2.40: all but Zicond)
    assembles to a word that decodes to it, with its operands."""
    known = [i for i in spec.INSNS.values() if i.ext != "Zicond"]
    words = _assembled(tmp_path, [f"{i.name} {_operands(i)}" for i in known],
                       "rv64gc_zba_zbb_zbs")
    assert len(words) == len(known)
    for i, w in zip(known, words, strict=True):
        d = decode(w)
        assert d.name == i.name, f"{i.name}: {w:#010x} decodes as {d.name}"
        if i.form == "UP":
            assert (d.rd, d.imm) == (5, 0x12345 << 12)
            continue
        if i.form == "J":
            assert (d.rd, d.imm) == (5, 16)
            continue
        assert d.rs1 == 6
        if i.form == "B":
            assert (d.rs2, d.imm) == (7, 16)
            continue
        if i.form == "S":
            assert (d.rs2, d.imm) == (7, -7)
            continue
        assert d.rd == 5
        if i.form in ("R", "AMO"):
            assert d.rs2 == 7
        elif i.form in ("SH5", "SH6"):
            assert d.imm == 13
        elif i.form == "I":
            assert d.imm == -7


def _fp_operands(i: spec.FpInsn) -> str:
    """Operands for the assembler: f5-f8 for F registers, x5-x7 for integer ones."""
    if i.op == "load":
        return "f5, -7(x6)"
    if i.op == "store":
        return "f7, -7(x6)"
    if i.op == "fma":
        return "f5, f6, f7, f8"
    if i.op in ("eq", "lt", "le"):
        return "x5, f6, f7"
    if i.op in ("class", "mv_x", "to_int"):
        return "x5, f6"
    if i.op in ("mv_f", "from_int"):
        return "f5, x6"
    if i.op in ("sqrt", "cvt"):
        return "f5, f6"
    return "f5, f6, f7"


def test_fp_encodings_are_the_assemblers(tmp_path: Path) -> None:
    """Every F and D instruction assembles (GNU as) to a word that decodes to it, with its
    registers and immediate; those with a rounding-mode field keep a static one."""
    rows = list(spec.FP.values())
    rounding = {n for n, i in spec.FP.items() if i.form in ("FR", "FU", "R4")
                and i.op not in ("cvt",) and not (i.op == "from_int" and i.arg == 32)}
    lines = []
    for i in rows:
        rm = ", rtz" if i.name in rounding and i.op not in ("sqrt",) else ""
        lines.append(f"{i.name} {_fp_operands(i)}{rm}")
    words = _assembled(tmp_path, lines, "rv64gc")
    assert len(words) == len(rows)
    for i, line, w in zip(rows, lines, words, strict=True):
        d = decode(w)
        assert d.name == i.name, f"{line}: {w:#010x} decodes as {d.name}"
        if i.op in ("load", "store"):
            assert (d.rs1, d.imm) == (6, -7)
            assert (d.rs2 if i.op == "store" else d.rd) == (7 if i.op == "store" else 5)
            continue
        assert (d.rd, d.rs1) == (5, 6), line
        if i.op == "fma":
            assert (d.rs2, d.rs3) == (7, 8)
        if line.endswith(", rtz"):
            assert d.rm == 1, line


def test_fp_instructions_are_named_in_the_description_only() -> None:
    """No engine and not the decoder names an F or D instruction: they take its
    encoding and its operation (FpInsn.op) from isa/spec.py."""
    isa = Path(spec.__file__).parent
    paths = [*(isa.parent / "cpu").rglob("*.py"), isa / "decoder.py", isa / "compressed.py"]
    for path in paths:
        text = path.read_text()
        for name in spec.FP:
            assert f'"{name}"' not in text and f"'{name}'" not in text, \
                f"{path.name} names {name}"


def test_system_encodings_are_the_assemblers(tmp_path: Path) -> None:
    """Fences, ECALL/EBREAK, MRET/SRET, WFI, SFENCE.VMA and the CSR instructions
    assemble to words that decode to them, with their operands."""
    lines = {"fence": "fence rw, rw", "fence.i": "fence.i", "ecall": "ecall",
             "ebreak": "ebreak", "mret": "mret", "sret": "sret", "wfi": "wfi",
             "sfence.vma": "sfence.vma x6, x7"}
    for n, i in spec.SYS.items():
        if i.op == "csr":
            lines[n] = f"{n} x5, 0x305, {'13' if i.uimm else 'x6'}"
    assert set(lines) == set(spec.SYS)
    words = _assembled(tmp_path, list(lines.values()), "rv64g")  # (no RVC: a 32-bit ebreak)
    assert len(words) == len(lines)
    for name, w in zip(lines, words, strict=True):
        d = decode(w)
        assert d.name == name, f"{lines[name]}: {w:#010x} decodes as {d.name}"
        if spec.SYS[name].op == "csr":
            assert (d.rd, d.csr & 0xFFF, d.rs1) == (5, 0x305, 13 if name.endswith("i") else 6)
        if name == "sfence.vma":
            assert (d.rs1, d.rs2) == (6, 7)
    assert decode(0x00004073).name == "illegal"  # funct3 4 of SYSTEM: no CSR instruction
    assert decode(0x12000F73).name == "illegal"  # sfence.vma with rd != 0


def test_zicond_encodings_are_the_ratified_ones() -> None:
    """czero.eqz/czero.nez (Zicond 1.0: funct7 0000111, funct3 101/111, OP)."""
    assert decode(0x0E7352B3).name == "czero.eqz"  # czero.eqz x5, x6, x7
    assert decode(0x0E7372B3).name == "czero.nez"
    assert decode(0x0E7362B3).name == "illegal"


def _py(name: str, a: int = 0, b: int = 0, imm: int = 0) -> int:
    """The interpreter's value (the Python rendering) of ``name``."""
    env = {"a": a & M64, "b": b & M64, "i": imm & M64, "si": (imm & M64) ^ (1 << 63),
           "sh": imm & 63, "M64": M64, "SIGN": 1 << 63, **spec.PY_HELPERS}
    return eval(spec.python(name), env)  # noqa: S307 - our own generated expression


# Known answers, worked out from the Zba/Zbb/Zbs/Zicond specifications by hand.
KNOWN = [
    ("sh1add", 5, 100, 0, 110), ("sh2add", 5, 100, 0, 120), ("sh3add", -1, 0, 0, M64 - 7),
    ("add.uw", 0xFFFF_FFFF_8000_0000, 1, 0, 0x8000_0001),
    ("sh3add.uw", 0x1_0000_0002, 1, 0, 17), ("slli.uw", 0xFFFF_FFFF_8000_0001, 0, 4,
                                              0x8_0000_0010),
    ("andn", 0b1100, 0b1010, 0, 0b0100), ("orn", 0, 0, 0, M64), ("xnor", 5, 5, 0, M64),
    ("clz", 0, 0, 0, 64), ("clz", 1, 0, 0, 63), ("clz", 1 << 63, 0, 0, 0),
    ("ctz", 0, 0, 0, 64), ("ctz", 8, 0, 0, 3), ("cpop", M64, 0, 0, 64),
    ("clzw", 0xFFFF_FFFF_0000_0001, 0, 0, 31), ("clzw", 0xFFFF_FFFF_0000_0000, 0, 0, 32),
    ("ctzw", 0xFFFF_FFFF_0000_0000, 0, 0, 32), ("cpopw", 0xFFFF_FFFF_0000_0003, 0, 0, 2),
    ("sext.b", 0x80, 0, 0, M64 - 0x7F), ("sext.h", 0x7FFF, 0, 0, 0x7FFF),
    ("zext.h", 0x1234_5678, 0, 0, 0x5678),
    ("max", -1, 1, 0, 1), ("maxu", -1, 1, 0, M64), ("min", -1, 1, 0, M64), ("minu", -1, 1, 0, 1),
    ("rol", 0x8000_0000_0000_0001, 1, 0, 3), ("ror", 1, 1, 0, 1 << 63),
    ("rori", 0x10, 0, 4, 1), ("rolw", 0x8000_0000, 1, 0, 1),
    ("rorw", 1, 1, 0, 0xFFFF_FFFF_8000_0000), ("roriw", 0x1_0000_0002, 0, 1, 1),
    ("rev8", 0x0102_0304_0506_0708, 0, 0, 0x0807_0605_0403_0201),
    ("orc.b", 0x0100_0000_0000_8000, 0, 0, 0xFF00_0000_0000_FF00),
    ("bclr", M64, 65, 0, M64 - 2), ("bclri", M64, 0, 63, M64 >> 1),
    ("bext", 0b100, 2, 0, 1), ("bexti", 1 << 40, 0, 40, 1),
    ("binv", 0, 64, 0, 1), ("binvi", 1, 0, 0, 0), ("bset", 0, 3, 0, 8),
    ("bseti", 0, 0, 63, 1 << 63),
    ("czero.eqz", 42, 0, 0, 0), ("czero.eqz", 42, 7, 0, 42),
    ("czero.nez", 42, 0, 0, 42), ("czero.nez", 42, 7, 0, 0),
]


@pytest.mark.parametrize("name,a,b,imm,want", KNOWN,
                         ids=[f"{k[0]}-{n}" for n, k in enumerate(KNOWN)])
def test_semantics_give_the_specifications_answers(name, a, b, imm, want) -> None:
    assert _py(name, a, b, imm) == want


@pytest.mark.skipif(jit_unavailable_reason() is not None, reason="jit unavailable")
@pytest.mark.parametrize("threshold", [1, -1, 10**9], ids=["llvm", "baseline", "native-interp"])
def test_every_engine_gives_the_known_answers(threshold) -> None:
    """The known answers on the interpreter, the block translator and the JIT's tiers
    (LLVM blocks, baseline blocks, the native interpreter): one instruction each, its
    operands in a0/a1, its result stored to a table."""
    import struct

    from test_jit import jit_world

    import engine_world as W

    H = W.H
    table = W.BASE + 0x10000
    prog = _li64(9, table)
    for k, (name, a, b, imm, _want) in enumerate(KNOWN):
        i = spec.INSNS[name]
        prog += _li64(10, a) + _li64(11, b)
        if i.form == "R":
            prog.append(H.enc_r(i.opcode, 12, i.funct3, 10, 11, i.fixed))
        elif i.form == "U":
            prog.append(H.enc_i(i.opcode, 12, i.funct3, 10, i.fixed))
        else:
            bits = 6 if i.form == "SH6" else 5
            prog.append(H.enc_i(i.opcode, 12, i.funct3, 10, (i.fixed << bits) | imm))
        prog.append(H.enc_s(0x23, 3, 9, 12, 8 * k))  # sd a2, 8k(s1)
    prog.append(0x10500073)  # wfi
    want = [w & M64 for *_x, w in KNOWN]
    for w in (W.World("interp"), W.World("translate", threshold=1),
              jit_world(threshold=threshold)):
        w.put(W.BASE, prog)
        for _ in range(1000):
            if w.hart.waiting:
                break
            w.engine.run(10_000)
        got = list(struct.unpack(f"<{len(KNOWN)}Q", w.ram.read_bytes(table, 8 * len(KNOWN))))
        bad = [(KNOWN[k][0], hex(g), hex(e)) for k, (g, e) in enumerate(zip(got, want, strict=True))
               if g != e]
        assert not bad, f"{type(w.engine).__name__}: {bad}"


def _li64(rd: int, value: int) -> list[int]:
    """rd = a 64-bit value: lui/addi of the high word, shifted, then the low word in."""
    import engine_world as W

    H = W.H
    value &= M64
    out = []
    hi, lo = value >> 32, value & 0xFFFF_FFFF
    out += _li32(rd, hi, H) + [H.enc_i(0x13, rd, 1, rd, 32)]  # slli rd, rd, 32
    out += _li32(31, lo, H) + [H.enc_i(0x13, 31, 1, 31, 32), H.enc_i(0x13, 31, 5, 31, 32)]
    out += [H.enc_r(0x33, rd, 6, rd, 31, 0)]  # or rd, rd, t6
    return out


def _li32(rd: int, v: int, H) -> list[int]:
    v &= 0xFFFF_FFFF
    sv = v - (1 << 32) if v >> 31 else v
    lo = ((sv & 0xFFF) ^ 0x800) - 0x800
    hi = ((sv - lo) >> 12) & 0xFFFFF
    return [(hi << 12) | (rd << 7) | 0x37, H.enc_i(0x13, rd, 0, rd, lo)]


def test_each_instruction_is_described_once() -> None:
    """A new extension's mnemonics appear in the description only: no engine names them
    (they take the description's encodings and semantics)."""
    src = Path(spec.__file__).read_text()
    insns = [i for i in spec.INSNS.values() if i.ext in spec.EXTENSIONS]
    for i in insns:
        assert src.count(f'("{i.name}", "{i.ext}"') == 1, i.name
    names = [i.name for i in insns]
    engines = Path(spec.__file__).parents[1] / "cpu"
    for path in engines.rglob("*.py"):
        text = path.read_text()
        for name in names:
            assert f'"{name}"' not in text, f"{path.name} names {name}"
