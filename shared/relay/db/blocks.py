"""The operator's block list, as recorded (the ``blocks`` table). Writer: the store.

The store answers the operator's block requests (``mimrelay block``): it writes this table, then
the validators' bucket (:mod:`relay.blocks`), which is what validators read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from relay.db import Db

__all__ = ["WRITER", "WRITES", "Block", "add", "listing", "remove"]

#: The one service that writes ``blocks``.
WRITER: Final = "store"
#: The functions here that write; only the writer's code may call them.
WRITES: Final = ("add", "remove")


@dataclass(frozen=True, slots=True)
class Block:
    fingerprint: str
    reason: str
    created_at: float


async def add(db: Db, fingerprint: str, reason: str = "") -> bool:
    """Block ``fingerprint``; return False if it was already blocked (the reason is updated)."""
    inserted = await db.fetchval(
        "INSERT INTO blocks (fingerprint, reason) VALUES ($1, $2)"
        " ON CONFLICT (fingerprint) DO UPDATE SET reason = EXCLUDED.reason"
        " RETURNING (xmax = 0)",
        fingerprint,
        reason,
    )
    return bool(inserted)


async def remove(db: Db, fingerprint: str) -> bool:
    """Unblock ``fingerprint``; return False if it was not blocked."""
    status: str = await db.execute("DELETE FROM blocks WHERE fingerprint = $1", fingerprint)
    return status != "DELETE 0"


async def listing(db: Db) -> list[Block]:
    """Every blocked fingerprint, oldest block first."""
    rows = await db.fetch(
        "SELECT fingerprint, reason, extract(epoch FROM created_at)::float8 AS created_at"
        " FROM blocks ORDER BY created_at, fingerprint"
    )
    return [Block(r["fingerprint"], r["reason"], float(r["created_at"])) for r in rows]
