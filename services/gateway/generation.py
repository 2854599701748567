"""One cache generation, run by the replica holding the builder lease (``relay.caches.plan``).

Read the latest generation and its caches; build a cache for each window of each endpoint that
holds something new, and one for each block due for a merge, writing each file (gzip-compressed)
as soon as it is signed, before anything lists it; then publish the generation, its caches and
every endpoint's signed ``index.json`` in one transaction. What it costs follows what is new, not
the head. A generation that finds nothing new, nothing to merge and nothing to retire publishes
nothing.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import asyncpg

from mim import paths
from mim.entities import KINDS, Kind, ResultCache
from relay.caches import build, files
from relay.caches.build import Made
from relay.caches.files import Signer
from relay.caches.plan import Merge, plan
from relay.db import caches as db_caches
from relay.db.caches import Generation, Publication, Slice
from services.gateway import metrics
from services.gateway.settings import GatewaySettings

__all__ = ["Outcome", "generate"]

#: How long a retired cache's files, and files nothing lists, are kept: a remote that read an
#: index before finishes with its caches well within this, and no build takes this long.
FORGET_AFTER_SECONDS: Final = 3600
_GZIP_LEVEL: Final = 1  # a third of the size, as level 6 gives within 3%, at three times the speed
_WRITE_BYTES: Final = 4 << 20  # compressed file bytes written to PostgreSQL in one transaction


@dataclass
class Outcome:
    """What a generation did: the generation published (None if there was nothing to do)."""

    published: Generation | None = None
    built: int = 0
    merged: int = 0
    retired: int = 0
    bytes: int = 0
    added: list[Slice] = field(default_factory=list)


def _gzip(body: bytes) -> bytes:
    return gzip.compress(body, _GZIP_LEVEL, mtime=0)


def _slice(made: Made) -> Slice:
    return Slice(
        endpoint=paths.endpoint(made.kind),
        cache=made.result.response_url,
        starts_from=made.result.starts_from,
        ends_at=made.result.ends_at,
        objects=made.objects,
        pages=made.pages,
        index_pages=made.index_pages,
        manifest_pages=made.manifest_pages,
        bytes=made.bytes,
    )


class _Builder:
    """Makes one generation's caches, their files written to PostgreSQL a few megabytes at a time
    as they are signed, and all of a cache's before it is counted as made."""

    def __init__(self, pool: asyncpg.Pool, signer: Signer, now: int) -> None:
        self.pool, self.signer, self.now = pool, signer, now
        self.outcome = Outcome()
        self._held: dict[str, list[tuple[str, bytes, int]]] = {}
        self._bytes = 0

    async def put(self, folder: str, name: str, body: bytes, size: int) -> None:
        self._held.setdefault(folder, []).append((name, body, size))
        self._bytes += len(body)
        if self._bytes >= _WRITE_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        held, self._held, self._bytes = self._held, {}, 0
        async with self.pool.acquire() as conn, conn.transaction():
            for folder, written in held.items():
                await db_caches.put_files(conn, folder, written, self.now)

    async def _made(self, made: Made, reason: str) -> None:
        await self._flush()
        self.outcome.added.append(_slice(made))
        metrics.CACHE_BUILT.labels(reason).inc()

    async def new(self, kind: Kind, bounds: Sequence[tuple[int, int]]) -> None:
        async for made in build.caches(
            self.pool, kind, bounds, self.signer, finish=_gzip, put=self.put
        ):
            await self._made(made, "new")
            self.outcome.built += 1

    async def merge(self, merge: Merge) -> list[str]:
        """Make the merged cache of one block; the caches it retires."""
        kind = build.KIND_OF_ENDPOINT[merge.endpoint]
        made = await build.build(
            self.pool, kind, merge.start, merge.end, self.signer, finish=_gzip, put=self.put
        )
        if made is None:  # everything in the block was referenced again since: it moved on
            return list(merge.caches)
        if made.result.response_url in merge.caches:  # the block is in one cache already
            self._held, self._bytes = {}, 0  # and so are its files
            return [c for c in merge.caches if c != made.result.response_url]
        await self._made(made, "merge")
        self.outcome.merged += 1
        return list(merge.caches)


def _indexes(
    listing: list[Slice], signer: Signer, generation: Generation
) -> dict[str, tuple[bytes, int]]:
    out: dict[str, tuple[bytes, int]] = {}
    for kind in KINDS:
        endpoint = paths.endpoint(kind)
        mine = sorted(
            (s for s in listing if s.endpoint == endpoint),
            key=lambda s: (s.starts_from, s.ends_at, s.cache),
        )
        results = [
            ResultCache(response_url=s.cache, starts_from=s.starts_from, ends_at=s.ends_at)
            for s in mine
        ]
        nonce = files.cache_nonce(f"{generation.generation}:{endpoint}")
        body = files.index_file(kind, results, signer, timestamp=generation.covered_to, nonce=nonce)
        out[endpoint] = (_gzip(body), len(body))
    return out


async def generate(
    pool: asyncpg.Pool, signer: Signer, settings: GatewaySettings, now: int
) -> Outcome:
    """Run one generation at ``now``; publish it unless there was nothing to do.

    Raises ``Superseded`` if another builder published the same generation first.
    """
    last = await db_caches.latest(pool)
    listed = await db_caches.listed(pool)
    todo = plan(
        last,
        listed,
        now=now,
        head_seconds=settings.head_seconds,
        settle=settings.live_tail_overlap_seconds,
        merge_after=settings.cache_merge_after_seconds,
    )
    builder = _Builder(pool, signer, now)
    for kind in KINDS:
        await builder.new(kind, todo.windows)
    retired = list(todo.retired)
    for merge in todo.merges:
        retired.extend((merge.endpoint, c) for c in await builder.merge(merge))
    outcome = builder.outcome
    if last is not None and not outcome.added and not retired:
        return outcome
    generation = Generation((last.generation if last else 0) + 1, todo.covered_to, now)
    gone = set(retired)
    listing = [s for s in listed if (s.endpoint, s.cache) not in gone] + outcome.added
    publication = Publication(
        generation=generation,
        added=outcome.added,
        retired=retired,
        indexes=_indexes(listing, signer, generation),
        forget_before=now - FORGET_AFTER_SECONDS,
    )
    await db_caches.publish(pool, publication)
    outcome.published = generation
    outcome.retired = len(retired)
    outcome.bytes = sum(s.bytes for s in outcome.added)
    return outcome
