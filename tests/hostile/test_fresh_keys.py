"""A flood of POST requests, each from a fresh node key: the nonce memory is the node's, bounded
in entries, and past its bound new requests get 503 while the gateway's own memory stays flat.

Bounds held: the gateway's resident memory grows by at most ``RSS_GROWTH`` during the flood; the
well-behaved client gets 200 for every request, none slower than ``WORST``.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import httpx
from nats.aio.client import Client as NATS

from mim.signing import SigningKey
from relay.bus import Layout
from tests.helpers.gateway import REQUEST_POW, Polite, error_of, gateway, request
from tests.services.gateway.conftest import JSON

RSS_GROWTH = 32 << 20  # bytes
WORST = 2.0  # seconds, for one request of the well-behaved client
NONCE_ENTRIES = 1000  # each request spends two: its nonce, and its key's count
FLOOD = 700


async def test_fresh_key_floods_fill_the_bounded_nonce_memory_then_get_503(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path, nc: NATS
) -> None:
    """700 POSTs from 700 fresh keys: the first ones are answered until the node's nonce memory
    holds its 1,000 entries, the rest get 503 naming the full memory with Retry-After; a replayed
    request is refused 400; the bucket holds no more than its bound and forgets after 50 minutes;
    the gateway stays healthy within its memory bound and serves the well-behaved client."""
    settings = {
        "MIM_GATEWAY_POST_MIN_POW": str(REQUEST_POW),
        "MIM_GATEWAY_NONCE_MAX_ENTRIES": str(NONCE_ENTRIES),
    }
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node:
        replayed = request("node")
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
            first = await client.post("/v0/node", content=replayed, headers=JSON)
            again = await client.post("/v0/node", content=replayed, headers=JSON)
            limit = asyncio.Semaphore(8)  # the remote's requests in flight

            async def fresh() -> httpx.Response:
                body = request("node", key=SigningKey.generate(secrets.token_bytes(32)))
                async with limit:
                    return await client.post("/v0/node", content=body, headers=JSON)

            with Polite(node.url) as polite:
                before = node.rss()
                answers = await asyncio.gather(*(fresh() for _ in range(FLOOD)))
                grown = node.rss() - before
        info = await nc.jetstream().stream_info(f"KV_{Layout(stream_prefix).nonces_bucket}")
        assert (first.status_code, again.status_code) == (200, 400)
        assert error_of(again)["rule"] == "request.nonce_reused"
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {200, 503}
        served = statuses.count(200)
        assert NONCE_ENTRIES // 2 - 10 <= served <= NONCE_ENTRIES // 2
        full = next(a for a in answers if a.status_code == 503)
        assert error_of(full)["rule"] == "nonces.full"
        assert full.headers["retry-after"] == "30"
        assert info.state.messages <= NONCE_ENTRIES
        assert info.config.max_msgs == NONCE_ENTRIES
        assert info.config.max_age == 50 * 60
        assert grown <= RSS_GROWTH, grown
        assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
        assert node.health() == 200
        assert node.metric("mim_gateway_state_full_total", bucket="nonces") == FLOOD - served
