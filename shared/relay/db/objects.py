"""Reading stored objects: by fingerprint, by version, by time window, by parent, all of them.

``objects`` is written by the store alone (:mod:`relay.db.storing`); these queries are what every
other process reads it with. Objects come back as their exact canonical JSON (``body``), with the
node-local times beside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import asyncpg

from relay.db import Db

__all__ = [
    "WRITER",
    "WRITES",
    "CacheEntry",
    "StoredObject",
    "cache_bodies",
    "cache_census",
    "cache_entries",
    "children",
    "committed_since",
    "counts",
    "export_all",
    "get",
    "have_versions",
    "in_window",
    "keys_of",
    "snapshot_floor",
    "with_fingerprints",
]

#: The one service that writes ``objects`` (through :mod:`relay.db.storing`).
WRITER: Final = "store"
#: Nothing here writes.
WRITES: Final = ()

#: A column that names an object's parent: a thread's board, a post's thread, a vote's target.
ParentColumn = Literal["board", "thread", "target"]


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


_COLUMNS: Final = "kind, fingerprint, body, creation, last_update, local_arrival, last_referenced"


def _object(row: asyncpg.Record) -> StoredObject:
    return StoredObject(
        kind=row["kind"],
        fingerprint=row["fingerprint"],
        body=row["body"],
        creation=row["creation"],
        last_update=row["last_update"],
        local_arrival=row["local_arrival"],
        last_referenced=row["last_referenced"],
    )


async def get(db: Db, kind: str, fingerprint: str) -> StoredObject | None:
    """The stored version of one object, or None."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM objects WHERE kind = $1 AND fingerprint = $2",  # noqa: S608
        kind,
        fingerprint,
    )
    return None if row is None else _object(row)


async def have_versions(
    db: Db, kind: str, versions: Iterable[tuple[str, int]]
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


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """What a cache lists of one stored object, besides its bytes: its index columns."""

    fingerprint: str
    creation: int
    last_update: int
    board: str
    thread: str
    target: str
    last_referenced: int


_WINDOW: Final = (
    " FROM objects WHERE kind = $1 AND last_referenced >= $2 AND last_referenced < $3"
    " AND (last_referenced, fingerprint) > ($4, $5) ORDER BY last_referenced, fingerprint LIMIT $6"
)


async def cache_entries(
    db: Db, kind: str, start: int, end: int, *, limit: int, after: tuple[int, str] | None = None
) -> list[CacheEntry]:
    """Objects of ``kind`` with ``start <= last_referenced < end``, oldest first, at most
    ``limit``, as the caches list them.

    Keyset paging: pass the ``(last_referenced, fingerprint)`` of the last row seen as ``after``.
    """
    since, since_fp = after if after is not None else (start, "")
    rows = await db.fetch(
        "SELECT fingerprint, creation, last_update, board, thread, target, last_referenced"
        + _WINDOW,
        kind, start, end, since, since_fp, limit,
    )  # fmt: skip
    return [CacheEntry(*r) for r in rows]


async def cache_bodies(
    db: Db, kind: str, start: int, end: int, *, limit: int, after: tuple[int, str] | None = None
) -> list[tuple[int, str, bytes]]:
    """``(last_referenced, fingerprint, canonical JSON as UTF-8)`` of the same objects, in the
    same order and paging as :func:`cache_entries`."""
    since, since_fp = after if after is not None else (start, "")
    rows = await db.fetch(
        "SELECT last_referenced, fingerprint, convert_to(body, 'UTF8')" + _WINDOW,
        kind, start, end, since, since_fp, limit,
    )  # fmt: skip
    return [(r[0], r[1], r[2]) for r in rows]


async def cache_census(db: Db, kind: str, start: int, end: int, block: int) -> dict[int, int]:
    """How many objects of ``kind`` with ``start <= last_referenced < end`` fall in each block
    of ``block`` seconds (block number ``last_referenced // block``)."""
    rows = await db.fetch(
        "SELECT last_referenced / $4 AS block, count(*) AS n FROM objects"
        " WHERE kind = $1 AND last_referenced >= $2 AND last_referenced < $3 GROUP BY 1",
        kind, start, end, block,
    )  # fmt: skip
    return {int(r["block"]): int(r["n"]) for r in rows}


async def in_window(
    db: Db, kind: str, start: int, end: int, *, limit: int | None = None
) -> list[StoredObject]:
    """Objects of ``kind`` with ``start <= last_referenced <= end``, oldest first (at most
    ``limit``)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM objects WHERE kind = $1"  # noqa: S608
        " AND last_referenced BETWEEN $2 AND $3 ORDER BY last_referenced, fingerprint LIMIT $4",
        kind,
        start,
        end,
        limit,
    )
    return [_object(r) for r in rows]


async def snapshot_floor(db: Db) -> int:
    """The oldest transaction still running now (``pg_snapshot_xmin``): a row written by a
    transaction that is not visible to a read made after this call has an id at or above it."""
    floor = await db.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return int(floor)


async def committed_since(
    db: Db, kind: str, start: int, end: int, floor: int, *, limit: int | None = None
) -> list[StoredObject]:
    """Objects of ``kind`` with ``start <= last_referenced <= end`` written by a transaction at or
    above ``floor`` (of :func:`snapshot_floor`): what a read made after that floor may have missed
    because it committed later. Row ids are 32 bits and wrap, so they compare within half the
    circle, which holds for rows of a short window."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM objects WHERE kind = $1"  # noqa: S608
        " AND last_referenced BETWEEN $2 AND $3"
        " AND (xmin::text::bigint - $4 + 4294967296) % 4294967296 < 2147483648"
        " ORDER BY last_referenced, fingerprint LIMIT $5",
        kind,
        start,
        end,
        floor % 4294967296,
        limit,
    )
    return [_object(r) for r in rows]


async def with_fingerprints(
    db: Db,
    kind: str,
    fingerprints: Sequence[str],
    *,
    referenced_since: int = 0,
    limit: int | None = None,
) -> list[StoredObject]:
    """The objects of ``kind`` among ``fingerprints`` last referenced at or after
    ``referenced_since``, oldest first (at most ``limit``)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM objects WHERE kind = $1"  # noqa: S608
        " AND fingerprint = ANY($2::text[]) AND last_referenced >= $3"
        " ORDER BY last_referenced, fingerprint LIMIT $4",
        kind,
        list(fingerprints),
        referenced_since,
        limit,
    )
    return [_object(r) for r in rows]


_CHILDREN: Final[dict[ParentColumn, str]] = {
    column: (
        f"SELECT {_COLUMNS} FROM objects WHERE kind = $1"  # noqa: S608
        f" AND {column} = ANY($2::text[]) ORDER BY last_referenced, fingerprint LIMIT $3"
    )
    for column in ("board", "thread", "target")
}


async def children(
    db: Db, kind: str, column: ParentColumn, parents: Sequence[str], *, limit: int | None = None
) -> list[StoredObject]:
    """Objects of ``kind`` whose ``column`` names one of ``parents``, oldest first (at most
    ``limit``)."""
    rows = await db.fetch(_CHILDREN[column], kind, list(parents), limit)
    return [_object(r) for r in rows]


async def keys_of(
    db: Db, public_keys: Sequence[str], *, limit: int | None = None
) -> list[StoredObject]:
    """The Key entities of ``public_keys`` (lower-case hex), in fingerprint order (at most
    ``limit``)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM objects WHERE kind = 'key'"  # noqa: S608
        " AND owner_publickey = ANY($1::text[]) ORDER BY fingerprint LIMIT $2",
        list(public_keys),
        limit,
    )
    return [_object(r) for r in rows]


async def counts(db: Db) -> dict[str, int]:
    """Stored objects per kind, plus ``address``; kinds with none are absent."""
    rows = await db.fetch(
        "SELECT kind, count(*) AS n FROM objects GROUP BY kind"
        " UNION ALL SELECT 'address', count(*) FROM addresses HAVING count(*) > 0"
    )
    return {r["kind"]: int(r["n"]) for r in rows}


async def export_all(db: Db, *, chunk: int = 500) -> AsyncIterator[tuple[str, str]]:
    """Every stored object as ``(kind, canonical JSON)``, in (kind, fingerprint) order."""
    last = ("", "")
    while True:
        rows = await db.fetch(
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
