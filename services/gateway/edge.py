"""The raw ASGI layer every request meets first: limits, request metrics, and cached GETs.

Rules, in the order a request meets them:

1. a method other than GET, HEAD or POST under ``/v0/`` gets 405;
2. a body over ``max_body_bytes`` gets 413 naming the limit, whether its length is declared (refused
   before it is read) or it comes in chunks (read here up to the limit, then handed on whole);
3. the Mim API routes take a §11.2 lease per remote; without one the answer is 429 with
   ``Retry-After: lease_retry_after_seconds``;
4. a GET or HEAD of a cache file, or of a path that could only be one, is answered here from the
   replica's served caches (:mod:`services.gateway.served`: the same bytes and headers the FastAPI
   route would send, gzip when accepted and 204 when missing), since that route's framework layers
   cost far more than the lookup;
5. everything else goes to the FastAPI app, bounded by ``request_timeout_seconds`` (503).

Every answer is counted in ``mim_gateway_requests_total`` by route and status, timed in
``mim_gateway_request_duration_seconds`` and its body size added to ``mim_gateway_bytes_out_total``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.datastructures import State
from starlette.types import Message, Receive, Scope, Send

from services.gateway import metrics
from services.gateway.answers import refusal
from services.gateway.served import Served
from services.gateway.settings import GatewaySettings

__all__ = ["Edge", "Leases", "route_of"]

_MAIN_ROUTES: Final = {
    "v0/status": "status",
    "v0/node": "node",
    "v0/bootstrappers": "bootstrappers",
}
_UNLEASED: Final = frozenset({"responses", "ping", "submit", "other"})
_NOT_FILES: Final = ("v0/revconn/",)  # "cache" by label, but answered by a route of their own


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


@dataclass
class Leases:
    """Per-remote leases of §11.2: at most ``max_remotes`` distinct remotes, each bounded."""

    max_remotes: int
    lease_seconds: float
    max_inflight: int
    _last: dict[str, float] = field(default_factory=dict)
    _inflight: dict[str, int] = field(default_factory=dict)

    def acquire(self, remote: str, now: float) -> bool:
        for old in [r for r, t in self._last.items() if now - t > self.lease_seconds]:
            if not self._inflight.get(old):
                del self._last[old]
        if remote not in self._last and len(self._last) >= self.max_remotes:
            return False
        if self._inflight.get(remote, 0) >= self.max_inflight:
            return False
        self._last[remote] = now
        self._inflight[remote] = self._inflight.get(remote, 0) + 1
        return True

    def release(self, remote: str, now: float) -> None:
        self._inflight[remote] -= 1
        if not self._inflight[remote]:
            del self._inflight[remote]
        self._last[remote] = now


def _is_file_path(path: str) -> bool:
    """A path the FastAPI route would answer from the caches alone (file or 204)."""
    if not path.startswith("/v0/") or route_of("GET", path) != "cache":
        return False
    return not path[1:].startswith(_NOT_FILES)


class _Meter:
    """The request collectors' children, looked up once per label set."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], Counter] = {}
        self._seconds: dict[str, Histogram] = {}
        self._bytes: dict[str, Counter] = {}

    def record(self, route: str, status: int, length: int, seconds: float) -> None:
        count = self._counts.get((route, status))
        if count is None:
            count = self._counts[route, status] = metrics.REQUESTS.labels(route, str(status))
            self._seconds[route] = metrics.REQUEST_SECONDS.labels(route)
            self._bytes[route] = metrics.BYTES_OUT.labels(route)
        count.inc()
        self._seconds[route].observe(seconds)
        if length:
            self._bytes[route].inc(length)


class _BodyTooLarge(Exception):
    """A chunked body passed the limit while the edge read it."""


class Edge:
    """The ASGI app uvicorn serves: the rules of this module, then ``app``."""

    def __init__(self, app: FastAPI, settings: GatewaySettings) -> None:
        self.app = app
        self._settings = settings
        self._leases = Leases(
            settings.max_remotes, settings.remote_lease_seconds, settings.max_requests_per_remote
        )
        self._meter = _Meter()

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
                self._meter.record(route, answered[0], answered[1], time.perf_counter() - started)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        method, path, settings = scope["method"], scope["path"], self._settings
        if path.startswith("/v0/") and method not in ("GET", "HEAD", "POST"):
            reason = f"{method} is not served here"
            await refusal(405, "method", "http.method", reason)(scope, receive, send)
            return
        declared, chunked, gzip_ok = _request_headers(scope["headers"])
        if declared > settings.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        leased = route not in _UNLEASED
        client = scope.get("client")
        remote = client[0] if client else "?"
        if leased and not self._leases.acquire(remote, time.monotonic()):
            retry = {"Retry-After": str(settings.lease_retry_after_seconds)}
            reason = "too many remotes or requests"
            await refusal(429, "remote", "http.lease", reason, **retry)(scope, receive, send)
            return
        try:
            if method in ("GET", "HEAD") and not chunked and _is_file_path(path):
                await self._cached(path, gzip_ok, send)
            else:
                await self._inner(scope, receive, send, chunked=chunked)
        finally:
            if leased:
                self._leases.release(remote, time.monotonic())

    async def _cached(self, path: str, gzip_ok: bool, send: Send) -> None:
        served: Served = self.app.state.gateway.caches
        answer = served.hit(path[1:], gzip_ok) or await served.answer(path[1:], gzip_ok)
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


def _request_headers(headers: Any) -> tuple[int, bool, bool]:
    """Declared body length (0 if none), whether the body is chunked, whether gzip is accepted."""
    declared, chunked, gzip_ok = 0, False, False
    for name, value in headers:
        if name == b"content-length":
            declared = int(value) if value.isdigit() else 0
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"accept-encoding":
            gzip_ok = b"gzip" in value
    return declared, chunked, gzip_ok


def _content_length(headers: Any) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return 0
