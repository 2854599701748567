"""The network scan, in the syncer service: every stored address pinged, the answers recorded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from mim import canonical
from mim.entities import Address
from relay.db import addresses as db_addresses
from relay.embedded import free_port
from tests.helpers.metrics import sample, scrape
from tests.services.syncer.conftest import Nodes
from tests.services.syncer.node import Node
from tests.services.syncer.test_service import running_syncer, stop_all, wait_until

pytestmark = pytest.mark.slow


async def _learn(node: Node, ports: list[int], now: int) -> None:
    """Store loopback addresses at ``ports`` in ``node``'s table as heard from a third party."""
    conn = await asyncpg.connect(node.database_url)
    try:
        for port in ports:
            address = Address(location="127.0.0.1", port=port, entity_version=1)
            await db_addresses.store_third_party(conn, address, now)
    finally:
        await conn.close()


async def _rows(node: Node) -> dict[int, dict[str, Any]]:
    conn = await asyncpg.connect(node.database_url)
    try:
        rows = await conn.fetch(
            "SELECT port, body, first_party, last_ping, last_sync, local_arrival FROM addresses"
        )
    finally:
        await conn.close()
    return {r["port"]: dict(r) for r in rows}


async def test_scan_pings_every_address_records_the_live_and_counts_the_dead(
    nodes: Nodes,
) -> None:
    """A syncer whose table holds two live nodes and a dead address, all learned third-party,
    pings them at start: the live ones then hold their own details first-party with a last ping
    of now once the store has written what the scan reported over the bus, the dead one is
    counted as unreachable and its row is unchanged; the next scan,
    seconds later, pings nobody; ``/metrics`` shows the pings by outcome and the last scan."""
    a, b, c = await nodes("A"), await nodes("B"), await nodes("C")
    dead = free_port()
    learned = int(time.time()) - 3600
    await _learn(c, [a.port, b.port, dead], learned)
    before = await _rows(c)
    with running_syncer(c, [], MIM_SYNCER_SCAN_INTERVAL_SECONDS="1") as proc:
        base = proc.wait_for("service_started")["metrics_url"]
        first = await asyncio.to_thread(proc.wait_for, "network_scan_finished", 60.0)
        started = int(time.time())
        assert first["addresses"] == 3 and first["pinged"] == 3
        assert first["online"] == 2 and first["failed"] == {"unreachable": 1}

        async def recorded() -> bool:
            rows = await _rows(c)
            return all(rows[live.port]["first_party"] for live in (a, b))

        await wait_until("the store records both live nodes first-party", recorded, within=30.0)
        rows = await _rows(c)
        for live in (a, b):
            row = rows[live.port]
            assert row["first_party"] and abs(row["last_ping"] - started) <= 60
            own = canonical.loads(Address, row["body"])
            assert (own.type, own.location_type, own.client.name) == (2, 4, "Aether")
            assert own.protocol.version_major == 1 and own.protocol.subprotocols
        assert rows[dead] == before[dead]

        again = await asyncio.to_thread(proc.wait_for, "network_scan_finished", 30.0, pinged=0)
        assert again["skipped"] == 3 and again["failed"] == {}
        text = await asyncio.to_thread(scrape, f"{base}/metrics")
        assert sample(text, "mim_syncer_pings_total", outcome="ok") == 2
        assert sample(text, "mim_syncer_pings_total", outcome="unreachable") == 1
        assert (sample(text, "mim_syncer_scan_duration_seconds_count") or 0) >= 2
        last_scan = sample(text, "mim_syncer_last_scan_timestamp_seconds") or 0
        assert abs(last_scan - time.time()) < 60
        codes = await stop_all(proc)
    assert codes == [0], proc.stderr[-2000:]
    await stop_all(*a.procs, *b.procs, *c.procs)
