"""Each field's Go type: what the codec needs in both directions (PROTOCOL.md §2, §3).

A struct class is a dataclass whose field order is the Go struct's declaration order and whose
annotations are ``str``, ``bool``, ``int`` (Go's ``int``/``int64``), another struct class, or
``tuple[X, ...] | None`` (a Go slice: ``None`` is nil, a tuple the elements). Field metadata may
say what the annotation cannot: the Go integer type (``go``: ``uint8``, ``uint16``, ``uint64``),
the JSON key where it is not the attribute's name (``json``), ``omitempty``, and the element class
of a slice (``elem``). ``mim.entities`` declares its classes this way; :func:`fields_of` reads a
class once and remembers it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, is_dataclass
from types import MappingProxyType
from typing import Any, Final, TypeVar

__all__ = ["INT_RANGES", "UNSIGNED", "Field", "defaults", "fields_of", "per_class"]

R = TypeVar("R")

#: The values each Go integer type holds; a number outside them is a decode error (§3.2).
INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint64": (0, 2**64 - 1),
}
#: The Go integer types parsed with ``strconv.ParseUint``, which refuses any sign, even ``-0``.
UNSIGNED: Final = frozenset({"uint8", "uint16", "uint64"})


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a struct class, as the codec sees it."""

    name: str  # the attribute
    key: str  # the JSON key
    go: str  # string | bool | struct | slice, or a key of INT_RANGES
    elem: Any  # the class of a struct field or of a slice's elements (str for []string)
    omitempty: bool


def per_class(make: Callable[[type[Any]], R]) -> Callable[[type[Any]], R]:
    """``make``, called once per class: later calls answer what the first one made.

    What the codec derives from a class (its fields, its generated encoder) is made on first use,
    so the codec needs no list of the classes it will meet.
    """
    made: dict[type[Any], R] = {}

    def once(cls: type[Any]) -> R:
        try:
            return made[cls]
        except KeyError:
            result = made[cls] = make(cls)
            return result

    once.__doc__ = make.__doc__
    return once


@per_class
def fields_of(cls: type[Any]) -> tuple[Field, ...]:
    """The fields of struct class ``cls`` in declaration order, which is the JSON key order."""
    hints = typing.get_type_hints(cls)
    plan: list[Field] = []
    for f in fields(cls):
        meta = f.metadata
        go, elem = _go_type(hints[f.name])
        plan.append(
            Field(
                name=f.name,
                key=meta.get("json", f.name),
                go=meta.get("go", go),
                elem=meta.get("elem", elem),
                omitempty=bool(meta.get("omitempty", False)),
            )
        )
    return tuple(plan)


@per_class
def defaults(cls: type[Any]) -> MappingProxyType[str, Any]:
    """Each field's zero value: what a field holds when its key is absent from the input."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            values[f.name] = f.default
        elif f.default_factory is not MISSING:
            values[f.name] = f.default_factory()
    return MappingProxyType(values)


def _go_type(hint: Any) -> tuple[str, Any]:
    if hint is str:
        return "string", None
    if hint is bool:
        return "bool", None
    if hint is int:
        return "int64", None
    if isinstance(hint, type) and is_dataclass(hint):
        return "struct", hint
    if isinstance(hint, types.UnionType):  # tuple[X, ...] | None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        (elem, _ellipsis) = typing.get_args(inner)
        return "slice", elem
    raise TypeError(f"no Go type for {hint!r}")
