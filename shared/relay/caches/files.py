"""The files of one cache, signed, made from the objects' stored bytes (PROTOCOL.md §11.6).

The store keeps each object's canonical JSON exactly, and a page's canonical JSON holds each of
its objects as that very text; so an entity page is the envelope encoded once with an empty
``response``, the stored bytes spliced into it, and its signature over the result (§6.1). No
object is decoded or encoded again. Index and manifest pages are made from the stored columns
(and ``entity_version``, read from the stored bytes). The result is byte for byte what
``mim.pages.cache_pages`` and ``sign_page`` give for the decoded objects, which the tests check.

An :class:`ObjectCache` is named from its objects' index columns alone (the cache ID covers their
fingerprints and versions), then takes their bytes one entity page at a time, so building a cache
holds one page of bytes, never the whole cache.

Every page of a cache carries the cache's end as its ``timestamp`` and a nonce derived from the
cache ID, so a cache built twice (by another builder, after a crash) has the same bytes.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from mim import canonical, entities, pages, paths
from mim.entities import (
    Address,
    Answer,
    ApiResponse,
    BoardIndex,
    Caching,
    EntityCount,
    KeyIndex,
    Kind,
    PageManifest,
    PageManifestEntity,
    Pagination,
    PostIndex,
    ResultCache,
    ThreadIndex,
    TruststateIndex,
    VoteIndex,
)
from mim.signing import SigningKey
from relay.db.objects import CacheEntry

__all__ = [
    "Built",
    "ObjectCache",
    "Signer",
    "address_cache",
    "cache_nonce",
    "index_file",
    "object_files",
]

_EMPTY_RESPONSE: Final = b'"response":{}}'
#: The top-level ``entity_version`` of a stored object: inside a JSON string every quote is
#: escaped, and no nested struct of an entity has that key, so the first match is the object's.
_ENTITY_VERSION: Final = re.compile(rb'"entity_version":(-?\d+)')
_INDEX_CLASSES: Final[dict[Kind, Any]] = {
    "board": BoardIndex,
    "thread": ThreadIndex,
    "post": PostIndex,
    "vote": VoteIndex,
    "key": KeyIndex,
    "truststate": TruststateIndex,
}
#: Which stored columns each index form carries besides the common ones (§2.9).
_INDEX_COLUMNS: Final[dict[Kind, tuple[str, ...]]] = {
    "board": (),
    "thread": ("board",),
    "post": ("board", "thread"),
    "vote": ("board", "thread", "target"),
    "key": (),
    "truststate": ("target",),
}


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signs the pages and what they say of the node: its key, port and node type."""

    key: SigningKey
    port: int
    node_type: int

    def base(self, *, nonce: str, timestamp: int) -> ApiResponse:
        return pages.prefill(
            self.key.public_hex,
            port=self.port,
            node_type=self.node_type,
            nonce=nonce,
            now=timestamp,
        )


@dataclass(frozen=True, slots=True)
class Built:
    """One cache, signed: what ``index.json`` lists, and its files by name (plain bytes)."""

    kind: Kind
    result: ResultCache
    objects: int
    files: dict[str, bytes]

    def count(self, prefix: str) -> int:
        """Files named ``<prefix><N>.json`` (``""`` entity pages, ``index/``, ``manifest/``)."""
        return sum(
            1 for name in self.files if name.startswith(prefix) and "/" not in name[len(prefix) :]
        )


def cache_nonce(label: str) -> str:
    """A page nonce derived from ``label`` (a cache ID, or a generation and endpoint)."""
    return hashlib.sha256(f"mimrelay page nonce:{label}".encode()).hexdigest()


def _signed(envelope: ApiResponse, response: Sequence[bytes], key: SigningKey) -> bytes:
    """``envelope`` with ``response`` (the pieces of its response's JSON) inside, signed (§6.1)."""
    unsigned = replace(
        envelope,
        node_public_key=key.public_hex,
        page_signature="",
        proof_of_work="",
        response=Answer(),
    )
    text = canonical.encode(unsigned)
    lead = b'{"node_public_key":"' + key.public_hex.encode() + b'",'
    if not (text.startswith(lead) and text.endswith(_EMPTY_RESPONSE)):
        raise RuntimeError("the page envelope is not encoded as this module expects")
    head = text[: -len(b"{}}")]
    digest = hashlib.sha256(head)
    for piece in response:
        digest.update(piece)
    digest.update(b"}")
    signature = key.sign_digest(digest.digest()).encode()
    return b"".join(
        [lead, b'"page_signature":"', signature, b'",', head[len(lead) :], *response, b"}"]
    )


def _paged(
    envelope: ApiResponse, endpoint: str, answers: Sequence[Sequence[bytes]], key: SigningKey
) -> list[bytes]:
    last = len(answers) - 1
    return [
        _signed(
            replace(envelope, endpoint=endpoint, pagination=Pagination(pages=last, current_page=n)),
            answer,
            key,
        )
        for n, answer in enumerate(answers)
    ]


def _chunks(count: int, size: int) -> list[range]:
    """``range(count)`` cut into pages of ``size``; nothing is one empty page."""
    return [range(i, min(i + size, count)) for i in range(0, count, size)] or [range(0)]


def _answer(field: str, items: Sequence[Any]) -> list[bytes]:
    """The ``response`` JSON of a page holding ``items`` under ``field``, as one piece."""
    holding: dict[str, Any] = {field: tuple(items)}
    return [canonical.encode(Answer(**holding))]


def _entity_version(body: bytes) -> int:
    found = _ENTITY_VERSION.search(body)
    return int(found.group(1)) if found else 0


def _envelope(
    kind: Kind, count: int, start: int, end: int, signer: Signer, nonce: str
) -> ApiResponse:
    counts = (EntityCount(protocol="c0", name=kind, count=count),) if count else None
    return replace(
        signer.base(nonce=nonce, timestamp=end),
        entity=entities.PLURALS[kind],
        filters=pages.timestamp_filter(start, end),
        starts_from=start,
        ends_at=end,
        caching=Caching(entity_counts=counts),
    )


class ObjectCache:
    """One cache of objects of ``kind`` over ``[start, end)`` being made: named from
    ``entries`` (at least one, oldest first), then filled by :meth:`entity_page` one page after
    the other, and finished by :meth:`other_pages`."""

    def __init__(
        self, kind: Kind, entries: Sequence[CacheEntry], start: int, end: int, signer: Signer
    ) -> None:
        if not entries:
            raise ValueError("a cache holds at least one object")
        self.kind = kind
        self.entries = entries
        plural = entities.PLURALS[kind]
        cid = pages.cache_id(plural, start, end, ((e.fingerprint, e.last_update) for e in entries))
        self.result = ResultCache(
            response_url=paths.cache_folder(cid), starts_from=start, ends_at=end
        )
        self.page_size = pages.ENTITY_PAGE_SIZES[kind]
        self.pages = len(_chunks(len(entries), self.page_size))
        self._envelope = _envelope(kind, len(entries), start, end, signer, cache_nonce(cid))
        self._key = signer.key
        self._versions: list[int] = []

    def entity_page(self, bodies: Sequence[bytes]) -> tuple[str, bytes]:
        """The next entity page's name and bytes, holding ``bodies``: the stored bytes of the
        next objects of ``entries``, a page's worth."""
        number = len(self._versions) // self.page_size
        expected = min(self.page_size, len(self.entries) - len(self._versions))
        if len(bodies) != expected:
            raise ValueError(f"entity page {number} holds {expected} objects, not {len(bodies)}")
        self._versions.extend(_entity_version(body) for body in bodies)
        plural = entities.PLURALS[self.kind]
        envelope = replace(
            self._envelope,
            endpoint=plural,
            pagination=Pagination(pages=self.pages - 1, current_page=number),
        )
        answer = [b'{"' + plural.encode() + b'":[', b",".join(bodies), b"]}"]
        return f"{number}.json", _signed(envelope, answer, self._key)

    def _index_entries(self) -> list[Any]:
        cls, extra = _INDEX_CLASSES[self.kind], _INDEX_COLUMNS[self.kind]
        return [
            cls(
                fingerprint=e.fingerprint,
                creation=e.creation,
                last_update=e.last_update,
                entity_version=version,
                page_number=n // self.page_size,
                **{name: getattr(e, name) for name in extra},
            )
            for n, (e, version) in enumerate(zip(self.entries, self._versions, strict=True))
        ]

    def other_pages(self) -> dict[str, bytes]:
        """The index and manifest pages, once every entity page was made."""
        if len(self._versions) != len(self.entries):
            raise ValueError("the index and manifests come after every entity page")
        plural = entities.PLURALS[self.kind]
        entries = self._index_entries()
        index_answers = [
            _answer(f"{plural}_index", [entries[i] for i in chunk])
            for chunk in _chunks(len(entries), pages.INDEX_PAGE_SIZES[self.kind])
        ]
        made = _paged(self._envelope, f"{plural}_index", index_answers, self._key)
        files = {f"index/{n}.json": page for n, page in enumerate(made)}
        manifests = [
            PageManifest(
                page_number=n,
                entities=tuple(
                    PageManifestEntity(fingerprint=e.fingerprint, last_update=e.last_update)
                    for e in self.entries[chunk.start : chunk.stop]
                ),
            )
            for n, chunk in enumerate(_chunks(len(self.entries), self.page_size))
        ]
        manifest_answers = [
            _answer(f"{plural}_manifest", [manifests[i] for i in chunk])
            for chunk in _chunks(len(manifests), pages.MANIFEST_PAGE_SIZE)
        ]
        made = _paged(self._envelope, "manifest", manifest_answers, self._key)
        files.update((f"manifest/{n}.json", page) for n, page in enumerate(made))
        return files


def object_files(
    kind: Kind, rows: Sequence[tuple[CacheEntry, bytes]], start: int, end: int, signer: Signer
) -> Built:
    """The whole cache of ``rows`` (each object's entry and stored bytes), held in memory."""
    cache = ObjectCache(kind, [entry for entry, _ in rows], start, end, signer)
    files: dict[str, bytes] = {}
    for at in range(0, len(rows), cache.page_size):
        name, page = cache.entity_page([body for _, body in rows[at : at + cache.page_size]])
        files[name] = page
    files.update(cache.other_pages())
    return Built(kind, cache.result, len(rows), files)


def address_cache(addresses: Sequence[Address], start: int, end: int, signer: Signer) -> Built:
    """The cache of ``addresses`` (arrived in ``[start, end)``, at least one), sanitised.

    Addresses are few (the table is pruned to ``MIM_STORE_ADDRESS_TABLE_MAX``), and served
    sanitised, so they take the entity path of ``mim.pages``.
    """
    if not addresses:
        raise ValueError("a cache holds at least one address")
    contents = ((f"{a.location}/{a.sublocation}/{a.port}", 0) for a in addresses)
    cid = pages.cache_id(entities.PLURALS["address"], start, end, contents)
    envelope = _envelope("address", len(addresses), start, end, signer, cache_nonce(cid))
    built = pages.cache_pages("address", addresses, envelope)
    files = {
        name: canonical.encode(pages.sign_page(page, signer.key)) for name, page in built.items()
    }
    result = ResultCache(response_url=paths.cache_folder(cid), starts_from=start, ends_at=end)
    return Built("address", result, len(addresses), files)


def index_file(
    kind: Kind, results: Iterable[ResultCache], signer: Signer, *, timestamp: int, nonce: str
) -> bytes:
    """An endpoint's signed ``index.json`` listing ``results`` (§11.6)."""
    page = pages.endpoint_index(
        entities.PLURALS[kind], signer.base(nonce=nonce, timestamp=timestamp), tuple(results)
    )
    return canonical.encode(pages.sign_page(page, signer.key))
