"""Mutations of the reference's objects, as Hypothesis strategies: the wire texts a decoder must
judge as Go's encoding/json judges them (PROTOCOL.md §3.2).

The bases are every object text of the vector file (created and updated objects, negative, edge
and wire cases), and addresses and pages made from them. A case is a base with one to three of
these changes, anywhere in it: key case (Kelvin sign and long s included), a key given twice
(arrays twice, longer and shorter, with ``null`` and ``{}`` elements), unknown keys holding huge
integers or nesting to Go's limit and past it, escapes, surrogates, invalid UTF-8, number
spellings, nulls, wrong types and array elements; then whitespace, and now and then truncation or
trailing text.
"""

from __future__ import annotations

import copy
import functools
import json
import random
from typing import Any, Final

from hypothesis import strategies as st

from mim import canonical, entities, pages
from mim.signing import SigningKey
from tests.vectors import section

# --------------------------------------------------------------------------- the bases


class Obj(list[list[Any]]):
    """A JSON object as its [key, value] pairs, in order."""


class Raw(bytes):
    """JSON text, written out as it is."""


def _vector_texts() -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for record in section("entities"):
        texts.setdefault(record["entity_type"], []).append(record["object_json"])
    for name in ("negative_cases", "edge_cases_accepted_or_surprising"):
        for record in section(name):
            texts.setdefault(record["entity_type"], []).append(record["object_json"])
    for record in section("wire_decode_cases"):
        texts.setdefault(record["entity_type"], []).append(record["wire_json"])
    return texts


def _made_texts(vectors: dict[str, list[str]]) -> dict[str, list[str]]:
    """Addresses and pages made by ``mim`` around the vector objects."""
    base = pages.prefill("ab" * 32, port=8080, node_type=pages.NODE_TYPE_LIVE, nonce="n", now=1)
    address = canonical.dumps(base.address)
    third_party = address.replace('"location":""', '"location":"192.0.2.7"', 1)
    made = [canonical.dumps(pages.node_page(base))]
    for kind in entities.PROVABLE_KINDS:
        objects = [entities.parse(kind, text) for text in vectors[kind][:4]]
        page_base = pages.sign_page(base, _NODE_KEY)
        cache = pages.cache_pages(kind, objects, page_base)
        made += [canonical.dumps(page) for page in cache.values()]
    return {"address": [address, third_party], "page": made}


_NODE_KEY: Final = SigningKey.generate(bytes(range(32)))


@functools.cache
def bases() -> dict[str, list[str]]:
    """The base texts of each kind (the seven object kinds and ``page``)."""
    vectors = _vector_texts()
    return {**vectors, **_made_texts(vectors)}


def _tree(text: str) -> Any:
    return json.loads(text, object_pairs_hook=lambda pairs: Obj([list(p) for p in pairs]))


# --------------------------------------------------------------------------- writing it out


def _write(node: Any, out: list[bytes], gap: bytes) -> None:
    """``node`` as JSON text; the base's depth bounds the recursion (deep junk is Raw)."""
    if isinstance(node, Raw):
        out.append(node)
    elif isinstance(node, Obj):
        out.append(b"{" + gap)
        for n, (key, value) in enumerate(node):
            out.append((b"," + gap if n else b"") + _leaf(key) + gap + b":" + gap)
            _write(value, out, gap)
        out.append(gap + b"}")
    elif isinstance(node, list):
        out.append(b"[" + gap)
        for n, value in enumerate(node):
            if n:
                out.append(b"," + gap)
            _write(value, out, gap)
        out.append(gap + b"]")
    else:
        out.append(_leaf(node))


def _leaf(value: Any) -> bytes:
    if isinstance(value, Raw):
        return bytes(value)
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- finding places


def _containers(root: Any) -> list[tuple[Obj | list[Any], int]]:
    """Every object and array of the base with its depth (the root is 1); never inside Raw."""
    found: list[tuple[Obj | list[Any], int]] = []
    todo: list[tuple[Any, int]] = [(root, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, Raw) or not isinstance(node, list):
            continue
        found.append((node, depth))
        children = [v for _, v in node] if isinstance(node, Obj) else node
        todo.extend((child, depth + 1) for child in children)
    return found


def _slot(draw: st.DrawFn, root: Any) -> tuple[Obj | list[Any], int] | None:
    """A place holding a value: a container and the index of a value in it."""
    full = [(c, d) for c, d in _containers(root) if c]
    if not full:
        return None
    container, _ = draw(st.sampled_from(full))
    return container, draw(st.integers(0, len(container) - 1))


def _get(container: Obj | list[Any], index: int) -> Any:
    return container[index][1] if isinstance(container, Obj) else container[index]


def _set(container: Obj | list[Any], index: int, value: Any) -> None:
    if isinstance(container, Obj):
        container[index][1] = value
    else:
        container[index] = value


# --------------------------------------------------------------------------- values


def _huge(draw: st.DrawFn) -> Raw:
    digits = draw(st.sampled_from([19, 20, 21, 300, 4300, 4301, 6000]))
    sign = draw(st.sampled_from(["", "-"]))
    return Raw((sign + "9" + "8" * (digits - 1)).encode())


def _nest(levels: int, inner: bytes = b"0") -> Raw:
    """``levels`` levels of arrays and objects in turn around ``inner``."""
    opening = b"".join(b"[" if n % 2 else b'{"a":' for n in range(levels))
    closing = b"".join(b"]" if n % 2 else b"}" for n in reversed(range(levels)))
    return Raw(opening + inner + closing)


NUMBERS: Final = [
    "0", "-0", "1", "-1", "1.0", "-0.0", "1e3", "1E+0", "01", "+1", "00", "1.", ".5", "0x10",
    "255", "256", "65535", "65536", "127", "-128", "9223372036854775807", "9223372036854775808",
    "-9223372036854775808", "-9223372036854775809", "18446744073709551615",
    "18446744073709551616", "1546300800", "NaN", "Infinity", "-Infinity", "1_000",
]  # fmt: skip
WRONG: Final = [
    b'"1"', b'""', b"true", b"false", b"[]", b"{}", b"[1]", b'{"a":1}', b'["x"]', b"[null]",
    b"[{}]", b"null", b"1.5", b'"\\u0000"', b"[[]]", b'{"level":1}',
]  # fmt: skip


def _array_variant(draw: st.DrawFn, items: list[Any]) -> list[Any]:
    """An array decoded into a slice held before: its elements, nulls, empty and partial ones."""
    pool: list[Any] = [None, Obj(), Obj([["level", 7]]), Obj([["LEVEL", 3]]), "x", Raw(b"-0")]
    pool += [copy.deepcopy(x) for x in items]
    return draw(st.lists(st.sampled_from(pool), max_size=7))


def _value_variant(draw: st.DrawFn, value: Any) -> Any:
    if isinstance(value, list) and not isinstance(value, Obj | Raw):
        return _array_variant(draw, value)
    return draw(
        st.sampled_from([copy.deepcopy(value), None, Raw(b"[]"), Raw(b"{}"), Raw(b'"other"')])
    )


def _key_variant(draw: st.DrawFn, key: Any) -> Any:
    if not isinstance(key, str) or not key:
        return key
    how = draw(st.sampled_from(["upper", "title", "swap", "kelvin", "long-s", "escape", "near"]))
    if how == "escape":
        return Raw(('"' + "".join(f"\\u{ord(c):04X}" for c in key) + '"').encode())
    if how == "near":
        return draw(st.sampled_from([key + "_", key[:-1], key + " ", "_" + key, key + "\u0130"]))
    return {
        "upper": key.upper(),
        "title": key.title(),
        "swap": key.swapcase(),
        "kelvin": key.replace("k", "\u212a").replace("K", "\u212a"),
        "long-s": key.replace("s", "\u017f").replace("S", "\u017f"),
    }[how]


def _escaped(text: str, rng: random.Random) -> Raw:
    """``text`` as a JSON string with \\u escapes, surrogates and stray ones sprinkled in."""
    out = ['"']
    for char in text:
        code = ord(char)
        roll = rng.random()
        if code > 0xFFFF and roll < 0.5:
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            out.append(f"\\u{high:04x}\\u{low:04X}")
        elif roll < 0.2 or char in '"\\' or code < 0x20:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else char)
        elif roll < 0.25:
            out.append(rng.choice(["\\ud800", "\\udfff", "\\udc00\\ud800", "\\ud83d", "\\/"]))
            out.append(char)
        else:
            out.append(char)
    out.append('"')
    return Raw("".join(out).encode("utf-8", "surrogatepass"))


def _with_bad_bytes(text: str, rng: random.Random) -> Raw:
    """``text`` as a JSON string with bytes inserted that are not UTF-8."""
    raw = json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(1, max(1, len(raw) - 1))
        junk = rng.choice(
            [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\x80", b"\xe2\x82"]
        )
        raw = raw[:at] + junk + raw[at:]
    return Raw(raw)


# --------------------------------------------------------------------------- the mutations


def _mutate_key(draw: st.DrawFn, root: Any) -> None:
    objects = [c for c, _ in _containers(root) if isinstance(c, Obj) and c]
    if objects:
        pair = draw(st.sampled_from(draw(st.sampled_from(objects))))
        pair[0] = _key_variant(draw, pair[0])


def _repeat_key(draw: st.DrawFn, root: Any) -> None:
    objects = [c for c, _ in _containers(root) if isinstance(c, Obj) and c]
    if not objects:
        return
    obj = draw(st.sampled_from(objects))
    key, value = draw(st.sampled_from(obj))
    if draw(st.booleans()):
        key = _key_variant(draw, key)
    obj.insert(draw(st.integers(0, len(obj))), [key, _value_variant(draw, value)])


def _add_unknown(draw: st.DrawFn, root: Any) -> None:
    objects = [(c, d) for c, d in _containers(root) if isinstance(c, Obj)]
    if not objects:
        return
    obj, depth = draw(st.sampled_from(objects))
    key = draw(st.sampled_from(["x", "unknown", "-", "verified", "Verified", "nodeid", "ß", ""]))
    limit = 10_000 - depth  # levels of nesting a value in this object may still hold
    junk = draw(st.sampled_from(["huge", "deep", "deeper", "too deep", "nested huge", "value"]))
    if junk == "huge":
        value: Any = _huge(draw)
    elif junk in ("deep", "deeper", "too deep"):
        levels = {"deep": draw(st.integers(1, 1200)), "deeper": limit, "too deep": limit + 1}
        value = _nest(levels[junk])
    elif junk == "nested huge":
        value = _nest(draw(st.integers(1, 30)), bytes(_huge(draw)))
    else:
        value = _value_variant(draw, draw(st.sampled_from([1, "s", True, [], Obj()])))
    obj.insert(draw(st.integers(0, len(obj))), [key, value])


def _respell(draw: st.DrawFn, root: Any) -> None:
    """A string with escapes or bad bytes, a number spelled otherwise, a null or a wrong type."""
    slot = _slot(draw, root)
    if slot is None:
        return
    container, index = slot
    value = _get(container, index)
    how = draw(st.sampled_from(["escape", "bytes", "number", "null", "wrong"]))
    rng = draw(st.randoms(use_true_random=False))
    if how == "escape" and isinstance(value, str):
        _set(container, index, _escaped(value, rng))
    elif how == "bytes" and isinstance(value, str):
        _set(container, index, _with_bad_bytes(value, rng))
    elif how == "null":
        _set(container, index, None)
    elif how == "wrong":
        _set(container, index, Raw(draw(st.sampled_from(WRONG))))
    else:
        _set(container, index, Raw(draw(st.sampled_from(NUMBERS)).encode()))


def _change_elements(draw: st.DrawFn, root: Any) -> None:
    arrays = [c for c, _ in _containers(root) if not isinstance(c, Obj)]
    if arrays:
        array = draw(st.sampled_from(arrays))
        array[:] = _array_variant(draw, array)


MUTATIONS: Final = (_mutate_key, _repeat_key, _add_unknown, _respell, _change_elements)


def _finish(draw: st.DrawFn, text: bytes) -> bytes:
    """Now and then, the text cut short, followed by more, or replaced by another top level."""
    how = draw(st.sampled_from(["as is"] * 12 + ["cut", "more", "null", "array", "bom"]))
    if how == "cut":
        return text[: draw(st.integers(0, len(text) - 1))]
    if how == "more":
        return text + draw(st.sampled_from([b" ", b"\n\t", b"{}", b"x", b",", b" null"]))
    if how == "null":
        return draw(st.sampled_from([b"null", b" null\n", b"nul", b"[null]"]))
    if how == "array":
        return b"[" + text + b"]"
    return b"\xef\xbb\xbf" + text if how == "bom" else text


@st.composite
def cases(draw: st.DrawFn, kind: str) -> bytes:
    """A base text of ``kind`` with one to three mutations, written out with some whitespace."""
    root = _tree(draw(st.sampled_from(bases()[kind])))
    for _ in range(draw(st.integers(1, 3))):
        draw(st.sampled_from(MUTATIONS))(draw, root)
    out: list[bytes] = []
    _write(root, out, draw(st.sampled_from([b"", b"", b" ", b"\n\t", b"\r\n  "])))
    return _finish(draw, b"".join(out))
