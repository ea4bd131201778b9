"""Typed, versioned records of VM state, which every machine part declares.

A part (a hart, the CLINT, a virtio queue, ...) says what its state is with a frozen
dataclass whose fields carry their type and range (``U8``, ``U64``, ``Annotated[bytes,
MaxLen(n)]``, lists of them, nested records) and a ``VERSION``. A snapshot stores
the record as plain data (JSON-able: ints, bools, hex strings) with its version;
loading checks every field against the declaration before any part sees it, so a value
out of range (a damaged file, or one written by hand to attack the host) is an error
naming the field, never a crash later in the device. The records know nothing of
engines: a hart's state is the architectural state, so a VM saved under the JIT is
restored under the interpreter.

Stdlib only, and cheap to declare: every device module declares its record at import,
so a record is a plain class with ``__slots__``-free attributes set once by a shared
``__init__`` (not a generated dataclass: ``dataclass()`` costs ~0.5 ms a class, which
every run would pay at start-up for nothing); field types are read only when a record
is loaded.
"""

from __future__ import annotations

import types
import typing
from typing import (
    Annotated,
    Any,
    ClassVar,
    NamedTuple,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

from .errors import PyhvError


class StateError(PyhvError):
    """Saved state that does not fit the record it is loaded into."""


class Range(NamedTuple):
    """An integer field's bounds, both included."""

    lo: int
    hi: int


class MaxLen(NamedTuple):
    """At most this many items (a list) or bytes (bytes)."""

    n: int


U1 = Annotated[int, Range(0, 1)]
U3 = Annotated[int, Range(0, 7)]
U5 = Annotated[int, Range(0, 0x1F)]
U8 = Annotated[int, Range(0, 0xFF)]
U16 = Annotated[int, Range(0, 0xFFFF)]
U32 = Annotated[int, Range(0, 0xFFFF_FFFF)]
U64 = Annotated[int, Range(0, (1 << 64) - 1)]
I64 = Annotated[int, Range(-(1 << 63), (1 << 63) - 1)]


@typing.dataclass_transform(frozen_default=True)
class Record:
    """Base of the state records: fields declared as class annotations, given in that
    order (or by name) to the constructor, read-only after. ``VERSION`` is bumped when
    a field changes meaning, and loading an older one is then a clear error (or a
    conversion the part writes)."""

    VERSION: ClassVar[int] = 1
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        own = [k for k, v in cls.__dict__.get("__annotations__", {}).items()
               if "ClassVar" not in str(v)]
        cls._fields = (*cls._fields, *own)

    def __init__(self, *args: Any, **kw: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}: {len(args)} values for "
                            f"{len(fields)} fields")
        values = dict(zip(fields, args, strict=False))
        for k, v in kw.items():
            if k not in fields or k in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated '{k}'")
            values[k] = v
        if len(values) != len(fields):
            missing = [k for k in fields if k not in values]
            raise TypeError(f"{type(self).__name__}: missing {', '.join(missing)}")
        for k in fields:
            object.__setattr__(self, k, values[k])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is a record: read-only")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, k) == getattr(other, k) for k in self._fields)

    __hash__ = None  # type: ignore[assignment]  # (fields are lists: not hashable)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(
            f"{k}={getattr(self, k)!r:.60}" for k in self._fields) + ")"


R = TypeVar("R", bound=Record)


def record(cls: type[R]) -> type[R]:
    """Declare ``cls`` a state record (readability: ``Record`` does the work)."""
    return cls


def dump(rec: Record) -> dict[str, Any]:
    """``rec`` as JSON-able data (bytes as hex strings, nested records as dicts)."""
    return {k: _dump_value(getattr(rec, k)) for k in rec._fields}


def _dump_value(v: Any) -> Any:
    if isinstance(v, Record):
        return dump(v)
    if isinstance(v, bytes | bytearray):
        return bytes(v).hex()
    if isinstance(v, list | tuple):
        return [_dump_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _dump_value(x) for k, x in v.items()}
    return v


def load(cls: type[R], data: Any, where: str) -> R:
    """Check ``data`` (from ``dump`` of a ``cls``, perhaps damaged) field by field and
    build the record; StateError names the first field that does not fit."""
    if not isinstance(data, dict):
        raise StateError(f"{where}: expected a record, found {type(data).__name__}")
    hints = _hints(cls)
    names = cls._fields
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise StateError(f"{where}: unknown field '{unknown[0]}'")
    values = {}
    for name in names:
        if name not in data:
            raise StateError(f"{where}.{name}: missing")
        values[name] = _load_value(hints[name], data[name], f"{where}.{name}")
    return cls(**values)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls, include_extras=True)
    return hints


def _load_value(tp: Any, v: Any, where: str) -> Any:
    meta: tuple[Any, ...] = ()
    if get_origin(tp) is Annotated:
        tp, *rest = get_args(tp)
        meta = tuple(rest)
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        options = get_args(tp)
        if v is None and type(None) in options:
            return None
        (tp,) = [t for t in options if t is not type(None)]
        return _load_value(Annotated[(tp, *meta)] if meta else tp, v, where)
    limit = next((m.n for m in meta if isinstance(m, MaxLen)), None)
    if tp is bool:
        if not isinstance(v, bool):
            raise StateError(f"{where}: expected true or false, found {v!r:.40}")
        return v
    if tp is int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise StateError(f"{where}: expected an integer, found {v!r:.40}")
        for m in meta:
            if isinstance(m, Range) and not m.lo <= v <= m.hi:
                raise StateError(f"{where}: {v} is out of range {m.lo}..{m.hi:#x}")
        return v
    if tp is str:
        if not isinstance(v, str):
            raise StateError(f"{where}: expected a string, found {v!r:.40}")
        return v
    if tp is bytes:
        try:
            b = bytes.fromhex(v) if isinstance(v, str) else None
        except ValueError:
            b = None
        if b is None:
            raise StateError(f"{where}: expected hex bytes")
        if limit is not None and len(b) > limit:
            raise StateError(f"{where}: {len(b)} bytes, at most {limit}")
        return b
    if origin is list:
        if not isinstance(v, list):
            raise StateError(f"{where}: expected a list, found {v!r:.40}")
        if limit is not None and len(v) > limit:
            raise StateError(f"{where}: {len(v)} items, at most {limit}")
        (item,) = get_args(tp)
        return [_load_value(item, x, f"{where}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise StateError(f"{where}: expected a mapping, found {v!r:.40}")
        if limit is not None and len(v) > limit:
            raise StateError(f"{where}: {len(v)} entries, at most {limit}")
        kt, vt = get_args(tp)
        return {_load_value(kt, k, f"{where}") : _load_value(vt, x, f"{where}[{k!r}]")
                for k, x in v.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return load(tp, v, where)
    raise TypeError(f"{where}: unsupported field type {tp!r}")  # a record's own mistake


def exact_length(items: list[Any], n: int, where: str) -> list[Any]:
    """A part's check that a list has the length its machine gives it (harts, sources)."""
    if len(items) != n:
        raise StateError(f"{where}: {len(items)} items, this machine has {n}")
    return items
