"""Differential test of pyhv's interpreter against unicorn (QEMU 5.0's TCG as a library).

Random straight-line RV64GC programs and systematic sweeps over edge-case operands run on
both machines from the same state; every x and f register (raw bits), fflags, frm, the
4 KiB data window and the final pc must agree. The generator, the instruction encoders
and the small spec adapter that corrects unicorn's pre-2019 F-extension behaviour
(NaN-boxing, fmin/fmax on signalling NaNs) live in ``conftest.py``. Run with ``-s`` to
see how many programs were compared.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("unicorn")

_FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# PYHV_DIFF_SCALE=10 runs ten times as many hypothesis examples (and slow-run programs).
_SCALE = float(os.environ.get("PYHV_DIFF_SCALE", "1"))


def _random_program_test(category: str, examples: int):
    @settings(_FAST, max_examples=max(1, int(examples * _SCALE)))
    @given(rng=st.randoms(use_true_random=False))
    def test(harness, rng: random.Random) -> None:
        harness.run_and_check(harness.generate(rng, category))

    test.__doc__ = f"Random {category!r} programs (5-40 instructions) agree with unicorn."
    return test


test_random_integer_programs = _random_program_test("int", 100)
test_random_muldiv_programs = _random_program_test("muldiv", 60)
test_random_memory_programs = _random_program_test("mem", 100)
test_random_compressed_programs = _random_program_test("rvc", 100)
test_random_fp_programs = _random_program_test("fp", 200)
test_random_mixed_programs = _random_program_test("all", 120)


def _run_many(harness, seed: int, count: int, label: str) -> None:
    rng = random.Random(seed)
    cats = list(harness.CATEGORIES)
    failures = []
    insns = 0
    t0 = time.perf_counter()
    for i in range(count):
        prog = harness.generate(rng, cats[i % len(cats)])
        harness.record(prog)
        insns += prog.n_insns()
        diffs = harness.check(prog)
        if diffs:
            failures.append((i, prog, diffs))
    print(
        f"\n[differential] {label}: {count} programs, {insns} instructions compared, "
        f"{len(failures)} mismatches, {time.perf_counter() - t0:.1f}s"
    )
    if failures:
        reports = []
        for i, prog, diffs in failures[:3]:
            reports.append(f"program #{i}, minimised:\n" + harness.describe(harness.minimize(prog)))
            reports.append("as generated:\n" + harness.describe(prog, diffs))
        pytest.fail(f"{len(failures)} of {count} programs disagree\n" + "\n".join(reports))


def test_fixed_seed_random_programs(harness) -> None:
    """2,000 programs from a fixed seed, cycling through every category."""
    _run_many(harness, 0x5EED, 2000, "fixed seed")


@pytest.mark.slow
def test_many_random_programs(harness) -> None:
    _run_many(harness, 0xC0FFEE, int(30000 * _SCALE), "slow run")


# -- systematic sweeps ----------------------------------------------------------------------

INT_EDGES = [
    0, 1, -1, 2, -2, 1 << 63, (1 << 63) - 1, -(1 << 31), (1 << 31) - 1, 0xFFFF_FFFF,
    0x8000_0000, 0x1_0000_0000, 63, 32,
]

F32_SPECIAL = [
    0x0000_0000, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0x7FA0_0000,
    0x0000_0001, 0x8000_0001, 0x007F_FFFF, 0x0080_0000, 0x7F7F_FFFF, 0xFF7F_FFFF,
    0x3F80_0000, 0xBF80_0000, 0x3EAA_AAAB, 0x3FC0_0000,
]
F64_SPECIAL = [
    0, 1 << 63, 0x7FF0 << 48, 0xFFF0 << 48, 0x7FF8 << 48, 0x7FF4 << 48,
    1, 0x8000_0000_0000_0001, 0x000F_FFFF_FFFF_FFFF, 0x0010 << 48, 0x7FEF_FFFF_FFFF_FFFF,
    0xFFEF_FFFF_FFFF_FFFF, 0x3FF0 << 48, 0xBFF0 << 48, 0x3FD5_5555_5555_5555, 0x3FF8 << 48,
]


def _chunks(seq: list, n: int):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _program(h, insns: list, x: dict[int, int] | None = None, f: list[int] | None = None,
             frm: int = 0):
    xs = [0] * 32
    for r, v in (x or {}).items():
        xs[r] = v & h.M64
    for r, v in h.RESERVED.items():
        xs[r] = v
    fs = list(f or []) + [0] * (32 - len(f or []))
    return h.Program([h.Unit([i]) for i in insns], xs, fs, frm, 0, bytes(h.DATA_SIZE))


def _check_all(h, programs) -> int:
    failures = []
    n = 0
    for prog in programs:
        n += 1
        h.record(prog)
        diffs = h.check(prog)
        if diffs:
            failures.append(h.describe(h.minimize(prog)))
    assert not failures, f"{len(failures)} of {n} sweep programs disagree:\n" + "\n".join(
        failures[:5]
    )
    return n


def test_integer_edge_operands(harness) -> None:
    """Every register-register ALU and M instruction on every pair of edge values."""
    h = harness
    srcs = h.WRITABLE_NZ[:14]
    dsts = h.WRITABLE_NZ[14:]
    x = dict(zip(srcs, INT_EDGES, strict=True))
    pairs = [(a, b) for a in srcs for b in srcs]

    def programs():
        for name, (op, f3, f7) in {**h.ALU_RR, **h.MUL_DIV}.items():
            for chunk in _chunks(pairs, len(dsts)):
                yield _program(h, [
                    h.I(h.enc_r(op, rd, f3, a, b, f7), f"{name} x{rd}, x{a}, x{b}")
                    for rd, (a, b) in zip(dsts, chunk, strict=False)
                ], x)

    _check_all(h, programs())


def _fp_sweep(h, mnemonics: list[str], rms: list[int], arity: int, values_s: list[int],
              values_d: list[int]):
    """Programs applying each mnemonic to every ``arity``-tuple of special values, each
    instruction followed by a flags capture into its own x register."""
    xdst = h.WRITABLE_NZ[:14]
    xflags = h.WRITABLE_NZ[14:]
    for mn in mnemonics:
        sfx = mn.split(".")[-1]  # the source format: fadd.s, fcvt.w.d, fcvt.s.d ...
        vals = values_s if sfx == "s" else values_d
        f = [(h.BOX | v) if sfx == "s" else v for v in vals]
        regs = list(range(len(vals)))
        tuples = [(a,) for a in regs]
        for _ in range(arity - 1):
            tuples = [t + (b,) for t in tuples for b in regs]
        for rm in rms:
            for chunk in _chunks(tuples, 14):
                insns = []
                for k, ops in enumerate(chunk):
                    ins = h.fp_insn(mn, 16 + k, *ops, rm=rm)
                    if ins.f_out is None:
                        ins = h.fp_insn(mn, xdst[k], *ops, rm=rm)
                    insns += [ins, h.flags_capture(xflags[k])]
                yield _program(h, insns, f=f)


def test_fp_binary_special_values(harness) -> None:
    """F/D two-operand instructions on all pairs of special values, in every rounding mode."""
    h = harness
    arith = [f"{op}.{s}" for op in ("fadd", "fsub", "fmul", "fdiv") for s in "sd"]
    other = [f"{op}.{s}" for op in ("fmin", "fmax", "feq", "flt", "fle", "fsgnj", "fsgnjn",
                                    "fsgnjx") for s in "sd"]
    _check_all(h, _fp_sweep(h, arith, [0, 1, 2, 3, 4], 2, F32_SPECIAL, F64_SPECIAL))
    _check_all(h, _fp_sweep(h, other, [0], 2, F32_SPECIAL, F64_SPECIAL))


# Operands whose products/quotients/sums land next to the underflow threshold (tininess is
# detected after rounding on RISC-V) and the overflow threshold.
F32_BOUNDARY = [
    0x0080_0000, 0x00FF_FFFF, 0x0080_0001, 0x007F_FFFF, 0x3F00_0000, 0x3F7F_FFFF,
    0x3F80_0001, 0x3EFF_FFFF, 0x8080_0000, 0xBF00_0000, 0x0000_0001, 0x3E80_0000,
    0x4000_0000, 0x3FFF_FFFF, 0x3380_0000, 0x7F7F_FFFF,
]
F64_BOUNDARY = [
    0x0010 << 48, 0x001F_FFFF_FFFF_FFFF, 0x0010_0000_0000_0001, 0x000F_FFFF_FFFF_FFFF,
    0x3FE0 << 48, 0x3FEF_FFFF_FFFF_FFFF, 0x3FF0_0000_0000_0001, 0x3FDF_FFFF_FFFF_FFFF,
    0x8010 << 48, 0xBFE0 << 48, 1, 0x3FD0 << 48, 0x4000 << 48, 0x3FFF_FFFF_FFFF_FFFF,
    0x3CA0 << 48, 0x7FEF_FFFF_FFFF_FFFF,
]


def test_fp_rounding_boundaries(harness) -> None:
    """Arithmetic at the underflow/overflow thresholds in every rounding mode (UF vs NX)."""
    h = harness
    arith = [f"{op}.{s}" for op in ("fmul", "fdiv", "fadd", "fsub") for s in "sd"]
    _check_all(h, _fp_sweep(h, arith, [0, 1, 2, 3, 4], 2, F32_BOUNDARY, F64_BOUNDARY))
    _check_all(h, _fp_sweep(h, ["fsqrt.s", "fsqrt.d", "fcvt.s.d"], [0, 1, 2, 3, 4], 1,
                            F32_BOUNDARY, F64_BOUNDARY))


def test_fp_fused_special_values(harness) -> None:
    """fmadd/fmsub/fnmsub/fnmadd on all triples of a smaller special-value set."""
    h = harness
    s8 = [0x0000_0000, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0x7FA0_0000,
          0x0080_0000, 0x3F80_0000]
    d8 = [0, 1 << 63, 0x7FF0 << 48, 0xFFF0 << 48, 0x7FF8 << 48, 0x7FF4 << 48, 0x0010 << 48,
          0x3FF0 << 48]
    fused = [f"{op}.{s}" for op in ("fmadd", "fmsub", "fnmsub", "fnmadd") for s in "sd"]
    _check_all(h, _fp_sweep(h, fused, [0, 2], 3, s8, d8))


def test_fp_unary_special_values(harness) -> None:
    """fsqrt, fclass, fcvt to integers and between formats, on the full value pools."""
    h = harness
    vs, vd = h.F32_VALUES, h.F64_VALUES
    mns = [f"{op}.{s}" for op in ("fsqrt", "fclass", "fcvt.w", "fcvt.wu", "fcvt.l", "fcvt.lu")
           for s in "sd"] + ["fcvt.s.d", "fcvt.d.s"]
    for lo in range(0, max(len(vs), len(vd)), 16):  # the sweep holds 16 sources at a time
        _check_all(h, _fp_sweep(h, mns, [0, 1, 2, 3, 4], 1, vs[lo:lo + 16] or vs[:1],
                                vd[lo:lo + 16] or vd[:1]))


def test_fcvt_from_integer_edge_values(harness) -> None:
    """fcvt.{s,d}.{w,wu,l,lu} from edge integers, including ones that must round."""
    h = harness
    values = sorted({v & h.M64 for v in [*h.INT_VALUES, *INT_EDGES, (1 << 24) + 1,
                                         (1 << 53) + 1, (1 << 63) - 1, -(1 << 53) - 1,
                                         0x7FFF_FFC0, 0xFFFF_FF7F]})
    srcs = h.WRITABLE_NZ[:14]
    xflags = h.WRITABLE_NZ[14:]
    mns = [f"fcvt.{s}.{i}" for s in "sd" for i in h.INT_FMTS]

    def programs():
        for chunk in _chunks(values, len(srcs)):
            x = dict(zip(srcs, chunk, strict=False))
            for mn in mns:
                for rm in range(5):
                    insns = []
                    for k, r in enumerate(srcs[:len(chunk)]):
                        insns += [h.fp_insn(mn, k, r, rm=rm), h.flags_capture(xflags[k])]
                    yield _program(h, insns, x)

    _check_all(h, programs())


def test_dynamic_rounding_mode_follows_frm(harness) -> None:
    """rm=dyn uses frm, including after csrrwi writes to frm inside the program."""
    h = harness
    f = [h.BOX | 0x3F80_0000, h.BOX | 0x3EAA_AAAB, 0x3FF0 << 48, 0x3FD5_5555_5555_5555]
    progs = []
    for frm in range(5):
        insns = []
        for k, new in enumerate([frm, (frm + 1) % 5, (frm + 3) % 5]):
            if k:
                insns.append(h.I(h.enc_i(0x73, 0, 5, new, 2), f"csrrwi x0, frm, {new}"))
            insns += [h.fp_insn("fadd.s", 4 + 2 * k, 0, 1, rm=7),
                      h.fp_insn("fdiv.d", 5 + 2 * k, 2, 3, rm=7),
                      h.flags_capture(10 + k)]
        progs.append(_program(h, insns, f=f, frm=frm))
    _check_all(h, progs)


def test_self_modifying_code_with_fence_i(harness) -> None:
    """An instruction that already ran is overwritten, fence.i, then run again: the new
    instruction must execute (pyhv caches decoded instructions per pc)."""
    h = harness
    progs = []
    expected = []
    for patch_kind in ("sw", "sh", "sh-hi"):
        if patch_kind == "sw":  # addi x5, x5, 1  ->  addi x5, x5, 16
            first = h.I(h.enc_i(0x13, 5, 0, 5, 1), "addi x5, x5, 1")
            new, f3, off, x5 = h.enc_i(0x13, 5, 0, 5, 16), 2, -12, 100 + 1 + 16
        elif patch_kind == "sh":  # c.addi x5, 1 + c.nop  ->  c.addi x5, -7
            first = h.I(h.c_ci(0, 5, 1, 1) | 0x0001 << 16, "c.addi x5, 1; c.nop")
            new, f3, off, x5 = h.c_ci(0, 5, -7 & 0x3F, 1), 1, -12, 100 + 1 - 7
        else:  # patch the upper half of addi x5, x5, 1 -> addi x5, x5, 0x7ff
            first = h.I(h.enc_i(0x13, 5, 0, 5, 1), "addi x5, x5, 1")
            new, f3, off, x5 = h.enc_i(0x13, 5, 0, 5, 0x7FF) >> 16, 1, -10, 100 + 1 + 0x7FF
        store = h.I(h.enc_s(0x23, f3, 7, 10, off), f"s{'hw'[f3 - 1]} x10, {off}(x7)")
        expected.append(x5)
        insns = [
            first,  # 0
            h.I(h.enc_b(1, 6, 0, 24), "bne x6, x0, +24"),  # 4 -> 28 (end)
            h.I(h.enc_i(0x13, 6, 0, 0, 1), "addi x6, x0, 1"),  # 8
            h.I(h.enc_u(0x17, 7, 0), "auipc x7, 0"),  # 12
            store,  # 16: patch the instruction at 0
            h.I(0x0000_100F, "fence.i"),  # 20
            h.I(h.enc_j(0, -24), "jal x0, -24"),  # 24 -> 0
        ]
        prog = _program(h, insns, {5: 100, 6: 0, 10: new})
        # Loops back once; pyhv spins on the final `j .` for the rest of the budget.
        progs.append(h.Program(prog.units, prog.x, prog.f, 0, 0, prog.data, budget=20))
    _check_all(h, progs)
    for prog, x5 in zip(progs, expected, strict=True):  # the patched instruction really ran
        assert h.run_pyhv(prog).x[5] == x5


# -- the encoders themselves -----------------------------------------------------------------


def test_encodings_match_llvm_mc(harness) -> None:
    """The hand-written encoders agree with LLVM's disassembler (mnemonic and operands)."""
    llvm_mc = shutil.which("llvm-mc")
    if llvm_mc is None:
        pytest.skip("llvm-mc not installed")
    rng = random.Random(11)
    texts: dict[tuple[int, int], str] = {}
    for _ in range(150):
        prog = harness.generate(rng, rng.choice(list(harness.CATEGORIES)))
        for _pc, ins in prog.assemble()[1]:
            texts[(ins.word, ins.size)] = ins.text
    keys = list(texts)
    src = "\n".join(" ".join(f"{b:#04x}" for b in w.to_bytes(n, "little")) for w, n in keys)
    out = subprocess.run(
        [llvm_mc, "--disassemble", "-triple=riscv64", "-mattr=+m,+a,+f,+d,+c", "-M", "numeric",
         "-M", "no-aliases"],
        input=src, capture_output=True, text=True, check=True,
    )
    # Older LLVM rejects fcvt.d.w/fcvt.d.wu/fcvt.d.s with rm != rne (they are exact, but the
    # spec still allows any valid rm); those lines produce a warning and no output.
    bad = {int(m) - 1 for m in re.findall(r"<stdin>:(\d+):\d+: warning", out.stderr)}
    for i in bad:
        assert re.match(r"fcvt\.d\.(w|wu|s) ", texts[keys[i]]), texts[keys[i]]
    dis = [ln.strip() for ln in out.stdout.splitlines() if ln.strip() and ln.strip()[0] != "."]
    keys = [k for i, k in enumerate(keys) if i not in bad]
    assert len(dis) == len(keys)

    def norm(text: str) -> tuple[str, list[str], list[int]]:
        text = text.replace("(sp)", "(x2)").replace(" sp,", " x2,")
        mnem, _, rest = text.partition(" ")
        regs = re.findall(r"\b[xf]\d+\b", rest)
        rest = re.sub(r"\b[xf]\d+\b", "", rest)
        nums = [int(n, 0) for n in re.findall(r"[-+]?(?:0x[0-9a-f]+|\d+)", rest)]
        return mnem.strip(), regs, nums

    mismatches = [
        f"{w:#x}: ours {texts[(w, n)]!r} llvm {d!r}"
        for (w, n), d in zip(keys, dis, strict=True)
        if norm(texts[(w, n)]) != norm(d.replace("\t", " "))
    ]
    assert not mismatches, "\n".join(mismatches[:20])
