"""What every request handler of one gateway shares: settings, key, connections, caches, memory.

:class:`Gateway` is made once at start (:mod:`services.gateway.service`) and handed to the app;
handlers read it from ``request.app.state.gateway``. It signs pages with the node key, serves the
caches (:mod:`services.gateway.served`), builds them while it holds the builder lease
(:mod:`services.gateway.generation`), and holds the POST answer containers and the nonces seen
(§11.4).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import asyncpg
from nats.aio.client import Client as NATS

from mim import canonical, pages
from mim.entities import ApiResponse
from mim.signing import SigningKey
from relay.bus import Layout
from relay.caches.files import Signer
from relay.logging import get_logger
from services.gateway import generation, metrics
from services.gateway.served import Served
from services.gateway.settings import GatewaySettings

__all__ = ["Gateway", "NonceMemory"]

_NONCE_MEMORY_SECONDS: Final = 50 * 60  # §11.4, §16
_NONCE_MAX_PER_KEY: Final = 358  # §16

_log = get_logger(__name__)


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
    """Everything a request handler needs; one per process."""

    settings: GatewaySettings
    key: SigningKey
    pool: asyncpg.Pool
    nc: NATS
    layout: Layout
    port: int  # the port we announce
    caches: Served = field(init=False)
    building: bool = False  # whether this replica holds the builder lease
    responses: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    nonces: NonceMemory = field(default_factory=NonceMemory)

    def __post_init__(self) -> None:
        self.caches = Served(self.pool, self.settings.cache_memory_bytes)

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
