"""Shared request state on a real nats-server: bounded buckets, conditional writes, expiry."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.aio.client import Client as NATS

from relay import StateFull
from relay.embedded import NatsServer
from relay.kv import BucketSpec, ensure_bucket, spend


async def test_claims_are_won_once_and_new_keys_stop_at_the_bound(
    nc: NATS, stream_prefix: str
) -> None:
    """A key is claimed once (a second claim sees it held); past ``max_entries`` a new key is
    refused with StateFull while a held key can still be rewritten; a dropped key can be
    claimed again."""
    bucket = await ensure_bucket(
        nc.jetstream(), BucketSpec(f"{stream_prefix}_T", "test", max_entries=2, memory=True)
    )
    first = await bucket.claim("a", b"1")
    assert first is not None
    assert await bucket.claim("a", b"2") is None
    assert await bucket.claim("b") is not None
    with pytest.raises(StateFull):
        await bucket.claim("c")
    await bucket.put("a", b"3")
    entry = await bucket.get("a")
    assert entry is not None and entry.value == b"3"
    await bucket.drop(entry.revision)
    assert await bucket.get("a") is None
    assert await bucket.claim("c") is not None


async def test_keys_leave_after_their_time_to_live(nc: NATS, stream_prefix: str) -> None:
    """A key written with a time to live is gone after it, and its place can be claimed again."""
    bucket = await ensure_bucket(
        nc.jetstream(), BucketSpec(f"{stream_prefix}_TTL", "test", max_entries=1, memory=True)
    )
    assert await bucket.claim("lease", ttl=1) is not None
    with pytest.raises(StateFull):
        await bucket.claim("other", ttl=1)
    deadline = time.monotonic() + 10
    while await bucket.get("lease") is not None:
        assert time.monotonic() < deadline, "the key outlived its time to live"
        await asyncio.sleep(0.1)
    assert await bucket.claim("other", ttl=1) is not None


async def test_swap_loses_to_a_newer_revision(nc: NATS, stream_prefix: str) -> None:
    """A conditional write at an old revision is refused; at the current one it wins."""
    bucket = await ensure_bucket(nc.jetstream(), BucketSpec(f"{stream_prefix}_SW", "test"))
    old = await bucket.claim("k", b"1")
    assert old is not None
    new = await bucket.swap("k", b"2", old)
    assert new is not None
    assert await bucket.swap("k", b"3", old) is None
    entry = await bucket.get("k")
    assert entry is not None and (entry.value, entry.revision) == (b"2", new)


async def test_spend_counts_uses_in_a_window_across_racing_writers(
    nc: NATS, stream_prefix: str
) -> None:
    """Forty uses spent at once against a limit of 25 admit exactly 25; a larger amount than what
    is left is refused whole; another key has its own window."""
    bucket = await ensure_bucket(
        nc.jetstream(), BucketSpec(f"{stream_prefix}_SP", "test", memory=True)
    )
    now = int(time.time())
    results = await asyncio.gather(
        *(spend(bucket, "key", limit=25, seconds=60, now=now) for _ in range(40))
    )
    assert results.count(True) == 25
    assert not await spend(bucket, "other", limit=10, seconds=60, now=now, amount=11)
    assert await spend(bucket, "other", limit=10, seconds=60, now=now, amount=10)
    assert not await spend(bucket, "other", limit=10, seconds=60, now=now)


async def test_a_bucket_in_memory_comes_back_after_the_server_restarts(
    dedicated_nats_server: NatsServer,
) -> None:
    """A bucket held in the server's memory is gone when nats-server is killed and restarted; the
    next claim makes it again, empty, with its bounds, and works."""
    nc = await nats.connect(dedicated_nats_server.url, reconnect_time_wait=0.2)
    try:
        spec = BucketSpec("MEMORY_T", "test", max_entries=1, memory=True)
        bucket = await ensure_bucket(nc.jetstream(), spec)
        assert await bucket.claim("before", ttl=60) is not None
        await asyncio.to_thread(dedicated_nats_server.kill)
        await asyncio.to_thread(dedicated_nats_server.restart)
        deadline = time.monotonic() + 20
        while not nc.is_connected:
            assert time.monotonic() < deadline, "the client did not reconnect"
            await asyncio.sleep(0.1)
        assert await bucket.get("before") is None
        assert await bucket.claim("after", ttl=60) is not None
        with pytest.raises(StateFull):
            await bucket.claim("third", ttl=60)
    finally:
        await nc.close()
