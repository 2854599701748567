"""One sync with a remote: live gateways on loopback, objects through the real pipeline."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY
from services.syncer.peers import parse_remote

from mim import canonical
from mim.entities import Address
from relay.settings import DAY_SECONDS
from tests.helpers.store import wait_until
from tests.services.syncer.conftest import Nodes
from tests.services.syncer.node import change, forum


async def test_objects_and_updates_flow_from_a_to_b(nodes: Nodes) -> None:
    """Objects created on A appear on B after B syncs from A, an update on A replaces B's older
    copy, and a sync with nothing new fetches no entity page (only index, manifest, the address
    cache, which has no manifest, and the POSTs)."""
    a, b = await nodes("A"), await nodes("B")
    now = int(time.time())
    objects = forum(now, "a")
    await a.hold(objects)
    async with b.syncer() as syncer:
        first = await syncer.sync(parse_remote(a.address))
        assert first.ok, first.summary()
        await b.wait_holding(objects)
        pulled = {k: n for k, n in first.objects.items() if k != "address"}
        assert pulled == {"key": 1, "board": 1, "thread": 1, "post": 2}

        updated = change(objects[1], {"description": "now described"}, now + 1)
        await a.submit([updated])
        await a.wait_holding([updated])
        second = await syncer.sync(parse_remote(a.address))
        assert second.ok, second.summary()
        await b.wait_holding([updated])

        idle = await syncer.sync(parse_remote(a.address))
    assert idle.ok, idle.summary()
    assert idle.tally.pages.get("entity", 0) == 0
    assert set(idle.tally.pages) <= {"status", "node", "index", "manifest", "address", "post"}
    assert {k: n for k, n in idle.objects.items() if k != "address"} == {}
    # B stored A first-party, with what A says of itself, at the place B dialled
    body = await b.fetchval(
        "SELECT body FROM addresses WHERE location = '127.0.0.1' AND port = $1 AND first_party",
        a.port,
    )
    stored = canonical.loads(Address, body)
    assert stored.type == 2 and stored.client.name == "Aether"
    # and A stored B, from B's POST, as first-party
    assert await a.fetchval(
        "SELECT count(*) FROM addresses WHERE first_party AND port = $1", b.port
    )


async def test_caches_taken_whole_are_skipped_until_the_remote_lists_new_ones(
    nodes: Nodes,
) -> None:
    """After a sync, the caches B took whole are recorded; a sync while A still lists the same
    caches reads no manifest of them (counted as skipped), and B forgets caches A stops listing."""
    a, b = await nodes("A"), await nodes("B")
    objects = forum(int(time.time()) - 3 * DAY_SECONDS, "old")
    await a.hold(objects)
    stored = int(await a.fetchval("SELECT max(last_referenced) FROM objects"))

    async def covered() -> bool:  # A generates its caches every second; a cache never changes
        sql = "SELECT max(covered_to) FROM cache_generations"
        return int(await a.fetchval(sql) or 0) > stored

    await wait_until("A's caches hold the objects", covered)
    async with b.syncer() as syncer:
        first = await syncer.sync(parse_remote(a.address))
        assert first.ok, first.summary()
        await b.wait_holding(objects)
        recorded = await b.fetch("SELECT endpoint, cache FROM synced_caches ORDER BY endpoint")
        assert {r["endpoint"] for r in recorded} >= {"keys", "boards", "threads", "posts"}
        skipped = REGISTRY.get_sample_value("mim_syncer_caches_skipped_total") or 0.0
        again = await syncer.sync(parse_remote(a.address))
    assert again.ok, again.summary()
    assert {k: n for k, n in again.objects.items() if k != "address"} == {}
    assert again.tally.pages.get("entity", 0) == 0
    stable = len([r for r in recorded if r["endpoint"] in ("keys", "boards", "threads", "posts")])
    after = REGISTRY.get_sample_value("mim_syncer_caches_skipped_total") or 0.0
    assert after - skipped >= stable
    # manifests were read the first time; the second time only for caches A generated anew
    assert again.tally.pages.get("manifest", 0) < first.tally.pages.get("manifest", 0)
    now_listed = await b.fetch("SELECT endpoint, cache FROM synced_caches")
    assert {(r["endpoint"], r["cache"]) for r in recorded} <= {
        (r["endpoint"], r["cache"]) for r in now_listed
    }


async def test_a_remote_on_ipv6_is_synced_and_recorded_as_ipv6(nodes: Nodes) -> None:
    """A listening on the IPv6 loopback only: B syncs it at ``[::1]:port``, holds its objects,
    records A first-party as ``::1`` with location type 6, and A records B from B's POST, which
    came over IPv6, the same way."""
    a, b = await nodes("A", host="::1"), await nodes("B")
    objects = forum(int(time.time()), "v6")
    await a.hold(objects)
    async with b.syncer() as syncer:
        report = await syncer.sync(parse_remote(a.address))
    assert report.ok, report.summary()
    await b.wait_holding(objects)
    body = await b.fetchval("SELECT body FROM addresses WHERE first_party AND port = $1", a.port)
    stored = canonical.loads(Address, body)
    assert (stored.location, stored.location_type, stored.type) == ("::1", 6, 2)
    body = await a.fetchval("SELECT body FROM addresses WHERE first_party AND port = $1", b.port)
    assert body is not None, "A did not record B from its POST"
    assert canonical.loads(Address, body).location_type == 6


async def test_a_live_remote_that_refuses_our_post_rests_as_a_live_node(nodes: Nodes) -> None:
    """A remote whose node page says it is live but which refuses B's POST (here, a request
    proof of work under the §11.4 minimum) fails the sync at ``node_page`` yet is reported live,
    so the scheduler rests it minutes, not the days an unknown or static remote rests."""
    a, b = await nodes("A"), await nodes("B")
    async with b.syncer(request_pow=1) as syncer:
        report = await syncer.sync(parse_remote(a.address))
    assert not report.ok and report.reason == "node_page", report.summary()
    assert report.node_type == 2 and report.outcome.node_type == 2
