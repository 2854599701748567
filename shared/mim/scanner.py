"""JSON text to the decoder's form, as Go's encoding/json scanner reads it (PROTOCOL.md §3.2).

The form: an object is :class:`Pairs` (its key/value pairs in order, duplicates kept), an array a
``list``, a string a ``str``, ``true``/``false``/``null`` Python's own, a number with a fraction or
an exponent a :class:`Float` (its text: never valid for an integer field), and an integer an
``int``, or a :class:`Number` (its text) where converting it would lose what Go sees: ``-0``,
which a signed Go field reads as 0 and an unsigned one refuses. Go converts only the numbers that
land in a known field, so a literal of any length under an unknown key is no error there, where
Python's ``int()`` refuses more than 4,300 digits: a literal longer than any Go integer (20
characters) may be read as an ``int`` or kept as a ``Number``, out of every field's range either
way, and is never converted past ``int()``'s limit.

Two readers give that form. Most text goes through the standard library's C parser. Text it cannot
take (nesting deeper than Python's stack, an integer past ``int()``'s limit) goes through
:func:`scan`, a loop with a stack of its own that allows Go's 10,000 levels of nesting and refuses
more, as Go's scanner does; it never recurses. Both refuse what Go's scanner refuses (syntax, NaN
and Infinity, control characters in strings) with :class:`MalformedJSON`.

Bytes become text as Go reads them: each byte that does not start a valid UTF-8 sequence is one
U+FFFD (:func:`text_of`).
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any, Final

from mim.errors import MalformedJSON

__all__ = ["MAX_DEPTH", "Float", "Number", "Pairs", "parse", "scan", "text_of"]

#: Go's ``encoding/json`` ``maxNestingDepth``: more nested objects and arrays are a syntax error.
MAX_DEPTH: Final = 10_000
#: The longest integer literal a Go integer can hold: ``-9223372036854775808`` and
#: ``18446744073709551615`` are 20 characters (JSON allows no leading zeros or ``+``).
_LONGEST_INTEGER: Final = 20


class Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs in order, duplicates kept."""

    __slots__ = ()


class Float(str):
    """A number literal with a fraction or exponent: never valid for an integer field."""

    __slots__ = ()


class Number(str):
    """An integer literal kept as text: ``-0``, or too long for any Go integer type."""

    __slots__ = ()


def _go_utf8_errors(exc: UnicodeError) -> tuple[str, int]:
    # Go replaces every byte that does not start a valid sequence with one U+FFFD and moves on
    # by one byte; Python's "replace" would swallow a whole maximal subpart instead.
    assert isinstance(exc, UnicodeDecodeError)
    return "\ufffd", exc.start + 1


codecs.register_error("mim-go-utf8", _go_utf8_errors)


def text_of(raw: bytes | bytearray | memoryview | str) -> str:
    """``raw`` as text the way Go reads JSON bytes: one U+FFFD per invalid UTF-8 byte."""
    if isinstance(raw, str):
        return raw
    data = bytes(raw)
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data.decode("utf-8", "mim-go-utf8")


def _integer(literal: str) -> int | Number:
    if len(literal) > _LONGEST_INTEGER or literal == "-0":
        return Number(literal)
    return int(literal)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_FAST: Final = json.JSONDecoder(
    object_pairs_hook=Pairs, parse_float=Float, parse_constant=_reject_constant
)
# Converts integers through _integer: only for text that may hold a -0 (a C call per integer
# saved everywhere else).
_CAREFUL: Final = json.JSONDecoder(
    object_pairs_hook=Pairs, parse_float=Float, parse_int=_integer, parse_constant=_reject_constant
)


def parse(text: str, name: str) -> Any:
    """The decoder's form of the JSON ``text``; ``name`` is what an error names as its field."""
    try:
        return (_CAREFUL if "-0" in text else _FAST).decode(text)
    except json.JSONDecodeError as exc:
        raise MalformedJSON(name, "json.syntax", f"{exc.msg} at offset {exc.pos}") from None
    except (ValueError, RecursionError):
        pass  # NaN or Infinity, an integer past int()'s limit, or nesting past Python's stack
    return scan(text, name)


# --------------------------------------------------------------------------- the iterative reader

_SPACE: Final = re.compile(r"[ \t\n\r]*")
_CLOSER: Final = {"{": "}", "[": "]"}
_MORE: Final = object()  # a container was opened, or a comma read: another value comes next

# An open object or array, and (in a one-item list) the key its next value goes under.
_Open = tuple[Pairs | list[Any], list[str]]


def _skip(text: str, pos: int) -> int:
    """Where the whitespace (space, tab, LF, CR) at ``pos`` ends."""
    space = _SPACE.match(text, pos)
    return space.end() if space else pos


def _syntax(name: str, what: str, pos: int) -> MalformedJSON:
    return MalformedJSON(name, "json.syntax", f"{what} at offset {pos}")


def _scalar(text: str, pos: int, name: str) -> tuple[Any, int]:
    """The string, number or word that starts at ``pos``, and where it ends.

    The C parser reads it (a scalar holds nothing nested, so this never recurses), with the
    careful integer conversion.
    """
    try:
        return _CAREFUL.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise _syntax(name, exc.msg, exc.pos) from None
    except ValueError as exc:  # NaN, Infinity
        raise _syntax(name, str(exc), pos) from None


def _key(text: str, pos: int, name: str) -> tuple[str, int]:
    """The object key at ``pos`` with its colon, and where its value starts."""
    if text[pos : pos + 1] != '"':
        raise _syntax(name, "Expecting property name enclosed in double quotes", pos)
    key, pos = _scalar(text, pos, name)
    pos = _skip(text, pos)
    if text[pos : pos + 1] != ":":
        raise _syntax(name, "Expecting ':' delimiter", pos)
    return key, _skip(text, pos + 1)


def _begin(text: str, pos: int, name: str, stack: list[_Open]) -> tuple[Any, int]:
    """The value that starts at ``pos``; an object or array that is not empty is pushed open
    instead (``_MORE``: its first value comes next)."""
    char = text[pos : pos + 1]
    if char not in _CLOSER:
        return _scalar(text, pos, name)
    if len(stack) >= MAX_DEPTH:
        raise MalformedJSON(name, "json.depth", f"over {MAX_DEPTH} levels of nesting")
    container: Pairs | list[Any] = Pairs() if char == "{" else []
    pos = _skip(text, pos + 1)
    if text[pos : pos + 1] == _CLOSER[char]:
        return container, pos + 1
    key = [""]
    if char == "{":
        key[0], pos = _key(text, pos, name)
    stack.append((container, key))
    return _MORE, pos


def _complete(text: str, pos: int, name: str, stack: list[_Open], value: Any) -> tuple[Any, int]:
    """Put a complete value into the innermost open container, and each container that completes
    into the next one out: ``_MORE`` where another value starts, or the document and its end."""
    while stack:
        container, key = stack[-1]
        is_object = type(container) is Pairs
        container.append((key[0], value) if is_object else value)
        pos = _skip(text, pos)
        char = text[pos : pos + 1]
        if char == ",":
            pos = _skip(text, pos + 1)
            if is_object:
                key[0], pos = _key(text, pos, name)
            return _MORE, pos
        if not char or char != ("}" if is_object else "]"):
            raise _syntax(name, "Expecting ',' delimiter", pos)
        stack.pop()
        value, pos = container, pos + 1
    return value, pos


def scan(text: str, name: str = "document") -> Any:
    """The decoder's form of ``text``, read with a stack of its own: nesting costs no recursion."""
    stack: list[_Open] = []
    pos = _skip(text, 0)
    while True:
        value, pos = _begin(text, pos, name, stack)
        if value is not _MORE:
            value, pos = _complete(text, pos, name, stack, value)
            if value is not _MORE:
                break
    pos = _skip(text, pos)
    if pos != len(text):
        raise _syntax(name, "Extra data", pos)
    return value
