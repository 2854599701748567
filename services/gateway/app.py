"""The public Mim API (PROTOCOL.md §11) and the local submission endpoint, as one FastAPI app.

``create_app(settings)`` returns the app behind its :class:`~services.gateway.edge.Edge` (limits,
request metrics, and cached GETs answered without the framework); the app's lifespan opens NATS and
the pool, loads the node key, builds the first cache tree and keeps regenerating it in one tracked
background task. GETs of the cache tree are dict lookups; POSTs are checked by
:func:`mim.pages.check_request` and answered from the store. Every refusal is a 4xx with
``{"error": {"field", "rule", "reason"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from nats.aio.client import Client as NATS
from starlette.exceptions import HTTPException

from mim import canonical, pages
from mim.entities import Address, Answer, ApiResponse
from mim.errors import MimError
from mim.signing import SigningKey
from relay.bus import Layout
from relay.logging import get_logger
from relay.runner import close_nats, close_pool, connect_nats, connect_pool
from services.gateway import caches, identity, metrics, posts, submissions
from services.gateway.edge import Edge, refusal
from services.gateway.settings import GatewaySettings
from services.store import repo

__all__ = ["Gateway", "create_app", "refusal"]

_log = get_logger(__name__)
_NONCE_MEMORY_SECONDS: Final = 50 * 60  # §11.4, §16
_NONCE_MAX_PER_KEY: Final = 358  # §16
_ENTITY_POSTS: Final = {f"v0/c0/{p}" for p in ("boards", "threads", "posts", "votes", "keys")} | {
    "v0/c0/truststates"
}


class NonceMemory:
    """Nonces seen per node key in the last 50 minutes (§11.4)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: dict[str, dict[str, float]] = {}
        self._clock = clock

    def seen(self, key: str, nonce: str) -> bool:
        now = self._clock()
        nonces = self._seen.setdefault(key, {})
        for old in [n for n, t in nonces.items() if now - t > _NONCE_MEMORY_SECONDS]:
            del nonces[old]
        if nonce in nonces or len(nonces) >= _NONCE_MAX_PER_KEY:
            return True
        nonces[nonce] = now
        return False


@dataclass
class Gateway:
    """Everything a request handler needs; one per app."""

    settings: GatewaySettings
    key: SigningKey
    pool: asyncpg.Pool
    nc: NATS | None
    layout: Layout
    port: int
    tree: caches.Tree = field(default_factory=lambda: caches.Tree(0, {}))
    responses: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    nonces: NonceMemory = field(default_factory=NonceMemory)

    @property
    def head_seconds(self) -> int:
        return self.settings.network_head_days * caches.DAY_SECONDS

    def base(self, now: int) -> ApiResponse:
        return pages.prefill(
            self.key.public_hex,
            port=self.port,
            node_type=pages.NODE_TYPE_LIVE,
            nonce=secrets.token_hex(32),
            now=now,
        )

    def signed(self, page: ApiResponse) -> bytes:
        return canonical.encode(pages.sign_page(page, self.key))

    async def regenerate(self, now: int | None = None) -> caches.Tree:
        """Build a fresh cache tree and swap it in; returns it."""
        started = time.perf_counter()
        now = int(time.time()) if now is None else now
        head = await caches.read_head(self.pool, now=now, head_days=self.settings.network_head_days)
        tree = await asyncio.to_thread(
            caches.build_tree,
            head,
            self.key,
            port=self.port,
            node_type=pages.NODE_TYPE_LIVE,
            nonce=secrets.token_hex(32),
        )
        self.tree = tree
        elapsed = time.perf_counter() - started
        metrics.CACHE_GENERATION_SECONDS.observe(elapsed)
        metrics.CACHE_BYTES.set(tree.size)
        metrics.CACHE_PAGES.set(len(tree.files))
        _log.info("caches_generated", files=len(tree.files), bytes=tree.size, duration_s=elapsed)
        return tree

    async def regenerate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cache_interval_seconds)
            try:
                await self.regenerate()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                _log.warning("caches_generation_failed", error=repr(exc))


def _gzip_ok(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def json_bytes(
    request: Request, body: bytes, gz: bytes | None = None, min_gzip: int = 512
) -> Response:
    """A JSON answer, gzip-encoded when the client accepts it and it is worth it."""
    if _gzip_ok(request) and (gz is not None or len(body) >= min_gzip):
        payload = gz if gz is not None else gzip.compress(body, 6, mtime=0)
        return Response(
            payload,
            media_type="application/json",
            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
        )
    return Response(body, media_type="application/json")


def _unsafe(path: str) -> bool:
    return ".." in path or "/." in path or "\\." in path or path.endswith("/")


def _serve_file(gw: Gateway, request: Request, path: str) -> Response:
    if _unsafe(path):
        return Response(status_code=204)
    key = path.lstrip("/")
    body = gw.tree.files.get(key)
    if body is None:
        return Response(status_code=204)
    return json_bytes(request, body, gw.tree.gzipped.get(key))


def _node_answer(gw: Gateway, request: Request) -> Response:
    page = pages.node_page(gw.base(int(time.time())))
    return json_bytes(request, gw.signed(page), min_gzip=gw.settings.gzip_min_bytes)


async def _bootstrappers(gw: Gateway, request: Request) -> Response:
    stored = await repo.list_addresses(gw.pool, limit=1000)
    live = [a for a in stored if a.first_party]
    picked = [canonical.loads(Address, a.body) for a in live]
    chosen = [a for a in picked if a.type == 3][:20] + [a for a in picked if a.type == 254][:10]
    page = replace(
        gw.base(int(time.time())),
        entity="addresses",
        endpoint="bootstrappers",
        response=Answer(addresses=tuple(pages.sanitise_address(a) for a in chosen))
        if chosen
        else Answer(),
    )
    return json_bytes(request, gw.signed(page), min_gzip=gw.settings.gzip_min_bytes)


async def _get(gw: Gateway, request: Request, path: str) -> Response:  # noqa: PLR0911 - one per route
    clean = path.strip("/")
    if clean in ("v0/status", "v0/ping/status") or clean.startswith("v0/revconn/"):
        return Response(status_code=200)
    if clean in ("v0/node", "v0/ping/node"):
        return _node_answer(gw, request)
    if clean == "v0/bootstrappers":
        return await _bootstrappers(gw, request)
    if clean.startswith("v0/ping/"):
        return Response(status_code=200)
    if clean.startswith("v0/responses/"):
        if _unsafe(path):
            return Response(status_code=204)
        stored = gw.responses.get(clean)
        return Response(status_code=204) if stored is None else json_bytes(request, stored[1])
    return _serve_file(gw, request, path)


async def _post(gw: Gateway, request: Request, path: str) -> Response:
    clean = path.strip("/")
    if clean in ("v0/node", "v0/ping/node"):
        return await posts.answer(gw, request, "node")
    if clean == "v0/addresses":
        return await posts.answer(gw, request, "address")
    if clean in _ENTITY_POSTS:
        return await posts.answer(gw, request, clean.rsplit("/", 1)[1])
    return Response(status_code=204)


def _lifespan(settings: GatewaySettings, port: int) -> Callable[[FastAPI], Any]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        attempts, delay = settings.connect_attempts, settings.connect_retry_seconds
        nc = await connect_nats(settings.nats_url, "gateway", attempts=attempts, delay=delay)
        pool = await connect_pool(
            settings.database_url, attempts=attempts, delay=delay, max_size=settings.pool_size
        )
        try:
            key = await identity.load_or_create(pool)
            gw = Gateway(settings, key, pool, nc, Layout.from_settings(settings), port)
            app.state.gateway = gw
            await gw.regenerate()
            _log.info("gateway_ready", node_id=pages.node_id(key.public_hex), port=port)
            task = asyncio.create_task(gw.regenerate_forever(), name="cache-regeneration")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await close_nats(nc, settings.shutdown_grace_seconds)
            await close_pool(pool, settings.shutdown_grace_seconds)
            _log.info("shutdown_complete")

    return lifespan


def create_app(settings: GatewaySettings, *, port: int | None = None) -> Edge:
    """The gateway app (the FastAPI app behind its edge); ``port`` is the one we announce."""
    announced = port or settings.public_port or settings.port
    app = FastAPI(
        title="mimrelay gateway",
        summary="The public Mim API of one relay node, and local submission of objects.",
        lifespan=_lifespan(settings, announced),
    )

    @app.exception_handler(MimError)
    async def mim_error(request: Request, exc: MimError) -> Response:
        return refusal(exc.status, exc.field, exc.rule, exc.reason)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # FastAPI raises these itself, e.g. 400 for a body that is not UTF-8; answer in our shape
        headers = exc.headers or {}
        return refusal(exc.status_code, "request", "http.request", exc.detail, **headers)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> Response:
        # a body or path that does not fit the documented schema is a malformed request: 400
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "path")]
        rule = "request." + str(first.get("type", "invalid"))
        return refusal(400, ".".join(where) or "request", rule, str(first.get("msg", "invalid")))

    submissions.install(app, settings)

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST"], include_in_schema=False)
    async def mim_api(request: Request, path: str) -> Response:
        gw: Gateway = request.app.state.gateway
        if request.method == "POST":
            return await _post(gw, request, "/" + path)
        return await _get(gw, request, "/" + path)

    return Edge(app, settings)
