"""A lease one process at a time holds, kept in a NATS key-value bucket whose entries expire.

The bucket's entries live ``ttl`` seconds after their last write. A holder takes the lease by
creating its key (which fails while anyone else's entry lives) and keeps it by rewriting its own
entry, compare-and-set on the revision it wrote last, well within ``ttl``. A holder that dies
stops rewriting; its entry expires and the next process that asks takes the lease. A holder that
finds its revision gone (it paused past ``ttl`` and someone else took over) knows it lost the
lease. The gateways use one to pick the replica that builds the caches
(``Layout.cache_builder_bucket``).
"""

from __future__ import annotations

import os
import secrets
import socket

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from relay import BusUnavailable
from relay.bus import ensure_bucket

__all__ = ["Lease", "ensure_lease_bucket", "holder_name"]


def holder_name() -> str:
    """A name for this process that no other process, here or elsewhere, has."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


async def ensure_lease_bucket(js: JetStreamContext, bucket: str, ttl: float) -> KeyValue:
    """Create (or open, bringing its entries' lifetime to ``ttl``) the bucket ``bucket``; safe
    to run concurrently."""
    config = KeyValueConfig(
        bucket=bucket,
        description="Leases: who holds each, expiring unless renewed.",
        history=1,
        ttl=ttl,
        storage=StorageType.FILE,
    )
    return await ensure_bucket(js, config)


class Lease:
    """The lease ``name`` in ``kv``, asked for by ``holder``."""

    def __init__(self, kv: KeyValue, name: str, holder: str) -> None:
        self._kv = kv
        self._name = name
        self._holder = holder.encode()
        self._revision = 0

    @property
    def held(self) -> bool:
        """Whether the last :meth:`hold` took or kept the lease."""
        return self._revision != 0

    async def hold(self) -> bool:
        """Keep the lease if ours, take it if free; whether we hold it now.

        Raises ``BusUnavailable`` when NATS does not answer (the lease may then be lost).
        """
        try:
            if self._revision:
                try:
                    self._revision = await self._kv.update(
                        self._name, self._holder, last=self._revision
                    )
                    return True
                except nats.js.errors.KeyWrongLastSequenceError:
                    self._revision = 0  # expired, and perhaps taken by someone else
            try:
                self._revision = await self._kv.create(self._name, self._holder)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
            return True
        except nats.errors.Error as exc:
            self._revision = 0
            raise BusUnavailable(f"lease {self._name}: {exc!r}") from exc

    async def release(self) -> None:
        """Give the lease up at once, if we hold it, so another holder need not wait it out."""
        if not self._revision:
            return
        revision, self._revision = self._revision, 0
        try:
            await self._kv.delete(self._name, last=revision)
        except nats.errors.Error:
            return  # it expires anyway
