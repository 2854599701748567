"""Retention (§20.6), the store's: what leaves the memory window is forgotten and counted."""

from __future__ import annotations

import time

import asyncpg
from services.store.retention import collect_once
from services.store.settings import StoreSettings

from relay.db import storing
from relay.settings import load
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
