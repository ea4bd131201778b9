"""The debug trigger module (Sdtrig, cpu/triggers.py): its CSRs read and write as QEMU
7.2's, and an address trigger raises a breakpoint exception at the right instruction
under every engine (guests/tests/triggers.c, checked on qemu-system-riscv64 first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyhv import BufferConsole, Machine, MachineConfig
from pyhv.cpu.engines import jit_unavailable_reason
from pyhv.cpu.triggers import TDATA1, TDATA2, TDATA3, TINFO, TSELECT, TriggerModule

GUEST = Path(__file__).resolve().parents[2] / "guests" / "tests" / "triggers.elf"


@pytest.mark.parametrize("engine", ["interp", "translate", "jit"])
@pytest.mark.parametrize("smp", [1, 2])
def test_triggers_fire_under_every_engine(engine: str, smp: int) -> None:
    if engine == "jit" and jit_unavailable_reason() is not None:
        pytest.skip("the JIT cannot run on this host")
    console = BufferConsole()
    vm = Machine(MachineConfig(bios="none", kernel=str(GUEST), engine=engine, smp=smp),
                 console=console)
    try:
        result = vm.run(timeout=60)
    finally:
        vm.close()
    assert result.reason == "poweroff" and result.exit_code == 0, console.text
    assert "PASS triggers" in console.text


def test_trigger_csrs_warl_as_qemu() -> None:
    t = TriggerModule()
    assert (t.read(TSELECT), t.read(TDATA1), t.read(TINFO)) == (0, 2 << 60, 0x44)
    t.write(TSELECT, 7)
    assert t.read(TSELECT) == 0
    assert not t.write(TDATA1, (3 << 60) | 0x44)  # another type: ignored
    assert t.read(TDATA1) == 2 << 60
    assert t.write(TDATA1, (2 << 60) | (1 << 59) | (1 << 12) | (1 << 11) | 0x44)  # armed
    assert t.read(TDATA1) == (2 << 60) | 0x44 and t.armed == [(4, 64, 0, 8)]
    t.write(TDATA2, 0x8000_1000)
    assert t.armed == [(4, 64, 0x8000_1000, 8)]
    t.write(TDATA1, (2 << 60) | (3 << 16) | 0x41)  # load, size 4
    assert t.armed == [(1, 64, 0x8000_1000, 4)]
    t.write(TDATA1, (2 << 60) | (3 << 16) | (1 << 21) | 0x41)  # size encoding 7: "any"
    assert t.read(TDATA1) == (2 << 60) | 0x41 and t.armed[0][3] == 8
    t.write(TDATA3, 123)
    assert t.read(TDATA3) == 0
    assert t.write(TDATA1, 2 << 60) and t.armed == []
