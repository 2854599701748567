"""Cache generations as a remote sees them: each builds only what is new, caches keep their IDs,
old blocks merge, and what leaves the head leaves the index."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

from mim import canonical
from mim.entities import ApiResponse, Provable, ResultCache
from relay.caches.plan import BLOCK_SECONDS
from tests.services.gateway.conftest import make, serving, store
from tests.services.gateway.crawler import crawl

THREAD = {"board": "b" * 64, "thread": "c" * 64}


def _post(body: str, at: int) -> Provable:
    return make("post", {**THREAD, "body": body}, at)


async def _listed(client: httpx.AsyncClient) -> tuple[ResultCache, ...]:
    index = canonical.loads(ApiResponse, (await client.get("/v0/c0/posts/index.json")).content)
    return index.results or ()


async def test_a_generation_builds_only_what_is_new(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With nothing new a generation publishes nothing (and says the caches are current as of
    its run); a new post gets one new cache holding it
    alone, starting where the last generation's cover ended (the last listed cache's end, or
    later when a block began since and nothing arrived in it), and the caches listed before keep
    their IDs and bounds."""
    now = int(time.time())
    first = [_post("first", now - 900), _post("second", now - 800)]
    await store(fresh_database, first, now - 600)
    async with (
        serving(fresh_database, nats_url, stream_prefix, tmp_path) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):
        gw = running.gateway
        before = await _listed(client)
        idle = await gw.regenerate(now + 30)
        covered = gw.caches.covered_to
        current = REGISTRY.get_sample_value("mim_gateway_cache_generated_timestamp_seconds")
        later = _post("later", now)
        await store(fresh_database, [later], now)
        grown = await gw.regenerate(now + gw.settings.live_tail_overlap_seconds + 1)
        after = await _listed(client)
        new = [r for r in after if r not in before]
        page = canonical.loads(
            ApiResponse, (await client.get(f"/v0/c0/posts/{new[0].response_url}/0.json")).content
        )
    assert len(before) == 1
    assert idle.published is None and idle.built == 0
    assert current == now + 30  # found current, so an idle node's caches never look stale
    assert grown.built == 1 and grown.published is not None
    assert after[: len(before)] == before
    assert len(new) == 1 and new[0].starts_from == covered >= before[-1].ends_at
    assert [p.fingerprint for p in page.response.posts or ()] == [later.fingerprint]


async def test_a_block_merges_into_one_cache_and_old_caches_leave_the_head(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """The caches of a block that ended (merge after 0 s) become one cache over the block,
    holding all its posts; the caches it replaced are no longer listed but still served to a
    remote that read the index before; past the head nothing of the block is listed."""
    now = int(time.time())
    block = (now // BLOCK_SECONDS + 1) * BLOCK_SECONDS  # the next block's start, in the future
    async with (
        serving(
            fresh_database, nats_url, stream_prefix, tmp_path, cache_merge_after_seconds=0,
            live_tail_overlap_seconds=0,
        ) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as client,
    ):  # fmt: skip
        gw = running.gateway
        posts = []
        for n, at in enumerate((block + 100, block + 200)):
            post = _post(f"in the block {n}", at)
            await store(fresh_database, [post], at)
            await gw.regenerate(at + 1)
            posts.append(post)
        split = [r for r in await _listed(client) if r.starts_from >= block]
        await gw.regenerate(block + BLOCK_SECONDS + 1)
        merged = [r for r in await _listed(client) if r.starts_from >= block]
        crawled = await crawl(client)
        replaced = await client.get(f"/v0/c0/posts/{split[0].response_url}/0.json")
        await gw.regenerate(block + 15 * 86400)
        gone = [r for r in await _listed(client) if r.starts_from >= block]
    assert len(split) == 2
    assert len(merged) == 1 and merged[0] not in split
    assert (merged[0].starts_from, merged[0].ends_at) == (split[0].starts_from, split[1].ends_at)
    assert crawled.objects["post"] >= {p.fingerprint for p in posts}
    assert replaced.status_code == 200
    assert gone == []
