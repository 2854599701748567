"""The nonces of POST requests (PROTOCOL.md §11.4, §16), remembered by the whole node.

A request's nonce may be used once per node key within the memory window (50 minutes), and a key
may send at most ``nonce_max_per_key`` requests (§16: 358) in that window. Both live in the
``NONCES`` bucket of the node's shared state (:mod:`relay.kv`), so a nonce spent on one gateway
replica is spent on all of them:

- ``seen.<digest of key and nonce>`` is claimed once, with the window as its time to live;
- ``uses.<digest of key>`` counts the key's requests in a window that starts at its first.

The nonce is claimed before it is counted, so a replayed request never uses up its key's count.
The bucket holds at most ``nonce_max_entries`` keys and forgets everything after the window: past
that bound a new nonce is refused with :class:`relay.StateFull` (the gateway answers 503).
"""

from __future__ import annotations

import hashlib
from typing import Final

from mim.pages import RequestRefused
from relay.kv import Bucket, BucketSpec, spend

__all__ = ["MEMORY_SECONDS", "Nonces", "bucket_spec"]

MEMORY_SECONDS: Final = 50 * 60  # §11.4, §16


def bucket_spec(name: str, max_entries: int) -> BucketSpec:
    """The ``NONCES`` bucket: ``max_entries`` keys, none older than the memory window."""
    return BucketSpec(
        name=name,
        description="POST nonces seen (§11.4) and requests per node key, for 50 minutes.",
        max_entries=max_entries,
        max_age_seconds=MEMORY_SECONDS,
    )


def _digest(*parts: str) -> str:
    text = "\n".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()


class Nonces:
    """Spends nonces in the node's ``NONCES`` bucket."""

    def __init__(self, bucket: Bucket, *, max_per_key: int) -> None:
        self._bucket = bucket
        self._max_per_key = max_per_key

    async def spend(self, public_key: str, nonce: str, now: int) -> None:
        """Spend ``nonce`` of ``public_key``; :class:`mim.pages.RequestRefused` if it was spent
        before or the key is over its count, ``StateFull`` if the memory is full."""
        claimed = await self._bucket.claim(f"seen.{_digest(public_key, nonce)}", ttl=MEMORY_SECONDS)
        if claimed is None:
            raise RequestRefused("nonce", "request.nonce_reused", "nonce already used by this key")
        if not await spend(
            self._bucket,
            f"uses.{_digest(public_key)}",
            limit=self._max_per_key,
            seconds=MEMORY_SECONDS,
            now=now,
        ):
            raise RequestRefused(
                "node_public_key",
                "request.nonce_limit",
                f"over {self._max_per_key} requests from this key in {MEMORY_SECONDS // 60} min",
            )
