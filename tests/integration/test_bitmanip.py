"""Zba, Zbb and Zbs on a guest program: guests/tests/bitmanip.elf (compiled with the
extensions, its expected values worked out by hand) passes on qemu-system-riscv64 (whose
rv64 CPU has them) and on pyhv under every engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pyhv import BufferConsole, Machine, MachineConfig
from pyhv.cpu.engines import jit_unavailable_reason

ELF = Path(__file__).resolve().parents[2] / "guests" / "tests" / "bitmanip.elf"
QEMU = shutil.which("qemu-system-riscv64")


@pytest.mark.skipif(QEMU is None, reason="qemu-system-riscv64 is not installed")
def test_bitmanip_program_passes_on_qemu() -> None:
    assert QEMU is not None
    out = subprocess.run([QEMU, "-M", "virt", "-bios", "none", "-nographic", "-kernel",
                          str(ELF)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "PASS bitmanip" in out.stdout, out.stdout


@pytest.mark.parametrize("engine", ["interp", "translate", "jit"])
def test_bitmanip_program_passes_on_every_engine(engine: str) -> None:
    if engine == "jit" and jit_unavailable_reason() is not None:
        pytest.skip("the JIT cannot run on this host")
    console = BufferConsole()
    vm = Machine(MachineConfig(bios="none", kernel=str(ELF), engine=engine), console=console)
    try:
        result = vm.run(timeout=60)
    finally:
        vm.close()
    assert result.reason == "poweroff" and result.exit_code == 0, console.text
    assert "PASS bitmanip" in console.text
