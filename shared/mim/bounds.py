"""Size, count and range rules of Mim objects (PROTOCOL.md §9; reference ``boundscheck.go``).

Every limit is a named constant citing its section. String limits count UTF-8 bytes, as Go's
``len`` does, never characters. :func:`check` raises :class:`OutOfBounds` naming the field, the
limit and the value's size, e.g. "`post.body`: 70000 bytes is over POST_BODY_MAX (65535)".

Besides the sizes, this stage refuses what the reference's ``api.Verify`` refuses before any
hashing (§8.1 steps 1-3): encrypted content, a realm other than mainnet, and an entity version
other than 1.
"""

from __future__ import annotations

from typing import Any, Final

from mim.entities import (
    Address,
    Board,
    Entity,
    Key,
    Post,
    Protocol,
    Thread,
    Truststate,
    Vote,
)
from mim.errors import OutOfBounds

__all__ = [
    "ADDRESS_LOCATION_MAX",
    "BOARD_DESCRIPTION_MAX",
    "BOARD_LANGUAGE_MAX",
    "BOARD_NAME_MAX",
    "BOARD_NAME_MIN",
    "BOARD_OWNERS_MAX",
    "CLIENT_NAME_MAX",
    "CLIENT_NAME_MIN",
    "ENCRCONTENT_MAX",
    "ENTITY_VERSION",
    "FINGERPRINT_MAX",
    "KEY_INFO_MAX",
    "KEY_NAME_MAX",
    "KEY_NAME_MIN",
    "KEY_TYPE_MAX",
    "KEY_TYPE_MIN",
    "META_MAX",
    "POST_BODY_MAX",
    "POST_BODY_MIN",
    "POW_MAX",
    "PROTOCOL_ENTITIES_MAX",
    "PROTOCOL_ENTITY_MAX",
    "PROTOCOL_NAME_MAX",
    "PROTOCOL_NAME_MIN",
    "PROTOCOL_SUBPROTOCOLS_MAX",
    "PUBLIC_KEY_MAX",
    "PUBLIC_KEY_MIN",
    "SIGNATURE_MAX",
    "THREAD_BODY_MAX",
    "THREAD_LINK_MAX",
    "THREAD_NAME_MAX",
    "THREAD_NAME_MIN",
    "TIMESTAMP_MAX",
    "TYPE_CODE_MAX",
    "TYPE_CODE_MIN",
    "check",
    "check_protocol",
]

# §9.1 common helpers
FINGERPRINT_MAX: Final = 64
"""Every fingerprint-typed field: 0..64 bytes (hex-ness not checked). §9.1"""
POW_MAX: Final = 512
"""``proof_of_work``, ``update_proof_of_work``: 0..512 bytes. §9.1"""
SIGNATURE_MAX: Final = 512
"""``signature``, ``update_signature``, ``page_signature``: 0..512 bytes. §9.1"""
PUBLIC_KEY_MIN: Final = 32
PUBLIC_KEY_MAX: Final = 128
"""``owner_publickey``: 32..128 bytes unless both it and ``owner`` are empty. §9.1"""
META_MAX: Final = 20480
"""``meta``: 0..20480 bytes. §9.1"""
ENCRCONTENT_MAX: Final = 131070
"""``encrcontent``: 0..131070 bytes, and must be empty to be processed (§8.1 step 1). §9.1"""
ENTITY_VERSION: Final = 1
"""The only entity version the protocol processes. §9, §4"""
TIMESTAMP_MAX: Final = 2**63 - 1
"""Timestamps: 0..2^63-1. §9"""

# §9.2 per entity
BOARD_NAME_MIN: Final = 2
BOARD_NAME_MAX: Final = 128
BOARD_DESCRIPTION_MAX: Final = 65535
BOARD_OWNERS_MAX: Final = 128
BOARD_LANGUAGE_MAX: Final = 3
THREAD_NAME_MIN: Final = 2
THREAD_NAME_MAX: Final = 255
THREAD_BODY_MAX: Final = 65535
THREAD_LINK_MAX: Final = 4096
POST_BODY_MIN: Final = 1
POST_BODY_MAX: Final = 65535
TYPE_CODE_MIN: Final = 1
TYPE_CODE_MAX: Final = 65535
"""Vote and truststate ``typeclass`` and ``type``: 1..65535. §9.2"""
KEY_TYPE_MIN: Final = 1
KEY_TYPE_MAX: Final = 32
KEY_NAME_MIN: Final = 1
KEY_NAME_MAX: Final = 32
KEY_INFO_MAX: Final = 65535
ADDRESS_LOCATION_MAX: Final = 512
CLIENT_NAME_MIN: Final = 2
CLIENT_NAME_MAX: Final = 128
BOARD_OWNER_LEVEL_MAX: Final = 255
# ``protocolBC`` (§9.2): the reference has it but never calls it for addresses; we hold what a
# node says of itself to it before we store it first-party.
PROTOCOL_SUBPROTOCOLS_MAX: Final = 32
PROTOCOL_NAME_MIN: Final = 2
PROTOCOL_NAME_MAX: Final = 16
PROTOCOL_ENTITIES_MAX: Final = 128
PROTOCOL_ENTITY_MAX: Final = 32


def _size(value: str) -> int:
    # Decoded strings are valid Unicode (bad bytes became U+FFFD), so this is Go's len().
    return len(value.encode("utf-8", "surrogatepass"))


def _string(path: str, value: str, low: int, high: int, name: str) -> None:
    size = len(value) if value.isascii() else _size(value)
    if size > high:
        raise OutOfBounds(path, name + "_MAX", f"{size} bytes is over {high}")
    if size < low:
        raise OutOfBounds(path, name + "_MIN", f"{size} bytes is under {low}")


def _fingerprint(path: str, value: str) -> None:
    _string(path, value, 0, FINGERPRINT_MAX, "FINGERPRINT")


def _timestamp(path: str, value: int) -> None:
    if not 0 <= value <= TIMESTAMP_MAX:
        raise OutOfBounds(path, "TIMESTAMP_RANGE", f"{value} is outside 0..{TIMESTAMP_MAX}")


def _int_range(path: str, value: int, low: int, high: int, name: str) -> None:
    if not low <= value <= high:
        raise OutOfBounds(path, name, f"{value} is outside {low}..{high}")


def _provable_common(kind: str, e: Any) -> None:
    """Rules shared by the six provable entities (the embedded field sets, §9.1, §8.1)."""
    if e.encrcontent:
        raise OutOfBounds(
            f"{kind}.encrcontent", "ENCRCONTENT_EMPTY", "encrypted content is not supported"
        )
    if e.realm_id:
        raise OutOfBounds(f"{kind}.realm_id", "REALM_EMPTY", "only the main realm is supported")
    if e.entity_version != ENTITY_VERSION:
        raise OutOfBounds(
            f"{kind}.entity_version",
            "ENTITY_VERSION",
            f"version {e.entity_version} is not {ENTITY_VERSION}",
        )
    _fingerprint(f"{kind}.fingerprint", e.fingerprint)
    _timestamp(f"{kind}.creation", e.creation)
    _timestamp(f"{kind}.last_update", e.last_update)
    _string(f"{kind}.proof_of_work", e.proof_of_work, 0, POW_MAX, "POW")
    _string(f"{kind}.update_proof_of_work", e.update_proof_of_work, 0, POW_MAX, "POW")
    _string(f"{kind}.signature", e.signature, 0, SIGNATURE_MAX, "SIGNATURE")
    _string(f"{kind}.update_signature", e.update_signature, 0, SIGNATURE_MAX, "SIGNATURE")
    _string(f"{kind}.meta", e.meta, 0, META_MAX, "META")


def _owner(kind: str, e: Any) -> None:
    _fingerprint(f"{kind}.owner", e.owner)
    if e.owner or e.owner_publickey:
        _string(
            f"{kind}.owner_publickey",
            e.owner_publickey,
            PUBLIC_KEY_MIN,
            PUBLIC_KEY_MAX,
            "PUBLIC_KEY",
        )


def _board(e: Board) -> None:
    _string("board.name", e.name, BOARD_NAME_MIN, BOARD_NAME_MAX, "BOARD_NAME")
    _string("board.description", e.description, 0, BOARD_DESCRIPTION_MAX, "BOARD_DESCRIPTION")
    _string("board.language", e.language, 0, BOARD_LANGUAGE_MAX, "BOARD_LANGUAGE")
    owners = e.board_owners or ()
    if len(owners) > BOARD_OWNERS_MAX:
        raise OutOfBounds(
            "board.board_owners",
            "BOARD_OWNERS_MAX",
            f"{len(owners)} owners is over {BOARD_OWNERS_MAX}",
        )
    for i, owner in enumerate(owners):
        _fingerprint(f"board.board_owners[{i}].key_fingerprint", owner.key_fingerprint)
        _timestamp(f"board.board_owners[{i}].expiry", owner.expiry)
    _owner("board", e)


def _thread(e: Thread) -> None:
    _fingerprint("thread.board", e.board)
    _string("thread.name", e.name, THREAD_NAME_MIN, THREAD_NAME_MAX, "THREAD_NAME")
    _string("thread.body", e.body, 0, THREAD_BODY_MAX, "THREAD_BODY")
    _string("thread.link", e.link, 0, THREAD_LINK_MAX, "THREAD_LINK")
    _owner("thread", e)


def _post(e: Post) -> None:
    _fingerprint("post.board", e.board)
    _fingerprint("post.thread", e.thread)
    _fingerprint("post.parent", e.parent)
    _string("post.body", e.body, POST_BODY_MIN, POST_BODY_MAX, "POST_BODY")
    _owner("post", e)


def _vote(e: Vote) -> None:
    _fingerprint("vote.board", e.board)
    _fingerprint("vote.thread", e.thread)
    _fingerprint("vote.target", e.target)
    _owner("vote", e)
    _int_range("vote.typeclass", e.typeclass, TYPE_CODE_MIN, TYPE_CODE_MAX, "TYPE_CODE")
    _int_range("vote.type", e.type, TYPE_CODE_MIN, TYPE_CODE_MAX, "TYPE_CODE")


def _key(e: Key) -> None:
    # The reference never bounds-checks a Key's `key` field (§9.2); the signature stage will
    # refuse a key that is not a 32-byte Ed25519 key.
    _string("key.type", e.type, KEY_TYPE_MIN, KEY_TYPE_MAX, "KEY_TYPE")
    _timestamp("key.expiry", e.expiry)
    _string("key.name", e.name, KEY_NAME_MIN, KEY_NAME_MAX, "KEY_NAME")
    _string("key.info", e.info, 0, KEY_INFO_MAX, "KEY_INFO")


def _truststate(e: Truststate) -> None:
    _fingerprint("truststate.target", e.target)
    _owner("truststate", e)
    _int_range("truststate.typeclass", e.typeclass, TYPE_CODE_MIN, TYPE_CODE_MAX, "TYPE_CODE")
    _int_range("truststate.type", e.type, TYPE_CODE_MIN, TYPE_CODE_MAX, "TYPE_CODE")
    _fingerprint("truststate.domain", e.domain)
    _timestamp("truststate.expiry", e.expiry)


def _address(e: Address) -> None:
    _string("address.location", e.location, 0, ADDRESS_LOCATION_MAX, "ADDRESS_LOCATION")
    _string("address.sublocation", e.sublocation, 0, ADDRESS_LOCATION_MAX, "ADDRESS_LOCATION")
    if e.entity_version != ENTITY_VERSION:
        raise OutOfBounds(
            "address.entity_version",
            "ENTITY_VERSION",
            f"version {e.entity_version} is not {ENTITY_VERSION}",
        )
    _fingerprint("address.realm_id", e.realm_id)
    c = e.client
    if c.version_major or c.version_minor or c.version_patch or c.name:
        _int_range("address.client.version_major", c.version_major, 1, 255, "CLIENT_VERSION")
        _string("address.client.name", c.name, CLIENT_NAME_MIN, CLIENT_NAME_MAX, "CLIENT_NAME")


_CHECKS: Final[dict[type[Any], Any]] = {
    Board: _board,
    Thread: _thread,
    Post: _post,
    Vote: _vote,
    Key: _key,
    Truststate: _truststate,
    Address: _address,
}


def check(entity: Entity) -> None:
    """Raise :class:`OutOfBounds` if ``entity`` breaks a rule of §9 (or §8.1 steps 1-3)."""
    cls = type(entity)
    if cls is not Address:
        _provable_common(entity.kind, entity)
    _CHECKS[cls](entity)


def check_protocol(protocol: Protocol, path: str = "address.protocol") -> None:
    """Raise :class:`OutOfBounds` if ``protocol`` breaks ``protocolBC`` (§9.2): all zero, or
    version 1..255 with 1..32 subprotocols, each named in 2..16 bytes, version ≥ 1, listing
    1..128 entities of 1..32 bytes."""
    subs = protocol.subprotocols or ()
    if not (protocol.version_major or protocol.version_minor or subs):
        return
    _int_range(f"{path}.version_major", protocol.version_major, 1, 255, "PROTOCOL_VERSION")
    if not 1 <= len(subs) <= PROTOCOL_SUBPROTOCOLS_MAX:
        raise OutOfBounds(
            f"{path}.subprotocols",
            "PROTOCOL_SUBPROTOCOLS_MAX",
            f"{len(subs)} subprotocols, need 1..{PROTOCOL_SUBPROTOCOLS_MAX}",
        )
    for n, sub in enumerate(subs):
        where = f"{path}.subprotocols[{n}]"
        _string(f"{where}.name", sub.name, PROTOCOL_NAME_MIN, PROTOCOL_NAME_MAX, "PROTOCOL_NAME")
        _int_range(f"{where}.version_major", sub.version_major, 1, 255, "PROTOCOL_VERSION")
        entities = sub.supported_entities or ()
        if not 1 <= len(entities) <= PROTOCOL_ENTITIES_MAX:
            raise OutOfBounds(
                f"{where}.supported_entities",
                "PROTOCOL_ENTITIES_MAX",
                f"{len(entities)} entities, need 1..{PROTOCOL_ENTITIES_MAX}",
            )
        for entity in entities:
            _string(
                f"{where}.supported_entities", entity, 1, PROTOCOL_ENTITY_MAX, "PROTOCOL_ENTITY"
            )
