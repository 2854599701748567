"""Cache upkeep as an operator meets it: generations keep coming, whatever the store holds."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import httpx

from mim.entities import Address
from relay.db import addresses as db_addresses
from tests.helpers.store import wait_until
from tests.services.gateway.conftest import serving
from tests.services.gateway.crawler import crawl


async def test_many_addresses_stored_in_one_second_do_not_stop_the_generations(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """Addresses stored in the same second (as one sync batch stores them) are served by the next
    generation, and the generations keep coming."""
    async with (
        serving(
            fresh_database, nats_url, stream_prefix, tmp_path,
            cache_interval_seconds=0.2, live_tail_overlap_seconds=0,
        ) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):  # fmt: skip
        gw = running.gateway
        first = gw.caches.generation
        arrived = int(time.time())
        conn = await asyncpg.connect(fresh_database)
        try:
            async with conn.transaction():  # one batch, as the store writes a sync's addresses
                for n in range(40):
                    address = Address(location=f"192.0.2.{n + 1}", port=4000 + n, entity_version=1)
                    await db_addresses.store_third_party(conn, address, arrived)
        finally:
            await conn.close()

        async def advanced() -> bool:
            return bool(gw.caches.generation != first)

        await wait_until("a later generation", advanced)
        result = await crawl(client)
    assert len(result.addresses) == 40
