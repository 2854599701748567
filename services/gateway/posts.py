"""POST requests of the Mim API (PROTOCOL.md §11.4, §11.7): check, query the store, answer.

A request must say ``Content-Type: application/json``, decode as an ``ApiResponse`` and pass
:func:`mim.pages.check_request`; its filters become a :class:`mim.pages.Query`. The sender's
address is then reported first-party to the store (§13.6). Answers that fit one page carry the
objects inline; larger ones are written as a container under ``/v0/responses/post_<id>/`` and
named in ``results``.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from fastapi import Request, Response

from mim import canonical, pages, paths
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
from mim.errors import MimError
from relay import RelayError
from relay.db import addresses, objects
from relay.db.objects import ParentColumn, StoredObject
from relay.first_party import report
from relay.logging import get_logger
from services.gateway import metrics
from services.gateway.answers import json_bytes, refusal, refused
from services.gateway.state import Gateway

__all__ = ["answer", "read_body"]

_log = get_logger(__name__)
_SINGULAR: Final[dict[str, Kind]] = {plural: kind for kind, plural in PLURALS.items()}
_RESPONSE_LIFE_SECONDS: Final = 60 * 60  # containers stay reachable for an hour (§11.7)
_ADDRESS_ANSWER: Final = ((2, 80), (3, 10), (255, 10))  # node type, at most (§11.7)
# what an ``embed`` adds to an answer, and the column that links it to what it embeds into
_CHILDREN: Final[dict[tuple[str, str], tuple[Kind, ParentColumn]]] = {
    ("board", "threads"): ("thread", "board"),
    ("thread", "posts"): ("post", "thread"),
    ("post", "votes"): ("vote", "target"),
}


class BodyTooLarge(Exception):
    """The request body passed the size limit."""


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
        pages.check_request(
            page, now=now, nonce_seen=gw.nonces.seen, min_pow=gw.settings.post_min_pow
        )
        query = pages.parse_filters(page.filters, now=now, head_seconds=gw.head_seconds)
    except MimError as exc:
        _refused(exc.rule.split(".")[0])
        return refused(exc, 400)
    await _record_sender(gw, request, page, now)
    if what == "node":
        reply = pages.node_page(gw.base(now))
    elif what == "address":
        reply = await _addresses(gw, query, now)
    else:
        reply = await _entities(gw, _SINGULAR[what], query, now)
    return json_bytes(request, gw.signed(reply), min_gzip=gw.settings.gzip_min_bytes)


async def _record_sender(gw: Gateway, request: Request, page: ApiResponse, now: int) -> None:
    """Report the sender as a first-party address at the connection's IP (§11.4, §13.6)."""
    host = request.client.host if request.client else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    address = replace(
        page.address,
        location=str(ip),
        sublocation="",
        location_type=6 if ip.version == 6 else 4,  # §10.3 location types
        type=pages.NODE_TYPE_LIVE,
    )
    try:
        await report(gw.nc.jetstream(), gw.layout, address, last_ping=now)
    except RelayError as exc:
        _log.warning("sender_not_recorded", error=str(exc))


def _decoded(rows: Sequence[StoredObject]) -> list[Entity]:
    return [canonical.loads(entity_class(r.kind), r.body) for r in rows]


async def _select(gw: Gateway, kind: Kind, query: pages.Query) -> list[Entity]:
    """The objects the query names, within the head; time ranges start at the last generation."""
    head_start = int(time.time()) - gw.head_seconds
    if query.fingerprints:
        rows = await objects.with_fingerprints(
            gw.read_pool, kind, query.fingerprints, referenced_since=head_start
        )
    else:
        # The caches hold what was committed when they were read; an object stamped earlier but
        # committed later is in no cache, so the live tail reaches back over that gap.
        tail_start = gw.tree.generated_at - gw.settings.live_tail_overlap_seconds
        start = max(query.start, head_start, tail_start)
        rows = await objects.in_window(gw.read_pool, kind, start, query.end)
    return _decoded(rows)


async def _embedded(
    gw: Gateway, kind: Kind, found: Sequence[Entity], embeds: Sequence[str]
) -> list[Entity]:
    """Related objects the ``embed`` filter asks for (§11.4)."""
    extra: list[Entity] = []
    fingerprints = [getattr(o, "fingerprint", "") for o in found]
    for embed in embeds:
        link = _CHILDREN.get((kind, embed))
        if link is None:
            continue
        child, column = link
        extra.extend(_decoded(await objects.children(gw.read_pool, child, column, fingerprints)))
    if "keys" in embeds:
        # a Key is found by its public key: owners name keys by the key's hash, not its fingerprint
        public_keys = sorted({getattr(o, "owner_publickey", "") for o in [*found, *extra]} - {""})
        extra.extend(_decoded(await objects.keys_of(gw.read_pool, public_keys)))
    return extra


async def _entities(gw: Gateway, kind: Kind, query: pages.Query, now: int) -> ApiResponse:
    found = await _select(gw, kind, query)
    extra = await _embedded(gw, kind, found, query.embeds)
    groups: dict[Kind, list[Entity]] = {kind: list(found)}
    for obj in extra:
        groups.setdefault(obj.kind, []).append(obj)
    base = replace(
        gw.base(now),
        filters=pages.timestamp_filter(query.start, query.end),
        caching=Caching(entity_counts=pages.entity_counts([*found, *extra])),
    )
    fits = all(len(objs) <= pages.ENTITY_PAGE_SIZES[k] for k, objs in groups.items())
    face = replace(base, entity=PLURALS[kind], endpoint="post_response", ends_at=query.end)
    if fits:
        inline = {PLURALS[k]: tuple(objs) for k, objs in groups.items() if objs}
        return replace(face, response=Answer(**inline))  # type: ignore[arg-type]
    results = [_container(gw, k, objs, base, query) for k, objs in groups.items() if objs]
    return replace(face, starts_from=query.start, results=tuple(results))


def _container(
    gw: Gateway, kind: Kind, objects: Sequence[Entity], base: ApiResponse, query: pages.Query
) -> ResultCache:
    """Write one multi-page answer under ``v0/responses/post_<id>/`` and name it."""
    rid = secrets.token_hex(32)
    expires = time.monotonic() + _RESPONSE_LIFE_SECONDS
    for old in [p for p, (t, _) in gw.responses.items() if t < time.monotonic()]:
        del gw.responses[old]
    container_base = replace(base, starts_from=query.start, ends_at=query.end)
    for rel, page in pages.cache_pages(kind, objects, container_base, post=True).items():
        where = f"{paths.RESPONSES}/{paths.container_folder(rid)}/{rel}"
        gw.responses[where] = (expires, gw.signed(page))
    return ResultCache(
        response_url=paths.container_folder(rid), starts_from=query.start, ends_at=query.end
    )


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
