"""Mim objects as the reference's Go structs define them (PROTOCOL.md §2, §11.5).

Every class here mirrors one struct of the reference's ``apistructs.go``: the dataclass field order
is the struct's declaration order (embedded structs spliced in place), which is the JSON key order
of the canonical encoding. Field metadata carries what the codec needs: the Go type (``go``) where
it is not the default for the annotation, the JSON key where it differs from the attribute
(``json``), and ``omitempty``. Slices are tuples; ``None`` is Go's nil slice (``null`` on the wire),
``()`` an empty one (``[]``), and the two stay distinct through a round trip (§3.2).

Objects are frozen. Wire bytes become objects only through :func:`parse` (``mim.decoder``), and
objects become bytes only through :func:`mim.canonical.dumps`. Changing a field order or a key here
is a protocol change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeAlias

from mim.decoder import loads
from mim.kinds import KINDS, PLURALS, PROVABLE_KINDS, Kind, singular

__all__ = [
    "KINDS",
    "PLURALS",
    "PROVABLE_KINDS",
    "Address",
    "Answer",
    "ApiResponse",
    "Board",
    "BoardIndex",
    "BoardOwner",
    "Caching",
    "Client",
    "Entity",
    "EntityCount",
    "Filter",
    "Key",
    "KeyIndex",
    "Kind",
    "PageManifest",
    "PageManifestEntity",
    "Pagination",
    "Post",
    "PostIndex",
    "Protocol",
    "Provable",
    "ResultCache",
    "Subprotocol",
    "Thread",
    "ThreadIndex",
    "Truststate",
    "TruststateIndex",
    "Vote",
    "VoteIndex",
    "entity_class",
    "parse",
]


def _go(go_type: str, default: Any = 0) -> Any:
    """A field whose Go type is not the default for its annotation (uint8, uint16, uint64)."""
    return field(default=default, metadata={"go": go_type})


def _omit(default: Any = "", *, json: str | None = None, go: str | None = None) -> Any:
    meta: dict[str, Any] = {"omitempty": True}
    if json is not None:
        meta["json"] = json
    if go is not None:
        meta["go"] = go
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- sub-objects


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardOwner:
    key_fingerprint: str = ""
    expiry: int = 0
    level: int = _go("uint8")


@dataclass(frozen=True, slots=True, kw_only=True)
class Subprotocol:
    name: str = ""
    version_major: int = _go("uint8")
    version_minor: int = _go("uint16")
    supported_entities: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Protocol:
    version_major: int = _go("uint8")
    version_minor: int = _go("uint16")
    subprotocols: tuple[Subprotocol, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    version_major: int = _go("uint8")
    version_minor: int = _go("uint16")
    version_patch: int = _go("uint16")
    name: str = ""


# --------------------------------------------------------------------------- provable entities


@dataclass(frozen=True, slots=True, kw_only=True)
class Board:
    kind: ClassVar[Kind] = "board"
    mutable: ClassVar[tuple[str, ...]] = ("board_owners", "description", "meta")

    fingerprint: str = ""
    creation: int = 0
    proof_of_work: str = ""
    signature: str = ""
    name: str = ""
    board_owners: tuple[BoardOwner, ...] | None = None
    description: str = ""
    owner: str = ""
    owner_publickey: str = ""
    entity_version: int = 0
    language: str = ""
    meta: str = ""
    realm_id: str = ""
    encrcontent: str = ""
    last_update: int = 0
    update_proof_of_work: str = ""
    update_signature: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Thread:
    kind: ClassVar[Kind] = "thread"
    mutable: ClassVar[tuple[str, ...]] = ("body", "meta")

    fingerprint: str = ""
    creation: int = 0
    proof_of_work: str = ""
    signature: str = ""
    board: str = ""
    name: str = ""
    body: str = ""
    link: str = ""
    owner: str = ""
    owner_publickey: str = ""
    entity_version: int = 0
    meta: str = ""
    realm_id: str = ""
    encrcontent: str = ""
    last_update: int = 0
    update_proof_of_work: str = ""
    update_signature: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Post:
    kind: ClassVar[Kind] = "post"
    mutable: ClassVar[tuple[str, ...]] = ("body", "meta")

    fingerprint: str = ""
    creation: int = 0
    proof_of_work: str = ""
    signature: str = ""
    board: str = ""
    thread: str = ""
    parent: str = ""
    body: str = ""
    owner: str = ""
    owner_publickey: str = ""
    entity_version: int = 0
    meta: str = ""
    realm_id: str = ""
    encrcontent: str = ""
    last_update: int = 0
    update_proof_of_work: str = ""
    update_signature: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Vote:
    kind: ClassVar[Kind] = "vote"
    mutable: ClassVar[tuple[str, ...]] = ("type", "meta")

    fingerprint: str = ""
    creation: int = 0
    proof_of_work: str = ""
    signature: str = ""
    board: str = ""
    thread: str = ""
    target: str = ""
    owner: str = ""
    owner_publickey: str = ""
    typeclass: int = 0
    type: int = 0
    entity_version: int = 0
    meta: str = ""
    realm_id: str = ""
    encrcontent: str = ""
    last_update: int = 0
    update_proof_of_work: str = ""
    update_signature: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    kind: ClassVar[Kind] = "key"
    mutable: ClassVar[tuple[str, ...]] = ("info", "expiry", "meta")

    fingerprint: str = ""
    creation: int = 0
    proof_of_work: str = ""
    signature: str = ""
    type: str = ""
    key: str = ""
    expiry: int = 0
    name: str = ""
    info: str = ""
    entity_version: int = 0
    meta: str = ""
    realm_id: str = ""
    encrcontent: str = ""
    last_update: int = 0
    update_proof_of_work: str = ""
    update_signature: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Truststate:
    kind: ClassVar[Kind] = "truststate"
    mutable: ClassVar[tuple[str, ...]] = ("type", "expiry", "meta")

    fingerprint: str = ""
    creation: int = 0
    proof_of_work: str = ""
    signature: str = ""
    target: str = ""
    owner: str = ""
    owner_publickey: str = ""
    typeclass: int = 0
    type: int = 0
    domain: str = ""
    expiry: int = 0
    entity_version: int = 0
    meta: str = ""
    realm_id: str = ""
    encrcontent: str = ""
    last_update: int = 0
    update_proof_of_work: str = ""
    update_signature: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A node's address (§2.8). Not provable: never hashed or signed."""

    kind: ClassVar[Kind] = "address"

    location: str = ""
    sublocation: str = ""
    location_type: int = _go("uint8")
    port: int = _go("uint16")
    type: int = _go("uint8")
    protocol: Protocol = field(default_factory=Protocol)
    client: Client = field(default_factory=Client)
    entity_version: int = 0
    realm_id: str = ""


Provable: TypeAlias = Board | Thread | Post | Vote | Key | Truststate
Entity: TypeAlias = Provable | Address

_BY_KIND: Final[dict[Kind, type[Any]]] = {
    "board": Board,
    "thread": Thread,
    "post": Post,
    "vote": Vote,
    "key": Key,
    "truststate": Truststate,
    "address": Address,
}


def entity_class(kind: str) -> type[Any]:
    """The class of a kind name (``board`` … ``address``); plural endpoint names are accepted."""
    name = singular(kind)
    if name is None:
        raise KeyError(kind)
    return _BY_KIND[name]


# --------------------------------------------------------------------------- index forms (§2.9)


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardIndex:
    fingerprint: str = ""
    owner: str = _omit(json="Owner")
    creation: int = 0
    last_update: int = 0
    entity_version: int = 0
    page_number: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadIndex:
    fingerprint: str = ""
    owner: str = _omit(json="Owner")
    board: str = ""
    creation: int = 0
    last_update: int = 0
    entity_version: int = 0
    page_number: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PostIndex:
    fingerprint: str = ""
    owner: str = _omit(json="Owner")
    board: str = ""
    thread: str = ""
    parent: str = _omit(json="Parent")
    creation: int = 0
    last_update: int = 0
    entity_version: int = 0
    page_number: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteIndex:
    fingerprint: str = ""
    owner: str = _omit(json="Owner")
    board: str = ""
    thread: str = ""
    target: str = ""
    creation: int = 0
    last_update: int = 0
    entity_version: int = 0
    page_number: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyIndex:
    fingerprint: str = ""
    creation: int = 0
    last_update: int = 0
    entity_version: int = 0
    page_number: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TruststateIndex:
    fingerprint: str = ""
    owner: str = _omit(json="Owner")
    target: str = ""
    creation: int = 0
    last_update: int = 0
    entity_version: int = 0
    page_number: int = 0


# --------------------------------------------------------------------------- manifests (§2.10)


@dataclass(frozen=True, slots=True, kw_only=True)
class PageManifestEntity:
    fingerprint: str = ""
    last_update: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PageManifest:
    page_number: int = _go("uint64")
    entities: tuple[PageManifestEntity, ...] | None = None


# ------------------------------------------------------------------ the page envelope (§11.5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    type: str = ""
    values: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Pagination:
    pages: int = _go("uint64")
    current_page: int = _go("uint64")


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityCount:
    protocol: str = ""
    name: str = ""
    count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Caching:
    pregenerated: bool = False
    current_cache_url: str = ""
    entity_counts: tuple[EntityCount, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultCache:
    response_url: str = ""
    starts_from: int = 0
    ends_at: int = 0


def _omit_slice(cls: type[Any]) -> Any:
    return field(default=None, metadata={"omitempty": True, "elem": cls})


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    boards: tuple[Board, ...] | None = _omit_slice(Board)
    threads: tuple[Thread, ...] | None = _omit_slice(Thread)
    posts: tuple[Post, ...] | None = _omit_slice(Post)
    votes: tuple[Vote, ...] | None = _omit_slice(Vote)
    keys: tuple[Key, ...] | None = _omit_slice(Key)
    truststates: tuple[Truststate, ...] | None = _omit_slice(Truststate)
    addresses: tuple[Address, ...] | None = _omit_slice(Address)
    boards_index: tuple[BoardIndex, ...] | None = _omit_slice(BoardIndex)
    threads_index: tuple[ThreadIndex, ...] | None = _omit_slice(ThreadIndex)
    posts_index: tuple[PostIndex, ...] | None = _omit_slice(PostIndex)
    votes_index: tuple[VoteIndex, ...] | None = _omit_slice(VoteIndex)
    keys_index: tuple[KeyIndex, ...] | None = _omit_slice(KeyIndex)
    truststates_index: tuple[TruststateIndex, ...] | None = _omit_slice(TruststateIndex)
    addresses_index: tuple[Address, ...] | None = _omit_slice(Address)
    boards_manifest: tuple[PageManifest, ...] | None = _omit_slice(PageManifest)
    threads_manifest: tuple[PageManifest, ...] | None = _omit_slice(PageManifest)
    posts_manifest: tuple[PageManifest, ...] | None = _omit_slice(PageManifest)
    votes_manifest: tuple[PageManifest, ...] | None = _omit_slice(PageManifest)
    keys_manifest: tuple[PageManifest, ...] | None = _omit_slice(PageManifest)
    truststates_manifest: tuple[PageManifest, ...] | None = _omit_slice(PageManifest)
    addresses_manifest: tuple[PageManifest, ...] | None = _omit_slice(PageManifest)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiResponse:
    """The signed page every endpoint answers with, and every POST request carries."""

    node_public_key: str = _omit()
    page_signature: str = _omit()
    proof_of_work: str = ""
    nonce: str = _omit()
    entity_version: int = _omit(0)
    address: Address = field(default_factory=Address)
    entity: str = _omit()
    endpoint: str = _omit()
    filters: tuple[Filter, ...] | None = _omit_slice(Filter)
    timestamp: int = _omit(0)
    starts_from: int = _omit(0)
    ends_at: int = _omit(0)
    pagination: Pagination = field(default_factory=Pagination)
    caching: Caching = field(default_factory=Caching)
    results: tuple[ResultCache, ...] | None = _omit_slice(ResultCache)
    response: Answer = field(default_factory=Answer)


def parse(kind: str, raw: bytes | str) -> Entity:
    """Wire JSON of one ``kind`` object → the object, as the reference's decoder sees it (§3.2).

    Raises :class:`mim.errors.MalformedJSON` naming the field for anything Go's ``json.Unmarshal``
    refuses (not JSON, not an object, a wrong type, an integer out of its Go type's range).
    """
    obj: Entity = loads(entity_class(kind), raw)
    return obj
