"""The syncer's own records: how far each remote is synced (PROTOCOL.md §20.5). Writer: the syncer.

``sync_cursors`` holds, per remote node and endpoint, the page time we have synced up to; a cursor
never moves backwards, so a replica with a stale view cannot undo another's progress.
``synced_caches`` holds the caches of each endpoint we took whole, so a later sync skips them.
``syncer_state`` holds small values such as the time of the last successful bootstrap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import asyncpg

from relay.db import Db

__all__ = [
    "LAST_BOOTSTRAP",
    "WRITER",
    "WRITES",
    "Cursor",
    "advance",
    "all_cursors",
    "get",
    "get_state",
    "set_state",
    "set_synced_caches",
    "synced_caches",
]

#: The one service that writes ``sync_cursors``, ``synced_caches`` and ``syncer_state``.
WRITER: Final = "syncer"
#: The functions here that write; only the writer's code may call them.
WRITES: Final = ("advance", "set_state", "set_synced_caches")

#: ``syncer_state`` key of the Unix time of the last successful bootstrap.
LAST_BOOTSTRAP: Final = "syncer.last_bootstrap"


@dataclass(frozen=True, slots=True)
class Cursor:
    node_id: str
    endpoint: str
    checkin: int


async def get(db: Db, node_id: str, endpoint: str) -> int:
    """How far we have synced ``endpoint`` of ``node_id`` (0: never)."""
    value = await db.fetchval(
        "SELECT checkin FROM sync_cursors WHERE node_id = $1 AND endpoint = $2", node_id, endpoint
    )
    return int(value or 0)


async def all_cursors(db: Db) -> list[Cursor]:
    """Every cursor, by node and endpoint."""
    rows = await db.fetch(
        "SELECT node_id, endpoint, checkin FROM sync_cursors ORDER BY node_id, endpoint"
    )
    return [Cursor(r["node_id"], r["endpoint"], int(r["checkin"])) for r in rows]


async def advance(db: Db, node_id: str, endpoint: str, checkin: int) -> int:
    """Move the cursor to ``checkin`` unless it is already later; return the cursor now."""
    value = await db.fetchval(
        "INSERT INTO sync_cursors AS c (node_id, endpoint, checkin) VALUES ($1, $2, $3)"
        " ON CONFLICT (node_id, endpoint) DO UPDATE"
        " SET checkin = GREATEST(c.checkin, EXCLUDED.checkin) RETURNING checkin",
        node_id,
        endpoint,
        checkin,
    )
    return int(value)


async def synced_caches(db: Db, node_id: str, endpoint: str) -> set[str]:
    """The caches of ``endpoint`` of ``node_id`` we took whole (see ``set_synced_caches``)."""
    rows = await db.fetch(
        "SELECT cache FROM synced_caches WHERE node_id = $1 AND endpoint = $2", node_id, endpoint
    )
    return {r["cache"] for r in rows}


async def set_synced_caches(
    pool: asyncpg.Pool[asyncpg.Record], node_id: str, endpoint: str, caches: Iterable[str]
) -> None:
    """Record exactly ``caches`` as taken whole; caches the remote no longer lists are forgotten."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM synced_caches WHERE node_id = $1 AND endpoint = $2", node_id, endpoint
        )
        await conn.execute(
            "INSERT INTO synced_caches (node_id, endpoint, cache)"
            " SELECT $1, $2, c FROM unnest($3::text[]) AS c",
            node_id,
            endpoint,
            sorted(set(caches)),
        )


async def get_state(db: Db, key: str) -> str | None:
    """One of the syncer's small values, or None."""
    value: str | None = await db.fetchval("SELECT value FROM syncer_state WHERE key = $1", key)
    return value


async def set_state(db: Db, key: str, value: str) -> None:
    await db.execute(
        "INSERT INTO syncer_state (key, value) VALUES ($1, $2)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        key,
        value,
    )
