"""Building caches from the store: one endpoint's window at a time, and the whole head at once.

:func:`caches` reads what consecutive windows hold (objects by ``last_referenced``, addresses by
``local_arrival``, both ``start <= t < end``) in one ordered read and signs each window's files in
a worker thread as soon as the read has passed it; what it holds in memory is one window's, never
the head's. :func:`export` writes the whole head as files, one
window after another (``mimrelay export-static``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from mim import canonical, paths
from mim.entities import KINDS, PLURALS, Address, Kind, ResultCache
from relay.caches import files
from relay.caches.files import Built, Signer
from relay.caches.plan import windows
from relay.db import Db, addresses, objects
from relay.db.objects import CacheRow

__all__ = ["KIND_OF_ENDPOINT", "build", "caches", "export"]

_READ_CHUNK: Final = 5000  # rows per keyset page when reading a window
_ADDRESS_READ_MAX: Final = 100_000  # addresses read for one window (the table is pruned far below)

#: The endpoint folder of each kind, the other way round.
KIND_OF_ENDPOINT: Final[dict[str, Kind]] = {paths.endpoint(kind): kind for kind in KINDS}


async def _batches(db: Db, kind: Kind, start: int, end: int) -> AsyncIterator[list[CacheRow]]:
    """Objects of ``kind`` with ``start <= last_referenced < end``, oldest first, in batches."""
    after: tuple[int, str] | None = None
    while True:
        batch = await objects.for_caches(db, kind, start, end, limit=_READ_CHUNK, after=after)
        yield batch
        if len(batch) < _READ_CHUNK:
            return
        after = (batch[-1].last_referenced, batch[-1].fingerprint)


async def _object_caches(
    db: Db, kind: Kind, bounds: Sequence[tuple[int, int]], signer: Signer
) -> AsyncIterator[Built]:
    at, held = 0, list[CacheRow]()
    async for batch in _batches(db, kind, bounds[0][0], bounds[-1][1]):
        for row in batch:
            while row.last_referenced >= bounds[at][1]:
                if held:
                    yield await asyncio.to_thread(
                        files.object_cache, kind, held, *bounds[at], signer
                    )
                    held = []
                at += 1
            held.append(row)
    if held:
        yield await asyncio.to_thread(files.object_cache, kind, held, *bounds[at], signer)


async def _address_caches(
    db: Db, bounds: Sequence[tuple[int, int]], signer: Signer
) -> AsyncIterator[Built]:
    stored = await addresses.arrived_between(
        db, bounds[0][0], bounds[-1][1], limit=_ADDRESS_READ_MAX
    )
    for start, end in bounds:
        found = [canonical.loads(Address, a.body) for a in stored if start <= a.local_arrival < end]
        if found:
            yield await asyncio.to_thread(files.address_cache, found, start, end, signer)


async def caches(
    db: Db, kind: Kind, bounds: Sequence[tuple[int, int]], signer: Signer
) -> AsyncIterator[Built]:
    """The caches of ``kind`` over the consecutive windows ``bounds`` (each ``[start, end)``),
    signed; a window that holds nothing gives none. One query reads them all, and one window is
    held in memory at a time."""
    if not bounds:
        return
    made = (
        _address_caches(db, bounds, signer)
        if kind == "address"
        else _object_caches(db, kind, bounds, signer)
    )
    async for built in made:
        yield built


async def build(db: Db, kind: Kind, start: int, end: int, signer: Signer) -> Built | None:
    """The cache of ``kind`` over ``[start, end)``, signed; None if the window holds nothing."""
    async for built in caches(db, kind, [(start, end)], signer):
        return built
    return None


async def export(
    db: Db, signer: Signer, *, now: int, head_seconds: int, write: Callable[[str, bytes], None]
) -> int:
    """Write every file of the head ending at ``now`` through ``write(path, plain bytes)``:
    each endpoint's caches, block by block, then its ``index.json``; how many files."""
    written = 0
    for kind in KINDS:
        folder = paths.endpoint(kind)
        results: list[ResultCache] = []
        async for built in caches(db, kind, windows(now - head_seconds, now + 1), signer):
            for name, body in built.files.items():
                write(f"{folder}/{built.result.response_url}/{name}", body)
            written += len(built.files)
            results.append(built.result)
        nonce = files.cache_nonce(f"export:{now}:{PLURALS[kind]}")
        index = files.index_file(kind, results, signer, timestamp=now, nonce=nonce)
        write(f"{folder}/{paths.INDEX}", index)
        written += 1
    return written
