"""Wire JSON to objects, as Go's json.Unmarshal fills the reference's structs (PROTOCOL.md §3.2).

Contract: :func:`loads` gives the value Go's ``json.Unmarshal`` gives for the same bytes and the
mirror struct, so that re-encoding gives what the reference hashes, or raises
:class:`MalformedJSON` where Go returns an error. ``tests/mim/test_differential.py`` holds it to
Go's own ``encoding/json``. Any change here is a protocol change.

Go's rules, in the order a value meets them:

- The whole text must be JSON (``mim.scanner``): at most 10,000 levels of nesting, invalid UTF-8
  bytes and lone surrogate escapes read as U+FFFD, one per bad byte.
- Top-level ``null`` leaves the struct zero: no error (the object then fails at bounds).
- Keys match a field exactly, else case-insensitively with Go's simple folding (the Kelvin sign
  matches ``k``, the long s ``s``); unknown keys are skipped and their values never converted.
- Every occurrence of a key is decoded in order, *into* what the field already holds: so the last
  scalar wins, a repeated object key fills the struct it already holds, and a repeated array key
  fills the slice it already holds element by element (a ``null`` or ``{}`` element leaves the
  earlier element as it was; a longer array reuses the slice's backing array past its length, as
  Go's ``append`` growth left it). ``null`` makes a slice nil and leaves anything else as it was.
- An integer field takes only an integer literal in its Go type's range; an unsigned one refuses
  any sign, even ``-0``. A value of the wrong JSON type is an error naming the field.

The decoder follows the target's fields, never the input's depth: a value it does not store is
never visited, and its recursion is bounded by the nesting of the classes. A flat class whose
object has exactly its keys, once each, with values of the right type, takes a generated
straight-line loader (the common case); anything else takes the general path, which gives the same
result or the precise error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from mim.errors import MalformedJSON
from mim.scanner import Float, Number, Pairs, parse, text_of
from mim.schema import INT_RANGES, UNSIGNED, Field, defaults, fields_of, per_class

__all__ = ["document", "loads", "objects"]

T = TypeVar("T")

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _fold(key: str) -> str:
    return key.lower().replace("ſ", "s")


@per_class
def _zero(cls: type[Any]) -> Any:
    """The zero value of a struct class (frozen, so one serves every use)."""
    return cls()


@dataclass(frozen=True, slots=True)
class _Plan:
    cls: type[Any]
    exact: dict[str, Field]
    folded: dict[str, Field]
    nested: tuple[Field, ...]  # the struct and slice fields, which are frozen at the end
    zero: dict[str, Any]  # each field's value when its key is absent


@per_class
def _plan(cls: type[Any]) -> _Plan:
    schema = fields_of(cls)
    return _Plan(
        cls=cls,
        exact={f.key: f for f in schema},
        folded={_fold(f.key): f for f in schema},
        nested=tuple(f for f in schema if f.go in ("struct", "slice")),
        zero=dict(defaults(cls)),
    )


# --------------------------------------------------------------------------- what is decoded into


class _Struct:
    """A struct being decoded into: its plan and its field values so far."""

    __slots__ = ("plan", "values")

    def __init__(self, plan: _Plan, current: Any) -> None:
        self.plan = plan
        if current is None:
            self.values = plan.zero.copy()
        else:  # a struct already held, decoded into again
            self.values = {name: getattr(current, name) for name in plan.zero}


class _Slice:
    """A Go slice being decoded into: its backing array (as long as its capacity) and length."""

    __slots__ = ("items", "length")

    def __init__(self, items: list[Any], length: int) -> None:
        self.items = items
        self.length = length


def _freeze(value: Any) -> Any:
    """The frozen object of what was decoded; other values are already final."""
    if isinstance(value, _Struct):
        values = value.values
        for f in value.plan.nested:
            values[f.name] = _freeze(values[f.name])
        return value.plan.cls(**values)
    if isinstance(value, _Slice):
        return tuple([_freeze(x) for x in value.items[: value.length]])
    return value


def _pairs(raw: Any) -> Iterable[tuple[str, Any]] | None:
    if type(raw) is Pairs:
        return raw
    if isinstance(raw, dict):  # already-parsed input
        return raw.items()
    return None


def _type_error(path: str, value: Any, want: str) -> MalformedJSON:
    if isinstance(value, Float | Number | float) or type(value) is int:
        got = f"number {str(value)[:32]}"
    elif isinstance(value, bool):
        got = "bool"
    elif isinstance(value, str):
        got = "string"
    elif _pairs(value) is not None:
        got = "object"
    elif isinstance(value, list):
        got = "array"
    else:
        got = type(value).__name__
    return MalformedJSON(path, "json.type", f"{got} where {want} is expected")


def _integer(raw: Any, path: str, go: str) -> int:
    if type(raw) is int:
        low, high = INT_RANGES[go]
        if low <= raw <= high:
            return raw
        raise MalformedJSON(path, "json.range", f"{raw} overflows {go}")
    if type(raw) is Number:
        if raw == "-0":
            if go not in UNSIGNED:
                return 0
            raise MalformedJSON(path, "json.range", f"-0 is signed, {go} takes no sign")
        raise MalformedJSON(path, "json.range", f"{raw[:32]}… overflows {go}")
    raise _type_error(path, raw, f"an integer ({go})")


class _Loader:
    __slots__ = ("fix_surrogates",)

    def __init__(self, fix_surrogates: bool) -> None:
        self.fix_surrogates = fix_surrogates

    def struct(self, cls: type[Any], raw: Any, path: str, current: Any) -> _Struct:
        pairs = _pairs(raw)
        if pairs is None:
            raise _type_error(path, raw, f"an object ({cls.__name__})")
        plan = _plan(cls)
        target = current if isinstance(current, _Struct) else _Struct(plan, current)
        values, exact, plain = target.values, plan.exact, not self.fix_surrogates
        for key, item in pairs:
            f = exact.get(key) or plan.folded.get(_fold(key))
            if f is None:
                continue
            if plain and type(item) is str and f.go == "string":
                values[f.name] = item  # the common case, first
            elif item is None:
                if f.go == "slice":
                    values[f.name] = None
                # null leaves anything else as it was
            else:
                values[f.name] = self.value(f, item, path, values[f.name])
        return target

    def value(self, f: Field, raw: Any, parent: str, current: Any) -> Any:
        """``raw`` decoded into field ``f`` of the struct at ``parent``, which holds ``current``."""
        go = f.go
        if go in INT_RANGES:
            low, high = INT_RANGES[go]
            if type(raw) is int and low <= raw <= high:
                return raw
            return _integer(raw, f"{parent}.{f.key}", go)
        path = f"{parent}.{f.key}"
        if go == "string":
            return self.string(raw, path)
        if go == "bool":
            if raw is True or raw is False:
                return raw
            raise _type_error(path, raw, "a bool")
        if go == "struct":
            return self.struct(f.elem, raw, path, current)
        if type(raw) is not list:
            raise _type_error(path, raw, "an array")
        return self.slice(f.elem, raw, path, current)

    def slice(self, elem: Any, raw: list[Any], path: str, current: Any) -> _Slice:
        """Go's decoding of an array into the slice a field holds (``decode.go``, array case)."""
        if not raw:
            return _Slice([], 0)  # a new empty slice, whatever was held
        # what is held: a slice decoded earlier, or nil, or one the object decoded into came with
        # (its capacity is its length)
        items = current.items if isinstance(current, _Slice) else list(current or ())
        zero = "" if elem is str else _zero(elem)
        for i, x in enumerate(raw):
            if i == len(items):  # full: a new backing array, half as large again, at least 4
                items = items[:i] + [zero] * (max(4, i + i // 2) - i)
            if x is None:
                continue  # null leaves the element as it was
            where = f"{path}[{i}]"
            if elem is str:
                items[i] = self.string(x, where)
            else:
                items[i] = self.struct(elem, x, where, items[i])
        return _Slice(items, len(raw))

    def string(self, raw: Any, path: str) -> str:
        if type(raw) is not str:
            raise _type_error(path, raw, "a string")
        if self.fix_surrogates:
            return _SURROGATE.sub("\ufffd", raw)
        return raw


# --------------------------------------------------------------------------- the fast path


def _generate_fast_loader(cls: type[Any]) -> Callable[[dict[str, Any]], Any] | None:
    """A straight-line decoder for the common case: a flat object whose keys are all exact field
    names, each at most once, holding values of the right type. Anything else (a null, a wrong
    type, an out-of-range integer, a -0, a nested struct) returns ``None`` and takes the general
    path, which gives the same result or the precise error."""
    schema = fields_of(cls)
    if any(f.go in ("struct", "slice", "bool") for f in schema):
        return None
    zero = defaults(cls)
    lines = ["def fast(d):", "    g = d.get"]
    args = []
    for i, f in enumerate(schema):
        lines.append(f"    v{i} = g({f.key!r}, {zero[f.name]!r})")
        if f.go == "string":
            lines.append(f"    if type(v{i}) is not str: return None")
        else:
            low, high = INT_RANGES[f.go]
            lines.append(
                f"    if type(v{i}) is not int or not {low} <= v{i} <= {high}: return None"
            )
        args.append(f"{f.name}=v{i}")
    lines.append(f"    return cls({', '.join(args)})")
    env: dict[str, Any] = {"cls": cls}
    exec("\n".join(lines), env)  # noqa: S102 - code generated from our own schema only
    fast: Callable[[dict[str, Any]], Any] = env["fast"]
    return fast


@per_class
def _fast_plan(cls: type[Any]) -> tuple[frozenset[str], Callable[[dict[str, Any]], Any]] | None:
    loader = _generate_fast_loader(cls)
    if loader is None:
        return None
    return frozenset(f.key for f in fields_of(cls)), loader


def _fast_load(cls: type[Any], value: Any) -> Any:
    fast = _fast_plan(cls)
    if fast is None or type(value) is not Pairs:
        return None
    keys, loader = fast
    d = dict(value)
    if len(d) != len(value) or not d.keys() <= keys:
        return None  # duplicates or unknown keys: Go's rules need the general path
    return loader(d)


# --------------------------------------------------------------------------- entry points


def loads(cls: type[T], raw: bytes | str | Any) -> T:
    """Decode wire JSON into ``cls`` as Go's ``json.Unmarshal`` would (see the module docstring).

    ``raw`` may also be already-parsed JSON: the decoder's form from :func:`document`, or plain
    ``dict``/``list`` values from ``json.loads`` (whose duplicate keys are already gone).
    """
    name = cls.__name__.lower()
    if isinstance(raw, bytes | bytearray | memoryview | str):
        text = text_of(raw)
        value = parse(text, name)
        surrogates = "\\ud" in text or "\\uD" in text
        if not surrogates:
            fast: T | None = _fast_load(cls, value)
            if fast is not None:
                return fast
        loader = _Loader(surrogates)
    else:
        value, loader = raw, _Loader(True)
    if value is None:
        return cls()  # top-level null: Go leaves the struct as it was, zero
    result: T = _freeze(loader.struct(cls, value, name, None))
    return result


def document(raw: bytes | str) -> Any:
    """Decode a whole JSON document as Go sees it, without a target type.

    Objects inside stay in the decoder's own form (pairs in order, duplicates kept), so each
    element of an array can then go to :func:`loads` and decode exactly as if sent alone.
    """
    return parse(text_of(raw), "document")


def objects(raw: bytes | str) -> list[Any]:
    """The objects of a document holding one JSON object or an array of them, in Go's view.

    Each item goes to :func:`loads` and decodes exactly as if it had been sent alone.
    """
    whole = document(raw)
    if type(whole) is list:
        return whole
    return [whole]
