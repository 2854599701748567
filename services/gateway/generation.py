"""One cache generation, run by the replica holding the builder lease (``relay.caches.plan``).

Read the latest generation and its caches; build a cache for each window of each endpoint that
holds something new, and one for each block due for a merge; write their files (gzip-compressed)
before anything lists them; then publish the generation, its caches and every endpoint's signed
``index.json`` in one transaction. What it costs follows what is new, not the head. A generation
that finds nothing new, nothing to merge and nothing to retire publishes nothing.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field
from typing import Final

from mim import paths
from mim.entities import KINDS, ResultCache
from relay.caches import build, files
from relay.caches.files import Built, Signer
from relay.caches.plan import Merge, plan
from relay.db import Db
from relay.db import caches as db_caches
from relay.db.caches import Generation, Publication, Slice
from services.gateway import metrics
from services.gateway.settings import GatewaySettings

__all__ = ["Outcome", "generate"]

#: How long a retired cache's files, and files nothing lists, are kept: a remote that read an
#: index before finishes with its caches well within this, and no build takes this long.
FORGET_AFTER_SECONDS: Final = 3600
_GZIP_LEVEL: Final = 1  # a third of the size, as level 6 gives within 3%, at three times the speed


@dataclass
class Outcome:
    """What a generation did: the generation published (None if there was nothing to do)."""

    published: Generation | None = None
    built: int = 0
    merged: int = 0
    retired: int = 0
    bytes: int = 0
    added: list[Slice] = field(default_factory=list)


def _compressed(built: Built) -> list[tuple[str, bytes, int]]:
    return [
        (name, gzip.compress(body, _GZIP_LEVEL, mtime=0), len(body))
        for name, body in built.files.items()
    ]


async def _store(db: Db, built: Built, made_at: int) -> Slice:
    """Write ``built``'s files; the slice that lists it."""
    endpoint = paths.endpoint(built.kind)
    compressed = await asyncio.to_thread(_compressed, built)
    await db_caches.put_files(db, f"{endpoint}/{built.result.response_url}", compressed, made_at)
    return Slice(
        endpoint=endpoint,
        cache=built.result.response_url,
        starts_from=built.result.starts_from,
        ends_at=built.result.ends_at,
        objects=built.objects,
        pages=built.count(""),
        index_pages=built.count("index/"),
        manifest_pages=built.count("manifest/"),
        bytes=sum(len(body) for body in built.files.values()),
    )


async def _merge(db: Db, merge: Merge, signer: Signer, outcome: Outcome, now: int) -> list[str]:
    """Build the merged cache of one block; the caches it retires."""
    built = await build.build(
        db, build.KIND_OF_ENDPOINT[merge.endpoint], merge.start, merge.end, signer
    )
    if built is None:  # everything in the block was referenced again since: it moved on
        return list(merge.caches)
    if built.result.response_url in merge.caches:  # the block's objects are in one cache already
        return [c for c in merge.caches if c != built.result.response_url]
    outcome.added.append(await _store(db, built, now))
    outcome.merged += 1
    metrics.CACHE_BUILT.labels("merge").inc()
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
        out[endpoint] = (gzip.compress(body, _GZIP_LEVEL, mtime=0), len(body))
    return out


async def generate(db: Db, signer: Signer, settings: GatewaySettings, now: int) -> Outcome:
    """Run one generation at ``now``; publish it unless there was nothing to do.

    Raises ``Superseded`` if another builder published the same generation first.
    """
    last = await db_caches.latest(db)
    listed = await db_caches.listed(db)
    todo = plan(
        last,
        listed,
        now=now,
        head_seconds=settings.head_seconds,
        settle=settings.live_tail_overlap_seconds,
        merge_after=settings.cache_merge_after_seconds,
    )
    outcome = Outcome()
    for kind in KINDS:
        async for built in build.caches(db, kind, todo.windows, signer):
            outcome.added.append(await _store(db, built, now))
            outcome.built += 1
            metrics.CACHE_BUILT.labels("new").inc()
    retired = list(todo.retired)
    for merge in todo.merges:
        retired.extend((merge.endpoint, c) for c in await _merge(db, merge, signer, outcome, now))
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
    await db_caches.publish(db, publication)
    outcome.published = generation
    outcome.retired = len(retired)
    outcome.bytes = sum(s.bytes for s in outcome.added)
    return outcome
