"""relay.leases on a real nats-server: one holder at a time, expiry, rest, take-over, keep."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NATS

from relay import LeaseLost
from relay.leases import LeaseBucket, keep


async def _bucket(nc: NATS, prefix: str) -> LeaseBucket:
    return await LeaseBucket.open(nc.jetstream(), f"{prefix}_LEASES")


async def test_one_holder_at_a_time_until_its_entry_expires(nc: NATS, stream_prefix: str) -> None:
    """The first asker holds the lease and keeps it past its time to live by renewing; a second
    is refused meanwhile and told who holds it; once the first stops renewing its entry expires,
    the second takes the lease, and the first finds it lost."""
    bucket = await _bucket(nc, stream_prefix)
    first = bucket.lease("remote.a", "first", ttl=1.0, what="10.0.0.1:8090")
    second = bucket.lease("remote.a", "second", ttl=1.0)
    assert await first.take()
    for _ in range(3):
        await asyncio.sleep(0.5)
        assert await first.renew()
        assert not await second.take()
        assert second.other is not None and second.other.holder == "first"
    held = await bucket.holdings()
    assert held["remote.a"].holder == "first" and held["remote.a"].state == "work"
    assert held["remote.a"].what == "10.0.0.1:8090"
    started = time.monotonic()
    while not await second.take():
        assert time.monotonic() - started < 5.0, "the entry never expired"
        await asyncio.sleep(0.1)
    assert not await first.renew()
    assert second.held and not first.held


async def test_a_resting_lease_is_taken_only_over_the_rest_and_a_released_one_at_once(
    nc: NATS, stream_prefix: str
) -> None:
    """After its work a lease rests: nobody takes it for the rest, except an asker who may take
    it over a rest (an operator's "sync now"); a released lease is free at once."""
    bucket = await _bucket(nc, stream_prefix)
    first = bucket.lease("remote.b", "first", ttl=5.0)
    second = bucket.lease("remote.b", "second", ttl=5.0)
    assert await first.take()
    await first.rest(30.0)
    assert not first.held
    assert not await second.take()
    assert second.other is not None and second.other.state == "rest"
    assert await second.take(over_rest=True)
    assert not await first.take(over_rest=True)  # at work now, not resting
    await second.release()
    assert await first.take()
    assert (await bucket.holdings())["remote.b"].holder == "first"


async def test_keep_renews_through_long_work_and_stops_work_whose_lease_was_taken(
    nc: NATS, stream_prefix: str
) -> None:
    """Work longer than the time to live keeps its lease (others are refused throughout); work
    whose lease is taken over meanwhile is cancelled and ``LeaseLost`` raised."""
    bucket = await _bucket(nc, stream_prefix)
    holder = bucket.lease("schedule.scan", "holder", ttl=1.0)
    other = bucket.lease("schedule.scan", "other", ttl=1.0)
    assert await holder.take()

    async def work() -> str:
        for _ in range(5):
            await asyncio.sleep(0.5)
            assert not await other.take()
        return "done"

    assert await keep(holder, work()) == "done"
    assert holder.held

    cancelled = asyncio.Event()

    async def endless() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    async def take_over() -> None:
        await asyncio.sleep(0.2)
        await bucket.state.drop(holder.revision)
        assert await other.take()

    thief = asyncio.create_task(take_over())
    with pytest.raises(LeaseLost, match="taken over"):
        await keep(holder, endless())
    await thief
    assert cancelled.is_set()
    assert (await bucket.holdings())["schedule.scan"].holder == "other"
