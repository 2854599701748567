"""Address floods: a stranger naming thousands of addresses, by submission or by POSTing from
thousands of places, cannot push the node's known peers out of its address table.

The gateway runs behind a trusted reverse proxy (``MIM_GATEWAY_TRUSTED_PROXIES``), so each POST
names its remote in ``X-Forwarded-For``; a validator and a store take what the gateway reports.

Bounds held: the gateway's resident memory grows by at most ``RSS_GROWTH`` during the flood; the
well-behaved client gets 200 for every request, none slower than ``WORST``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx

from mim.entities import Address
from relay.bus import Layout
from relay.db import addresses
from tests.helpers.gateway import REQUEST_POW, Polite, error_of, gateway, request
from tests.helpers.store import running_pipeline, wait_until
from tests.services.gateway.conftest import JSON

RSS_GROWTH = 32 << 20  # bytes
WORST = 2.0  # seconds, for one request of the well-behaved client
MAX_REMOTES = 10
FLOOD = 300
PEERS = [f"8.8.8.{n}" for n in range(1, 6)]


async def _known_peers(database: str) -> None:
    """Five peers the node pinged a minute ago, first-party (arrived a second apart: the cache
    generation of this branch cannot yet order two addresses of one second)."""
    conn = await asyncpg.connect(database)
    try:
        now = int(time.time())
        for n, location in enumerate(PEERS):
            address = Address(location=location, port=443, type=2, entity_version=1)
            await addresses.store_first_party(conn, address, now - 60 - n, last_ping=now - 60)
    finally:
        await conn.close()


async def _first_party(database: str) -> set[str]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT location FROM addresses WHERE first_party")
    finally:
        await conn.close()
    return {r["location"] for r in rows}


async def test_address_floods_cannot_push_known_peers_out(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """Public submission (opened) refuses 1,000 addresses with 403 and 10,000 with 413; 300 POSTs
    from 300 public addresses get leases for eight of them (the well-behaved client and the
    submitter hold the others) and 429 for the rest, so at most eight new first-party rows reach
    the table and the five known peers stay; the gateway stays healthy within its bounds."""
    await _known_peers(fresh_database)
    settings = {
        "MIM_GATEWAY_PUBLIC_SUBMIT": "true",
        "MIM_GATEWAY_POST_MIN_POW": str(REQUEST_POW),
        "MIM_GATEWAY_MAX_REMOTES": str(MAX_REMOTES),
        "MIM_GATEWAY_TRUSTED_PROXIES": "127.0.0.1",
    }
    many = [
        {"kind": "address", "object": {"location": f"1.{n // 250}.{n % 250}.1", "port": 80,
                                       "entity_version": 1}}
        for n in range(10_000)
    ]  # fmt: skip
    async with running_pipeline(nats_url, fresh_database, Layout(stream_prefix)):
        with gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node:
            async with httpx.AsyncClient(base_url=node.url, timeout=60) as client:
                with Polite(node.url) as polite:
                    before = node.rss()
                    submitted = await client.post("/api/submit", json=many[:1000])
                    oversized = await client.post("/api/submit", json=many)
                    limit = asyncio.Semaphore(8)

                    async def sender(n: int) -> httpx.Response:
                        remote = {"X-Forwarded-For": f"2.{n // 250}.{n % 250}.7", **JSON}
                        async with limit:
                            return await client.post(
                                "/v0/node", content=request("node"), headers=remote
                            )

                    posted = await asyncio.gather(*(sender(n) for n in range(FLOOD)))
                    grown = node.rss() - before
                health = node.health()
            served = [a for a in posted if a.status_code == 200]
            flooders = {f"2.{n // 250}.{n % 250}.7" for n in range(FLOOD)}

            async def recorded() -> bool:
                return len(await _first_party(fresh_database) & flooders) == len(served)

            await wait_until("the served senders stored first-party", recorded)
        stored = await _first_party(fresh_database)
    assert submitted.status_code == 403
    assert error_of(submitted) == {
        "field": "[0].kind",
        "rule": "submit.public_address",
        "reason": "addresses reach this node only from their own nodes (§13.6)",
    }
    assert oversized.status_code == 413 and error_of(oversized)["rule"] == "submit.count"
    # the well-behaved client holds one lease, and the submissions' own remote (the proxy's
    # client, named by no header) another
    assert len(served) == MAX_REMOTES - 2
    assert all(a.status_code == 429 for a in posted if a.status_code != 200)
    assert set(PEERS) <= stored
    assert len(stored) == len(PEERS) + len(served)
    assert grown <= RSS_GROWTH, grown
    assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
    assert health == 200
