"""pyhv's layers only point down (docs/layers.md): every import of one pyhv package by
another, at module level or inside a function, goes to a lower layer. The test walks
the source's imports (with ``ast``), so it fails on any new upward import."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "pyhv"
# Lowest first. The package root is the floor: errors, lightdata (dataclasses without
# their start-up cost), then its __init__ (the version,
# and the public API, whose names are imported lazily, on first use), then clock, then
# records (the typed state records of every machine part);
# __main__ is the top. Imports under ``if TYPE_CHECKING:`` are annotations only: skipped.
LAYERS = ["errors", "lightdata", "__init__", "clock", "records", "isa", "memory", "cpu", "net",
          "devices", "board", "vm", "host", "cli", "__main__"]


def _layer(parts: tuple[str, ...]) -> str:
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def imports(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, top-level pyhv package or root module) of every pyhv import in ``path``."""
    rel = path.relative_to(src).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out: list[tuple[int, str]] = []
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # from .. import x: the root's own names, or a root module
                    name = node.names[0].name
                    target = [name if (src / f"{name}.py").exists() or (src / name).is_dir()
                              else "__init__"]
            elif node.module and node.module.split(".")[0] == "pyhv":
                target = node.module.split(".")[1:] or ["__init__"]
            else:
                continue
            out.append((node.lineno, target[0]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "pyhv" and len(parts) > 1:
                    out.append((node.lineno, parts[1]))
    return out


def upward_imports(src: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        here = _layer(rel.parts)
        for line, target in imports(path, src):
            if target not in LAYERS or here not in LAYERS:
                bad.append(f"{rel}:{line}: {here} -> {target}: not a known layer")
            elif LAYERS.index(target) > LAYERS.index(here):
                bad.append(f"{rel}:{line}: {here} imports {target}, a higher layer")
    return bad


def test_every_import_points_down() -> None:
    assert upward_imports() == []


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    """The check itself: an upward import (at module level or in a function) is reported,
    one under TYPE_CHECKING is not."""
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "ram.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..cpu.hart import Hart\n"
        "def f():\n    from ..devices.base import IrqLine\n")
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "base.py").write_text("from ..memory.device import Device\n")
    assert upward_imports(tmp_path) == [
        "memory/ram.py:5: memory imports devices, a higher layer"]
