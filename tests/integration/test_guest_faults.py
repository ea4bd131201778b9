"""A faulting guest is a guest trap, or a reported guest crash: never a host crash."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from pyhv import BufferConsole, Machine, MachineConfig


def raw_program(tmp_path: Path, *words: int) -> str:
    path = tmp_path / "prog.bin"
    path.write_bytes(struct.pack(f"<{len(words)}I", *words))
    return str(path)


LUI_T0_0x40000 = 0x400002B7  # lui t0, 0x40000  -> t0 = 0x4000_0000 (no device there)
LD_T1_0_T0 = 0x0002B303  # ld t1, 0(t0)


def test_unmapped_load_without_handler_is_reported_as_crash(tmp_path: Path) -> None:
    prog = raw_program(tmp_path, LUI_T0_0x40000, LD_T1_0_T0)
    proc = subprocess.run(
        [sys.executable, "-m", "pyhv.cli.main", "run", "--bios", "none", "--kernel", prog],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 125
    assert "Traceback" not in proc.stderr
    assert "guest crashed" in proc.stderr
    assert "load access fault (tval 0x40000000) at pc 0x80000004" in proc.stderr
    assert "raises instruction access fault (tval 0x0)" in proc.stderr


def test_illegal_instruction_without_handler_is_reported(tmp_path: Path) -> None:
    prog = raw_program(tmp_path, 0xFFFFFFFF)
    vm = Machine(MachineConfig(bios="none", kernel=prog), console=BufferConsole())
    result = vm.run(timeout=30)
    assert result.reason == "crash"
    assert vm.crash is not None and "illegal instruction (tval 0xffffffff)" in vm.crash


def test_fault_with_handler_is_a_guest_trap(tmp_path: Path) -> None:
    # mtvec -> handler that powers off with exit code = mcause (5 = load access fault).
    words = [
        0x00000297,  # 0x00 auipc t0, 0
        0x01828293,  # 0x04 addi t0, t0, 24     (handler at 0x18)
        0x30529073,  # 0x08 csrw mtvec, t0
        0x400002B7,  # 0x0c lui t0, 0x40000
        0x0002B303,  # 0x10 ld t1, 0(t0)         -> load access fault
        0x0000006F,  # 0x14 j .
        0x34202373,  # 0x18 csrr t1, mcause
        0x01031313,  # 0x1c slli t1, t1, 16
        0x000033B7,  # 0x20 lui t2, 3
        0x33338393,  # 0x24 addi t2, t2, 0x333  -> 0x3333
        0x00736333,  # 0x28 or t1, t1, t2
        0x001003B7,  # 0x2c lui t2, 0x100
        0x0063A023,  # 0x30 sw t1, 0(t2)         -> FAIL with code = mcause
        0x0000006F,  # 0x34 j .
    ]
    vm = Machine(MachineConfig(bios="none", kernel=raw_program(tmp_path, *words)),
                 console=BufferConsole())
    result = vm.run(timeout=30)
    assert (result.reason, result.exit_code) == ("poweroff", 5)
    assert vm.harts[0].mtval == 0x4000_0000
    assert vm.harts[0].mepc == 0x8000_0010
