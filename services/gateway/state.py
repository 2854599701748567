"""What every request handler of one gateway shares: settings, key, connections, caches, memory.

:class:`Gateway` is made once at start (:mod:`services.gateway.service`) and handed to the app;
handlers read it from ``request.app.state.gateway``. It signs pages with the node key and holds
the current cache tree; the POST nonces seen (§11.4) and the POST answer containers (§11.7) are
the node's shared state (:mod:`services.gateway.nonces`, :mod:`services.gateway.containers`), the
same for every replica.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

import asyncpg
from nats.aio.client import Client as NATS

from mim import canonical, pages
from mim.entities import ApiResponse
from mim.signing import SigningKey
from relay import caches
from relay.bus import Layout
from relay.caches import Tree
from relay.logging import get_logger
from services.gateway import metrics
from services.gateway.containers import Containers
from services.gateway.nonces import Nonces
from services.gateway.settings import GatewaySettings

__all__ = ["Gateway"]

_log = get_logger(__name__)


@dataclass
class Gateway:
    """Everything a request handler needs; one per process."""

    settings: GatewaySettings
    key: SigningKey
    pool: asyncpg.Pool
    nc: NATS
    layout: Layout
    port: int  # the port we announce
    nonces: Nonces
    containers: Containers
    tree: Tree = field(default_factory=lambda: Tree(0, {}))
    replica: asyncpg.Pool | None = None  # MIM_DATABASE_READ_URL's pool, if set

    @property
    def read_pool(self) -> asyncpg.Pool:
        """Where what only reads goes: the read replica if there is one, else the primary."""
        return self.replica if self.replica is not None else self.pool

    @property
    def head_seconds(self) -> int:
        return self.settings.head_seconds

    def base(self, now: int) -> ApiResponse:
        """An unsigned page of ours at ``now``: our key, address and a fresh nonce."""
        return pages.prefill(
            self.key.public_hex,
            port=self.port,
            node_type=pages.NODE_TYPE_LIVE,
            nonce=secrets.token_hex(32),
            now=now,
        )

    def signed(self, page: ApiResponse) -> bytes:
        return canonical.encode(pages.sign_page(page, self.key))

    async def regenerate(self, now: int | None = None) -> Tree:
        """Build a fresh cache tree from the store and swap it in; returns it."""
        started = time.perf_counter()
        now = int(time.time()) if now is None else now
        head = await caches.read_head(
            self.read_pool, now=now, head_days=self.settings.network_head_days
        )
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
        metrics.CACHE_GENERATED.set(tree.generated_at)
        _log.info("caches_generated", files=len(tree.files), bytes=tree.size, duration_s=elapsed)
        return tree
