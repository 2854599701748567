"""Pre-generated caches: how the head of the network is cut into signed pages (§11.6).

Contract: the cache layout, page sizes and address sanitisation follow §11.6, except that
``pagination.pages`` is the *last page index* (§19.6, §20) and pages are cut with a ceiling division
(an empty result is one empty page). A cache's ID names its slice and its content, so a slice whose
content did not change keeps its ID from one generation to the next.

Pure: the time (``now``) and the objects are parameters; pages come out unsigned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Final, TypeVar

from mim.entities import (
    Address,
    Answer,
    ApiResponse,
    Board,
    BoardIndex,
    Caching,
    Entity,
    EntityCount,
    Key,
    KeyIndex,
    PageManifest,
    PageManifestEntity,
    Pagination,
    Post,
    PostIndex,
    Protocol,
    Provable,
    ResultCache,
    Thread,
    ThreadIndex,
    Truststate,
    TruststateIndex,
    Vote,
    VoteIndex,
)
from mim.envelope import PROTOCOL_C0
from mim.kinds import KINDS, PLURALS, Kind

__all__ = [
    "CACHE_MIN_TAIL_SECONDS",
    "CACHE_SLICE_SECONDS",
    "ENTITY_PAGE_SIZES",
    "INDEX_PAGE_SIZES",
    "MANIFEST_PAGE_SIZE",
    "cache_id",
    "cache_pages",
    "endpoint_index",
    "entity_counts",
    "head_slices",
    "index_entry",
    "sanitise_address",
    "split",
]

T = TypeVar("T")

CACHE_SLICE_SECONDS: Final = 6 * 3600  # CacheDurationHours (§11.6)
#: A last slice shorter than this joins the one before it (§11.6).
CACHE_MIN_TAIL_SECONDS: Final = 3 * 3600
MANIFEST_PAGE_SIZE: Final = 30000  # PageManifests per manifest page (§11.6)
#: Entities per entity page and per index page, by kind (§11.6).
ENTITY_PAGE_SIZES: Final[dict[Kind, int]] = {
    "board": 2000,
    "thread": 400,
    "post": 400,
    "vote": 2000,
    "key": 2000,
    "truststate": 3000,
    "address": 16000,
}
INDEX_PAGE_SIZES: Final[dict[Kind, int]] = {
    "board": 8000,
    "thread": 16000,
    "post": 12000,
    "vote": 4000,
    "key": 20000,
    "truststate": 15000,
    "address": 16000,
}


# --------------------------------------------------------------------------- slicing (§11.6)


def split(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` cut into pages of ``size``; an empty sequence is one empty page."""
    if size <= 0:
        raise ValueError("a page size is positive")
    return [items[i : i + size] for i in range(0, len(items), size)] or [items[:0]]


def head_slices(
    now: int, head_seconds: int, slice_seconds: int = CACHE_SLICE_SECONDS
) -> list[tuple[int, int]]:
    """The cache slices over the network head: aligned ``slice_seconds`` blocks ending at ``now``.

    Blocks start on multiples of ``slice_seconds`` so that a slice keeps its bounds (and its
    cache ID, when its content is unchanged) from one generation to the next; the first starts at
    the head's start, and a last block shorter than ``CACHE_MIN_TAIL_SECONDS`` joins the one
    before it (the reference's "drop a slice reaching over 3 h into the future").
    """
    start = now - head_seconds
    edges = list(range((start // slice_seconds + 1) * slice_seconds, now, slice_seconds))
    bounds = [start, *edges, now]
    slices = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    tail = min(CACHE_MIN_TAIL_SECONDS, slice_seconds // 2)
    if len(slices) > 1 and slices[-1][1] - slices[-1][0] < tail:
        slices[-2:] = [(slices[-2][0], now)]
    return slices


def cache_id(plural: str, start: int, end: int, contents: Iterable[tuple[str, int]]) -> str:
    """A 64-hex cache ID naming a slice and its content (fingerprint, last_update pairs)."""
    digest = hashlib.sha256(f"{plural}:{start}:{end}".encode())
    for fingerprint, last_update in contents:
        digest.update(f":{fingerprint}/{last_update}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


# --------------------------------------------------------------------------- page contents


def sanitise_address(address: Address) -> Address:
    """An address as a node serves it: only its primary key and version (§11.6, §0 fact 17)."""
    return Address(
        location=address.location,
        sublocation=address.sublocation,
        port=address.port,
        protocol=Protocol(subprotocols=()),
        entity_version=address.entity_version,
        realm_id=address.realm_id,
    )


def index_entry(obj: Provable, page_number: int) -> Any:
    """The compact index form of an entity (§2.9); ``Owner``/``Parent`` stay empty as served."""
    common: dict[str, Any] = {
        "fingerprint": obj.fingerprint,
        "creation": obj.creation,
        "last_update": obj.last_update,
        "entity_version": obj.entity_version,
        "page_number": page_number,
    }
    if isinstance(obj, Board):
        return BoardIndex(**common)
    if isinstance(obj, Thread):
        return ThreadIndex(board=obj.board, **common)
    if isinstance(obj, Post):
        return PostIndex(board=obj.board, thread=obj.thread, **common)
    if isinstance(obj, Vote):
        return VoteIndex(board=obj.board, thread=obj.thread, target=obj.target, **common)
    if isinstance(obj, Key):
        return KeyIndex(**common)
    if isinstance(obj, Truststate):
        return TruststateIndex(target=obj.target, **common)
    raise TypeError(type(obj).__name__)


def _answer(plural: str, suffix: str, items: Sequence[Any]) -> Answer:
    field = f"{plural}{suffix}"
    return Answer(**{field: tuple(items)})


def entity_counts(objects: Iterable[Entity]) -> tuple[EntityCount, ...]:
    """``caching.entity_counts``: one count per kind present, in the reference's kind order."""
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj.kind] = counts.get(obj.kind, 0) + 1
    return tuple(
        EntityCount(protocol=PROTOCOL_C0, name=kind, count=counts[kind])
        for kind in KINDS
        if kind in counts
    )


def _paged(base: ApiResponse, endpoint: str, answers: Sequence[Answer]) -> list[ApiResponse]:
    last = len(answers) - 1
    return [
        replace(
            base,
            endpoint=endpoint,
            pagination=Pagination(pages=last, current_page=n),
            response=answer,
        )
        for n, answer in enumerate(answers)
    ]


def cache_pages(
    kind: Kind, objects: Sequence[Entity], base: ApiResponse, *, post: bool = False
) -> dict[str, ApiResponse]:
    """The unsigned pages of one cache or POST container, by path relative to its folder.

    ``base`` carries the prefilled envelope, the timestamp filter, ``starts_from``/``ends_at`` and
    the counts. Entity pages are ``<N>.json``; provable kinds also get ``index/<N>.json`` and
    ``manifest/<N>.json`` (§11.6). Addresses are sanitised.
    """
    plural = PLURALS[kind]
    suffix = "_post" if post else ""
    base = replace(base, entity=plural)
    if kind == "address":
        objects = [sanitise_address(a) for a in objects if isinstance(a, Address)]
    chunks = split(objects, ENTITY_PAGE_SIZES[kind])
    pages = {
        f"{n}.json": page
        for n, page in enumerate(
            _paged(base, plural + suffix, [_answer(plural, "", chunk) for chunk in chunks])
        )
    }
    if kind == "address":
        return pages
    entries = [
        index_entry(obj, n)
        for n, chunk in enumerate(chunks)
        for obj in chunk
        if not isinstance(obj, Address)
    ]
    index_answers = [
        _answer(plural, "_index", chunk) for chunk in split(entries, INDEX_PAGE_SIZES[kind])
    ]
    for n, page in enumerate(_paged(base, f"{plural}_index{suffix}", index_answers)):
        pages[f"index/{n}.json"] = page
    manifests = [
        PageManifest(
            page_number=n,
            entities=tuple(
                PageManifestEntity(fingerprint=o.fingerprint, last_update=o.last_update)
                for o in chunk
                if not isinstance(o, Address)
            ),
        )
        for n, chunk in enumerate(chunks)
    ]
    manifest_answers = [
        _answer(plural, "_manifest", chunk) for chunk in split(manifests, MANIFEST_PAGE_SIZE)
    ]
    for n, page in enumerate(_paged(base, "manifest" + suffix, manifest_answers)):
        pages[f"manifest/{n}.json"] = page
    return pages


def endpoint_index(plural: str, base: ApiResponse, results: Sequence[ResultCache]) -> ApiResponse:
    """The unsigned ``index.json`` of an endpoint: its caches over the head (§11.6)."""
    return replace(
        base,
        entity=plural,
        endpoint=plural,
        caching=Caching(pregenerated=True),
        results=tuple(results),
    )
