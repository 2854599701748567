"""A lease one process at a time holds, kept in a bucket of shared state whose keys expire.

The lease is one key of a :class:`relay.kv.Bucket`, written with a time to live of ``ttl``
seconds. A holder takes the lease by claiming its key (which fails while anyone else's entry
lives) and keeps it by rewriting its own entry, compare-and-set on the revision it wrote last, well
within ``ttl``. A holder that dies stops rewriting; its entry expires and the next process that
asks takes the lease. A holder that finds its revision gone (it paused past ``ttl`` and someone
else took over) knows it lost the lease. The gateways use one to pick the replica that builds the
caches (``Layout.cache_builder_bucket``).
"""

from __future__ import annotations

import os
import secrets
import socket

from nats.js import JetStreamContext

from relay import BusError, BusUnavailable
from relay.kv import Bucket, BucketSpec, ensure_bucket

__all__ = ["Lease", "ensure_lease_bucket", "holder_name"]


def holder_name() -> str:
    """A name for this process that no other process, here or elsewhere, has."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


async def ensure_lease_bucket(js: JetStreamContext, bucket: str) -> Bucket:
    """Create (or open) the bucket of leases ``bucket``; safe to run concurrently."""
    spec = BucketSpec(bucket, "Leases: who holds each, expiring unless renewed.")
    return await ensure_bucket(js, spec)


class Lease:
    """The lease ``name`` in ``bucket``, asked for by ``holder``, lapsing ``ttl`` seconds after
    its holder's last renewal."""

    def __init__(self, bucket: Bucket, name: str, holder: str, ttl: float) -> None:
        self._bucket = bucket
        self._name = name
        self._holder = holder.encode()
        self._ttl = ttl
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
                kept = await self._bucket.swap(self._name, self._holder, self._revision, self._ttl)
                if kept is not None:
                    self._revision = kept
                    return True
                self._revision = 0  # expired, and perhaps taken by someone else
            taken = await self._bucket.claim(self._name, self._holder, self._ttl)
        except BusUnavailable:
            self._revision = 0
            raise
        self._revision = taken or 0
        return taken is not None

    async def release(self) -> None:
        """Give the lease up at once, if we hold it, so another holder need not wait it out."""
        if not self._revision:
            return
        revision, self._revision = self._revision, 0
        try:
            await self._bucket.drop(revision)
        except (BusUnavailable, BusError):
            return  # it expires anyway
