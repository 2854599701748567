"""Building caches from the store: one window at a time, one page of bytes at a time.

:func:`caches` makes the caches of one endpoint over consecutive windows (objects by
``last_referenced``, addresses by ``local_arrival``, both ``start <= t < end``). One count per
block tells which windows hold something; each of those is read in one snapshot (a read-only,
repeatable-read transaction): its objects' index columns first, which name the cache, then their
stored bytes a page's worth at a time, each page signed in a worker thread and handed to ``put``
in the form ``finish`` gives it (gzip for PostgreSQL, plain for files). What it holds is one
window's index columns and one page of bytes, never the head. Addresses, a small table, are read
whole. :func:`export` writes the whole head as files (``mimrelay export-static``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from mim import canonical, entities, paths
from mim.entities import Address, Kind, ResultCache
from relay.caches import files, plan
from relay.caches.files import ObjectCache, Signer
from relay.db import Conn, addresses, objects
from relay.db.objects import CacheEntry

__all__ = ["KIND_OF_ENDPOINT", "Finish", "Made", "Put", "build", "caches", "export"]

_READ_CHUNK: Final = 5000  # index rows per keyset page when reading a window
_ADDRESS_READ_MAX: Final = 100_000  # addresses read for the caches (the table is pruned far below)

#: The endpoint folder of each kind, the other way round.
KIND_OF_ENDPOINT: Final[dict[str, Kind]] = {paths.endpoint(kind): kind for kind in entities.KINDS}

#: The form a file is kept in, from its plain bytes (run in a worker thread).
Finish = Callable[[bytes], bytes]
#: Keeps one file: its cache folder, its name, its kept bytes and its plain size.
Put = Callable[[str, str, bytes, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Made:
    """One cache made and handed over: what ``index.json`` lists, and its file counts."""

    kind: Kind
    result: ResultCache
    objects: int
    pages: int
    index_pages: int
    manifest_pages: int
    bytes: int  # plain bytes of all its files

    @property
    def folder(self) -> str:
        return f"{paths.endpoint(self.kind)}/{self.result.response_url}"


def _finished(files_: dict[str, bytes], finish: Finish) -> list[tuple[str, bytes, int]]:
    return [(name, finish(body), len(body)) for name, body in files_.items()]


def _entity_page(cache: ObjectCache, bodies: list[bytes], finish: Finish) -> tuple[str, bytes, int]:
    name, page = cache.entity_page(bodies)
    return name, finish(page), len(page)


async def _entries(conn: Conn, kind: Kind, start: int, end: int) -> list[CacheEntry]:
    found: list[CacheEntry] = []
    after: tuple[int, str] | None = None
    while True:
        batch = await objects.cache_entries(conn, kind, start, end, limit=_READ_CHUNK, after=after)
        found.extend(batch)
        if len(batch) < _READ_CHUNK:
            return found
        after = (batch[-1].last_referenced, batch[-1].fingerprint)


async def _window(
    pool: asyncpg.Pool, kind: Kind, start: int, end: int, signer: Signer, finish: Finish, put: Put
) -> Made | None:
    """The cache of one window, read in one snapshot; None if it holds nothing."""
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        entries = await _entries(conn, kind, start, end)
        if not entries:
            return None
        cache = ObjectCache(kind, entries, start, end, signer)
        folder, size = f"{paths.endpoint(kind)}/{cache.result.response_url}", 0
        after: tuple[int, str] | None = None
        for at in range(0, len(entries), cache.page_size):
            batch = await objects.cache_bodies(
                conn, kind, start, end, limit=cache.page_size, after=after
            )
            if [fp for _, fp, _ in batch] != [e.fingerprint for e in entries[at : at + len(batch)]]:
                raise RuntimeError(f"{folder}: the snapshot read two different windows")
            name, kept, plain = await asyncio.to_thread(
                _entity_page, cache, [body for _, _, body in batch], finish
            )
            await put(folder, name, kept, plain)
            size += plain
            after = (batch[-1][0], batch[-1][1])
        others = await asyncio.to_thread(lambda: _finished(cache.other_pages(), finish))
    for name, kept, plain in others:
        await put(folder, name, kept, plain)
        size += plain
    indexes = sum(1 for name, _, _ in others if name.startswith("index/"))
    return Made(kind, cache.result, len(entries), cache.pages, indexes, len(others) - indexes, size)


async def _address_caches(
    pool: asyncpg.Pool, bounds: Sequence[tuple[int, int]], signer: Signer, finish: Finish, put: Put
) -> AsyncIterator[Made]:
    stored = await addresses.arrived_between(
        pool, bounds[0][0], bounds[-1][1], limit=_ADDRESS_READ_MAX
    )
    for start, end in bounds:
        found = [canonical.loads(Address, a.body) for a in stored if start <= a.local_arrival < end]
        if not found:
            continue
        built = await asyncio.to_thread(files.address_cache, found, start, end, signer)
        kept = await asyncio.to_thread(_finished, built.files, finish)
        folder = f"{paths.endpoint('address')}/{built.result.response_url}"
        for name, body, plain in kept:
            await put(folder, name, body, plain)
        total = sum(plain for _, _, plain in kept)
        yield Made("address", built.result, built.objects, len(kept), 0, 0, total)


async def caches(
    pool: asyncpg.Pool,
    kind: Kind,
    bounds: Sequence[tuple[int, int]],
    signer: Signer,
    *,
    finish: Finish,
    put: Put,
) -> AsyncIterator[Made]:
    """Make the caches of ``kind`` over the consecutive windows ``bounds`` (each ``[start, end)``
    and inside one block), handing every file to ``put``; a window that holds nothing makes
    none."""
    if not bounds:
        return
    if kind == "address":
        async for addressed in _address_caches(pool, bounds, signer, finish, put):
            yield addressed
        return
    census = await objects.cache_census(pool, kind, bounds[0][0], bounds[-1][1], plan.BLOCK_SECONDS)
    for start, end in bounds:
        if census.get(start // plan.BLOCK_SECONDS):
            made = await _window(pool, kind, start, end, signer, finish, put)
            if made is not None:
                yield made


async def build(
    pool: asyncpg.Pool,
    kind: Kind,
    start: int,
    end: int,
    signer: Signer,
    *,
    finish: Finish,
    put: Put,
) -> Made | None:
    """Make the cache of ``kind`` over ``[start, end)``; None if the window holds nothing."""
    async for made in caches(pool, kind, [(start, end)], signer, finish=finish, put=put):
        return made
    return None


def _plain(body: bytes) -> bytes:
    return body


async def export(
    pool: asyncpg.Pool,
    signer: Signer,
    *,
    now: int,
    head_seconds: int,
    write: Callable[[str, bytes], None],
) -> int:
    """Write every file of the head ending at ``now`` through ``write(path, plain bytes)``:
    each endpoint's caches, block by block, then its ``index.json``; how many files."""
    written = 0

    async def put(folder: str, name: str, body: bytes, _size: int) -> None:
        nonlocal written
        write(f"{folder}/{name}", body)
        written += 1

    for kind in entities.KINDS:
        bounds = plan.windows(now - head_seconds, now + 1)
        made = [m async for m in caches(pool, kind, bounds, signer, finish=_plain, put=put)]
        nonce = files.cache_nonce(f"export:{now}:{entities.PLURALS[kind]}")
        results = [m.result for m in made]
        index = files.index_file(kind, results, signer, timestamp=now, nonce=nonce)
        await put(paths.endpoint(kind), paths.INDEX, index, len(index))
    return written
