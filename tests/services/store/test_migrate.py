"""Migrations: applied once, recorded, safe from several replicas at once."""

from __future__ import annotations

import asyncio

import asyncpg

from relay.db.schema import migrate, migrations


async def test_migrate_applies_every_file_once_and_records_it(empty_database: str) -> None:
    """A first run applies every migration and records it; a second run applies nothing."""
    conn = await asyncpg.connect(empty_database)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
        recorded = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()
    versions = [m.version for m in migrations()]
    assert first == versions
    assert second == []
    assert [(r["version"], r["name"]) for r in recorded] == [
        (m.version, m.name) for m in migrations()
    ]
    expected = {"objects", "board_owners", "addresses", "sync_cursors", "blocks", "node_state",
                "synced_caches"}  # fmt: skip
    assert expected <= tables


async def test_three_replicas_migrating_at_once_apply_each_file_exactly_once(
    empty_database: str,
) -> None:
    """Three concurrent migrate calls all succeed, and exactly one of them applies the schema."""
    pool = await asyncpg.create_pool(empty_database, min_size=3, max_size=3)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(migrate(pool) for _ in range(3))), timeout=30
        )
        count = await pool.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await pool.close()
    assert sorted(len(r) for r in results) == [0, 0, len(migrations())]
    assert count == len(migrations())
