"""Several machines in one process, run in turn (pyhv.vm.group.MachineGroup).

Each machine must run as it would alone (its own console, its own timers, its own
end), a waiting machine must not hold up the others or spin the host, and clones of
one snapshot, which share the process's JIT and its code cache, must each run the
program to the same end as the machine they came from.
"""

from __future__ import annotations

import time

import pytest
from test_idle import ECHO, TIMER, TIMER_DELAY, image
from test_snapshot import config, needs_jit

from pyhv import BufferConsole, Machine, MachineConfig
from pyhv.vm.group import MachineGroup


@pytest.fixture(scope="module")
def codegen_run() -> tuple[bytes, int]:
    """codegen.elf run straight through, alone: what it printed, its instructions."""
    m = Machine(config("jit"))
    try:
        r = m.run(timeout=300)
        assert r.reason == "poweroff"
        return bytes(m.console.output), r.instructions
    finally:
        m.close()


def _echoes(tmp_path, n: int) -> tuple[MachineGroup, list[BufferConsole]]:
    consoles = [BufferConsole() for _ in range(n)]
    cfg = MachineConfig(bios="none", kernel=image(tmp_path, ECHO))
    return MachineGroup(Machine(cfg, console=c) for c in consoles), consoles


def test_each_machine_answers_its_own_console(tmp_path):
    group, consoles = _echoes(tmp_path, 3)
    with group:
        for i, c in enumerate(consoles):
            c.send(f"vm{i}".encode())
        assert group.run(timeout=10, stop_when=lambda: all(
            c.text == f"vm{i}" for i, c in enumerate(consoles)))
        consoles[1].send(b"+")
        assert group.run(timeout=10, stop_when=lambda: consoles[1].text == "vm1+")
        assert [c.text for c in consoles] == ["vm0", "vm1+", "vm2"]
        assert group.running() == [0, 1, 2] and group.results == {}


def test_idle_machines_sleep_together(tmp_path):
    """Every machine waits for input: the group sleeps (for a console without an fd it
    looks every MAX_IDLE_SLEEP), rather than spinning through their turns."""
    group, _ = _echoes(tmp_path, 4)
    with group:
        group.run(timeout=0.2)  # each reaches its WFI
        cpu = time.process_time()
        assert not group.run(timeout=0.5)
        assert time.process_time() - cpu < 0.15


def test_a_timer_wakes_its_machine_on_time_while_the_others_wait(tmp_path):
    """The group's sleep ends at the earliest timer of any machine: the timer guest
    powers off TIMER_DELAY after it started, and the waiting echo machines run on."""
    timer = Machine(MachineConfig(bios="none", kernel=image(tmp_path, TIMER)),
                    console=BufferConsole())
    group, consoles = _echoes(tmp_path, 2)
    group.machines.insert(1, timer)
    with group:
        start = time.monotonic()
        group.run(timeout=5, stop_when=lambda: 1 in group.results)
        took = time.monotonic() - start
        assert group.results[1].reason == "poweroff" and timer.console.text == "T"
        assert TIMER_DELAY - 0.02 <= took < TIMER_DELAY + 0.25
        assert group.running() == [0, 2]
        consoles[0].send(b"still")
        assert group.run(timeout=10, stop_when=lambda: consoles[0].text == "still")


def test_ends_when_every_machine_has(tmp_path):
    group = MachineGroup(Machine(MachineConfig(bios="none", kernel=image(tmp_path, TIMER)),
                                 console=BufferConsole()) for _ in range(2))
    with group:
        assert not group.run(timeout=10)
        assert [r.reason for r in group.results.values()] == ["poweroff", "poweroff"]
        assert group.running() == []


@needs_jit
def test_clones_in_one_process_each_run_the_program_to_its_end(tmp_path, codegen_run):
    """Three clones of a snapshot of codegen.elf (it writes machine code and runs it
    after fence.i) in one group, JIT: each prints what the program run straight
    through printed and powers off after as many instructions, although they share the
    process's compiler and code cache and take turns mid-run."""
    out_ref, total = codegen_run
    m = Machine(config("jit"))
    try:
        m.run(max_instructions=300_000)
        m.snapshot(str(tmp_path / "vm.snap"))
        before = bytes(m.console.output)
    finally:
        m.close()
    group, consoles = MachineGroup.clones(str(tmp_path / "vm.snap"), 3, quantum=0.002)
    with group:
        assert {vm.generation for vm in group.machines} == {1}
        assert not group.run(timeout=300)
        for i in range(3):
            result = group.results[i]
            assert result.reason == "poweroff" and result.instructions == total
            assert before + bytes(consoles[i].output) == out_ref


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="quantum"):
        MachineGroup(quantum=0)
    with pytest.raises(ValueError, match="at least one"):
        MachineGroup.clones(str(tmp_path / "none.snap"), 0)
