"""A remote rotating through the addresses of its IPv6 /64: one remote, one lease.

The gateway runs behind a trusted reverse proxy (``MIM_GATEWAY_TRUSTED_PROXIES``), so each
request names its remote in ``X-Forwarded-For``, as a proxy in front of a public node does.

Bounds held in every test: the gateway's resident memory grows by at most ``RSS_GROWTH`` during
the attack; the well-behaved client gets 200 for every request, none slower than ``WORST``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.helpers.gateway import Polite, error_of, gateway

RSS_GROWTH = 32 << 20  # bytes
WORST = 2.0  # seconds, for one request of the well-behaved client
ROTATED = 200


async def _from(client: httpx.AsyncClient, remote: str) -> httpx.Response:
    return await client.get("/v0/node", headers={"X-Forwarded-For": remote})


@pytest.mark.parametrize(("prefix", "leased"), [(64, ROTATED), (128, 2)])
async def test_addresses_of_one_prefix_share_one_lease(
    nats_url: str,
    fresh_database: str,
    stream_prefix: str,
    tmp_path: Path,
    prefix: int,
    leased: int,
) -> None:
    """With three remotes leased at a time (the well-behaved client holds one), 200 addresses of
    one /64 are one remote under the default /64 leases and are all served, and a second /64 is
    served while a third gets 429; leased by /128 instead, only two of the 200 are served."""
    settings = {
        "MIM_GATEWAY_MAX_REMOTES": "3",
        "MIM_GATEWAY_TRUSTED_PROXIES": "127.0.0.1",
        "MIM_GATEWAY_LEASE_IPV6_PREFIX": str(prefix),
    }
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
            with Polite(node.url) as polite:
                before = node.rss()
                limit = asyncio.Semaphore(4)

                async def rotating(n: int) -> httpx.Response:
                    async with limit:
                        return await _from(client, f"2001:4860:1:2::{n:x}")

                rotated = await asyncio.gather(*(rotating(n) for n in range(1, ROTATED + 1)))
                other = await _from(client, "2001:4860:1:3::1")
                third = await _from(client, "2001:4860:1:4::1")
                grown = node.rss() - before
        statuses = [a.status_code for a in rotated]
        assert statuses.count(200) == leased
        refused = [a for a in (*rotated, other, third) if a.status_code != 200]
        assert all(a.status_code == 429 and error_of(a)["rule"] == "http.lease" for a in refused)
        if prefix == 64:
            assert (other.status_code, third.status_code) == (200, 429)
        assert grown <= RSS_GROWTH, grown
        assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
        assert node.health() == 200
