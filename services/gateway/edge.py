"""The raw ASGI layer every request meets first: limits, request metrics, and cached GETs.

Rules, in the order a request meets them:

1. a method other than GET, HEAD or POST under ``/v0/`` gets 405;
2. a body over ``max_body_bytes`` gets 413 naming the limit, whether its length is declared (refused
   before it is read) or it comes in chunks (read here up to the limit, then handed on whole);
3. on the public listener, the Mim API routes take a §11.2 lease for their remote
   (:mod:`services.gateway.remotes`: node-wide, an IPv4 address or an IPv6 /64), pings the ping
   lease, submissions without a token the main one; without a lease, or past the remote's
   requests in flight, the answer is 429 with ``Retry-After: lease_retry_after_seconds`` (503 if
   the lease state cannot be reached); the local listener takes no leases;
4. a GET or HEAD of a cache file, or of a path that could only be one, is answered here from the
   replica's served caches (:mod:`services.gateway.served`: the same bytes and headers the FastAPI
   route would send, gzip when accepted and 204 when missing), since that route's framework layers
   cost far more than the lookup; its common case (a file in memory, no body, a remote whose
   lease this replica renewed lately) is answered first, with no await before the answer;
5. everything else goes to the FastAPI app, bounded by ``request_timeout_seconds`` (503).

Every answer is counted in ``mim_gateway_requests_total`` by route and status, timed in
``mim_gateway_request_duration_seconds`` and its body size added to ``mim_gateway_bytes_out_total``
(:class:`services.gateway.metrics.RequestMeter`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from relay.health import DATABASE_FAILURES
from services.gateway import metrics
from services.gateway.answers import database_unavailable, refusal
from services.gateway.remotes import LeaseName, Leases, Refusal, Ticket, remote_key
from services.gateway.served import Served
from services.gateway.settings import GatewaySettings

__all__ = ["Edge", "route_of"]

_MAIN_ROUTES: Final = {
    "v0/status": "status",
    "v0/node": "node",
    "v0/bootstrappers": "bootstrappers",
}
_UNLEASED: Final = frozenset({"responses", "other"})
_NOT_FILES: Final = ("/v0/revconn/",)  # "cache" by label, but answered by a route of their own
_READS: Final = frozenset({"GET", "HEAD"})
_BODY_HEADERS: Final = frozenset({b"content-length", b"transfer-encoding"})


def route_of(method: str, path: str) -> str:
    """A small closed set of route labels for metrics."""
    clean = path.strip("/")
    if clean.startswith("api/"):
        return "submit"
    if clean.startswith("v0/ping"):
        return "ping"
    if clean.startswith("v0/responses"):
        return "responses"
    if method == "POST":
        return "post"
    return _MAIN_ROUTES.get(clean, "cache" if clean.startswith("v0/") else "other")


def _is_file_path(path: str) -> bool:
    """A path the FastAPI route would answer from the caches alone (file or 204)."""
    if not path.startswith("/v0/") or route_of("GET", path) != "cache":
        return False
    return not path.startswith(_NOT_FILES)


class _BodyTooLarge(Exception):
    """A chunked body passed the limit while the edge read it."""


class Edge:
    """The ASGI app uvicorn serves: the rules of this module, then ``app``."""

    def __init__(
        self, app: FastAPI, settings: GatewaySettings, leases: Leases | None = None
    ) -> None:
        self.app = app
        self._settings = settings
        self._leases = leases  # None: the local listener, whose clients are the operator's
        self._record = metrics.REQUESTS.record

    @property
    def state(self) -> State:
        """The FastAPI app's state (``state.gateway`` is the running gateway)."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        route = route_of(method, path)
        if route == "cache" and method in _READS and not path.startswith(_NOT_FILES):
            done = await self._in_memory(scope, send)
            if done:
                self._record(route, 200, done, time.perf_counter() - started)
                return
        answered: list[int] = [0, 0]  # status, body length

        async def metered(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered[0] = message["status"]
                answered[1] = _content_length(message.get("headers", ()))
            await send(message)

        try:
            await self._limited(scope, receive, metered, route)
        finally:
            if answered[0]:
                self._record(route, answered[0], answered[1], time.perf_counter() - started)

    async def _in_memory(self, scope: Scope, send: Send) -> int:
        """Rule 4's common case without waiting on anything: a GET or HEAD of a cache file this
        replica holds in memory, with no body, from a remote this replica holds a fresh lease for
        (:meth:`Leases.held`). The body length answered, or 0 when the request is not that case
        and takes the way of every other."""
        gzip_ok = False
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                gzip_ok = b"gzip" in value
            elif name in _BODY_HEADERS:
                return 0
        leases, ticket = self._leases, None
        if leases is not None:
            ticket = leases.held("main", self._remote(scope))
            if ticket is None:
                return 0
        try:
            served: Served = self.app.state.gateway.caches
            answer = served.hit(scope["path"][1:], gzip_ok)
            if answer is None:
                return 0
            body, headers = answer
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return len(body) or 1
        finally:
            if leases is not None and ticket is not None:
                leases.release(ticket)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        method, path, settings = scope["method"], scope["path"], self._settings
        if path.startswith("/v0/") and method not in ("GET", "HEAD", "POST"):
            reason = f"{method} is not served here"
            await refusal(405, "method", "http.method", reason)(scope, receive, send)
            return
        head = _request_headers(scope["headers"])
        if head.declared > settings.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        cached = method in ("GET", "HEAD") and not head.chunked and _is_file_path(path)
        ticket: Ticket | None = None
        lease = self._lease_of(route, head.authorized)
        if lease is not None and self._leases is not None:
            taken = await self._leases.enter(lease, self._remote(scope), shared=not cached)
            if isinstance(taken, Refusal):
                await self._no_lease(taken)(scope, receive, send)
                return
            ticket = taken
        try:
            if cached:
                await self._cached(scope, receive, send, head.gzip_ok)
            else:
                await self._inner(scope, receive, send, chunked=head.chunked)
        finally:
            if ticket is not None and self._leases is not None:
                await self._leases.leave(ticket)

    def _remote(self, scope: Scope) -> str:
        """The lease key of the request's client."""
        client = scope.get("client")
        return remote_key(client[0] if client else "", self._settings.lease_ipv6_prefix)

    def _no_lease(self, refused: Refusal) -> Response:
        """429 (503 when the lease state is out of reach) with ``Retry-After``."""
        retry = self._settings.lease_retry_after_seconds
        if refused.status == 503:
            retry = self._settings.busy_retry_after_seconds
        headers = {"Retry-After": str(retry)}
        return refusal(
            refused.status, "remote", refused.rule, refused.reason, cause=refused.cause, **headers
        )

    @staticmethod
    def _lease_of(route: str, authorized: bool) -> LeaseName | None:
        """The lease a public request takes: none for containers and what is not the Mim API,
        the ping lease for pings, none for a submission that brings a token (its token is
        rate-limited instead), the main lease for the rest."""
        if route in _UNLEASED or (route == "submit" and authorized):
            return None
        return "ping" if route == "ping" else "main"

    async def _cached(self, scope: Scope, receive: Receive, send: Send, gzip_ok: bool) -> None:
        served: Served = self.app.state.gateway.caches
        path = scope["path"][1:]
        try:
            answer = served.hit(path, gzip_ok) or await served.answer(path, gzip_ok)
        except DATABASE_FAILURES as exc:  # a cache file not in memory is read from PostgreSQL
            retry = self._settings.busy_retry_after_seconds
            await database_unavailable(exc, retry)(scope, receive, send)
            return
        if answer is None:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body, headers = answer
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _buffered(self, receive: Receive) -> Receive:
        """Read a body of undeclared length up to the limit; a receive that replays it."""
        limit, chunks, size = self._settings.max_body_bytes, [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message], receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return _replay([whole], receive)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the rest of the body is read and dropped by the connection layer, within its bound
        reason = f"over {self._settings.max_body_bytes} bytes"
        await refusal(413, "body", "http.body_size", reason)(scope, receive, send)

    async def _inner(self, scope: Scope, receive: Receive, send: Send, *, chunked: bool) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(self._settings.request_timeout_seconds):
                if chunked:
                    receive = await self._buffered(receive)
                await self.app(scope, receive, tracked)
        except _BodyTooLarge:
            await self._too_large(scope, receive, send)
        except TimeoutError:
            if started:
                raise
            await refusal(503, "request", "http.timeout", "took too long")(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()

    return replayed


@dataclass(frozen=True, slots=True)
class _Head:
    """What the edge reads of a request's headers."""

    declared: int  # body length, 0 if none given
    chunked: bool
    gzip_ok: bool
    authorized: bool  # brings an Authorization header


def _request_headers(headers: Any) -> _Head:
    declared, chunked, gzip_ok, authorized = 0, False, False, False
    for name, value in headers:
        if name == b"content-length":
            # digits only: a value past what fits is larger than any limit anyway
            declared = int(value[:19]) if value.isdigit() else 0
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"accept-encoding":
            gzip_ok = b"gzip" in value
        elif name == b"authorization":
            authorized = True
    return _Head(declared, chunked, gzip_ok, authorized)


def _content_length(headers: Any) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return 0
