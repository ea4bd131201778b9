"""Every CPU engine against the interpreter, its reference, on random RV64 programs.

Programs come from the conformance generator (conftest.py here: integer ALU, M, loads
and stores to a 4 KiB scratch window, forward branches, RVC, F/D, Zba/Zbb/Zbs/Zicond),
turned into loops of 1-5 iterations so that engines compiling hot code compile them (at
once, and after a few cold iterations), and a third of them get an instruction that
traps in a chosen iteration (a load or store access fault, ecall, ebreak or an illegal
instruction; the handler parks). Each ends in ``wfi``, which stops every engine exactly,
so instret is compared too. Each program runs from identical state on the interpreter
and on the engine under test, built as ``make_engines`` builds it for a minimal board,
in M-mode and in S-mode through Sv39, in one go and in slices of random sizes; every x
register, pc, instret, the trap CSRs, f registers, fflags and the scratch window must
agree.

The engines are every name of ``pyhv.cpu.engines.ENGINE_NAMES`` but ``interp`` and
``auto`` (which is one of the others): ``jit`` takes part where it works on this host
and is skipped with the reason elsewhere. ``PYHV_DIFF_PROGRAMS`` (default 12 per
category and configuration) scales the number of programs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from pyhv.cpu.engines import ENGINE_NAMES, jit_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]


import engine_world as W  # noqa: E402 - tests/conftest.py puts tests/ on sys.path

H = W.H

ENGINES = [name for name in ENGINE_NAMES if name not in ("interp", "auto")]
CATEGORIES = ["int", "muldiv", "mem", "rvc", "fp", "all", "bitmanip"]
# Hot at once (everything compiled before it first runs) and after some cold runs.
CONFIGS = {
    "hot": {"threshold": 1},
    "warm": {"threshold": 12},
    "paged-hot": {"threshold": 1, "paged": True},
}
# The JIT's cold tiers alone: its native interpreter (nothing ever compiled, nor loaded
# from the code cache that other tests fill), and Python.
JIT_CONFIGS = {
    "cold": {"threshold": 10**9, "compiled": False},
    "paged-cold": {"threshold": 10**9, "paged": True, "compiled": False},
    "python-cold": {"threshold": 10**9, "native_interp": False, "compiled": False},
    "python-warm": {"threshold": 12, "native_interp": False},
    "baseline": {"threshold": 10**9, "base_runs": 1},  # copied stencils (stencils.py)
}
CASES = [(e, c) for e in ENGINES for c in CONFIGS] + [("jit", c) for c in JIT_CONFIGS]
PROGRAMS = int(os.environ.get("PYHV_DIFF_PROGRAMS", "12"))


def _available(engine: str) -> None:
    if engine == "jit":
        reason = jit_unavailable_reason()
        if reason is not None:
            pytest.skip(f"jit unavailable: {reason}")


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize(("engine", "config"), CASES)
def test_engine_matches_interpreter(engine: str, config: str, category: str) -> None:
    _available(engine)
    kw = dict(CONFIGS.get(config) or JIT_CONFIGS[config])
    paged = kw.pop("paged", False)
    rng = random.Random(f"engines-{engine}-{config}-{category}")
    compared = traps = 0
    for n in range(PROGRAMS):
        prog = H.generate(rng, category)
        with_trap = n % 3 == 0
        trap = rng.choice(W.TRAPS)
        looped = W.looped(prog, rng, with_trap, trap=trap, park=W.WFI)
        if looped is None:
            continue
        code, counter, iterations = looped
        budget = (prog.n_insns() + 10) * (iterations + 1) + 50
        ref = W.run_program("interp", code, prog, counter, iterations, budget, None, paged,
                            park=W.WFI)
        traps += ref["pc"] == H.TRAP_PC + 4
        for sliced in (False, True):
            got = W.run_program(engine, code, prog, counter, iterations, budget,
                                random.Random(n) if sliced else None, paged, park=W.WFI,
                                **kw)
            diffs = W.differences(ref, got, ("interp", engine))
            if diffs:
                pytest.fail(
                    f"program {n} (counter x{counter}, {iterations} iterations, "
                    f"trap {trap if with_trap else None}, sliced {sliced}):\n"
                    + "\n".join(diffs) + "\n" + W.listing(code)
                )
        compared += 1
    assert compared >= PROGRAMS // 2
    if PROGRAMS >= 6:
        assert traps, "no program trapped"
