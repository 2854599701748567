"""The bootstrap check (§13.3) in the syncer service: bootstrappers found through MIM_BOOTSTRAP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from services.syncer.peers import parse_remote

from mim import canonical
from mim.entities import Address
from relay.db.cursors import LAST_BOOTSTRAP
from tests.helpers.procs import export_static
from tests.services.syncer.conftest import Nodes
from tests.services.syncer.node import forum
from tests.services.syncer.test_service import running_syncer, stop_all, wait_until
from tests.services.syncer.test_static import file_server, node_key, static_node_files

pytestmark = pytest.mark.slow

STATIC_BOOTSTRAPPER = 254  # §10.3


async def test_bootstrap_learns_pings_and_syncs_the_bootstrappers_once(
    nodes: Nodes, tmp_path: Path
) -> None:
    """C, bootstrapped from B, asks B for ``/v0/bootstrappers``, which lists S (a static
    bootstrapper serving A's export): C stores S first-party after a ping, syncs S with GETs,
    records the bootstrap time in its database, and neither that syncer nor a restarted one
    bootstraps again before the interval."""
    a, b, c = await nodes("A"), await nodes("B"), await nodes("C")
    now = int(time.time())
    objects = forum(now, "bootstrap")
    await a.hold(objects)
    root = tmp_path / "s"
    await export_static(a.database_url, root)
    static_node_files(root, await node_key(a), now, node_type=STATIC_BOOTSTRAPPER)
    async with file_server(root) as s_address:
        async with b.syncer() as syncer:  # B learns S first-party, as type 254
            learned = await syncer.sync(parse_remote(f"http://{s_address}"))
        assert learned.ok and learned.node_type == STATIC_BOOTSTRAPPER, learned.summary()

        with running_syncer(c, [b]) as proc:
            found = await asyncio.to_thread(proc.wait_for, "bootstrappers_found", 60.0)
            assert found["named"] == 1 and found["remotes"] == [s_address]
            synced = await asyncio.to_thread(
                proc.wait_for, "peer_sync_finished", 60.0, remote=s_address
            )
            assert synced["ok"] and synced["node_type"] == STATIC_BOOTSTRAPPER
            assert set(synced["pages"]) <= {"status", "node", "index", "manifest", "entity",
                                            "address"}  # fmt: skip
            done = await asyncio.to_thread(proc.wait_for, "bootstrap_finished", 30.0)
            assert done["synced"] == 1
            await c.wait_holding(objects, within=60.0)
            body = await c.fetchval(
                "SELECT body FROM addresses WHERE first_party AND location = '127.0.0.1'"
                " AND port = $1",
                int(s_address.rsplit(":", 1)[1]),
            )
            assert canonical.loads(Address, body).type == STATIC_BOOTSTRAPPER
            recorded = int(await c.fetchval("SELECT value FROM syncer_state WHERE key = $1",
                                            LAST_BOOTSTRAP))  # fmt: skip
            assert abs(recorded - time.time()) < 120
            ticks = len(proc.events("peer_sync_finished"))

            async def more_ticks() -> bool:  # with B, the bootstrap remote, every tick
                return len(proc.events("peer_sync_finished")) >= ticks + 4

            await wait_until("four more syncs", more_ticks, within=60.0)
            assert len(proc.events("bootstrappers_found")) == 1
            assert await stop_all(proc) == [0]

        with running_syncer(c, [b]) as again:
            started = again.wait_for("syncer_started")
            assert started["last_bootstrap"] == recorded
            await asyncio.to_thread(again.wait_for, "peer_sync_finished", 60.0, remote=b.address)
            assert again.events("bootstrappers_found") == []
            assert await stop_all(again) == [0]
    await stop_all(*a.procs, *b.procs, *c.procs)
