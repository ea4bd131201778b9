"""The project's own bare-metal guest programs (guests/tests) pass on pyhv.

Each program checks one area of the machine (an instruction class, traps, paging,
interrupts, devices) against values known in advance, prints PASS/FAIL on the UART and
powers off through the test device with its verdict as exit code. They were validated
on qemu-system-riscv64 first (guests/tests/run_on_qemu.sh).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyhv import BufferConsole, Machine, MachineConfig, RunResult

GUESTS = Path(__file__).resolve().parents[2] / "guests" / "tests"
# echo waits for typed input (tests/integration/test_console_tty.py); idle and spin run
# until the host asks them to power off (tests/integration/test_host_daemon.py); hostile
# attacks the devices forever (tests/integration/test_hostile_guest.py); virtio_low32
# needs a disk on virtio-mmio-bus.0 (tests/integration/test_qemu_compat_devices.py);
# counter prints for seconds of guest time (tests/unit/test_migration.py)
INTERACTIVE = {"echo", "idle", "spin", "hostile", "virtio_low32", "counter"}
PROGRAMS = sorted(p.stem for p in GUESTS.glob("*.elf") if p.stem not in INTERACTIVE)
EXPECTED_EXIT = {"exit_code": 3}
SMP = {"smp": 4}


def boot(name: str, smp: int) -> tuple[int, str]:
    console = BufferConsole()
    vm = Machine(
        MachineConfig(bios="none", kernel=str(GUESTS / f"{name}.elf"), smp=smp), console=console
    )
    try:
        result = vm.run(timeout=120)
    finally:
        vm.close()
    assert result.reason == "poweroff", f"{name}: {result.reason}\n{console.text}"
    return result.exit_code, console.text


def test_programs_are_present() -> None:
    expected = {"rv64i", "rv64m", "rv64a", "rvc", "fp", "traps", "paging", "timer_irq",
                "plic_uart", "smp", "exit_pass", "exit_code"}
    assert expected <= set(PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_guest_program(name: str) -> None:
    code, text = boot(name, SMP.get(name, 1))
    assert code == EXPECTED_EXIT.get(name, 0), text
    verdict = "FAIL" if name in EXPECTED_EXIT else "PASS"
    assert f"{verdict} {name}" in text, text


@pytest.mark.parametrize("name", [p for p in PROGRAMS if p not in SMP and p != "exit_code"])
def test_guest_program_with_two_harts(name: str) -> None:
    """Secondary harts park in WFI while hart 0 runs the checks."""
    code, text = boot(name, 2)
    assert code == 0, text
    assert f"PASS {name}" in text


@pytest.mark.parametrize("engine", ["interp", "translate", "jit"])
def test_uart_burst_under_every_engine(engine: str) -> None:
    """xv6's UART driver pattern (THR-empty left standing) takes about one interrupt per
    burst and no storm, under every engine, as under QEMU (it hung before)."""
    from pyhv.cpu.engines import jit_unavailable_reason

    if engine == "jit" and jit_unavailable_reason() is not None:
        pytest.skip("the JIT cannot run on this host")
    for smp in (1, 3):
        console = BufferConsole()
        vm = Machine(MachineConfig(bios="none", kernel=str(GUESTS / "uart_burst.elf"),
                                   smp=smp, engine=engine), console=console)
        try:
            result = vm.run(timeout=60)
        finally:
            vm.close()
        assert result.reason == "poweroff" and result.exit_code == 0, console.text
        assert "PASS uart_burst" in console.text


def _run_bench_program(name: str) -> tuple[RunResult, dict[str, int], str]:
    """guests/bench/programs/NAME.elf under the JIT to its power-off: (the run's result,
    the hart's JIT counters, the console text). Skips where the JIT cannot run."""
    from pyhv.cpu.engines import jit_unavailable_reason

    if jit_unavailable_reason() is not None:
        pytest.skip("the JIT cannot run on this host")
    program = GUESTS.parent / "bench" / "programs" / f"{name}.elf"
    console = BufferConsole()
    vm = Machine(MachineConfig(bios="none", kernel=str(program), engine="jit"), console=console)
    try:
        result = vm.run(timeout=120)
        stats = vm.engines[0].stats()
    finally:
        vm.close()
    assert result.reason == "poweroff", console.text
    return result, stats, console.text


def test_single_precision_program_runs_natively() -> None:
    """An ordinary C program written with ``float`` (guests/bench/programs/fp32.c: an
    FIR filter, n-body and a matrix multiply in single precision) under the JIT: its
    checksum is the one QEMU prints (guests/bench/programs/Makefile's check), and its
    single-precision instructions run in native code, not one trip to Python each (it
    took over 300 s so; about 1 s now)."""
    result, stats, text = _run_bench_program("fp32")
    assert "BENCH-CHECKSUM 0x2232f1919fe005eb" in text, text
    assert result.instructions > 100_000_000
    assert stats["slow_exits"] < 100, stats


@pytest.mark.slow
def test_a_recursive_program_runs_native_and_gets_the_checksum_qemu_prints():
    """guests/bench/programs/recursion.c (naive Fibonacci, Ackermann, N-queens,
    recursive tree walks: a call and an indirect return every few instructions) under
    the JIT: the checksum QEMU prints (the Makefile's check), and nearly all of it in
    native code (its return addresses, which every return enters, are linked blocks)."""
    result, stats, text = _run_bench_program("recursion")
    assert "BENCH-CHECKSUM 0x0d5780558b47fa82" in text, text
    assert result.instructions > 200_000_000
    assert stats["native_instructions"] > 0.99 * result.instructions, stats
    assert stats["slow_exits"] < 100, stats
