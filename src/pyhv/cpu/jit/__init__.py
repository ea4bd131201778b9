"""Tier 2 of the fast engine: hot guest blocks compiled to host machine code by LLVM.

``unavailable_reason()`` says why the JIT cannot run on this host (llvmlite missing or
unable to build native code), or None; ``make_jit_engines(board)`` builds one engine per
hart of a board, all sharing one compiler and code cache.
"""

from __future__ import annotations

from typing import Any

_REASON: list[str | None] = []
# A command-line process that exits when its machine stops (cli/process.py): a stopping
# machine does not wait for the compiler's batch in flight (Compiler.finish).
LEAVING = False


def busy() -> bool:
    """Whether this process's JIT compiler (if it has one) is in the middle of a batch."""
    import sys

    mod = sys.modules.get(__name__ + ".compiler")
    return mod is not None and mod.busy()


def unavailable_reason() -> str | None:
    """Why the JIT cannot run here, or None. Its machine code is x86-64 (SSE for the
    FP state; loader.py places it); LLVM is imported only to compile (compiler.py), so
    the check here is that llvmlite is installed, and the runtime (dispatcher, native
    interpreter) loads, being built with LLVM first if this pyhv version has not yet."""
    if not _REASON:
        import os
        from importlib.util import find_spec

        machine = os.uname().machine
        if machine.lower() not in ("x86_64", "amd64"):
            _REASON.append(f"the JIT generates x86-64 code; this host is {machine}")
            return _REASON[0]
        try:
            if find_spec("llvmlite") is None:
                raise ImportError("no module named 'llvmlite'")
            from .compiler import compiler

            compiler()
            _REASON.append(None)
        except ImportError as e:
            _REASON.append(f"llvmlite is not installed ({e})")
        except Exception as e:  # noqa: BLE001 - any LLVM failure means: no JIT here
            _REASON.append(f"LLVM cannot generate native code here: {e}")
    return _REASON[0]


def make_jit_engines(board: Any, threshold: int | None = None, sync: bool = False,
                     native_interp: bool | None = None, compiled: bool = True,
                     base_runs: int | None = None) -> list[Any]:
    """One JIT engine per hart of ``board``. ``threshold``: runs of a block start before
    it is compiled (1: at once); ``sync``: compile at once on the calling thread instead
    of in the background (deterministic, for tests); ``native_interp=False``: cold code
    runs in Python instead of the native interpreter; ``compiled=False``: no block is
    ever compiled or loaded (the native interpreter and Python only: tests);
    ``base_runs``: runs of a start in the native interpreter before its baseline block
    (stencils.py; with a huge threshold, the baseline tier alone: tests)."""
    from .compiler import compiler
    from .engine import HOT_THRESHOLD, JitMachine

    machine = JitMachine(board, compiler(), threshold if threshold is not None else HOT_THRESHOLD,
                         sync=sync, native_interp=native_interp, compiled=compiled,
                         base_runs=base_runs)
    return machine.engines


__all__ = ["make_jit_engines", "unavailable_reason"]
