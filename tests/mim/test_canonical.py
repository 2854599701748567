"""Canonical JSON: Go's string escaping, Go's decoding rules, and round trips."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mim import canonical, entities
from mim.errors import MalformedJSON, MimError
from tests.vectors import ids, section

GO_STRINGS = section("go_json_string_vectors")


@pytest.mark.parametrize("record", GO_STRINGS, ids=ids(GO_STRINGS))
def test_go_string_escaping(record: dict[str, Any]) -> None:
    """A string encodes exactly as Go's json.Marshal wrote it; bytes that are not UTF-8 (held as
    surrogate escapes) come out as one \\ufffd escape each, as Go writes them."""
    text = bytes.fromhex(record["text_utf8_hex"]).decode("utf-8", "surrogateescape")
    assert canonical.go_string(text) == record["go_json"]


def test_html_and_separators_escaped_slash_and_del_raw() -> None:
    """The PROTOCOL.md §3.1 example: HTML characters, U+2028/9 and controls escaped lower-case;
    slash and DEL written raw."""
    value = '<a>&b\u2028\u2029"\\/\x01\x1f\t\n\r\x7fé😀'
    assert canonical.go_string(value) == (
        '"\\u003ca\\u003e\\u0026b\\u2028\\u2029\\"\\\\/\\u0001\\u001f\\t\\n\\r\x7fé😀"'
    )


def test_invalid_utf8_bytes_decode_to_one_replacement_each() -> None:
    """Raw bytes that are not UTF-8 decode to one U+FFFD per bad byte, as Go decodes them."""
    raw = b'{"body":"a\xe2\x82b\xffc","entity_version":1}'
    post = canonical.loads(entities.Post, raw)
    assert post.body == "a\ufffd\ufffdb\ufffdc"


def test_lone_surrogate_escape_becomes_replacement() -> None:
    """An escaped lone surrogate decodes to U+FFFD; a valid pair to the astral character."""
    post = canonical.loads(entities.Post, '{"body":"\\ud800x\\ud83d\\ude00"}')
    assert post.body == "\ufffdx😀"


def test_keys_match_case_insensitively_with_go_folding() -> None:
    """Keys match regardless of case, and the Kelvin sign and long s fold to k and s."""
    key = canonical.loads(entities.Key, '{"KEY":"a","ſignature":"b","Name":"n"}')
    assert (key.key, key.signature, key.name) == ("a", "b", "n")
    kelvin = canonical.loads(entities.Key, '{"\u212aey":"k"}')
    assert kelvin.key == "k"


def test_last_duplicate_wins_across_spellings() -> None:
    """Of several keys naming one field, whatever their case, the last one wins."""
    post = canonical.loads(entities.Post, '{"body":"x","Body":"a","body":"b","BODY":"c"}')
    assert post.body == "c"


def test_null_leaves_scalars_and_nils_slices() -> None:
    """null leaves a string as it was, and makes a slice nil (encoded null, not [])."""
    board = canonical.loads(
        entities.Board, '{"name":"x","name":null,"board_owners":[],"board_owners":null}'
    )
    assert board.name == "x"
    assert board.board_owners is None
    assert '"board_owners":null' in canonical.dumps(board)
    empty = canonical.loads(entities.Board, '{"board_owners":[]}')
    assert '"board_owners":[]' in canonical.dumps(empty)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"creation":"1"}', "post.creation"),
        ('{"creation":1.0}', "post.creation"),
        ('{"creation":1e3}', "post.creation"),
        ('{"creation":9223372036854775808}', "post.creation"),
        ('{"body":5}', "post.body"),
        ('{"body":true}', "post.body"),
        ('{"body":["x"]}', "post.body"),
    ],
)
def test_wrong_type_names_the_field(raw: str, field: str) -> None:
    """A value of the wrong JSON type or out of its Go type's range is refused naming the field."""
    with pytest.raises(MalformedJSON) as caught:
        entities.parse("post", raw)
    assert caught.value.field == field
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"port":65536}', "address.port"),
        ('{"port":-1}', "address.port"),
        ('{"type":256}', "address.type"),
        ('{"protocol":{"version_minor":70000}}', "address.protocol.version_minor"),
        ('{"protocol":[]}', "address.protocol"),
    ],
)
def test_unsigned_overflow_is_a_decode_error(raw: str, field: str) -> None:
    """uint8/uint16 fields refuse negative and too-large values, as Go's decoder does."""
    with pytest.raises(MalformedJSON) as caught:
        entities.parse("address", raw)
    assert caught.value.field == field


@pytest.mark.parametrize("raw", ["", "[]", "nul", '{"a":1', "NaN", '{"creation":NaN}', "{} {}"])
def test_not_an_object_is_refused(raw: str) -> None:
    """Text that is not one JSON object is a decode error, never a crash."""
    with pytest.raises(MalformedJSON):
        entities.parse("thread", raw)


def test_repeated_struct_key_merges_like_go() -> None:
    """Go decodes a repeated object key into the struct it already holds."""
    address = canonical.loads(
        entities.Address,
        '{"client":{"name":"Aether","version_major":2},"client":{"version_minor":3}}',
    )
    assert (address.client.name, address.client.version_major, address.client.version_minor) == (
        "Aether",
        2,
        3,
    )


def test_page_envelope_omitempty() -> None:
    """The envelope drops empty omitempty fields but always writes proof_of_work and structs."""
    page = entities.ApiResponse(entity="node", endpoint="node", timestamp=5)
    text = canonical.dumps(page)
    assert text.startswith('{"proof_of_work":"","address":{')
    assert '"entity":"node","endpoint":"node","timestamp":5,"pagination"' in text
    assert text.endswith(
        '"caching":{"pregenerated":false,"current_cache_url":"","entity_counts":null},"response":{}}'
    )
    assert canonical.loads(entities.ApiResponse, text) == page


# --------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["body", "Body", "creation", "board_owners", "x"]) | st.text(),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_mim_errors(raw: bytes) -> None:
    """Any bytes either decode or raise MimError, never anything else."""
    for kind in entities.KINDS:
        with contextlib.suppress(MimError):
            entities.parse(kind, raw)


@given(json_values)
def test_arbitrary_json_raises_only_mim_errors(value: Any) -> None:
    """Any JSON document either decodes or raises MimError, never anything else."""
    text = json.dumps(value)
    for kind in entities.KINDS:
        with contextlib.suppress(MimError):
            entities.parse(kind, text)


fields_strategy = st.fixed_dictionaries(
    {},
    optional={
        "body": st.text(),
        "meta": st.text(),
        "creation": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "board": st.text(max_size=70),
        "entity_version": st.integers(min_value=0, max_value=3),
        "UPDATE_SIGNATURE": st.text(max_size=10),
    },
)


@given(fields_strategy, st.sampled_from(["post", "thread"]))
def test_encode_decode_is_stable(values: dict[str, Any], kind: str) -> None:
    """decode(encode(x)) == x, and encode(decode(encode(x))) == encode(x)."""
    obj = entities.parse(kind, json.dumps(values))
    text = canonical.dumps(obj)
    again = entities.parse(kind, text)
    assert again == obj
    assert canonical.dumps(again) == text


@given(st.permutations(["fingerprint", "creation", "body", "owner", "entity_version", "meta"]))
def test_key_order_of_input_does_not_matter(order: list[str]) -> None:
    """The canonical bytes, and so every hash, do not depend on the input's key order."""
    values = {
        "fingerprint": "f",
        "creation": 7,
        "body": "b<",
        "owner": "o",
        "entity_version": 1,
        "meta": "{}",
    }
    shuffled = json.dumps({k: values[k] for k in order})
    assert canonical.dumps(entities.parse("post", shuffled)) == canonical.dumps(
        entities.parse("post", json.dumps(values))
    )
