"""bench/soak_sample.py: what a soak reads from nats-server's own heap profile, on a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from relay.embedded import NatsServer, free_port
from soak_node import get
from soak_sample import _memstats, heap_sites


async def test_a_real_heap_profile_gives_its_statistics_and_the_sites_holding_memory(
    tmp_path: Path,
) -> None:
    """After a stream holds messages, the profile's statistics are read and its in-use heap is
    charged to named functions, the server's own ones among them, the shares adding up to the
    whole when every site is listed."""
    with NatsServer(tmp_path / "nats", profile_port=free_port()) as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="HELD", subjects=["held.>"]))
        for n in range(4000):
            await js.publish(f"held.{n}", b"x" * 1024)
        await nc.close()
        # gc=1: a collection first, so the profile is of now, not of up to two collections ago
        url = server.profile_url + "heap?debug=1&gc=1"
        status, body = await asyncio.to_thread(get, url, 10.0)
    assert status == 200
    profile = body.decode()
    stats = _memstats(profile)
    assert stats["HeapInuse"] > 0
    assert stats["Sys"] >= stats["HeapInuse"]
    sites = heap_sites(profile, top=1000)
    names = [site.split("% ", 1)[1] for site in sites]
    assert any(name.startswith("server.") for name in names)  # the server's own code, by name
    shares = [float(site.split("%", 1)[0]) for site in sites]
    assert shares == sorted(shares, reverse=True)
    assert 99.0 <= sum(shares) <= 101.0
    assert len(heap_sites(profile, top=3)) == min(3, len(sites))


def test_no_profile_gives_nothing() -> None:
    assert _memstats("") == {}
    assert heap_sites("") == []
