"""The numbers an address uses to say what a node is and how to reach it (PROTOCOL.md §10.3).

An address's ``type`` is a :class:`NodeType` and its ``location_type`` a :class:`LocationType`.
Live nodes answer POST requests and are synced with again after minutes; static nodes are plain
file servers (no POST) and rest for hours (§13.2). Both are ``IntEnum``, so a member is the number
on the wire and compares equal to it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = ["LIVE_NODE_TYPES", "STATIC_NODE_TYPES", "LocationType", "NodeType"]


class NodeType(IntEnum):
    """``address.type``: what kind of node an address belongs to (§10.3)."""

    UNKNOWN = 0  # a third-party address, its type stripped when served (§11.6)
    LIVE = 2  # a live node, the default
    LIVE_BOOTSTRAP = 3
    LIVE_CA = 4  # answers no POST (the node-type gate)
    STATIC_CA = 253
    STATIC_BOOTSTRAP = 254
    STATIC = 255


#: Node types that serve POST requests and rest minutes after a sync (§13.2).
LIVE_NODE_TYPES: Final = frozenset({NodeType.LIVE, NodeType.LIVE_BOOTSTRAP, NodeType.LIVE_CA})
#: Node types that are file servers only and rest hours after a sync (§13.2, §13.4 step 2).
STATIC_NODE_TYPES: Final = frozenset(
    {NodeType.STATIC_CA, NodeType.STATIC_BOOTSTRAP, NodeType.STATIC}
)


class LocationType(IntEnum):
    """``address.location_type``: what ``address.location`` holds (§2.8, §13.4 step 2)."""

    URL = 3  # a host name
    IPV4 = 4
    IPV6 = 6
