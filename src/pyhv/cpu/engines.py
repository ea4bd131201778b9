"""Choosing and building a CPU engine: one per hart, all with the same interface.

An engine runs one hart: ``run(budget) -> retired``, ``flush(all_contexts=True,
supervisor=True)`` and ``flush_page(vpn)``; it may name the slice size it prefers in an
attribute ``preferred_slice`` (instructions). The engines:

* ``interp``: the decode-cached interpreter (cpu/interp.py), the reference semantics;
* ``translate``: the Tier-1 block translator (cpu/translate.py), hot guest blocks
  compiled into Python functions;
* ``jit``: the LLVM JIT (the package ``pyhv.cpu.jit``, needs llvmlite);
* ``auto``: ``jit`` where it works on this host, else ``translate``.

The JIT package is imported only when it is asked for (``auto`` or ``jit``), so hosts
without llvmlite (or a tree without the package) run the other engines as before.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ..errors import ConfigError

ENGINE_NAMES = ("auto", "interp", "translate", "jit")
DEFAULT_ENGINE = "auto"

_JIT = "pyhv.cpu.jit"
_NO_PACKAGE = "this pyhv has no JIT engine (no package pyhv.cpu.jit)"
_fallback_noted = False  # the "auto falls back" note is printed once per process
_UNKNOWN = object()
_reason: object = _UNKNOWN  # the probe's answer, cached: it cannot change in a process


def jit_unavailable_reason() -> str | None:
    """Why the LLVM JIT cannot run here (None: it can). Probed once per process: the
    package is imported and its ``unavailable_reason()`` asked; a package that fails to
    import (llvmlite missing) or whose probe raises is unavailable too."""
    global _reason
    if _reason is _UNKNOWN:
        _reason = _probe_jit()
    return _reason  # type: ignore[return-value]


def _probe_jit() -> str | None:
    try:
        jit = importlib.import_module(_JIT)
    except ModuleNotFoundError as e:
        if e.name == _JIT:
            return _NO_PACKAGE
        return f"cannot import the JIT engine: {e}"
    except ImportError as e:
        return f"cannot import the JIT engine: {e}"
    try:
        reason = jit.unavailable_reason()
    except Exception as e:  # a broken probe means "unavailable"
        return f"the JIT engine's self-check failed: {type(e).__name__}: {e}"
    return None if reason is None else str(reason)


def jit_worth_trying() -> bool:
    """Whether ``auto`` would likely get the JIT, answered without the probe (which
    loads the JIT's runtime: ~25 ms): the probe's cached answer if it ran, else
    whether llvmlite and the JIT package are installed."""
    if _reason is not _UNKNOWN:
        return _reason is None
    from importlib.util import find_spec

    try:
        return find_spec("llvmlite") is not None and find_spec(_JIT) is not None
    except (ImportError, ValueError):
        return False


def jit_probed() -> bool:
    """Whether this process has already started the JIT (probing it is free now)."""
    return _reason is not _UNKNOWN


def resolve_engine(name: str) -> str:
    """The engine that ``name`` stands for: ``auto`` becomes ``jit`` or ``translate``.

    Raises :class:`ConfigError` for an unknown name, or for ``jit`` when the JIT cannot
    run on this host (with the reason). When ``auto`` falls back to ``translate`` because
    the JIT is present but unusable (llvmlite missing or broken), one line says so on
    stderr, once per process.
    """
    global _fallback_noted
    if name not in ENGINE_NAMES:
        raise ConfigError(
            f"engine '{name}' is not available (choose from: {', '.join(ENGINE_NAMES)})"
        )
    if name not in ("auto", "jit"):
        return name
    reason = jit_unavailable_reason()
    if reason is None:
        return "jit"
    if name == "jit":
        raise ConfigError(f"engine 'jit' is not available: {reason}")
    if not _fallback_noted and reason != _NO_PACKAGE:
        _fallback_noted = True
        print(f"pyhv: note: LLVM JIT unavailable ({reason}); using the translate engine",
              file=sys.stderr)
    return "translate"


def make_engines(name: str, board: Any) -> list[Any]:
    """One engine of kind ``name`` (resolved as :func:`resolve_engine` does) per hart of
    ``board.harts``, sharing ``board.code`` (the machine's CodeWatch)."""
    kind = resolve_engine(name)
    if kind == "jit":
        return list(importlib.import_module(_JIT).make_jit_engines(board))
    if kind == "translate":
        from .translate import Translator

        return [Translator(h, board.code) for h in board.harts]
    from .interp import Interpreter

    return [Interpreter(h, board.code) for h in board.harts]


__all__ = ["DEFAULT_ENGINE", "ENGINE_NAMES", "jit_probed", "jit_unavailable_reason",
           "jit_worth_trying", "make_engines", "resolve_engine"]
