"""Three nodes on loopback, each with its own syncer process: A ↔ B ↔ C, and never A ↔ C."""

from __future__ import annotations

import time
from dataclasses import replace

import asyncpg
import nats
import pytest

from mim import canonical
from mim.entities import Address, Client
from relay.submit import submit
from tests.services.syncer.conftest import Nodes
from tests.services.syncer.node import Node, change, forum
from tests.services.syncer.test_service import running_syncer, stop_all, wait_until

pytestmark = pytest.mark.slow


async def _address_row(node: Node, of: Node) -> tuple[Address, bool] | None:
    """``of``'s row in ``node``'s address table, parsed, with its first-party flag."""
    conn = await asyncpg.connect(node.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT body, first_party FROM addresses WHERE location = '127.0.0.1' AND port = $1",
            of.port,
        )
    finally:
        await conn.close()
    return None if row is None else (canonical.loads(Address, row["body"]), row["first_party"])


async def _publish_as_peer(node: Node, addresses: list[Address]) -> None:
    """Put ``addresses`` on ``node``'s ingest stream as a syncer would after reading a page."""
    nc = await nats.connect(node.nats_url)
    try:
        js = nc.jetstream()
        for address in addresses:
            raw = canonical.encode(address)
            await submit(js, node.layout, "address", raw, source="peer")
    finally:
        await nc.close()


async def test_three_nodes_converge_through_the_middle_one(nodes: Nodes) -> None:
    """Objects made on A reach C and objects made on C reach A through B alone; afterwards the
    three stores hold the same versions, and a board updated on A and later on C holds the later
    version everywhere."""
    a, b, c = await nodes("A"), await nodes("B"), await nodes("C")
    base = int(time.time()) - 60
    on_a, on_c = forum(base, "made on A"), forum(base, "made on C")
    await a.submit(on_a)
    await c.submit(on_c)
    await a.wait_holding(on_a)
    await c.wait_holding(on_c)
    with (
        running_syncer(a, [b]) as sa,
        running_syncer(b, [a, c]) as sb,
        running_syncer(c, [b]) as sc,
    ):
        await c.wait_holding(on_a, within=60.0)
        await a.wait_holding(on_c, within=60.0)

        board = on_a[1]
        first = change(board, {"description": "edited on A"}, base + 1)
        later = change(board, {"description": "edited on C, later"}, base + 2)
        thread = change(on_c[2], {"body": "edited on C"}, base + 3)
        await a.submit([first])
        await a.wait_holding([first])
        await c.submit([later, thread])
        for node in (a, b, c):
            await node.wait_holding([later, thread], within=60.0)

        async def same() -> bool:
            held = [await node.held() for node in (a, b, c)]
            return held[0] == held[1] == held[2]

        await wait_until("the three stores hold the same versions", same, within=30.0)
        held = await a.held()
        assert held[("board", board.fingerprint)] == base + 2
        assert {k for k in held if k[0] != "address"} >= {
            (o.kind, o.fingerprint) for o in (*on_a, *on_c)
        }
        # C never dialled A: C's syncer only ever finished syncs with B
        assert {r["remote"] for r in sc.events("peer_sync_finished")} == {b.address}
        codes = await stop_all(sa, sb, sc, *a.procs, *b.procs, *c.procs)
    assert codes[:3] == [0, 0, 0]


async def test_addresses_first_party_only_from_a_direct_connection(nodes: Nodes) -> None:
    """C learns A's address through B stripped to its location and port; after C syncs with A
    directly it holds A's own details; an address for A's place published by a third party, with
    other details, changes nothing of that row."""
    a, b, c = await nodes("A"), await nodes("B"), await nodes("C")
    with (
        running_syncer(a, [b]) as sa,
        running_syncer(b, [a, c]) as sb,
        running_syncer(c, [b]) as sc,
    ):

        async def c_knows_a() -> bool:
            return await _address_row(c, a) is not None

        await wait_until("C holds an address row for A", c_knows_a, within=60.0)
        learned = await _address_row(c, a)
        assert learned is not None
        stripped, first_party = learned
        assert not first_party
        assert (stripped.location, stripped.port) == ("127.0.0.1", a.port)
        assert stripped.type == 0 and stripped.location_type == 0
        assert stripped.client == Client() and stripped.protocol.subprotocols in ((), None)
        assert stripped.protocol.version_major == 0

        code, out, err = await c.cli("sync", f"http://{a.address}")
        assert code == 0, err
        assert out.startswith("ok"), out
        direct = await _address_row(c, a)
        assert direct is not None
        own, first_party = direct
        assert first_party
        assert (own.location, own.port, own.type, own.location_type) == ("127.0.0.1", a.port, 2, 4)
        assert own.client.name == "Aether" and own.protocol.version_major == 1
        before = await c.fetchval(
            "SELECT row(body, first_party, type) FROM addresses WHERE location = '127.0.0.1'"
            " AND port = $1",
            a.port,
        )

        forged = replace(own, type=255, client=replace(own.client, name="Forged", version_major=9))
        marker = replace(forged, port=1)  # a new place, so its arrival shows the batch was stored
        await _publish_as_peer(c, [forged, marker])

        async def marker_stored() -> bool:
            return bool(await c.fetchval("SELECT count(*) FROM addresses WHERE port = 1"))

        await wait_until("C stores the marker address", marker_stored, within=30.0)
        after = await c.fetchval(
            "SELECT row(body, first_party, type) FROM addresses WHERE location = '127.0.0.1'"
            " AND port = $1",
            a.port,
        )
        assert after == before
        marker_row = await c.fetchval("SELECT row(body, first_party) FROM addresses WHERE port = 1")
        assert canonical.loads(Address, marker_row[0]).client == Client() and not marker_row[1]
        codes = await stop_all(sa, sb, sc, *a.procs, *b.procs, *c.procs)
    assert codes[:3] == [0, 0, 0]
