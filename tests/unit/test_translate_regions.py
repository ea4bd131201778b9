"""Functions with several entries (regions) in the block translator, against the interpreter.

A hot block is compiled together with the loop headers, call return addresses and exits
around it that already ran; its trees go on to each other inside one Python function
(``ent`` picks the tree) and ``jalr`` looks its target up among the entries. These tests
run guest code built for that (nested loops with calls, a bytecode-interpreter-like
computed jump, recursion) on the Interpreter and on Translators with and without regions,
in one go and in slices, and compare every register, the memory written, pc and instret;
also precise traps, self-modifying code and double-precision state (float locals) across
the entries of one function, and the random programs of the conformance generator with
region settings the other translator tests do not use.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import pytest

import engine_world as W  # tests/conftest.py puts tests/ on sys.path
from pyhv.isa import csr as C

H = W.H
BASE, J_SELF = W.BASE, W.J_SELF
World = W.World
DATA = BASE + 0x10000
HANDLER = BASE + 0x3000

Word = Callable[[int, dict[str, int]], int]


# -- a small assembler: words, or functions of (pc, labels) for pc-relative ones ---------------


def assemble(items: list[Any]) -> list[int]:
    """Words from ``items``: ints, functions (pc, labels) -> word, and str labels."""
    labels: dict[str, int] = {}
    pc = BASE
    for it in items:
        if isinstance(it, str):
            labels[it] = pc
        else:
            pc += 4
    out, pc = [], BASE
    for it in items:
        if isinstance(it, str):
            continue
        out.append(it if isinstance(it, int) else it(pc, labels))
        pc += 4
    return out


def addi(rd: int, rs1: int, imm: int) -> int:
    return H.enc_i(0x13, rd, 0, rs1, imm)


def add(rd: int, rs1: int, rs2: int) -> int:
    return H.enc_r(0x33, rd, 0, rs1, rs2, 0)


def slli(rd: int, rs1: int, sh: int) -> int:
    return H.enc_i(0x13, rd, 1, rs1, sh)


def ld(rd: int, rs1: int, imm: int) -> int:
    return H.enc_i(0x03, rd, 3, rs1, imm)


def sd(rs2: int, rs1: int, imm: int) -> int:
    return H.enc_s(0x23, 3, rs1, rs2, imm)


def sw(rs2: int, rs1: int, imm: int) -> int:
    return H.enc_s(0x23, 2, rs1, rs2, imm)


def jalr(rd: int, rs1: int, imm: int) -> int:
    return H.enc_i(0x67, rd, 0, rs1, imm)


RET = jalr(0, 1, 0)


def br(f3: int, rs1: int, rs2: int, label: str) -> Word:
    return lambda pc, lab: H.enc_b(f3, rs1, rs2, lab[label] - pc)


def bne(rs1: int, rs2: int, label: str) -> Word:
    return br(1, rs1, rs2, label)


def beq(rs1: int, rs2: int, label: str) -> Word:
    return br(0, rs1, rs2, label)


def blt(rs1: int, rs2: int, label: str) -> Word:
    return br(4, rs1, rs2, label)


def jal(rd: int, label: str) -> Word:
    return lambda pc, lab: H.enc_j(rd, lab[label] - pc)


def la(rd: int, label: str) -> Word:
    """addi rd, zero, <label - BASE> (add x31, which holds BASE, for the address)."""
    return lambda pc, lab: addi(rd, 0, lab[label] - BASE)


def fp(mn: str, rd: int, rs1: int, rs2: int = 0, rs3: int = 0) -> int:
    return H.fp_insn(mn, rd, rs1, rs2, rs3, rm=7).word


# -- running ---------------------------------------------------------------------------------


def run(engine: str, words: list[int], setup: Callable[[World], None] | None, budget: int,
        slices: random.Random | None = None, paged: bool = False, **kw: Any) -> World:
    w = World(engine, **kw)
    w.put(BASE, words)
    w.put(HANDLER, [J_SELF])
    h = w.hart
    h.mtvec = HANDLER
    h.x[31] = BASE
    h.mstatus |= C.MSTATUS_FS | C.MSTATUS_SD
    if setup is not None:
        setup(w)
    if paged:  # S-mode through an Sv39 identity mapping of the first GiB of RAM
        root = BASE + (4 << 20) - 0x1000
        w.ram.write(root + 8 * (BASE >> 30), 8, ((BASE >> 12) << 10) | W.RWX)
        h.satp = (8 << 60) | (root >> 12)
        h.priv = C.PRV_S
        h.mmu.update_mode()
    if slices is None:
        w.engine.run(budget)
    else:
        left = budget
        while left > 0:
            left -= max(w.engine.run(slices.randint(1, 200)), 1)
            if h.pc == HANDLER or words[(h.pc - BASE) // 4:(h.pc - BASE) // 4 + 1] == [J_SELF]:
                break
    return w


def state(w: World, sliced: bool) -> dict:
    st = w.state()
    if sliced:
        del st["instret"]  # a slice may overshoot by part of a block
    st["data"] = w.ram.read_bytes(DATA, 0x1000)
    return st


CONFIGS = {
    "regions": {"threshold": 1},
    "regions-later": {"threshold": 40},
    "tiny-trees": {"threshold": 20, "max_block": 3},
    "no-regions": {"threshold": 20, "max_region": 0},
}


def check(words: list[int], setup: Callable[[World], None] | None, budget: int,
          paged: bool = False) -> list[World]:
    """Run on the interpreter and on every translator configuration, in one go and in
    slices; every state must be the interpreter's. Returns the one-go translators."""
    out = []
    for sliced in (False, True):
        ref = state(run("interp", words, setup, budget, None, paged), sliced)
        for name, kw in CONFIGS.items():
            rng = random.Random(name) if sliced else None
            got = state(run("translate", words, setup, budget, rng, paged, **kw), sliced)
            diffs = W.differences(ref, got, ("interp", "translate"))
            assert not diffs, f"{name}, sliced {sliced}:\n" + "\n".join(diffs)
            if not sliced:
                out.append(run("translate", words, setup, budget, None, paged, **kw))
    return out


def entries(w: World) -> dict[Any, list[int]]:
    """The compiled functions of the current context with their entry pcs."""
    out: dict[Any, list[int]] = {}
    for pc, fn in w.engine.cache.current().blocks.items():
        if pc >= 0:  # not a function's liveness token
            out.setdefault(fn.info, []).append(pc)
    return out


# -- programs ----------------------------------------------------------------------------------

# Nested loops with a call in the outer one: a0 += inner counter; the callee adds 3 to a1
# and stores it at t0 (DATA) + 8 * outer counter.
NESTED = [
    addi(10, 0, 0), addi(9, 0, 30),
    "outer", addi(18, 0, 17),
    "inner", add(10, 10, 18), addi(18, 18, -1), bne(18, 0, "inner"),
    jal(1, "func"),
    addi(9, 9, -1), bne(9, 0, "outer"),
    J_SELF,
    "func", addi(11, 11, 3), slli(6, 9, 3), add(6, 6, 5), sd(11, 6, 0), RET,
]


def with_data(more: Callable[[World], None] | None = None) -> Callable[[World], None]:
    def setup(w: World) -> None:
        w.hart.x[5] = DATA
        if more is not None:
            more(w)

    return setup


def test_nested_loops_and_calls_run_in_one_function() -> None:
    words = assemble(NESTED)
    budget = 30 * (17 * 3 + 10) + 60
    for w in check(words, with_data(), budget) + check(words, with_data(), budget, paged=True):
        assert w.hart.x[10] == 30 * 17 * 18 // 2 and w.hart.x[11] == 90
    # The inner loop, the outer loop and the callee (entered again through its return
    # address) end up as entries of one function.
    w = run("translate", words, with_data(), budget, threshold=40)
    assert max(len(pcs) for pcs in entries(w).values()) >= 2


def test_ram_size_no_power_of_two() -> None:
    # Inline accesses then check the range with compares instead of one mask; a load
    # just past the end of RAM must still fault.
    ram = (4 << 20) - 0x3000
    prog = list(NESTED)
    i = prog.index("func")
    prog[i + 1:i + 1] = [ld(12, 13, 0), addi(13, 13, 8)]

    def setup(w: World) -> None:
        w.hart.x[5] = DATA
        w.hart.x[13] = BASE + ram - 5 * 8

    words = assemble(prog)
    ref = state(run("interp", words, setup, 2000, ram_size=ram), False)
    got = state(run("translate", words, setup, 2000, threshold=5, ram_size=ram), False)
    assert not W.differences(ref, got, ("interp", "translate"))
    assert got["mcause"] == 5 and got["mtval"] == BASE + ram


def test_trap_in_another_entry_is_precise() -> None:
    # A load in the callee through a3, which walks off the end of RAM on the 12th call.
    ram_end = BASE + (4 << 20)
    prog = list(NESTED)
    i = prog.index("func")
    prog[i + 1:i + 1] = [ld(12, 13, 0), add(11, 11, 12), addi(13, 13, 8)]

    def setup(w: World) -> None:
        w.hart.x[13] = ram_end - 11 * 8
        w.ram.write_bytes(ram_end - 88, struct.pack("<11Q", *range(1, 12)))

    words = assemble(prog)
    for w in check(words, with_data(setup), 30 * 70):
        h = w.hart
        assert (h.mcause, h.mepc, h.mtval) == (5, BASE + 4 * (len(words) - 8), ram_end)
        assert h.x[11] == 11 * 3 + sum(range(1, 12)) and h.x[9] == 30 - 11


def test_self_modifying_code_in_another_entry() -> None:
    # On the 10th outer iteration the outer loop rewrites the callee's first instruction
    # (addi a1, a1, 3 -> addi a1, a1, 100): from the next call on it must add 100.
    prog = list(NESTED)
    i = prog.index("outer")
    prog[i + 1:i + 1] = [
        addi(7, 9, -20), bne(7, 0, "keep"),
        la(7, "func"), add(7, 7, 31), sw(28, 7, 0),
        "keep",
    ]

    def setup(w: World) -> None:
        w.hart.x[28] = addi(11, 11, 100)

    words = assemble(prog)
    for w in check(words, with_data(setup), 30 * 70):
        assert w.hart.x[11] == 10 * 3 + 20 * 100


def test_data_next_to_code_then_self_modifying_code() -> None:
    # Every outer iteration stores to a misaligned data word in the code's own page
    # (through the MMU, which leaves the function alone: it wrote none of its bytes); on
    # the 10th the outer loop rewrites the callee's first instruction, which must take
    # effect from the next call on.
    prog = list(NESTED)
    i = prog.index("outer")
    prog[i + 1:i + 1] = [
        sd(9, 29, 0),
        addi(7, 9, -20), bne(7, 0, "keep"),
        la(7, "func"), add(7, 7, 31), sw(28, 7, 0),
        "keep",
    ]

    def setup(w: World) -> None:
        w.hart.x[28] = addi(11, 11, 100)
        w.hart.x[29] = BASE + 0x3F3  # misaligned, in the code's page

    words = assemble(prog)
    for w in check(words, with_data(setup), 30 * 80):
        assert w.hart.x[11] == 10 * 3 + 20 * 100
        assert w.engine.revived == 0


def test_computed_jumps_between_entries() -> None:
    # A bytecode interpreter: t1 walks a program of opcodes (bytes 0..3 at DATA); each
    # opcode jumps through a table of handlers (jalr), which jump back to the loop.
    prog = [
        addi(6, 31, 0x7FF), "table_base",
        addi(10, 0, 0), addi(11, 0, 0), addi(12, 0, 400),
        "loop",
        ld(7, 13, 0), addi(13, 13, 8), slli(7, 7, 3), add(7, 7, 14), ld(7, 7, 0),
        add(7, 7, 31), jalr(0, 7, 0),
        "op0", addi(10, 10, 1), jal(0, "next"),
        "op1", addi(11, 11, 2), jal(0, "next"),
        "op2", add(10, 10, 11), jal(0, "next"),
        "op3", addi(11, 11, -1), addi(10, 10, 3), jal(0, "next"),
        "next", addi(12, 12, -1), bne(12, 0, "loop"),
        J_SELF,
    ]
    words = assemble(prog)
    labels: dict[str, int] = {}
    pc = BASE
    for it in prog:
        if isinstance(it, str):
            labels[it] = pc
        else:
            pc += 4
    rng = random.Random(3)
    ops = [rng.choice([0, 1, 1, 2, 3]) for _ in range(400)]
    table = [labels[f"op{n}"] - BASE for n in range(4)]

    def setup(w: World) -> None:
        w.ram.write_bytes(DATA, struct.pack("<400Q", *ops))
        w.ram.write_bytes(DATA + 0x1000 - 32, struct.pack("<4Q", *table))
        w.hart.x[13] = DATA
        w.hart.x[14] = DATA + 0x1000 - 32

    check(words, setup, 400 * 12 + 50)


def test_recursion_returns_inside_the_function() -> None:
    # fib(15) the slow way: calls and returns (through the stack) of one function.
    prog = [
        addi(10, 0, 15), jal(1, "fib"), J_SELF,
        "fib",
        addi(5, 0, 2), blt(10, 5, "leaf"),
        addi(2, 2, -24), sd(1, 2, 0), sd(10, 2, 8),
        addi(10, 10, -1), jal(1, "fib"), sd(10, 2, 16),
        ld(10, 2, 8), addi(10, 10, -2), jal(1, "fib"),
        ld(5, 2, 16), add(10, 10, 5), ld(1, 2, 0), addi(2, 2, 24),
        "leaf", RET,
    ]

    def setup(w: World) -> None:
        w.hart.x[2] = DATA + 0x1000

    for w in check(assemble(prog), setup, 20_000):
        assert w.hart.x[10] == 610


@pytest.mark.parametrize("nx", [0, 1])
def test_float_locals_across_entries_and_traps(nx: int) -> None:
    # Outer loop: f1 += f2 (fadd), call: f3 = f3 * f4 + f1 (fmadd), inner loop f5 -= f4;
    # a load in the inner loop faults in the 9th outer iteration: every f must be exact.
    ram_end = BASE + (4 << 20)
    prog = [
        addi(9, 0, 30),
        "outer", addi(18, 0, 5), fp("fadd.d", 1, 1, 2),
        "inner", fp("fsub.d", 5, 5, 4), fp("fmul.d", 6, 5, 2), addi(18, 18, -1),
        bne(18, 0, "inner"),
        jal(1, "func"), addi(9, 9, -1), bne(9, 0, "outer"),
        J_SELF,
        "func", fp("fmadd.d", 3, 3, 4, 1), ld(12, 13, 0), addi(13, 13, 8),
        fp("fle.d", 14, 3, 1), add(15, 15, 14), RET,
    ]

    def setup(w: World) -> None:
        h = w.hart
        for r, v in ((1, 0.5), (2, 1.25), (3, 0.1), (4, 0.3), (5, 100.0)):
            h.f[r] = struct.unpack("<Q", struct.pack("<d", v))[0]
        h.fflags = nx
        h.x[13] = ram_end - 8 * 8

    words = assemble(prog)
    for w in check(words, setup, 30 * 30):
        h = w.hart
        assert h.mcause == 5 and h.x[9] == 30 - 8


RANDOM_CONFIGS = {
    "tiny-trees": {"threshold": 8, "max_block": 3},
    "tiny-trees-paged": {"threshold": 8, "max_block": 3, "paged": True},
    "small-regions": {"threshold": 8, "max_block": 6, "max_region": 12},
    "no-regions": {"threshold": 1, "max_region": 0},
}


@pytest.mark.parametrize("category", ["int", "mem", "rvc", "fp", "all"])
@pytest.mark.parametrize("config", list(RANDOM_CONFIGS))
def test_random_programs_match_interpreter(category: str, config: str) -> None:
    """The conformance generator's random programs as loops (tests/engine_world.py), with
    trees so short that a loop body is a chain of entries of one function."""
    kw = dict(RANDOM_CONFIGS[config])
    paged = kw.pop("paged", False)
    rng = random.Random(f"regions-{category}-{config}")
    compared = 0
    for n in range(40):
        prog = H.generate(rng, category)
        looped = W.looped(prog, rng, with_trap=n % 3 == 0)
        if looped is None:
            continue
        code, counter, iterations = looped
        budget = (prog.n_insns() + 10) * (iterations + 1) + 50
        for sliced in (False, True):
            ref = W.run_program("interp", code, prog, counter, iterations, budget, None, paged)
            if sliced:
                del ref["instret"]
            got = W.run_program("translate", code, prog, counter, iterations, budget,
                                random.Random(n) if sliced else None, paged, **kw)
            diffs = W.differences(ref, got, ("interp", "translate"))
            assert not diffs, (f"program {n} (counter x{counter}, sliced {sliced}):\n"
                               + "\n".join(diffs) + "\n" + W.listing(code))
        compared += 1
    assert compared > 10
