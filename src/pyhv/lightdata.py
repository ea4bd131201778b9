"""``dataclasses.dataclass`` without its start-up cost, for the classes every run declares.

Python 3.11's ``dataclass()`` writes each class's ``__init__``, ``__repr__``, ``__eq__``
(and, frozen, ``__setattr__``, ``__delattr__``, ``__hash__``) as source text and
compiles each with ``exec``: ~1 ms a class, and importing ``dataclasses`` brings
``inspect`` (with ``ast``, ``dis``, ``tokenize``: ~10 ms). The board's configuration,
the ISA description and the loader declare eighteen such classes, which made ~30 ms of
the ~90 ms a guest that powers off at once costs (``bench/startup.py``). Here the same
methods are shared closures over each class's field list: declaring a class is a few
microseconds, nothing is compiled, and ``dataclasses`` is not imported.

The classes stay dataclasses to the standard library: ``dataclasses.fields``,
``replace``, ``asdict`` and ``is_dataclass`` work on them, through a
``__dataclass_fields__`` made on first use. What this supports is what pyhv's classes
use: fields from annotations in order (``ClassVar`` ones skipped), defaults and
``field(default_factory=...)``, ``__post_init__``, ``frozen`` (assignment raises
``dataclasses.FrozenInstanceError``; frozen classes hash by their fields, others with
``__eq__`` are unhashable, as with ``dataclass``). No inheritance between them, no
``order``, ``slots`` or ``InitVar``: a class that needs those uses ``dataclasses``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

_MISSING = object()
_SPEC = "__lightdata__"  # a class's fields: (name, default, factory), in order
_FIELDS = "__dataclass_fields__"  # what the standard library's functions look for


class _Field:
    """What ``field()`` returns: a default, or a factory that makes one per instance."""

    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any, default_factory: Any) -> None:
        self.default = default
        self.default_factory = default_factory


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] | Any = _MISSING) -> Any:
    """A field's default made per instance (``default_factory``), as ``dataclasses.field``."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return _Field(default, default_factory)


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


class _LazyFields:
    """``__dataclass_fields__`` for the standard library's functions: made once, when
    first asked for, by ``dataclasses`` itself from a shadow of the class (its
    annotations and defaults, without methods: nothing generated)."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] | None = None

    def __get__(self, obj: Any, owner: type) -> dict[str, Any]:
        if self.fields is None:
            import dataclasses

            ns: dict[str, Any] = {"__module__": owner.__module__,
                                  "__qualname__": owner.__qualname__,
                                  "__annotations__": dict(owner.__annotations__)}
            for name, default, factory in getattr(owner, _SPEC):
                if factory is not _MISSING:
                    ns[name] = dataclasses.field(default_factory=factory)
                elif default is not _MISSING:
                    ns[name] = default
            shadow: Any = dataclasses.dataclass(init=False, repr=False, eq=False)(
                type(owner.__name__, (), ns))
            self.fields = shadow.__dataclass_fields__
        return self.fields


def _frozen_error(name: str) -> Exception:
    import dataclasses

    return dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _methods(cls: type, spec: tuple[tuple[str, Any, Any], ...], frozen: bool) -> None:
    names = tuple(name for name, _, _ in spec)
    n = len(names)
    title = cls.__qualname__
    post = getattr(cls, "__post_init__", None)

    def __init__(self: Any, *args: Any, **kw: Any) -> None:
        if len(args) > n:
            raise TypeError(f"{title}.__init__() takes {n + 1} positional arguments "
                            f"but {len(args) + 1} were given")
        d = self.__dict__
        used = 0
        for i, (name, default, factory) in enumerate(spec):
            if i < len(args):
                if name in kw:
                    raise TypeError(f"{title}.__init__() got multiple values for "
                                    f"argument {name!r}")
                d[name] = args[i]
            elif name in kw:
                d[name] = kw[name]
                used += 1
            elif default is not _MISSING:
                d[name] = default
            elif factory is not _MISSING:
                d[name] = factory()
            else:
                raise TypeError(f"{title}.__init__() missing required argument: {name!r}")
        if used != len(kw):
            extra = next(k for k in kw if k not in names)
            raise TypeError(f"{title}.__init__() got an unexpected keyword argument {extra!r}")
        if post is not None:
            self.__post_init__()

    def __repr__(self: Any) -> str:
        d = self.__dict__
        return f"{type(self).__qualname__}({', '.join(f'{k}={d[k]!r}' for k in names)})"

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        a, b = self.__dict__, other.__dict__
        return tuple(a[k] for k in names) == tuple(b[k] for k in names)  # (as dataclasses)

    for method in (__init__, __repr__, __eq__):
        setattr(cls, method.__name__, method)
    if frozen:
        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise _frozen_error(name)

        def __delattr__(self: Any, name: str) -> None:
            raise _frozen_error(name)

        def __hash__(self: Any) -> int:
            d = self.__dict__
            return hash(tuple(d[k] for k in names))

        for frozen_method in (__setattr__, __delattr__, __hash__):
            setattr(cls, frozen_method.__name__, frozen_method)
    else:
        cls.__hash__ = None  # type: ignore[assignment]


@dataclass_transform(field_specifiers=(field,))
def dataclass(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """``@dataclass`` or ``@dataclass(frozen=True)``, as the standard library's (and so
    for type checkers: ``dataclass_transform``)."""

    def wrap(c: type[T]) -> type[T]:
        spec = []
        for name, annotation in c.__dict__.get("__annotations__", {}).items():
            if _is_classvar(annotation):
                continue
            value = c.__dict__.get(name, _MISSING)
            default, factory = value, _MISSING
            if isinstance(value, _Field):
                default, factory = value.default, value.default_factory
                if default is _MISSING:
                    delattr(c, name)
                else:
                    setattr(c, name, default)
            spec.append((name, default, factory))
        setattr(c, _SPEC, tuple(spec))
        setattr(c, _FIELDS, _LazyFields())
        _methods(c, tuple(spec), frozen)
        return c

    return wrap if cls is None else wrap(cls)


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of ``obj`` with some fields changed (``dataclasses.replace``), through its
    ``__init__`` (and so its ``__post_init__`` checks)."""
    for name, _, _ in getattr(type(obj), _SPEC):
        if name not in changes:
            changes[name] = obj.__dict__[name]
    return type(obj)(**changes)


__all__ = ["dataclass", "field", "replace"]
