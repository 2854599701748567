"""A remote's node page, and its address recorded first-party (PROTOCOL.md §13.4 steps 2-3, §13.6).

Both the sync and the network scan read a remote's signed node page and, when it verifies, store
the address the remote gives of itself at the place we dialled, first-party. This module holds that
once: :func:`decode` (a page, verified, from the expected key), :func:`node_page` (one node page
request, protocol 1.0 required), :func:`answered` (a remote that answered, recorded with its last
ping) and :func:`record` (the first-party report, which the store writes).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from mim import canonical, pages
from mim.entities import Address, ApiResponse
from mim.errors import MimError
from mim.nodes import STATIC_NODE_TYPES, NodeType
from relay import RelayError
from relay.first_party import Reporter
from services.syncer.peers import Remote

__all__ = [
    "Broken",
    "Request",
    "SyncFailed",
    "answered",
    "decode",
    "is_static",
    "node_page",
    "own_address",
    "placed_at",
    "record",
]

Request = Callable[[str, str, bytes | None], Awaitable[tuple[int, bytes]]]
"""Sends ``(method, path, body)`` to the remote at hand; answers ``(status, body)``."""


class SyncFailed(RelayError):
    """A sync or ping of a remote stopped; ``reason`` is a small closed label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Broken(Exception):
    """A page that does not decode, verify, or come from the remote's key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(data: bytes, *, expect_key: str) -> ApiResponse:
    """The page in ``data``, verified, and signed by ``expect_key`` when one is given."""
    try:
        page = canonical.loads(ApiResponse, data)
    except (MimError, ValueError, RecursionError) as exc:
        raise Broken("json") from exc
    try:
        pages.verify_page(page)
    except MimError as exc:
        raise Broken("signature") from exc
    if expect_key and page.node_public_key != expect_key:
        raise Broken("signer")
    return page


async def node_page(
    request: Request, method: str, path: str, body: bytes | None, *, own_id: str
) -> ApiResponse:
    """The verified node page at ``path``; ``SyncFailed`` if it is missing, bad or ours."""
    status, data = await request(method, path, body)
    if status != 200:
        raise SyncFailed("node_page", f"{method} /{path} answered {status}")
    try:
        page = decode(data, expect_key="")
    except Broken as exc:
        raise SyncFailed("node_page", f"{method} /{path}: {exc.reason}") from exc
    protocol = page.address.protocol
    if (protocol.version_major, protocol.version_minor) != (1, 0):
        raise SyncFailed("protocol", "the node page does not declare protocol 1.0")
    if pages.node_id(page.node_public_key) == own_id:
        raise SyncFailed("self", "the remote is this node")
    return page


def own_address(said: Address, *, static: bool) -> Address:
    """What a remote says of itself, its node type filled in when it left it 0."""
    if said.type:
        return said
    return replace(said, type=int(NodeType.STATIC if static else NodeType.LIVE))


def is_static(remote: Remote, page: ApiResponse) -> bool:
    """Static remotes (types 253-255) are read with GETs only and never POSTed to (§11.2)."""
    return remote.static or page.address.type in STATIC_NODE_TYPES


def placed_at(address: Address, remote: Remote) -> Address:
    """``address`` at the place we dialled ``remote``: its host, sublocation and port."""
    return replace(address, location=remote.host, sublocation=remote.sublocation, port=remote.port)


async def answered(
    reporter: Reporter, remote: Remote, said: Address, *, static: bool, page_time: int
) -> Address:
    """Record that ``remote`` answered; what it ``said`` of itself, as :func:`own_address` fills it.

    The address is stored first-party (:func:`record`) with its last ping now, or for a static
    remote the time of its node page, ``page_time`` (§13.4 step 2).
    """
    address = own_address(said, static=static)
    seen = page_time if static else int(time.time())
    await record(reporter, remote, address, last_ping=seen)
    return address


async def record(
    reporter: Reporter,
    remote: Remote,
    address: Address,
    *,
    last_ping: int = 0,
    last_sync: int = 0,
) -> None:
    """Report ``address`` first-party, at the place we dialled (§13.4 step 3, §13.6).

    Raises what :func:`relay.first_party.report` raises when the bus does not take it.
    """
    stored = replace(
        placed_at(address, remote), location_type=remote.location_type, entity_version=1
    )
    await reporter(stored, last_ping=last_ping, last_sync=last_sync)
