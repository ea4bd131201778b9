"""`--engine` and `-accel` on the command line: each engine runs a guest; a bad or
unavailable engine is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import pytest

from pyhv.cpu.engines import jit_unavailable_reason

from .test_cli_errors import GUESTS, assert_user_error, pyhv

KERNEL = str(GUESTS / "exit_pass.elf")


def test_unknown_engine() -> None:
    proc = pyhv("run", "--bios", "none", "--kernel", KERNEL, "--engine", "warp")
    assert_user_error(proc, "pyhv: error:", "warp", "auto, interp, translate, jit")
    assert proc.returncode == 1


def test_unknown_engine_in_qemu_compat() -> None:
    proc = pyhv("-bios", "none", "-kernel", KERNEL, "-accel", "pyhv,engine=warp",
                entry="pyhv.cli.qemu_compat")
    assert_user_error(proc, "pyhv-qemu: error:", "warp")


def test_qemu_compat_refuses_kvm_alone() -> None:
    proc = pyhv("-bios", "none", "-kernel", KERNEL, "-accel", "kvm",
                entry="pyhv.cli.qemu_compat")
    assert_user_error(proc, "kvm")


def test_jit_that_cannot_run() -> None:
    reason = jit_unavailable_reason()
    if reason is None:
        pytest.skip("the JIT works on this host")
    proc = pyhv("run", "--bios", "none", "--kernel", KERNEL, "--engine", "jit")
    assert_user_error(proc, "pyhv: error:", "jit")


@pytest.mark.parametrize("engine", ["interp", "translate", "auto"])
def test_engine_runs_a_guest(engine: str) -> None:
    proc = pyhv("run", "--bios", "none", "--kernel", KERNEL, "--engine", engine, "--stats")
    assert proc.returncode == 0, proc.stderr
    assert "PASS exit_pass" in proc.stdout
    assert "Traceback" not in proc.stderr
    stats = [line for line in proc.stderr.splitlines() if "instructions in" in line]
    assert len(stats) == 1, proc.stderr
    expected = {"auto": ("jit", "translate")}.get(engine, (engine,))
    assert any(f"engine {e})" in stats[0] for e in expected), stats[0]


def test_qemu_compat_accel_pyhv_runs_a_guest() -> None:
    proc = pyhv("-M", "virt", "-nographic", "-bios", "none", "-kernel", KERNEL,
                "-accel", "pyhv,engine=interp", entry="pyhv.cli.qemu_compat")
    assert proc.returncode == 0, proc.stderr
    assert "PASS exit_pass" in proc.stdout
