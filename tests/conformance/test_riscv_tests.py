"""The official RISC-V ISA tests (riscv-tests), built beside pyhv with its own test
environment (``bash scripts/riscv-tests.sh RISCV_TESTS_DIR OUTDIR``; DEVELOPERS.md):
every test passes on every engine. ``PYHV_RISCV_TESTS=OUTDIR`` points at the built
tests; without it (a machine without the checkout) the test is skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyhv import BufferConsole, Machine, MachineConfig
from pyhv.cpu.engines import jit_unavailable_reason

BUILT = os.environ.get("PYHV_RISCV_TESTS")
TESTS = sorted(Path(BUILT).glob("*.elf")) if BUILT else []


@pytest.mark.skipif(not BUILT, reason="PYHV_RISCV_TESTS (built riscv-tests) is not set")
@pytest.mark.parametrize("engine", ["interp", "translate", "jit"])
def test_riscv_tests_pass(engine: str) -> None:
    if engine == "jit" and jit_unavailable_reason() is not None:
        pytest.skip("the JIT cannot run on this host")
    assert TESTS, f"no tests in {BUILT}"
    failed = []
    for elf in TESTS:
        console = BufferConsole()
        vm = Machine(MachineConfig(bios="none", kernel=str(elf), engine=engine),
                     console=console)
        try:
            result = vm.run(timeout=60)
        finally:
            vm.close()
        if result.reason != "poweroff" or result.exit_code != 0:
            failed.append(f"{elf.stem}: {result.reason}, test {result.exit_code}")
    assert not failed, "\n".join(failed)
