"""Bearer tokens for submission (``api_tokens``). Writer: the gateway.

A token is shown once, when it is made; the table keeps its SHA-256 digest, a short public id
(what listings show and ``revoke`` takes), a name, its submission rate and the times it was made
and revoked. A revoked token stays listed, and never works again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import asyncpg

from relay.db import Db

__all__ = ["WRITER", "WRITES", "StoredToken", "active", "create", "listing", "revoke"]

#: The one service that writes ``api_tokens``.
WRITER: Final = "gateway"
#: The functions here that write; only the writer's code may call them.
WRITES: Final = ("create", "revoke")

_COLUMNS: Final = "id, name, digest, rate_per_minute, created_at, revoked_at"


@dataclass(frozen=True, slots=True)
class StoredToken:
    """One token as the table holds it (never the token itself)."""

    id: str
    name: str
    digest: str
    rate_per_minute: int
    created_at: int
    revoked_at: int | None


def _token(row: asyncpg.Record) -> StoredToken:
    return StoredToken(
        id=row["id"],
        name=row["name"],
        digest=row["digest"],
        rate_per_minute=row["rate_per_minute"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


async def create(
    db: Db, *, token_id: str, name: str, digest: str, rate: int, now: int, most: int
) -> bool:
    """Record a new token unless ``most`` tokens are active already; whether it was recorded."""
    status = await db.execute(
        "INSERT INTO api_tokens (id, name, digest, rate_per_minute, created_at)"
        " SELECT $1, $2, $3, $4, $5"
        " WHERE (SELECT count(*) FROM api_tokens WHERE revoked_at IS NULL) < $6",
        token_id,
        name,
        digest,
        rate,
        now,
        most,
    )
    return status.endswith(" 1")


async def revoke(db: Db, token_id: str, now: int) -> bool:
    """Revoke the active token ``token_id``; whether there was one."""
    status = await db.execute(
        "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        token_id,
        now,
    )
    return status.endswith(" 1")


async def active(db: Db) -> list[StoredToken]:
    """The tokens that work."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE revoked_at IS NULL ORDER BY created_at, id"  # noqa: S608
    )
    return [_token(r) for r in rows]


async def listing(db: Db) -> list[StoredToken]:
    """Every token made, revoked ones included, oldest first."""
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at, id")  # noqa: S608
    return [_token(r) for r in rows]
