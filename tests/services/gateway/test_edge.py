"""The gateway's edge as a client meets it: cached GETs answered byte for byte as the FastAPI route
answers them, and chunked bodies held to the size limit on every route."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from services.gateway.state import Gateway

from mim import canonical
from relay.bus import ensure_streams
from tests.services.gateway.conftest import JSON, cover, make, sample, serving, store

_SERVER_HEADERS = {b"date", b"server"}  # uvicorn adds these to every answer it sends


async def _raw(
    client: httpx.AsyncClient, method: str, path: str, **headers: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers in the order sent (less date and server), and the body as sent."""
    async with client.stream(method, path, headers=headers) as answer:
        body = b"".join([chunk async for chunk in answer.aiter_raw()])
    sent = [(k.lower(), v) for k, v in answer.headers.raw if k.lower() not in _SERVER_HEADERS]
    return answer.status_code, sent, body


async def _stored_files(gw: Gateway) -> dict[str, bytes]:
    """Every file of the served generation, by path, as plain bytes: its caches' files and its
    endpoints' index.json."""
    assert gw.caches.generation is not None
    rows = await gw.pool.fetch("SELECT folder || '/' || name AS path, gzipped FROM cache_files")
    indexes = await gw.pool.fetch(
        "SELECT endpoint || '/index.json' AS path, gzipped FROM cache_indexes"
        " WHERE generation = $1",
        gw.caches.generation.generation,
    )
    return {r["path"]: gzip.decompress(r["gzipped"]) for r in [*rows, *indexes]}


async def test_cached_gets_answer_what_the_route_answers(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """Every cache file GET over the network, plain and gzip, has the status, headers and bytes
    the FastAPI route sends for it; the body is the stored file, gzip decompresses to it, HEAD
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
        gw = served.gateway
        await cover(gw, now)
        files = await _stored_files(gw)
        assert len(files) > 7
        for path, body in files.items():
            for accept in ("identity", "gzip, deflate"):
                fast = await _raw(wire, "GET", f"/{path}", **{"Accept-Encoding": accept})
                assert fast == await _raw(route, "GET", f"/{path}", **{"Accept-Encoding": accept})
                status, headers, sent = fast
                assert status == 200
                assert (b"content-type", b"application/json") in headers
                assert (b"content-length", str(len(sent)).encode()) in headers
                zipped = (b"content-encoding", b"gzip") in headers
                assert zipped == (accept != "identity"), path
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


async def test_pipelined_answers_leave_whole_and_in_order(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """Requests sent back to back on one connection get their answers in order, each head with
    its own body: a HEAD (a head with nothing after it), a cached GET, a missing file (204) and a
    route the app answers, read as the raw bytes a client gets."""
    now = int(time.time())
    await store(fresh_database, sample(now), now - 30)
    async with serving(fresh_database, nats_url, stream_prefix, tmp_path) as served:
        files = await _stored_files(served.gateway)
        path, body = max(files.items(), key=lambda item: len(item[1]))
        host, port = served.url.removeprefix("http://").rsplit(":", 1)
        asks = [("HEAD", f"/{path}"), ("GET", f"/{path}"), ("GET", "/v0/c0/posts/cache_x/0.json")]
        asks += [("GET", "/v0/node")]
        wire = b"".join(
            f"{m} {p} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n".encode()
            for m, p in asks
        )
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(wire)
        answers = [await _answer(reader, method == "HEAD") for method, _ in asks]
        writer.close()
    assert [status for status, _, _ in answers] == [200, 200, 204, 200]
    assert answers[0][2] == b"" and answers[0][1][b"content-length"] == str(len(body)).encode()
    assert answers[1][2] == body
    assert answers[2][2] == b""
    assert json.loads(answers[3][2])["node_public_key"]


async def _answer(
    reader: asyncio.StreamReader, head_only: bool
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 answer read off the wire: status, headers, body (by its content-length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head[:-4].split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    length = 0 if head_only else int(headers.get(b"content-length", b"0"))
    return int(status_line.split()[1]), headers, await reader.readexactly(length)
