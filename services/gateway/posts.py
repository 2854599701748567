"""POST requests of the Mim API (PROTOCOL.md §11.4, §11.7): check, query the store, answer.

A request must say ``Content-Type: application/json``, decode as an ``ApiResponse`` and pass
:func:`mim.pages.check_request`; its filters become a :class:`mim.pages.Query` (at most
``filter_max_values`` values a filter, each embed once); then its nonce is spent in the node's
shared memory (:mod:`services.gateway.nonces`). The sender's address, at the connection's IP and
checked by :func:`relay.location.checked`, is reported first-party to the store (§13.6).

An answer holds at most ``post_answer_max_objects`` objects and ``post_answer_max_bytes`` bytes
of them, embeds included; each query asks the store for no more than what is left, and a request
whose answer would pass either bound gets 503 (the caches serve the same objects after the next
generation). Answers that fit one page carry the objects inline; larger ones are written as a
container (:mod:`services.gateway.containers`) and named in ``results``. A time range of one kind
first names the earlier containers that cover it and reads only what they do not hold
(:mod:`services.gateway.chains`). A full nonce memory or container store answers 503 with
``Retry-After``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from fastapi import Request, Response

from mim import canonical, pages
from mim.entities import (
    PLURALS,
    Address,
    Answer,
    ApiResponse,
    Caching,
    Entity,
    Kind,
    ResultCache,
    entity_class,
)
from mim.envelope import PROTOCOL_C0
from mim.errors import MimError
from mim.nodes import NodeType
from relay import AddressRefused, BusError, BusUnavailable, RelayError, StateFull
from relay.db import addresses, objects
from relay.db.objects import ParentColumn, StoredObject
from relay.first_party import report
from relay.location import checked
from relay.logging import get_logger
from services.gateway import chains, metrics
from services.gateway.answers import json_bytes, refusal, refused
from services.gateway.state import Gateway

__all__ = ["answer", "read_body"]

_log = get_logger(__name__)
_SINGULAR: Final[dict[str, Kind]] = {plural: kind for kind, plural in PLURALS.items()}
_ADDRESS_ANSWER: Final = (  # node type, at most (§11.7)
    (NodeType.LIVE, 80),
    (NodeType.LIVE_BOOTSTRAP, 10),
    (NodeType.STATIC, 10),
)
# what an ``embed`` adds to an answer, and the column that links it to what it embeds into
_CHILDREN: Final[dict[tuple[str, str], tuple[Kind, ParentColumn]]] = {
    ("board", "threads"): ("thread", "board"),
    ("thread", "posts"): ("post", "thread"),
    ("post", "votes"): ("vote", "target"),
}


class BodyTooLarge(Exception):
    """The request body passed the size limit."""


class _TooLarge(Exception):
    """The answer would pass one of its bounds."""


class _Budget:
    """What is left of one answer's bounds, in objects and bytes."""

    def __init__(self, objects: int, size: int) -> None:
        self.objects = objects
        self.bytes = size

    @property
    def limit(self) -> int:
        """Rows to ask the store for: one more than fits tells that the answer would not."""
        return self.objects + 1

    def take(self, rows: Sequence[StoredObject]) -> list[Entity]:
        self.objects -= len(rows)
        self.bytes -= sum(len(r.body) for r in rows)
        if self.objects < 0 or self.bytes < 0:
            raise _TooLarge
        return _decoded(rows)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ``BodyTooLarge`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _refused(rule_family: str) -> None:
    metrics.POSTS_REJECTED.labels(rule_family).inc()


async def answer(gw: Gateway, request: Request, what: str) -> Response:
    """Check the request, then answer a node, address or entity POST."""
    checked_request = await _checked(gw, request)
    if isinstance(checked_request, Response):
        return checked_request
    page, query, now = checked_request
    await _record_sender(gw, request, page, now)
    try:
        reply = await _reply(gw, what, query, now)
    except _TooLarge:
        _refused("answer")
        reason = (
            f"over {gw.settings.post_answer_max_objects} objects or"
            f" {gw.settings.post_answer_max_bytes} bytes; read the caches"
        )
        retry = str(gw.settings.busy_retry_after_seconds)
        return refusal(503, "filters", "answer.size", reason, **{"Retry-After": retry})
    except (StateFull, BusUnavailable, BusError) as exc:
        return _busy(gw, "containers", exc)
    return json_bytes(request, gw.signed(reply), min_gzip=gw.settings.gzip_min_bytes)


async def _checked(
    gw: Gateway, request: Request
) -> tuple[ApiResponse, pages.Query, int] | Response:
    """The request page, its query and the time it was checked at; or the refusal."""
    if request.headers.getlist("content-type")[:1] != ["application/json"]:
        _refused("content_type")
        return refusal(400, "content-type", "request.content_type", "need application/json")
    try:
        body = await read_body(request, gw.settings.max_body_bytes)
    except BodyTooLarge:
        _refused("body_size")
        return refusal(413, "body", "http.body_size", f"over {gw.settings.max_body_bytes} bytes")
    now = int(time.time())
    try:
        page = canonical.loads(ApiResponse, body)
        pages.check_request(page, now=now, min_pow=gw.settings.post_min_pow)
        query = pages.parse_filters(
            page.filters,
            now=now,
            head_seconds=gw.head_seconds,
            max_values=gw.settings.filter_max_values,
        )
        await gw.nonces.spend(page.node_public_key, page.nonce, now)
    except MimError as exc:
        _refused(exc.rule.split(".")[0])
        return refused(exc, 400)
    except (StateFull, BusUnavailable, BusError) as exc:
        return _busy(gw, "nonces", exc)
    return page, query, now


def _busy(gw: Gateway, bucket: str, exc: RelayError) -> Response:
    """503 for shared state that is full or cannot be reached."""
    _refused(bucket)
    full = isinstance(exc, StateFull)
    if full:
        metrics.STATE_FULL.labels(bucket).inc()
    rule = f"{bucket}.{'full' if full else 'unavailable'}"
    retry = str(gw.settings.busy_retry_after_seconds)
    return refusal(503, bucket, rule, str(exc), cause=repr(exc), **{"Retry-After": retry})


async def _reply(gw: Gateway, what: str, query: pages.Query, now: int) -> ApiResponse:
    if what == "node":
        return pages.node_page(gw.base(now))
    if what == "address":
        return await _addresses(gw, query, now)
    budget = _Budget(gw.settings.post_answer_max_objects, gw.settings.post_answer_max_bytes)
    return await _entities(gw, _SINGULAR[what], query, now, budget)


async def _record_sender(gw: Gateway, request: Request, page: ApiResponse, now: int) -> None:
    """Report the sender as a first-party address at the connection's IP (§11.4, §13.6)."""
    host = request.client.host if request.client else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    try:
        address = checked(
            replace(page.address, location=str(ip), sublocation="", type=pages.NODE_TYPE_LIVE),
            gw.settings.address_rules(),
        )
    except AddressRefused as exc:
        _log.info("sender_not_recorded", rule=exc.rule, reason=exc.reason)
        return
    try:
        await report(gw.nc.jetstream(), gw.layout, address, last_ping=now)
    except RelayError as exc:
        _log.warning("sender_not_recorded", error=str(exc))


def _decoded(rows: Sequence[StoredObject]) -> list[Entity]:
    return [canonical.loads(entity_class(r.kind), r.body) for r in rows]


def _head_start(gw: Gateway) -> int:
    """The oldest stamp a POST answer reaches back to (the network head)."""
    return int(time.time()) - gw.head_seconds


def _window_start(gw: Gateway, query: pages.Query) -> int:
    """Where a time range's read starts: within the head, and no earlier than the live tail.

    The caches hold what was committed when they were read; an object stamped earlier but
    committed later is in no cache, so the live tail reaches back over that gap."""
    tail_start = gw.caches.covered_to - gw.settings.live_tail_overlap_seconds
    return max(query.start, _head_start(gw), tail_start)


async def _select(gw: Gateway, kind: Kind, query: pages.Query, budget: _Budget) -> list[Entity]:
    """The objects the query names, within the head."""
    if query.fingerprints:
        rows = await objects.with_fingerprints(
            gw.read_pool,
            kind,
            query.fingerprints,
            referenced_since=_head_start(gw),
            limit=budget.limit,
        )
    else:
        start = _window_start(gw, query)
        rows = await objects.in_window(gw.read_pool, kind, start, query.end, limit=budget.limit)
    return budget.take(rows)


@dataclass(frozen=True, slots=True)
class _Ranged:
    """A plain time range read after the chain of earlier containers that covers its start."""

    links: list[chains.Link]
    found: list[Entity]
    read: chains.Link  # what this read holds, to be remembered if it becomes a container


async def _links(gw: Gateway, kind: Kind) -> list[chains.Link]:
    try:
        return await chains.load(gw.containers.registry, kind)
    except RelayError as exc:
        _log.warning("container_links_unavailable", kind=kind, error=str(exc))
        return []


async def _ranged(
    gw: Gateway, kind: Kind, query: pages.Query, now: int, budget: _Budget
) -> _Ranged:
    """A time range of one kind (§11.7 step 1): the chain, then the database from its end, and
    for each link what committed after it was read (:mod:`services.gateway.chains`)."""
    start = _window_start(gw, query)
    links = chains.chain(await _links(gw, kind), start, query.end, now)
    begin = links[-1].end + 1 if links else start  # the chain holds its end second
    floor = await objects.snapshot_floor(gw.read_pool)
    read_at = int(time.time())
    rows = await objects.in_window(gw.read_pool, kind, begin, query.end, limit=budget.limit)
    late = chains.late(links, start, gw.settings.live_tail_overlap_seconds)
    count = 0
    for again in late:
        since = await objects.committed_since(
            gw.read_pool, kind, again.start, again.link.end, again.floor, limit=budget.limit
        )
        count += len(since)
        rows += since
    if links:
        unique = {(r.fingerprint, r.last_update): r for r in rows}
        rows = sorted(unique.values(), key=lambda r: (r.last_referenced, r.fingerprint))
        metrics.CONTAINERS_REUSED.inc(len(links))
        metrics.CONTAINERS_LATE.inc(count)
    found = budget.take(rows)
    absorbed = tuple((x.link.folder, x.floor, x.start) for x in late)
    read = chains.Link("", begin, min(query.end, read_at), now, len(found), floor, absorbed)
    return _Ranged(links, found, read)


async def _embedded(
    gw: Gateway, kind: Kind, found: Sequence[Entity], embeds: Sequence[str], budget: _Budget
) -> list[Entity]:
    """Related objects the ``embed`` filter asks for (§11.4); each embed is asked once."""
    extra: list[Entity] = []
    fingerprints = [getattr(o, "fingerprint", "") for o in found]
    for embed in embeds:
        link = _CHILDREN.get((kind, embed))
        if link is None:
            continue
        child, column = link
        rows = await objects.children(gw.read_pool, child, column, fingerprints, limit=budget.limit)
        extra.extend(budget.take(rows))
    if "keys" in embeds:
        # a Key is found by its public key: owners name keys by the key's hash, not its fingerprint
        public_keys = sorted({getattr(o, "owner_publickey", "") for o in [*found, *extra]} - {""})
        rows = await objects.keys_of(gw.read_pool, public_keys, limit=budget.limit)
        extra.extend(budget.take(rows))
    return extra


async def _entities(
    gw: Gateway, kind: Kind, query: pages.Query, now: int, budget: _Budget
) -> ApiResponse:
    plain = not query.fingerprints and not query.embeds
    ranged = await _ranged(gw, kind, query, now, budget) if plain else None
    found = ranged.found if ranged else await _select(gw, kind, query, budget)
    links = ranged.links if ranged else []
    extra = await _embedded(gw, kind, found, query.embeds, budget)
    groups: dict[Kind, list[Entity]] = {kind: list(found)}
    for obj in extra:
        groups.setdefault(obj.kind, []).append(obj)
    own_counts = pages.entity_counts([*found, *extra])
    base = replace(
        gw.base(now),
        filters=pages.timestamp_filter(query.start, query.end),
        caching=Caching(entity_counts=own_counts),
    )
    counts = chains.merged_counts(own_counts, kind, PROTOCOL_C0, sum(x.count for x in links))
    face = replace(
        base,
        entity=PLURALS[kind],
        endpoint="post_response",
        ends_at=query.end,
        caching=Caching(entity_counts=counts),
    )
    results = [
        ResultCache(response_url=x.folder, starts_from=x.start, ends_at=x.end) for x in links
    ]
    fits = all(len(objs) <= pages.ENTITY_PAGE_SIZES[k] for k, objs in groups.items())
    if fits:
        inline = {PLURALS[k]: tuple(objs) for k, objs in groups.items() if objs}
        face = replace(face, response=Answer(**inline))  # type: ignore[arg-type]
    else:
        start = ranged.read.start if links and ranged else query.start
        for k, objs in groups.items():
            if objs:
                results.append(await _container(gw, k, objs, base, start, query.end))
        if ranged:
            read = replace(ranged.read, folder=results[-1].response_url)
            await _remember(gw, kind, read, now)
    if not results:
        return face
    return replace(face, starts_from=min(r.starts_from for r in results), results=tuple(results))


async def _remember(gw: Gateway, kind: Kind, link: chains.Link, now: int) -> None:
    """Offer a new container for reuse; an answer does not fail if it cannot be."""
    try:
        await chains.remember(gw.containers.registry, kind, link, now)
    except RelayError as exc:
        _log.warning("container_link_not_kept", kind=kind, error=str(exc))


async def _container(
    gw: Gateway, kind: Kind, objects: Sequence[Entity], base: ApiResponse, start: int, end: int
) -> ResultCache:
    """Write one multi-page answer as a container of the node and name it."""
    container_base = replace(base, starts_from=start, ends_at=end)
    built = pages.cache_pages(kind, objects, container_base, post=True)
    folder = await gw.containers.write({rel: gw.signed(page) for rel, page in built.items()})
    return ResultCache(response_url=folder, starts_from=start, ends_at=end)


async def _addresses(gw: Gateway, query: pages.Query, now: int) -> ApiResponse:
    """Up to 100 recently pinged addresses, sanitised (§11.7)."""
    stored = await addresses.recent(gw.read_pool, limit=1000)
    recent = [
        canonical.loads(Address, a.body) for a in stored if query.start <= a.last_ping <= query.end
    ]
    chosen = [
        a
        for node_type, most in _ADDRESS_ANSWER
        for a in [x for x in recent if x.type == node_type][:most]
    ]
    face = replace(
        gw.base(now),
        entity="addresses",
        endpoint="post_response",
        filters=pages.timestamp_filter(query.start, query.end),
        caching=Caching(entity_counts=pages.entity_counts(chosen)),
        ends_at=query.end,
    )
    if not chosen:
        return face
    return replace(
        face, response=Answer(addresses=tuple(pages.sanitise_address(a) for a in chosen))
    )
