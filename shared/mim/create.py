"""Making objects the way the reference client makes them (PROTOCOL.md §4.2, §4.3, §19.4).

Creation: fill the fields (``creation`` = now, ``entity_version`` 1, a board's owners ``[]``) →
sign → proof of work over the signed object → fingerprint over both. Update: change mutable fields
and set ``last_update`` → update signature → update proof of work; the fingerprint stays. What
the reference would refuse is refused before any work is spent: a field out of bounds, and a trust
state of a typeclass only the trusted CA may issue (§10.2) signed by another key.

An object's ``owner`` is the fingerprint of its author's Key entity, as the reference client sets
it (§19.4): the caller passes it (``mimrelay`` keeps it beside the key file). Without one it
defaults to the SHA-256 of the hex public key, the fingerprint the reference gives its CA's key.

Addresses are not provable: :func:`address` makes one from its fields.

The proof-of-work search is a parameter (a :data:`mim.pow.Minter`): it is given the text and the
difficulty and returns an unsigned proof, so it may run anywhere (in-process, or a miner service)
without ever seeing a private key; the creator signs the found proof itself (§7.2 step 7). Time is
a parameter too. Everything made here passes :func:`mim.verify.check` at a policy asking for the
given difficulty.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any, cast

from mim import bounds, fingerprint
from mim import pow as mim_pow
from mim.entities import Address, Board, Key, Provable, Truststate, entity_class
from mim.errors import MalformedJSON, NotEntitled, UpdateRefused
from mim.inputs import Inputs
from mim.nodes import LocationType
from mim.signing import SigningKey, key_fingerprint
from mim.verify import CA_ONLY_TRUST_TYPECLASSES, TRUSTED_CA_PUBLIC_KEY

__all__ = ["KEY_TYPE", "address", "create", "location_type", "update"]

#: The Key entity ``type`` of an Ed25519 key (reference ``defaults.go``).
KEY_TYPE = "ed25519"
#: What the CA-only trust typeclasses mean (§10.2).
_CA_ONLY_MEANING = {2: "naming", 3: "F451 (censoring)"}

_PROOF_FIELDS = frozenset(
    {
        "fingerprint",
        "proof_of_work",
        "signature",
        "last_update",
        "update_proof_of_work",
        "update_signature",
        "entity_version",
    }
)


def _settable(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - _PROOF_FIELDS


def create(
    kind: str,
    values: Mapping[str, Any],
    key: SigningKey | None,
    difficulty: int,
    now: int,
    minter: mim_pow.Minter,
) -> Provable:
    """A new signed (or, with ``key`` None, anonymous) object of ``kind`` made from ``values``.

    ``owner`` should be the fingerprint of the author's Key entity (see the module docstring);
    ``owner_publickey`` defaults to the key's; a Key entity's ``key`` and ``type`` default to the
    signing key's. ``creation`` defaults to ``now``.
    """
    cls = _provable_class(kind)
    unknown = set(values) - _settable(cls)
    if unknown:
        name = sorted(unknown)[0]
        raise MalformedJSON(f"{kind}.{name}", "field.settable", "not a field one can set on create")
    fields: dict[str, Any] = {"creation": now, **values, "entity_version": 1}
    if cls is Board:
        fields.setdefault("board_owners", ())
    if key is not None:
        if cls is Key:
            fields.setdefault("key", key.public_hex)
            fields.setdefault("type", KEY_TYPE)
        else:
            fields.setdefault("owner", key_fingerprint(key.public_hex))
            fields.setdefault("owner_publickey", key.public_hex)
    draft: Provable = cls(**fields)
    bounds.check(draft)  # refuse before spending the work
    if isinstance(draft, Truststate):
        _check_entitled(draft, key)

    if key is not None:
        draft = _with(draft, signature=key.sign(Inputs(draft).signature()))
    work = minter(Inputs(draft).proof_of_work(), difficulty)
    if key is not None and difficulty > 0:
        work = mim_pow.sign_prefix(work, key.sign)
    draft = _with(draft, proof_of_work=work if difficulty > 0 else "")
    return _with(draft, fingerprint=fingerprint.compute(draft))


def update(
    entity: Provable,
    changes: Mapping[str, Any],
    key: SigningKey,
    difficulty: int,
    now: int,
    minter: mim_pow.Minter,
) -> Provable:
    """``entity`` with its mutable fields changed and fresh update proofs, made at ``now``.

    Only the fields the reference lets change may change; the key must be the object's owner key;
    ``now`` must be later than the object's creation and its previous update.
    """
    kind = entity.kind
    illegal = set(changes) - set(entity.mutable)
    if illegal:
        name = sorted(illegal)[0]
        raise UpdateRefused(
            f"{kind}.{name}",
            "update.mutable",
            f"only {', '.join(entity.mutable)} may change in an update",
        )
    owner_key = entity.key if isinstance(entity, Key) else entity.owner_publickey
    if not owner_key:
        raise UpdateRefused(
            f"{kind}.owner_publickey", "update.anonymous", "an anonymous object cannot be updated"
        )
    if owner_key.lower() != key.public_hex:
        raise UpdateRefused(
            f"{kind}.owner_publickey", "update.owner", "the update must be signed by the owner key"
        )
    if now <= max(entity.creation, entity.last_update):
        raise UpdateRefused(
            f"{kind}.last_update",
            "update.newer",
            f"{now} is not after creation {entity.creation} and last update {entity.last_update}",
        )
    draft: Provable = _with(
        entity, **changes, last_update=now, update_proof_of_work="", update_signature=""
    )
    bounds.check(draft)
    draft = _with(draft, update_signature=key.sign(Inputs(draft).update_signature()))
    work = minter(Inputs(draft).update_proof_of_work(), difficulty)
    if difficulty > 0:
        work = mim_pow.sign_prefix(work, key.sign)
    return _with(draft, update_proof_of_work=work if difficulty > 0 else "")


def _check_entitled(truststate: Truststate, key: SigningKey | None) -> None:
    """Refuse a CA-only typeclass unless the trusted CA signs it, as the reference's verifier
    would (its entitlements check, §8.1 step 7)."""
    typeclass = truststate.typeclass
    if typeclass not in CA_ONLY_TRUST_TYPECLASSES:
        return
    if key is not None and key.public_hex == TRUSTED_CA_PUBLIC_KEY:
        return
    raise NotEntitled(
        "truststate.typeclass",
        "entitlement.ca_only",
        f"typeclass {typeclass} ({_CA_ONLY_MEANING.get(typeclass, 'CA only')}) is issued by the"
        f" network's trusted CA alone (key {TRUSTED_CA_PUBLIC_KEY[:16]}…); every node refuses"
        " it from any other key",
    )


def location_type(location: str) -> LocationType:
    """An address's ``location_type`` for ``location``: an IPv4 or IPv6 address, or a host name
    (§2.8)."""
    try:
        ip = ipaddress.ip_address(location)
    except ValueError:
        return LocationType.URL
    return LocationType.IPV4 if ip.version == 4 else LocationType.IPV6


def address(values: Mapping[str, Any]) -> Address:
    """A new address from ``values``: ``entity_version`` 1, and, unless given, the
    ``location_type`` of its location. It must name a location and a port."""
    for name in ("location", "port"):
        if not values.get(name):
            raise MalformedJSON(f"address.{name}", "field.required", "an address needs one")
    fields: dict[str, Any] = {"entity_version": 1, **values}
    fields.setdefault("location_type", int(location_type(str(values["location"]))))
    made = Address(**fields)
    bounds.check(made)
    return made


def _with(obj: Provable, **changes: Any) -> Provable:
    changed: Provable = dataclasses.replace(cast(Any, obj), **changes)
    return changed


def _provable_class(kind: str) -> type[Any]:
    try:
        cls = entity_class(kind)
    except KeyError:
        raise MalformedJSON("kind", "kind.known", f"{kind!r} is not a Mim kind") from None
    if cls.kind == "address":
        raise MalformedJSON("kind", "kind.provable", "addresses are not created with proofs")
    return cls
