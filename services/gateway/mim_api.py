"""The Mim API's own routes (PROTOCOL.md §11): status, node, bootstrappers, caches, containers.

GETs of cache files come from the replica's served caches (the edge answers most of them before
they get here, with the same bytes and headers);
POSTs go to :mod:`services.gateway.posts`. What is not ours is answered 204, as the reference does.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Final

from fastapi import Request, Response

from mim import canonical, pages, paths
from mim.entities import PLURALS, Address, Answer
from mim.nodes import NodeType
from relay import BusError, BusUnavailable
from relay.db import addresses
from services.gateway import posts
from services.gateway.answers import gzipped_json, json_bytes, refusal
from services.gateway.state import Gateway

__all__ = ["get", "post", "unsafe"]

_ENTITY_POSTS: Final = {paths.endpoint(kind): PLURALS[kind] for kind in PLURALS}
_BOOTSTRAPPER_SHARE: Final = (  # node type, at most (§11.3)
    (NodeType.LIVE_BOOTSTRAP, 20),
    (NodeType.STATIC_BOOTSTRAP, 10),
)


def unsafe(path: str) -> bool:
    """A path that could climb out of our folders or name a folder: never a file of ours."""
    return ".." in path or "/." in path or "\\." in path or path.endswith("/")


async def _serve_file(gw: Gateway, request: Request, path: str) -> Response:
    if unsafe(path):
        return Response(status_code=204)
    gzip_ok = "gzip" in request.headers.get("accept-encoding", "")
    answer = await gw.caches.answer(path.lstrip("/"), gzip_ok)
    if answer is None:
        return Response(status_code=204)
    body, headers = answer
    return Response(body, headers={name.decode(): value.decode() for name, value in headers})


def _node_answer(gw: Gateway, request: Request) -> Response:
    page = pages.node_page(gw.base(int(time.time())))
    return json_bytes(request, gw.signed(page), min_gzip=gw.settings.gzip_min_bytes)


async def _bootstrappers(gw: Gateway, request: Request) -> Response:
    stored = await addresses.recent(gw.read_pool, limit=1000)
    live = [canonical.loads(Address, a.body) for a in stored if a.first_party]
    chosen = [
        a
        for node_type, most in _BOOTSTRAPPER_SHARE
        for a in [x for x in live if x.type == node_type][:most]
    ]
    page = replace(
        gw.base(int(time.time())),
        entity="addresses",
        endpoint="bootstrappers",
        response=Answer(addresses=tuple(pages.sanitise_address(a) for a in chosen))
        if chosen
        else Answer(),
    )
    return json_bytes(request, gw.signed(page), min_gzip=gw.settings.gzip_min_bytes)


async def get(gw: Gateway, request: Request, path: str) -> Response:  # noqa: PLR0911 - a route each
    """Answer a GET (or HEAD) of ``path``."""
    clean = path.strip("/")
    if clean in (paths.STATUS, paths.PING_STATUS) or clean.startswith("v0/revconn/"):
        return Response(status_code=200)
    if clean in (paths.NODE, paths.PING_NODE):
        return _node_answer(gw, request)
    if clean == paths.BOOTSTRAPPERS:
        return await _bootstrappers(gw, request)
    if clean.startswith("v0/ping/"):
        return Response(status_code=200)
    if clean.startswith(paths.RESPONSES + "/"):
        if unsafe(path):
            return Response(status_code=204)
        try:
            stored = await gw.containers.read(clean)
        except (BusUnavailable, BusError) as exc:
            return refusal(503, "path", "containers.unavailable", str(exc))
        if stored is None:
            return Response(status_code=204)
        body, gzipped = stored
        return gzipped_json(request, body) if gzipped else json_bytes(request, body)
    return await _serve_file(gw, request, path)


async def post(gw: Gateway, request: Request, path: str) -> Response:
    """Answer a POST to ``path``: node, addresses, or an entity endpoint (§11.4)."""
    clean = path.strip("/")
    if clean in (paths.NODE, paths.PING_NODE):
        return await posts.answer(gw, request, "node")
    plural = _ENTITY_POSTS.get(clean)
    if plural == "addresses":
        return await posts.answer(gw, request, "address")
    if plural is not None:
        return await posts.answer(gw, request, plural)
    return Response(status_code=204)
