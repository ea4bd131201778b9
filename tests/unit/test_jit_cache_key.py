"""The JIT's on-disk code cache is keyed by everything that decides its machine code:
a change to any source file the code generator depends on (its pyhv imports, followed
transitively) starts a new cache, so a stale object is never loaded."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from pyhv.cpu.engines import jit_unavailable_reason

pytestmark = pytest.mark.skipif(jit_unavailable_reason() is not None,
                                reason=f"jit unavailable: {jit_unavailable_reason()}")


def _pyhv_imports(module) -> set[str]:
    """Names of the pyhv modules ``module`` imports (relative imports resolved)."""
    tree = ast.parse(Path(module.__file__).read_text())
    package = module.__name__.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                               package) if node.level else node.module
            if not base or not base.startswith("pyhv"):
                continue
            base_mod = importlib.import_module(base)
            for alias in node.names:  # "from . import codegen" imports a module
                sub = f"{base}.{alias.name}"
                is_module = hasattr(base_mod, "__path__") and importlib.util.find_spec(sub)
                found.add(sub if is_module else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pyhv"))
    return {name for name in found if name not in ("pyhv", "pyhv.cpu", "pyhv.isa")}


def test_generator_modules_cover_their_own_imports() -> None:
    from pyhv.cpu.jit.compiler import generator_modules

    covered = {m.__name__ for m in generator_modules()}
    for module in generator_modules():
        missing = _pyhv_imports(module) - covered
        assert not missing, f"{module.__name__} imports {missing}, not in the cache key"


def test_a_change_to_any_generator_source_changes_the_cache_tag() -> None:
    from pyhv.cpu.jit.compiler import cache_tag, generator_modules

    sources = [Path(m.__file__).read_bytes() for m in generator_modules()]
    base = cache_tag("cpu", "+f", sources)
    assert base == cache_tag("cpu", "+f", sources)
    assert base != cache_tag("othercpu", "+f", sources)
    for i in range(len(sources)):
        changed = list(sources)
        changed[i] += b"\n# edited\n"
        assert cache_tag("cpu", "+f", changed) != base, generator_modules()[i].__name__
    names = {m.__name__.rsplit(".", 1)[1] for m in generator_modules()}
    assert {"decoder", "compressed", "codegen", "native_interp", "state", "compiler"} <= names


def test_old_versions_of_the_code_cache_are_pruned(tmp_path):
    """A new pyhv version's cache directory removes all but the most recently used
    others (each version's Linux cache is tens of MB); names that are not cache tags
    are left alone."""
    import os

    from pyhv.cpu.jit.compiler import KEEP_VERSIONS, prune_versions

    olds = []
    for i in range(KEEP_VERSIONS + 2):
        d = tmp_path / f"{i:016x}"
        d.mkdir()
        (d / "index").write_text("x")
        os.utime(d, (1000 + i, 1000 + i))  # higher i: used more recently
        olds.append(d)
    mine = tmp_path / "not-a-cache-tag"
    mine.mkdir()
    current = tmp_path / "ffffffffffffffff"
    current.mkdir()
    removed = prune_versions(current)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted([current.name, mine.name]
                          + [d.name for d in olds[-(KEEP_VERSIONS - 1):]])
    assert sorted(removed) == sorted(olds[:len(olds) - (KEEP_VERSIONS - 1)])


def test_temporary_files_of_processes_gone_are_swept(tmp_path):
    """A process that exits while its compiler's thread writes a batch leaves the
    batch's temporary file (``.NAME.PID.THREAD``) in the cache: the next one removes
    it, and leaves those of running processes, the objects and the index alone."""
    import os
    import subprocess
    import sys

    from pyhv.cpu.jit.compiler import sweep_temporaries

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(gone.stdout)
    left = [tmp_path / f".0123456789abcdef01234567.o.{dead}.140000000000",
            tmp_path / f".rvc.bin.{dead}"]
    kept = [tmp_path / f".89abcdef0123456789abcdef.o.{os.getpid()}.1",
            tmp_path / "0123456789abcdef01234567.o", tmp_path / "index",
            tmp_path / ".hidden"]
    for p in left + kept:
        p.write_bytes(b"x")
    assert sorted(sweep_temporaries(tmp_path)) == sorted(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)
    assert sweep_temporaries(tmp_path / "missing") == []


def test_the_compile_share_shrinks_while_the_code_cache_feeds_the_run(monkeypatch):
    """The compiler's budget (a share of the time since it started): whole while what
    gets hot is compiled, a quarter while the code cache supplies it (the same guest
    again: what is left to compile only just got hot)."""
    import time

    if jit_unavailable_reason() is not None:
        pytest.skip(f"jit unavailable: {jit_unavailable_reason()}")
    from pyhv.cpu.jit.compiler import COMPILE_GRACE, COMPILE_SHARE, WARM_SHARE, compiler

    comp = compiler()
    now = time.perf_counter()
    monkeypatch.setattr(comp, "_waiting", {})
    monkeypatch.setattr(comp, "_started", now - 10.0)  # compiling for 10 s
    monkeypatch.setattr(comp, "_busy_since", 0.0)
    monkeypatch.setattr(comp, "_recent_at", now)
    # between a quarter of the share and the whole of it
    spent = COMPILE_GRACE + 10.0 * COMPILE_SHARE * (1 + WARM_SHARE) / 2
    monkeypatch.setattr(comp, "compile_seconds", spent)
    monkeypatch.setattr(comp, "idle_seconds", 0.0)  # (none of it on the idle queue)
    monkeypatch.setattr(comp, "_busy_idle", False)
    monkeypatch.setattr(comp, "_recent", [100.0, 0.0])  # everything compiled
    assert not comp.over_budget()
    monkeypatch.setattr(comp, "_recent", [10.0, 90.0])  # mostly from the cache
    assert comp.over_budget()
    monkeypatch.setattr(comp, "_recent", [0.0, 0.0])  # nothing yet: the whole share
    assert not comp.over_budget()
