"""What each operation hashes or signs: the blanking matrix of PROTOCOL.md §4.1.

Every proof over a provable entity is made over the canonical JSON of a copy of it with some fields
set to their zero value:

==================  ===========  ======  =========  =======  ===========  ===========
operation           fingerprint  PoW     signature  mutable  last_update  update pair
==================  ===========  ======  =========  =======  ===========  ===========
signature           ""           ""      ""         kept     0            "" / ""
proof of work       ""           ""      kept       kept     0            "" / ""
fingerprint         ""           kept    kept       zeroed   0            "" / ""
update signature    kept         kept    kept       kept     kept         "" / ""
update PoW          kept         kept    kept       kept     kept         "" / kept
==================  ===========  ======  =========  =======  ===========  ===========

("update pair" is ``update_proof_of_work`` / ``update_signature``.) The fingerprint zeroes the
mutable fields, and zeroes a board's ``board_owners`` to ``[]``, never ``null``. Everywhere else a
board's owners enter as held, which is where the reference's ``null``/``[]`` ambiguity (§4.5) comes
from; ``owners`` lets a verifier choose either spelling for an ownerless board.

Contract: every ``steps[].input`` of the vector file is reproduced byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from mim import canonical
from mim.entities import Board, Key, Post, Provable, Thread, Truststate, Vote

__all__ = ["Inputs", "Owners"]

Owners = Literal["held", "empty", "nil"]
"""How a board's owners enter a signature or PoW input: as held, as ``[]``, as ``null``."""


@dataclass(frozen=True, slots=True)
class _Plan:
    fingerprint: int
    proof_of_work: int
    signature: int
    last_update: int
    update_proof_of_work: int
    update_signature: int
    blanks: dict[str, str]  # field -> zero piece, for the six always-blanked fields
    mutable: tuple[tuple[int, str], ...]  # (index, zero piece) for the fingerprint
    owners: int  # index of board_owners, -1 for other kinds
    owners_empty: str
    owners_nil: str


def _plan(cls: type[Provable]) -> _Plan:
    idx = {name: canonical.field_index(cls, name) for name in _PROOF_FIELDS}
    is_board = cls is Board
    return _Plan(
        **idx,
        blanks={name: canonical.blank(cls, name) for name in _PROOF_FIELDS},
        mutable=tuple(
            (canonical.field_index(cls, name), canonical.blank(cls, name)) for name in cls.mutable
        ),
        owners=canonical.field_index(cls, "board_owners") if is_board else -1,
        owners_empty=canonical.blank(cls, "board_owners") if is_board else "",
        owners_nil=canonical.blank(cls, "board_owners", nil=True) if is_board else "",
    )


_PROOF_FIELDS: Final = (
    "fingerprint",
    "proof_of_work",
    "signature",
    "last_update",
    "update_proof_of_work",
    "update_signature",
)
_PLANS: Final[dict[type[Provable], _Plan]] = {
    cls: _plan(cls) for cls in (Board, Thread, Post, Vote, Key, Truststate)
}


def _join(pieces: list[str]) -> str:
    return "{" + ",".join(pieces) + "}"


class Inputs:
    """The hashing inputs of one provable entity; each field is escaped once for all of them."""

    __slots__ = ("_entity", "_pieces", "_plan")

    def __init__(self, entity: Provable) -> None:
        self._entity = entity
        self._plan = _PLANS[type(entity)]
        self._pieces = canonical.fragments(entity)

    def canonical(self, owners: Owners = "held") -> str:
        """The entity's own canonical JSON, nothing blanked (``canonical.dumps`` of it), with a
        board's owners spelled as ``owners`` says."""
        if owners == "held":
            return _join(self._pieces)
        pieces = self._pieces.copy()
        self._owners(pieces, owners)
        return _join(pieces)

    def _owners(self, pieces: list[str], owners: Owners) -> None:
        plan = self._plan
        if owners == "held" or plan.owners < 0:
            return
        pieces[plan.owners] = plan.owners_empty if owners == "empty" else plan.owners_nil

    def _original(self, *, keep_signature: bool, owners: Owners) -> list[str]:
        plan, pieces = self._plan, self._pieces.copy()
        b = plan.blanks
        pieces[plan.fingerprint] = b["fingerprint"]
        pieces[plan.proof_of_work] = b["proof_of_work"]
        if not keep_signature:
            pieces[plan.signature] = b["signature"]
        pieces[plan.last_update] = b["last_update"]
        pieces[plan.update_proof_of_work] = b["update_proof_of_work"]
        pieces[plan.update_signature] = b["update_signature"]
        self._owners(pieces, owners)
        return pieces

    def signature(self, owners: Owners = "held") -> str:
        """What the creation signature signs."""
        return _join(self._original(keep_signature=False, owners=owners))

    def proof_of_work(self, owners: Owners = "held") -> str:
        """What the creation proof of work hashes (it covers the creation signature)."""
        return _join(self._original(keep_signature=True, owners=owners))

    def fingerprint(self) -> str:
        """What the fingerprint hashes: proofs included, mutable fields zeroed."""
        plan, pieces = self._plan, self._pieces.copy()
        b = plan.blanks
        pieces[plan.fingerprint] = b["fingerprint"]
        pieces[plan.last_update] = b["last_update"]
        pieces[plan.update_proof_of_work] = b["update_proof_of_work"]
        pieces[plan.update_signature] = b["update_signature"]
        for index, zero in plan.mutable:
            pieces[index] = zero
        return _join(pieces)

    def update_signature(self, owners: Owners = "held") -> str:
        """What the update signature signs: everything but the update pair."""
        plan, pieces = self._plan, self._pieces.copy()
        pieces[plan.update_proof_of_work] = plan.blanks["update_proof_of_work"]
        pieces[plan.update_signature] = plan.blanks["update_signature"]
        self._owners(pieces, owners)
        return _join(pieces)

    def update_proof_of_work(self, owners: Owners = "held") -> str:
        """What the update proof of work hashes: everything but itself."""
        plan, pieces = self._plan, self._pieces.copy()
        pieces[plan.update_proof_of_work] = plan.blanks["update_proof_of_work"]
        self._owners(pieces, owners)
        return _join(pieces)
