"""Which kind a Mim object is, told from its JSON fields alone (PROTOCOL.md §2).

Objects on the wire do not name their kind: an endpoint or a page says it. A file of objects
(what ``mimrelay create`` prints) does not, yet every kind has fields no other kind has all of, so
the kind follows from the keys: it is the one kind whose fields include every key of the object.

Keys are compared as the reference's decoder compares them (case-insensitively, §19.2), and keys
no kind has are left out, as that decoder drops them. A complete object names its kind this way;
a partial one may fit several kinds (``{"body": ...}`` fits a thread and a post) or none (a
``parent`` beside a ``domain``), and then the kind must be named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Final

from mim.entities import entity_class
from mim.errors import MalformedJSON
from mim.kinds import KINDS, Kind

__all__ = ["FIELDS", "infer_kind"]


def _fold(key: str) -> str:
    # Go's case-insensitive match: every field name is ASCII, and of the other characters only
    # the long s and the Kelvin sign fold onto ASCII letters (lower() already maps the Kelvin sign)
    return key.lower().replace("ſ", "s")


def _keys(kind: Kind) -> frozenset[str]:
    return frozenset(
        _fold(f.metadata.get("json", f.name)) for f in dataclasses.fields(entity_class(kind))
    )


#: The JSON keys of each kind, folded.
FIELDS: Final[dict[Kind, frozenset[str]]] = {kind: _keys(kind) for kind in KINDS}
_ANY_KIND: Final = frozenset().union(*FIELDS.values())


def infer_kind(keys: Iterable[str]) -> Kind:
    """The one kind whose fields include every key in ``keys`` that some kind has.

    Raises :class:`MalformedJSON` on field ``kind``: rule ``kind.ambiguous`` when several kinds
    fit (naming them), ``kind.unknown`` when none does.
    """
    known = {_fold(key) for key in keys} & _ANY_KIND
    fitting = [kind for kind in KINDS if known <= FIELDS[kind]]
    if len(fitting) == 1:
        return fitting[0]
    if fitting:
        shown = ", ".join(fitting[:-1]) + f" or {fitting[-1]}"
        detail = f"its fields fit a {shown}; name the kind"
        if not known:
            detail = "it has no field of a Mim object; name the kind"
        raise MalformedJSON("kind", "kind.ambiguous", detail)
    raise MalformedJSON(
        "kind", "kind.unknown", f"no kind has all of the fields {', '.join(sorted(known))}"
    )
