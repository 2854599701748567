"""What one gateway replica serves of the caches: the latest generation, and files in memory.

The caches live in PostgreSQL (``relay.db.caches``), built by whichever replica holds the builder
lease. Each replica follows the latest generation (:meth:`Served.refresh`): it keeps that
generation's ``index.json`` files and the list of cache folders it may serve (those listed, and
those retired but still kept), never the caches themselves. A file asked for is looked up in a
memory of at most ``memory_bytes`` (least recently used out first) and read from PostgreSQL when
missing; concurrent misses of one file share one read. A path that names no kept cache, or a page
beyond one's count, is answered 204 without a query. Files are stored gzip-compressed and served
so to clients that accept gzip; the plain bytes are made once per file held.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from mim import paths
from relay.db import Db
from relay.db import caches as db_caches
from relay.db.caches import Generation, Slice
from services.gateway import metrics

__all__ = ["Memory", "Page", "Served"]

#: Body and headers of a 200.
Answer: TypeAlias = tuple[bytes, list[tuple[bytes, bytes]]]

_NAME: Final = re.compile(r"^(?:(index|manifest)/)?(\d{1,9})\.json$")
_JSON: Final = (b"content-type", b"application/json")
_GZIP_HEADERS: Final = ((b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding"))
_HIT: Final = metrics.CACHE_MEMORY_LOOKUPS.labels("hit")
_MISS: Final = metrics.CACHE_MEMORY_LOOKUPS.labels("miss")


@dataclass(slots=True)
class Page:
    """One file as sent: its gzip bytes, and its plain bytes once someone asked for them."""

    gzipped: bytes
    size: int  # plain bytes
    _plain: bytes | None = field(default=None, repr=False)
    _headers: dict[bool, list[tuple[bytes, bytes]]] = field(default_factory=dict, repr=False)

    @property
    def plain(self) -> bytes:
        if self._plain is None:
            self._plain = gzip.decompress(self.gzipped)
        return self._plain

    @property
    def has_plain(self) -> bool:
        return self._plain is not None

    @property
    def held(self) -> int:
        """Bytes this page holds in memory."""
        return len(self.gzipped) + (len(self._plain) if self._plain is not None else 0)

    def answer(self, gzip_ok: bool) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """Body and headers of a 200 for a client that does (or does not) accept gzip."""
        body = self.gzipped if gzip_ok else self.plain
        headers = self._headers.get(gzip_ok)
        if headers is None:
            length = (b"content-length", str(len(body)).encode())
            headers = [*_GZIP_HEADERS, length, _JSON] if gzip_ok else [length, _JSON]
            self._headers[gzip_ok] = headers
        return body, headers


class Memory:
    """Files by path, at most ``limit`` bytes of them, the least recently used dropped first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pages: OrderedDict[str, Page] = OrderedDict()
        self._held: dict[str, int] = {}
        self.bytes = 0

    def get(self, path: str) -> Page | None:
        page = self._pages.get(path)
        if page is not None:
            self._pages.move_to_end(path)
        return page

    def put(self, path: str, page: Page) -> None:
        """Keep ``page`` (or account for what it holds now); drop the oldest beyond the limit."""
        self.bytes += page.held - self._held.get(path, 0)
        self._held[path] = page.held
        self._pages[path] = page
        self._pages.move_to_end(path)
        while self.bytes > self.limit and self._pages:
            old, _ = self._pages.popitem(last=False)
            self.bytes -= self._held.pop(old)
        metrics.CACHE_MEMORY_BYTES.set(self.bytes)


def _split(path: str) -> tuple[str, str] | None:
    """``(cache folder, file name)`` of a path inside a cache, e.g. ``v0/c0/posts/cache_<id>``
    and ``index/0.json``; None for any other path."""
    parts = path.split("/")
    for at, part in enumerate(parts[:4]):
        if part.startswith("cache_"):
            return "/".join(parts[: at + 1]), "/".join(parts[at + 1 :])
    return None


def _exists(found: Slice, name: str) -> bool:
    match = _NAME.match(name)
    if match is None:
        return False
    counts = {None: found.pages, "index": found.index_pages, "manifest": found.manifest_pages}
    return int(match.group(2)) < counts[match.group(1)]


class Served:
    """The caches as this replica serves them."""

    def __init__(self, db: Db, memory_bytes: int) -> None:
        self._db = db
        self.memory = Memory(memory_bytes)
        self.generation: Generation | None = None
        self._indexes: dict[str, Page] = {}
        self._folders: dict[str, Slice] = {}
        self._loading: dict[str, asyncio.Future[Page | None]] = {}  # reads in flight, by path
        self.hits = self.misses = 0
        self._counted = (0, 0)

    @property
    def covered_to(self) -> int:
        """Every object stamped before this is in a cache served (0 before the first)."""
        return self.generation.covered_to if self.generation else 0

    async def refresh(self) -> bool:
        """Follow the latest generation; whether a newer one was loaded."""
        self.count()
        latest = await db_caches.latest(self._db)
        if latest is None or (self.generation and latest.generation == self.generation.generation):
            return False
        found = await db_caches.indexes(self._db, latest.generation)
        kept = await db_caches.served(self._db)
        listed = await db_caches.listed(self._db)
        self._indexes = {
            f"{endpoint}/{paths.INDEX}": Page(gz, size) for endpoint, (gz, size) in found.items()
        }
        self._folders = {s.folder: s for s in kept}
        self.generation = latest
        metrics.CACHE_GENERATED.set(latest.made_at)
        metrics.CACHE_BYTES.set(sum(s.bytes for s in listed))
        metrics.CACHE_PAGES.set(sum(s.pages + s.index_pages + s.manifest_pages for s in listed))
        return True

    def hit(self, path: str, gzip_ok: bool) -> Answer | None:
        """Body and headers of the file at ``path`` if it is in memory, without waiting."""
        page = self._indexes.get(path)
        if page is None:
            page = self.memory.get(path)  # in memory: it was in a kept cache when read
            if page is None:
                return None
            self.hits += 1
        return self._answer(path, page, gzip_ok)

    async def answer(self, path: str, gzip_ok: bool) -> Answer | None:
        """Body and headers of the file at ``path`` (no leading slash), read from PostgreSQL
        when not in memory; None if no cache served holds it."""
        found = self.hit(path, gzip_ok)
        if found is not None:
            return found
        page = await self._read(path)
        return None if page is None else self._answer(path, page, gzip_ok)

    def _answer(self, path: str, page: Page, gzip_ok: bool) -> Answer:
        if gzip_ok or page.has_plain:
            return page.answer(gzip_ok)
        answer = page.answer(gzip_ok)
        if self.memory.get(path) is page:
            self.memory.put(path, page)  # its plain bytes were made: count them
        return answer

    async def _read(self, path: str) -> Page | None:
        """A file not in memory, read (once, however many ask at the same time) if a kept cache
        holds it."""
        where = _split(path)
        found = self._folders.get(where[0]) if where else None
        if where is None or found is None or not _exists(found, where[1]):
            return None
        self.misses += 1
        loading = self._loading.get(path)
        if loading is None:
            loading = self._loading[path] = asyncio.ensure_future(self._load(path, *where))
            loading.add_done_callback(lambda done: self._loaded(path, done))
        return await asyncio.shield(loading)

    def count(self) -> None:
        """Add the lookups since the last call to ``mim_gateway_cache_memory_lookups_total``
        (counted here without the metric's lock, which costs more than a hit)."""
        _HIT.inc(self.hits - self._counted[0])
        _MISS.inc(self.misses - self._counted[1])
        self._counted = (self.hits, self.misses)

    async def _load(self, path: str, folder: str, name: str) -> Page | None:
        stored = await db_caches.file(self._db, folder, name)
        if stored is None:
            return None
        page = Page(*stored)
        self.memory.put(path, page)
        return page

    def _loaded(self, path: str, done: asyncio.Future[Page | None]) -> None:
        del self._loading[path]
        if not done.cancelled():
            done.exception()  # retrieved here too: every asker may have gone meanwhile
