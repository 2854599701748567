"""Objects with their kind: the ``{"kind": ..., "object": ...}`` wrapper, and files of objects.

:func:`unwrap` is the one parser of a submitted item, wherever items come in (``POST /api/submit``,
``mimrelay submit`` and ``mimrelay import``). An item is either a wrapper, whose ``kind`` names
the kind of its ``object``, or a bare object, whose kind follows from its fields
(:func:`mim.infer.infer_kind`) unless the caller forces one. The object's text comes back exactly
as written, so what is sent on is what its author made. :func:`wrap` writes the wrapper as
``mimrelay export`` does, one object per line.

:func:`split` cuts a file into items: a JSON array into its elements, one JSON document spread over
lines into itself, and anything else into lines, cut at LF only: U+0085, U+2028, U+2029 and a
lone CR are ordinary characters inside an object (CR is also JSON white space around one).

A broken item raises :class:`mim.errors.MalformedJSON` naming the field (``kind`` or ``object``)
and the rule, as an object that does not decode does.
"""

from __future__ import annotations

import json
from typing import Final, NamedTuple

from mim import kinds
from mim.errors import MalformedJSON
from mim.infer import infer_kind
from mim.kinds import Kind

__all__ = ["WHITESPACE", "Item", "split", "unwrap", "wrap"]

#: JSON white space (RFC 8259 §2); nothing else separates or surrounds items.
WHITESPACE: Final = " \t\n\r"
_WRAPPER: Final = frozenset({"kind", "object"})


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant)


class Item(NamedTuple):
    """One object to submit: its kind and its JSON text as written."""

    kind: Kind
    body: str


def wrap(kind: str, body: str) -> str:
    """``body`` (one object's JSON) wrapped with its kind, on one line without a newline."""
    return f'{{"kind":"{kind}","object":{body}}}'


def unwrap(text: str, kind: str | None = None) -> Item:
    """The item ``text`` holds: a wrapper, or a bare object of ``kind`` or of the kind its
    fields name. ``kind`` applies to bare objects only; a wrapper names its own."""
    try:
        members = _members(text)
    except RecursionError:
        raise MalformedJSON("object", "json.depth", "nested too deeply") from None
    except ValueError as exc:
        raise MalformedJSON("object", "json.syntax", _syntax(exc)) from None
    spans = {key: (start, end) for key, start, end in members}
    if set(spans) == _WRAPPER:
        start, end = spans["kind"]
        named = _kind(json.loads(text[start:end]))
        start, end = spans["object"]
        if not text.startswith("{", start):
            raise MalformedJSON("object", "json.type", "the wrapped `object` is not a JSON object")
        return Item(named, text[start:end])
    chosen = _kind(kind) if kind is not None else infer_kind(spans)
    return Item(chosen, text.strip(WHITESPACE))


def _syntax(exc: ValueError) -> str:
    if not isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc})"
    at = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
    return f"not JSON ({exc.msg} at {at})"


def _kind(value: object) -> Kind:
    for kind in kinds.KINDS:
        if isinstance(value, str) and value.lower() == kind:
            return kind
    raise MalformedJSON("kind", "kind.known", f"{value!r} is not one of {', '.join(kinds.KINDS)}")


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in WHITESPACE:
        pos += 1
    return pos


def _members(text: str) -> list[tuple[str, int, int]]:
    """``(key, start, end)`` of each member of the one JSON object ``text`` holds, in order."""
    pos = _skip(text, 0)
    if not text.startswith("{", pos):
        if pos == len(text):
            raise json.JSONDecodeError("Expecting value", text, pos)
        _, end = _DECODER.raw_decode(text, pos)
        raise MalformedJSON("object", "json.type", f"{text[pos:end][:20]!r} is not a JSON object")
    found: list[tuple[str, int, int]] = []
    pos = _skip(text, pos + 1)
    closed = text.startswith("}", pos)
    while not closed:
        if not text.startswith('"', pos):
            raise json.JSONDecodeError("Expecting a key", text, pos)
        key, pos = _DECODER.raw_decode(text, pos)  # a string: it starts with a quote
        pos = _skip(text, pos)
        if not text.startswith(":", pos):
            raise json.JSONDecodeError("Expecting ':'", text, pos)
        start = _skip(text, pos + 1)
        _, end = _DECODER.raw_decode(text, start)
        found.append((key, start, end))
        pos = _skip(text, end)
        closed = text.startswith("}", pos)
        if not closed and not text.startswith(",", pos):
            raise json.JSONDecodeError("Expecting ',' or '}'", text, pos)
        pos = _skip(text, pos + 1) if not closed else pos
    if _skip(text, pos + 1) != len(text):
        raise json.JSONDecodeError("Extra data after the object", text, pos + 1)
    return found


def split(raw: bytes) -> list[tuple[str, str]]:
    """``(where, text)`` of each item of a file: array elements, one document, or LF lines.

    Bytes that are not UTF-8 are kept (as lone surrogates), so encoding the text back with
    ``surrogateescape`` gives the bytes that were read.
    """
    text = raw.decode("utf-8", "surrogateescape")
    whole = text.strip(WHITESPACE)
    if not whole:
        return []
    if whole.startswith("["):
        try:
            return [(f"element {n}", e) for n, e in enumerate(_elements(whole), 1)]
        except RecursionError:
            raise MalformedJSON("object", "json.depth", "nested too deeply") from None
        except ValueError as exc:
            raise MalformedJSON("object", "json.syntax", f"the array is {_syntax(exc)}") from None
    if "\n" in whole and _one_document(whole):
        return [("the document", whole)]
    lines = enumerate(text.split("\n"), 1)
    return [(f"line {n}", line) for n, line in lines if line.strip(WHITESPACE)]


def _one_document(text: str) -> bool:
    try:
        _, end = _DECODER.raw_decode(text, 0)
    except (ValueError, RecursionError):
        return False
    return end == len(text)


def _elements(text: str) -> list[str]:
    """The text of each element of the JSON array ``text``, exactly as written."""
    out: list[str] = []
    pos = _skip(text, 1)
    while not text.startswith("]", pos):
        start = pos
        _, pos = _DECODER.raw_decode(text, start)
        out.append(text[start:pos])
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
            if text.startswith("]", pos):
                raise json.JSONDecodeError("Expecting value", text, pos)
        elif not text.startswith("]", pos):
            raise json.JSONDecodeError("Expecting ',' or ']'", text, pos)
    if _skip(text, pos + 1) != len(text):
        raise json.JSONDecodeError("Extra data after the array", text, pos + 1)
    return out
