"""Retention (§20.6), the store's: what leaves the memory window is forgotten and counted, by
one store replica at a time."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime
from typing import Any

import asyncpg
from services.store.retention import collect_once
from services.store.settings import StoreSettings

from relay.db import storing
from relay.settings import load
from tests.helpers.procs import ServiceProcess
from tests.helpers.store import wait_until
from tests.services.syncer.node import forum


async def test_retention_removes_only_what_left_the_memory_window(fresh_database: str) -> None:
    """Objects last referenced before the memory window are removed and counted; one inside the
    network head stays, as does an old key that recent objects reference."""
    now = int(time.time())
    old, recent = forum(now - 400 * 86400, "old"), forum(now, "recent")
    conn = await asyncpg.connect(fresh_database)
    try:
        async with conn.transaction():
            await storing.store_objects(conn, old, now - 300 * 86400)
            await storing.store_objects(conn, recent, now - 60)
    finally:
        await conn.close()
    settings = load(StoreSettings, database_url=fresh_database, network_memory_days=180)
    pool = await asyncpg.create_pool(fresh_database, min_size=1, max_size=2)
    try:
        removed = await collect_once(pool, settings)
        left = {r["fingerprint"] for r in await pool.fetch("SELECT fingerprint FROM objects")}
    finally:
        await pool.close()
    # the old key is still referenced: the recent objects it signed bumped it (§14)
    assert removed == {"board": 1, "thread": 1, "post": 2}
    assert left == {o.fingerprint for o in recent} | {old[0].fingerprint}


def _at(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_two_store_replicas_take_turns_at_retention(
    database: str, nats_url: str, stream_prefix: str
) -> None:
    """Two store processes with a 2 s retention interval: runs come from either, never two
    within the interval of each other; once the replica that ran last is stopped, the other runs
    it on its own."""
    env = {
        "MIM_DATABASE_URL": database,
        "MIM_NATS_URL": nats_url,
        "MIM_STREAM_PREFIX": stream_prefix,
        "MIM_STORE_METRICS_PORT": "0",
        "MIM_STORE_COLLECT_INTERVAL_SECONDS": "2",
        "MIM_STORE_LEASE_SECONDS": "1",
    }
    with (
        ServiceProcess(["-m", "services.store"], env) as one,
        ServiceProcess(["-m", "services.store"], env) as two,
    ):
        for proc in (one, two):
            await asyncio.to_thread(proc.wait_for, "service_ready", 60.0)

        def runs() -> list[tuple[float, ServiceProcess]]:
            found = [(_at(r), p) for p in (one, two) for r in p.events("retention_collected")]
            return sorted(found, key=lambda run: run[0])

        async def five_runs() -> bool:
            return len(runs()) >= 5

        await wait_until("five retention runs", five_runs, within=60.0)
        times = [at for at, _ in runs()]
        assert all(b - a >= 1.9 for a, b in itertools.pairwise(times)), times
        last = runs()[-1][1]
        survivor = two if last is one else one
        last.terminate()
        assert await asyncio.to_thread(last.wait, 30.0) == 0
        stopped = time.time()

        async def survivor_ran() -> bool:
            return any(_at(r) > stopped for r in survivor.events("retention_collected"))

        await wait_until("the other replica runs retention", survivor_ran, within=30.0)
        survivor.terminate()
        assert await asyncio.to_thread(survivor.wait, 30.0) == 0
