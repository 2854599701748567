"""The decoder's last corners, where Go's encoding/json decides (PROTOCOL.md §3.2), each shown on
the reference's own objects: what they decode to, and the verdict they then get."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest

from mim import canonical, entities, verify
from mim.errors import MalformedJSON
from tests.vectors import ids, reference, section

ENTITIES = section("entities")
BY_ID = {r["id"]: r for r in ENTITIES}
FRONTEND = verify.Policy.uniform(
    next(p for p in reference()["profiles"] if p["name"] == "frontend")[
        "minimum_pow_strength_all_entity_types"
    ]
)
#: 5,000 digits: over the 4,300 that Python's int() converts by default.
HUGE = "7" * 5000


def _with_unknown(record: dict[str, Any], value: str) -> str:
    """The record's object with an unknown key holding ``value`` in front of its own keys."""
    text: str = record["object_json"]
    return '{"unknown_field":' + value + "," + text[1:]


def _decodes_as_original(record: dict[str, Any], wire: str) -> None:
    """``wire`` decodes to the record's object, byte for byte, and gets the reference's verdict."""
    kind = record["entity_type"]
    assert canonical.dumps(entities.parse(kind, wire)) == record["object_json"]
    assert verify.verify(kind, wire, FRONTEND).ok == record["verify"]["frontend"]["ok"]


@pytest.mark.parametrize("record", ENTITIES, ids=ids(ENTITIES))
def test_huge_integer_under_an_unknown_key_is_skipped(record: dict[str, Any]) -> None:
    """An integer of 5,000 digits under an unknown key changes nothing: Go never converts it."""
    _decodes_as_original(record, _with_unknown(record, HUGE))
    _decodes_as_original(record, _with_unknown(record, "[-" + HUGE + ',{"a":' + HUGE + "}]"))


@pytest.mark.parametrize("record", ENTITIES[:6], ids=ids(ENTITIES[:6]))
def test_huge_integer_in_a_known_field_is_a_range_error(record: dict[str, Any]) -> None:
    """The same integer as `creation` is refused at decode, naming the field."""
    wire = re.sub(r'"creation":\d+', f'"creation":{HUGE}', record["object_json"], count=1)
    with pytest.raises(MalformedJSON) as caught:
        entities.parse(record["entity_type"], wire)
    assert (caught.value.field, caught.value.rule) == (
        f"{record['entity_type']}.creation",
        "json.range",
    )


NEW = [r for r in ENTITIES if not r["is_update"]]


@pytest.mark.parametrize("record", NEW, ids=ids(NEW))
def test_minus_zero_in_a_signed_field_is_zero(record: dict[str, Any]) -> None:
    """`-0` for the `last_update` of an object never updated is 0, as for any signed Go field:
    the object decodes to itself."""
    zero = '"last_update":0,'
    assert zero in record["object_json"]
    _decodes_as_original(record, record["object_json"].replace(zero, '"last_update":-0,'))


@pytest.mark.parametrize("board", ["board-03", "board-05"])
def test_minus_zero_in_an_unsigned_field_is_a_decode_error(board: str) -> None:
    """`-0` as a board owner's `level` (uint8) is refused at decode, as Go's ParseUint refuses
    any sign."""
    wire = re.sub(r'"level":\d+', '"level":-0', BY_ID[board]["object_json"], count=1)
    verdict = verify.verify("board", wire, FRONTEND)
    assert (verdict.stage, verdict.field, verdict.rule) == (
        "decode",
        "board.board_owners[0].level",
        "json.range",
    )


def _nested(levels: int) -> str:
    """``levels`` levels of arrays and objects in turn, the innermost one empty."""
    opening = "".join("[" if n % 2 == 0 else '{"a":' for n in range(levels - 1))
    closing = "".join("]" if n % 2 == 0 else "}" for n in reversed(range(levels - 1)))
    return opening + ("[]" if levels % 2 else "{}") + closing


def _at_stack_depth(spare: int, call: Callable[[], Any]) -> Any:
    """``call()`` made with only about ``spare`` frames left under the recursion limit."""

    def down(n: int) -> Any:
        return call() if n <= 0 else down(n - 1)

    depth = 0
    frame = sys._getframe()
    while frame.f_back is not None:
        frame, depth = frame.f_back, depth + 1
    return down(sys.getrecursionlimit() - depth - spare)


@pytest.mark.parametrize("record", ENTITIES[::4], ids=ids(ENTITIES[::4]))
def test_deep_nesting_under_an_unknown_key_is_skipped_to_goes_limit(record: dict[str, Any]) -> None:
    """Nesting under an unknown key up to Go's 10,000 levels in all (the object is one) decodes,
    however little stack the caller has left; one level more is a decode error, as in Go."""
    deepest = _with_unknown(record, _nested(9_999))
    _decodes_as_original(record, deepest)
    decoded = _at_stack_depth(40, lambda: entities.parse(record["entity_type"], deepest))
    assert canonical.dumps(decoded) == record["object_json"]
    with pytest.raises(MalformedJSON) as caught:
        entities.parse(record["entity_type"], _with_unknown(record, _nested(10_000)))
    assert caught.value.rule == "json.depth"


def _owners_repeated(board: str, *spellings: str) -> str:
    """The board's object with its `board_owners` key given once per spelling, in order."""
    text: str = BY_ID[board]["object_json"]
    owners = json.dumps(json.loads(text)["board_owners"], separators=(",", ":"))
    keys = ",".join(f'"board_owners":{s.replace("OWNERS", owners)}' for s in spellings)
    return text.replace(f'"board_owners":{owners}', keys, 1)


@pytest.mark.parametrize(
    "spellings",
    [
        ("OWNERS", "[null,{}]"),
        ("OWNERS", "[{}]", "[null,null]"),
        ("[]", "OWNERS", "[{},null]"),
        ('[{"level":9},{"level":9}]', "OWNERS"),
    ],
    ids=["null-and-empty-elements", "shorter-then-longer", "empty-first", "last-wins"],
)
def test_repeated_array_key_decodes_into_the_earlier_slice(spellings: tuple[str, ...]) -> None:
    """A repeated `board_owners` key is decoded into the slice the first one made: `null` and
    `{}` elements leave the earlier owners as they were, and a longer array after a shorter one
    finds them again in the backing array; the reference's board then still verifies."""
    _decodes_as_original(BY_ID["board-03"], _owners_repeated("board-03", *spellings))


def test_repeated_array_key_merges_elements_and_grows_like_append() -> None:
    """A later element is decoded into the earlier one (only the keys it has change); an array
    longer than the slice's capacity gets a new backing array with zero owners past its length."""
    first, second = json.loads(BY_ID["board-03"]["object_json"])["board_owners"]
    merged = entities.parse("board", _owners_repeated("board-03", "OWNERS", '[{"level":7}]'))
    assert isinstance(merged, entities.Board)
    assert merged.board_owners == (entities.BoardOwner(**{**first, "level": 7}),)
    assert second not in [dataclasses.asdict(o) for o in merged.board_owners]
    nulls = "[" + ",".join(["null"] * 5) + "]"
    grown = entities.parse("board", _owners_repeated("board-05", "OWNERS", nulls))
    assert isinstance(grown, entities.Board)
    (only,) = json.loads(BY_ID["board-05"]["object_json"])["board_owners"]
    assert grown.board_owners == (entities.BoardOwner(**only), *[entities.BoardOwner()] * 4)


@pytest.mark.parametrize("kind", ["board", "post", "truststate", "address"])
def test_top_level_null_is_the_zero_object_refused_at_bounds(kind: str) -> None:
    """The JSON text `null` decodes, as in Go, to the zero object, which bounds then refuse."""
    cls = entities.entity_class(kind)
    assert canonical.loads(cls, "null") == cls()
    verdict = verify.verify(kind, " null ", FRONTEND)
    assert verdict.stage == "bounds", verdict.reason
