"""What other services read from (and a few small things they write to) the store's tables.

Plain async functions over an asyncpg pool (or connection): the gateway reads objects by
``last_referenced`` window and by fingerprint, the syncer asks which versions we already hold and
keeps its cursors and addresses, the validator reads the block list, the collector forgets what
fell out of the memory window (§20.6). Objects come back as their exact canonical JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from mim.entities import Address
from services.store import persist

__all__ = [
    "DAY_SECONDS",
    "Block",
    "StoredAddress",
    "StoredObject",
    "add_block",
    "collect",
    "counts",
    "export_all",
    "get",
    "get_cursor",
    "get_state",
    "have_versions",
    "list_addresses",
    "list_blocks",
    "memory_cutoff",
    "objects_by_fingerprints",
    "objects_referenced_between",
    "remove_block",
    "set_cursor",
    "set_state",
    "set_synced_caches",
    "synced_caches",
    "upsert_first_party_address",
    "upsert_third_party_address",
]

DAY_SECONDS: Final = 86_400

Executor = Any  # asyncpg.Pool or asyncpg.Connection: both have fetch/fetchrow/fetchval/execute


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One stored object: its canonical JSON and the node-local times."""

    kind: str
    fingerprint: str
    body: str
    creation: int
    last_update: int
    local_arrival: int
    last_referenced: int


@dataclass(frozen=True, slots=True)
class StoredAddress:
    location: str
    sublocation: str
    port: int
    body: str
    first_party: bool
    last_ping: int
    last_sync: int
    local_arrival: int


@dataclass(frozen=True, slots=True)
class Block:
    fingerprint: str
    reason: str
    created_at: float


_OBJECT_COLUMNS: Final = (
    "kind, fingerprint, body, creation, last_update, local_arrival, last_referenced"
)


def _object(row: Any) -> StoredObject:
    return StoredObject(**dict(row))


# --------------------------------------------------------------------------- objects


async def get(db: Executor, kind: str, fingerprint: str) -> StoredObject | None:
    """The stored version of one object, or None."""
    row = await db.fetchrow(
        f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE kind = $1 AND fingerprint = $2",  # noqa: S608
        kind,
        fingerprint,
    )
    return None if row is None else _object(row)


async def have_versions(
    db: Executor, kind: str, versions: Iterable[tuple[str, int]]
) -> set[tuple[str, int]]:
    """Those ``(fingerprint, last_update)`` pairs we hold at that version or a newer one."""
    pairs = list(versions)
    if not pairs:
        return set()
    rows = await db.fetch(
        "SELECT v.fp, v.lu FROM unnest($2::text[], $3::bigint[]) AS v (fp, lu)"
        " JOIN objects o ON o.kind = $1 AND o.fingerprint = v.fp AND o.last_update >= v.lu",
        kind,
        [fp for fp, _ in pairs],
        [lu for _, lu in pairs],
    )
    return {(r["fp"], int(r["lu"])) for r in rows}


async def objects_referenced_between(
    db: Executor,
    kind: str,
    start: int,
    end: int,
    *,
    limit: int = 1000,
    after: tuple[int, str] | None = None,
) -> list[StoredObject]:
    """Objects of ``kind`` with ``start <= last_referenced < end``, oldest first.

    Keyset paging: pass the ``(last_referenced, fingerprint)`` of the last row seen as ``after``.
    """
    since, since_fp = after if after is not None else (start, "")
    rows = await db.fetch(
        f"SELECT {_OBJECT_COLUMNS} FROM objects"  # noqa: S608
        " WHERE kind = $1 AND last_referenced >= $2 AND last_referenced < $3"
        "   AND (last_referenced, fingerprint) > ($4, $5)"
        " ORDER BY last_referenced, fingerprint LIMIT $6",
        kind,
        start,
        end,
        since,
        since_fp if after is not None else "",
        limit,
    )
    return [_object(r) for r in rows]


async def objects_by_fingerprints(
    db: Executor, kind: str, fingerprints: Sequence[str]
) -> list[StoredObject]:
    """The stored objects of ``kind`` among ``fingerprints``, in fingerprint order."""
    rows = await db.fetch(
        f"SELECT {_OBJECT_COLUMNS} FROM objects"  # noqa: S608
        " WHERE kind = $1 AND fingerprint = ANY($2::text[]) ORDER BY fingerprint",
        kind,
        list(fingerprints),
    )
    return [_object(r) for r in rows]


async def counts(db: Executor) -> dict[str, int]:
    """Stored objects per kind, plus ``address``; kinds with none are absent."""
    rows = await db.fetch(
        "SELECT kind, count(*) AS n FROM objects GROUP BY kind"
        " UNION ALL SELECT 'address', count(*) FROM addresses HAVING count(*) > 0"
    )
    return {r["kind"]: int(r["n"]) for r in rows}


async def export_all(pool: asyncpg.Pool, *, chunk: int = 500) -> AsyncIterator[tuple[str, str]]:
    """Every stored object as ``(kind, canonical JSON)``, in (kind, fingerprint) order."""
    last = ("", "")
    while True:
        rows = await pool.fetch(
            "SELECT kind, fingerprint, body FROM objects WHERE (kind, fingerprint) > ($1, $2)"
            " ORDER BY kind, fingerprint LIMIT $3",
            last[0],
            last[1],
            chunk,
        )
        for row in rows:
            yield row["kind"], row["body"]
        if len(rows) < chunk:
            return
        last = (rows[-1]["kind"], rows[-1]["fingerprint"])


def memory_cutoff(now: int, memory_days: int, head_days: int) -> int:
    """The event horizon: the start of the memory window, never inside the network head (§20.6)."""
    return now - max(memory_days, head_days) * DAY_SECONDS


async def collect(db: Executor, now: int, memory_days: int, head_days: int) -> dict[str, int]:
    """Forget objects last referenced before the memory window; return removed counts per kind.

    Nothing inside the network head is ever removed, whatever ``memory_days`` says (§20.6).
    """
    cutoff = memory_cutoff(now, memory_days, head_days)
    rows = await db.fetch(
        "WITH gone AS (DELETE FROM objects WHERE last_referenced < $1 RETURNING kind, fingerprint),"
        " owners AS (DELETE FROM board_owners WHERE board IN"
        "   (SELECT fingerprint FROM gone WHERE kind = 'board'))"
        " SELECT kind, count(*) AS n FROM gone GROUP BY kind",
        cutoff,
    )
    return {r["kind"]: int(r["n"]) for r in rows}


# --------------------------------------------------------------------------- block list


async def add_block(db: Executor, fingerprint: str, reason: str = "") -> bool:
    """Block ``fingerprint``; return False if it was already blocked (the reason is updated)."""
    inserted = await db.fetchval(
        "INSERT INTO blocks (fingerprint, reason) VALUES ($1, $2)"
        " ON CONFLICT (fingerprint) DO UPDATE SET reason = EXCLUDED.reason"
        " RETURNING (xmax = 0)",
        fingerprint,
        reason,
    )
    return bool(inserted)


async def remove_block(db: Executor, fingerprint: str) -> bool:
    """Unblock ``fingerprint``; return False if it was not blocked."""
    status: str = await db.execute("DELETE FROM blocks WHERE fingerprint = $1", fingerprint)
    return status != "DELETE 0"


async def list_blocks(db: Executor) -> list[Block]:
    """Every blocked fingerprint, oldest block first."""
    rows = await db.fetch(
        "SELECT fingerprint, reason, extract(epoch FROM created_at)::float8 AS created_at"
        " FROM blocks ORDER BY created_at, fingerprint"
    )
    return [Block(r["fingerprint"], r["reason"], float(r["created_at"])) for r in rows]


# --------------------------------------------------------------------------- sync cursors


async def get_cursor(db: Executor, node_id: str, endpoint: str) -> int:
    """How far we have synced ``endpoint`` of ``node_id`` (0: never)."""
    value = await db.fetchval(
        "SELECT checkin FROM sync_cursors WHERE node_id = $1 AND endpoint = $2", node_id, endpoint
    )
    return int(value or 0)


async def set_cursor(db: Executor, node_id: str, endpoint: str, checkin: int) -> int:
    """Move the cursor to ``checkin`` unless it is already later; return the cursor now (§20.5)."""
    value = await db.fetchval(
        "INSERT INTO sync_cursors AS c (node_id, endpoint, checkin) VALUES ($1, $2, $3)"
        " ON CONFLICT (node_id, endpoint) DO UPDATE"
        " SET checkin = GREATEST(c.checkin, EXCLUDED.checkin) RETURNING checkin",
        node_id,
        endpoint,
        checkin,
    )
    return int(value)


async def synced_caches(db: Executor, node_id: str, endpoint: str) -> set[str]:
    """The caches of ``endpoint`` of ``node_id`` we took whole (see ``set_synced_caches``)."""
    rows = await db.fetch(
        "SELECT cache FROM synced_caches WHERE node_id = $1 AND endpoint = $2", node_id, endpoint
    )
    return {r["cache"] for r in rows}


async def set_synced_caches(
    pool: asyncpg.Pool, node_id: str, endpoint: str, caches: Iterable[str]
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


# --------------------------------------------------------------------------- addresses


async def upsert_third_party_address(pool: asyncpg.Pool, address: Address, now: int) -> bool:
    """Record an address learned from someone else; return True if it was new."""
    async with pool.acquire() as conn:
        return await persist.store_third_party_address(conn, address, now) == "written"


async def upsert_first_party_address(
    pool: asyncpg.Pool, address: Address, now: int, *, last_ping: int = 0, last_sync: int = 0
) -> bool:
    """Record an address as heard from its node; return True if the row changed."""
    async with pool.acquire() as conn:
        outcome = await persist.store_first_party_address(
            conn, address, now, last_ping=last_ping, last_sync=last_sync
        )
    return outcome == "written"


async def list_addresses(db: Executor, *, limit: int = 1000) -> list[StoredAddress]:
    """Known addresses, most recently pinged, synced or arrived first."""
    rows = await db.fetch(
        "SELECT location, sublocation, port, body, first_party, last_ping, last_sync,"
        " local_arrival FROM addresses"
        " ORDER BY last_ping DESC, last_sync DESC, local_arrival DESC, location, sublocation, port"
        " LIMIT $1",
        limit,
    )
    return [StoredAddress(**dict(r)) for r in rows]


# --------------------------------------------------------------------------- node state


async def get_state(db: Executor, key: str) -> str | None:
    """A node-wide value (the node key, the last cache generation, ...)."""
    value: str | None = await db.fetchval("SELECT value FROM node_state WHERE key = $1", key)
    return value


async def set_state(db: Executor, key: str, value: str) -> None:
    await db.execute(
        "INSERT INTO node_state (key, value) VALUES ($1, $2)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        key,
        value,
    )
