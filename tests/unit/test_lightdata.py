"""pyhv.lightdata: classes that behave as the standard library's dataclasses (the
methods, frozen assignment, hashing, and dataclasses.fields/replace/asdict on them)
and that a run declares without importing ``dataclasses`` or ``inspect``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import ClassVar

import pytest

from pyhv.lightdata import dataclass, field, replace


@dataclass(frozen=True)
class Point:
    x: int
    y: int = 2
    tags: tuple[str, ...] = ()
    KIND: ClassVar[str] = "point"

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x < 0")
        object.__setattr__(self, "tags", tuple(self.tags))


@dataclass
class Bag:
    name: str
    items: list[int] = field(default_factory=list)


def test_methods_as_a_dataclass_has_them():
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 2, ())
    assert Point(1, y=3, tags=["a"]).tags == ("a",)  # __post_init__ ran
    assert repr(Point(1, 3)) == "Point(x=1, y=3, tags=())"
    assert Point(1) == Point(1, 2) and Point(1) != Point(2)
    assert Point(1).__eq__(object()) is NotImplemented
    assert hash(Point(1, 2)) == hash(Point(1, 2)) and len({Point(1), Point(1)}) == 1
    assert Point.KIND == "point" and "KIND" not in repr(p)
    with pytest.raises(ValueError, match="x < 0"):
        Point(-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.y
    a, b = Bag("a"), Bag("b")
    a.items.append(1)
    assert b.items == [] and a == Bag("a", [1])  # a fresh list each
    a.name = "c"  # not frozen
    with pytest.raises(TypeError):
        hash(a)  # eq without frozen: unhashable, as with dataclasses


@pytest.mark.parametrize("args,kw,message", [
    ((), {}, "missing required argument: 'x'"),
    ((1, 2, (), 4), {}, "positional arguments"),
    ((1,), {"x": 2}, "multiple values for argument 'x'"),
    ((1,), {"z": 2}, "unexpected keyword argument 'z'"),
])
def test_wrong_arguments_are_type_errors(args, kw, message):
    with pytest.raises(TypeError, match=message):
        Point(*args, **kw)


def test_the_standard_librarys_functions_work_on_them():
    p = Point(1, 3, ("t",))
    assert dataclasses.is_dataclass(p) and dataclasses.is_dataclass(Point)
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "tags"]
    assert dataclasses.asdict(p) == {"x": 1, "y": 3, "tags": ("t",)}
    assert dataclasses.replace(p, y=7) == Point(1, 7, ("t",))
    assert replace(p, y=7) == Point(1, 7, ("t",))
    with pytest.raises(ValueError):
        replace(p, x=-1)  # through __init__ and __post_init__
    assert dataclasses.asdict(Bag("b", [1])) == {"name": "b", "items": [1]}


def test_a_run_imports_neither_dataclasses_nor_inspect():
    """What lightdata is for: declaring the board's and the ISA's classes costs no
    generated code, and the run's imports leave out ``dataclasses`` and ``inspect``
    (with ``ast``'s friends, ~10 ms) and ``logging`` (~8 ms)."""
    # (what the interpreter's start-up imported already, a site hook's say, is not pyhv's)
    code = ("import sys; before = set(sys.modules); "
            "import pyhv.cli.main, pyhv.vm.machine, pyhv.cpu.interp; "
            "print(sorted(m for m in ('dataclasses', 'inspect', 'logging') "
            "if m in sys.modules and m not in before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
