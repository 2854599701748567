"""Node and location types: the numbers of §10.3, written on the wire as numbers."""

from __future__ import annotations

from mim import canonical, entities
from mim.nodes import LIVE_NODE_TYPES, STATIC_NODE_TYPES, LocationType, NodeType


def test_node_types_are_the_numbers_of_the_protocol() -> None:
    """Each node type is its §10.3 number; live and static types split the known ones."""
    assert [int(t) for t in NodeType] == [0, 2, 3, 4, 253, 254, 255]
    assert [int(t) for t in LocationType] == [3, 4, 6]
    known = set(NodeType) - {NodeType.UNKNOWN}
    assert known == LIVE_NODE_TYPES | STATIC_NODE_TYPES
    assert not LIVE_NODE_TYPES & STATIC_NODE_TYPES


def test_an_address_with_enum_members_encodes_as_plain_numbers() -> None:
    """An address built with the enum members encodes, and decodes back, as plain numbers."""
    address = entities.Address(
        location="::1", location_type=LocationType.IPV6, port=1, type=NodeType.STATIC_BOOTSTRAP
    )
    text = canonical.dumps(address)
    assert '"location_type":6,"port":1,"type":254,' in text
    assert canonical.loads(entities.Address, text) == address
