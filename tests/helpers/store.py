"""The store's schema in test databases, and its writer in the test's process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import nats
from services.store.writer import Writer

from relay.bus import Layout, ensure_streams
from relay.db.schema import migrate


async def migrate_template(url: str) -> None:
    """Apply the store's migrations to the template database ``fresh_database`` is cloned from.

    A test module that needs the schema returns this from its ``database_template_setup``.
    """
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@asynccontextmanager
async def running_writer(nats_url: str, database_url: str, layout: Layout) -> AsyncIterator[None]:
    """The store's writer, in this process, storing what reaches the accepted stream (first-party
    addresses included) until the block ends."""
    nc = await nats.connect(nats_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    await ensure_streams(nc.jetstream(), layout)
    stop = asyncio.Event()
    task = asyncio.create_task(Writer(nc, pool, layout, fetch_timeout=0.2).run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await pool.close()
        await nc.close()


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.05)
