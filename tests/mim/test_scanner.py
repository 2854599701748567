"""The two JSON readers: the C parser and the iterative one give one form, and Go's limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mim import scanner
from mim.errors import MalformedJSON

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(st.tuples(st.text(max_size=4), children), max_size=4)
    ),
    max_leaves=16,
)


def _text(value: Any, indent: int | None) -> str:
    """JSON text of a value whose objects are lists of (key, value) pairs, duplicates kept."""
    if isinstance(value, list) and value and all(isinstance(x, tuple) for x in value):
        pairs = ",".join(json.dumps(k) + ":" + _text(v, indent) for k, v in value)
        return "{" + pairs + "}"
    if isinstance(value, list):
        return "[" + (" ," if indent else ",").join(_text(v, indent) for v in value) + "]"
    return json.dumps(value)


@given(json_values, st.sampled_from([None, 1]))
def test_the_iterative_reader_agrees_with_the_c_parser(value: Any, indent: int | None) -> None:
    """On any JSON text, the iterative reader gives the very form the C parser gives."""
    text = _text(value, indent)
    assert scanner.scan(text) == scanner.parse(text, "document")


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_nesting_is_read_to_goes_limit_and_no_further(opening: str) -> None:
    """10,000 levels of nesting are read, without recursion; 10,001 are refused as Go refuses
    them (encoding/json's maxNestingDepth)."""
    closing = "]" if opening == "[" else "}"
    deepest = opening * 9_999 + "[]" + closing * 9_999
    value = scanner.parse(deepest, "document")
    for _ in range(9_999):
        value = value[0] if opening == "[" else value[0][1]
    assert value == []
    with pytest.raises(MalformedJSON) as caught:
        scanner.parse(opening + deepest + closing, "document")
    assert caught.value.rule == "json.depth"


@pytest.mark.parametrize(
    ("literal", "form"),
    [
        ("0", 0),
        ("-0", scanner.Number("-0")),
        ("-9223372036854775808", -(2**63)),
        ("18446744073709551615", 2**64 - 1),
        ("123456789012345678901", None),
        ("-" + "9" * 5000, None),
        ("1.0", scanner.Float("1.0")),
        ("-0.0", scanner.Float("-0.0")),
        ("1e400", scanner.Float("1e400")),
    ],
)
def test_integers_are_converted_only_where_nothing_is_lost(literal: str, form: Any) -> None:
    """An integer that some Go field can hold becomes an int, `-0` stays text (a Number), and so
    do fractions and exponents (a Float), however the text is read; a longer integer is read as
    text or number but outside every Go integer's range (``None`` above)."""
    for text in (f"[{literal}]", f"[{literal}," + "[" * 2000 + "]" * 2000 + "]"):
        read = scanner.parse(text, "document")[0]
        if form is None:
            assert type(read) is scanner.Number or not -(2**63) <= read < 2**64
        else:
            assert (type(read), read) == (type(form), form)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "[",
        "[1,]",
        "{,}",
        '{"a" 1}',
        '{"a":1,}',
        "[1 2]",
        "01",
        "-",
        "1.",
        ".5",
        "+1",
        "NaN",
        "[-Infinity]",
        '"\x01"',
        '"\\x"',
        "tru",
        "[] []",
        '{"a":1}}',
        "\ufeff{}",
    ],
)
def test_what_go_refuses_both_readers_refuse(text: str) -> None:
    """Text that is not one JSON value is a MalformedJSON from either reader, never another
    error."""
    for read in (scanner.parse, scanner.scan):
        with pytest.raises(MalformedJSON):
            read(text, "document")
