"""Gateway replicas of one node as an operator runs them: separate processes over one NATS and
one database, one of them building the caches, all of them serving them."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import asyncpg
import httpx

from mim import canonical
from mim.entities import ApiResponse
from tests.helpers.gateways import LEASE_SECONDS, Replica, replica
from tests.helpers.store import wait_until
from tests.services.gateway.conftest import make, store
from tests.services.gateway.conftest import sample as forum
from tests.services.gateway.crawler import ENDPOINTS, crawl


async def _files(client: httpx.AsyncClient) -> dict[str, bytes]:
    """Every file a crawl of ``client``'s node reads: each endpoint's index.json and every page
    of every cache it lists."""
    found: dict[str, bytes] = {}
    for endpoint in [*ENDPOINTS, "v0/addresses"]:
        index = (await client.get(f"/{endpoint}/index.json")).content
        found[f"{endpoint}/index.json"] = index
        for cache in canonical.loads(ApiResponse, index).results or ():
            for folder in ("", "index/", "manifest/"):
                n = 0
                while True:
                    path = f"{endpoint}/{cache.response_url}/{folder}{n}.json"
                    got = await client.get(f"/{path}")
                    if got.status_code != 200:
                        break
                    found[path] = got.content
                    n += 1
    return found


async def _same_generation(one: Replica, other: Replica) -> None:
    """Wait until both replicas serve the same index.json for every endpoint."""

    async def agreed() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            for endpoint in ENDPOINTS:
                first = await client.get(f"{one.url}/{endpoint}/index.json")
                second = await client.get(f"{other.url}/{endpoint}/index.json")
                if first.status_code != 200 or first.content != second.content:
                    return False
        return True

    await wait_until("both replicas on one generation", agreed)


async def test_replicas_serve_the_same_bytes_and_each_crawls_clean(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """Two replicas of one node serve byte-identical index and cache files for the same
    generation, the crawler verifies every page from each, and exactly one of them builds."""
    now = int(time.time())
    objects = forum(now - 600)
    await store(fresh_database, objects, now - 300)
    with (
        replica(fresh_database, nats_url, stream_prefix, tmp_path / "a") as a,
        replica(fresh_database, nats_url, stream_prefix, tmp_path / "b") as b,
    ):
        await _same_generation(a, b)
        served = []
        for one in (a, b):
            async with httpx.AsyncClient(base_url=one.url, timeout=10) as client:
                crawled = await crawl(client)
                served.append(await _files(client))
            assert {fp for found in crawled.objects.values() for fp in found} == {
                o.fingerprint for o in objects
            }
        builders = [a.building, b.building]
    assert served[0] == served[1]
    assert len(served[0]) > len(ENDPOINTS)
    assert builders.count(True) == 1


async def test_killing_the_builder_hands_building_to_the_other(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """When the replica that builds is killed (no chance to give the lease up), the other
    takes the lease within its time (plus one ask) and its caches take in what is stored
    afterwards, which the crawler then finds."""
    with (
        replica(fresh_database, nats_url, stream_prefix, tmp_path / "a") as a,
        replica(fresh_database, nats_url, stream_prefix, tmp_path / "b") as b,
    ):
        await _same_generation(a, b)
        builder, other = (a, b) if a.building else (b, a)
        assert not other.building
        builder.proc.send(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.to_thread(other.proc.wait_for, "cache_builder_acquired", 30)
        took_over = time.monotonic() - killed
        later = int(time.time())
        board = make("board", {"name": "after the handover"}, later)
        await store(fresh_database, [board], later)

        async def served() -> bool:
            async with httpx.AsyncClient(base_url=other.url, timeout=10) as client:
                return board.fingerprint in (await crawl(client)).objects.get("board", set())

        await wait_until("the board in the new builder's caches", served)
        generated = other.proc.events("caches_generated")
    assert took_over <= LEASE_SECONDS + 1.5  # the lease's time, one ask, and a little slack
    assert generated, "the replica that took over published no generation"


async def test_a_failing_build_shows_in_logs_metrics_and_health(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A cache build that raises (its table gone) is logged with the error, counted, retried,
    and after the set number of failures in a row turns /healthz to 503 naming the caches; once
    the table is back the next generation succeeds and health is 200 again."""
    failures_unhealthy = 2
    extra = {"MIM_GATEWAY_CACHE_FAILURES_UNHEALTHY": str(failures_unhealthy)}
    with replica(fresh_database, nats_url, stream_prefix, tmp_path, **extra) as one:

        async def healthy() -> bool:
            return one.health()[0] == 200

        await wait_until("health 200", healthy, within=30)
        await store(fresh_database, forum(int(time.time())), int(time.time()))
        await _execute(fresh_database, "ALTER TABLE cache_files RENAME TO cache_files_away")

        async def unhealthy() -> bool:
            return one.health()[0] == 503

        await wait_until("health 503", unhealthy, within=30)
        status, body = one.health()
        failed = one.proc.last("caches_generation_failed")
        failures = one.metric("mim_gateway_cache_failures_total")
        await _execute(fresh_database, "ALTER TABLE cache_files_away RENAME TO cache_files")
        await wait_until("health 200 again", healthy, within=30)
        recovered = one.proc.last("caches_recovered")
    assert status == 503 and "caches" in json.dumps(body)
    assert "cache_files" in failed["error"]
    assert failures is not None and failures >= failures_unhealthy
    assert recovered["after_failures"] >= failures_unhealthy


async def _execute(database: str, sql: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
