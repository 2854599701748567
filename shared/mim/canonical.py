"""Canonical JSON: Go's ``encoding/json`` both ways, for the struct classes of ``mim.entities``.

Contract: ``dumps`` must equal the reference's bytes for every canonical-JSON vector in
``../shared/vectors/`` (every step input, every object), and ``loads`` must decode to the value Go's
``json.Unmarshal`` decodes to, so that re-encoding gives what the reference hashes. Any change here
is a protocol change.

Encoding (PROTOCOL.md §3.1) is this module: keys in field order, no whitespace, integers in plain
decimal, nil slices as ``null`` and empty ones as ``[]``, ``omitempty`` dropping "", 0, false and
nil or empty slices (never structs), and Go's string escaping with HTML escaping on (``<``, ``>``,
``&``, U+2028, U+2029 and control bytes as lower-case ``\\u00XX``; ``/`` and DEL raw; non-ASCII
raw). Decoding (§3.2) is ``mim.decoder``, whose ``loads``, ``document`` and ``objects`` are
offered here too.

The encoder of a class is generated once, on its first use (one straight-line function per
struct), because it runs three to five times for every object the node verifies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

from mim.decoder import document, loads, objects
from mim.schema import Field, fields_of

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


# --------------------------------------------------------------------------- encoder


def _value_expr(f: Field, ref: str) -> str:
    """A Python expression that encodes ``ref`` (an expression holding the field's value)."""
    if f.go == "string":
        return f"_s({ref})"
    if f.go == "bool":
        return f"('true' if {ref} else 'false')"
    if f.go == "struct":
        return f"_enc_{_name(f.elem)}({ref})"
    if f.go == "slice":
        item = "_s(x)" if f.elem is str else f"_enc_{_name(f.elem)}(x)"
        return f"('null' if {ref} is None else '[' + ','.join([{item} for x in {ref}]) + ']')"
    return f"str({ref})"


def _generate(cls: type[Any], env: dict[str, Any]) -> None:
    schema = fields_of(cls)
    name = _name(cls)
    lines = [f"def _frag_{name}(o):"]
    if any(f.omitempty for f in schema):
        lines.append("    out = []")
        for f in schema:
            prefix = json.dumps(f.key) + ":"
            ref = f"o.{f.name}"
            stmt = f"out.append({prefix!r} + {_value_expr(f, ref)})"
            lines.append(f"    if {ref}:\n        {stmt}" if f.omitempty else f"    {stmt}")
        lines.append("    return out")
    else:
        parts = [f"{json.dumps(f.key) + ':'!r} + {_value_expr(f, 'o.' + f.name)}" for f in schema]
        strings = [f for f in schema if f.go == "string"]
        if len(strings) > 2:
            # Most objects need no escaping at all: one scan over all their strings decides it,
            # instead of one per field.
            joined = " + ".join(f"o.{f.name}" for f in strings)
            plain = [
                f"{json.dumps(f.key) + ':' + chr(34)!r} + o.{f.name} + '\"'"
                if f.go == "string"
                else f"{json.dumps(f.key) + ':'!r} + {_value_expr(f, 'o.' + f.name)}"
                for f in schema
            ]
            lines.append(f"    if _needs_escape({joined}) is None:")
            lines.append("        return [" + ", ".join(plain) + "]")
        lines.append("    return [" + ", ".join(parts) + "]")
    lines.append(f"def _enc_{name}(o):")
    lines.append(f"    return '{{' + ','.join(_frag_{name}(o)) + '}}'")
    exec("\n".join(lines), env)  # noqa: S102 - code generated from our own schema only


_ENV: Final[dict[str, Any]] = {"_s": go_string, "_needs_escape": _NEEDS_ESCAPE.search}
_NAMES: Final[dict[type[Any], str]] = {}
_FRAGMENTS: Final[dict[type[Any], Callable[[Any], list[str]]]] = {}
_ENCODERS: Final[dict[type[Any], Callable[[Any], str]]] = {}


def _name(cls: type[Any]) -> str:
    """The name of ``cls``'s generated functions: unique, whatever classes share a ``__name__``."""
    return _NAMES.setdefault(cls, f"{cls.__name__}{len(_NAMES)}")


def _encoder(cls: type[Any]) -> Callable[[Any], str]:
    """The encoder of ``cls``, generated on first use with those of the classes it holds."""
    for f in fields_of(cls):
        if isinstance(f.elem, type) and f.elem is not str and f.elem not in _ENCODERS:
            _encoder(f.elem)  # recursion bounded by the nesting of the classes
    _generate(cls, _ENV)
    _FRAGMENTS[cls] = _ENV[f"_frag_{_name(cls)}"]
    encoder: Callable[[Any], str] = _ENCODERS.setdefault(cls, _ENV[f"_enc_{_name(cls)}"])
    return encoder


def dumps(obj: Any) -> str:
    """``obj`` as the reference's ``json.Marshal`` writes it."""
    return (_ENCODERS.get(type(obj)) or _encoder(type(obj)))(obj)


def encode(obj: Any) -> bytes:
    """``dumps(obj)`` as UTF-8 bytes: what goes on the wire and into every hash."""
    return (_ENCODERS.get(type(obj)) or _encoder(type(obj)))(obj).encode()


def fragments(obj: Any) -> list[str]:
    """The ``"key":value`` pieces of ``obj`` in order; ``'{' + ','.join(...) + '}'`` is ``dumps``.

    The hashing inputs of ``mim.fingerprint`` and ``mim.signing`` blank a few of these pieces and
    join the rest, so each field is escaped once however many inputs are built from it.
    """
    cls = type(obj)
    if cls not in _FRAGMENTS:
        _encoder(cls)
    return _FRAGMENTS[cls](obj)


def blank(cls: type[Any], name: str, *, nil: bool = False) -> str:
    """The ``"key":value`` piece of field ``name`` of ``cls`` holding its zero value.

    A slice blanks to ``[]`` (the reference's fingerprint blanking), or to ``null`` with ``nil``.
    """
    for f in fields_of(cls):
        if f.name == name:
            if f.go == "slice":
                zero = "null" if nil else "[]"
            else:
                zero = {"string": '""', "bool": "false", "struct": "{}"}.get(f.go, "0")
            return json.dumps(f.key) + ":" + zero
    raise KeyError(name)


def field_index(cls: type[Any], name: str) -> int:
    """Position of field ``name`` in ``fragments`` of a ``cls`` without omitempty fields."""
    for i, f in enumerate(fields_of(cls)):
        if f.name == name:
            return i
    raise KeyError(name)
