"""POST requests of the Mim API (PROTOCOL.md §11.4, §11.7): check, query the store, answer.

A request must say ``Content-Type: application/json``, decode as an ``ApiResponse`` and pass
:func:`mim.pages.check_request`; its filters become a :class:`mim.pages.Query`. The sender's
address is then recorded as first-party (§13.6). Answers that fit one page carry the objects
inline; larger ones are written as a container under ``/v0/responses/post_<id>/`` and named in
``results``.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import asyncpg
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
from mim.errors import MimError
from relay.logging import get_logger
from services.gateway import metrics

if TYPE_CHECKING:
    from services.gateway.app import Gateway

__all__ = ["answer", "read_body"]

_log = get_logger(__name__)
_SINGULAR: Final[dict[str, Kind]] = {plural: kind for kind, plural in PLURALS.items()}
_RESPONSE_LIFE_SECONDS: Final = 60 * 60  # containers stay reachable for an hour (§11.7)
_ADDRESS_ANSWER: Final = ((2, 80), (3, 10), (255, 10))  # node type, at most (§11.7)
_COLUMNS: Final = "kind, body, last_referenced"


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
    from services.gateway.app import json_bytes, refusal  # noqa: PLC0415 - app imports us

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
        return refusal(400, exc.field, exc.rule, exc.reason)
    await _record_sender(gw, request, page, now)
    if what == "node":
        reply = pages.node_page(gw.base(now))
    elif what == "address":
        reply = await _addresses(gw, query, now)
    else:
        reply = await _entities(gw, _SINGULAR[what], query, now)
    return json_bytes(request, gw.signed(reply), min_gzip=gw.settings.gzip_min_bytes)


async def _record_sender(gw: Gateway, request: Request, page: ApiResponse, now: int) -> None:
    """Store the sender as a first-party address at the connection's IP (§11.4, §13.6)."""
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
    from services.store import repo  # noqa: PLC0415 - the store is optional at import time

    try:
        await repo.upsert_first_party_address(gw.pool, address, now, last_ping=now)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _log.warning("sender_not_recorded", error=repr(exc))


async def _fetch(gw: Gateway, sql: str, *args: Any) -> list[tuple[int, Entity]]:
    rows = await gw.pool.fetch(sql, *args)
    return [
        (r["last_referenced"], canonical.loads(entity_class(r["kind"]), r["body"])) for r in rows
    ]


async def _select(gw: Gateway, kind: Kind, query: pages.Query) -> list[Entity]:
    """The objects the query names, within the head; time ranges start at the last generation."""
    head_start = int(time.time()) - gw.head_seconds
    if query.fingerprints:
        sql = (
            f"SELECT {_COLUMNS} FROM objects WHERE kind = $1"  # noqa: S608
            " AND fingerprint = ANY($2::text[]) AND last_referenced >= $3"
            " ORDER BY last_referenced, fingerprint"
        )
        rows = await _fetch(gw, sql, kind, list(query.fingerprints), head_start)
    else:
        # The caches hold what was committed when they were read; an object stamped earlier but
        # committed later is in no cache, so the live tail reaches back over that gap.
        tail_start = gw.tree.generated_at - gw.settings.live_tail_overlap_seconds
        start = max(query.start, head_start, tail_start)
        sql = (
            f"SELECT {_COLUMNS} FROM objects WHERE kind = $1"  # noqa: S608
            " AND last_referenced BETWEEN $2 AND $3 ORDER BY last_referenced, fingerprint"
        )
        rows = await _fetch(gw, sql, kind, start, query.end)
    return [obj for _, obj in rows]


_EMBED_SQL: Final = {
    ("board", "threads"): ("thread", "board"),
    ("thread", "posts"): ("post", "thread"),
    ("post", "votes"): ("vote", "target"),
}


async def _embedded(
    gw: Gateway, kind: Kind, found: Sequence[Entity], embeds: Sequence[str]
) -> list[Entity]:
    """Related objects the ``embed`` filter asks for (§11.4)."""
    extra: list[Entity] = []
    fingerprints = [getattr(o, "fingerprint", "") for o in found]
    for embed in embeds:
        link = _EMBED_SQL.get((kind, embed))
        if link is None:
            continue
        child, column = link
        sql = (
            f"SELECT {_COLUMNS} FROM objects WHERE kind = $1"  # noqa: S608
            f" AND {column} = ANY($2::text[]) ORDER BY last_referenced, fingerprint"
        )
        extra.extend(obj for _, obj in await _fetch(gw, sql, child, fingerprints))
    if "keys" in embeds:
        # a Key is found by its public key: owners name keys by the key's hash, not its fingerprint
        public_keys = sorted({getattr(o, "owner_publickey", "") for o in [*found, *extra]} - {""})
        sql = (
            f"SELECT {_COLUMNS} FROM objects WHERE kind = 'key'"  # noqa: S608
            " AND owner_publickey = ANY($1::text[]) ORDER BY fingerprint"
        )
        extra.extend(obj for _, obj in await _fetch(gw, sql, public_keys))
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
        gw.responses[f"v0/responses/post_{rid}/{rel}"] = (expires, gw.signed(page))
    return ResultCache(response_url=f"post_{rid}", starts_from=query.start, ends_at=query.end)


async def _addresses(gw: Gateway, query: pages.Query, now: int) -> ApiResponse:
    """Up to 100 recently pinged addresses, sanitised (§11.7)."""
    from services.store import repo  # noqa: PLC0415

    stored = await repo.list_addresses(gw.pool, limit=1000)
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
