"""The builder lease on a real NATS server: one holder at a time, taken over when it lapses."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from relay.lease import Lease, ensure_lease_bucket, holder_name


async def test_one_holder_at_a_time_and_a_lapsed_lease_is_taken_over(
    nc: NATS, stream_prefix: str
) -> None:
    """The first asker holds the lease and keeps it by renewing; a second is refused meanwhile,
    takes it once the first stops renewing for the lease's time, and the first then finds it
    lost."""
    leases = await ensure_lease_bucket(nc.jetstream(), f"{stream_prefix}_LEASE")
    first = Lease(leases, "builder", holder_name(), ttl=1.0)
    second = Lease(leases, "builder", holder_name(), ttl=1.0)
    assert await first.hold()
    for _ in range(3):
        await asyncio.sleep(0.4)
        assert await first.hold()
        assert not await second.hold()
    await asyncio.sleep(1.6)  # the first stopped renewing
    assert await second.hold()
    assert not await first.hold()
    assert second.held and not first.held


async def test_a_released_lease_is_free_at_once(nc: NATS, stream_prefix: str) -> None:
    """A holder that gives the lease up (on a graceful stop) lets the next asker take it without
    waiting for it to lapse, and another lease in the same bucket is held apart."""
    leases = await ensure_lease_bucket(nc.jetstream(), f"{stream_prefix}_LEASE")
    first = Lease(leases, "builder", holder_name(), ttl=60.0)
    second = Lease(leases, "builder", holder_name(), ttl=60.0)
    other = Lease(leases, "other", holder_name(), ttl=60.0)
    assert await first.hold()
    assert not await second.hold()
    assert await other.hold()
    await first.release()
    assert await second.hold()
    assert other.held and not first.held
