"""The kind of an object told from its fields: every reference object, partial objects, and keys
spelled as the reference's decoder reads them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mim import canonical, entities
from mim.errors import MalformedJSON
from mim.infer import FIELDS, infer_kind
from tests.vectors import ids, section

OBJECTS = (
    section("entities") + section("negative_cases") + section("edge_cases_accepted_or_surprising")
)


@pytest.mark.parametrize("record", OBJECTS, ids=ids(OBJECTS))
def test_every_reference_object_names_its_kind(record: dict[str, Any]) -> None:
    """Each object the reference made or refused, read from its JSON text, is of the kind the
    vector records."""
    assert infer_kind(json.loads(record["object_json"])) == record["entity_type"]


def test_an_address_is_told_from_its_fields() -> None:
    """A full address and one with only its primary key are addresses."""
    full = json.loads(canonical.dumps(entities.Address(location="127.0.0.1", port=8090)))
    assert infer_kind(full) == "address"
    assert infer_kind(["location", "port"]) == "address"


def test_keys_fold_as_the_reference_decodes_and_unknown_keys_are_dropped() -> None:
    """Upper-case keys, the long s and keys of no kind leave the answer unchanged."""
    assert infer_kind(["FINGERPRINT", "Parent", "BODY", "colour"]) == "post"
    assert infer_kind(["ſignature", "link"]) == "thread"


def test_partial_objects_that_fit_several_kinds_or_none_are_refused() -> None:
    """A field set that fits a thread and a post, one of no kind, and one that no kind has all of
    are refused on field `kind`, naming the kinds that fit or the fields."""
    with pytest.raises(MalformedJSON) as several:
        infer_kind(["fingerprint", "body"])
    assert several.value.field == "kind"
    assert several.value.rule == "kind.ambiguous"
    assert "thread or post" in several.value.reason
    with pytest.raises(MalformedJSON) as nothing:
        infer_kind(["colour"])
    assert nothing.value.rule == "kind.ambiguous"
    with pytest.raises(MalformedJSON) as none:
        infer_kind(["parent", "domain"])
    assert none.value.rule == "kind.unknown"
    assert "domain, parent" in none.value.reason


def test_every_kind_has_a_field_set_no_other_kind_contains() -> None:
    """No kind's fields lie within another's, so every complete object names its kind."""
    for kind, fields in FIELDS.items():
        assert [other for other in FIELDS if other != kind and fields <= FIELDS[other]] == []
        assert infer_kind(fields) == kind
