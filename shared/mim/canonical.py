"""Canonical JSON: Go's ``encoding/json`` in both directions, for the classes of ``mim.entities``.

Contract: ``dumps`` must equal the reference's bytes for every canonical-JSON vector in
``../shared/vectors/`` (every step input, every object), and ``loads`` must decode to the value Go's
``json.Unmarshal`` decodes to, so that re-encoding gives what the reference hashes. Any change here
is a protocol change.

Encoding (PROTOCOL.md §3.1): keys in field order, no whitespace, integers in plain decimal, nil
slices as ``null`` and empty ones as ``[]``, ``omitempty`` dropping "", 0, false and nil or empty
slices (never structs), and Go's string escaping with HTML escaping on (``<``, ``>``, ``&``,
U+2028, U+2029 and control bytes as lower-case ``\\u00XX``; ``/`` and DEL raw; non-ASCII raw).

Decoding (§3.2): unknown keys ignored; keys matched exactly, else case-insensitively with Go's
simple folding (so ``K`` KELVIN SIGN matches ``k`` and ``ſ`` matches ``s``); the last duplicate
wins; ``null`` leaves a scalar or struct untouched and makes a slice nil; integers must be integer
literals in the range of their Go type; invalid UTF-8 bytes and lone surrogate escapes become
U+FFFD, one per bad byte. A value Go refuses raises :class:`MalformedJSON` naming the field.

The encoder is generated per class once at import (one straight-line function per struct), because
it runs three to five times for every object the node verifies.
"""

from __future__ import annotations

import codecs
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any, Final, TypeVar

from mim import entities
from mim.errors import MalformedJSON

__all__ = [
    "blank",
    "document",
    "dumps",
    "encode",
    "field_index",
    "fragments",
    "go_string",
    "loads",
    "objects",
]

T = TypeVar("T")

# --------------------------------------------------------------------------- strings

_NEEDS_ESCAPE: Final = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_ESCAPES: Final[dict[int, str]] = {
    **{c: f"\\u{c:04x}" for c in range(0x20)},
    0x08: "\\u0008",
    0x0C: "\\u000c",
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
    # A str can hold a lone surrogate only if it was built locally; Go would see invalid UTF-8.
    **{c: "\\ufffd" for c in range(0xD800, 0xE000)},
}


def go_string(value: str) -> str:
    """``value`` as Go's ``json.Marshal`` writes a string, quotes included."""
    if _NEEDS_ESCAPE.search(value) is None:
        return '"' + value + '"'
    return '"' + value.translate(_ESCAPES) + '"'


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    key: str  # JSON key
    go: str  # string | int64 | uint8 | uint16 | uint64 | bool | struct | slice
    elem: Any  # struct class, slice element class, or str for []string
    omitempty: bool


_INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint64": (0, 2**64 - 1),
}


def _schema(cls: type[Any]) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    plan: list[_Field] = []
    for f in fields(cls):
        meta = f.metadata
        hint = hints[f.name]
        go, elem = _go_type(hint)
        go = meta.get("go", go)
        plan.append(
            _Field(
                name=f.name,
                key=meta.get("json", f.name),
                go=go,
                elem=meta.get("elem", elem),
                omitempty=bool(meta.get("omitempty", False)),
            )
        )
    return tuple(plan)


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


_CLASSES: Final[tuple[type[Any], ...]] = tuple(
    getattr(entities, name)
    for name in entities.__all__
    if isinstance(getattr(entities, name), type) and is_dataclass(getattr(entities, name))
)
_SCHEMAS: Final[dict[type[Any], tuple[_Field, ...]]] = {cls: _schema(cls) for cls in _CLASSES}


# --------------------------------------------------------------------------- encoder


def _value_expr(f: _Field, ref: str, env: dict[str, Any]) -> str:
    """A Python expression that encodes ``ref`` (an expression holding the field's value)."""
    if f.go == "string":
        return f"_s({ref})"
    if f.go == "bool":
        return f"('true' if {ref} else 'false')"
    if f.go == "struct":
        env.setdefault(f"_enc_{f.elem.__name__}", None)  # filled when that class is generated
        return f"_enc_{f.elem.__name__}({ref})"
    if f.go == "slice":
        if f.elem is str:
            item = "_s(x)"
        else:
            env.setdefault(f"_enc_{f.elem.__name__}", None)
            item = f"_enc_{f.elem.__name__}(x)"
        return f"('null' if {ref} is None else '[' + ','.join([{item} for x in {ref}]) + ']')"
    return f"str({ref})"


def _generate(cls: type[Any], env: dict[str, Any]) -> None:
    schema = _SCHEMAS[cls]
    name = cls.__name__
    lines = [f"def _frag_{name}(o):"]
    if any(f.omitempty for f in schema):
        lines.append("    out = []")
        for f in schema:
            prefix = json.dumps(f.key) + ":"
            ref = f"o.{f.name}"
            stmt = f"out.append({prefix!r} + {_value_expr(f, ref, env)})"
            lines.append(f"    if {ref}:\n        {stmt}" if f.omitempty else f"    {stmt}")
        lines.append("    return out")
    else:
        parts = [
            f"{json.dumps(f.key) + ':'!r} + {_value_expr(f, 'o.' + f.name, env)}" for f in schema
        ]
        strings = [f for f in schema if f.go == "string"]
        if len(strings) > 2:
            # Most objects need no escaping at all: one scan over all their strings decides it,
            # instead of one per field.
            joined = " + ".join(f"o.{f.name}" for f in strings)
            plain = [
                f"{json.dumps(f.key) + ':' + chr(34)!r} + o.{f.name} + '\"'"
                if f.go == "string"
                else f"{json.dumps(f.key) + ':'!r} + {_value_expr(f, 'o.' + f.name, env)}"
                for f in schema
            ]
            lines.append(f"    if _needs_escape({joined}) is None:")
            lines.append("        return [" + ", ".join(plain) + "]")
        lines.append("    return [" + ", ".join(parts) + "]")
    lines.append(f"def _enc_{name}(o):")
    lines.append(f"    return '{{' + ','.join(_frag_{name}(o)) + '}}'")
    exec("\n".join(lines), env)  # noqa: S102 - code generated from our own schema only


_ENV: Final[dict[str, Any]] = {"_s": go_string, "_needs_escape": _NEEDS_ESCAPE.search}
for _cls in _CLASSES:
    _generate(_cls, _ENV)
_FRAGMENTS: Final[dict[type[Any], Callable[[Any], list[str]]]] = {
    cls: _ENV[f"_frag_{cls.__name__}"] for cls in _CLASSES
}
_ENCODERS: Final[dict[type[Any], Callable[[Any], str]]] = {
    cls: _ENV[f"_enc_{cls.__name__}"] for cls in _CLASSES
}


def dumps(obj: Any) -> str:
    """``obj`` as the reference's ``json.Marshal`` writes it."""
    return _ENCODERS[type(obj)](obj)


def encode(obj: Any) -> bytes:
    """``dumps(obj)`` as UTF-8 bytes: what goes on the wire and into every hash."""
    return _ENCODERS[type(obj)](obj).encode()


def fragments(obj: Any) -> list[str]:
    """The ``"key":value`` pieces of ``obj`` in order; ``'{' + ','.join(...) + '}'`` is ``dumps``.

    The hashing inputs of ``mim.fingerprint`` and ``mim.signing`` blank a few of these pieces and
    join the rest, so each field is escaped once however many inputs are built from it.
    """
    return _FRAGMENTS[type(obj)](obj)


def blank(cls: type[Any], name: str, *, nil: bool = False) -> str:
    """The ``"key":value`` piece of field ``name`` of ``cls`` holding its zero value.

    A slice blanks to ``[]`` (the reference's fingerprint blanking), or to ``null`` with ``nil``.
    """
    for f in _SCHEMAS[cls]:
        if f.name == name:
            if f.go == "slice":
                zero = "null" if nil else "[]"
            else:
                zero = {"string": '""', "bool": "false", "struct": "{}"}.get(f.go, "0")
            return json.dumps(f.key) + ":" + zero
    raise KeyError(name)


def field_index(cls: type[Any], name: str) -> int:
    """Position of field ``name`` in ``fragments`` of a ``cls`` without omitempty fields."""
    for i, f in enumerate(_SCHEMAS[cls]):
        if f.name == name:
            return i
    raise KeyError(name)


# --------------------------------------------------------------------------- decoder


def _go_utf8_errors(exc: UnicodeError) -> tuple[str, int]:
    # Go replaces every byte that does not start a valid sequence with one U+FFFD and moves on
    # by one byte; Python's "replace" would swallow a whole maximal subpart instead.
    assert isinstance(exc, UnicodeDecodeError)
    return "\ufffd", exc.start + 1


codecs.register_error("mim-go-utf8", _go_utf8_errors)

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs in order, duplicates kept."""

    __slots__ = ()


class _Float(str):
    """A number literal with a fraction or exponent: never valid for an integer field."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_Pairs,
    parse_float=_Float,
    parse_constant=_reject_constant,
)


def _fold(key: str) -> str:
    return key.lower().replace("ſ", "s")


@dataclass(frozen=True, slots=True)
class _LoadPlan:
    cls: type[Any]
    exact: dict[str, _Field]
    folded: dict[str, _Field]
    defaults: dict[str, Any]


def _load_plan(cls: type[Any]) -> _LoadPlan:
    schema = _SCHEMAS[cls]
    defaults: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
    return _LoadPlan(
        cls=cls,
        exact={f.key: f for f in schema},
        folded={_fold(f.key): f for f in schema},
        defaults=defaults,
    )


_PLANS: Final[dict[type[Any], _LoadPlan]] = {cls: _load_plan(cls) for cls in _CLASSES}


def _type_error(path: str, value: Any, want: str) -> MalformedJSON:
    if isinstance(value, _Float):
        got = f"number {value}"
    elif isinstance(value, bool):
        got = "bool"
    elif isinstance(value, int):
        got = f"number {value}"
    elif isinstance(value, str):
        got = "string"
    elif isinstance(value, _Pairs):
        got = "object"
    elif isinstance(value, list):
        got = "array"
    else:
        got = type(value).__name__
    return MalformedJSON(path, "json.type", f"{got} where {want} is expected")


class _Loader:
    __slots__ = ("fix_surrogates",)

    def __init__(self, fix_surrogates: bool) -> None:
        self.fix_surrogates = fix_surrogates

    def struct(self, cls: type[Any], pairs: Any, path: str, base: Any = None) -> Any:
        if not isinstance(pairs, _Pairs):
            raise _type_error(path, pairs, f"an object ({cls.__name__})")
        plan = _PLANS[cls]
        if base is None:
            values = dict(plan.defaults)
        else:  # Go decodes a repeated struct key into the struct it already holds
            values = {f.name: getattr(base, f.name) for f in _SCHEMAS[cls]}
        exact = plan.exact
        for key, raw in pairs:
            f = exact.get(key) or plan.folded.get(_fold(key))
            if f is None:
                continue
            if raw is None:
                if f.go == "slice":
                    values[f.name] = None
                continue  # null leaves anything else as it was
            values[f.name] = self.value(f, raw, f"{path}.{f.key}", values[f.name])
        return cls(**values)

    def value(self, f: _Field, raw: Any, path: str, current: Any) -> Any:
        go = f.go
        if go == "string":
            return self.string(raw, path)
        if go in _INT_RANGES:
            return _integer(raw, path, go)
        if go == "bool":
            if raw is True or raw is False:
                return raw
            raise _type_error(path, raw, "a bool")
        if go == "struct":
            return self.struct(f.elem, raw, path, current)
        if not isinstance(raw, list) or isinstance(raw, _Pairs):
            raise _type_error(path, raw, "an array")
        if f.elem is str:
            return tuple(
                "" if x is None else self.string(x, f"{path}[{i}]") for i, x in enumerate(raw)
            )
        return tuple(
            f.elem() if x is None else self.struct(f.elem, x, f"{path}[{i}]")
            for i, x in enumerate(raw)
        )

    def string(self, raw: Any, path: str) -> str:
        if type(raw) is not str:
            raise _type_error(path, raw, "a string")
        if self.fix_surrogates:
            return _SURROGATE.sub("\ufffd", raw)
        return raw


def _integer(raw: Any, path: str, go: str) -> int:
    if type(raw) is not int:
        raise _type_error(path, raw, f"an integer ({go})")
    low, high = _INT_RANGES[go]
    if not low <= raw <= high:
        raise MalformedJSON(path, "json.range", f"{raw} overflows {go}")
    return raw


def _text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "mim-go-utf8")


def _generate_fast_loader(cls: type[Any]) -> Callable[[dict[str, Any]], Any] | None:
    """A straight-line decoder for the common case: a flat object whose keys are all exact field
    names, each at most once, holding values of the right type. Anything else (a null, a wrong
    type, an out-of-range integer, a nested struct) returns ``None`` and takes the general path,
    which gives the same result or the precise error."""
    schema = _SCHEMAS[cls]
    if any(f.go in ("struct", "slice", "bool") for f in schema):
        return None
    plan = _PLANS[cls]
    lines = ["def fast(d):", "    g = d.get"]
    args = []
    for i, f in enumerate(schema):
        default = plan.defaults[f.name]
        lines.append(f"    v{i} = g({f.key!r}, {default!r})")
        if f.go == "string":
            lines.append(f"    if type(v{i}) is not str: return None")
        else:
            low, high = _INT_RANGES[f.go]
            lines.append(
                f"    if type(v{i}) is not int or not {low} <= v{i} <= {high}: return None"
            )
        args.append(f"{f.name}=v{i}")
    lines.append(f"    return cls({', '.join(args)})")
    env: dict[str, Any] = {"cls": cls}
    exec("\n".join(lines), env)  # noqa: S102 - code generated from our own schema only
    fast: Callable[[dict[str, Any]], Any] = env["fast"]
    return fast


_FAST: Final[dict[type[Any], tuple[frozenset[str], Callable[[dict[str, Any]], Any]]]] = {
    cls: (frozenset(f.key for f in _SCHEMAS[cls]), loader)
    for cls in _CLASSES
    if (loader := _generate_fast_loader(cls)) is not None
}


def _fast_load(cls: type[Any], value: Any) -> Any:
    fast = _FAST.get(cls)
    if fast is None or not isinstance(value, _Pairs):
        return None
    keys, loader = fast
    d = dict(value)
    if len(d) != len(value) or not d.keys() <= keys:
        return None  # duplicates or unknown keys: Go's rules need the general path
    return loader(d)


def loads(cls: type[T], raw: bytes | str | Any) -> T:
    """Decode wire JSON into ``cls`` as Go's ``json.Unmarshal`` would (see the module docstring).

    ``raw`` may also be already-parsed JSON (``dict``/``list`` from ``json.loads``), in which case
    duplicate keys are already gone and only the type rules apply.
    """
    name = cls.__name__.lower()
    if isinstance(raw, bytes | bytearray | memoryview | str):
        text = _text(bytes(raw) if not isinstance(raw, str) else raw)
        try:
            value = _DECODER.decode(text)
        except (ValueError, RecursionError) as exc:
            raise MalformedJSON(name, "json.syntax", _syntax_detail(exc)) from exc
        surrogates = "\\ud" in text or "\\uD" in text
        if not surrogates:
            fast: T | None = _fast_load(cls, value)
            if fast is not None:
                return fast
        loader = _Loader(surrogates)
    else:
        value = _as_pairs(raw)
        loader = _Loader(True)
    try:
        result: T = loader.struct(cls, value, name)
    except RecursionError as exc:
        raise MalformedJSON(name, "json.depth", "nested too deeply") from exc
    return result


def _syntax_detail(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at offset {exc.pos}"
    return str(exc) or type(exc).__name__


def document(raw: bytes | str) -> Any:
    """Decode a whole JSON document as Go sees it, without a target type.

    Objects inside stay in the decoder's own form (pairs in order, duplicates kept), so each
    element of an array can then go to :func:`loads` and decode exactly as if sent alone.
    """
    text = _text(raw if isinstance(raw, str) else bytes(raw))
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedJSON("document", "json.syntax", _syntax_detail(exc)) from exc


def objects(raw: bytes | str) -> list[Any]:
    """The objects of a document holding one JSON object or an array of them, in Go's view.

    Each item goes to :func:`loads` and decodes exactly as if it had been sent alone.
    """
    whole = document(raw)
    if isinstance(whole, list) and not isinstance(whole, _Pairs):
        return whole
    return [whole]


def _as_pairs(value: Any) -> Any:
    if isinstance(value, _Pairs):
        return value
    if isinstance(value, dict):
        return _Pairs((k, _as_pairs(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_as_pairs(v) for v in value]
    if isinstance(value, float):
        return _Float(repr(value))
    return value
