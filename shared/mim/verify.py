"""One entry point that decides whether the node accepts an object (PROTOCOL.md §8, §20).

Stages, in order, each with the error class that reports it:

``decode``       the wire JSON decodes as Go decodes it (:class:`MalformedJSON`)
``bounds``       sizes and ranges of §9, plus §8.1 steps 1-3 (:class:`OutOfBounds`)
``fingerprint``  the fingerprint matches the content (:class:`FingerprintMismatch`)
``signature``    the applicable signature is the owner's, or the object is anonymous and the
                 policy allows it; a key of small order signs nothing (§20.12;
                 :class:`BadSignature`)
``pow``          the applicable proof of work is valid, signed like the object, and strong enough
                 (:class:`InsufficientWork`)
``entitlements`` the key may issue what the object is: CA-only trust types need the trusted CA
                 key (§8.1 step 7; :class:`NotEntitled`)
``update``       update rules: no ``last_update`` without update proofs (§20.11), no update of an
                 anonymous object (:class:`UpdateRefused`)

The first failing stage is the verdict's. This is the order of [seed 003] that mimrelay adopts
(§20.1); the reference checks the proof of work before the signature, so where both fail the
reported stage differs from the reference's while the verdict is the same.

An updated object is checked by its update proofs only, as the reference does (§4.4); its
fingerprint, which covers the original proofs, is always checked. A board without owners is
checked with ``"board_owners":[]`` first and ``null`` second, each spelling for the object as a
whole: its signature and its proof of work must both verify over the same one, and the accepted
object (``Verdict.entity`` and ``Verdict.canonical``) is spelled the way its proofs cover (§4.5,
§20.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from mim import bounds, canonical, fingerprint, signing
from mim import pow as mim_pow
from mim.entities import Address, Board, Entity, Key, Provable, Truststate, parse
from mim.errors import BadSignature, MimError, NotEntitled, UpdateRefused
from mim.inputs import Inputs, Owners
from mim.kinds import PROVABLE_KINDS

__all__ = [
    "CA_ONLY_TRUST_TYPECLASSES",
    "DEFAULT_MIN_POW",
    "STAGES",
    "TRUSTED_CA_PUBLIC_KEY",
    "Policy",
    "Verdict",
    "check",
    "verify",
    "verify_entity",
]

#: Stages a verdict can name, in the order they run; the validator adds ``blocked``.
STAGES: Final = ("decode", "bounds", "fingerprint", "signature", "pow", "entitlements", "update")
#: The reference's default minimum strength for every entity and every update (§7.4).
DEFAULT_MIN_POW: Final = 21
#: The single key the reference entitles to issue naming and F451 trust states (§8.1 step 7).
TRUSTED_CA_PUBLIC_KEY: Final = "142ae631bcd46ab6e548c9b2d9494c7e30c65b4389e541e31bbe31e0ae47515e"
CA_ONLY_TRUST_TYPECLASSES: Final = frozenset({2, 3})

_ALL_DEFAULT: Final[Mapping[str, int]] = MappingProxyType(
    dict[str, int].fromkeys(PROVABLE_KINDS, DEFAULT_MIN_POW)
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What this node demands of an object beyond the protocol's own rules.

    ``min_pow`` and ``min_update_pow`` map each provable kind to its minimum strength (a kind left
    out takes :data:`DEFAULT_MIN_POW`). Anonymous objects (no key, no signature, unsigned proof of
    work) are refused unless ``allow_anonymous``; when allowed they need at least
    ``anonymous_min_pow`` too (§20.9). ECDSA keys are refused unless ``allow_ecdsa`` (§20.8).
    """

    min_pow: Mapping[str, int] = field(default_factory=lambda: _ALL_DEFAULT)
    min_update_pow: Mapping[str, int] = field(default_factory=lambda: _ALL_DEFAULT)
    allow_anonymous: bool = False
    anonymous_min_pow: int = 0
    allow_ecdsa: bool = False

    @classmethod
    def uniform(cls, strength: int, **options: Any) -> Policy:
        """The same minimum strength for every kind and every update."""
        levels: Mapping[str, int] = MappingProxyType(
            dict[str, int].fromkeys(PROVABLE_KINDS, strength)
        )
        return cls(min_pow=levels, min_update_pow=levels, **options)

    def minimum(self, kind: str, *, update: bool, anonymous: bool) -> int:
        table = self.min_update_pow if update else self.min_pow
        level = table.get(kind, DEFAULT_MIN_POW)
        return max(level, self.anonymous_min_pow) if anonymous else level


DEFAULT_POLICY: Final = Policy()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The node's decision on one object: accepted, or rejected at a stage with a reason."""

    kind: str
    ok: bool
    stage: str = ""
    reason: str = ""
    field: str = ""
    rule: str = ""
    fingerprint: str = ""
    last_update: int = 0
    entity: Entity | None = None
    #: The accepted object's canonical JSON (what is stored and passed on); empty if rejected.
    canonical: bytes = b""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "ok": self.ok,
            "stage": self.stage,
            "reason": self.reason,
            "field": self.field,
            "rule": self.rule,
        }


def verify(kind: str, raw: bytes | str, policy: Policy = DEFAULT_POLICY) -> Verdict:
    """Decode wire JSON of ``kind`` and run every stage; never raises for bad input."""
    try:
        entity = parse(kind, raw)
    except MimError as exc:
        return Verdict(kind, False, exc.stage, exc.reason, exc.field, exc.rule)
    except KeyError:
        return Verdict(kind, False, "decode", f"`kind`: {kind!r} is not a Mim kind", "kind", "kind")
    return verify_entity(entity, policy)


def verify_entity(entity: Entity, policy: Policy = DEFAULT_POLICY) -> Verdict:
    """Run every stage after decoding on an object; never raises for bad input."""
    fp = "" if isinstance(entity, Address) else entity.fingerprint
    lu = 0 if isinstance(entity, Address) else entity.last_update
    try:
        checked = _checked(entity, policy)
    except MimError as exc:
        return Verdict(entity.kind, False, exc.stage, exc.reason, exc.field, exc.rule, fp, lu)
    if checked is None or isinstance(entity, Address):
        text = canonical.dumps(entity)
    else:  # the hashing inputs hold every field already encoded: joining them is the JSON
        inputs, owners = checked
        text = inputs.canonical(owners)
        entity = _spelled(entity, owners)
    return Verdict(
        entity.kind, True, fingerprint=fp, last_update=lu, entity=entity, canonical=text.encode()
    )


def check(entity: Entity, policy: Policy = DEFAULT_POLICY) -> None:
    """Raise the :class:`MimError` of the first stage ``entity`` fails; return if accepted."""
    _checked(entity, policy)


def _checked(entity: Entity, policy: Policy) -> tuple[Inputs, Owners] | None:
    """``check``, returning the hashing inputs it built and the spelling of a board's owners
    that the proofs verified with (``None`` for an address)."""
    bounds.check(entity)
    if isinstance(entity, Address):
        return None  # addresses carry no proofs (§8.1)
    inputs = Inputs(entity)
    fingerprint.check(entity, inputs)
    key = entity.key if isinstance(entity, Key) else entity.owner_publickey
    owners = _check_proofs(entity, inputs, key, policy)
    _check_entitlements(entity, key)
    _check_update(entity, key)
    return inputs, owners


# --------------------------------------------------------------------------- stages


def _spellings(entity: Provable) -> tuple[Owners, ...]:
    """How a board's owners may enter its proofs: ``[]`` then ``null`` for a board without owners
    (§20.3); as held for anything else."""
    if isinstance(entity, Board) and not entity.board_owners:
        return ("empty", "nil")
    return ("held",)


def _spelled(entity: Provable, owners: Owners) -> Provable:
    """``entity`` with its board owners spelled as its proofs cover them."""
    if owners == "held" or not isinstance(entity, Board):
        return entity
    return replace(entity, board_owners=() if owners == "empty" else None)


def _check_proofs(entity: Provable, inputs: Inputs, key: str, policy: Policy) -> Owners:
    """The signature and proof-of-work stages over one spelling of a board's owners for both:
    the first spelling both verify over, or the failure that got furthest (the first on a tie)."""
    failure: MimError | None = None
    for owners in _spellings(entity):
        try:
            _check_signature(entity, inputs, key, policy, owners)
            _check_pow(entity, inputs, key, policy, owners)
        except MimError as exc:
            if failure is None or STAGES.index(exc.stage) > STAGES.index(failure.stage):
                failure = exc
            continue
        return owners
    assert failure is not None  # there is at least one spelling
    raise failure


def _check_signature(
    entity: Provable, inputs: Inputs, key: str, policy: Policy, owners: Owners
) -> None:
    kind = entity.kind
    if entity.update_signature:
        name, sig, text_of = "update_signature", entity.update_signature, inputs.update_signature
    elif entity.signature:
        name, sig, text_of = "signature", entity.signature, inputs.signature
    elif key:
        raise BadSignature(
            f"{kind}.signature",
            "signature.missing",
            "the object names an owner key but is unsigned",
        )
    elif policy.allow_anonymous:
        return
    else:
        raise BadSignature(
            f"{kind}.signature", "signature.anonymous", "anonymous objects are refused by this node"
        )
    path = f"{kind}.{name}"
    if not key:
        raise BadSignature(
            path, "signature.no_key", "signed, but names no owner key to verify with"
        )

    key_field = "key" if isinstance(entity, Key) else "owner_publickey"
    text = text_of(owners)
    if signing.verify(text, sig, key, allow_ecdsa=policy.allow_ecdsa):
        return
    rule, detail = signing.diagnose(
        text, sig, key, key_field=key_field, allow_ecdsa=policy.allow_ecdsa
    ) or ("signature.invalid", f"not made by {key_field}")
    raise BadSignature(path, rule, detail)


def _check_pow(entity: Provable, inputs: Inputs, key: str, policy: Policy, owners: Owners) -> None:
    kind = entity.kind
    anonymous = not key
    if entity.update_proof_of_work:
        name, work, text_of = (
            "update_proof_of_work",
            entity.update_proof_of_work,
            inputs.update_proof_of_work,
        )
        minimum = policy.minimum(kind, update=True, anonymous=anonymous)
    else:
        name, work, text_of = "proof_of_work", entity.proof_of_work, inputs.proof_of_work
        minimum = policy.minimum(kind, update=False, anonymous=anonymous)
    mim_pow.check(
        text_of(owners),
        work,
        key,
        minimum,
        field=f"{kind}.{name}",
        key_field="key" if isinstance(entity, Key) else "owner_publickey",
        allow_ecdsa=policy.allow_ecdsa,
    )


def _check_entitlements(entity: Provable, key: str) -> None:
    if (
        isinstance(entity, Truststate)
        and entity.typeclass in CA_ONLY_TRUST_TYPECLASSES
        and key.lower() != TRUSTED_CA_PUBLIC_KEY
    ):
        raise NotEntitled(
            f"{entity.kind}.typeclass",
            "entitlement.ca_only",
            f"trust typeclass {entity.typeclass} may only be issued by the trusted CA key",
        )


def _check_update(entity: Provable, key: str) -> None:
    kind = entity.kind
    updated = bool(entity.update_signature or entity.update_proof_of_work)
    if updated and not key:
        raise UpdateRefused(
            f"{kind}.update_proof_of_work",
            "update.anonymous",
            "an anonymous object has no owner key to prove an update with",
        )
    if entity.last_update and not updated:
        raise UpdateRefused(
            f"{kind}.last_update",
            "update.unproven",
            f"last_update {entity.last_update} is set but the object carries no update proofs",
        )
