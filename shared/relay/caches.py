"""The GET side's pre-generated tree (PROTOCOL.md §11.6): built whole, then swapped in at once.

``read_head`` loads what the head holds from the store; ``build_tree`` (pure, synchronous, run in a
worker thread) turns it into signed pages keyed by URL path (``v0/c0/posts/index.json`` …);
``Tree`` holds those bytes and their gzip form, so a request costs a dict lookup. The gateway
serves it; ``mimrelay export-static`` writes the same tree to disk.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from mim import canonical, pages, paths
from mim.entities import (
    PLURALS,
    PROVABLE_KINDS,
    Address,
    Caching,
    Entity,
    Kind,
    ResultCache,
    entity_class,
)
from mim.signing import SigningKey
from relay.db import Db, addresses, objects
from relay.settings import DAY_SECONDS

__all__ = ["Head", "Tree", "build_tree", "read_head"]

_READ_CHUNK: Final = 5000  # rows per keyset page when reading the head
_ADDRESS_READ_MAX: Final = 100_000  # addresses read for the caches (the table is pruned far below)
_GZIP_LEVEL: Final = 6


@dataclass(frozen=True, slots=True)
class Head:
    """What the network head holds: per kind, ``(last_referenced, object)`` oldest first."""

    now: int
    head_seconds: int
    objects: Mapping[Kind, Sequence[tuple[int, Entity]]]


@dataclass(frozen=True, slots=True)
class Tree:
    """One generation of the cache tree: path → plain bytes and gzip bytes."""

    generated_at: int
    files: Mapping[str, bytes]
    gzipped: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.files.values())


async def read_head(db: Db, *, now: int, head_days: int) -> Head:
    """Every object and address whose local time falls in the head ending at ``now``."""
    head_seconds = head_days * DAY_SECONDS
    start = now - head_seconds
    held: dict[Kind, list[tuple[int, Entity]]] = {}
    for kind in PROVABLE_KINDS:
        cls = entity_class(kind)
        rows: list[tuple[int, Entity]] = []
        after: tuple[int, str] | None = None
        while True:
            batch = await objects.referenced_between(
                db, kind, start, now + 1, limit=_READ_CHUNK, after=after
            )
            rows.extend((r.last_referenced, canonical.loads(cls, r.body)) for r in batch)
            if len(batch) < _READ_CHUNK:
                break
            after = (batch[-1].last_referenced, batch[-1].fingerprint)
        held[kind] = rows
    stored = await addresses.recent(db, limit=_ADDRESS_READ_MAX)
    # by arrival, then by place: one sync batch stores many addresses in the same second
    arrived = sorted(
        (a for a in stored if start <= a.local_arrival <= now),
        key=lambda a: (a.local_arrival, a.location, a.sublocation, a.port),
    )
    held["address"] = [(a.local_arrival, canonical.loads(Address, a.body)) for a in arrived]
    return Head(now=now, head_seconds=head_seconds, objects=held)


def _bucket(
    rows: Sequence[tuple[int, Entity]], slices: Sequence[tuple[int, int]]
) -> list[list[Entity]]:
    """Objects per slice: ``start <= t < end``, the last slice also taking ``t == end``."""
    buckets: list[list[Entity]] = [[] for _ in slices]
    last = len(slices) - 1
    for when, obj in rows:
        for i, (start, end) in enumerate(slices):
            if start <= when < end or (i == last and when == end):
                buckets[i].append(obj)
                break
    return buckets


def _contents(objects: Sequence[Entity]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for obj in objects:
        if isinstance(obj, Address):
            out.append((f"{obj.location}/{obj.sublocation}/{obj.port}", 0))
        else:
            out.append((obj.fingerprint, obj.last_update))
    return out


def build_tree(
    head: Head, key: SigningKey, *, port: int, node_type: int, nonce: str, compress: bool = True
) -> Tree:
    """Sign every page of the head's caches and every endpoint ``index.json``.

    Empty slices get no cache; ``index.json`` lists the caches that hold something.
    """
    now = head.now
    base = pages.prefill(key.public_hex, port=port, node_type=node_type, nonce=nonce, now=now)
    slices = pages.head_slices(now, head.head_seconds)
    files: dict[str, bytes] = {}
    for kind, rows in head.objects.items():
        folder, plural = paths.endpoint(kind), PLURALS[kind]
        results: list[ResultCache] = []
        for (start, end), bucket in zip(slices, _bucket(rows, slices), strict=True):
            if not bucket:
                continue
            cid = pages.cache_id(plural, start, end, _contents(bucket))
            page_base = replace(
                base,
                filters=pages.timestamp_filter(start, end),
                starts_from=start,
                ends_at=end,
                caching=Caching(entity_counts=pages.entity_counts(bucket)),
            )
            for rel, page in pages.cache_pages(kind, bucket, page_base).items():
                files[f"{folder}/{paths.cache_folder(cid)}/{rel}"] = canonical.encode(
                    pages.sign_page(page, key)
                )
            results.append(
                ResultCache(response_url=paths.cache_folder(cid), starts_from=start, ends_at=end)
            )
        index = pages.endpoint_index(plural, base, results)
        files[f"{folder}/{paths.INDEX}"] = canonical.encode(pages.sign_page(index, key))
    gzipped = (
        {path: gzip.compress(body, _GZIP_LEVEL, mtime=0) for path, body in files.items()}
        if compress
        else {}
    )
    return Tree(generated_at=now, files=files, gzipped=gzipped)
