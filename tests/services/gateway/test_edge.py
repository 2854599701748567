"""The gateway's edge as a client meets it: cached GETs answered byte for byte as the FastAPI route
answers them, and chunked bodies held to the size limit on every route."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from mim import canonical
from relay.bus import ensure_streams
from tests.services.gateway.conftest import JSON, make, sample, serving, store

_SERVER_HEADERS = {b"date", b"server"}  # uvicorn adds these to every answer it sends


async def _raw(
    client: httpx.AsyncClient, method: str, path: str, **headers: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers in the order sent (less date and server), and the body as sent."""
    async with client.stream(method, path, headers=headers) as answer:
        body = b"".join([chunk async for chunk in answer.aiter_raw()])
    sent = [(k.lower(), v) for k, v in answer.headers.raw if k.lower() not in _SERVER_HEADERS]
    return answer.status_code, sent, body


async def test_cached_gets_answer_what_the_route_answers(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """Every cache file GET over the network, plain and gzip, has the status, headers and bytes
    the FastAPI route sends for it; the body is the tree's file, gzip decompresses to it, HEAD
    sends the headers alone, and a missing file is 204 with no body."""
    now = int(time.time())
    await store(fresh_database, sample(now), now - 30)
    async with (
        serving(fresh_database, nats_url, stream_prefix, tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as wire,
        httpx.AsyncClient(
            base_url=served.url,
            transport=httpx.ASGITransport(app=served.apps.public.app),
            timeout=10,
        ) as route,
    ):
        tree = await served.gateway.regenerate()
        assert len(tree.files) > 7
        for path, body in tree.files.items():
            for accept in ("identity", "gzip, deflate"):
                fast = await _raw(wire, "GET", f"/{path}", **{"Accept-Encoding": accept})
                assert fast == await _raw(route, "GET", f"/{path}", **{"Accept-Encoding": accept})
                status, headers, sent = fast
                assert status == 200
                assert (b"content-type", b"application/json") in headers
                assert (b"content-length", str(len(sent)).encode()) in headers
                zipped = (b"content-encoding", b"gzip") in headers
                assert zipped == (accept != "identity" and len(body) >= 512), path
                assert (gzip.decompress(sent) if zipped else sent) == body
            status, headers, sent = await _raw(
                wire, "HEAD", f"/{path}", **{"Accept-Encoding": "identity"}
            )
            assert (status, sent) == (200, b"")
            assert (b"content-length", str(len(body)).encode()) in headers
        missing = "/v0/c0/posts/cache_missing/0.json"
        assert await _raw(wire, "GET", missing) == (204, [], b"")
        assert await _raw(wire, "GET", missing) == await _raw(route, "GET", missing)


async def test_chunked_submission_is_held_to_the_body_limit(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A chunked `POST /api/submit` over the body limit gets 413 naming the limit and queues
    nothing; a chunked one under the limit is read whole and queued (202)."""
    board = make("board", {"name": "chunked"}, int(time.time()))
    item = json.dumps({"kind": "board", "object": json.loads(canonical.dumps(board))}).encode()

    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    async with (
        serving(fresh_database, nats_url, stream_prefix, tmp_path, max_body_bytes=4096) as served,
        httpx.AsyncClient(base_url=served.local, timeout=10) as client,
    ):
        gw = served.gateway
        js = gw.nc.jetstream()
        await ensure_streams(js, gw.layout)
        padded = item + b" " * 8192
        refused = await client.post("/api/submit", content=chunked(padded), headers=JSON)
        held = (await js.stream_info(gw.layout.ingest_stream)).state.messages
        queued = await client.post("/api/submit", content=chunked(item), headers=JSON)
        after = (await js.stream_info(gw.layout.ingest_stream)).state.messages
    assert refused.status_code == 413
    assert refused.json() == {
        "error": {"field": "body", "rule": "http.body_size", "reason": "over 4096 bytes"}
    }
    assert held == 0
    assert queued.status_code == 202, queued.text
    assert queued.json()["queued"][0]["fingerprint"] == board.fingerprint
    assert after == 1
