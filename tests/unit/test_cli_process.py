"""How a pyhv command-line process ends (cli/process.py): with main()'s status, without
waiting for the JIT's batch in flight, and without teardown while LLVM compiles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyhv.cli import process
from pyhv.cpu import jit

ROOT = Path(__file__).resolve().parents[2]


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch):
    """os._exit raises _Exited, the exit handlers are counted (``exits.handlers``); the
    JIT's LEAVING flag is restored after."""
    monkeypatch.setattr(jit, "LEAVING", False)

    def os_exit(code: int) -> None:
        raise _Exited(code)

    monkeypatch.setattr(process.os, "_exit", os_exit)
    monkeypatch.handlers = []  # type: ignore[attr-defined]
    monkeypatch.setattr(process.atexit, "_run_exitfuncs",
                        lambda: monkeypatch.handlers.append(1))  # type: ignore[attr-defined]
    return monkeypatch


@pytest.mark.parametrize("busy", [False, True])
def test_the_status_is_mains_and_leaving_is_said(exits, busy: bool) -> None:
    exits.setattr(jit, "busy", lambda: busy)
    seen = []

    def main() -> int:
        seen.append(jit.LEAVING)
        return 3

    with pytest.raises(_Exited) as e:
        process.run_and_exit(main)
    assert seen == [True]
    assert e.value.code == 3
    # the exit handlers run, but not while the JIT compiles (LLVM's must not)
    assert exits.handlers == ([] if busy else [1])


def test_a_systemexit_from_main_keeps_its_status(exits) -> None:
    exits.setattr(jit, "busy", lambda: True)

    def main() -> int:
        raise SystemExit(2)  # argparse's usage error

    with pytest.raises(_Exited) as e:
        process.run_and_exit(main)
    assert e.value.code == 2


def test_a_stopping_machine_does_not_wait_for_the_compiler_when_leaving(monkeypatch) -> None:
    pytest.importorskip("llvmlite")
    from pyhv.cpu.jit.compiler import Compiler

    waited = []
    fake = Compiler.__new__(Compiler)
    fake.background = True
    monkeypatch.setattr(Compiler, "poll", lambda self, **kw: waited.append(kw) or 0)
    monkeypatch.setattr(jit, "LEAVING", False)
    fake.finish()
    monkeypatch.setattr(jit, "LEAVING", True)
    fake.finish()
    assert waited == [{"wait": True, "finishing": True}]


def test_a_real_run_exits_with_the_guests_status_and_prints_everything() -> None:
    """A JIT run of a guest that exits with status 3, as a user runs it."""
    out = subprocess.run([sys.executable, "-m", "pyhv.cli.main", "run", "--bios", "none",
                          "--kernel", str(ROOT / "guests" / "tests" / "exit_code.elf"),
                          "--stats"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    assert "FAIL exit_code" in out.stdout
    assert "pyhv: time:" in out.stderr


def test_exit_handlers_run_and_output_is_whole_in_a_real_process(tmp_path) -> None:
    """The fast exit (no interpreter teardown) still runs what was registered to run at
    exit (a weakref.finalize callback, an atexit handler) and loses no output."""
    marker = tmp_path / "ran"
    code = ("import atexit, pathlib, sys, weakref\n"
            "from pyhv.cli.process import run_and_exit\n"
            "class T: pass\n"
            "t = T()\n"
            f"weakref.finalize(t, pathlib.Path({str(marker)!r}).write_text, 'finalized')\n"
            "atexit.register(print, 'handler ran')\n"
            "def main():\n"
            "    sys.stdout.write('x' * 100000)\n"
            "    return 5\n"
            "run_and_exit(main)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 5, out.stderr
    assert out.stdout == "x" * 100000 + "handler ran\n"
    assert marker.read_text() == "finalized"
