"""Waiting on the ingest pipeline from outside: streams drained, rows committed."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from nats.js import JetStreamContext

from relay.bus import Layout


async def wait_drained(
    js: JetStreamContext,
    layout: Layout,
    database_url: str,
    *,
    stored: int,
    rejected: int = 0,
    limit: float = 60.0,
) -> None:
    """Until the database holds ``stored`` objects, the rejected stream ``rejected`` messages,
    and the ingest and accepted streams are empty; fail naming what is short after ``limit`` s."""
    deadline = time.monotonic() + limit
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            held = await conn.fetchval("SELECT count(*) FROM objects")
            refused = (await js.stream_info(layout.rejected_stream)).state.messages
            ingest = (await js.stream_info(layout.ingest_stream)).state.messages
            accepted = (await js.stream_info(layout.accepted_stream)).state.messages
            if held >= stored and refused >= rejected and ingest == 0 and accepted == 0:
                return
            assert time.monotonic() < deadline, (
                f"not drained in {limit}s: {held}/{stored} stored, {refused}/{rejected} rejected,"
                f" {ingest} on ingest, {accepted} accepted pending"
            )
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
