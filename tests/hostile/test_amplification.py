"""Cheap requests that would buy much work: repeated embeds, long or hostile filters, answers
larger than their bound; each refused or answered within its bound, never with a 5xx.

Bounds held in every test: the gateway's resident memory grows by at most ``RSS_GROWTH`` during
the attack; the well-behaved client gets 200 for every request, none slower than ``WORST``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from mim import canonical
from mim.entities import ApiResponse, Filter, Provable
from tests.helpers.gateway import REQUEST_POW, Polite, error_of, gateway, request
from tests.services.gateway.conftest import JSON, make, store

RSS_GROWTH = 64 << 20  # bytes
WORST = 2.0  # seconds, for one request of the well-behaved client
ANSWER_MAX_OBJECTS = 100


def _forum(now: int) -> tuple[Provable, list[Provable], list[Provable]]:
    """A board with 30 threads, and 150 posts in the first thread."""
    board = make("board", {"name": "amplified"}, now - 100)
    threads = [
        make("thread", {"board": board.fingerprint, "name": f"thread {n}"}, now - 90)
        for n in range(30)
    ]
    posts = [
        make(
            "post",
            {"board": board.fingerprint, "thread": threads[0].fingerprint, "body": f"p{n}"},
            now - 80,
        )
        for n in range(150)
    ]
    return board, threads, posts


def _filter(kind: str, *values: str) -> tuple[Filter, ...]:
    return (Filter(type=kind, values=values),)


async def test_amplifying_requests_are_refused_or_answered_within_bounds(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """An embed asked 64 times is answered once (each thread once); 20,000 embed values, 65
    fingerprints, timestamps `--1` or of 5,000 digits and NUL bytes get 400 naming the filter
    and rule; an answer over its object bound gets 503 with Retry-After; a NUL fingerprint in
    `GET /api/objects` gets 400; fifty such requests at once leave the gateway healthy, within
    its memory bound and serving the well-behaved client."""
    now = int(time.time())
    board, threads, posts = _forum(now)
    await store(fresh_database, [board, *threads, *posts], now - 5)
    settings = {
        "MIM_GATEWAY_POST_MIN_POW": str(REQUEST_POW),
        "MIM_GATEWAY_POST_ANSWER_MAX_OBJECTS": str(ANSWER_MAX_OBJECTS),
    }
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:

            async def post(endpoint: str, filters: tuple[Filter, ...]) -> httpx.Response:
                body = request(endpoint, filters)
                return await client.post(f"/v0/c0/{endpoint}", content=body, headers=JSON)

            with Polite(node.url) as polite:
                before = node.rss()
                embeds = _filter("fingerprint", board.fingerprint) + _filter(
                    "embed", *(["threads"] * 64)
                )
                once = await post("boards", embeds)
                hostile = {
                    "filters.embed": await post("boards", _filter("embed", *["threads"] * 20000)),
                    "filters.fingerprint": await post(
                        "boards", _filter("fingerprint", *(f"{n:064x}" for n in range(65)))
                    ),
                    "filters.timestamp[0]": await post("posts", _filter("timestamp", "--1", "0")),
                    "filters.timestamp[1]": await post(
                        "posts", _filter("timestamp", "0", "9" * 5000)
                    ),
                    "filters.fingerprint[0]": await post("posts", _filter("fingerprint", "a\x00b")),
                }
                too_large = await post("posts", _filter("timestamp", str(now - 3600), "0"))
                nul = await client.get("/api/objects/post/%00")
                burst = await asyncio.gather(*(post("boards", embeds) for _ in range(50)))
                grown = node.rss() - before
        page = canonical.loads(ApiResponse, once.content)
        assert once.status_code == 200
        assert sorted(t.fingerprint for t in page.response.threads or ()) == sorted(
            t.fingerprint for t in threads
        )
        for field, answer in hostile.items():
            assert answer.status_code == 400, (field, answer.text)
            assert error_of(answer)["field"] == field
        assert error_of(hostile["filters.embed"])["rule"] == "filter.values"
        assert too_large.status_code == 503 and error_of(too_large)["rule"] == "answer.size"
        assert too_large.headers["retry-after"] == "30"
        assert nul.status_code == 400 and error_of(nul)["field"] == "fingerprint"
        assert {a.status_code for a in burst} <= {200, 429}  # past its in-flight places: 429
        assert grown <= RSS_GROWTH, grown
        assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
        assert node.health() == 200
        assert node.metric("mim_gateway_requests_total", route="post", status="500") == 0
