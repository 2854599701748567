"""POST answer containers (PROTOCOL.md §11.7), kept for the whole node for an hour.

An answer too large for one page is written as a container, ``/v0/responses/post_<id>/``, and any
gateway replica serves its pages: the container's id is claimed in the ``CONTAINERS`` bucket (at
most ``containers_max`` of them) and its pages are objects of the ``CONTAINER_PAGES`` object
store (at most ``containers_max_bytes`` in all), both forgetting what is older than an hour. A
container that does not fit is refused whole with :class:`relay.StateFull` (the gateway answers
503), never half written. A path that cannot name a page of a container is answered 204 without
asking the store.

Pages are kept gzip-compressed, as most remotes take them, which makes the store about a third of
the size it would be. That matters beyond disk: nats-server reads a whole message block of the
store (up to 8 MB) into its memory to serve any page in it, for some seconds after, so the fewer
blocks an hour of containers spans, the less of its memory the reads of them hold. A page tells
by its first bytes whether it is compressed (gzip's magic number; a JSON page opens with ``{``),
so one written before, uncompressed, is read as it was written until it expires.
"""

from __future__ import annotations

import gzip
import re
import secrets
from collections.abc import Mapping
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.object_store import ObjectStore

from mim import paths
from relay import BusError, BusUnavailable, StateFull
from relay.bus import Layout
from relay.kv import Bucket, BucketSpec, ensure_bucket
from services.gateway import metrics

__all__ = ["LIFE_SECONDS", "Containers", "open_containers"]

LIFE_SECONDS: Final = 60 * 60  # containers stay reachable for an hour (§11.7)
_ID: Final = re.compile(r"^[0-9a-f]{64}$")
_PAGE: Final = re.compile(r"^(?:(?:index|manifest)/)?[0-9]{1,9}\.json$")
_ERR_FULL: Final = (10077, 10047)
_ERR_NAME_IN_USE: Final = 10058
_GZIP_LEVEL: Final = 1  # as the caches: within a few percent of level 6, at a third of the time
_GZIP_MAGIC: Final = b"\x1f\x8b"


def _where(path: str) -> tuple[str, str] | None:
    """``(id, page)`` of ``v0/responses/post_<id>/<page>``, or None if it names no page."""
    prefix = paths.RESPONSES + "/post_"
    if not path.startswith(prefix):
        return None
    rid, _, page = path[len(prefix) :].partition("/")
    if not _ID.match(rid) or not _PAGE.match(page):
        return None
    return rid, page


class Containers:
    """Writes and reads the node's containers."""

    def __init__(self, registry: Bucket, pages: ObjectStore) -> None:
        self.registry = registry  # also holds the links of reusable containers (chains)
        self._pages = pages

    async def write(self, pages: Mapping[str, bytes]) -> str:
        """Store a container of ``pages`` (relative path -> signed page); its folder name."""
        rid = secrets.token_hex(32)
        revision = await self.registry.claim(rid, str(len(pages)).encode())
        assert revision is not None  # 256 random bits
        written: list[str] = []
        try:
            for rel, body in pages.items():
                name = f"{rid}/{rel}"
                await self._pages.put(name, gzip.compress(body, _GZIP_LEVEL, mtime=0))
                written.append(name)
        except nats.js.errors.APIError as exc:
            await self._forget(revision, written)
            if exc.err_code in _ERR_FULL:
                raise StateFull(f"container pages are full: {exc.description}") from exc
            raise BusError(f"container pages: {exc.description}", exc.err_code) from exc
        except (nats.errors.Error, TimeoutError) as exc:
            await self._forget(revision, written)
            raise BusUnavailable(f"container pages: {exc!r}") from exc
        metrics.CONTAINERS_WRITTEN.inc()
        return paths.container_folder(rid)

    async def _forget(self, revision: int, written: list[str]) -> None:
        try:
            await self.registry.drop(revision)
            for name in written:
                await self._pages.delete(name)
        except (nats.errors.Error, TimeoutError, BusError, BusUnavailable):
            return  # both expire within the hour

    async def read(self, path: str) -> tuple[bytes, bool] | None:
        """The page at ``path`` (``v0/responses/post_<id>/...``) and whether it is gzip-compressed,
        or None."""
        where = _where(path)
        if where is None:
            return None
        rid, page = where
        if await self.registry.get(rid) is None:
            return None
        try:
            found = await self._pages.get(f"{rid}/{page}")
        except nats.js.errors.ObjectNotFoundError:
            return None
        except nats.js.errors.ObjectDeletedError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"container pages: {exc!r}") from exc
        data = found.data or b""
        return data, data.startswith(_GZIP_MAGIC)


async def open_containers(
    js: JetStreamContext, layout: Layout, *, max_containers: int, max_bytes: int
) -> Containers:
    """The node's container buckets, made if missing, at these bounds."""
    registry = await ensure_bucket(
        js,
        BucketSpec(
            name=layout.containers_bucket,
            description="POST answer containers (id -> page count), for an hour (§11.7).",
            max_entries=max_containers,
            max_age_seconds=LIFE_SECONDS,
            replicas=layout.replicas,
        ),
    )
    config = ObjectStoreConfig(
        description="Pages of POST answer containers, for an hour (§11.7).",
        ttl=LIFE_SECONDS,
        max_bytes=max_bytes,
        storage=StorageType.FILE,
        replicas=layout.replicas,
    )
    try:
        store = await js.create_object_store(layout.container_pages_bucket, config=config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != _ERR_NAME_IN_USE:
            raise BusError(f"cannot create {layout.container_pages_bucket}: {exc}") from exc
        # it exists with other bounds: bring its stream to ours
        info = await js.stream_info(f"OBJ_{layout.container_pages_bucket}")
        info.config.max_bytes = max_bytes
        info.config.num_replicas = layout.replicas
        await js.update_stream(info.config)
        store = await js.object_store(layout.container_pages_bucket)
    return Containers(registry, store)
