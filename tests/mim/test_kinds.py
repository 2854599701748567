"""The one list of kinds: its order, its plurals, and the names it answers to."""

from __future__ import annotations

import pytest

from mim import entities, kinds, pages


def test_kinds_are_in_the_reference_order_with_address_last() -> None:
    """KINDS is the order of the reference's self-description, then `address`; PLURALS and
    PROVABLE_KINDS follow it, and every kind has its entity class."""
    (c0,) = pages.PROTOCOL.subprotocols or ()
    assert c0.supported_entities == kinds.PROVABLE_KINDS
    assert kinds.KINDS[:-1] == kinds.PROVABLE_KINDS
    assert kinds.KINDS[-1] == "address"
    assert tuple(kinds.PLURALS) == kinds.KINDS
    assert all(entities.entity_class(kind).kind == kind for kind in kinds.KINDS)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("post", "post"), ("posts", "post"), ("addresses", "address"), ("Posts", None), ("x", None)],
)
def test_singular_names_the_kind_of_a_kind_or_endpoint_name(name: str, kind: str | None) -> None:
    """A kind name or its plural names the kind; anything else, other case included, names none."""
    assert kinds.singular(name) == kind
