"""Bad input gets one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GUESTS = Path(__file__).resolve().parents[2] / "guests" / "tests"


def pyhv(*args: str, entry: str = "pyhv.cli.main",
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", entry, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, **env) if env else None,
    )


def assert_user_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_missing_kernel_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.elf"
    assert_user_error(pyhv("run", "--bios", "none", "--kernel", str(missing)), str(missing))


def test_unreadable_kernel(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    f = tmp_path / "secret.bin"
    f.write_bytes(b"\x13\x00\x00\x00")
    f.chmod(0)
    assert_user_error(pyhv("run", "--bios", "none", "--kernel", str(f)), "secret.bin")


def test_directory_as_kernel(tmp_path: Path) -> None:
    assert_user_error(pyhv("run", "--bios", "none", "--kernel", str(tmp_path)), str(tmp_path))


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    f = tmp_path / "script.sh"
    f.write_text("#!/bin/sh\necho hi\n")
    assert_user_error(pyhv("run", "--bios", "none", "--kernel", str(f)), "script.sh")


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.bin"
    f.write_bytes(b"")
    assert_user_error(pyhv("run", "--bios", "none", "--kernel", str(f)), "empty")


def test_image_larger_than_ram(tmp_path: Path) -> None:
    f = tmp_path / "big.bin"
    f.write_bytes(b"\x13\x00\x00\x00" * (5 * 1024 * 1024))  # 20 MiB of nops
    assert_user_error(
        pyhv("run", "--bios", "none", "--memory", "16M", "--kernel", str(f)), "big.bin", "RAM"
    )


def test_kernel_overlapping_firmware(tmp_path: Path) -> None:
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"\x13\x00\x00\x00" * (768 * 1024))  # 3 MiB: past 0x80200000
    kernel = GUESTS / "exit_pass.elf"
    proc = pyhv("run", "--bios", str(fw), "--kernel", str(kernel))
    assert_user_error(proc, "overlap")


@pytest.mark.parametrize("size", ["12Q", "0", "-5M", "lots", "1T"])
def test_bad_memory_size(size: str) -> None:
    proc = pyhv("run", "--bios", "none", "--kernel", str(GUESTS / "exit_pass.elf"),
                f"--memory={size}")
    assert_user_error(proc, size)


@pytest.mark.parametrize("smp", ["0", "9", "64"])
def test_too_many_harts(smp: str) -> None:
    proc = pyhv("run", "--bios", "none", "--kernel", str(GUESTS / "exit_pass.elf"), "--smp", smp)
    assert_user_error(proc, smp)


def test_bad_dtb(tmp_path: Path) -> None:
    f = tmp_path / "bad.dtb"
    f.write_bytes(b"not a dtb")
    proc = pyhv("run", "--bios", "none", "--kernel", str(GUESTS / "exit_pass.elf"),
                "--dtb", str(f))
    assert_user_error(proc, "bad.dtb")


def test_qemu_compat_rejects_other_machines() -> None:
    proc = pyhv("-M", "sifive_u", "-kernel", "x", entry="pyhv.cli.qemu_compat")
    assert_user_error(proc, "sifive_u")


def test_guest_exit_code_propagates() -> None:
    proc = pyhv("run", "--bios", "none", "--kernel", str(GUESTS / "exit_code.elf"))
    assert proc.returncode == 3
    assert "FAIL exit_code" in proc.stdout


def test_qemu_compat_runs_a_guest() -> None:
    proc = pyhv(
        "-machine", "virt", "-nographic", "-serial", "mon:stdio", "-m", "64M", "-smp", "2",
        "-bios", "none", "-kernel", str(GUESTS / "exit_pass.elf"),
        entry="pyhv.cli.qemu_compat",
    )
    assert proc.returncode == 0, proc.stderr
    assert "PASS exit_pass" in proc.stdout


def test_kernel_command_line_with_control_characters() -> None:
    """Any character but NUL is the guest's business, as on QEMU; NUL is one clear line."""
    kernel = str(GUESTS / "exit_pass.elf")
    proc = pyhv("run", "--bios", "none", "--kernel", kernel, "--append", "a\x01b\x1bc é")
    assert proc.returncode == 0 and "PASS exit_pass" in proc.stdout, proc.stderr
    proc = pyhv("-M", "virt", "-nographic", "-bios", "none", "-kernel", kernel,
                "-append", "x\x7fy", entry="pyhv.cli.qemu_compat")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf", "soon"])
def test_timeout_must_be_a_positive_number(value: str) -> None:
    """0, negative and nan used to mean 'no timeout' without a word."""
    proc = pyhv("run", "--bios", "none", "--kernel", str(GUESTS / "exit_pass.elf"),
                "--timeout", value)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: argument --timeout:" in proc.stderr.splitlines()[-1]


def test_max_instructions_must_be_positive() -> None:
    proc = pyhv("run", "--bios", "none", "--kernel", str(GUESTS / "exit_pass.elf"),
                "--max-instructions", "0")
    assert proc.returncode == 2 and "argument --max-instructions" in proc.stderr


def test_vmgenid_option() -> None:
    """``pyhv run`` gives a machine the VM generation ID device unless told ``off``; a
    value that is neither is one line."""
    import argparse

    from pyhv.cli.main import _add_machine_args, build_config

    p = argparse.ArgumentParser()
    _add_machine_args(p)
    base = ["--bios", "none", "--kernel", str(GUESTS / "exit_pass.elf")]
    assert build_config(p.parse_args(base)).vmgenid == "auto"
    assert build_config(p.parse_args([*base, "--vmgenid", "off"])).vmgenid is None
    guid = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
    assert build_config(p.parse_args([*base, "--vmgenid", guid])).vmgenid == guid
    assert_user_error(pyhv("run", *base, "--vmgenid", "nonsense"),
                      "vmgenid guid 'nonsense'", "expected 'auto' or a UUID")
    assert_user_error(pyhv("run", "--restore", "x.snap", "--vmgenid", "off"),
                      "drop --vmgenid")
