"""The kinds of object the network carries, and their endpoint names (PROTOCOL.md §2, §11.3).

:data:`KINDS` is the one ordered list of them: the reference's own order, in which §2 defines the
entities and the dev.14 self-description lists its ``supported_entities`` (§2.8), with the one kind
that is not provable, ``address``, last. Everything that iterates over kinds takes this order.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

__all__ = ["KINDS", "PLURALS", "PROVABLE_KINDS", "Kind", "singular"]

Kind: TypeAlias = Literal["board", "thread", "post", "vote", "key", "truststate", "address"]

#: Every object kind, in the reference's order (§2).
KINDS: Final[tuple[Kind, ...]] = (
    "board",
    "thread",
    "post",
    "vote",
    "key",
    "truststate",
    "address",
)
#: The kinds that carry a fingerprint, a signature and a proof of work: all but ``address``.
PROVABLE_KINDS: Final[tuple[Kind, ...]] = KINDS[:-1]
#: Endpoint names (§11.3, §11.6): the plural of each kind, in the order of :data:`KINDS`.
PLURALS: Final[dict[Kind, str]] = {
    "board": "boards",
    "thread": "threads",
    "post": "posts",
    "vote": "votes",
    "key": "keys",
    "truststate": "truststates",
    "address": "addresses",
}
_BY_NAME: Final[dict[str, Kind]] = {
    **{kind: kind for kind in KINDS},
    **{plural: kind for kind, plural in PLURALS.items()},
}


def singular(name: str) -> Kind | None:
    """The kind a kind name or an endpoint's plural names (``posts`` → ``post``), else ``None``."""
    return _BY_NAME.get(name)
