"""Known node addresses (PROTOCOL.md §13.6). Writer: the store.

Third-party addresses (learned from someone else) keep only where the node is; first-party ones
(heard from the node itself, when it answered us or sent us a request) keep everything it says of
itself, with the times we last pinged and synced it. The gateway and the syncer send both kinds
to the store over the bus; :func:`recent` is how everyone reads the table, and :func:`held` says
which places it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import asyncpg

from mim import canonical
from mim.entities import Address
from relay.db import Conn, Db

__all__ = [
    "WRITER",
    "WRITES",
    "AddressOutcome",
    "Place",
    "StoredAddress",
    "held",
    "prune",
    "recent",
    "store_first_party",
    "store_third_party",
]

#: The one service that writes ``addresses``.
WRITER: Final = "store"
#: The functions here that write; only the writer's code may call them.
WRITES: Final = ("prune", "store_first_party", "store_third_party")

AddressOutcome = Literal["written", "kept"]


@dataclass(frozen=True, slots=True)
class StoredAddress:
    """One row of the table: where the node is, its address as stored, and our times."""

    location: str
    sublocation: str
    port: int
    body: str
    first_party: bool
    last_ping: int
    last_sync: int
    local_arrival: int


_RECENCY: Final = "last_ping DESC, last_sync DESC, local_arrival DESC, location, sublocation, port"


def _stored(row: asyncpg.Record) -> StoredAddress:
    return StoredAddress(
        location=row["location"],
        sublocation=row["sublocation"],
        port=row["port"],
        body=row["body"],
        first_party=row["first_party"],
        last_ping=row["last_ping"],
        last_sync=row["last_sync"],
        local_arrival=row["local_arrival"],
    )


async def recent(db: Db, *, limit: int = 1000) -> list[StoredAddress]:
    """Known addresses, most recently pinged, synced or arrived first."""
    rows = await db.fetch(
        "SELECT location, sublocation, port, body, first_party, last_ping, last_sync,"  # noqa: S608
        f" local_arrival FROM addresses ORDER BY {_RECENCY} LIMIT $1",
        limit,
    )
    return [_stored(r) for r in rows]


#: Where a node is: the table's key (location, sublocation, port).
Place = tuple[str, str, int]


async def held(db: Db, places: Sequence[Place]) -> set[Place]:
    """Those of ``places`` the table holds."""
    rows = await db.fetch(
        "SELECT location, sublocation, port FROM addresses"
        " WHERE (location, sublocation, port) IN"
        " (SELECT * FROM unnest($1::text[], $2::text[], $3::int[]))",
        [p[0] for p in places],
        [p[1] for p in places],
        [p[2] for p in places],
    )
    return {(r["location"], r["sublocation"], r["port"]) for r in rows}


def _stripped(address: Address) -> Address:
    """What a third-party address keeps: where the node is, nothing it claims about itself."""
    kept: Address = cast(Any, Address)(
        location=address.location,
        sublocation=address.sublocation,
        port=address.port,
        entity_version=address.entity_version,
        realm_id=address.realm_id,
    )
    return kept


async def store_third_party(conn: Conn, address: Address, now: int) -> AddressOutcome:
    """Insert a stripped ``address`` if its location is new; never change a stored row."""
    kept = _stripped(address)
    status = await conn.execute(
        "INSERT INTO addresses (location, sublocation, port, body, local_arrival)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        kept.location,
        kept.sublocation,
        kept.port,
        canonical.dumps(kept),
        now,
    )
    return "written" if status.endswith(" 1") else "kept"


_FIRST_PARTY: Final = """
INSERT INTO addresses AS a (location, sublocation, port, location_type, type, body, first_party,
                            last_ping, last_sync, local_arrival)
VALUES ($1, $2, $3, $4, $5, $6, true, $7, $8, $9)
ON CONFLICT (location, sublocation, port) DO UPDATE SET
    location_type = EXCLUDED.location_type, type = EXCLUDED.type, body = EXCLUDED.body,
    first_party = true,
    last_ping = GREATEST(a.last_ping, EXCLUDED.last_ping),
    last_sync = GREATEST(a.last_sync, EXCLUDED.last_sync),
    local_arrival = EXCLUDED.local_arrival
WHERE (a.location_type, a.type, a.body, a.first_party,
       a.last_ping, a.last_sync) IS DISTINCT FROM
      (EXCLUDED.location_type, EXCLUDED.type, EXCLUDED.body, true,
       GREATEST(a.last_ping, EXCLUDED.last_ping), GREATEST(a.last_sync, EXCLUDED.last_sync))
"""


async def store_first_party(
    conn: Conn, address: Address, now: int, *, last_ping: int = 0, last_sync: int = 0
) -> AddressOutcome:
    """Store ``address`` with all its details, as heard from the node itself.

    Ping and sync times only move forward; the row (and its arrival time) changes only if some
    detail differs.
    """
    status = await conn.execute(
        _FIRST_PARTY,
        address.location,
        address.sublocation,
        address.port,
        address.location_type,
        address.type,
        canonical.dumps(address),
        last_ping,
        last_sync,
        now,
    )
    return "written" if status.endswith(" 1") else "kept"


_PRUNE: Final = f"""
DELETE FROM addresses a USING (
    SELECT location, sublocation, port FROM addresses ORDER BY {_RECENCY} OFFSET $1
) old
WHERE (a.location, a.sublocation, a.port) = (old.location, old.sublocation, old.port)
"""  # noqa: S608


async def prune(conn: Conn, keep: int) -> int:
    """Cut the table to the ``keep`` most recently pinged, synced or arrived; return how many."""
    status = await conn.execute(_PRUNE, keep)
    return int(status.rsplit(" ", 1)[1])
