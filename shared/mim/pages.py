"""Pages: the signed ``ApiResponse`` envelopes a node serves and sends (PROTOCOL.md §6.1, §11).

Contract: a page we sign verifies under §6.1 with ``page_signature`` removed and ``proof_of_work``
blanked (the request quirk: requests are signed before their PoW is added, and response pages carry
none, so one rule verifies both); a request we build passes the server checks of §11.4; the cache
layout, page sizes and address sanitisation follow §11.6, except that ``pagination.pages`` is the
*last page index* (§19.6, §20) and pages are cut with a ceiling division (an empty result is one
empty page).

Pure: time (``now``), nonces and the nonce memory are parameters; nothing here reads a clock or a
random source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from mim import canonical, signing
from mim import pow as mim_pow
from mim.entities import (
    Address,
    Answer,
    ApiResponse,
    Board,
    BoardIndex,
    Caching,
    Client,
    Entity,
    EntityCount,
    Filter,
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
    Subprotocol,
    Thread,
    ThreadIndex,
    Truststate,
    TruststateIndex,
    Vote,
    VoteIndex,
)
from mim.errors import BadSignature, InvalidObject
from mim.kinds import KINDS, PLURALS, PROVABLE_KINDS, Kind
from mim.nodes import LocationType, NodeType

__all__ = [
    "CACHE_SLICE_SECONDS",
    "CLIENT",
    "CLOCK_SKEW_SECONDS",
    "EMBEDS",
    "ENTITY_PAGE_SIZES",
    "INDEX_PAGE_SIZES",
    "MANIFEST_PAGE_SIZE",
    "NODE_TYPE_LIVE",
    "NODE_TYPE_STATIC",
    "NONCE_MAX",
    "PROTOCOL",
    "REQUEST_MIN_POW",
    "Query",
    "RequestRefused",
    "build_request",
    "cache_id",
    "cache_pages",
    "check_request",
    "endpoint_index",
    "entity_counts",
    "head_slices",
    "index_entry",
    "node_id",
    "node_page",
    "parse_filters",
    "prefill",
    "sanitise_address",
    "sign_page",
    "signed_text",
    "split",
    "timestamp_filter",
    "verify_page",
]

T = TypeVar("T")

REQUEST_MIN_POW: Final = 15  # backend ApiResponse minimum: 21 − 6 (§7.4)
CLOCK_SKEW_SECONDS: Final = 20 * 60  # request timestamp window, ± (§11.4, §16)
NONCE_MAX: Final = 64  # bytes of a request nonce (§11.4, §9.3)
CACHE_SLICE_SECONDS: Final = 6 * 3600  # CacheDurationHours (§11.6)
CACHE_MIN_TAIL_SECONDS: Final = (
    3 * 3600
)  # a last slice shorter than this joins the one before (§11.6)
MANIFEST_PAGE_SIZE: Final = 30000  # PageManifests per manifest page (§11.6)
NODE_TYPE_LIVE: Final = NodeType.LIVE  # what this node declares itself (§10.3)
NODE_TYPE_STATIC: Final = NodeType.STATIC  # what a static export declares (§10.3)
PROTOCOL_C0: Final = "c0"
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
#: Values an ``embed`` filter may name (§11.4).
EMBEDS: Final = frozenset({"threads", "posts", "votes", "keys"})
#: dev.14 self-description (§2.8).
PROTOCOL: Final = Protocol(
    version_major=1,
    version_minor=0,
    subprotocols=(
        Subprotocol(
            name=PROTOCOL_C0,
            version_major=1,
            version_minor=0,
            supported_entities=PROVABLE_KINDS,
        ),
    ),
)
CLIENT: Final = Client(version_major=2, version_minor=0, version_patch=0, name="Aether")


class RequestRefused(InvalidObject):
    """A POST request the server refuses under §11.4 (answered with 400)."""

    stage = "request"
    status = 400


# --------------------------------------------------------------------------- identity, envelope


def node_id(public_key_hex: str) -> str:
    """The node ID: SHA-256 of the hex public key string (§0 fact 12)."""
    return signing.key_fingerprint(public_key_hex)


def prefill(public_key_hex: str, *, port: int, node_type: int, nonce: str, now: int) -> ApiResponse:
    """A page with the fields ``Prefill`` sets (§11.5); our own address carries no location."""
    address = Address(
        location_type=LocationType.IPV4,
        port=port,
        type=node_type,
        protocol=PROTOCOL,
        client=CLIENT,
        entity_version=1,
    )
    return ApiResponse(
        node_public_key=public_key_hex,
        nonce=nonce,
        entity_version=1,
        address=address,
        timestamp=now,
    )


def node_page(base: ApiResponse) -> ApiResponse:
    """The unsigned node page (``GET /v0/node``, node POST answer)."""
    return replace(base, entity="node", endpoint="node")


# --------------------------------------------------------------------------- signatures (§6.1)


def signed_text(page: ApiResponse) -> str:
    """What a page signature covers: the page without signature and with ``proof_of_work`` ""."""
    return canonical.dumps(replace(page, page_signature="", proof_of_work=""))


def sign_page(page: ApiResponse, key: signing.SigningKey) -> ApiResponse:
    """``page`` signed by the node key, which becomes its ``node_public_key``."""
    page = replace(page, node_public_key=key.public_hex, page_signature="")
    return replace(page, page_signature=key.sign(signed_text(page)))


def verify_page(page: ApiResponse) -> str:
    """The signer's node ID, or ``BadSignature`` unless the page signature verifies (§6.1)."""
    if not page.node_public_key:
        raise BadSignature("node_public_key", "public_key.missing", "empty node_public_key")
    signing.check(
        signed_text(page),
        page.page_signature,
        page.node_public_key,
        field="page_signature",
        key_field="node_public_key",
    )
    return node_id(page.node_public_key)


def _pow_text(page: ApiResponse) -> str:
    """What a request PoW covers: the signed page with ``proof_of_work`` blanked (§4.1 PoW row)."""
    return canonical.dumps(replace(page, proof_of_work=""))


def build_request(
    page: ApiResponse,
    key: signing.SigningKey,
    minter: mim_pow.Minter,
    difficulty: int = REQUEST_MIN_POW,
) -> ApiResponse:
    """A POST request as the reference client sends it: sign, then PoW signed by the node key."""
    signed = sign_page(replace(page, proof_of_work=""), key)
    work = minter(_pow_text(signed), difficulty)
    return replace(signed, proof_of_work=mim_pow.sign_prefix(work, key.sign))


# --------------------------------------------------------------------------- request checks (§11.4)


def _refuse(field: str, rule: str, detail: str) -> RequestRefused:
    return RequestRefused(field, rule, detail)


def _check_address(page: ApiResponse) -> None:
    address = page.address
    if address.port <= 0:
        raise _refuse("address.port", "request.port", "port must be over 0")
    if address.type == 0:
        raise _refuse("address.type", "request.node_type", "node type must not be 0")
    if address.client.name != CLIENT.name:
        raise _refuse(
            "address.client.name",
            "request.client",
            f"client name {address.client.name[:32]!r}, need {CLIENT.name!r}",
        )
    subprotocols = address.protocol.subprotocols or ()
    if not any(sub.name == PROTOCOL_C0 for sub in subprotocols):
        raise _refuse("address.protocol.subprotocols", "request.subprotocol", "no c0 subprotocol")


def _check_freshness(page: ApiResponse, now: int) -> None:
    if not page.node_public_key:
        raise _refuse("node_public_key", "request.public_key", "empty")
    if not page.nonce:
        raise _refuse("nonce", "request.nonce", "empty")
    if len(page.nonce.encode("utf-8", "surrogatepass")) > NONCE_MAX:
        raise _refuse("nonce", "request.nonce", f"over {NONCE_MAX} bytes")
    if not page.timestamp:
        raise _refuse("timestamp", "request.timestamp", "empty")
    skew = page.timestamp - now
    if not -CLOCK_SKEW_SECONDS < skew < CLOCK_SKEW_SECONDS:
        raise _refuse(
            "timestamp",
            "request.timestamp",
            f"{skew:+d} s from server time, outside ±{CLOCK_SKEW_SECONDS} s",
        )


def check_request(
    page: ApiResponse,
    *,
    now: int,
    nonce_seen: Callable[[str, str], bool],
    min_pow: int = REQUEST_MIN_POW,
) -> None:
    """Refuse a POST request that fails §11.4, naming the first broken rule.

    ``nonce_seen(public_key, nonce)`` answers whether the nonce was used before by that key and
    remembers it; it is asked last, so a request refused for another reason spends no nonce.
    Page signatures of requests are not checked (the reference does not either).
    """
    _check_address(page)
    _check_freshness(page, now)
    if page.entity_version != 1:
        raise _refuse("entity_version", "request.entity_version", "must be 1")
    try:
        mim_pow.check(
            _pow_text(page),
            page.proof_of_work,
            page.node_public_key,
            min_pow,
            key_field="node_public_key",
        )
    except InvalidObject as exc:
        raise _refuse(exc.field, exc.rule, exc.detail) from exc
    if nonce_seen(page.node_public_key, page.nonce):
        raise _refuse("nonce", "request.nonce_reused", "nonce already used by this key")


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """What a POST request's filters ask for (§11.4)."""

    start: int
    end: int
    fingerprints: tuple[str, ...] = ()
    embeds: tuple[str, ...] = ()


def _timestamp_value(text: str, index: int) -> int:
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise _refuse(f"filters.timestamp[{index}]", "filter.timestamp", "not an integer")
    value = int(text)
    if not 0 <= value < 2**63:
        raise _refuse(f"filters.timestamp[{index}]", "filter.timestamp", "out of range")
    return value


def parse_filters(filters: Iterable[Filter] | None, *, now: int, head_seconds: int) -> Query:
    """The query of a request's filters; a timestamp filter needs two values (§20.7)."""
    start = end = 0
    timed = False
    fingerprints: list[str] = []
    embeds: list[str] = []
    for item in filters or ():
        values = item.values or ()
        if item.type == "timestamp":
            if len(values) != 2:  # [start, end]
                raise _refuse("filters.timestamp", "filter.timestamp_values", "needs 2 values")
            start, end = (_timestamp_value(v, i) for i, v in enumerate(values))
            timed = bool(start or end)
        elif item.type == "fingerprint":
            fingerprints.extend(values)
        elif item.type == "embed":
            unknown = [v for v in values if v not in EMBEDS]
            if unknown:
                raise _refuse("filters.embed", "filter.embed", f"unknown embed {unknown[0][:32]!r}")
            embeds.extend(values)
        elif item.type or values:
            raise _refuse("filters.type", "filter.type", f"unknown filter {item.type[:32]!r}")
    if timed and fingerprints:
        raise _refuse("filters", "filter.exclusive", "timestamp and fingerprint filters together")
    start = start or now - head_seconds
    end = end or now
    if start > end:
        raise _refuse("filters.timestamp", "filter.timestamp_order", "start is after end")
    return Query(start=start, end=end, fingerprints=tuple(fingerprints), embeds=tuple(embeds))


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


def timestamp_filter(start: int, end: int) -> tuple[Filter, ...]:
    """``filters`` of a page covering [start, end]."""
    return (Filter(type="timestamp", values=(str(start), str(end))),)
