"""One hart on any CPU engine, and random looped programs to run on it: the helpers shared
by the engine tests (tests/unit/test_translate.py, tests/conformance/
test_engines_differential.py). Load it with :func:`load` (tests/ is not a package).

* :class:`World`: a hart with RAM, a bus and a CodeWatch (a minimal board: ``harts``,
  ``code``, ``ram``, ``bus``, what ``make_engines`` needs), driven by one engine built by
  name: ``interp``, ``translate`` (keyword arguments go to the Translator) or any other
  engine of :func:`pyhv.cpu.engines.make_engines` (``jit``: keyword arguments its
  ``make_jit_engines`` accepts).
* :func:`looped`: a random program of the conformance generator (tests/conformance/
  conftest.py, here ``H``) turned into a loop of 1-5 iterations, often with an
  instruction that traps in a chosen iteration.
* :func:`run_program`: run such a loop from the program's initial state until it parks
  (on ``j .`` or ``wfi``) at its end or in the trap handler, in one go or in slices of
  random sizes, optionally in S-mode through Sv39; returns the comparable state.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import random
import struct
import sys
from pathlib import Path
from typing import Any

from pyhv.cpu.hart import Hart
from pyhv.cpu.interp import Interpreter
from pyhv.cpu.mmu import PTE_A, PTE_D, PTE_R, PTE_V, PTE_W, PTE_X, CodeWatch
from pyhv.cpu.translate import Translator
from pyhv.isa import csr as C
from pyhv.isa.decoder import decode
from pyhv.memory.bus import Bus
from pyhv.memory.ram import GuestRAM

ROOT = Path(__file__).resolve().parents[1]
BASE = 0x8000_0000
RWX = PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D
NOP = 0x00000013
J_SELF = 0x0000006F  # j .
WFI = 0x10500073  # parks the hart for good when no interrupt is enabled: exact instret


def load(name: str, path: Path) -> Any:
    """Import a module from a file (once per process, under ``name``)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


H = load("pyhv_conformance_harness", ROOT / "tests" / "conformance" / "conftest.py")


# -- machines ---------------------------------------------------------------------------------


def build_engine(name: str, board: Any, **kw: Any) -> Any:
    """The engine ``name`` for the (single) hart of ``board``."""
    hart = board.harts[0]
    if name == "interp":
        return Interpreter(hart, board.code)
    if name == "translate":
        return Translator(hart, board.code, **kw)
    from pyhv.cpu.engines import make_engines, resolve_engine

    kind = resolve_engine(name)
    if kind == "jit":
        make = importlib.import_module("pyhv.cpu.jit").make_jit_engines
        accepted = inspect.signature(make).parameters
        return make(board, **{k: v for k, v in kw.items() if k in accepted})[0]
    return make_engines(kind, board)[0]


class World:
    """A hart with RAM and a bus, driven by one engine; also the minimal board the
    engine is built from (``harts``, ``code``, ``ram``, ``bus``)."""

    def __init__(self, engine: str, ram_size: int = 4 << 20, **kw: Any) -> None:
        self.ram = GuestRAM(BASE, ram_size)
        self.code = CodeWatch()
        self.bus = Bus()
        self.hart = Hart(0, self.ram, self.bus, self.code)
        self.harts = [self.hart]
        self.engine: Any = build_engine(engine, self, **kw)
        self.hart.pc = BASE

    def put(self, addr: int, words: list[int]) -> None:
        self.ram.write_bytes(addr, struct.pack(f"<{len(words)}I", *words))

    def state(self) -> dict:
        h = self.hart
        return {
            "x": list(h.x), "f": list(h.f), "pc": h.pc, "instret": h.instret,
            "fflags": h.fflags, "frm": h.frm, "priv": h.priv, "mcause": h.mcause,
            "mepc": h.mepc, "mtval": h.mtval, "scause": h.scause, "sepc": h.sepc,
            "mstatus": h.mstatus,
        }


# -- random looped programs -------------------------------------------------------------------


def addi(rd: int, rs1: int, imm: int) -> int:
    return H.enc_i(0x13, rd, 0, rs1, imm)


def add(rd: int, rs1: int, rs2: int) -> int:
    return H.enc_r(0x33, rd, 0, rs1, rs2, 0)


def ld(rd: int, rs1: int, imm: int) -> int:
    return H.enc_i(0x03, rd, 3, rs1, imm)


def sd(rs2: int, rs1: int, imm: int) -> int:
    return H.enc_s(0x23, 3, rs1, rs2, imm)


def bne(rs1: int, rs2: int, off: int) -> int:
    return H.enc_b(1, rs1, rs2, off)


def written_registers(placed) -> set[int]:
    regs = set()
    for _pc, ins in placed:
        d = decode(ins.word, ins.size)
        regs.add(d.rd)
    return regs


TRAPS = ("load", "store", "ecall", "ebreak", "illegal")


def trap_unit(kind: str, counter: int, t: int, t2: int, k: int):
    """Instructions that trap (``kind``) only in the iteration where ``counter`` == k."""
    if kind in ("load", "store"):
        # t = (counter == k) << 40; access x8 + t: outside RAM (an access fault) only
        # in that iteration.
        access = (H.I(ld(t2, t, 0), "ld") if kind == "load"
                  else H.I(sd(t2, t, 0), "sd"))
        return H.Unit([
            H.I(addi(t, counter, -k), "addi"),
            H.I(H.enc_i(0x13, t, 3, t, 1), "sltiu"),
            H.I(H.enc_i(0x13, t, 1, t, 40), "slli"),
            H.I(add(t, t, 8), "add"),
            access,
        ])
    word = {"ecall": 0x00000073, "ebreak": 0x00100073, "illegal": 0x00000000}[kind]
    # t = counter - k; skip the trapping instruction unless t == 0.
    return H.Unit([
        H.I(addi(t, counter, -k), "addi"),
        H.I(bne(t, 0, 8), "bne"),
        H.I(word, kind),
    ])


def looped(prog, rng: random.Random, with_trap: bool, trap: str = "load",
           park: int = J_SELF):
    """The program as a loop of 1-5 iterations, maybe trapping (``trap``) in one.

    Returns (code bytes, counter register, iterations) or None when no register is free.
    The code ends with ``park`` (``j .`` or ``wfi``).
    """
    units = list(prog.units)
    _, placed, _ = prog.with_units(units).assemble()
    used = written_registers(placed)
    free = [r for r in H.WRITABLE_NZ if r not in used]
    if len(free) < (3 if with_trap else 1):
        return None
    rng.shuffle(free)
    counter = free[0]
    iterations = rng.randint(1, 5)
    if with_trap:
        t, t2 = free[1], free[2]
        k = rng.randint(1, iterations)
        units.insert(rng.randrange(len(units) + 1), trap_unit(trap, counter, t, t2, k))
    code, placed, end = prog.with_units(units).assemble()
    body = code[:-4]  # without the final j .
    tail_pc = H.CODE + len(body)
    tail = struct.pack("<III", addi(counter, counter, -1), bne(counter, 0, H.CODE - tail_pc - 4),
                       park)
    return body + tail, counter, iterations


def run_program(engine: str, code: bytes, prog, counter: int, iterations: int,
                budget: int, rng: random.Random | None, paged: bool = False,
                park: int = J_SELF, **kw) -> dict:
    """Run until parked on ``park`` (``j .`` or ``wfi``: the end, or the trap handler).

    In one go, or (``rng``) in slices of random sizes as a machine with several harts
    would; an engine may overshoot a slice by part of a block, so with ``j .`` instret is
    only compared for runs in one go (``wfi`` stops every engine exactly, so it is kept).
    ``paged``: in S-mode through an Sv39 identity mapping (a 1 GiB page), so loads and
    stores go through the TLB; traps go to M-mode.
    """
    w = World(engine, ram_size=H.RAM_SIZE, **kw)
    w.ram.write_bytes(H.CODE, code)
    w.ram.write_bytes(H.DATA, prog.data)
    w.ram.write_bytes(H.TRAP_PC, park.to_bytes(4, "little"))
    h = w.hart
    h.x[:] = prog.x
    h.x[0] = 0
    h.x[counter] = iterations
    h.f[:] = prog.f
    h.mstatus |= C.MSTATUS_FS | C.MSTATUS_SD  # FS dirty (as an FP instruction leaves it)
    h.frm = prog.frm
    h.fflags = prog.fflags
    h.mtvec = H.TRAP_PC
    h.pc = H.CODE
    if paged:
        root = H.CODE + H.RAM_SIZE - 0x1000
        w.ram.write(root + 8 * (H.CODE >> 30), 8, ((H.CODE >> 12) << 10) | RWX)
        h.satp = (8 << 60) | (root >> 12)
        h.priv = C.PRV_S
        h.mmu.update_mode()
    end = H.CODE + len(code) - 4
    parked = (H.TRAP_PC, end) if park == J_SELF else (H.TRAP_PC + 4, end + 4)

    def done() -> bool:
        return h.waiting if park == WFI else h.pc in parked

    if rng is None:
        w.engine.run(budget)
    else:
        for _ in range(budget):
            if done():
                break
            w.engine.run(rng.randint(1, 300))
    st = w.state()
    assert st["pc"] in parked and (park != WFI or h.waiting), st["pc"]
    if rng is not None and park != WFI:
        del st["instret"]
    st["data"] = w.ram.read_bytes(H.DATA, H.DATA_SIZE)
    return st


def listing(code: bytes) -> str:
    out = []
    pc = 0
    while pc < len(code):
        half = int.from_bytes(code[pc:pc + 2], "little")
        size = 4 if half & 3 == 3 else 2
        d = decode(int.from_bytes(code[pc:pc + size], "little"), size)
        out.append(f"{H.CODE + pc:#x}: {d.name} rd=x{d.rd} rs1=x{d.rs1} rs2=x{d.rs2} "
                   f"imm={d.imm}")
        pc += size
    return "\n".join(out)


def differences(ref: dict, got: dict, names: tuple[str, str]) -> list[str]:
    """What differs between two :func:`run_program` states."""
    a, b = names
    diffs = [f"{k}: {a}={ref[k]!r} {b}={got[k]!r}" for k in ref
             if ref[k] != got.get(k) and k != "data"]
    if ref.get("data") != got.get("data"):
        diffs.append("data window differs")
    return diffs
