"""The GET caches as stored (PROTOCOL.md §11.6). Writer: the gateway holding the builder lease.

``cache_files`` holds every file of every cache, gzip-compressed; a cache never changes once
written, so its files are written once (``put_files``) before any generation lists it.
``publish`` then lists new caches, retires old ones and records the generation with each
endpoint's ``index.json``, all in one transaction: a replica reading the latest generation finds
every file it names. Generations are numbered; ``publish`` of a number already taken raises
:class:`Superseded`, so two builders that briefly both believe they hold the lease cannot both
publish the same generation. Retired caches, their files and old generations are forgotten once
``forget_before`` passes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Final

import asyncpg

from relay import TransientError
from relay.db import Conn, Db

__all__ = [
    "WRITER",
    "WRITES",
    "Generation",
    "Publication",
    "Slice",
    "Superseded",
    "file",
    "indexes",
    "latest",
    "listed",
    "publish",
    "put_files",
    "served",
]

#: The one service that writes the cache tables.
WRITER: Final = "gateway"
#: The functions here that write; only the writer's code may call them.
WRITES: Final = ("publish", "put_files")

#: Generations kept besides the latest, for replicas still loading the one before.
_GENERATIONS_KEPT: Final = 3


class Superseded(TransientError):
    """Another builder published this generation first; nothing of ours was published."""


@dataclass(frozen=True, slots=True)
class Generation:
    """One published generation: its number, what its caches cover, and when it was made."""

    generation: int
    covered_to: int
    made_at: int


@dataclass(frozen=True, slots=True)
class Slice:
    """One cache of one endpoint, as ``index.json`` lists it, with its file counts."""

    endpoint: str
    cache: str
    starts_from: int
    ends_at: int
    objects: int
    pages: int
    index_pages: int
    manifest_pages: int
    bytes: int

    @property
    def folder(self) -> str:
        return f"{self.endpoint}/{self.cache}"


_SLICE_COLUMNS: Final = ", ".join(f.name for f in fields(Slice))


@dataclass(frozen=True, slots=True)
class Publication:
    """What one generation changes, published at once by :func:`publish`."""

    generation: Generation
    added: Sequence[Slice]
    retired: Sequence[tuple[str, str]]  # (endpoint, cache)
    indexes: Mapping[str, tuple[bytes, int]]  # endpoint -> (gzipped index.json, plain size)
    forget_before: int


def _slice(row: asyncpg.Record) -> Slice:
    return Slice(*(row[f.name] for f in fields(Slice)))


async def latest(db: Db) -> Generation | None:
    """The newest published generation, or None before the first."""
    row = await db.fetchrow(
        "SELECT generation, covered_to, made_at FROM cache_generations"
        " ORDER BY generation DESC LIMIT 1"
    )
    return None if row is None else Generation(row[0], row[1], row[2])


async def listed(db: Db) -> list[Slice]:
    """The caches the latest generation lists, by endpoint and start."""
    rows = await db.fetch(
        f"SELECT {_SLICE_COLUMNS} FROM cache_slices WHERE retired IS NULL"  # noqa: S608
        " ORDER BY endpoint, starts_from, ends_at, cache"
    )
    return [_slice(r) for r in rows]


async def served(db: Db) -> list[Slice]:
    """Every cache whose files are kept: those listed, and those retired but not yet forgotten."""
    rows = await db.fetch(
        f"SELECT {_SLICE_COLUMNS} FROM cache_slices"  # noqa: S608
        " ORDER BY endpoint, starts_from, ends_at, cache"
    )
    return [_slice(r) for r in rows]


async def indexes(db: Db, generation: int) -> dict[str, tuple[bytes, int]]:
    """Each endpoint's ``index.json`` of ``generation``: gzipped bytes and plain size."""
    rows = await db.fetch(
        "SELECT endpoint, gzipped, size FROM cache_indexes WHERE generation = $1", generation
    )
    return {r["endpoint"]: (bytes(r["gzipped"]), r["size"]) for r in rows}


async def file(db: Db, folder: str, name: str) -> tuple[bytes, int] | None:
    """One file of a cache: gzipped bytes and plain size, or None."""
    row = await db.fetchrow(
        "SELECT gzipped, size FROM cache_files WHERE folder = $1 AND name = $2", folder, name
    )
    return None if row is None else (bytes(row["gzipped"]), row["size"])


async def put_files(
    db: Db, folder: str, files: Sequence[tuple[str, bytes, int]], made_at: int
) -> None:
    """Write the files ``(name, gzipped, plain size)`` of one cache; those there already stay."""
    await db.executemany(
        "INSERT INTO cache_files (folder, name, gzipped, size, made_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        [(folder, name, gz, size, made_at) for name, gz, size in files],
    )


_FORGET: Final = (
    "DELETE FROM cache_slices WHERE retired_at < $1",
    "DELETE FROM cache_files f WHERE f.made_at < $1 AND NOT EXISTS"
    " (SELECT 1 FROM cache_slices s WHERE s.endpoint || '/' || s.cache = f.folder)",
)


async def publish(db: Db, publication: Publication) -> None:
    """List, retire and record one generation at once; ``Superseded`` if its number is taken."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            await _publish(conn, publication)
    else:
        await _publish(db, publication)


async def _publish(conn: Conn, publication: Publication) -> None:
    gen = publication.generation
    async with conn.transaction():
        taken = await conn.fetchval(
            "INSERT INTO cache_generations (generation, covered_to, made_at)"
            " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING false",
            gen.generation,
            gen.covered_to,
            gen.made_at,
        )
        if taken is None:
            raise Superseded(f"cache generation {gen.generation} was published by another builder")
        await conn.executemany(
            f"INSERT INTO cache_slices ({_SLICE_COLUMNS}, listed)"  # noqa: S608
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (endpoint, cache)"
            " DO UPDATE SET listed = EXCLUDED.listed, retired = NULL, retired_at = NULL",
            [(*astuple(s), gen.generation) for s in publication.added],
        )
        await conn.executemany(
            "UPDATE cache_slices SET retired = $3, retired_at = $4"
            " WHERE endpoint = $1 AND cache = $2 AND retired IS NULL",
            [
                (endpoint, cache, gen.generation, gen.made_at)
                for endpoint, cache in publication.retired
            ],
        )
        await conn.executemany(
            "INSERT INTO cache_indexes (generation, endpoint, gzipped, size)"
            " VALUES ($1, $2, $3, $4)",
            [(gen.generation, e, gz, size) for e, (gz, size) in publication.indexes.items()],
        )
        for statement in _FORGET:
            await conn.execute(statement, publication.forget_before)
        await conn.execute(
            "DELETE FROM cache_generations WHERE generation < $1",
            gen.generation - _GENERATIONS_KEPT,
        )
