"""The LLVM JIT against the interpreter: FP edge values and flags, self-modifying code,
native execution actually happening, and the on-disk code cache.

The random-program differential over every engine is tests/conformance/
test_engines_differential.py; here are the cases random programs rarely hit.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pyhv.cpu.engines import jit_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
BASE = 0x8000_0000
DATA = BASE + 0x10000
OUT = BASE + 0x40000

pytestmark = pytest.mark.skipif(jit_unavailable_reason() is not None,
                                reason=f"jit unavailable: {jit_unavailable_reason()}")


import engine_world as W  # noqa: E402 - tests/conftest.py puts tests/ on sys.path

H = W.H


BASELINE_TIER = -1  # a threshold that means: baseline blocks (stencils.py), no LLVM block


def tier(threshold: int) -> dict:
    """make_jit_engines' arguments for a test tier: 1, every start compiled by LLVM at
    once (after one run as a baseline block); BASELINE_TIER, baseline blocks from the
    first run and never an LLVM block; 10**9, the native interpreter alone (no block
    compiled or loaded from the code cache, whose blocks earlier tests may have left)."""
    if threshold == BASELINE_TIER:
        return {"threshold": 10**9, "compiled": True, "base_runs": 1}
    return {"threshold": threshold, "compiled": threshold < 10**9}


def jit_world(**kw):
    from pyhv.cpu.jit import make_jit_engines

    world = W.World("interp")
    args = tier(kw.pop("threshold", 1))
    args.update(kw)
    world.engine = make_jit_engines(world, sync=True, **args)[0]
    return world


def run(world, budget: int = 2_000_000) -> None:
    h = world.hart
    done = 0
    while done < budget and not h.waiting:
        done += world.engine.run(min(65536, budget - done))


# -- encoders -------------------------------------------------------------------------------

def i_type(op, rd, f3, rs1, imm):
    return H.enc_i(op, rd, f3, rs1, imm)


def r_type(op, rd, f3, rs1, rs2, f7):
    return H.enc_r(op, rd, f3, rs1, rs2, f7)


def fld(rd, rs1, imm):
    return i_type(0x07, rd, 3, rs1, imm)


def fsd(rs2, rs1, imm):
    return H.enc_s(0x27, 3, rs1, rs2, imm)


def sd(rs2, rs1, imm):
    return H.enc_s(0x23, 3, rs1, rs2, imm)


def addi(rd, rs1, imm):
    return i_type(0x13, rd, 0, rs1, imm)


def lui(rd, imm20):
    return (imm20 << 12) | (rd << 7) | 0x37


def csrrw_fflags(rd, rs1):
    return (0x001 << 20) | (rs1 << 15) | (1 << 12) | (rd << 7) | 0x73


def bne(rs1, rs2, off):
    return H.enc_b(1, rs1, rs2, off)


WFI = 0x10500073


def li32(rd, value):
    """lui+addi for a 32-bit value (sign-extended)."""
    hi = ((value + 0x800) >> 12) & 0xFFFFF
    lo = value - (hi << 12)
    lo = ((lo + 0x800) & 0xFFF) - 0x800
    return [lui(rd, hi), addi(rd, rd, lo)]


def set_fs():
    # t0 = 1 << 13 (FS = Initial); csrrs zero, mstatus, t0
    return [lui(5, 2), (0x300 << 20) | (5 << 15) | (2 << 12) | 0x73]


# Special double-precision operands.
SPECIALS = [
    0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, -2.5, 1 / 3, 1e308, -1e308, 1e-308,
    float("inf"), float("-inf"), 2.0 ** 31, -(2.0 ** 31) - 1, 2.0 ** 63, -(2.0 ** 63),
    2.0 ** 53 + 2, 3.0e-320, 2.2250738585072014e-308,
    2.0 ** 64, 2.0 ** 64 - 2048, 2.0 ** 32 - 0.5, 2.0 ** 32, 4294967295.0, -0.75, -0.5,
    2.0 ** 31 - 0.5, 2.0 ** 31 - 1, -(2.0 ** 31) - 0.5, -(2.0 ** 31) - 1, 4294967294.5,
    -1.5, 2.5e-1,
]
NAN_BITS = [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF4000000000000, 0x7FF0000000000001]


def operand_bits() -> list[int]:
    return [struct.unpack("<Q", struct.pack("<d", v))[0] for v in SPECIALS] + NAN_BITS


OPS = {
    # name: (words producing f4 and/or x7, arity)
    "fadd.d": ([r_type(0x53, 4, 7, 1, 2, 0x01)], 2),
    "fsub.d": ([r_type(0x53, 4, 7, 1, 2, 0x05)], 2),
    "fmul.d": ([r_type(0x53, 4, 0, 1, 2, 0x09)], 2),
    "fdiv.d": ([r_type(0x53, 4, 7, 1, 2, 0x0D)], 2),
    "fsqrt.d": ([r_type(0x53, 4, 0, 1, 0, 0x2D)], 1),
    "fmadd.d": ([(3 << 27) | (1 << 25) | (2 << 20) | (1 << 15) | (7 << 12) | (4 << 7) | 0x43], 3),
    "fmsub.d": ([(3 << 27) | (1 << 25) | (2 << 20) | (1 << 15) | (0 << 12) | (4 << 7) | 0x47], 3),
    "fnmsub.d": ([(3 << 27) | (1 << 25) | (2 << 20) | (1 << 15) | (7 << 12) | (4 << 7) | 0x4B],
                 3),
    "fnmadd.d": ([(3 << 27) | (1 << 25) | (2 << 20) | (1 << 15) | (0 << 12) | (4 << 7) | 0x4F],
                 3),
    "feq.d": ([r_type(0x53, 7, 2, 1, 2, 0x51)], 2),
    "flt.d": ([r_type(0x53, 7, 1, 1, 2, 0x51)], 2),
    "fle.d": ([r_type(0x53, 7, 0, 1, 2, 0x51)], 2),
    "fsgnjx.d": ([r_type(0x53, 4, 2, 1, 2, 0x11)], 2),
    "fcvt.w.d rtz": ([r_type(0x53, 7, 1, 1, 0, 0x61)], 1),
    "fcvt.w.d dyn": ([r_type(0x53, 7, 7, 1, 0, 0x61)], 1),
    "fcvt.l.d rne": ([r_type(0x53, 7, 0, 1, 2, 0x61)], 1),
    "fcvt.d.w": ([r_type(0x53, 4, 7, 6, 0, 0x69)], 0),
    "fcvt.d.wu": ([r_type(0x53, 4, 7, 6, 1, 0x69)], 0),
    "fcvt.d.l": ([r_type(0x53, 4, 7, 6, 2, 0x69)], 0),
    "fmv.x.d": ([r_type(0x53, 7, 0, 1, 0, 0x71)], 1),
    # single precision: operands NaN-boxed singles (and some not boxed: canonical NaN)
    "fadd.s": ([r_type(0x53, 4, 7, 1, 2, 0x00)], 2),
    "fsub.s": ([r_type(0x53, 4, 7, 1, 2, 0x04)], 2),
    "fmul.s": ([r_type(0x53, 4, 0, 1, 2, 0x08)], 2),
    "fdiv.s": ([r_type(0x53, 4, 7, 1, 2, 0x0C)], 2),
    "fsqrt.s": ([r_type(0x53, 4, 0, 1, 0, 0x2C)], 1),
    "fmadd.s": ([(3 << 27) | (2 << 20) | (1 << 15) | (7 << 12) | (4 << 7) | 0x43], 3),
    "fnmsub.s": ([(3 << 27) | (2 << 20) | (1 << 15) | (0 << 12) | (4 << 7) | 0x4B], 3),
    "feq.s": ([r_type(0x53, 7, 2, 1, 2, 0x50)], 2),
    "flt.s": ([r_type(0x53, 7, 1, 1, 2, 0x50)], 2),
    "fle.s": ([r_type(0x53, 7, 0, 1, 2, 0x50)], 2),
    "fsgnjn.s": ([r_type(0x53, 4, 1, 1, 2, 0x10)], 2),
    "fsgnjx.s": ([r_type(0x53, 4, 2, 1, 2, 0x10)], 2),
    "fcvt.w.s rtz": ([r_type(0x53, 7, 1, 1, 0, 0x60)], 1),
    "fcvt.l.s rne": ([r_type(0x53, 7, 0, 1, 2, 0x60)], 1),
    "fcvt.s.w": ([r_type(0x53, 4, 7, 6, 0, 0x68)], 0),
    "fcvt.s.wu": ([r_type(0x53, 4, 7, 6, 1, 0x68)], 0),
    "fcvt.s.l": ([r_type(0x53, 4, 7, 6, 2, 0x68)], 0),
    "fcvt.d.s": ([r_type(0x53, 4, 0, 1, 0, 0x21)], 1),
    "fmv.x.w": ([r_type(0x53, 7, 0, 1, 0, 0x70)], 1),
    "fmv.w.x": ([r_type(0x53, 4, 0, 6, 0, 0x78)], 0),
    "fcvt.w.d rdn": ([r_type(0x53, 7, 2, 1, 0, 0x61)], 1),
    "fcvt.w.d rup": ([r_type(0x53, 7, 3, 1, 0, 0x61)], 1),
    "fcvt.l.d rmm": ([r_type(0x53, 7, 4, 1, 2, 0x61)], 1),
    "fcvt.wu.d rmm": ([r_type(0x53, 7, 4, 1, 1, 0x61)], 1),
    "fcvt.lu.d rup": ([r_type(0x53, 7, 3, 1, 3, 0x61)], 1),
    "fcvt.w.s rdn": ([r_type(0x53, 7, 2, 1, 0, 0x60)], 1),
    "fcvt.lu.s rmm": ([r_type(0x53, 7, 4, 1, 3, 0x60)], 1),
    "fcvt.wu.d rtz": ([r_type(0x53, 7, 1, 1, 1, 0x61)], 1),
    "fcvt.lu.d rne": ([r_type(0x53, 7, 0, 1, 3, 0x61)], 1),
    "fcvt.lu.d rtz": ([r_type(0x53, 7, 1, 1, 3, 0x61)], 1),
    "fcvt.wu.s dyn": ([r_type(0x53, 7, 7, 1, 1, 0x60)], 1),
    "fcvt.lu.s rtz": ([r_type(0x53, 7, 1, 1, 3, 0x60)], 1),
    "fcvt.d.lu": ([r_type(0x53, 4, 7, 6, 3, 0x69)], 0),
    "fcvt.s.lu": ([r_type(0x53, 4, 7, 6, 3, 0x68)], 0),
    "fclass.s": ([r_type(0x53, 7, 1, 1, 0, 0x70)], 1),
    "fclass.d": ([r_type(0x53, 7, 1, 1, 0, 0x71)], 1),
    "fmin.s": ([r_type(0x53, 4, 0, 1, 2, 0x14)], 2),
    "fmax.s": ([r_type(0x53, 4, 1, 1, 2, 0x14)], 2),
    "fmin.d": ([r_type(0x53, 4, 0, 1, 2, 0x15)], 2),
    "fmax.d": ([r_type(0x53, 4, 1, 1, 2, 0x15)], 2),
    # double operands, single result
    "fcvt.s.d": ([r_type(0x53, 4, 7, 1, 1, 0x20)], 1),
}
SINGLE_OPERANDS = {op for op in OPS if op.split()[0].endswith(".s") or op == "fmv.x.w"} - {
    "fcvt.s.d"}
# Special single-precision operands (each NaN-boxed), a few that are not boxed.
SPECIALS_S = [
    0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, -2.5, 1 / 3, 3.4e38, -3.4e38, 1e-38,
    float("inf"), float("-inf"), 2.0 ** 31, -(2.0 ** 31), 2.0 ** 63, -(2.0 ** 63),
    2.0 ** 24 + 2, 1e-45, 1.1754943508222875e-38,
    2.0 ** 64, 2.0 ** 32, 4294967040.0, 1.8e19, -0.75, -0.5,
]
NAN_BITS_S = [0x7FC00000, 0xFFC00000, 0x7FA00000, 0x7F800001]
UNBOXED = [0x3F800000, 0x7FF8000000000000, 0x7F800000, 0xFFFFFFFE3F800000]


def operand_bits_s() -> list[int]:
    box = 0xFFFFFFFF00000000
    return ([box | struct.unpack("<I", struct.pack("<f", v))[0] for v in SPECIALS_S]
            + [box | n for n in NAN_BITS_S] + UNBOXED)


def _pointers() -> list[int]:
    """x10 = DATA, x11 = OUT: 0x80000000 + offset, built as lui (sign-extends) + zext."""
    return [lui(10, (DATA >> 12) & 0xFFFFF), i_type(0x13, 10, 1, 10, 32),
            i_type(0x13, 10, 5, 10, 32),
            lui(11, (OUT >> 12) & 0xFFFFF), i_type(0x13, 11, 1, 11, 32),
            i_type(0x13, 11, 5, 11, 32)]


def _image(op: str):
    words, arity = OPS[op]
    values = operand_bits_s() if op in SINGLE_OPERANDS else operand_bits()
    if arity == 0:  # integer operand: x6 from the first operand word's bits
        words = [i_type(0x03, 6, 3, 10, 0)] + words
        tuples = [(v, 0, 0) for v in values + [0x7FFFFFFF, 0xFFFFFFFF80000000, 0xFFFFFFFF,
                                               (1 << 63) | 12345, (1 << 53) + 1]]
    elif arity == 1:
        tuples = [(v, 0, 0) for v in values]
    elif arity == 2:
        tuples = [(a, b, 0) for a in values for b in values]
    else:
        tuples = [(a, b, c) for a in values[::2] for b in values[1::2] for c in values[::3]]
    prog = set_fs()
    prog += _pointers()
    prog += li32(12, len(tuples))
    loop = len(prog)
    body = [fld(1, 10, 0), fld(2, 10, 8), fld(3, 10, 16)] + words
    body += [fsd(4, 11, 0), sd(7, 11, 8), csrrw_fflags(13, 0), sd(13, 11, 16)]
    body += [addi(10, 10, 24), addi(11, 11, 24), addi(12, 12, -1)]
    prog += body
    here = len(prog)
    prog.append(bne(12, 0, -4 * (here - loop)))
    prog.append(WFI)
    data = b"".join(struct.pack("<3Q", *t) for t in tuples)
    return prog, data, len(tuples)


def _run_image(world, prog, data, n):
    world.put(BASE, prog)
    world.ram.write_bytes(DATA, data)
    run(world)
    assert world.hart.waiting, "program did not reach its end"
    return world.ram.read_bytes(OUT, 24 * n), world.state()


@pytest.mark.parametrize("threshold", [1, 10**9], ids=["compiled", "native-interp"])
@pytest.mark.parametrize("op", list(OPS))
def test_fp_edge_values_and_flags_match_interpreter(op, threshold):
    """Each FP operation on edge values (NaNs, infinities, subnormals, signed zeros,
    rounding ties), results and exception flags: in compiled blocks and in the native
    interpreter (which leaves only what it does not do to Python: other rounding
    modes, and the fflags read of each iteration)."""
    prog, data, n = _image(op)
    want_mem, want = _run_image(W.World("interp"), prog, data, n)
    world = jit_world(threshold=threshold)
    got_mem, got = _run_image(world, prog, data, n)
    assert world.engine.native_instructions > 0, "nothing ran natively"
    # native code does the operation itself: Python only each iteration's fflags swap
    # (and a few instructions while the loop gets hot), not the operation too
    assert world.engine.stats()["slow_exits"] < n + 40, world.engine.stats()
    if got_mem != want_mem:
        for i in range(n):
            w = struct.unpack_from("<3Q", want_mem, 24 * i)
            g = struct.unpack_from("<3Q", got_mem, 24 * i)
            if w != g:
                t = struct.unpack_from("<3Q", data, 24 * i)
                pytest.fail(f"{op} operands {[hex(v) for v in t]}: interpreter "
                            f"(f, x, flags) {[hex(v) for v in w]}, jit {[hex(v) for v in g]}")
    assert got == want


@pytest.mark.parametrize("op", ["fadd.d", "fdiv.d", "fsqrt.d", "fmadd.d", "feq.d",
                                "fcvt.w.d rtz", "fcvt.d.w", "fsgnjx.d", "fmv.x.d"])
def test_fp_in_an_optimised_region_matches_interpreter(tmp_path, monkeypatch, op):
    """Double-precision work inside a hot loop whose body branches: the loop runs past
    OPT_AFTER, is compiled again as one optimised region (F registers kept in the
    region's allocas, FS made dirty only on a path that wrote one), and its results,
    flags and final state stay the interpreter's."""
    from pyhv.cpu.jit.codegen import OPT_AFTER
    from pyhv.cpu.jit.compiler import Compiler
    from pyhv.cpu.jit.engine import JitMachine

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    words, arity = OPS[op]
    values = operand_bits_s() if op in SINGLE_OPERANDS else operand_bits()
    if arity == 0:
        words = [i_type(0x03, 6, 3, 10, 0)] + words
    tuples = [(a, b, values[(i * 7) % len(values)]) for i, a in enumerate(values)
              for b in values[::3]]
    prog = set_fs()
    # rounds over the table: enough for each block of the loop (the shortest, 6
    # instructions) to run past OPT_AFTER
    prog += li32(14, OPT_AFTER // (5 * len(tuples)) + 2)
    outer = len(prog)
    prog += _pointers()
    prog += li32(12, len(tuples))
    loop = len(prog)
    body = [fld(1, 10, 0), fld(2, 10, 8), fld(3, 10, 16)] + words
    # odd entries also count into x15: a branch inside the loop, joining again
    body += [i_type(0x13, 5, 7, 12, 1), beq(5, 0, 8), addi(15, 15, 1)]
    body += [fsd(4, 11, 0), sd(7, 11, 8), csrrw_fflags(13, 0), sd(13, 11, 16)]
    body += [addi(10, 10, 24), addi(11, 11, 24), addi(12, 12, -1)]
    prog += body
    prog.append(bne(12, 0, -4 * (len(prog) - loop)))
    prog += [addi(14, 14, -1)]
    prog.append(bne(14, 0, -4 * (len(prog) - outer)))
    prog.append(WFI)
    data = b"".join(struct.pack("<3Q", *t) for t in tuples)
    n = len(tuples)
    budget = 40 * OPT_AFTER
    interp = W.World("interp")
    interp.put(BASE, prog)
    interp.ram.write_bytes(DATA, data)
    run(interp, budget)
    assert interp.hart.waiting
    want = interp.ram.read_bytes(OUT, 24 * n), interp.state()
    world = W.World("interp")
    world.engine = JitMachine(world, Compiler(), threshold=1, sync=True).engines[0]
    world.put(BASE, prog)
    world.ram.write_bytes(DATA, data)
    run(world, budget)
    assert world.hart.waiting
    assert (world.ram.read_bytes(OUT, 24 * n), world.state()) == want
    assert world.engine._context().native.optimised, "the loop was not compiled again"


TIERS = pytest.mark.parametrize("threshold", [1, BASELINE_TIER, 10**9],
                                ids=["native", "baseline", "cold"])


@TIERS
def test_self_modifying_loop_sees_its_new_instruction(threshold):
    """A hot native loop rewrites an instruction of its own page (no FENCE.I): the next
    iteration must run the new one, as on the interpreter."""
    new = addi(5, 5, 100)
    prog = li32(6, 50) + li32(7, new)  # x6 = iterations, x7 = the new instruction
    prog += [(0 << 12) | (8 << 7) | 0x17, addi(8, 8, 8)]  # x8 = auipc + 8 = index 6
    assert len(prog) == 6
    prog += [
        addi(5, 5, 1),  # 6: rewritten to addi x5, x5, 100 when x6 reaches 25
        addi(6, 6, -1),
        addi(9, 6, -25),
        bne(9, 0, 8),
        H.enc_s(0x23, 2, 8, 7, 0),  # 10: sw x7, 0(x8)
        bne(6, 0, -4 * 5),
        WFI,
    ]
    interp = W.World("interp")
    interp.put(BASE, prog)
    run(interp)
    world = jit_world(threshold=threshold)
    world.put(BASE, prog)
    run(world)
    assert interp.hart.waiting and world.hart.waiting
    assert interp.hart.x[5] == 25 + 25 * 100
    assert world.state() == interp.state()
    assert world.engine.native_instructions > 0


def test_code_cache_on_disk_serves_a_second_run(tmp_path, monkeypatch):
    from pyhv.cpu.jit.compiler import Compiler
    from pyhv.cpu.jit.engine import JitMachine

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    prog, data, n = _image("fadd.d")
    results = []
    for _ in range(2):
        world = W.World("interp")
        comp = Compiler()
        world.engine = JitMachine(world, comp, threshold=1, sync=True).engines[0]
        mem, state = _run_image(world, prog, data, n)
        results.append((mem, state, comp.blocks_compiled, comp.blocks_loaded))
    (mem1, st1, compiled1, loaded1), (mem2, st2, compiled2, loaded2) = results
    assert compiled1 > 0 and loaded1 == 0
    assert compiled2 == 0 and loaded2 > 0, "the second run compiled instead of loading"
    assert (mem1, st1) == (mem2, st2)
    assert any(tmp_path.rglob("*.o"))


def test_damaged_cache_index_is_ignored(tmp_path, monkeypatch):
    from pyhv.cpu.jit.compiler import Compiler

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    comp = Compiler()
    assert comp.cache_dir is not None
    (comp.cache_dir / "index").write_text("garbage\nkey-without-file\nk missing.o\n")
    comp2 = Compiler()
    assert comp2.cached("k") is None  # the object file is missing: compile instead


def _amo(funct5, width3, rd, rs1, rs2):
    return (funct5 << 27) | (rs2 << 20) | (rs1 << 15) | (width3 << 12) | (rd << 7) | 0x2F


AMO_FUNCT5 = {"amoadd": 0x00, "amoswap": 0x01, "amoxor": 0x04, "amoor": 0x08, "amoand": 0x0C,
              "amomin": 0x10, "amomax": 0x14, "amominu": 0x18, "amomaxu": 0x1C}


@TIERS
@pytest.mark.parametrize("width", ["w", "d"])
@pytest.mark.parametrize("op", [*AMO_FUNCT5, "lr/sc"])
def test_atomics_match_interpreter(op, width, threshold):
    """AMOs and LR/SC on random values, natively, as the interpreter does them: old
    value in rd (sign-extended for .w), memory updated, SC failing without a reservation."""
    import random

    rng = random.Random(f"{op}{width}")
    w3 = 2 if width == "w" else 3
    step = 4 if width == "w" else 8
    n = 64
    prog = set_fs()
    prog += _pointers()
    prog += li32(12, n)
    loop = len(prog)
    prog += [i_type(0x03, 6, 3, 10, 0x400)]  # x6 = operand (ld from DATA+0x400+...)
    if op == "lr/sc":
        # sc without reservation (fails), then lr + sc (succeeds), then sc again (fails)
        prog += [_amo(0x03, w3, 7, 10, 6), sd(7, 11, 0)]
        prog += [_amo(0x02, w3, 13, 10, 0), _amo(0x03, w3, 7, 10, 6), sd(13, 11, 8),
                 sd(7, 11, 16), _amo(0x03, w3, 7, 10, 6), sd(7, 11, 24)]
    else:
        prog += [_amo(AMO_FUNCT5[op], w3, 7, 10, 6), sd(7, 11, 0)]
    prog += [addi(10, 10, step), addi(11, 11, 32), addi(12, 12, -1)]
    here = len(prog)
    prog.append(bne(12, 0, -4 * (here - loop)))
    prog.append(WFI)
    mem = bytes(rng.getrandbits(8) for _ in range(0x400))
    ops = b"".join(struct.pack("<Q", rng.choice([0, 1, (1 << 64) - 1, 1 << 31, 1 << 63,
                                                  rng.getrandbits(64)])) for _ in range(128))
    results = []
    for world in (W.World("interp"), jit_world(threshold=threshold)):
        world.put(BASE, prog)
        world.ram.write_bytes(DATA, mem + ops)
        run(world)
        assert world.hart.waiting
        results.append((world.ram.read_bytes(DATA, 0x800), world.ram.read_bytes(OUT, 32 * n),
                        world.state()))
        if hasattr(world.engine, "native_instructions"):
            assert world.engine.native_instructions > 0
    assert results[0] == results[1]


def _csr(f3, rd, csr, rs1_or_uimm):
    return (csr << 20) | (rs1_or_uimm << 15) | (f3 << 12) | (rd << 7) | 0x73


def _la(rd, addr):
    """rd = addr (0x8xxxxxxx): a sign-extended 32-bit load, then zero-extended."""
    return li32(rd, addr - (1 << 32)) + [i_type(0x13, rd, 1, rd, 32), i_type(0x13, rd, 5, rd, 32)]


@TIERS
def test_sstatus_sie_natively_and_interrupt_on_enable(threshold):
    """S-mode code toggling sstatus.SIE as Linux's local_irq_save/restore does, in a hot
    loop, with a software interrupt made pending while SIE is clear: native code must
    read sstatus as the interpreter does and let the interrupt in exactly where
    re-enabling happens (same instret, same sepc, same handler count)."""
    s_code = BASE + 0x100
    handler = BASE + 0x200
    prog = li32(5, 2) + [_csr(1, 0, 0x303, 5), _csr(1, 0, 0x304, 5)]  # mideleg, mie = SSIP
    prog += _la(5, handler) + [_csr(1, 0, 0x105, 5)]  # stvec
    prog += _la(5, s_code) + [_csr(1, 0, 0x341, 5)]  # mepc
    prog += li32(5, (1 << 11) | 2) + [_csr(1, 0, 0x300, 5), 0x30200073]  # MPP=S, SIE; mret
    words = {BASE: prog}
    loop = [
        _csr(7, 6, 0x100, 2),  # csrrci t1, sstatus, SIE  (t1 = old sstatus)
        addi(10, 10, 1),
        addi(7, 10, -50),
        bne(7, 0, 8),
        _csr(6, 0, 0x144, 2),  # csrrsi zero, sip, SSIP: pending while SIE is clear
        i_type(0x13, 6, 7, 6, 2),  # andi t1, t1, SIE
        _csr(2, 0, 0x100, 6),  # csrrs zero, sstatus, t1 (restore): the interrupt comes here
        _csr(2, 28, 0x100, 0),  # csrr t3, sstatus
        addi(29, 29, -1),
        bne(29, 0, -4 * 9),
        WFI,
    ]
    words[s_code] = li32(29, 200) + loop
    words[handler] = [addi(11, 11, 1), _csr(7, 0, 0x144, 2), 0x10200073]  # a1++; clear; sret
    results = []
    for world in (W.World("interp"), jit_world(threshold=threshold)):
        for addr, ws in words.items():
            world.put(addr, ws)
        run(world, 100_000)
        results.append(world.state())
        if hasattr(world.engine, "native_instructions"):
            assert world.engine.native_instructions > 0
    interp, jit = results
    assert world.engine.irq_exits == 1, "the interrupt did not come through native code"
    assert interp["x"][11] == 1 and interp["x"][10] == 200
    assert jit == interp


def _pte(pa: int, flags: int) -> int:
    return ((pa >> 12) << 10) | flags


@pytest.mark.parametrize("threshold", [1, BASELINE_TIER, 10**9],
                         ids=["native", "baseline", "cold"])
def test_address_spaces_share_code_by_physical_page(threshold):
    """S-mode code in three address spaces: page X maps to the same physical page in
    all of them; page Y, which X calls, maps to one physical page in two of them and to
    another page with other code in the third. Code is kept across satp switches and
    SFENCE.VMA where its page still maps where it was fetched from; a call from native
    code into Y never runs Y's code of another address space (the native fetch check),
    nor does Python's cold path; the results are the interpreter's."""
    x_va, y_va = 0x10000, 0x11000
    p0, p1, p2 = BASE + 0x30000, BASE + 0x31000, BASE + 0x32000
    handler = BASE + 0x400
    satps = []
    tables: dict[int, int] = {}
    for k, target in enumerate((p1, p2, p1)):  # roots A, B, C
        root, l1, l0 = (BASE + 0x20000 + 0x3000 * k + 0x1000 * j for j in range(3))
        satps.append((8 << 60) | (root >> 12))
        # root -> l1 -> l0 -> V|R|X|A leaves (S-mode only)
        tables.update({root: _pte(l1, 1), l1: _pte(l0, 1),
                       l0 + 8 * (x_va >> 12): _pte(p0, 0x4B),
                       l0 + 8 * (y_va >> 12): _pte(target, 0x4B)})
    order = [0, 1, 2, 0, 1, 2, 1, 0, 2]
    driver = _la(5, handler) + [_csr(1, 0, 0x305, 5)]  # mtvec
    driver += [addi(9, 0, 0), addi(18, 0, len(order))]  # s1 = 0, s2 = rounds
    top = len(driver)
    driver += _la(6, DATA) + [
        i_type(0x13, 28, 1, 9, 3),  # slli t3, s1, 3
        r_type(0x33, 6, 0, 6, 28, 0),  # add t1, t1, t3
        i_type(0x03, 7, 3, 6, 0),  # ld t2, 0(t1)
        _csr(1, 0, 0x180, 7),  # csrw satp, t2
        0x12000073,  # sfence.vma
    ] + li32(5, x_va) + [_csr(1, 0, 0x341, 5)] + li32(5, 1 << 11) + [
        _csr(1, 0, 0x300, 5), 0x30200073]  # mstatus = MPP=S; mret
    # the handler (an ecall from S): next round, or park
    handler_code = [addi(9, 9, 1), bne(9, 18, (BASE + 4 * top) - (handler + 4)), WFI]
    # X: 300 calls of Y, then ecall; Y: a0 += step; ret
    x_code = [addi(29, 0, 300), H.enc_j(1, y_va - (x_va + 4)), addi(29, 29, -1),
              bne(29, 0, -8), 0x00000073]

    def y_code(step: int) -> list[int]:
        return [addi(10, 10, step), i_type(0x67, 0, 0, 1, 0)]

    # (other bytes for Y in the cold run: the compiler has the native run's blocks)
    small = 1 if threshold == 1 else 2
    results = []
    for world in (W.World("interp"), jit_world(threshold=threshold)):
        for addr, value in tables.items():
            world.ram.write_bytes(addr, value.to_bytes(8, "little"))
        world.ram.write_bytes(DATA, b"".join(satps[i].to_bytes(8, "little") for i in order))
        world.put(BASE, driver)
        world.put(handler, handler_code)
        world.put(p0, x_code)
        world.put(p1, y_code(small))
        world.put(p2, y_code(1000 * small))
        run(world, 200_000)
        results.append(world.state())
    interp, jit = results
    assert interp["x"][10] == 300 * small * (6 + 3 * 1000), interp["x"][10]
    assert jit == interp
    if threshold == 1:
        assert world.engine.native_instructions > 300 * 4 * len(order) // 2


PAUSE_HINT = 0x0100000F  # Zihintpause
# Linux's cpu_relax() on a kernel built without Zihintpause: div a5, a5, zero
DIV_HINT = (1 << 25) | (15 << 15) | (4 << 12) | (15 << 7) | 0x33


@TIERS
@pytest.mark.parametrize("yield_on_pause", [False, True])
@pytest.mark.parametrize("hint", [PAUSE_HINT, DIV_HINT], ids=["pause", "div"])
def test_spin_hints_natively(hint, yield_on_pause, threshold):
    """A spin-wait hint in a hot loop runs natively, in every tier: PAUSE, and Linux's
    cpu_relax() without Zihintpause, ``div rd, rd, zero`` (its ticket locks spin on it;
    the DIV still writes -1). A no-op on a one-hart machine, the end of the slice where
    harts take turns (each run() stops right after it, as the interpreter's does)."""
    prog = [addi(6, 0, 500), addi(10, 10, 1), hint, bne(10, 6, -8), WFI]
    runs = []
    for world in (W.World("interp"), jit_world(threshold=threshold)):
        world.hart.yield_on_pause = yield_on_pause
        world.put(BASE, prog)
        counts = [world.engine.run(100_000) for _ in range(30)]
        runs.append((counts, world.state()))
    assert runs[1] == runs[0]
    counts, state = runs[0]
    if hint == DIV_HINT:
        assert state["x"][15] == (1 << 64) - 1  # the quotient of a division by zero
    if yield_on_pause:
        assert counts[:3] == [3, 3, 3] and state["x"][10] == 30
    else:
        assert state["x"][10] == 500
        assert world.engine.native_instructions > 1000


# -- the native interpreter (cold code) ----------------------------------------------------

def _timed_world(engine_threshold=None, mtime=123456789):
    """A world whose time CSR reads ``mtime`` and counts its reads, as the board's does
    (the JIT reads it natively through the board's ``clint`` and hands its reads to the
    board's ``clock``)."""
    import ctypes
    import types

    from pyhv.clock import next_time_read

    world = W.World("interp")
    world.clock = types.SimpleNamespace(time_reads=0)
    world.clint = types.SimpleNamespace(mtime=lambda: mtime)
    world.time_last = ctypes.c_uint64(0)

    def read_time():
        world.clock.time_reads += 1
        world.time_last.value = next_time_read(world.time_last.value, mtime)
        return world.time_last.value

    world.hart.read_mtime = read_time
    if engine_threshold is not None:
        from pyhv.cpu.jit import make_jit_engines

        world.engine = make_jit_engines(world, threshold=engine_threshold, sync=True)[0]
    return world


@TIERS
@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "denied"])
def test_time_csr_natively(threshold, allowed):
    """rdtime in an S-mode loop: the value and the number of reads (what tells guest
    time that the guest polls) as on the interpreter; with mcounteren.TM clear it is an
    illegal instruction, as on the interpreter."""
    handler = BASE + 0x200
    s_code = BASE + 0x100
    prog = li32(5, 2 if allowed else 0) + [_csr(1, 0, 0x306, 5)]  # mcounteren.TM
    prog += _la(5, handler) + [_csr(1, 0, 0x305, 5)]  # mtvec
    prog += _la(5, s_code) + [_csr(1, 0, 0x341, 5)]  # mepc
    prog += li32(5, 1 << 11) + [_csr(1, 0, 0x300, 5), 0x30200073]  # MPP=S; mret
    loop = [_csr(2, 7, 0xC01, 0), r_type(0x33, 10, 0, 10, 7, 0), addi(6, 6, -1),
            bne(6, 0, -12), WFI]
    words = {BASE: prog, s_code: li32(6, 100) + loop,
             handler: [_csr(2, 11, 0x342, 0), WFI]}  # a1 = mcause; park
    results = []
    for world in (_timed_world(), _timed_world(threshold)):
        for addr, ws in words.items():
            world.put(addr, ws)
        run(world, 100_000)
        assert world.hart.waiting
        results.append((world.state(), world.clock.time_reads))
    interp, jit = results
    if allowed:
        # each read a tick past the last while within TIME_READ_SLACK of mtime: distinct
        # values for the first reads of a slice, then mtime + slack (never back)
        from pyhv.clock import TIME_READ_SLACK as K

        want = sum(123456789 + min(i, K) for i in range(100))
        assert interp[0]["x"][10] == want and interp[1] == 100
    else:
        assert interp[0]["x"][11] == 2 and interp[1] == 0  # illegal instruction
    assert jit == interp


def test_instruction_across_a_page_boundary_natively():
    """A loop whose 32-bit instruction straddles two pages runs in the native
    interpreter (its upper half fetched from the next page), as on the interpreter,
    without leaving native code for it."""
    page = BASE + 0x1000
    c_addi = 0x0685  # c.addi a3, 1
    body = struct.pack("<III", addi(10, 10, 1), addi(11, 11, 3), addi(14, 14, 7))
    body += struct.pack("<H", c_addi) + struct.pack("<I", addi(12, 12, 5))  # at page - 2
    body += struct.pack("<II", addi(6, 6, -1), bne(6, 0, -(len(body) + 4)))
    body += struct.pack("<I", WFI)
    loop = page - 0x10
    prog = li32(6, 200) + [H.enc_j(0, 0)]
    jump_at = BASE + 4 * (len(prog) - 1)
    prog[-1] = H.enc_j(0, loop - jump_at)
    results = []
    for world in (W.World("interp"), jit_world(threshold=10**9)):
        world.put(BASE, prog)
        world.ram.write_bytes(loop, body)
        run(world, 100_000)
        assert world.hart.waiting
        results.append(world.state())
    assert results[0]["x"][12] == 200 * 5 and results[0]["x"][13] == 200
    assert results[1] == results[0]
    assert world.engine.slow_exits < 10, world.engine.slow_exits
    assert world.engine.native_instructions > 200 * 7


def test_native_interpreter_follows_branches_calls_and_returns_across_pages():
    """Cold code that branches, calls a function on another page and returns runs on
    in the native interpreter from one stretch to the next; an instruction it leaves to
    Python at the start of a stretch (a write of ``mie``) leaves once per run, and the
    results are the interpreter's, with small budgets ending runs anywhere."""
    far = BASE + 0x3000
    n = 300
    prog = li32(6, n) + [addi(10, 10, 1), H.enc_j(1, 0), addi(6, 6, -1), bne(6, 0, -12),
                         WFI]
    call_at = BASE + 4 * (len(prog) - 4)
    prog[-4] = H.enc_j(1, far - call_at)  # jal ra, far
    callee = [_csr(1, 0, 0x304, 0), addi(11, 11, 2), i_type(0x67, 0, 0, 1, 0)]  # jalr ra
    results = []
    for world in (W.World("interp"), jit_world(threshold=10**9)):
        world.put(BASE, prog)
        world.put(far, callee)
        h = world.hart
        done = 0
        while done < 100_000 and not h.waiting:
            done += world.engine.run(37)  # runs end in mid-stretch, and at transfers
        assert h.waiting
        results.append(world.state())
    assert results[0]["x"][10] == n and results[0]["x"][11] == 2 * n
    assert results[1] == results[0]
    assert world.engine.slow_exits <= n + 5, world.engine.slow_exits
    assert world.engine.native_instructions >= 6 * n


def test_native_interpreter_makes_hot_code_native():
    """Cold code runs in the native interpreter; a loop start that runs ``threshold``
    times becomes a compiled block, and the results stay the interpreter's."""
    prog = li32(6, 1000) + [addi(10, 10, 3), addi(6, 6, -1), bne(6, 0, -8), WFI]
    results = []
    for world in (W.World("interp"), jit_world(threshold=50)):
        world.put(BASE, prog)
        run(world)
        results.append(world.state())
    assert results[1] == results[0]
    contexts = list(world.engine._contexts.values())
    assert any(ctx.native for ctx in contexts), "the hot loop was not compiled"
    assert world.engine.native_instructions >= 3000


def test_a_long_straight_line_is_one_block_and_hot_by_its_instructions():
    """A function of 600 instructions without a branch (unrolled hash rounds, as
    Linux's blake2s) called fewer times than the hot threshold still gets compiled, as
    its instructions count (a short loop body would need the threshold's runs), into
    blocks of up to MAX_STRAIGHT instructions rather than MAX_INSNS; the results stay
    the interpreter's."""
    from pyhv.cpu.jit.codegen import MAX_INSNS, MAX_STRAIGHT

    far = BASE + 0x2000
    body = []
    for i in range(600):
        rd, a, b = 10 + i % 6, 10 + (i + 1) % 6, 10 + (i + 3) % 6
        body.append((r_type(0x33, rd, 0, a, b, 0), r_type(0x33, rd, 4, a, b, 0),
                     i_type(0x13, rd, 1, a, 7), addi(rd, a, i))[i % 4])
    callee = body + [i_type(0x67, 0, 0, 1, 0)]  # ret
    calls, threshold = 20, 50
    prog = li32(6, calls) + [0, addi(6, 6, -1), bne(6, 0, -8), WFI]
    call_at = BASE + 4 * (len(prog) - 4)
    prog[-4] = H.enc_j(1, far - call_at)  # jal ra, far
    results = []
    for world in (W.World("interp"), jit_world(threshold=threshold)):
        world.put(BASE, prog)
        world.put(far, callee)
        run(world)
        results.append(world.state())
    assert results[1] == results[0]
    starts = sorted(pc for ctx in world.engine._contexts.values() for pc in ctx.native
                    if far <= pc < far + 4 * len(callee))
    assert starts and starts[0] == far, f"not compiled in {calls} runs: {starts}"
    # two blocks (512 + 89 instructions), not ten of MAX_INSNS
    assert MAX_STRAIGHT == 512 and MAX_INSNS == 64
    assert starts == [far, far + 4 * MAX_STRAIGHT][:len(starts)], [hex(p) for p in starts]


def test_code_cache_serves_hot_starts_without_compiling(tmp_path, monkeypatch):
    """A second process finds the blocks of its hot starts in the code cache: loaded,
    not compiled (a quick block is installed when its start gets hot; an optimised one
    at its first run: test_a_block_that_runs_a_lot_is_compiled_again_optimised)."""
    from pyhv.cpu.jit.compiler import Compiler
    from pyhv.cpu.jit.engine import JitMachine

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    prog, data, n = _image("fmul.d")
    results = []
    for threshold in (1, 4):
        world = W.World("interp")
        comp = Compiler()
        world.engine = JitMachine(world, comp, threshold=threshold, sync=True).engines[0]
        results.append((_run_image(world, prog, data, n), comp.blocks_compiled,
                        comp.blocks_loaded))
    (first, compiled1, _), (second, compiled2, loaded2) = results
    assert compiled1 > 0
    assert compiled2 == 0 and loaded2 > 0
    assert first == second


def test_a_warm_start_brings_the_cached_blocks_of_its_page_along(tmp_path, monkeypatch):
    """A second process whose code the cache holds: the first start found there
    installs the other cached blocks of its page in the same trip to Python, instead of
    one trip each at their first runs; the results stay the interpreter's."""
    from pyhv.cpu.jit.compiler import Compiler
    from pyhv.cpu.jit.engine import JitMachine

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    far = BASE + 0x2000
    funcs = 6  # functions on one page, each its own block: x10 += k; ret
    n = 50
    prog = li32(6, n) + [0] * funcs + [addi(6, 6, -1), bne(6, 0, -4 * (funcs + 1)), WFI]
    first_call = BASE + 4 * (len(prog) - 3 - funcs)
    for k in range(funcs):
        prog[len(prog) - 3 - funcs + k] = H.enc_j(1, far + 16 * k - (first_call + 4 * k))
    callees = {far + 16 * k: [addi(10, 10, k + 1), i_type(0x67, 0, 0, 1, 0)]
               for k in range(funcs)}
    interp = W.World("interp")
    interp.put(BASE, prog)
    for at, code in callees.items():
        interp.put(at, code)
    run(interp)
    entries = []
    for second in (False, True):
        world = W.World("interp")
        comp = Compiler()
        world.engine = JitMachine(world, comp, threshold=10**9 if second else 1,
                                  sync=True).engines[0]
        world.put(BASE, prog)
        for at, code in callees.items():
            world.put(at, code)
        run(world)
        assert world.state() == interp.state()
        assert interp.hart.x[10] == n * funcs * (funcs + 1) // 2
        native = world.engine._context().native
        assert set(callees) <= set(native), "the functions' blocks were not installed"
        entries.append(world.engine.native_entries)
    assert comp.blocks_compiled == 0
    # one trip for the loop's page, one for the functions' page (and the run's ends),
    # not one for each function
    assert entries[1] < funcs, entries


def test_a_block_that_runs_a_lot_is_compiled_again_optimised(tmp_path, monkeypatch):
    """A quickly compiled loop counts the instructions it runs; past OPT_AFTER it is
    compiled again by the optimising code generator and swapped in, and the results
    stay the interpreter's. A second process finds the optimised version in the code
    cache and installs it at once."""
    from pyhv.cpu.jit.codegen import OPT_AFTER
    from pyhv.cpu.jit.compiler import Compiler
    from pyhv.cpu.jit.engine import JitMachine

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    # (the block at BASE is a region holding the loop too: the guest's slices may
    # end in either, and one of them runs past OPT_AFTER)
    n = 2 * OPT_AFTER // 3 + 5000
    prog = li32(6, n) + [addi(10, 10, 3), addi(6, 6, -1), bne(6, 0, -8), WFI]
    interp = W.World("interp")
    interp.put(BASE, prog)
    run(interp, 4 * n)
    for second in (False, True):
        world = W.World("interp")
        comp = Compiler()
        # the second process: nothing ever gets hot, the optimised block is installed
        # from the code cache at its start's first run
        world.engine = JitMachine(world, comp, threshold=10**9 if second else 1,
                                  sync=True).engines[0]
        world.put(BASE, prog)
        run(world, 4 * n)
        assert world.state() == interp.state() and interp.hart.x[10] == 3 * n
        native = world.engine._context().native
        assert native.optimised & {BASE, BASE + 8}, "the hot loop was not compiled again"
        loop = min(native.optimised)
        assert native[loop][0] == comp.known[next(k for k in comp.known if k.endswith("_o"))]
        assert (comp.blocks_compiled == 0) == second  # the second run loads both tiers


@pytest.mark.parametrize("hot_ips", [None, float("inf")])
def test_a_hot_loop_is_compiled_while_the_compiler_is_over_its_budget(tmp_path, monkeypatch,
                                                                         hot_ips):
    """A loop that gets hot after the compiler has spent its budget (a program run after
    a Linux boot) is put off once, then compiled when its start asks again having run
    HOT_IPS instructions a second or more; with an unreachable HOT_IPS it stays put off
    and interpreted. Either way the results are the interpreter's. (Without the
    baseline tier: with it, see the next test.)"""
    world, _comp = _loop_over_budget(tmp_path, monkeypatch, hot_ips, baseline=False)
    ctx = world.engine._context()
    loop = BASE + 8
    assert world.engine.deferred >= 1
    asked = loop in ctx.queued or loop in ctx.native
    assert asked == (hot_ips is None), (world.engine.deferred, ctx.deferred)


def test_over_its_budget_the_compiler_gets_no_work_from_baseline_blocks(tmp_path, monkeypatch):
    """With the baseline tier, a loop that gets hot while the compiler is over its
    budget runs as a baseline block at once (built on the guest's thread, in
    microseconds), but neither its quick block nor, below HOT_IPS, its region is
    queued: the compiler's thread gets nothing from it. Results as the interpreter's."""
    from pyhv.cpu.jit import stencils

    if not stencils.host_supported():
        pytest.skip("the baseline tier is for x86-64 hosts")
    world, comp = _loop_over_budget(tmp_path, monkeypatch, float("inf"), baseline=True)
    ctx = world.engine._context()
    loop = BASE + 8
    assert loop in ctx.native.baseline
    assert not ctx.queued and comp.pending() == 0 and comp.blocks_compiled == 0
    # asked twice (its quick block, then its region, ~87,000 runs later), put off both
    assert world.engine.deferred >= 2


def test_quick_blocks_compiled_when_idle_use_only_what_the_budget_leaves(tmp_path,
                                                                        monkeypatch):
    """The quick blocks of baseline blocks (the idle queue) are compiled only while all
    compiling so far is within the compiler's budget, and the seconds they took do not
    count against the budget of regions and hot quick blocks: a run whose compiler was
    idle early must not put off the regions of the loops it goes on to. Waiting for
    every block (poll with wait, a guest stuck on one) takes the idle queue too."""
    import time

    from pyhv.cpu.jit.compiler import Compiler

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    comp = Compiler()
    monkeypatch.setattr(comp, "background", False)
    sent = []
    monkeypatch.setattr(comp, "_send", lambda force_idle=False: sent.append(force_idle))
    comp.submit("b_idle", "", lambda addr: None, idle=True)
    assert not comp.over_budget()  # (the budget's clock starts)
    comp._started -= 1.0
    spent = comp._allowance(time.perf_counter()) + 1.0
    comp.compile_seconds = comp.idle_seconds = spent  # all of it on idle batches
    assert not comp.over_budget()
    assert comp._next_batch() == []  # the idle queue waits
    assert comp._next_batch(force_idle=True) == [("b_idle", "")]
    comp.idle_seconds = 0.0  # the same seconds on regions and hot quick blocks
    assert comp.over_budget()


def _loop_over_budget(tmp_path, monkeypatch, hot_ips, baseline: bool):
    """A counted loop of 200,000 iterations run with the compiler always over its budget
    (and HOT_IPS as given, if not None), checked against the interpreter: (its world,
    its compiler)."""
    from pyhv.cpu.jit import engine as E
    from pyhv.cpu.jit.compiler import Compiler

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    monkeypatch.setattr(Compiler, "over_budget", lambda self: True)
    if hot_ips is not None:
        monkeypatch.setattr(E, "HOT_IPS", hot_ips)
    n = 200_000
    prog, interp = counted_loop(n)
    world = W.World("interp")
    comp = Compiler()
    world.engine = E.JitMachine(world, comp, baseline=baseline).engines[0]
    world.put(BASE, prog)
    try:
        run(world, 4 * n)
    finally:
        world.engine.close()
    assert world.state() == interp.state()
    return world, comp


def counted_loop(n: int) -> tuple[list[int], W.World]:
    """A loop of ``n`` iterations (x10 += 3) and the interpreter's world that ran it."""
    prog = li32(6, n) + [addi(10, 10, 3), addi(6, 6, -1), bne(6, 0, -8), WFI]
    interp = W.World("interp")
    interp.put(BASE, prog)
    run(interp, 4 * n)
    return prog, interp


def beq(rs1, rs2, off):
    return H.enc_b(0, rs1, rs2, off)


@pytest.mark.parametrize("shape", ["early exit", "join"])
def test_a_hot_loop_with_branches_inside_becomes_one_optimised_region(tmp_path, monkeypatch,
                                                                      shape):
    """A hot loop whose body branches (a way out in the middle, an if/else that joins
    again) is compiled again, optimised, as one region that runs the whole loop,
    branches and all: the results stay the interpreter's, and once it is in, the loop
    runs without leaving it (few native entries for many iterations)."""
    from pyhv.cpu.jit.codegen import OPT_AFTER
    from pyhv.cpu.jit.compiler import Compiler
    from pyhv.cpu.jit.engine import JitMachine

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    n = OPT_AFTER
    if shape == "early exit":  # a2 counts down; leaves early when a0 reaches a1
        body = [addi(10, 10, 3), beq(10, 11, 12), addi(6, 6, -1), bne(6, 0, -12), WFI]
    else:  # odd/even: a0 += 1 or a3 += 5, joining at the counter
        body = [i_type(0x13, 5, 7, 6, 1),  # andi t0, a2, 1
                beq(5, 0, 12), addi(10, 10, 1), H.enc_j(0, 8), addi(13, 13, 5),
                addi(6, 6, -1), bne(6, 0, -24), WFI]
    prog = li32(6, n) + body
    interp = W.World("interp")
    interp.put(BASE, prog)
    interp.hart.x[11] = 3 * (n + 7)  # never reached: the loop runs out first
    run(interp, 10 * n)
    world = W.World("interp")
    world.engine = JitMachine(world, Compiler(), threshold=1, sync=True).engines[0]
    world.put(BASE, prog)
    world.hart.x[11] = 3 * (n + 7)
    run(world, 10 * n)
    assert world.state() == interp.state() and interp.hart.waiting
    native = world.engine._context().native
    assert native.optimised, "the hot loop was not compiled again"
    stats = world.engine.stats()
    assert stats["native_instructions"] > n
    assert stats["native_entries"] < n // 100, stats  # the loop stays in one function


@pytest.mark.parametrize("word", [
    i_type(0x13, 5, 1, 6, 1 << 6),  # slli with imm[11:6] != 0
    i_type(0x13, 5, 5, 6, (8 << 6) | 3),  # srli/srai's funct6 neither 0 nor 16
    i_type(0x1B, 5, 1, 6, 1 << 5),  # slliw with imm[5] set
    i_type(0x1B, 5, 2, 6, 0),  # OP-IMM-32 funct3 2
    i_type(0x67, 5, 1, 6, 0),  # jalr with funct3 1
    H.enc_b(2, 5, 6, 8),  # branch funct3 2
    i_type(0x03, 5, 7, 6, 0),  # load funct3 7
    H.enc_s(0x23, 4, 6, 5, 0),  # store funct3 4
    r_type(0x33, 5, 0, 6, 7, 2),  # OP funct7 2
    r_type(0x3B, 5, 1, 6, 7, 32),  # OP-32 sllw with funct7 32
], ids=lambda w: f"{w:08x}")
def test_reserved_encodings_of_fast_ops_trap_as_on_the_interpreter(word):
    """The native interpreter's decoded cache runs the common integer, load, store and
    control-transfer instructions itself; a reserved encoding of their opcodes is an
    illegal-instruction trap there too, after the instructions before it ran."""
    handler = BASE + 0x800
    prog = [addi(6, 0, 64), addi(7, 0, 5), word, addi(10, 0, 1), WFI]
    worlds = (W.World("interp"), jit_world(threshold=10**9))
    for w in worlds:
        w.put(BASE, prog)
        w.put(handler, [WFI])
        w.hart.mtvec = handler
        w.hart.pc = BASE
        run(w, 1000)
        assert w.hart.waiting
    interp, jit = worlds
    assert interp.hart.mcause == 2 and interp.hart.mtval == word
    assert jit.state() == interp.state()


# -- the baseline tier (stencils.py) -----------------------------------------------------

def _many_blocks(n_blocks: int, rounds: int) -> list[int]:
    """``rounds`` passes over ``n_blocks`` blocks of ALU work, loads and stores, each
    block ending in a jump to the next: many distinct baseline blocks."""
    data = OUT
    prog = li32(6, rounds) + _la(7, data)
    loop = len(prog)
    for k in range(n_blocks):
        prog += [addi(10, 10, k + 1), r_type(0x33, 11, 4, 11, 10, 0),  # xor a1, a1, a0
                 i_type(0x03, 12, 3, 7, 8 * (k % 64)),  # ld a2, 8k(t2)
                 r_type(0x33, 12, 0, 12, 11, 0),  # add a2, a2, a1
                 sd(12, 7, 8 * (k % 64)),
                 H.enc_j(0, 4)]  # jal x0, +4: the block ends
    prog += [addi(6, 6, -1), H.enc_b(0, 6, 0, 8)]  # beq t1, x0, +8 (to the wfi)
    prog += [H.enc_j(0, 4 * (loop - len(prog))), WFI]  # (too far for a branch)
    return prog


def test_baseline_blocks_match_the_interpreter_and_survive_a_full_arena(monkeypatch):
    """Copied-stencil blocks run a program of many blocks as the interpreter does, also
    when their arena fills up and is emptied (every baseline block dropped, then built
    again as the guest goes on)."""
    from pyhv.cpu.jit import stencils

    monkeypatch.setattr(stencils, "CHUNK", 0x10000)  # room for ~200 blocks of code
    monkeypatch.setattr(stencils, "MAX_CHUNKS", 1)
    prog = _many_blocks(300, 4)
    results = []
    for world in (W.World("interp"), jit_world(threshold=BASELINE_TIER)):
        world.put(BASE, prog)
        run(world, 400_000)
        assert world.hart.waiting
        results.append((world.state(), bytes(world.ram.mv[OUT - BASE:OUT - BASE + 512])))
    assert results[1] == results[0]
    engine = world.engine
    assert engine.baseline_blocks > 300  # built again after the resets
    assert engine.machine.baseline.arena.resets > 0
    assert engine.native_instructions > 4 * 300 * 6 * 0.9


def test_a_baseline_block_that_runs_a_lot_gets_its_llvm_block(tmp_path, monkeypatch):
    """A start gets a baseline block after ``base_runs`` runs; after ``threshold`` runs
    in all its LLVM block replaces it; the results stay the interpreter's."""
    from pyhv.cpu.jit.compiler import Compiler
    from pyhv.cpu.jit.engine import JitMachine

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))  # nothing cached: compiled here
    prog = li32(6, 400) + [addi(10, 10, 29), addi(6, 6, -1), bne(6, 0, -8), WFI]
    interp = W.World("interp")
    interp.put(BASE, prog)
    run(interp)
    world = W.World("interp")
    comp = Compiler()
    world.engine = JitMachine(world, comp, threshold=50, sync=True, base_runs=4).engines[0]
    world.put(BASE, prog)
    loop = BASE + 4 * (len(prog) - 4)
    ctx = None
    seen_baseline = False
    while not world.hart.waiting:
        world.engine.run(40)
        for ctx in world.engine._contexts.values():
            seen_baseline |= loop in ctx.native.baseline
    assert world.state() == interp.state()
    assert seen_baseline and world.engine.baseline_blocks >= 1
    assert ctx is not None and loop in ctx.native and loop not in ctx.native.baseline
    assert comp.blocks_compiled >= 1


def test_a_baseline_blocks_region_goes_before_quick_blocks_compiled_when_idle(
        tmp_path, monkeypatch):
    """A hot loop's baseline block asks for its quick LLVM block for when the compiler
    is idle, then, after OPT_AFTER of its instructions, for its optimised region, which
    the compiler takes first; the region replaces the baseline block, and the results
    stay the interpreter's."""
    from pyhv.cpu.jit import codegen, stencils
    from pyhv.cpu.jit import engine as E
    from pyhv.cpu.jit.compiler import OPT, Compiler

    if not stencils.host_supported():
        pytest.skip("the baseline tier is for x86-64 hosts")
    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    monkeypatch.setattr(codegen, "OPT_AFTER", 3_000)  # its region after 1,000 runs
    n = 300_000
    prog, interp = counted_loop(n)
    send = Compiler._send
    monkeypatch.setattr(Compiler, "_send", lambda self, force_idle=False: False)  # busy
    world = W.World("interp")
    comp = Compiler()
    world.engine = E.JitMachine(world, comp, threshold=64, base_runs=16).engines[0]
    world.put(BASE, prog)
    engine = world.engine
    loop = BASE + 8
    try:
        run(world, 20_000)
        ctx = engine._context()
        assert loop in ctx.native.baseline and loop in ctx.queued
        assert [k for k, _ in comp._batch_opt] and all(k.endswith(OPT) for k, _ in comp._batch_opt)
        assert comp._batch_idle and not comp._batch
        assert loop in ctx.native.optimised  # asked for
        monkeypatch.setattr(Compiler, "_send", send)
        batch = comp._next_batch()
        assert batch and all(k.endswith(OPT) for k, _ in batch)  # the region first
        comp._batch_opt[:0] = batch
        comp.poll(wait=True)  # the region, then the quick block (too late: not linked)
        assert loop in ctx.native and loop not in ctx.native.baseline
        assert ctx.native[loop][0] == comp.known[next(k for k in comp.known if k.endswith(OPT))]
        run(world, 4 * n)
    finally:
        engine.close()
    assert world.state() == interp.state()


def test_baseline_blocks_are_named_for_perf(tmp_path, monkeypatch):
    """With PYHV_JIT_PERFMAP, a baseline block's code gets a line in perf's map file
    (``base_<guest pc>``, its address and size), as compiled blocks do: without it,
    perf reports the time in copied stencils as anonymous addresses."""
    from pyhv.cpu.jit import engine as E
    from pyhv.cpu.jit import perfmap, stencils
    from pyhv.cpu.jit.compiler import Compiler

    if not stencils.host_supported():
        pytest.skip("the baseline tier is for x86-64 hosts")
    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    lines: list[str] = []
    monkeypatch.setattr(perfmap, "ENABLED", True)
    monkeypatch.setattr(perfmap, "_append", lines.extend)
    prog, interp = counted_loop(50_000)
    world = W.World("interp")
    comp = Compiler()
    world.engine = E.JitMachine(world, comp, threshold=1 << 30, base_runs=16).engines[0]
    world.put(BASE, prog)
    try:
        run(world, 200_000)
    finally:
        world.engine.close()
    assert world.state() == interp.state()
    named = [ln.split() for ln in lines if ln.split()[2] == f"base_{BASE + 8:x}"]
    assert len(named) == 1 and int(named[0][1], 16) > 0, lines


@pytest.mark.parametrize("before, call", [
    (H.enc_j(1, 64).to_bytes(4, "little"), True),               # jal ra
    (H.enc_j(5, 64).to_bytes(4, "little"), True),               # jal t0
    (i_type(0x67, 1, 0, 6, 0).to_bytes(4, "little"), True),     # jalr ra, 0(t1)
    ((0x9002 | 6 << 7).to_bytes(2, "little"), True),            # c.jalr t1
    (H.enc_j(0, 64).to_bytes(4, "little"), False),              # j (no link)
    (i_type(0x67, 0, 0, 1, 0).to_bytes(4, "little"), False),    # ret
    ((0x9002).to_bytes(2, "little"), False),                    # c.ebreak
    (addi(1, 1, 8).to_bytes(4, "little"), False),
])
def test_a_return_address_is_known_by_the_call_before_it(before, call):
    from pyhv.cpu.jit.engine import _after_call

    ram = memoryview(bytearray(0x2000))
    pc = 0x80001100
    off = 0x1100
    ram[off - len(before):off] = before
    assert _after_call(ram, off, pc) == call
    assert not _after_call(ram, 0, 0x80001000)  # (a page's first instruction: not looked at)


def test_a_return_address_inside_a_loops_region_gets_a_region_of_its_own(tmp_path,
                                                                        monkeypatch):
    """A loop that calls a function: every return enters the loop's code at the return
    address, inside the region compiled from the loop's head, which cannot be entered
    there. A start inside a region is otherwise put off (a loop's inner blocks stop
    running once the region holding them is in); a return address is entered by every
    return, so it gets its own optimised region (recursive and call-heavy code ran
    there as baseline blocks, ~30% of a recursive fib's time). Results stay the
    interpreter's."""
    from pyhv.cpu.jit import codegen
    from pyhv.cpu.jit import engine as E
    from pyhv.cpu.jit.compiler import OPT, Compiler

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    monkeypatch.setattr(codegen, "OPT_AFTER", 3_000)
    n = 20_000
    prog = li32(6, n) + [
        addi(12, 12, 1),                # loop: (its block runs more instructions than
        addi(13, 13, 2),                # the return address's: its region comes first)
        addi(14, 14, 3),
        addi(15, 15, 4),
        beq(6, 0, 8),                   # (never taken: the region goes on past the call)
        H.enc_j(1, 20),                 # jal ra, func
        addi(10, 10, 3),                # the return address
        addi(6, 6, -1),
        bne(6, 0, -32),                 # to loop
        WFI,
        addi(11, 11, 1),                # func: a1 += 1
        i_type(0x67, 0, 0, 1, 0),       # ret
    ]
    interp = W.World("interp")
    interp.put(BASE, prog)
    run(interp, 20 * n)
    world = W.World("interp")
    comp = Compiler()
    world.engine = E.JitMachine(world, comp, threshold=64, sync=True).engines[0]
    world.put(BASE, prog)
    back = BASE + 32
    try:
        run(world, 20 * n)
        ctx = world.engine._context()
        assert back in ctx.native and back not in ctx.native.put_off
        regions = {comp.known[k] for k in comp.known if k.endswith(OPT)}
        assert ctx.native[back][0] in regions
    finally:
        world.engine.close()
    assert world.state() == interp.state()
    assert world.hart.x[10] == 3 * n and world.hart.x[11] == n


def test_a_loop_with_divisions_and_remainders_is_one_baseline_block():
    """M's divisions, remainders and high multiplies are fast ops (the decoded cache runs
    them, the stencils copy them): a loop with ``x % 13`` in it is one baseline block,
    not two with the native interpreter between them; the results (division by zero
    and overflow included) are the interpreter's. Linux's spin hint, a DIV by x0,
    still ends a block."""
    from pyhv.isa.decoder import RELAX_DIV

    m = 0x33  # OP; OP-32 is 0x3B; M's funct7 is 1
    body = [r_type(0x33, 11, 7, 10, 12, 1),   # remu a1, a0, a2 (a2 = 13)
            r_type(0x3B, 13, 6, 10, 14, 1),   # remw a3, a0, a4 (a4 = 0: a3 = a0)
            r_type(m, 15, 4, 5, 16, 1),       # div a5, t0, a6 (t0 = -2**63, a6 = -1)
            r_type(m, 17, 3, 10, 12, 1),      # mulhu a7, a0, a2
            r_type(m, 28, 5, 10, 14, 1),      # divu t3, a0, a4 (by zero: all ones)
            r_type(0x33, 10, 0, 10, 11, 0),   # add a0, a0, a1
            addi(6, 6, -1)]
    prog = (li32(6, 3000) + [addi(12, 0, 13), addi(14, 0, 0), addi(16, 0, -1),
                             addi(5, 0, 1), i_type(0x13, 5, 1, 5, 63)]  # slli t0, t0, 63
            + body + [bne(6, 0, -4 * len(body)), RELAX_DIV | (18 << 7) | (18 << 15), WFI])
    results = []
    for world in (W.World("interp"), jit_world(threshold=BASELINE_TIER)):
        world.put(BASE, prog)
        run(world, 200_000)
        assert world.hart.waiting
        results.append(world.state())
    assert results[1] == results[0]
    x = results[0]["x"]
    assert x[28] == (1 << 64) - 1 and x[15] == 1 << 63 and x[18] == (1 << 64) - 1
    ctx = world.engine._context()
    loop = BASE + 4 * (len(prog) - len(body) - 3)
    assert ctx.native.baseline[loop].n == len(body) + 1  # the whole loop, its branch too


def test_dispatch_table_costs_memory_only_where_blocks_are_linked() -> None:
    """A hart has a 1 MiB dispatch table for every translation context it ran (16 in a
    4-hart Linux boot): an empty one is untouched zero pages, a linked block makes
    its entry's page and the occupancy bits' page resident, and emptying the table
    gives them back."""
    import ctypes

    from pyhv.cpu.jit import native_interp
    from pyhv.cpu.jit import state as S
    from pyhv.cpu.jit.engine import _NativeBlocks

    libc = ctypes.CDLL(None, use_errno=True)
    size = ctypes.sizeof(S.DispatchTable)
    pages = -(-size // 4096)

    def resident(table) -> int:
        vec = (ctypes.c_ubyte * pages)()
        assert libc.mincore(ctypes.c_void_p(ctypes.addressof(table)), ctypes.c_size_t(size),
                            vec) == 0, ctypes.get_errno()
        return sum(v & 1 for v in vec)

    table = S.new_table()
    runs = (ctypes.c_uint32 * native_interp.HEAT_WORDS)()
    blocks = _NativeBlocks(table, runs, 256)
    assert resident(table) == 0
    blocks.install(0x8000_2000, 0x1234, 0x80002)
    assert resident(table) == 2  # (mincore: only pages touched, nothing read yet)
    blocks.install(0, 0x5678, 0)  # pc 0 (xv6's user programs start there) is a tag too
    assert resident(table) == 3
    assert table[0] == S.table_tag(0) != S.FREE_SLOT
    blocks.clear()
    assert resident(table) == 0
    assert all(table[4 * i] == S.FREE_SLOT for i in range(S.NDISPATCH))


def test_dispatch_table_occupancy_bits_follow_its_entries() -> None:
    """The bit the native interpreter asks before a table's entries is set while
    either slot of a pair holds a block and clear when neither does: a clear bit with
    a block in the pair would hide it from transfers out of interpreted code."""
    import ctypes

    from pyhv.cpu.jit import native_interp
    from pyhv.cpu.jit import state as S
    from pyhv.cpu.jit.engine import _NativeBlocks

    def bit(table, pc) -> bool:
        pair = S.slot(pc) >> 1
        return bool(table[4 * S.NDISPATCH + (pair >> 6)] >> (pair & 63) & 1)

    table = S.new_table()
    runs = (ctypes.c_uint32 * native_interp.HEAT_WORDS)()
    blocks = _NativeBlocks(table, runs, 256)
    a, b = 0x8000_1000, 0x8000_1000 + 4 * S.NDISPATCH  # one pair: both slots of it
    other = 0x8000_1000 + 8  # the next pair
    assert not any(bit(table, pc) for pc in (a, b, other))
    blocks.install(a, 0x1234, 0x80001)
    blocks.install(b, 0x5678, 0x80001)
    assert bit(table, a) and not bit(table, other)
    blocks.unlink(a)
    assert bit(table, b)  # the other slot still holds one
    blocks.forget(b)
    assert not bit(table, a)
    blocks.link(a)  # known, linked again
    assert bit(table, a)
    blocks.clear()
    assert not bit(table, a)
    assert all(table[4 * i] == S.FREE_SLOT for i in range(S.NDISPATCH))


def test_an_optimised_region_inside_another_is_not_compiled_twice(tmp_path, monkeypatch):
    """A loop's head asks for its optimised region as well as the code that holds the
    loop: the one inside is put off while the holding region is queued or compiled
    (withdrawn from the queue if it was waiting there), and compiled only if its start
    asks again (it still runs on its own, entered from outside)."""
    from pyhv.cpu.jit.compiler import OPT, Compiler
    from pyhv.cpu.jit.engine import JitMachine

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    monkeypatch.setattr(Compiler, "_send", lambda self: None)  # everything stays queued
    prog = li32(6, 1000) + [addi(10, 10, 3), addi(6, 6, -1), bne(6, 0, -8), WFI]
    loop = BASE + 4 * len(li32(6, 1000))
    for outer_first in (True, False):
        world = W.World("interp")
        comp = Compiler()
        engine = JitMachine(world, comp, threshold=10**9).engines[0]
        world.put(BASE, prog)
        ctx = engine._context()
        native = ctx.native
        for start in (BASE, loop):  # (quick blocks there: what asks to be optimised)
            dict.__setitem__(native, start, (0, BASE >> 12))
        def queued(comp: Compiler = comp) -> list[int]:
            return sorted(int(k[2:].split("_")[0], 16) for k, _ in comp._batch_opt
                          if k.endswith(OPT))

        first, second = (BASE, loop) if outer_first else (loop, BASE)
        engine._reoptimise(ctx, first)
        engine._reoptimise(ctx, second)
        # the loop's region: put off (outer first) or withdrawn (outer second)
        assert queued() == [BASE]
        assert engine.inner_regions_put_off == 1
        engine._reoptimise(ctx, loop)  # it asks again: compiled on its own now
        assert queued() == [BASE, loop]
        assert engine.stats()["inner_regions_put_off"] == 1


def test_a_start_waiting_for_the_compiler_does_not_keep_asking(tmp_path, monkeypatch):
    """A hot loop whose block waits in the compiler's queue runs in the native
    interpreter without leaving for Python to ask again (each ask a trip through Python
    for nothing), across coolings too; once the block is ready it is installed and runs,
    and the results are the interpreter's."""
    from pyhv.cpu.jit import engine as E
    from pyhv.cpu.jit.compiler import Compiler

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    n = 300_000
    prog, interp = counted_loop(n)
    send = Compiler._send
    monkeypatch.setattr(Compiler, "_send", lambda self, force_idle=False: False)  # busy
    world = W.World("interp")
    comp = Compiler()
    world.engine = E.JitMachine(world, comp, threshold=64, baseline=False).engines[0]
    world.put(BASE, prog)
    engine = world.engine
    try:
        run(world, 2 * n)
        ctx = engine._context()
        loop = BASE + 8
        assert loop in ctx.queued and loop not in ctx.native
        for _ in range(3):  # coolings keep it quiet
            engine._cool(engine._cooled + 1)
            run(world, n // 4)
        # ~270,000 runs of the loop interpreted: one trip to ask, a few more at most
        # (every 4,096 runs it was ~70)
        assert engine.native_entries < 20, engine.native_entries
        monkeypatch.setattr(Compiler, "_send", send)
        comp.poll(wait=True)
        assert loop in ctx.native and loop not in ctx.queued
        run(world, 4 * n)
    finally:
        engine.close()
    assert world.state() == interp.state()


def test_a_finished_batch_brings_the_native_interpreter_back_to_python(tmp_path, monkeypatch):
    """When the compiler's thread has a batch ready (Compiler.kick), the native
    interpreter leaves at its next stretch start rather than at the end of its
    budget, so that the block is loaded at once; the instructions it ran count, and
    the results stay the interpreter's."""
    from pyhv.cpu.jit import engine as E
    from pyhv.cpu.jit.compiler import Compiler

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    n = 50_000
    prog, interp = counted_loop(n)
    world = W.World("interp")
    comp = Compiler()
    # nothing compiled: the native interpreter alone
    world.engine = E.JitMachine(world, comp, threshold=10**9, baseline=False).engines[0]
    world.put(BASE, prog)
    engine = world.engine
    try:
        engine.run(100)  # the native interpreter comes up
        comp.kick.value = 1
        before = world.hart.instret
        ran = engine.run(100_000)
        # it left at a stretch start (the loop's branch back) and came back after
        # Python's poll cleared the kick: one more entry, the budget still used up
        assert ran == 100_000 and world.hart.instret == before + ran
        assert comp.kick.value == 0
        entries = engine.native_entries
        assert 2 <= entries <= 4, entries
        run(world, 4 * n)
    finally:
        engine.close()
    assert world.state() == interp.state()


def _insns(words: list[int]) -> list:
    from pyhv.isa.decoder import decode

    return [(BASE + 4 * i, decode(w, 4)) for i, w in enumerate(words)]


def test_access_groups_check_a_prologue_once_and_stop_where_the_base_may_change():
    """Loads or stores (integer or FP) through one base register on one straight path
    are checked together (codegen.access_groups): a prologue's saves through sp are one
    group; a write of the base, a branch target or a branch ends a group; bytes more
    than 4 KiB apart, a load of the clock and a lone access are not grouped."""
    from pyhv.cpu.jit.codegen import access_groups

    sp, ra, s0, s1, a0, a5 = 2, 1, 8, 9, 10, 15
    prologue = _insns([addi(sp, sp, -32), sd(ra, sp, 24), sd(s0, sp, 16), addi(a5, a0, 1),
                       sd(s1, sp, 8), addi(sp, sp, 16), sd(s1, sp, 0), sd(s0, sp, -8)])
    groups = access_groups(prologue, set())
    # (first member, lowest offset, span, members): sp's stores before and after it moves
    assert groups == {1: (1, 8, 24, 3), 2: (1, 8, 24, 3), 4: (1, 8, 24, 3),
                      6: (6, -8, 16, 2), 7: (6, -8, 16, 2)}
    # a branch target between two stores: two lone stores
    assert access_groups(prologue[:3], {prologue[2][0]}) == {}
    # a branch between them: the same
    split = _insns([sd(ra, sp, 8), bne(a0, 0, 8), sd(s0, sp, 0)])
    assert access_groups(split, set()) == {}
    # a load that writes its own base ends the group after itself
    chain = _insns([i_type(0x03, a0, 3, a0, 0), i_type(0x03, a5, 3, a0, 8),
                    i_type(0x03, s0, 3, a0, 16)])
    assert access_groups(chain, set()) == {1: (1, 8, 16, 2), 2: (1, 8, 16, 2)}
    # bytes more than 4 KiB apart (three pages, maybe): not grouped; 4 KiB: grouped
    assert access_groups(_insns([sd(ra, a5, -2048), sd(s0, a5, 2041)]), set()) == {}
    assert access_groups(_insns([sd(ra, a5, -2048), sd(s0, a5, 2040)]), set()) == {
        0: (0, -2048, 4096, 2), 1: (0, -2048, 4096, 2)}
    # FP stores are members too, and other instructions between members do not matter
    fp = _insns([sd(ra, sp, 16), csrrw_fflags(0, 0), fsd(8, sp, 8), fsd(9, sp, 0)])
    assert access_groups(fp, set()) == {k: (0, 0, 24, 3) for k in (0, 2, 3)}
    # a load that reads the clock: alone
    loads = _insns([i_type(0x03, ra, 3, a5, 0), i_type(0x03, s0, 3, a5, 8)])
    assert access_groups(loads, set(), clock={loads[0][0]}) == {}


def test_a_baseline_blocks_branch_names_both_targets_table_slots():
    """A baseline block ending in a branch (or jal) goes on through the dispatch table
    to the block at either target without hashing the pc: each way's table slot is
    patched into its stencil when the block is built (stencils.py, ``ways_out``)."""
    import ctypes

    from pyhv.cpu.jit import state as S
    from pyhv.cpu.jit import stencils

    if not stencils.host_supported():
        pytest.skip("x86-64 stencils")
    world = jit_world(threshold=BASELINE_TIER)
    baseline = world.engine.machine.baseline
    mode = baseline.modes[0]

    def piece(d):  # (an rd other than x0: the stencil without x0's reset)
        return mode["st_" + d.name + ("_nz" if d.rd and "st_" + d.name + "_nz" in mode
                                      else "")]

    start = BASE + 0x1F0
    for last, taken in ((bne(10, 11, -0x1F0), start + 4 - 0x1F0),
                        (H.enc_j(1, 0x40), start + 4 + 0x40)):
        insns = _insns([addi(10, 10, 1)])
        insns = [(start, insns[0][1]), (start + 4, _insns([last])[0][1])]
        addr, _counter = baseline.build(False, insns, start, start + 8, 1000)
        st = piece(insns[1][1])
        at = len(mode["st_enter"].code) + len(piece(insns[0][1]).code)
        holes = list(stencils.HOLES)
        seen = {}
        for off, _pack, which, add, _rel, _lo, _hi, _wide in st.patches:
            if which in (holes.index("tslot"), holes.index("fslot")):
                v = ctypes.c_uint32.from_address(addr + at + off).value
                seen[holes[which]] = v - add
        assert seen["tslot"] == 32 * S.slot(taken)
        if insns[1][1].name == "bne":
            assert seen["fslot"] == 32 * S.slot(start + 8)


def test_baseline_blocks_keep_x0_zero_when_an_instruction_writes_it():
    """Instructions whose rd is x0 (an ALU op, a load, a jal) in baseline blocks, among
    ones with other rds (whose stencils skip resetting x0): x0 reads as zero after each,
    as on the interpreter."""
    body = [addi(0, 10, 5), r_type(0x33, 11, 0, 11, 0, 0),  # x0 = a0 + 5; a1 += x0
            i_type(0x03, 0, 3, 7, 0), addi(12, 0, 3),  # ld x0, 0(t2); a2 = x0 + 3
            addi(10, 10, 1), addi(6, 6, -1), H.enc_b(1, 6, 0, 8),  # bne t1, x0, +8
            WFI, H.enc_j(0, -32)]  # jal x0, back to the top
    results = []
    for world in (W.World("interp"), jit_world(threshold=BASELINE_TIER)):
        world.put(BASE, li32(6, 200) + _la(7, OUT) + body)
        run(world, 100_000)
        assert world.hart.waiting
        results.append(world.state())
    assert results[1] == results[0]
    assert results[0]["x"][0] == 0 and results[0]["x"][11] == 0 and results[0]["x"][12] == 3
    assert world.engine.baseline_blocks >= 1
