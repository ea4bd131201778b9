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


@pytest.mark.parametrize("memory", ["2047M", "3G", "16G"])
def test_jit_runs_with_large_guest_memory(memory: str, tmp_path) -> None:
    """Guest RAM of 2 GiB or more sits between the JIT's code and its constants: native
    code must reach them however far apart they land (it aborted in LLVM's loader)."""
    if jit_unavailable_reason() is not None:
        pytest.skip("the JIT cannot run on this host")
    env = {"PYHV_JIT_HOT_RUNS": "2", "PYHV_JIT_SYNC": "1", "PYHV_JIT_STATS": "1",
           "PYHV_JIT_CACHE": str(tmp_path)}
    for guest, mark in (("fp.elf", "PASS fp"), ("paging.elf", "PASS paging")):
        proc = pyhv("run", "--bios", "none", "--kernel", str(GUESTS / guest), "--engine", "jit",
                    "--memory", memory, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert mark in proc.stdout
        compiled = [line for line in proc.stderr.splitlines() if "blocks compiled" in line]
        assert compiled and " 0 blocks compiled" not in compiled[0], proc.stderr
