"""Shared by every test directory: tests/engine_world.py (one hart on any engine, random
looped programs) is importable as ``engine_world``, tests/daemon_process.py as
``daemon_process``."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


def pytest_sessionstart(session) -> None:
    """Where llvmlite is installed the JIT must work: a JIT that fails its self-check
    (a code generator error, say) would otherwise only skip its tests, and every
    machine would quietly fall back to the translate engine.

    pyhv's own machine code (the dispatcher and native interpreter, ~3 s to build) is
    kept under ~/.cache once per version; tests whose processes get a HOME of their own
    (the daemon's) would each build it again, so its place is fixed for the session."""
    import importlib.util
    import os

    import pytest

    if "PYHV_JIT_RUNTIME" not in os.environ:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                ".cache")
        os.environ["PYHV_JIT_RUNTIME"] = os.path.join(base, "pyhv", "runtime")

    if importlib.util.find_spec("llvmlite") is None:
        return
    from pyhv.cpu.engines import jit_unavailable_reason

    reason = jit_unavailable_reason()
    if reason is not None:
        raise pytest.UsageError(f"llvmlite is installed but the JIT cannot run: {reason}")
