"""What every request handler of one gateway shares: settings, key, connections, caches, memory.

:class:`Gateway` is made once at start (:mod:`services.gateway.service`) and handed to the app;
handlers read it from ``request.app.state.gateway``. It signs pages with the node key, serves the
caches (:mod:`services.gateway.served`) and builds them while it holds the builder lease
(:mod:`services.gateway.generation`); the POST nonces seen (§11.4) and the POST answer containers
(§11.7) are the node's shared state (:mod:`services.gateway.nonces`,
:mod:`services.gateway.containers`), the same for every replica.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import asyncpg
from nats.aio.client import Client as NATS

from mim import canonical, pages
from mim.entities import ApiResponse
from mim.signing import SigningKey
from relay.bus import Layout
from relay.caches.files import Signer
from relay.logging import get_logger
from services.gateway import generation, metrics
from services.gateway.containers import Containers
from services.gateway.nonces import Nonces
from services.gateway.served import Served
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
    caches: Served = field(init=False)
    building: bool = False  # whether this replica holds the builder lease
    replica: asyncpg.Pool | None = None  # MIM_DATABASE_READ_URL's pool, if set

    def __post_init__(self) -> None:
        # the caches are written and read on the primary: a replica may lag a new generation
        self.caches = Served(self.pool, self.settings.cache_memory_bytes)

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

    async def regenerate(self, now: int | None = None) -> generation.Outcome:
        """Run one cache generation at ``now`` (default: the clock), then serve the latest.

        Raises ``Superseded`` if another builder published the same generation first.
        """
        started = time.perf_counter()
        now = int(time.time()) if now is None else now
        signer = Signer(self.key, self.port, pages.NODE_TYPE_LIVE)
        outcome = await generation.generate(self.pool, signer, self.settings, now)
        await self.caches.refresh()
        metrics.CACHE_GENERATED.set(now)  # current as of now, even when nothing was new
        elapsed = time.perf_counter() - started
        metrics.CACHE_GENERATION_SECONDS.observe(elapsed)
        if outcome.published is not None:
            _log.info(
                "caches_generated", generation=outcome.published.generation,
                covered_to=outcome.published.covered_to, built=outcome.built,
                merged=outcome.merged, retired=outcome.retired, bytes=outcome.bytes,
                duration_s=round(elapsed, 3),
            )  # fmt: skip
        return outcome
