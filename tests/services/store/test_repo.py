"""Reads and small writes other services make on the store's tables."""

from __future__ import annotations

import asyncpg

from mim import canonical
from mim.entities import Provable
from relay.db import blocks as db_blocks
from relay.db import cursors, objects, retention, storing
from relay.settings import DAY_SECONDS
from tests.services.store.factory import Factory

DAY = DAY_SECONDS


async def seed(pool: asyncpg.Pool, objs: list[Provable], now: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await storing.store_objects(conn, objs, now)


async def test_lookups_by_fingerprint_version_and_reference_window(pool: asyncpg.Pool) -> None:
    """get, have_versions, objects_by_fingerprints and keyset paging return what was stored."""
    f = Factory(8)
    board = f.board(now=5)
    newer = f.update(board, {"description": "d"}, now=9)
    others = [f.board(name=f"board {i}", now=5) for i in range(5)]
    await seed(pool, [newer], 100)
    await seed(pool, others, 200)
    got = await objects.get(pool, "board", board.fingerprint)
    assert got is not None and got.body == canonical.dumps(newer) and got.last_update == 9
    held = await objects.have_versions(
        pool, "board", [(board.fingerprint, 9), (board.fingerprint, 10), ("f" * 64, 0)]
    )
    assert held == {(board.fingerprint, 9)}
    fps = [o.fingerprint for o in others[:2]] + ["0" * 64]
    assert {o.fingerprint for o in await objects.with_fingerprints(pool, "board", fps)} == set(
        fps[:2]
    )
    page1 = await objects.cache_entries(pool, "board", 150, 300, limit=3)
    last = page1[-1]
    page2 = await objects.cache_entries(
        pool, "board", 150, 300, limit=3, after=(last.last_referenced, last.fingerprint)
    )
    assert {o.fingerprint for o in page1 + page2} == {o.fingerprint for o in others}
    assert len(page1) == 3 and len(page2) == 2
    bodies = await objects.cache_bodies(pool, "board", 150, 300, limit=3)
    assert [fp for _, fp, _ in bodies] == [o.fingerprint for o in page1]
    first = next(o for o in others if o.fingerprint == page1[0].fingerprint)
    assert bodies[0][2] == canonical.encode(first)
    assert await objects.counts(pool) == {"board": 6}
    exported = [body async for _, body in objects.export_all(pool, chunk=4)]
    assert len(exported) == 6


async def test_collect_forgets_only_what_left_the_memory_window(pool: asyncpg.Pool) -> None:
    """Retention removes objects last referenced before the memory window, never the head."""
    f = Factory(9)
    now = 1000 * DAY
    old, recent = f.board(name="old board", now=1), f.board(name="recent board", now=1)
    await seed(pool, [old], now - 200 * DAY)
    await seed(pool, [recent], now - 10 * DAY)
    assert await retention.collect(pool, now, memory_days=5, head_days=14) == {"board": 1}
    assert await objects.get(pool, "board", recent.fingerprint) is not None
    assert await objects.get(pool, "board", old.fingerprint) is None


async def test_cursors_never_move_backwards(pool: asyncpg.Pool) -> None:
    """A sync cursor set to an earlier time keeps its later value."""
    assert await cursors.get(pool, "node", "boards") == 0
    assert await cursors.advance(pool, "node", "boards", 50) == 50
    assert await cursors.advance(pool, "node", "boards", 40) == 50
    assert await cursors.get(pool, "node", "boards") == 50


async def test_block_list_add_list_remove(pool: asyncpg.Pool) -> None:
    """Blocks are added once (reason updated), listed, and removed."""
    assert await db_blocks.add(pool, "a" * 64, "spam")
    assert not await db_blocks.add(pool, "a" * 64, "abuse")
    assert [(b.fingerprint, b.reason) for b in await db_blocks.listing(pool)] == [
        ("a" * 64, "abuse")
    ]
    assert await db_blocks.remove(pool, "a" * 64)
    assert not await db_blocks.remove(pool, "a" * 64)
    assert await db_blocks.listing(pool) == []


async def test_node_state_round_trips(pool: asyncpg.Pool) -> None:
    """A node-wide value is stored and replaced."""
    assert await cursors.get_state(pool, "generation") is None
    await cursors.set_state(pool, "generation", "1")
    await cursors.set_state(pool, "generation", "2")
    assert await cursors.get_state(pool, "generation") == "2"
