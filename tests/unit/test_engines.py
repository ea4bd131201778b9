"""Choosing and building CPU engines (pyhv.cpu.engines) and wiring them into a Machine.

The JIT package (pyhv.cpu.jit) may or may not exist and llvmlite may or may not work:
the probe is replaced by a fake where a test needs one answer or the other, and the
tests that need the real JIT skip without it.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from pyhv import BufferConsole, ConfigError, Machine, MachineConfig
from pyhv.cli.qemu_compat import config_from_args
from pyhv.cpu import engines
from pyhv.cpu.engines import ENGINE_NAMES, make_engines, resolve_engine
from pyhv.cpu.interp import Interpreter
from pyhv.cpu.translate import Translator

GUESTS = Path(__file__).resolve().parents[2] / "guests" / "tests"
KERNEL = str(GUESTS / "exit_pass.elf")


@pytest.fixture
def jit_says(monkeypatch: pytest.MonkeyPatch):
    """Make the JIT probe answer ``reason`` (None: available); the note is unprinted."""

    def set_reason(reason: str | None) -> None:
        monkeypatch.setattr(engines, "_reason", reason)
        monkeypatch.setattr(engines, "_fallback_noted", False)

    return set_reason


@pytest.fixture
def fake_jit(monkeypatch: pytest.MonkeyPatch):
    """A stand-in pyhv.cpu.jit whose engines are interpreters with a preferred slice."""
    made: list[object] = []

    class FakeJit(Interpreter):
        preferred_slice = 1234

    def make_jit_engines(board):
        out = [FakeJit(h, board.code) for h in board.harts]
        made.extend(out)
        return out

    module = types.ModuleType("pyhv.cpu.jit")
    module.unavailable_reason = lambda: None  # type: ignore[attr-defined]
    module.make_jit_engines = make_jit_engines  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "pyhv.cpu.jit", module)
    monkeypatch.setattr(engines, "_reason", engines._UNKNOWN)
    return made


def test_names() -> None:
    assert ENGINE_NAMES == ("auto", "interp", "translate", "jit")
    assert MachineConfig().engine == "auto"


@pytest.mark.parametrize("name", ["interp", "translate"])
def test_plain_engines_resolve_to_themselves(name: str, jit_says) -> None:
    jit_says("llvmlite is not installed")
    assert resolve_engine(name) == name


@pytest.mark.parametrize("name", ["", "tcg", "JIT", "interpreter", "kvm"])
def test_unknown_engine_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="choose from: auto, interp, translate, jit"):
        resolve_engine(name)
    with pytest.raises(ConfigError, match="is not available"):
        MachineConfig(kernel=KERNEL, bios="none", engine=name)


def test_auto_is_jit_where_it_works(jit_says, capsys: pytest.CaptureFixture[str]) -> None:
    jit_says(None)
    assert resolve_engine("auto") == "jit"
    assert resolve_engine("jit") == "jit"
    assert capsys.readouterr().err == ""


def test_auto_falls_back_to_translate_with_one_note(
    jit_says, capsys: pytest.CaptureFixture[str]
) -> None:
    jit_says("llvmlite is not installed")
    assert [resolve_engine("auto") for _ in range(3)] == ["translate"] * 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert "llvmlite is not installed" in err[0] and "translate" in err[0]


def test_auto_is_quiet_without_a_jit_package(jit_says, capsys) -> None:
    jit_says(engines._NO_PACKAGE)
    assert resolve_engine("auto") == "translate"
    assert capsys.readouterr().err == ""


def test_explicit_jit_that_cannot_run_is_a_config_error(jit_says) -> None:
    jit_says("llvmlite is not installed")
    with pytest.raises(ConfigError, match="engine 'jit' is not available: llvmlite is not"):
        resolve_engine("jit")
    with pytest.raises(ConfigError, match="llvmlite"):
        Machine(MachineConfig(kernel=KERNEL, bios="none", engine="jit"))


def test_probe_failures_mean_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    broken = types.ModuleType("pyhv.cpu.jit")

    def boom() -> str | None:
        raise RuntimeError("no target machine")

    broken.unavailable_reason = boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyhv.cpu.jit", broken)
    monkeypatch.setattr(engines, "_reason", engines._UNKNOWN)
    assert "no target machine" in (engines.jit_unavailable_reason() or "")
    monkeypatch.setitem(sys.modules, "pyhv.cpu.jit", None)  # import fails
    monkeypatch.setattr(engines, "_reason", engines._UNKNOWN)
    assert engines.jit_unavailable_reason()


def _board(smp: int):
    vm = Machine(MachineConfig(kernel=KERNEL, bios="none", smp=smp, engine="interp"))
    return vm, vm.board


@pytest.mark.parametrize("name,cls", [("interp", Interpreter), ("translate", Translator)])
def test_make_engines_builds_one_per_hart(name: str, cls: type) -> None:
    vm, board = _board(3)
    try:
        built = make_engines(name, board)
        assert [type(e) for e in built] == [cls] * 3
        assert [e.hart for e in built] == board.harts
        assert all(e.code is board.code for e in built)
        # The hart's flush hooks now reach the engine built last for it.
        assert board.harts[1].flush_decoded == built[1].flush
    finally:
        vm.close()


def test_make_engines_jit_uses_the_jit_package(fake_jit) -> None:
    vm, board = _board(2)
    try:
        built = make_engines("jit", board)
        assert built == fake_jit and len(built) == 2
        assert make_engines("auto", board)[0].preferred_slice == 1234
    finally:
        vm.close()


def test_machine_runs_each_engine_with_its_preferred_slice(fake_jit) -> None:
    budgets: list[int] = []
    console = BufferConsole()
    vm = Machine(MachineConfig(kernel=KERNEL, bios="none", engine="auto"), console=console)
    try:
        assert vm.engine_name == "jit"
        engine = vm.engines[0]
        run = engine.run

        def counting_run(budget: int) -> int:
            budgets.append(budget)
            return run(budget)

        engine.run = counting_run
        result = vm.run(timeout=60)
    finally:
        vm.close()
    assert result.reason == "poweroff" and "PASS exit_pass" in console.text
    assert budgets and set(budgets) == {1234}


@pytest.mark.parametrize("name", ["interp", "translate"])
def test_guest_runs_on_engine(name: str) -> None:
    console = BufferConsole()
    vm = Machine(MachineConfig(kernel=KERNEL, bios="none", engine=name, smp=2), console=console)
    try:
        assert vm.engine_name == name
        result = vm.run(timeout=60)
    finally:
        vm.close()
    assert (result.reason, result.exit_code) == ("poweroff", 0)
    assert "PASS exit_pass" in console.text


def test_real_jit_when_available() -> None:
    reason = engines.jit_unavailable_reason()
    if reason is not None:
        pytest.skip(f"JIT unavailable: {reason}")
    console = BufferConsole()
    vm = Machine(MachineConfig(kernel=KERNEL, bios="none", engine="jit"), console=console)
    try:
        result = vm.run(timeout=120)
    finally:
        vm.close()
    assert (result.reason, result.exit_code) == ("poweroff", 0)
    assert "PASS exit_pass" in console.text


# -- qemu-compat: -accel --------------------------------------------------------------------


@pytest.mark.parametrize(
    "accel,engine",
    [
        ([], "auto"),
        (["tcg"], "auto"),
        (["tcg,thread=single"], "auto"),
        (["pyhv"], "auto"),
        (["pyhv,engine=interp"], "interp"),
        (["pyhv,engine=translate"], "translate"),
        (["pyhv,engine=jit"], "jit"),
        (["kvm", "tcg"], "auto"),
        (["kvm", "pyhv,engine=interp"], "interp"),
        (["tcg", "pyhv,engine=interp"], "auto"),  # the first one pyhv has wins
    ],
)
def test_qemu_accel_picks_the_engine(accel: list[str], engine: str) -> None:
    argv = ["-M", "virt", "-bios", "none", "-kernel", KERNEL]
    for a in accel:
        argv += ["-accel", a]
    config, _ = config_from_args(argv)
    assert config.engine == engine


@pytest.mark.parametrize(
    "accel,words",
    [
        (["kvm"], ["kvm", "tcg"]),
        (["hvf", "kvm"], ["hvf, kvm"]),
        (["pyhv,engine=fast"], ["fast", "choose from"]),
        (["pyhv,speed=11"], ["speed"]),
    ],
)
def test_qemu_accel_errors(accel: list[str], words: list[str]) -> None:
    argv = ["-bios", "none", "-kernel", KERNEL]
    for a in accel:
        argv += ["-accel", a]
    with pytest.raises(ConfigError) as info:
        config_from_args(argv)
    for word in words:
        assert word in str(info.value)
