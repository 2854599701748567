"""A replica's memory of cache files: bounded by its setting, whatever the caches hold."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

from tests.helpers.objects import signed_posts
from tests.helpers.store import wait_until
from tests.services.gateway.conftest import AUTHOR, DIFFICULTY, serving, store
from tests.services.gateway.crawler import crawl


async def test_memory_holds_at_most_its_setting_and_serves_the_rest_from_the_store(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With room for only a few files, a crawl of every page still verifies and finds every
    post, twice over, while the memory never holds more than its setting; files beyond it are
    read again from PostgreSQL (counted as misses)."""
    now = int(time.time())
    posts = signed_posts(1200, 8, key=AUTHOR, difficulty=DIFFICULTY, start=now - 5000, label="m")
    await store(fresh_database, posts, now - 3000)  # one cache: three entity pages of 400 posts
    limit = 300_000  # about two of them, gzip-compressed
    async with (
        serving(
            fresh_database, nats_url, stream_prefix, tmp_path, cache_memory_bytes=limit
        ) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):  # fmt: skip
        served = running.gateway.caches
        held, misses = [], [_misses()]
        for _ in range(2):
            crawled = await crawl(client)
            held.append(served.memory.bytes)
            assert crawled.objects["post"] == {p.fingerprint for p in posts}

            async def counted() -> bool:  # the metric takes in the lookups every second
                return bool(_misses() - misses[0] == served.misses)

            await wait_until("the misses counted", counted)
            misses.append(_misses())
    assert 0 < max(held) <= limit
    assert REGISTRY.get_sample_value("mim_gateway_cache_memory_bytes") == held[-1]
    assert misses[2] - misses[1] >= 3  # the second crawl read files from the store again


def _misses() -> float:
    sample = REGISTRY.get_sample_value("mim_gateway_cache_memory_lookups_total", {"result": "miss"})
    return sample or 0.0
